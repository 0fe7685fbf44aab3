/* Process-wide setup of libopenvswitch for netd, and the shim's error helpers. */
#include <config.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "fatal-signal.h"
#include "openvswitch/util.h"
#include "openvswitch/vlog.h"
#include "services/netd/ovs/ovs_shim_internal.h"
#include "timeval.h"

static pthread_once_t sr_init_once = PTHREAD_ONCE_INIT;

static void sr_ovs_init_once(void) {
  ovs_set_program_name("strongroom-netd", VERSION);
  /* OVS would log to stderr and syslog in its own format; netd reports every failure through
   * sr_ovs_error instead, so its stderr stays JSON. */
  vlog_set_levels(NULL, VLF_ANY_DESTINATION, VLL_OFF);
  /* fatal_signal_init() asserts the process is single-threaded in OVS's sense (no thread made
   * by ovs_thread_create); doing it here, first, keeps that true whoever calls later. It also
   * ignores SIGPIPE, which a dead ovsdb-server socket would otherwise raise. */
  fatal_signal_init();
  fatal_ignore_sigpipe();
}

void sr_ovs_init(void) { pthread_once(&sr_init_once, sr_ovs_init_once); }

int sr_fail(sr_ovs_error* error, sr_ovs_code code, const char* format, ...) {
  va_list args;
  va_start(args, format);
  if (error) {
    error->code = code;
    /* Bounded; the analyzer's "use vsnprintf_s" refers to C11 Annex K, which glibc lacks. */
    vsnprintf(error->message, sizeof error->message, format,  // NOLINT(clang-analyzer-security.insecureAPI.*)
              args);
  }
  va_end(args);
  return code;
}

long long sr_deadline_after(int timeout_ms) { return time_msec() + (timeout_ms > 0 ? timeout_ms : 0); }
