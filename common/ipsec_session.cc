#include "common/ipsec_session.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace strongroom {

absl::Status LoadIdentity(ViciClient& vici, const EcKey& key, const std::string& cert_pem) {
  SR_ASSIGN_OR_RETURN(std::string pem, key.PrivatePem());
  ViciMessage k;
  k.Set("type", "ecdsa");
  k.Set("data", pem);
  SR_RETURN_IF_ERROR(Annotate(vici.CallChecked("load-key", k), "loading the tunnel key"));
  ViciMessage c;
  c.Set("type", "x509");
  c.Set("flag", "none");
  c.Set("data", cert_pem);
  return Annotate(vici.CallChecked("load-cert", c), "loading the tunnel certificate");
}

absl::Status LoadTunnel(ViciClient& vici, const TunnelSpec& spec) {
  SR_ASSIGN_OR_RETURN(ViciMessage conn, BuildLoadConn(spec));
  return Annotate(vici.CallChecked("load-conn", conn), absl::StrCat("loading tunnel ", spec.name));
}

absl::Status BringUpTunnel(ViciClient& vici, const std::string& name, absl::Duration timeout) {
  ViciMessage m;
  m.Set("child", name);
  m.Set("ike", name);
  m.Set("timeout", absl::StrCat(absl::ToInt64Milliseconds(timeout)));
  return Annotate(vici.CallChecked("initiate", m), absl::StrCat("bringing up tunnel ", name));
}

absl::StatusOr<TunnelState> GetTunnelState(ViciClient& vici, const std::string& name) {
  ViciMessage filter;
  filter.Set("ike", name);
  SR_ASSIGN_OR_RETURN(std::vector<ViciMessage> sas, vici.Stream("list-sas", filter, "list-sa"));
  TunnelState st;
  for (const ViciMessage& event : sas) {
    const ViciMessage* ike = event.FindSection(name);
    if (ike == nullptr) continue;
    st.ike_established = st.ike_established || ike->ValueOr("state", "") == "ESTABLISHED";
    const ViciMessage* children = ike->FindSection("child-sas");
    if (children == nullptr) continue;
    for (const auto& [unused, child] : children->Sections()) {
      if (child->ValueOr("state", "") != "INSTALLED") continue;
      st.child_installed = true;
      st.encryption = absl::StrCat(child->ValueOr("encr-alg", ""), "-", child->ValueOr("encr-keysize", ""));
      st.udp_encapsulated = child->ValueOr("encap", "no") == "yes";
      auto num = [&](const char* key) {
        int64_t v = 0;
        return absl::SimpleAtoi(child->ValueOr(key, "0"), &v) ? v : 0;
      };
      st.bytes_in += num("bytes-in");
      st.bytes_out += num("bytes-out");
      st.packets_in += num("packets-in");
      st.packets_out += num("packets-out");
    }
  }
  return st;
}

absl::Status TearDownTunnel(ViciClient& vici, const std::string& name) {
  SR_ASSIGN_OR_RETURN(TunnelState st, GetTunnelState(vici, name));
  if (st.ike_established || st.child_installed) {
    ViciMessage t;
    t.Set("ike", name);
    t.Set("timeout", "5000");
    t.Set("force", "yes");
    SR_RETURN_IF_ERROR(Annotate(vici.CallChecked("terminate", t), absl::StrCat("terminating tunnel ", name)));
  }
  ViciMessage u;
  u.Set("name", name);
  absl::Status unload = vici.CallChecked("unload-conn", u);
  // "connection not found" is the idempotent case.
  if (!unload.ok() && unload.code() != absl::StatusCode::kFailedPrecondition) return unload;
  return Annotate(vici.CallChecked("clear-creds", ViciMessage()), "clearing tunnel credentials");
}

absl::StatusOr<CharonHoldings> GetHoldings(ViciClient& vici) {
  CharonHoldings h;
  SR_ASSIGN_OR_RETURN(std::vector<ViciMessage> conns, vici.Stream("list-conns", ViciMessage(), "list-conn"));
  for (const ViciMessage& c : conns) h.connections += c.Sections().size();
  SR_ASSIGN_OR_RETURN(ViciMessage keys, vici.Call("get-keys", ViciMessage()));
  if (const std::vector<std::string>* ids = keys.List("keys")) h.keys = ids->size();
  SR_ASSIGN_OR_RETURN(std::vector<ViciMessage> sas, vici.Stream("list-sas", ViciMessage(), "list-sa"));
  for (const ViciMessage& s : sas) h.sas += s.Sections().size();
  return h;
}

}  // namespace strongroom
