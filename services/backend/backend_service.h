// backend's operations, one per RPC, in plain C++: validate, apply the object-level authorization on top of
// the per-RPC table (a vm-controller sees only its cluster's jobs, a host-agent reports only for its node),
// and act through the job store, the reconciler and the audit chain. grpc_service.h adapts it to gRPC.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/audit.h"
#include "common/identity.h"
#include "services/backend/audit_reader.h"
#include "services/backend/audit_writer.h"
#include "services/backend/backend_config.h"
#include "services/backend/db.h"
#include "services/backend/job_store.h"
#include "services/backend/peers.h"
#include "services/backend/reconciler.h"
#include "services/backend/slurm_client.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

class BackendService {
 public:
  // Connects to PostgreSQL (waiting up to the startup timeout), applies the migrations, checks the transition
  // table, and starts the audit chain writer and the reconciler (which resumes whatever was in flight).
  static absl::StatusOr<std::unique_ptr<BackendService>> Start(BackendSettings settings);
  ~BackendService();

  // The AuditSink for the daemon's RPC observer and authorization refusals: the chain itself.
  std::shared_ptr<AuditSink> audit_sink() const { return MakeChainAuditSink(audit_writer_); }

  absl::StatusOr<v1::CreateGlobalJobResponse> CreateGlobalJob(const Identity& caller,
                                                              const v1::CreateGlobalJobRequest& request);
  absl::StatusOr<v1::GetJobResponse> GetJob(const Identity& caller, const v1::GetJobRequest& request);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const Identity& caller, const v1::ListJobsRequest& request);
  absl::StatusOr<v1::GetJobTimelineResponse> GetJobTimeline(const Identity& caller,
                                                            const v1::GetJobTimelineRequest& request);
  absl::StatusOr<v1::CancelJobResponse> CancelJob(const Identity& caller,
                                                  const v1::CancelJobRequest& request);
  absl::StatusOr<v1::WorkloadReadyResponse> WorkloadReady(const Identity& caller,
                                                          const v1::WorkloadReadyRequest& request);
  absl::StatusOr<v1::WorkloadFailedResponse> WorkloadFailed(const Identity& caller,
                                                            const v1::WorkloadFailedRequest& request);
  absl::StatusOr<v1::WorkloadStoppedResponse> WorkloadStopped(const Identity& caller,
                                                              const v1::WorkloadStoppedRequest& request);
  absl::StatusOr<v1::ReleaseWorkloadResponse> ReleaseWorkload(const Identity& caller,
                                                              const v1::ReleaseWorkloadRequest& request);
  absl::StatusOr<v1::AppendAuditResponse> AppendAudit(const Identity& caller,
                                                      const v1::AppendAuditRequest& request,
                                                      absl::Time deadline);
  absl::StatusOr<v1::QueryAuditResponse> QueryAudit(const Identity& caller,
                                                    const v1::QueryAuditRequest& request);
  absl::StatusOr<v1::VerifyAuditResponse> VerifyAudit(const Identity& caller,
                                                      const v1::VerifyAuditRequest& request);
  absl::StatusOr<v1::UsageReportResponse> UsageReport(const Identity& caller,
                                                      const v1::UsageReportRequest& request);

 private:
  explicit BackendService(BackendSettings settings);

  // The job `selector` names, if `caller` may see it (else NOT_FOUND, as if it did not exist).
  absl::StatusOr<JobRecord> VisibleJob(const Identity& caller, const v1::JobSelector& selector);
  // For host-agent reports: the job exists, the workload is its workload, and the caller is its node.
  absl::StatusOr<JobRecord> ReportedJob(const Identity& caller, const std::string& global_job_id,
                                        const std::string& workload_id, const std::string& node);
  // JobStore::Update, then the audit writer and the reconciler are told.
  absl::StatusOr<JobRecord> Change(const std::string& id, absl::string_view what,
                                   const JobStore::Decide& decide);

  const BackendSettings settings_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<JobStore> store_;
  std::shared_ptr<AuditWriter> audit_writer_;  // shared with the daemon's audit sink
  std::unique_ptr<AuditReader> audit_reader_;
  std::unique_ptr<SlurmClient> slurm_;
  std::unique_ptr<Peers> peers_;
  std::unique_ptr<Reconciler> reconciler_;  // declared last: stopped first
};

}  // namespace strongroom::backend
