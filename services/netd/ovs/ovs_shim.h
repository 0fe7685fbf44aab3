/* The narrow C boundary between netd and libopenvswitch.
 *
 * OVS's headers are C-only in practice (parameters named `new`/`class`, `typeof`, C atomics), so
 * they never reach a C++ translation unit: only the shim's .c files include them, and C++ sees
 * this header alone. The API is deliberately small: what netd needs from the OVSDB IDL (read one
 * bridge and its ports, add/delete a port, rewrite a port's external_ids, force fail-mode secure)
 * and from OpenFlow (an atomic bundle of flow mods in ovs-ofctl syntax, a flow count by cookie,
 * a conntrack-zone flush).
 *
 * Every blocking call takes a timeout in milliseconds and never waits longer. No handle is
 * thread-safe: the C++ owner serialises calls on each handle.
 */
#ifndef STRONGROOM_NETD_OVS_SHIM_H
#define STRONGROOM_NETD_OVS_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  SR_OVS_OK = 0,
  SR_OVS_UNAVAILABLE = 1, /* cannot connect, connection lost, or the deadline passed */
  SR_OVS_NOT_FOUND = 2,   /* the bridge or port does not exist */
  SR_OVS_CONFLICT = 3,    /* the database changed under the transaction; retry after a read */
  SR_OVS_INVALID = 4,     /* a flow string or argument OVS refuses to parse */
  SR_OVS_REJECTED = 5,    /* the switch answered with an OpenFlow error; nothing was applied */
  SR_OVS_INTERNAL = 6,
} sr_ovs_code;

typedef struct {
  sr_ovs_code code;
  char message[512];
} sr_ovs_error;

/* Once per process, before any other call and before threads that use OVS exist: sets the
 * program name, turns every vlog destination off (netd's stderr is JSON only; errors come back
 * through sr_ovs_error) and initialises OVS's signal plumbing. Idempotent. */
void sr_ovs_init(void);

/* A key/value pair of an external_ids map. */
typedef struct {
  const char* key;
  const char* value;
} sr_kv;

/* ------------------------------------------------------------------------------------------- */
/* OVSDB (the Open_vSwitch database through the IDL). Only these columns are replicated:
 * Open_vSwitch{bridges,next_cfg,cur_cfg}, Bridge{name,ports,fail_mode,datapath_type,
 * external_ids}, Port{name,interfaces,external_ids}, Interface{name,type,ofport,ofport_request,
 * error,external_ids}. Nothing that ovs-vswitchd updates continuously (statistics, status) is
 * replicated, so the replica only changes when ports or configuration change. */

typedef struct sr_ovsdb sr_ovsdb;

/* Creates a replica of the database at `remote` ("unix:PATH" or "tcp:IP:PORT"). Connecting
 * happens in the background and is retried forever; never returns NULL. */
sr_ovsdb* sr_ovsdb_create(const char* remote);
void sr_ovsdb_destroy(sr_ovsdb* db);

/* Processes what the server sent. If the replica has never been complete, waits up to
 * timeout_ms for it. UNAVAILABLE (naming the remote and the last error) if it is not connected
 * at the end. */
int sr_ovsdb_sync(sr_ovsdb* db, int timeout_ms, sr_ovs_error* error);

/* Changes whenever the replica's contents change (see ovsdb_idl_get_seqno). */
unsigned int sr_ovsdb_seqno(const sr_ovsdb* db);

typedef struct {
  const char* name;
  const char* fail_mode;     /* "" if unset */
  const char* datapath_type; /* "" if unset */
  const sr_kv* external_ids;
  size_t n_external_ids;
  int64_t cur_cfg; /* Open_vSwitch.cur_cfg: what ovs-vswitchd has applied */
  int64_t next_cfg;
} sr_bridge_view;

typedef struct {
  const char* uuid;   /* the Port row's UUID */
  unsigned int seqno; /* changes whenever this port or its interface changes */
  const char* name;
  const sr_kv* external_ids; /* the Port's */
  size_t n_external_ids;
  size_t n_interfaces;
  /* The first interface (netd's ports have exactly one). */
  const char* iface_type;  /* "" = system device */
  int64_t ofport;          /* -1: failed; 0: not assigned yet */
  int64_t ofport_request;  /* 0: none */
  const char* iface_error; /* NULL if none */
} sr_port_view;

typedef void (*sr_bridge_fn)(void* context, const sr_bridge_view* bridge);
typedef void (*sr_port_fn)(void* context, const sr_port_view* port);

/* Calls on_bridge once, then on_port for every port of `bridge`. The views are valid only during
 * the callback. NOT_FOUND if there is no such bridge. Does not wait: call sr_ovsdb_sync first. */
int sr_ovsdb_read_bridge(sr_ovsdb* db, const char* bridge, void* context, sr_bridge_fn on_bridge,
                         sr_port_fn on_port, sr_ovs_error* error);

typedef struct {
  const char* bridge;
  const char* port_name; /* also the interface (system device) name */
  const sr_kv* port_external_ids;
  size_t n_port_external_ids;
  const sr_kv* iface_external_ids;
  size_t n_iface_external_ids;
  /* Keys set in the Bridge's external_ids in the same transaction (e.g. netd's generation
   * counter). The transaction verifies the Bridge's external_ids did not change since the last
   * sync, so a concurrent writer makes it fail with CONFLICT instead of losing an update. */
  const sr_kv* bridge_external_ids;
  size_t n_bridge_external_ids;
  /* Interface.ofport_request, 0 for none. ovs-vswitchd honours it when that number is free on
   * the bridge and silently picks another otherwise, so read back the returned ofport. */
  int64_t ofport_request;
} sr_port_add;

/* Inserts Interface + Port, adds the Port to Bridge.ports and bumps next_cfg, all in one
 * transaction, then waits until ovs-vswitchd has applied it (cur_cfg) and returns the ofport it
 * assigned. A failure after commit (the interface got no ofport, or the deadline passed) leaves
 * the port in place: the caller decides whether to delete it. */
int sr_ovsdb_add_port(sr_ovsdb* db, const sr_port_add* request, int timeout_ms, int64_t* ofport,
                      int* committed, sr_ovs_error* error);

/* Removes the port from the bridge (the Port and Interface rows go with it) and, with
 * wait_applied, waits until ovs-vswitchd has applied it. NOT_FOUND if there is no such port on the
 * bridge. *committed says whether the rows were deleted (an error after that means only that
 * ovs-vswitchd was slow). */
int sr_ovsdb_delete_port(sr_ovsdb* db, const char* bridge, const char* port_name, int wait_applied,
                         int timeout_ms, int* committed, sr_ovs_error* error);

/* Sets (set[i]) and removes (delete_keys[i]) keys of a port's external_ids in one transaction,
 * verified against concurrent changes. Does not wait for ovs-vswitchd (external_ids are
 * netd's). */
int sr_ovsdb_update_port_external_ids(sr_ovsdb* db, const char* port_name, const sr_kv* set, size_t n_set,
                                      const char* const* delete_keys, size_t n_delete, int timeout_ms,
                                      sr_ovs_error* error);

/* Sets Bridge.fail_mode (e.g. "secure"). */
int sr_ovsdb_set_fail_mode(sr_ovsdb* db, const char* bridge, const char* fail_mode, int timeout_ms,
                           sr_ovs_error* error);

/* ------------------------------------------------------------------------------------------- */
/* OpenFlow (one vconn to the bridge's management socket, OpenFlow 1.4 or 1.5 for bundles). */

typedef struct sr_openflow sr_openflow;

/* Connects to `target` (e.g. "unix:/var/run/openvswitch/br-secure.mgmt") and negotiates the
 * version, within timeout_ms. */
int sr_openflow_open(const char* target, int timeout_ms, sr_openflow** openflow, sr_ovs_error* error);
void sr_openflow_close(sr_openflow* openflow);

typedef enum {
  SR_FLOW_ADD = 0,           /* add, replacing a flow with the same match and priority */
  SR_FLOW_DELETE = 1,        /* delete every flow the text matches (non-strict) */
  SR_FLOW_DELETE_STRICT = 2, /* delete the flow with exactly this match and priority */
} sr_flow_command;

typedef struct {
  sr_flow_command command;
  const char* text; /* ovs-ofctl syntax, e.g. "table=0,priority=100,in_port=5,actions=drop" */
} sr_flow_mod;

/* Parses one flow mod exactly as sr_openflow_bundle would; OK or INVALID with OVS's reason.
 * Needs no connection (unit tests check generated flows with it). */
int sr_flow_parse(const sr_flow_mod* mod, sr_ovs_error* error);

/* Applies all mods as one OpenFlow bundle with OFPBF_ATOMIC|OFPBF_ORDERED: either every mod
 * takes effect at once or none does. Parse errors are found before anything is sent. With
 * flush_ct_zone >= 0, that conntrack zone is flushed first, in the same round trip (whether or
 * not the bundle then applies). */
int sr_openflow_bundle(sr_openflow* openflow, const sr_flow_mod* mods, size_t n_mods, int flush_ct_zone,
                       int timeout_ms, sr_ovs_error* error);

/* sr_openflow_bundle in one round trip instead of two, split in halves so that the caller can do
 * other work while ovs-vswitchd applies it: _send queues [flush_before,] bundle open, the adds,
 * the commit, [flush_after,] and a barrier, and returns without waiting; _await waits for the
 * barrier's reply and reports the outcome. No other call may use the handle in between.
 *
 * The price of the single round trip: the commit is sent before the switch has accepted every
 * add. OVS still refuses the whole commit for a mod that fails there (OFPBFC_MSG_FAILED, e.g. a
 * missing meter), but a mod it refuses on arrival (decoding, e.g. an unmapped field) is left out
 * and the others are committed (_await then fails, saying so). Use it only for mods of which every subset is
 * safe (e.g. a new workload's flows, which only permit traffic: a missing one drops more, never less) and
 * delete them on failure. */
int sr_openflow_bundle_send(sr_openflow* openflow, const sr_flow_mod* mods, size_t n_mods, int flush_before,
                            int flush_after, int timeout_ms, sr_ovs_error* error);
int sr_openflow_bundle_await(sr_openflow* openflow, int timeout_ms, sr_ovs_error* error);

/* A barrier round trip: returns once ovs-vswitchd has handled everything sent before it. It
 * handles OpenFlow after its datapath work in each main-loop iteration, so this also means a port
 * it added in an earlier iteration is now known to its packet translation (until then, the first
 * packets of a new port are dropped as coming from an unknown port). */
int sr_openflow_barrier(sr_openflow* openflow, int timeout_ms, sr_ovs_error* error);

/* Counts the flows (all tables) whose cookie matches cookie/cookie_mask. */
int sr_openflow_count_flows(sr_openflow* openflow, uint64_t cookie, uint64_t cookie_mask, int timeout_ms,
                            uint64_t* count, sr_ovs_error* error);

/* One flow's counters, as a flow-statistics reply gives them. */
typedef struct {
  uint64_t cookie;
  uint8_t table_id;
  uint16_t priority;
  uint64_t packets; /* UINT64_MAX if the switch does not know */
  uint64_t bytes;
} sr_flow_counters;
typedef void (*sr_flow_counters_fn)(void* context, const sr_flow_counters* flow);

/* Calls on_flow with the counters of every flow (all tables) whose cookie matches
 * cookie/cookie_mask, from one (multipart) flow-statistics request. */
int sr_openflow_flow_counters(sr_openflow* openflow, uint64_t cookie, uint64_t cookie_mask, int timeout_ms,
                              void* context, sr_flow_counters_fn on_flow, sr_ovs_error* error);

/* Deletes every connection-tracking entry in `zone` (NXT_CT_FLUSH_ZONE). Works for the kernel
 * and the userspace datapath alike, because ovs-vswitchd does it. */
int sr_openflow_flush_ct_zone(sr_openflow* openflow, uint16_t zone, int timeout_ms, sr_ovs_error* error);

#ifdef __cplusplus
}
#endif

#endif /* STRONGROOM_NETD_OVS_SHIM_H */
