# CMake toolchain for an aarch64 (arm64) build on a Debian amd64 host with
# Debian's cross toolchain and multiarch: crossbuild-essential-arm64 gives
# aarch64-linux-gnu-gcc, the libraries come as their arm64 -dev packages
# (libfoo-dev:arm64, installed in /usr/lib/aarch64-linux-gnu). cmake/arm64.sh
# installs both and uses this file:
#
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64.cmake
#
# Criterion cannot be installed as libcriterion-dev:arm64 beside the amd64
# one (its dependency libnanomsg5 is not Multi-Arch: same): cmake/arm64.sh
# unpacks it into EM_ARM64_EXTRA_ROOT, whose pkg-config files are searched
# after the multiarch ones.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(EM_TRIPLET aarch64-linux-gnu)

set(CMAKE_C_COMPILER ${EM_TRIPLET}-gcc)
set(CMAKE_AR ${EM_TRIPLET}-ar CACHE FILEPATH "")
set(CMAKE_RANLIB ${EM_TRIPLET}-ranlib CACHE FILEPATH "")
set(CMAKE_STRIP ${EM_TRIPLET}-strip CACHE FILEPATH "")

# The arm64 libraries live in the host's own tree (multiarch): search only
# their directories, never the amd64 ones.
set(CMAKE_LIBRARY_ARCHITECTURE ${EM_TRIPLET})
set(CMAKE_FIND_ROOT_PATH /usr/${EM_TRIPLET})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

set(EM_ARM64_EXTRA_ROOT "" CACHE PATH "Unpacked arm64 packages that multiarch cannot install (Criterion)")
# The file is read again for each try_compile, which must see the same
# value: it sets the environment of the whole CMake run.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES EM_ARM64_EXTRA_ROOT)
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${EM_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
if(EM_ARM64_EXTRA_ROOT)
  set(ENV{PKG_CONFIG_LIBDIR}
      "$ENV{PKG_CONFIG_LIBDIR}:${EM_ARM64_EXTRA_ROOT}/usr/lib/${EM_TRIPLET}/pkgconfig")
  # Its libraries' own dependencies (libnanomsg) are found here at link
  # time, and at run time through the test programs' build RPATH: DT_RPATH,
  # not DT_RUNPATH, which would not apply to libcriterion's own NEEDED.
  set(CMAKE_EXE_LINKER_FLAGS_INIT
      "-Wl,-rpath-link,${EM_ARM64_EXTRA_ROOT}/usr/lib/${EM_TRIPLET} -Wl,--disable-new-dtags")
endif()

# ctest runs the test programs under user-mode qemu, with the arm64 loader
# and libraries of the multiarch tree (the extra root's through RPATH);
# cmake/arm64.sh test adds the exec shim of cmake/qemu_exec.c.
if(NOT CMAKE_CROSSCOMPILING_EMULATOR)
  set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)
endif()
