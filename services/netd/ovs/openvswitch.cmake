# libopenvswitch, built from Debian's openvswitch-source tarball (the same 3.1.0 as the daemons we
# talk to). Debian ships no -dev package and the IDL headers are never installed, so we build the
# static library in our build tree and compile the C shim against that source tree.
#
# Cost: about 72 s for configure + make on 2 cores, paid once per build directory. ExternalProject
# stamps every step, so later builds skip it entirely; ccache (if present) makes a fresh build
# directory cheaper too. Only the tarball path is an input: a new openvswitch-source package
# changes its timestamp, and ExternalProject then rebuilds.
include(ExternalProject)

set(SR_OVS_TARBALL "/usr/src/openvswitch/openvswitch.tar.gz" CACHE FILEPATH
    "openvswitch-source tarball (apt-get install openvswitch-source)")
if(NOT EXISTS "${SR_OVS_TARBALL}")
  message(FATAL_ERROR "${SR_OVS_TARBALL} is missing: run deploy/install-deps.sh (package openvswitch-source)")
endif()

set(SR_OVS_ROOT "${CMAKE_BINARY_DIR}/_deps/openvswitch")
set(SR_OVS_SOURCE_DIR "${SR_OVS_ROOT}/openvswitch")
set(SR_OVS_LIBRARY "${SR_OVS_SOURCE_DIR}/lib/.libs/libopenvswitch.a")

set(sr_ovs_cc gcc)
if(CCACHE_PROGRAM)
  set(sr_ovs_cc "${CCACHE_PROGRAM} gcc")
endif()

# automake builds BUILT_SOURCES (generated headers such as lib/vswitch-idl.h) only for `make all`;
# this fragment names them as one target so we can build them without building all of OVS.
set(sr_ovs_built_sources_mk "${CMAKE_CURRENT_LIST_DIR}/built-sources.mk")

ExternalProject_Add(openvswitch_build
  URL "${SR_OVS_TARBALL}"
  PREFIX "${SR_OVS_ROOT}"
  SOURCE_DIR "${SR_OVS_SOURCE_DIR}"
  BUILD_IN_SOURCE TRUE
  # A local file; no download, no network.
  DOWNLOAD_EXTRACT_TIMESTAMP TRUE
  CONFIGURE_COMMAND
    ${CMAKE_COMMAND} -E env "CC=${sr_ovs_cc}" "CFLAGS=-O2 -g"
    <SOURCE_DIR>/configure --disable-libcapng --enable-static --disable-shared --quiet
  BUILD_COMMAND
    make -f Makefile -f ${sr_ovs_built_sources_mk} -j2 sr-built-sources
    COMMAND make -j2 lib/libopenvswitch.la
  INSTALL_COMMAND ""
  BUILD_BYPRODUCTS "${SR_OVS_LIBRARY}"
  LOG_CONFIGURE TRUE
  LOG_BUILD TRUE
  LOG_OUTPUT_ON_FAILURE TRUE)

# The include directories exist only after the build step; create them now so CMake accepts them.
file(MAKE_DIRECTORY "${SR_OVS_SOURCE_DIR}/include" "${SR_OVS_SOURCE_DIR}/lib")

add_library(openvswitch_static STATIC IMPORTED GLOBAL)
set_target_properties(openvswitch_static PROPERTIES IMPORTED_LOCATION "${SR_OVS_LIBRARY}")
# The same order as OVS's own Makefile (LIBS of its configure run, minus libcap-ng).
target_link_libraries(openvswitch_static INTERFACE OpenSSL::SSL OpenSSL::Crypto atomic m Threads::Threads)
add_dependencies(openvswitch_static openvswitch_build)
