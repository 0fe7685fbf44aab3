/* The OVSDB half of the shim: a replica of the Open_vSwitch database through the IDL. */
#include <config.h>
#include <errno.h>
#include <string.h>

#include "openvswitch/poll-loop.h"
#include "ovsdb-idl.h"
#include "services/netd/ovs/ovs_shim_internal.h"
#include "smap.h"
#include "timeval.h"
#include "util.h"
#include "uuid.h"
#include "vswitch-idl.h"

struct sr_ovsdb {
  struct ovsdb_idl* idl;
  char* remote;
  /* Scratch space for the key/value arrays of the views handed to callbacks. */
  sr_kv* kv;
  size_t kv_capacity;
};

sr_ovsdb* sr_ovsdb_create(const char* remote) {
  sr_ovs_init();
  sr_ovsdb* db = xzalloc(sizeof *db);
  db->remote = xstrdup(remote);
  db->idl = ovsdb_idl_create(remote, &ovsrec_idl_class, false, true);
  const struct ovsdb_idl_column* columns[] = {
      &ovsrec_open_vswitch_col_bridges,
      &ovsrec_open_vswitch_col_next_cfg,
      &ovsrec_open_vswitch_col_cur_cfg,
      &ovsrec_bridge_col_name,
      &ovsrec_bridge_col_ports,
      &ovsrec_bridge_col_fail_mode,
      &ovsrec_bridge_col_datapath_type,
      &ovsrec_bridge_col_external_ids,
      &ovsrec_port_col_name,
      &ovsrec_port_col_interfaces,
      &ovsrec_port_col_external_ids,
      &ovsrec_interface_col_name,
      &ovsrec_interface_col_type,
      &ovsrec_interface_col_ofport,
      &ovsrec_interface_col_ofport_request,
      &ovsrec_interface_col_error,
      &ovsrec_interface_col_external_ids,
  };
  for (size_t i = 0; i < ARRAY_SIZE(columns); i++) ovsdb_idl_add_column(db->idl, columns[i]);
  return db;
}

void sr_ovsdb_destroy(sr_ovsdb* db) {
  if (!db) return;
  ovsdb_idl_destroy(db->idl);
  free(db->remote);
  free(db->kv);
  free(db);
}

static int sr_unavailable(sr_ovsdb* db, sr_ovs_error* error, const char* what) {
  int last = ovsdb_idl_get_last_error(db->idl);
  return sr_fail(error, SR_OVS_UNAVAILABLE, "ovsdb-server at %s %s%s%s", db->remote, what, last ? ": " : "",
                 last ? ovs_retval_to_string(last) : "");
}

static bool sr_ovsdb_ready(sr_ovsdb* db) {
  return ovsdb_idl_has_ever_connected(db->idl) && ovsdb_idl_is_connected(db->idl) &&
         ovsrec_open_vswitch_first(db->idl) != NULL;
}

int sr_ovsdb_sync(sr_ovsdb* db, int timeout_ms, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  for (;;) {
    ovsdb_idl_run(db->idl);
    if (sr_ovsdb_ready(db)) return SR_OVS_OK;
    if (time_msec() >= deadline) return sr_unavailable(db, error, "is unreachable");
    ovsdb_idl_wait(db->idl);
    poll_timer_wait_until(deadline);
    poll_block();
  }
}

unsigned int sr_ovsdb_seqno(const sr_ovsdb* db) { return ovsdb_idl_get_seqno(db->idl); }

/* Copies the smap's pairs into db->kv starting at `offset`; returns the number copied. */
static size_t sr_fill_kv(sr_ovsdb* db, size_t offset, const struct smap* map) {
  size_t needed = offset + smap_count(map);
  if (needed > db->kv_capacity) {
    db->kv_capacity = needed * 2;
    db->kv = xrealloc(db->kv, db->kv_capacity * sizeof *db->kv);
  }
  size_t n = offset;
  const struct smap_node* node;
  SMAP_FOR_EACH(node, map) {
    db->kv[n].key = node->key;
    db->kv[n].value = node->value;
    n++;
  }
  return n - offset;
}

static const struct ovsrec_bridge* sr_find_bridge(sr_ovsdb* db, const char* name) {
  const struct ovsrec_bridge* bridge;
  OVSREC_BRIDGE_FOR_EACH(bridge, db->idl) {
    if (!strcmp(bridge->name, name)) return bridge;
  }
  return NULL;
}

static const struct ovsrec_port* sr_find_port(const struct ovsrec_bridge* bridge, const char* name) {
  for (size_t i = 0; i < bridge->n_ports; i++) {
    if (!strcmp(bridge->ports[i]->name, name)) return bridge->ports[i];
  }
  return NULL;
}

static unsigned int sr_row_seqno(const struct ovsdb_idl_row* row) {
  unsigned int inserted = ovsdb_idl_row_get_seqno(row, OVSDB_IDL_CHANGE_INSERT);
  unsigned int modified = ovsdb_idl_row_get_seqno(row, OVSDB_IDL_CHANGE_MODIFY);
  return inserted > modified ? inserted : modified;
}

int sr_ovsdb_read_bridge(sr_ovsdb* db, const char* bridge_name, void* context, sr_bridge_fn on_bridge,
                         sr_port_fn on_port, sr_ovs_error* error) {
  if (!sr_ovsdb_ready(db)) return sr_unavailable(db, error, "is not connected");
  const struct ovsrec_bridge* bridge = sr_find_bridge(db, bridge_name);
  if (!bridge) return sr_fail(error, SR_OVS_NOT_FOUND, "bridge %s does not exist", bridge_name);
  const struct ovsrec_open_vswitch* ovs = ovsrec_open_vswitch_first(db->idl);

  sr_bridge_view bridge_view = {
      .name = bridge->name,
      .fail_mode = bridge->fail_mode ? bridge->fail_mode : "",
      .datapath_type = bridge->datapath_type ? bridge->datapath_type : "",
      .cur_cfg = ovs->cur_cfg,
      .next_cfg = ovs->next_cfg,
  };
  bridge_view.n_external_ids = sr_fill_kv(db, 0, &bridge->external_ids);
  bridge_view.external_ids = db->kv;
  if (on_bridge) on_bridge(context, &bridge_view);
  if (!on_port) return SR_OVS_OK;

  for (size_t i = 0; i < bridge->n_ports; i++) {
    const struct ovsrec_port* port = bridge->ports[i];
    char uuid[UUID_LEN + 1];
    snprintf(uuid, sizeof uuid, UUID_FMT,  // NOLINT(clang-analyzer-security.insecureAPI.*): bounded
             UUID_ARGS(&port->header_.uuid));
    sr_port_view view = {
        .uuid = uuid,
        .seqno = sr_row_seqno(&port->header_),
        .name = port->name,
        .n_interfaces = port->n_interfaces,
        .iface_type = "",
        .ofport = 0,
        .ofport_request = 0,
        .iface_error = NULL,
    };
    if (port->n_interfaces > 0) {
      const struct ovsrec_interface* iface = port->interfaces[0];
      unsigned int iface_seqno = sr_row_seqno(&iface->header_);
      if (iface_seqno > view.seqno) view.seqno = iface_seqno;
      view.iface_type = iface->type ? iface->type : "";
      view.ofport = iface->n_ofport > 0 ? iface->ofport[0] : 0;
      view.ofport_request = iface->n_ofport_request > 0 ? iface->ofport_request[0] : 0;
      view.iface_error = iface->error;
    }
    view.n_external_ids = sr_fill_kv(db, 0, &port->external_ids);
    view.external_ids = db->kv;
    on_port(context, &view);
  }
  return SR_OVS_OK;
}

/* Commits `txn`, driving the IDL until the server answers or the deadline passes. */
static enum ovsdb_idl_txn_status sr_commit_until(sr_ovsdb* db, struct ovsdb_idl_txn* txn,
                                                 long long deadline) {
  enum ovsdb_idl_txn_status status;
  while ((status = ovsdb_idl_txn_commit(txn)) == TXN_INCOMPLETE) {
    if (time_msec() >= deadline) break;
    ovsdb_idl_run(db->idl);
    ovsdb_idl_wait(db->idl);
    ovsdb_idl_txn_wait(txn);
    poll_timer_wait_until(deadline);
    poll_block();
  }
  return status;
}

static int sr_txn_failure(sr_ovsdb* db, struct ovsdb_idl_txn* txn, enum ovsdb_idl_txn_status status,
                          const char* what, sr_ovs_error* error) {
  switch (status) {
    case TXN_INCOMPLETE:
      return sr_fail(error, SR_OVS_UNAVAILABLE, "%s: no answer from ovsdb-server at %s before the deadline",
                     what, db->remote);
    case TXN_TRY_AGAIN:
      if (!ovsdb_idl_is_connected(db->idl)) return sr_unavailable(db, error, "went away");
      return sr_fail(error, SR_OVS_CONFLICT, "%s: the database changed concurrently", what);
    case TXN_ERROR: {
      const char* reason = ovsdb_idl_txn_get_error(txn);
      return sr_fail(error, SR_OVS_INTERNAL, "%s: ovsdb-server refused the transaction: %s", what,
                     reason ? reason : "unknown error");
    }
    default:
      return sr_fail(error, SR_OVS_INTERNAL, "%s: transaction ended %s", what,
                     ovsdb_idl_txn_status_to_string(status));
  }
}

/* Waits until ovs-vswitchd reports cur_cfg >= next_cfg, i.e. it has applied the change. */
static int sr_wait_applied(sr_ovsdb* db, int64_t next_cfg, long long deadline, const char* what,
                           sr_ovs_error* error) {
  for (;;) {
    ovsdb_idl_run(db->idl);
    const struct ovsrec_open_vswitch* ovs = ovsrec_open_vswitch_first(db->idl);
    if (ovs && ovs->cur_cfg >= next_cfg) return SR_OVS_OK;
    if (!ovsdb_idl_is_connected(db->idl)) return sr_unavailable(db, error, "went away");
    if (time_msec() >= deadline) {
      return sr_fail(error, SR_OVS_UNAVAILABLE,
                     "%s: ovs-vswitchd did not apply the change (cur_cfg %lld < %lld) before the deadline; "
                     "is it running?",
                     what, ovs ? (long long)ovs->cur_cfg : -1LL, (long long)next_cfg);
    }
    ovsdb_idl_wait(db->idl);
    poll_timer_wait_until(deadline);
    poll_block();
  }
}

static void sr_smap_from_kv(struct smap* map, const sr_kv* kv, size_t n) {
  smap_init(map);
  for (size_t i = 0; i < n; i++) smap_replace(map, kv[i].key, kv[i].value);
}

int sr_ovsdb_add_port(sr_ovsdb* db, const sr_port_add* request, int timeout_ms, int64_t* ofport,
                      int* committed, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  *ofport = 0;
  *committed = 0;
  ovsdb_idl_run(db->idl);
  if (!sr_ovsdb_ready(db)) return sr_unavailable(db, error, "is not connected");
  const struct ovsrec_bridge* bridge = sr_find_bridge(db, request->bridge);
  if (!bridge) return sr_fail(error, SR_OVS_NOT_FOUND, "bridge %s does not exist", request->bridge);
  const struct ovsrec_open_vswitch* ovs = ovsrec_open_vswitch_first(db->idl);

  struct ovsdb_idl_txn* txn = ovsdb_idl_txn_create(db->idl);
  ovsdb_idl_txn_add_comment(txn, "strongroom-netd: add port %s", request->port_name);
  struct smap map;

  struct ovsrec_interface* iface = ovsrec_interface_insert(txn);
  ovsrec_interface_set_name(iface, request->port_name);
  if (request->ofport_request > 0) ovsrec_interface_set_ofport_request(iface, &request->ofport_request, 1);
  sr_smap_from_kv(&map, request->iface_external_ids, request->n_iface_external_ids);
  ovsrec_interface_set_external_ids(iface, &map);
  smap_destroy(&map);

  struct ovsrec_port* port = ovsrec_port_insert(txn);
  ovsrec_port_set_name(port, request->port_name);
  ovsrec_port_set_interfaces(port, &iface, 1);
  sr_smap_from_kv(&map, request->port_external_ids, request->n_port_external_ids);
  ovsrec_port_set_external_ids(port, &map);
  smap_destroy(&map);

  /* A mutation, not a rewrite of the whole set: the cost does not grow with the bridge. */
  ovsrec_bridge_update_ports_addvalue(bridge, port);
  if (request->n_bridge_external_ids > 0) {
    ovsrec_bridge_verify_external_ids(bridge);
    for (size_t i = 0; i < request->n_bridge_external_ids; i++) {
      ovsrec_bridge_update_external_ids_setkey(bridge, request->bridge_external_ids[i].key,
                                               request->bridge_external_ids[i].value);
    }
  }
  ovsdb_idl_txn_increment(txn, &ovs->header_, &ovsrec_open_vswitch_col_next_cfg, false);
  /* The inserted row belongs to the transaction and may be freed while it commits; keep its
   * temporary UUID, which the transaction maps to the real one afterwards. */
  const struct uuid temporary_uuid = iface->header_.uuid;

  enum ovsdb_idl_txn_status status = sr_commit_until(db, txn, deadline);
  if (status != TXN_SUCCESS) {
    int code = sr_txn_failure(db, txn, status, "add port", error);
    ovsdb_idl_txn_destroy(txn);
    return code;
  }
  *committed = 1;
  int64_t next_cfg = ovsdb_idl_txn_get_increment_new_value(txn);
  const struct uuid* inserted = ovsdb_idl_txn_get_insert_uuid(txn, &temporary_uuid);
  const struct uuid iface_uuid = inserted ? *inserted : UUID_ZERO;
  ovsdb_idl_txn_destroy(txn);

  int code = sr_wait_applied(db, next_cfg, deadline, "add port", error);
  if (code != SR_OVS_OK) return code;
  const struct ovsrec_interface* applied = ovsrec_interface_get_for_uuid(db->idl, &iface_uuid);
  if (!applied) {
    return sr_fail(error, SR_OVS_NOT_FOUND, "interface %s vanished right after it was added",
                   request->port_name);
  }
  if (applied->error) {
    return sr_fail(error, SR_OVS_REJECTED, "ovs-vswitchd could not attach %s: %s", request->port_name,
                   applied->error);
  }
  if (applied->n_ofport == 0 || applied->ofport[0] <= 0) {
    return sr_fail(error, SR_OVS_REJECTED, "ovs-vswitchd assigned no OpenFlow port to %s",
                   request->port_name);
  }
  *ofport = applied->ofport[0];
  return SR_OVS_OK;
}

int sr_ovsdb_delete_port(sr_ovsdb* db, const char* bridge_name, const char* port_name, int wait_applied,
                         int timeout_ms, int* committed, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  *committed = 0;
  ovsdb_idl_run(db->idl);
  if (!sr_ovsdb_ready(db)) return sr_unavailable(db, error, "is not connected");
  const struct ovsrec_bridge* bridge = sr_find_bridge(db, bridge_name);
  if (!bridge) return sr_fail(error, SR_OVS_NOT_FOUND, "bridge %s does not exist", bridge_name);
  const struct ovsrec_port* port = sr_find_port(bridge, port_name);
  if (!port) return sr_fail(error, SR_OVS_NOT_FOUND, "port %s is not on bridge %s", port_name, bridge_name);
  const struct ovsrec_open_vswitch* ovs = ovsrec_open_vswitch_first(db->idl);

  struct ovsdb_idl_txn* txn = ovsdb_idl_txn_create(db->idl);
  ovsdb_idl_txn_add_comment(txn, "strongroom-netd: delete port %s", port_name);
  ovsrec_bridge_update_ports_delvalue(bridge, port);
  for (size_t i = 0; i < port->n_interfaces; i++) ovsrec_interface_delete(port->interfaces[i]);
  ovsrec_port_delete(port);
  ovsdb_idl_txn_increment(txn, &ovs->header_, &ovsrec_open_vswitch_col_next_cfg, false);

  enum ovsdb_idl_txn_status status = sr_commit_until(db, txn, deadline);
  if (status != TXN_SUCCESS) {
    int code = sr_txn_failure(db, txn, status, "delete port", error);
    ovsdb_idl_txn_destroy(txn);
    return code;
  }
  *committed = 1;
  int64_t next_cfg = ovsdb_idl_txn_get_increment_new_value(txn);
  ovsdb_idl_txn_destroy(txn);
  return wait_applied ? sr_wait_applied(db, next_cfg, deadline, "delete port", error) : SR_OVS_OK;
}

int sr_ovsdb_update_port_external_ids(sr_ovsdb* db, const char* port_name, const sr_kv* set, size_t n_set,
                                      const char* const* delete_keys, size_t n_delete, int timeout_ms,
                                      sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  ovsdb_idl_run(db->idl);
  if (!sr_ovsdb_ready(db)) return sr_unavailable(db, error, "is not connected");
  const struct ovsrec_port* port = NULL;
  const struct ovsrec_port* candidate;
  OVSREC_PORT_FOR_EACH(candidate, db->idl) {
    if (!strcmp(candidate->name, port_name)) {
      port = candidate;
      break;
    }
  }
  if (!port) return sr_fail(error, SR_OVS_NOT_FOUND, "port %s does not exist", port_name);

  struct ovsdb_idl_txn* txn = ovsdb_idl_txn_create(db->idl);
  ovsdb_idl_txn_add_comment(txn, "strongroom-netd: update port %s", port_name);
  ovsrec_port_verify_external_ids(port);
  for (size_t i = 0; i < n_set; i++) ovsrec_port_update_external_ids_setkey(port, set[i].key, set[i].value);
  for (size_t i = 0; i < n_delete; i++) ovsrec_port_update_external_ids_delkey(port, delete_keys[i]);
  enum ovsdb_idl_txn_status status = sr_commit_until(db, txn, deadline);
  int code = SR_OVS_OK;
  if (status != TXN_SUCCESS && status != TXN_UNCHANGED) {
    code = sr_txn_failure(db, txn, status, "update port", error);
  }
  ovsdb_idl_txn_destroy(txn);
  return code;
}

int sr_ovsdb_set_fail_mode(sr_ovsdb* db, const char* bridge_name, const char* fail_mode, int timeout_ms,
                           sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  ovsdb_idl_run(db->idl);
  if (!sr_ovsdb_ready(db)) return sr_unavailable(db, error, "is not connected");
  const struct ovsrec_bridge* bridge = sr_find_bridge(db, bridge_name);
  if (!bridge) return sr_fail(error, SR_OVS_NOT_FOUND, "bridge %s does not exist", bridge_name);
  const struct ovsrec_open_vswitch* ovs = ovsrec_open_vswitch_first(db->idl);
  struct ovsdb_idl_txn* txn = ovsdb_idl_txn_create(db->idl);
  ovsdb_idl_txn_add_comment(txn, "strongroom-netd: fail_mode=%s on %s", fail_mode, bridge_name);
  ovsrec_bridge_set_fail_mode(bridge, fail_mode);
  ovsdb_idl_txn_increment(txn, &ovs->header_, &ovsrec_open_vswitch_col_next_cfg, false);
  enum ovsdb_idl_txn_status status = sr_commit_until(db, txn, deadline);
  int code = SR_OVS_OK;
  if (status != TXN_SUCCESS && status != TXN_UNCHANGED) {
    code = sr_txn_failure(db, txn, status, "set fail_mode", error);
  }
  ovsdb_idl_txn_destroy(txn);
  return code;
}
