#include "common/audit.h"

#include "common/log.h"

namespace strongroom {
namespace {

class LogAuditSink : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    Log(LogLevel::kInfo, "audit",
        {{"audit", "true"}, {"actor", e.actor}, {"action", e.action}, {"object", e.object},
         {"outcome", e.outcome}, {"detail", e.detail}});
  }
};

}  // namespace

std::shared_ptr<AuditSink> MakeLogAuditSink() { return std::make_shared<LogAuditSink>(); }

}  // namespace strongroom
