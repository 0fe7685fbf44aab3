// The controlling VM's side of every workload's tunnel (issue 14, docs/IPSEC.md): vm-controller's charon is
// the IPsec responder. At start the VM gets its own IPsec identity from the project CA (a key generated in
// memory, loaded into charon over VICI, never written); each handed-over workload gets one connection that
// accepts exactly that workload's address and project certificate; the workload's end terminates its SAs and
// unloads the connection, so nothing of an ended workload stays on the VM.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/ipsec_tunnel.h"
#include "common/project_ca.h"

namespace strongroom {

class VmTunnels {
 public:
  // `vici_socket`: the VM's charon. `vm_ip`: the VM's address on br-secure (its IKE identity).
  static absl::StatusOr<std::unique_ptr<VmTunnels>> Create(const ProjectCa& ca, std::string vici_socket,
                                                           std::string vm_ip, IpsecBackend backend);

  // Loads the responder connection for `workload_id` of job `job_id` at `workload_ip`: only that address and
  // a certificate naming exactly that workload and job (WorkloadIkeId). Idempotent (load-conn replaces).
  absl::Status Add(const std::string& workload_id, const std::string& job_id, const std::string& workload_ip);
  // Terminates the workload's SAs and unloads its connection. Idempotent.
  absl::Status Remove(const std::string& workload_id);

 private:
  VmTunnels(std::string vici_socket, std::string vm_ip, IpsecBackend backend, std::string cert_pem,
            std::string ca_pem, std::string project)
      : vici_socket_(std::move(vici_socket)),
        vm_ip_(std::move(vm_ip)),
        backend_(backend),
        cert_pem_(std::move(cert_pem)),
        ca_pem_(std::move(ca_pem)),
        project_(std::move(project)) {}

  const std::string vici_socket_;  // the VM's charon
  const std::string vm_ip_;        // our IKE address and identity
  const IpsecBackend backend_;
  const std::string
      cert_pem_;  // the VM's project certificate (its key lives only in charon and was freed here)
  const std::string ca_pem_;   // the project CA every workload must chain to
  const std::string project_;  // the CA's project, part of every workload's IKE identity
  absl::Mutex mu_;             // one VICI conversation at a time
};

}  // namespace strongroom
