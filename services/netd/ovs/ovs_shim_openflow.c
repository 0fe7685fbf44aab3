/* The OpenFlow half of the shim: one vconn to the bridge, atomic bundles, flow counts and
 * conntrack flushes, each bounded by a deadline (vconn's own *_block helpers wait forever). */
#include <config.h>
#include <errno.h>
#include <string.h>

#include "byte-order.h"
#include "openflow/nicira-ext.h"
#include "openvswitch/dynamic-string.h"
#include "openvswitch/list.h"
#include "openvswitch/match.h"
#include "openvswitch/ofp-bundle.h"
#include "openvswitch/ofp-errors.h"
#include "openvswitch/ofp-flow.h"
#include "openvswitch/ofp-msgs.h"
#include "openvswitch/ofp-print.h"
#include "openvswitch/ofp-protocol.h"
#include "openvswitch/ofp-util.h"
#include "openvswitch/ofpbuf.h"
#include "openvswitch/poll-loop.h"
#include "openvswitch/vconn.h"
#include "services/netd/ovs/ovs_shim_internal.h"
#include "socket-util.h"
#include "timeval.h"
#include "util.h"

struct sr_openflow {
  struct vconn* vconn;
  char* target;
  enum ofp_version version;
  enum ofputil_protocol protocol;
  uint32_t next_bundle_id;
  /* The first OpenFlow error the switch sent during the current operation, for the message. */
  struct ds first_error;
  bool has_error;
  /* Between sr_openflow_bundle_send and _await: the exchange in flight. */
  bool pending;
  ovs_be32 pending_commit_xid;
  ovs_be32 pending_barrier_xid;
};

static int sr_connection_failure(struct sr_openflow* of, int retval, const char* what, sr_ovs_error* error) {
  return sr_fail(error, SR_OVS_UNAVAILABLE, "ovs-vswitchd at %s: %s: %s", of->target, what,
                 retval == ETIMEDOUT ? "no answer before the deadline" : ovs_retval_to_string(retval));
}

int sr_openflow_open(const char* target, int timeout_ms, sr_openflow** openflow, sr_ovs_error* error) {
  sr_ovs_init();
  *openflow = NULL;
  /* Bundles exist from OpenFlow 1.4 on; ovs-vswitchd enables 1.0 to 1.5 by default. */
  const uint32_t versions = (1u << OFP14_VERSION) | (1u << OFP15_VERSION);
  struct vconn* vconn = NULL;
  int retval = vconn_open(target, versions, DSCP_DEFAULT, &vconn);
  if (!retval) retval = vconn_connect_block(vconn, timeout_ms > 0 ? timeout_ms : 0);
  if (retval) {
    vconn_close(vconn);
    return sr_fail(error, SR_OVS_UNAVAILABLE, "ovs-vswitchd at %s: cannot connect: %s", target,
                   retval == ETIMEDOUT ? "no answer before the deadline" : ovs_retval_to_string(retval));
  }
  struct sr_openflow* of = xzalloc(sizeof *of);
  of->vconn = vconn;
  of->target = xstrdup(target);
  of->version = vconn_get_version(vconn);
  of->protocol = ofputil_protocol_from_ofp_version(of->version);
  of->next_bundle_id = 1;
  ds_init(&of->first_error);
  *openflow = of;
  return SR_OVS_OK;
}

void sr_openflow_close(sr_openflow* of) {
  if (!of) return;
  vconn_close(of->vconn);
  free(of->target);
  ds_destroy(&of->first_error);
  free(of);
}

static int sr_send_until(struct sr_openflow* of, struct ofpbuf* msg, long long deadline) {
  int retval;
  while ((retval = vconn_send(of->vconn, msg)) == EAGAIN) {
    if (time_msec() >= deadline) {
      retval = ETIMEDOUT;
      break;
    }
    vconn_run(of->vconn);
    vconn_run_wait(of->vconn);
    vconn_send_wait(of->vconn);
    poll_timer_wait_until(deadline);
    poll_block();
  }
  if (retval) ofpbuf_delete(msg);
  return retval;
}

/* Remembers the first OpenFlow error of the operation (it names the failing flow mod). */
static void sr_note_error(struct sr_openflow* of, const struct ofpbuf* msg) {
  if (of->has_error) return;
  of->has_error = true;
  char* text = ofp_to_string(msg->data, msg->size, NULL, NULL, 1);
  ds_put_cstr(&of->first_error, text);
  free(text);
}

/* Handles a message that is not the awaited reply: errors are noted, echo requests answered. */
static int sr_handle_unsolicited(struct sr_openflow* of, struct ofpbuf* msg, long long deadline) {
  enum ofptype type;
  int retval = 0;
  if (!ofptype_decode(&type, msg->data)) {
    if (type == OFPTYPE_ERROR) {
      sr_note_error(of, msg);
    } else if (type == OFPTYPE_ECHO_REQUEST) {
      retval = sr_send_until(of, ofputil_encode_echo_reply(msg->data), deadline);
    }
  }
  ofpbuf_delete(msg);
  return retval;
}

/* Receives until a message with `xid` arrives (returned in *reply), or the deadline. */
static int sr_recv_xid_until(struct sr_openflow* of, ovs_be32 xid, struct ofpbuf** reply,
                             long long deadline) {
  *reply = NULL;
  for (;;) {
    struct ofpbuf* msg = NULL;
    int retval = vconn_recv(of->vconn, &msg);
    if (retval == EAGAIN) {
      if (time_msec() >= deadline) return ETIMEDOUT;
      vconn_run(of->vconn);
      vconn_run_wait(of->vconn);
      vconn_recv_wait(of->vconn);
      poll_timer_wait_until(deadline);
      poll_block();
      continue;
    }
    if (retval) return retval;
    if (((const struct ofp_header*)msg->data)->xid == xid) {
      *reply = msg;
      return 0;
    }
    retval = sr_handle_unsolicited(of, msg, deadline);
    if (retval) return retval;
  }
}

/* Reads whatever has already arrived without waiting (errors for bundle adds, echo requests). */
static int sr_drain(struct sr_openflow* of, long long deadline) {
  for (;;) {
    struct ofpbuf* msg = NULL;
    int retval = vconn_recv(of->vconn, &msg);
    if (retval == EAGAIN) return 0;
    if (retval) return retval;
    retval = sr_handle_unsolicited(of, msg, deadline);
    if (retval) return retval;
  }
}

static void sr_begin(struct sr_openflow* of) {
  ds_clear(&of->first_error);
  of->has_error = false;
}

static int sr_rejected(struct sr_openflow* of, const char* what, sr_ovs_error* error) {
  return sr_fail(error, SR_OVS_REJECTED, "ovs-vswitchd at %s rejected %s: %s", of->target, what,
                 of->has_error ? ds_cstr(&of->first_error) : "unexpected reply");
}

/* Sends `request` (consumed) followed by a barrier and waits for the barrier's reply. An error
 * reply to `request` is noted in first_error. */
static int sr_transact_noreply(struct sr_openflow* of, struct ofpbuf* request, long long deadline) {
  int retval = sr_send_until(of, request, deadline);
  if (retval) return retval;
  struct ofpbuf* barrier = ofputil_encode_barrier_request(of->version);
  ovs_be32 barrier_xid = ((const struct ofp_header*)barrier->data)->xid;
  retval = sr_send_until(of, barrier, deadline);
  if (retval) return retval;
  struct ofpbuf* reply = NULL;
  retval = sr_recv_xid_until(of, barrier_xid, &reply, deadline);
  ofpbuf_delete(reply);
  return retval;
}

static int sr_parse(const sr_flow_mod* mod, struct ofputil_flow_mod* fm, enum ofputil_protocol* usable,
                    sr_ovs_error* error) {
  static const int kCommands[] = {[SR_FLOW_ADD] = OFPFC_ADD,
                                  [SR_FLOW_DELETE] = OFPFC_DELETE,
                                  [SR_FLOW_DELETE_STRICT] = OFPFC_DELETE_STRICT};
  if ((unsigned)mod->command > SR_FLOW_DELETE_STRICT) {
    return sr_fail(error, SR_OVS_INVALID, "unknown flow command %d", (int)mod->command);
  }
  /* Cleared first so no field is ever read uninitialised, whatever the parser fills in. */
  memset(fm, 0, sizeof *fm);  // NOLINT(clang-analyzer-security.insecureAPI.*): Annex K is not in glibc
  *usable = 0;
  char* reason = parse_ofp_flow_mod_str(fm, mod->text, NULL, NULL, kCommands[mod->command], usable);
  if (reason) {
    sr_fail(error, SR_OVS_INVALID, "flow \"%s\": %s", mod->text, reason);
    free(reason);
    return SR_OVS_INVALID;
  }
  return SR_OVS_OK;
}

static void sr_flow_mod_free(struct ofputil_flow_mod* fm) {
  free(CONST_CAST(struct ofpact*, fm->ofpacts));
  minimatch_destroy(&fm->match);
}

int sr_flow_parse(const sr_flow_mod* mod, sr_ovs_error* error) {
  sr_ovs_init();
  struct ofputil_flow_mod fm;
  enum ofputil_protocol usable;
  int code = sr_parse(mod, &fm, &usable, error);
  if (code) return code;
  sr_flow_mod_free(&fm);
  if (!(usable & OFPUTIL_P_OF14_OXM)) {
    char* names = ofputil_protocols_to_string(usable);
    sr_fail(error, SR_OVS_INVALID, "flow \"%s\" cannot be sent over OpenFlow 1.4 (only %s)", mod->text,
            names);
    free(names);
    return SR_OVS_INVALID;
  }
  return SR_OVS_OK;
}

/* Sends a bundle control message of `type` and checks the matching reply. */
static int sr_bundle_control(struct sr_openflow* of, struct ofputil_bundle_ctrl_msg* bc, uint16_t type,
                             const char* what, long long deadline, sr_ovs_error* error) {
  bc->type = type;
  struct ofpbuf* request = ofputil_encode_bundle_ctrl_request(of->version, bc);
  ofpmsg_update_length(request);
  ovs_be32 xid = ((const struct ofp_header*)request->data)->xid;
  int retval = sr_send_until(of, request, deadline);
  struct ofpbuf* reply = NULL;
  if (!retval) retval = sr_recv_xid_until(of, xid, &reply, deadline);
  if (retval) return sr_connection_failure(of, retval, "bundle control", error);

  enum ofptype reply_type;
  struct ofputil_bundle_ctrl_msg answer;
  int code = SR_OVS_OK;
  if (ofptype_decode(&reply_type, reply->data) || reply_type != OFPTYPE_BUNDLE_CONTROL ||
      ofputil_decode_bundle_ctrl(reply->data, &answer) || answer.bundle_id != bc->bundle_id ||
      answer.type != type + 1) {
    sr_note_error(of, reply);
    code = sr_rejected(of, what, error);
  }
  ofpbuf_delete(reply);
  return code;
}

static struct ofpbuf* sr_encode_ct_flush_zone(struct sr_openflow* of, uint16_t zone) {
  struct ofpbuf* msg = ofpraw_alloc(OFPRAW_NXT_CT_FLUSH_ZONE, of->version, 0);
  struct nx_zone_id* zone_id = ofpbuf_put_zeros(msg, sizeof *zone_id);
  zone_id->zone_id = htons(zone);
  return msg;
}

/* Parses and encodes every mod before anything is sent: a bad flow sends nothing. */
static int sr_encode_mods(struct sr_openflow* of, const sr_flow_mod* mods, size_t n_mods,
                          struct ovs_list* requests, sr_ovs_error* error) {
  ovs_list_init(requests);
  for (size_t i = 0; i < n_mods; i++) {
    struct ofputil_flow_mod fm;
    enum ofputil_protocol usable;
    int code = sr_parse(&mods[i], &fm, &usable, error);
    if (code) {
      ofpbuf_list_delete(requests);
      return code;
    }
    if (!(usable & of->protocol)) {
      sr_flow_mod_free(&fm);
      ofpbuf_list_delete(requests);
      return sr_fail(error, SR_OVS_INVALID, "flow \"%s\" cannot be sent over %s", mods[i].text,
                     ofputil_version_to_string(of->version));
    }
    struct ofpbuf* msg = ofputil_encode_flow_mod(&fm, of->protocol);
    sr_flow_mod_free(&fm);
    ofpmsg_update_length(msg);
    ovs_list_push_back(requests, &msg->list_node);
  }
  return SR_OVS_OK;
}

/* Sends [a conntrack flush,] the bundle open and every add of `requests` (consumed). */
static int sr_send_bundle_adds(struct sr_openflow* of, struct ofputil_bundle_ctrl_msg* bc,
                               struct ovs_list* requests, int flush_ct_zone, long long deadline) {
  int retval = 0;
  if (flush_ct_zone >= 0)
    retval = sr_send_until(of, sr_encode_ct_flush_zone(of, (uint16_t)flush_ct_zone), deadline);
  if (!retval) {
    struct ofpbuf* open = ofputil_encode_bundle_ctrl_request(of->version, bc);
    ofpmsg_update_length(open);
    retval = sr_send_until(of, open, deadline);
  }
  struct ofpbuf* msg;
  LIST_FOR_EACH_POP(msg, list_node, requests) {
    if (!retval) {
      struct ofputil_bundle_add_msg add = {.bundle_id = bc->bundle_id, .flags = bc->flags, .msg = msg->data};
      retval = sr_send_until(of, ofputil_encode_bundle_add(of->version, &add), deadline);
      /* Read errors as they come, so a long bundle cannot fill the socket with them. */
      if (!retval) retval = sr_drain(of, deadline);
    }
    ofpbuf_delete(msg);
  }
  return retval;
}

int sr_openflow_bundle(sr_openflow* of, const sr_flow_mod* mods, size_t n_mods, int flush_ct_zone,
                       int timeout_ms, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  sr_begin(of);
  struct ovs_list requests;
  int code = sr_encode_mods(of, mods, n_mods, &requests, error);
  if (code) return code;

  /* One batch, one round trip: [conntrack flush,] bundle open, every add, barrier. The switch
   * handles them in order, and the barrier's reply comes after the error of any of them. A
   * failing add does not invalidate a bundle by itself, which is why the commit waits for the
   * barrier: it is sent only if nothing failed. ovs-vswitchd serves one connection a batch of
   * messages per main-loop iteration, so round trips, not bytes, are what a busy switch makes
   * slow. */
  struct ofputil_bundle_ctrl_msg bc = {
      .bundle_id = of->next_bundle_id++, .type = OFPBCT_OPEN_REQUEST, .flags = OFPBF_ATOMIC | OFPBF_ORDERED};
  int retval = sr_send_bundle_adds(of, &bc, &requests, flush_ct_zone, deadline);
  if (!retval) {
    struct ofpbuf* barrier = ofputil_encode_barrier_request(of->version);
    ovs_be32 barrier_xid = ((const struct ofp_header*)barrier->data)->xid;
    retval = sr_send_until(of, barrier, deadline);
    struct ofpbuf* reply = NULL;
    if (!retval) retval = sr_recv_xid_until(of, barrier_xid, &reply, deadline);
    ofpbuf_delete(reply);
  }
  if (retval) return sr_connection_failure(of, retval, "bundle add", error);

  if (of->has_error) {
    sr_ovs_error ignored;
    sr_bundle_control(of, &bc, OFPBCT_DISCARD_REQUEST, "discarding the bundle", deadline, &ignored);
    return sr_rejected(of, "a flow of the bundle (nothing was applied)", error);
  }
  /* Atomic: a refused commit (some checks, e.g. meters, run only now) applies nothing either. */
  return sr_bundle_control(of, &bc, OFPBCT_COMMIT_REQUEST, "the bundle's commit (nothing was applied)",
                           deadline, error);
}

int sr_openflow_bundle_send(sr_openflow* of, const sr_flow_mod* mods, size_t n_mods, int flush_before,
                            int flush_after, int timeout_ms, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  sr_begin(of);
  if (of->pending) return sr_fail(error, SR_OVS_INTERNAL, "an earlier bundle was not awaited");
  struct ovs_list requests;
  int code = sr_encode_mods(of, mods, n_mods, &requests, error);
  if (code) return code;

  struct ofputil_bundle_ctrl_msg bc = {
      .bundle_id = of->next_bundle_id++, .type = OFPBCT_OPEN_REQUEST, .flags = OFPBF_ATOMIC | OFPBF_ORDERED};
  int retval = sr_send_bundle_adds(of, &bc, &requests, flush_before, deadline);
  if (!retval) {
    bc.type = OFPBCT_COMMIT_REQUEST;
    struct ofpbuf* commit = ofputil_encode_bundle_ctrl_request(of->version, &bc);
    ofpmsg_update_length(commit);
    of->pending_commit_xid = ((const struct ofp_header*)commit->data)->xid;
    retval = sr_send_until(of, commit, deadline);
  }
  if (!retval && flush_after >= 0)
    retval = sr_send_until(of, sr_encode_ct_flush_zone(of, (uint16_t)flush_after), deadline);
  if (!retval) {
    struct ofpbuf* barrier = ofputil_encode_barrier_request(of->version);
    of->pending_barrier_xid = ((const struct ofp_header*)barrier->data)->xid;
    retval = sr_send_until(of, barrier, deadline);
  }
  if (retval) return sr_connection_failure(of, retval, "bundle", error);
  of->pending = true;
  return SR_OVS_OK;
}

int sr_openflow_bundle_await(sr_openflow* of, int timeout_ms, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  if (!of->pending) return sr_fail(error, SR_OVS_INTERNAL, "no bundle in flight");
  of->pending = false;
  /* Errors noted while sending (sr_drain) are kept. Wait for the commit's reply (or its error),
   * then the barrier's: every error of the batch arrives before it. */
  struct ofpbuf* msg = NULL;
  int retval = sr_recv_xid_until(of, of->pending_commit_xid, &msg, deadline);
  if (retval) return sr_connection_failure(of, retval, "bundle commit", error);
  enum ofptype type;
  struct ofputil_bundle_ctrl_msg answer;
  const bool committed = !ofptype_decode(&type, msg->data) && type == OFPTYPE_BUNDLE_CONTROL &&
                         !ofputil_decode_bundle_ctrl(msg->data, &answer) &&
                         answer.type == OFPBCT_COMMIT_REPLY;
  if (!committed) sr_note_error(of, msg);
  ofpbuf_delete(msg);
  struct ofpbuf* reply = NULL;
  retval = sr_recv_xid_until(of, of->pending_barrier_xid, &reply, deadline);
  ofpbuf_delete(reply);
  if (retval) return sr_connection_failure(of, retval, "bundle barrier", error);
  if (of->has_error) {
    return sr_rejected(of,
                       committed ? "a flow of the bundle (the others were applied)"
                                 : "the bundle's commit (nothing was applied)",
                       error);
  }
  return SR_OVS_OK;
}

int sr_openflow_barrier(sr_openflow* of, int timeout_ms, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  sr_begin(of);
  if (of->pending) return sr_fail(error, SR_OVS_INTERNAL, "a bundle in flight was not awaited");
  struct ofpbuf* barrier = ofputil_encode_barrier_request(of->version);
  ovs_be32 xid = ((const struct ofp_header*)barrier->data)->xid;
  int retval = sr_send_until(of, barrier, deadline);
  struct ofpbuf* reply = NULL;
  if (!retval) retval = sr_recv_xid_until(of, xid, &reply, deadline);
  ofpbuf_delete(reply);
  if (retval) return sr_connection_failure(of, retval, "barrier", error);
  return SR_OVS_OK;
}

/* A flow-statistics request over all tables for the flows whose cookie matches. */
static struct ofpbuf* sr_encode_flow_stats_request(struct sr_openflow* of, bool aggregate, uint64_t cookie,
                                                   uint64_t cookie_mask) {
  struct ofputil_flow_stats_request request;
  memset(&request, 0,
         sizeof request);  // NOLINT(clang-analyzer-security.insecureAPI.*): Annex K is not in glibc
  request.aggregate = aggregate;
  match_init_catchall(&request.match);
  request.cookie = htonll(cookie);
  request.cookie_mask = htonll(cookie_mask);
  request.out_port = OFPP_ANY;
  request.out_group = OFPG_ANY;
  request.table_id = 0xff;
  return ofputil_encode_flow_stats_request(&request, of->protocol);
}

int sr_openflow_count_flows(sr_openflow* of, uint64_t cookie, uint64_t cookie_mask, int timeout_ms,
                            uint64_t* count, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  sr_begin(of);
  *count = 0;
  struct ofpbuf* msg = sr_encode_flow_stats_request(of, true, cookie, cookie_mask);
  ovs_be32 xid = ((const struct ofp_header*)msg->data)->xid;
  int retval = sr_send_until(of, msg, deadline);
  struct ofpbuf* reply = NULL;
  if (!retval) retval = sr_recv_xid_until(of, xid, &reply, deadline);
  if (retval) return sr_connection_failure(of, retval, "flow statistics", error);

  enum ofptype type;
  struct ofputil_aggregate_stats stats;
  int code = SR_OVS_OK;
  if (ofptype_decode(&type, reply->data) || type != OFPTYPE_AGGREGATE_STATS_REPLY ||
      ofputil_decode_aggregate_stats_reply(&stats, reply->data)) {
    sr_note_error(of, reply);
    code = sr_rejected(of, "the flow statistics request", error);
  } else {
    *count = stats.flow_count;
  }
  ofpbuf_delete(reply);
  return code;
}

int sr_openflow_flow_counters(sr_openflow* of, uint64_t cookie, uint64_t cookie_mask, int timeout_ms,
                              void* context, sr_flow_counters_fn on_flow, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  sr_begin(of);
  struct ofpbuf* msg = sr_encode_flow_stats_request(of, false, cookie, cookie_mask);
  ovs_be32 xid = ((const struct ofp_header*)msg->data)->xid;
  int retval = sr_send_until(of, msg, deadline);
  if (retval) return sr_connection_failure(of, retval, "flow statistics", error);
  struct ofpbuf ofpacts;
  ofpbuf_init(&ofpacts, 0);
  int code = SR_OVS_OK;
  /* The reply comes in parts, each with the request's xid, all but the last flagged "more". */
  for (bool more = true; more && code == SR_OVS_OK;) {
    struct ofpbuf* reply = NULL;
    retval = sr_recv_xid_until(of, xid, &reply, deadline);
    if (retval) {
      code = sr_connection_failure(of, retval, "flow statistics", error);
      break;
    }
    enum ofptype type;
    if (ofptype_decode(&type, reply->data) || type != OFPTYPE_FLOW_STATS_REPLY) {
      sr_note_error(of, reply);
      code = sr_rejected(of, "the flow statistics request", error);
      ofpbuf_delete(reply);
      break;
    }
    more = ofpmp_more(reply->data);
    for (;;) {
      struct ofputil_flow_stats stats;
      int decoded = ofputil_decode_flow_stats_reply(&stats, reply, false, &ofpacts);
      if (decoded == EOF) break;
      if (decoded) {
        code = sr_fail(error, SR_OVS_INTERNAL, "ovs-vswitchd at %s: undecodable flow statistics: %s",
                       of->target, ofperr_to_string(decoded));
        break;
      }
      sr_flow_counters flow = {ntohll(stats.cookie), stats.table_id, stats.priority, stats.packet_count,
                               stats.byte_count};
      on_flow(context, &flow);
    }
    ofpbuf_delete(reply);
  }
  ofpbuf_uninit(&ofpacts);
  return code;
}

int sr_openflow_flush_ct_zone(sr_openflow* of, uint16_t zone, int timeout_ms, sr_ovs_error* error) {
  long long deadline = sr_deadline_after(timeout_ms);
  sr_begin(of);
  int retval = sr_transact_noreply(of, sr_encode_ct_flush_zone(of, zone), deadline);
  if (retval) return sr_connection_failure(of, retval, "conntrack flush", error);
  if (of->has_error) return sr_rejected(of, "the conntrack flush", error);
  return SR_OVS_OK;
}
