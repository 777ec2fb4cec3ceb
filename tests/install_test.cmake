# Installs the built tree into a fresh prefix, then builds examples/app.c against it twice:
# through find_package(clattn) and through pkg-config, runs both, and checks that the shared
# library exports only clattn_ symbols.
# cmake -DSOURCE_DIR=... -DBINARY_DIR=... -DWORK_DIR=... -DLIBDIR=lib -DSONAME=libclattn.so.0.2 -P install_test.cmake
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install "${BINARY_DIR}" --prefix "${prefix}")
foreach(f include/clattn.h)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "missing after install: ${f}")
  endif()
endforeach()
set(libdir "${prefix}/${LIBDIR}")
set(pcdir "${libdir}/pkgconfig")
set(so "${libdir}/${SONAME}")
foreach(f "${pcdir}/clattn.pc" "${so}" "${libdir}/libclattn.a" "${libdir}/cmake/clattn/clattnConfig.cmake"
        "${libdir}/cmake/clattn/clattnConfigVersion.cmake")
  if(NOT EXISTS "${f}")
    message(FATAL_ERROR "missing after install: ${f}")
  endif()
endforeach()

# 1. find_package(clattn)
run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples" -B "${WORK_DIR}/cmake-build" "-DCMAKE_PREFIX_PATH=${prefix}")
run(${CMAKE_COMMAND} --build "${WORK_DIR}/cmake-build")
run("${WORK_DIR}/cmake-build/clattn_example")
message(STATUS "find_package build: ${last_output}")

# 2. pkg-config
find_program(PKG_CONFIG pkg-config REQUIRED)
set(ENV{PKG_CONFIG_PATH} "${pcdir}")
run(${PKG_CONFIG} --cflags --libs clattn)
string(STRIP "${last_output}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
run(cc "${SOURCE_DIR}/examples/app.c" ${flags} -lm "-Wl,-rpath,${libdir}" -o "${WORK_DIR}/app_pkgconfig")
run("${WORK_DIR}/app_pkgconfig")
message(STATUS "pkg-config build: ${last_output}")

# 3. only clattn_ symbols are exported
run(nm -D --defined-only "${so}")
string(REGEX MATCHALL "\n[0-9a-f]+ [TDBR] [^\n]+" syms "\n${last_output}")
foreach(s IN LISTS syms)
  if(NOT s MATCHES " clattn_[a-z0-9_]+$")
    message(FATAL_ERROR "exported symbol outside the clattn_ prefix:${s}")
  endif()
endforeach()
if(NOT syms MATCHES " clattn_plan_execute")
  message(FATAL_ERROR "clattn_plan_execute is not exported: ${last_output}")
endif()
list(LENGTH syms nsyms)
message(STATUS "exports checked: ${nsyms} symbols, all clattn_")
