# install_extras.cmake - the install steps that depend on where the files
# land, run by `cmake --install` (so `--prefix` and DESTDIR are honoured):
#
# * latch.pc is written here, not at configure time, with the prefix the
#   install really uses.
# * When the library directory is one the dynamic loader searches (listed
#   in /etc/ld.so.conf or its .d files, or a default one), ldconfig runs,
#   so a program linked against the fresh liblatch.so.0 starts at once.
#   Otherwise (a private prefix) latch.pc adds an rpath instead: the
#   program finds the library where it was installed.
# * Under DESTDIR (a staged install for packaging) ldconfig is left to the
#   package manager.
#
# Set by the caller: LATCH_PC_IN, LATCH_LIBDIR, LATCH_INCLUDEDIR (relative
# or absolute), LATCH_VERSION.

function(latch_full out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

latch_full(libdir "${LATCH_LIBDIR}")
latch_full(includedir "${LATCH_INCLUDEDIR}")
get_filename_component(libdir "${libdir}" ABSOLUTE)

# The loader's directories: its defaults, then every ld.so.conf entry.
set(loader_dirs /lib /lib64 /usr/lib /usr/lib64)
file(GLOB conf_files /etc/ld.so.conf /etc/ld.so.conf.d/*.conf)
foreach(f ${conf_files})
  file(STRINGS "${f}" lines REGEX "^[ \t]*/")
  foreach(l ${lines})
    string(STRIP "${l}" l)
    list(APPEND loader_dirs "${l}")
  endforeach()
endforeach()
list(FIND loader_dirs "${libdir}" found)

set(prefix "${CMAKE_INSTALL_PREFIX}")
if(found EQUAL -1)
  set(rpath " -Wl,-rpath,\${libdir}")
else()
  set(rpath "")
endif()
set(pc_dir "$ENV{DESTDIR}${libdir}/pkgconfig")
configure_file("${LATCH_PC_IN}" "${pc_dir}/latch.pc" @ONLY)
message(STATUS "Installing: ${pc_dir}/latch.pc")

if(NOT found EQUAL -1 AND "$ENV{DESTDIR}" STREQUAL "")
  execute_process(COMMAND ldconfig RESULT_VARIABLE rc OUTPUT_QUIET
                  ERROR_QUIET)
  if(rc EQUAL 0)
    message(STATUS "Ran ldconfig: ${libdir}/liblatch.so is known to the loader")
  else()
    message(WARNING "ldconfig failed (not root?): run `ldconfig` as root, "
            "or programs linked against liblatch.so will not start")
  endif()
endif()
