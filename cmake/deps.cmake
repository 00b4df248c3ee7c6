# Every dependency comes from a Debian 12 package and is found through
# pkg-config. A missing one stops configure and names the package to install
# (scripts/bootstrap installs them all).
find_package(PkgConfig REQUIRED)

# msd_require(<target-suffix> <pkg-config module> <Debian package>)
function(msd_require name module debpkg)
  pkg_check_modules(MSD_${name} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(NOT MSD_${name}_FOUND)
    message(FATAL_ERROR
      "medshard needs ${module} (pkg-config) but it was not found.\n"
      "Install it with:  apt-get install ${debpkg}\n"
      "or run scripts/bootstrap to install every dependency.")
  endif()
  add_library(msd::${name} ALIAS PkgConfig::MSD_${name})
endfunction()

msd_require(uring      liburing      liburing-dev)
msd_require(isal       libisal       libisal-dev)
msd_require(xxhash     libxxhash     libxxhash-dev)
msd_require(protobufc  libprotobuf-c libprotobuf-c-dev)
msd_require(cunit      cunit         libcunit1-dev)
msd_require(raft       raft          libraft-dev)
msd_require(uv         libuv         libuv1-dev)
msd_require(lmdb       lmdb          liblmdb-dev)
msd_require(openssl    openssl       libssl-dev)
msd_require(sodium     libsodium     libsodium-dev)
msd_require(inih       inih          libinih-dev)
msd_require(microhttpd libmicrohttpd libmicrohttpd-dev)

find_program(MSD_PROTOC_C protoc-c)
if(NOT MSD_PROTOC_C)
  message(FATAL_ERROR
    "medshard needs protoc-c to compile proto/medshard.proto.\n"
    "Install it with:  apt-get install protobuf-c-compiler")
endif()

find_library(MSD_LIBM m)
