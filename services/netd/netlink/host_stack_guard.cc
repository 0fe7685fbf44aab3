#include "services/netd/netlink/host_stack_guard.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/gen.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter_arp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status.h"
#include "services/netd/host_isolation.h"

namespace strongroom::netd {
namespace {

// Before defragmentation (-400), conntrack (-200), mangle/filter (-150/0) and NAT: the first thing
// the node's stack does with the frame.
constexpr int32_t kGuardPriority = -500;

// One of the guard's four chains.
struct ChainSpec {
  uint16_t family;
  const char* family_name;
  const char* name;
  uint32_t hook;
  uint32_t meta_key;  // NFT_META_IIFGROUP for frames from a workload port, OIFGROUP towards one
};
constexpr ChainSpec kChains[] = {
    {NFPROTO_INET, "inet", "from_workload_ports", NF_INET_PRE_ROUTING, NFT_META_IIFGROUP},
    // Postrouting sees what the node sends and what it would forward (nothing can be forwarded
    // from a workload port, but another interface's traffic could be routed towards one).
    {NFPROTO_INET, "inet", "to_workload_ports", NF_INET_POST_ROUTING, NFT_META_OIFGROUP},
    {NFPROTO_ARP, "arp", "from_workload_ports", NF_ARP_IN, NFT_META_IIFGROUP},
    {NFPROTO_ARP, "arp", "to_workload_ports", NF_ARP_OUT, NFT_META_OIFGROUP},
};
constexpr uint16_t kFamilies[] = {NFPROTO_INET, NFPROTO_ARP};

const char* FamilyName(uint16_t family) { return family == NFPROTO_INET ? "inet" : "arp"; }

template <typename T, void (*Free)(const T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using TablePtr = std::unique_ptr<nftnl_table, Deleter<nftnl_table, nftnl_table_free>>;
using ChainPtr = std::unique_ptr<nftnl_chain, Deleter<nftnl_chain, nftnl_chain_free>>;
using RulePtr = std::unique_ptr<nftnl_rule, Deleter<nftnl_rule, nftnl_rule_free>>;
using GenPtr = std::unique_ptr<nftnl_gen, Deleter<nftnl_gen, nftnl_gen_free>>;

absl::Status NetfilterError(int error, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case EPROTONOSUPPORT:
    case EAFNOSUPPORT:
    case EOPNOTSUPP:
      return absl::FailedPreconditionError(
          absl::StrCat(message, " (this kernel has no nf_tables for IPv4/IPv6 and ARP, so netd cannot keep the "
                                "node's stack away from workload ports)"));
    case EPERM:
      return absl::FailedPreconditionError(absl::StrCat(message, " (netd needs CAP_NET_ADMIN)"));
    case ENOENT:
      return absl::NotFoundError(message);
    case EAGAIN:
    case ETIMEDOUT:
      return absl::UnavailableError(absl::StrCat(what, ": the kernel did not answer before the deadline"));
    default:
      return absl::InternalError(message);
  }
}

// A NETLINK_NETFILTER socket with a receive timeout.
class NftSocket {
 public:
  static absl::StatusOr<NftSocket> Open(absl::Duration timeout) {
    struct mnl_socket* socket = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
    if (socket == nullptr) return NetfilterError(errno, "opening a netfilter netlink socket");
    NftSocket owned(socket);
    if (mnl_socket_bind(socket, 0, MNL_SOCKET_AUTOPID) < 0) return NetfilterError(errno, "binding it");
    const timeval tv = absl::ToTimeval(timeout);
    if (setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
      return NetfilterError(errno, "setting its timeout");
    }
    return owned;
  }
  NftSocket(NftSocket&& other) noexcept : socket_(other.socket_), sequence_(other.sequence_) {
    other.socket_ = nullptr;
  }
  NftSocket& operator=(NftSocket&& other) noexcept {
    if (this != &other) {
      if (socket_ != nullptr) mnl_socket_close(socket_);
      socket_ = other.socket_;
      sequence_ = other.sequence_;
      other.socket_ = nullptr;
    }
    return *this;
  }
  NftSocket(const NftSocket&) = delete;
  NftSocket& operator=(const NftSocket&) = delete;
  ~NftSocket() {
    if (socket_ != nullptr) mnl_socket_close(socket_);
  }
  struct mnl_socket* get() const { return socket_; }
  uint32_t NextSequence() { return ++sequence_; }

  // Sends `length` bytes at `buffer` and reads replies until `acks` acks arrived (a batch) or, for
  // a request or dump, until its answer ended. on_message sees every data message. Returns
  // whether a dump was consistent (false: NLM_F_DUMP_INTR, the ruleset changed meanwhile).
  absl::StatusOr<bool> Exchange(const char* buffer, size_t length, size_t acks,
                                const std::function<void(const struct nlmsghdr*)>& on_message,
                                absl::string_view what) {
    ssize_t sent;
    do {
      sent = mnl_socket_sendto(socket_, buffer, length);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return NetfilterError(errno, what);
    const uint32_t port = mnl_socket_get_portid(socket_);
    std::vector<char> reply(MNL_SOCKET_BUFFER_SIZE * 4);
    bool consistent = true;
    size_t acked = 0;
    for (;;) {
      ssize_t received;
      do {
        received = mnl_socket_recvfrom(socket_, reply.data(), reply.size());
      } while (received < 0 && errno == EINTR);
      if (received < 0) return NetfilterError(errno, what);
      int remaining = static_cast<int>(received);
      for (const struct nlmsghdr* message = reinterpret_cast<const struct nlmsghdr*>(reply.data());
           mnl_nlmsg_ok(message, remaining); message = mnl_nlmsg_next(message, &remaining)) {
        if (!mnl_nlmsg_portid_ok(message, port)) continue;
        if ((message->nlmsg_flags & NLM_F_DUMP_INTR) != 0) consistent = false;
        if (message->nlmsg_type == NLMSG_DONE) return consistent;
        if (message->nlmsg_type == NLMSG_ERROR) {
          const auto* error = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(message));
          if (error->error < 0) return NetfilterError(-error->error, what);
          if (++acked >= acks) return consistent;
          continue;
        }
        if (message->nlmsg_type >= NLMSG_MIN_TYPE && on_message) on_message(message);
      }
    }
  }

 private:
  explicit NftSocket(struct mnl_socket* socket) : socket_(socket) {}
  struct mnl_socket* socket_;  // owned
  uint32_t sequence_ = 0;      // last sequence number used
};

absl::StatusOr<uint32_t> Generation(NftSocket& socket) {
  std::vector<char> buffer(MNL_SOCKET_BUFFER_SIZE);
  struct nlmsghdr* request =
      nftnl_nlmsg_build_hdr(buffer.data(), NFT_MSG_GETGEN, AF_UNSPEC, NLM_F_ACK, socket.NextSequence());
  std::optional<uint32_t> generation;
  SR_RETURN_IF_ERROR(socket
                         .Exchange(buffer.data(), request->nlmsg_len, 1,
                                   [&](const struct nlmsghdr* message) {
                                     GenPtr gen(nftnl_gen_alloc());
                                     if (nftnl_gen_nlmsg_parse(message, gen.get()) == 0) {
                                       generation = nftnl_gen_get_u32(gen.get(), NFTNL_GEN_ID);
                                     }
                                   },
                                   "reading the nftables generation")
                         .status());
  if (!generation) return absl::InternalError("reading the nftables generation: no answer");
  return *generation;
}

// What one of the guard's chains holds, as the kernel reports it.
struct ChainState {
  bool present = false;
  uint32_t hook = 0;
  int32_t priority = 0;
  uint32_t policy = 0;
  std::string type;
  std::vector<std::string> rule_problems;  // per rule: "" if it is exactly the guard's rule
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// "" if `rule` is exactly `meta KEY == group counter drop`, else what it is instead.
std::string RuleProblem(const nftnl_rule* rule, uint32_t meta_key, uint32_t group, uint64_t* packets,
                        uint64_t* bytes) {
  std::vector<std::string> names;
  bool meta_ok = false;
  bool cmp_ok = false;
  bool verdict_ok = false;
  struct nftnl_expr_iter* iter = nftnl_expr_iter_create(rule);
  for (struct nftnl_expr* expr = nftnl_expr_iter_next(iter); expr != nullptr; expr = nftnl_expr_iter_next(iter)) {
    const std::string name = nftnl_expr_get_str(expr, NFTNL_EXPR_NAME);
    names.push_back(name);
    const size_t index = names.size();
    if (name == "meta" && index == 1) {
      meta_ok = nftnl_expr_get_u32(expr, NFTNL_EXPR_META_KEY) == meta_key &&
                nftnl_expr_get_u32(expr, NFTNL_EXPR_META_DREG) == NFT_REG_1;
    } else if (name == "cmp" && index == 2) {
      uint32_t length = 0;
      const void* data = nftnl_expr_get(expr, NFTNL_EXPR_CMP_DATA, &length);
      uint32_t value = 0;
      if (length == sizeof value) std::memcpy(&value, data, sizeof value);
      cmp_ok = nftnl_expr_get_u32(expr, NFTNL_EXPR_CMP_SREG) == NFT_REG_1 &&
               nftnl_expr_get_u32(expr, NFTNL_EXPR_CMP_OP) == NFT_CMP_EQ && length == sizeof value &&
               value == group;
    } else if (name == "counter" && index == 3) {
      *packets = nftnl_expr_get_u64(expr, NFTNL_EXPR_CTR_PACKETS);
      *bytes = nftnl_expr_get_u64(expr, NFTNL_EXPR_CTR_BYTES);
    } else if (name == "immediate" && index == 4) {
      verdict_ok = nftnl_expr_get_u32(expr, NFTNL_EXPR_IMM_DREG) == NFT_REG_VERDICT &&
                   static_cast<int32_t>(nftnl_expr_get_u32(expr, NFTNL_EXPR_IMM_VERDICT)) == NF_DROP;
    }
  }
  nftnl_expr_iter_destroy(iter);
  const bool shape = names == std::vector<std::string>{"meta", "cmp", "counter", "immediate"};
  if (shape && meta_ok && cmp_ok && verdict_ok) return "";
  return absl::StrCat("a rule [", absl::StrJoin(names, " "), "] instead of the group ", group, " drop");
}

struct FamilyState {
  bool table_present = false;
  uint32_t table_flags = 0;
  std::map<std::string, ChainState> chains;  // every chain of the table, by name
  bool consistent = true;
};

absl::StatusOr<FamilyState> ReadFamily(NftSocket& socket, uint16_t family, uint32_t group) {
  FamilyState state;
  std::vector<char> buffer(MNL_SOCKET_BUFFER_SIZE);
  const std::string where = absl::StrCat("table ", FamilyName(family), " ", kStackGuardTable);
  {
    struct nlmsghdr* request =
        nftnl_nlmsg_build_hdr(buffer.data(), NFT_MSG_GETTABLE, family, NLM_F_ACK, socket.NextSequence());
    TablePtr table(nftnl_table_alloc());
    nftnl_table_set_str(table.get(), NFTNL_TABLE_NAME, kStackGuardTable);
    nftnl_table_nlmsg_build_payload(request, table.get());
    absl::StatusOr<bool> read = socket.Exchange(
        buffer.data(), request->nlmsg_len, 1,
        [&](const struct nlmsghdr* message) {
          TablePtr reply(nftnl_table_alloc());
          if (nftnl_table_nlmsg_parse(message, reply.get()) == 0) {
            state.table_present = true;
            state.table_flags = nftnl_table_get_u32(reply.get(), NFTNL_TABLE_FLAGS);
          }
        },
        absl::StrCat("reading ", where));
    if (absl::IsNotFound(read.status())) return state;  // no such table
    SR_RETURN_IF_ERROR(read.status());
  }
  {
    struct nlmsghdr* request =
        nftnl_nlmsg_build_hdr(buffer.data(), NFT_MSG_GETCHAIN, family, NLM_F_DUMP, socket.NextSequence());
    SR_ASSIGN_OR_RETURN(
        const bool consistent,
        socket.Exchange(buffer.data(), request->nlmsg_len, 1,
                        [&](const struct nlmsghdr* message) {
                          ChainPtr chain(nftnl_chain_alloc());
                          if (nftnl_chain_nlmsg_parse(message, chain.get()) != 0) return;
                          if (std::string(nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TABLE)) != kStackGuardTable)
                            return;
                          ChainState& c = state.chains[nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_NAME)];
                          c.present = true;
                          if (nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_HOOKNUM)) {
                            c.hook = nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_HOOKNUM);
                            c.priority = nftnl_chain_get_s32(chain.get(), NFTNL_CHAIN_PRIO);
                            c.policy = nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_POLICY);
                            c.type = nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TYPE);
                          }
                        },
                        absl::StrCat("listing the chains of ", where)));
    state.consistent &= consistent;
  }
  {
    struct nlmsghdr* request =
        nftnl_nlmsg_build_hdr(buffer.data(), NFT_MSG_GETRULE, family, NLM_F_DUMP, socket.NextSequence());
    RulePtr filter(nftnl_rule_alloc());
    nftnl_rule_set_str(filter.get(), NFTNL_RULE_TABLE, kStackGuardTable);
    nftnl_rule_nlmsg_build_payload(request, filter.get());
    SR_ASSIGN_OR_RETURN(
        const bool consistent,
        socket.Exchange(
            buffer.data(), request->nlmsg_len, 1,
            [&](const struct nlmsghdr* message) {
              RulePtr rule(nftnl_rule_alloc());
              if (nftnl_rule_nlmsg_parse(message, rule.get()) != 0) return;
              if (std::string(nftnl_rule_get_str(rule.get(), NFTNL_RULE_TABLE)) != kStackGuardTable) return;
              const std::string chain_name = nftnl_rule_get_str(rule.get(), NFTNL_RULE_CHAIN);
              ChainState& c = state.chains[chain_name];
              uint32_t meta_key = NFT_META_IIFGROUP;
              for (const ChainSpec& spec : kChains) {
                if (spec.family == family && chain_name == spec.name) meta_key = spec.meta_key;
              }
              c.rule_problems.push_back(RuleProblem(rule.get(), meta_key, group, &c.packets, &c.bytes));
            },
            absl::StrCat("listing the rules of ", where)));
    state.consistent &= consistent;
  }
  return state;
}

// "" if the family's table is exactly the guard, else everything that is wrong with it.
std::string Problems(uint16_t family, const FamilyState& state) {
  const std::string where = absl::StrCat("table ", FamilyName(family), " ", kStackGuardTable);
  if (!state.table_present) return absl::StrCat(where, " is missing");
  std::vector<std::string> problems;
  if (state.table_flags != 0) problems.push_back(absl::StrCat(where, " has flags ", state.table_flags, " (dormant?)"));
  std::map<std::string, ChainState> chains = state.chains;
  for (const ChainSpec& spec : kChains) {
    if (spec.family != family) continue;
    auto it = chains.find(spec.name);
    if (it == chains.end() || !it->second.present) {
      problems.push_back(absl::StrCat("chain ", spec.name, " is missing"));
      continue;
    }
    const ChainState& c = it->second;
    if (c.hook != spec.hook || c.priority != kGuardPriority || c.policy != NF_ACCEPT || c.type != "filter") {
      problems.push_back(absl::StrCat("chain ", spec.name, " has hook ", c.hook, " priority ", c.priority,
                                      " policy ", c.policy, " type \"", c.type, "\""));
    }
    if (c.rule_problems.size() != 1 || !c.rule_problems[0].empty()) {
      problems.push_back(absl::StrCat("chain ", spec.name, " holds ", c.rule_problems.size(), " rules",
                                      c.rule_problems.empty() ? "" : ": ",
                                      absl::StrJoin(c.rule_problems, "; ")));
    }
    chains.erase(it);
  }
  for (const auto& [name, chain] : chains) problems.push_back(absl::StrCat("chain ", name, " is not netd's"));
  if (problems.empty()) return "";
  return absl::StrCat(where, ": ", absl::StrJoin(problems, ", "));
}

// Replaces both tables with the guard in one transaction.
absl::Status Install(NftSocket& socket, uint32_t group) {
  std::vector<char> buffer(MNL_SOCKET_BUFFER_SIZE * 4);
  struct mnl_nlmsg_batch* batch = mnl_nlmsg_batch_start(buffer.data(), buffer.size());
  size_t acks = 0;
  auto next = [&] { mnl_nlmsg_batch_next(batch); };
  auto header = [&](uint16_t type, uint16_t family, uint16_t flags) {
    ++acks;
    return nftnl_nlmsg_build_hdr(static_cast<char*>(mnl_nlmsg_batch_current(batch)), type, family,
                                 flags | NLM_F_ACK, socket.NextSequence());
  };
  nftnl_batch_begin(static_cast<char*>(mnl_nlmsg_batch_current(batch)), socket.NextSequence());
  next();
  for (uint16_t family : kFamilies) {
    TablePtr table(nftnl_table_alloc());
    nftnl_table_set_str(table.get(), NFTNL_TABLE_NAME, kStackGuardTable);
    nftnl_table_set_u32(table.get(), NFTNL_TABLE_FLAGS, 0);
    // Create (if missing), delete and create again: the whole table is replaced atomically.
    nftnl_table_nlmsg_build_payload(header(NFT_MSG_NEWTABLE, family, NLM_F_CREATE), table.get());
    next();
    nftnl_table_nlmsg_build_payload(header(NFT_MSG_DELTABLE, family, 0), table.get());
    next();
    nftnl_table_nlmsg_build_payload(header(NFT_MSG_NEWTABLE, family, NLM_F_CREATE | NLM_F_EXCL), table.get());
    next();
    for (const ChainSpec& spec : kChains) {
      if (spec.family != family) continue;
      ChainPtr chain(nftnl_chain_alloc());
      nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_TABLE, kStackGuardTable);
      nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_NAME, spec.name);
      nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_HOOKNUM, spec.hook);
      nftnl_chain_set_s32(chain.get(), NFTNL_CHAIN_PRIO, kGuardPriority);
      nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
      nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_TYPE, "filter");
      nftnl_chain_nlmsg_build_payload(header(NFT_MSG_NEWCHAIN, family, NLM_F_CREATE), chain.get());
      next();

      RulePtr rule(nftnl_rule_alloc());
      nftnl_rule_set_str(rule.get(), NFTNL_RULE_TABLE, kStackGuardTable);
      nftnl_rule_set_str(rule.get(), NFTNL_RULE_CHAIN, spec.name);
      struct nftnl_expr* meta = nftnl_expr_alloc("meta");
      nftnl_expr_set_u32(meta, NFTNL_EXPR_META_KEY, spec.meta_key);
      nftnl_expr_set_u32(meta, NFTNL_EXPR_META_DREG, NFT_REG_1);
      nftnl_rule_add_expr(rule.get(), meta);
      struct nftnl_expr* cmp = nftnl_expr_alloc("cmp");
      nftnl_expr_set_u32(cmp, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
      nftnl_expr_set_u32(cmp, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
      nftnl_expr_set(cmp, NFTNL_EXPR_CMP_DATA, &group, sizeof group);
      nftnl_rule_add_expr(rule.get(), cmp);
      nftnl_rule_add_expr(rule.get(), nftnl_expr_alloc("counter"));
      struct nftnl_expr* verdict = nftnl_expr_alloc("immediate");
      nftnl_expr_set_u32(verdict, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
      nftnl_expr_set_u32(verdict, NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(NF_DROP));
      nftnl_rule_add_expr(rule.get(), verdict);
      nftnl_rule_nlmsg_build_payload(header(NFT_MSG_NEWRULE, family, NLM_F_CREATE | NLM_F_APPEND), rule.get());
      next();
    }
  }
  nftnl_batch_end(static_cast<char*>(mnl_nlmsg_batch_current(batch)), socket.NextSequence());
  next();
  const size_t length = mnl_nlmsg_batch_size(batch);
  const char* head = static_cast<const char*>(mnl_nlmsg_batch_head(batch));
  absl::Status sent = socket.Exchange(head, length, acks, nullptr, "installing netd's nftables tables").status();
  mnl_nlmsg_batch_stop(batch);
  return sent;
}

// Reads both families, retrying a read the kernel flagged inconsistent (the ruleset changed while
// it was listed) a few times; what a last inconsistent read shows is taken as it is.
absl::StatusOr<std::vector<std::pair<uint16_t, FamilyState>>> ReadGuard(NftSocket& socket, uint32_t group) {
  constexpr int kAttempts = 3;
  std::vector<std::pair<uint16_t, FamilyState>> states;
  for (int attempt = 1;; ++attempt) {
    states.clear();
    bool consistent = true;
    for (uint16_t family : kFamilies) {
      SR_ASSIGN_OR_RETURN(FamilyState state, ReadFamily(socket, family, group));
      consistent &= state.consistent;
      states.emplace_back(family, std::move(state));
    }
    if (consistent || attempt == kAttempts) return states;
  }
}

}  // namespace

NftablesHostStackGuard::NftablesHostStackGuard(uint32_t group, absl::Duration timeout)
    : group_(group), timeout_(timeout) {}

NftablesHostStackGuard::~NftablesHostStackGuard() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
}

absl::StatusOr<std::string> NftablesHostStackGuard::Ensure() {
  std::lock_guard<std::mutex> lock(mu_);
  SR_ASSIGN_OR_RETURN(NftSocket socket, NftSocket::Open(timeout_));
  // The generation is read before the state, so a change in between shows as a newer generation
  // at the next check.
  SR_ASSIGN_OR_RETURN(const uint32_t generation, Generation(socket));
  if (verified_generation_ == generation) return std::string();
  SR_ASSIGN_OR_RETURN(auto states, ReadGuard(socket, group_));
  std::vector<std::string> problems;
  for (const auto& [family, state] : states) {
    if (std::string problem = Problems(family, state); !problem.empty()) problems.push_back(problem);
  }
  if (problems.empty()) {
    verified_generation_ = generation;
    return std::string();
  }
  verified_generation_.reset();
  SR_RETURN_IF_ERROR(Install(socket, group_));
  SR_ASSIGN_OR_RETURN(const uint32_t repaired_generation, Generation(socket));
  SR_ASSIGN_OR_RETURN(states, ReadGuard(socket, group_));
  for (const auto& [family, state] : states) {
    if (std::string problem = Problems(family, state); !problem.empty()) {
      return absl::InternalError(absl::StrCat("netd's nftables tables are still wrong after replacing them: ", problem));
    }
  }
  verified_generation_ = repaired_generation;
  return absl::StrJoin(problems, "; ");
}

absl::StatusOr<std::vector<HostStackGuard::ChainCounters>> NftablesHostStackGuard::Counters() {
  SR_ASSIGN_OR_RETURN(NftSocket socket, NftSocket::Open(timeout_));
  SR_ASSIGN_OR_RETURN(auto states, ReadGuard(socket, group_));
  std::vector<ChainCounters> counters;
  for (const auto& [family, state] : states) {
    for (const ChainSpec& spec : kChains) {
      if (spec.family != family) continue;
      auto it = state.chains.find(spec.name);
      if (it == state.chains.end()) continue;
      counters.push_back({absl::StrCat(spec.family_name, " ", spec.name), it->second.packets, it->second.bytes});
    }
  }
  return counters;
}

void NftablesHostStackGuard::Watch(std::function<void(const absl::StatusOr<std::string>&)> on_result) {
  watcher_ = std::thread([this, on_result = std::move(on_result)] {
    // Wakes at least this often to see stop_, and re-checks then too (a notification lost to a
    // full socket buffer must not leave a gap).
    constexpr absl::Duration kPoll = absl::Milliseconds(250);
    absl::StatusOr<NftSocket> socket = absl::UnavailableError("not opened");
    while (!stop_) {
      if (!socket.ok()) {
        socket = NftSocket::Open(kPoll);
        int group = NFNLGRP_NFTABLES;
        if (socket.ok() && setsockopt(mnl_socket_get_fd(socket->get()), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP,
                                      &group, sizeof group) != 0) {
          socket = NetfilterError(errno, "subscribing to nf_tables notifications");
        }
        if (!socket.ok()) {
          on_result(socket.status());
          std::this_thread::sleep_for(absl::ToChronoMilliseconds(kPoll));
          continue;
        }
      }
      std::vector<char> buffer(MNL_SOCKET_BUFFER_SIZE * 4);
      const ssize_t received = recv(mnl_socket_get_fd(socket->get()), buffer.data(), buffer.size(), 0);
      if (received < 0 && (errno == EAGAIN || errno == EINTR)) continue;  // nothing changed
      // A change (or ENOBUFS: changes were lost): drain what else is queued, then check once.
      while (recv(mnl_socket_get_fd(socket->get()), buffer.data(), buffer.size(), MSG_DONTWAIT) > 0) {
      }
      absl::StatusOr<std::string> result = Ensure();
      if (!result.ok() || !result->empty()) on_result(result);
    }
  });
}

}  // namespace strongroom::netd
