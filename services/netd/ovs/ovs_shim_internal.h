/* Helpers shared by the shim's C files. C only; includes no OVS header. */
#ifndef STRONGROOM_NETD_OVS_SHIM_INTERNAL_H
#define STRONGROOM_NETD_OVS_SHIM_INTERNAL_H

#include "services/netd/ovs/ovs_shim.h"

/* Fills `error` (if not NULL) and returns `code`, so failures read `return sr_fail(...)`. */
int sr_fail(sr_ovs_error* error, sr_ovs_code code, const char* format, ...)
    __attribute__((format(printf, 3, 4)));

/* time_msec() + timeout_ms, clamped so a negative timeout means "now". */
long long sr_deadline_after(int timeout_ms);

#endif /* STRONGROOM_NETD_OVS_SHIM_INTERNAL_H */
