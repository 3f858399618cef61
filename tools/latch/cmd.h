/*
 * cmd.h - the subcommands of the latch command (main.c dispatches).
 */
#ifndef LATCH_TOOL_CMD_H
#define LATCH_TOOL_CMD_H

/* `latch demo [options]` (demo.c): argv[0] is "demo" (or the program's
 * name when no command was given). Returns the exit status as below. */
int latch_cmd_demo(int argc, char **argv);

/* `latch serve [DIR] [options]` (serve.c): argv[0] is "serve". Returns the
 * process's exit status: 0, 1 (cannot serve) or 2 (bad usage). */
int latch_cmd_serve(int argc, char **argv);

#endif
