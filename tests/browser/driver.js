'use strict';
/*
 * driver.js - what a browser test of latch needs, in one module: Debian's
 * chromium through playwright-core (no browser download), child processes
 * (latch programs, redis-server) started on 127.0.0.1 and stopped by pid,
 * a few RESP commands, polling with deadlines, and the SKIP convention.
 *
 * A test is a CommonJS script run by tests/browser/run.sh (which installs
 * playwright-core from the lock file and passes LATCH_EXAMPLES_DIR):
 *
 *   const d = require('./driver');
 *   d.main(async (t) => {
 *     const app = await t.spawn(d.example('chat'), ['-p', '0'],
 *                               {ready: /listening on (http:\S+)/});
 *     const page = await t.page(app.match[1]);
 *     await d.waitFor(() => page.evaluate(() => window.ready), 5000, 'ready');
 *   });
 *
 * main() runs the body under an overall deadline, prints "PASS <name>" or
 * the failure, and always closes the browser and kills what t.spawn
 * started (SIGKILL by pid, after SIGTERM for the survivors). A test skips
 * with d.skip(reason): "SKIP: reason" on stdout and exit status 77, which
 * the ctest entry declares as its skip code.
 */
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const SKIP = 77;

class Skip extends Error {}

/* Prints the SKIP line and ends the test as skipped. */
function skip(reason) {
  throw new Skip(reason);
}

/* The chromium to drive: $LATCH_CHROMIUM, else Debian's. null if none. */
function chromiumPath() {
  const candidates = [process.env.LATCH_CHROMIUM, '/usr/bin/chromium'];
  for (const p of candidates) {
    if (p && fs.existsSync(p)) return p;
  }
  return null;
}

function haveCommand(name) {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' })
    .status === 0;
}

/* A built example: $LATCH_EXAMPLES_DIR/<name>. */
function example(name) {
  const dir = process.env.LATCH_EXAMPLES_DIR;
  if (!dir) throw new Error('LATCH_EXAMPLES_DIR is not set (run through ctest)');
  const p = path.join(dir, name);
  if (!fs.existsSync(p)) throw new Error(`${p}: not built`);
  return p;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/*
 * Polls fn (sync or async) every `every` ms until it returns a truthy
 * value, which is returned; throws "timed out waiting for <what>" (with
 * the last value or error) after ms.
 */
async function waitFor(fn, ms, what, every = 50) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= end) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${detail})`);
    }
    await sleep(every);
  }
}

/* A free TCP port on 127.0.0.1 (bound, read, closed). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/* ------------------------------------------------------------------ */
/* RESP: enough of Redis's protocol to send a command and read a reply  */
/* ------------------------------------------------------------------ */

function respEncode(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) {
    const b = Buffer.from(String(a));
    out += `$${b.length}\r\n${b.toString()}\r\n`;
  }
  return out;
}

/* Parses one reply at buf[i..]; [value, next index] or null if short. */
function respParse(buf, i = 0) {
  const eol = buf.indexOf('\r\n', i);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[i]);
  const line = buf.toString('utf8', i + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+': return [line, next];
    case '-': return [new Error(line), next];
    case ':': return [Number(line), next];
    case '$': {
      const n = Number(line);
      if (n < 0) return [null, next];
      if (buf.length < next + n + 2) return null;
      return [buf.toString('utf8', next, next + n), next + n + 2];
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return [null, next];
      const out = [];
      let j = next;
      for (let k = 0; k < n; k++) {
        const r = respParse(buf, j);
        if (r === null) return null;
        out.push(r[0]);
        j = r[1];
      }
      return [out, j];
    }
    default: throw new Error(`RESP: unexpected reply type '${type}'`);
  }
}

/* One command on a connection of its own; resolves to the reply (an
 * Error object for an error reply), rejects if Redis cannot be reached
 * within ms. */
function redis(port, args, ms = 2000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${args[0]}: no reply in ${ms} ms`));
    }, ms);
    sock.on('connect', () => sock.write(respEncode(args)));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const r = respParse(buf);
      if (r !== null) {
        clearTimeout(timer);
        sock.destroy();
        resolve(r[0]);
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/* ------------------------------------------------------------------ */
/* The test context                                                     */
/* ------------------------------------------------------------------ */

class Proc {
  constructor(child, name) {
    this.child = child;
    this.pid = child.pid;
    this.name = name;
    this.out = '';
    this.match = null;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    this.done = false;
    this.exited.then(() => { this.done = true; });
  }

  /* Sends sig and waits for the exit (SIGKILL after ms). */
  async stop(sig = 'SIGTERM', ms = 10000) {
    if (this.done) return this.exited;
    process.kill(this.pid, sig);
    const timer = setTimeout(() => {
      if (!this.done) process.kill(this.pid, 'SIGKILL');
    }, ms);
    const st = await this.exited;
    clearTimeout(timer);
    return st;
  }
}

class Context {
  constructor(name) {
    this.name = name;
    this.procs = [];
    this.browser = null;
  }

  /*
   * Starts a program (its stderr goes to ours, prefixed). opts.ready: a
   * RegExp that a line of its stdout must match within opts.ms (default
   * 10 s); its match is proc.match. opts.env: added to the environment.
   */
  async spawn(file, args, opts = {}) {
    const name = opts.name || path.basename(file);
    const child = spawn(file, args, {
      env: { ...process.env, ...(opts.env || {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const p = new Proc(child, name);
    this.procs.push(p);
    child.stderr.on('data', (d) => {
      for (const line of d.toString().split('\n')) {
        if (line) process.stderr.write(`[${name} ${p.pid}] ${line}\n`);
      }
    });
    child.stdout.on('data', (d) => { p.out += d.toString(); });
    const spawned = new Promise((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    await spawned;
    if (opts.ready) {
      p.match = await waitFor(() => {
        if (p.done) throw new Error(`${name} exited: ${p.out}`);
        return p.out.match(opts.ready);
      }, opts.ms || 10000, `${name} to print ${opts.ready}`, 20);
    }
    return p;
  }

  /* redis-server on a free loopback port, no persistence; resolves to
   * {proc, port, url} once it answers PING. Skips the test when
   * redis-server is not installed and opts.optional is not set; with
   * opts.optional, resolves to null then. */
  async redis(opts = {}) {
    if (!haveCommand('redis-server')) {
      if (opts.optional) return null;
      skip('redis-server is not installed');
    }
    const port = opts.port || await freePort();
    const proc = await this.spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '',
      '--appendonly', 'no', '--loglevel', 'warning'], { name: 'redis' });
    await waitFor(async () => (await redis(port, ['PING'], 500)) === 'PONG',
      10000, 'redis-server to answer PING');
    return { proc, port, url: `redis://127.0.0.1:${port}` };
  }

  /* The browser, launched on first use. */
  async launch() {
    if (this.browser) return this.browser;
    const exe = chromiumPath();
    if (!exe) skip('chromium is not installed (scripts/deps.sh test installs it)');
    const { chromium } = require('playwright-core');
    const args = [];
    /* Chromium refuses to run as root with its sandbox. */
    if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');
    this.browser = await chromium.launch({ executablePath: exe, headless: true, args });
    return this.browser;
  }

  /* A new page (its own context: no shared cache or cookies) at url;
   * console errors and page errors are printed with the page's label. */
  async page(url, label = url) {
    const b = await this.launch();
    const ctx = await b.newContext();
    const page = await ctx.newPage();
    page.on('pageerror', (e) => process.stderr.write(`[page ${label}] error: ${e.message}\n`));
    page.on('console', (m) => {
      if (m.type() === 'error') process.stderr.write(`[page ${label}] console: ${m.text()}\n`);
    });
    await page.goto(url);
    return page;
  }

  async cleanup() {
    if (this.browser) {
      await this.browser.close().catch(() => {});
      this.browser = null;
    }
    for (const p of this.procs) {
      if (!p.done) await p.stop('SIGTERM', 3000).catch(() => {});
    }
  }
}

/* Node prints assertion diffs well; a plain check with a message. */
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

/*
 * Runs body(t) under a deadline (opts.ms, default 90 s); exit status 0
 * (PASS), 77 (SKIP) or 1 (FAIL, with the error). Children and the
 * browser are always cleaned up.
 */
function main(body, opts = {}) {
  const name = opts.name || path.basename(process.argv[1], '.js');
  const ms = opts.ms || 90000;
  const t = new Context(name);
  let status = 1;
  const deadline = new Promise((_, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: over its ${ms} ms deadline`)), ms);
    timer.unref();
  });
  const started = Date.now();
  Promise.race([body(t), deadline])
    .then(() => {
      status = 0;
      console.log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    })
    .catch((e) => {
      if (e instanceof Skip) {
        status = SKIP;
        console.log(`SKIP: ${e.message}`);
      } else {
        console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
      }
    })
    .finally(async () => {
      await t.cleanup();
      process.exit(status);
    });
}

module.exports = {
  SKIP, skip, check, main, waitFor, sleep, freePort, redis, example,
  chromiumPath, haveCommand,
};
