# embed.cmake - writes a C header that holds one file's bytes, so a program
# carries the real file (the demo shows its own handlers' source) rather
# than a copy kept by hand in a string:
#   cmake -DIN=<file> -DOUT=<header> -DNAME=<identifier> -P embed.cmake
# The header defines `static const unsigned char NAME[]`, NUL-terminated.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
# One line per 16 bytes (CMake's regular expressions have no {n}).
set(row "")
foreach(i RANGE 15)
  string(APPEND row "0x[0-9a-f][0-9a-f],")
endforeach()
string(REGEX REPLACE "(${row})" "\\1\n" bytes "${bytes}")
get_filename_component(base "${IN}" NAME)
file(WRITE "${OUT}.tmp"
  "/* Generated from ${base} by cmake/embed.cmake: do not edit. */\n"
  "static const unsigned char ${NAME}[] = {\n${bytes}0x00};\n")
# Only a changed header touches what includes it.
configure_file("${OUT}.tmp" "${OUT}" COPYONLY)
file(REMOVE "${OUT}.tmp")
