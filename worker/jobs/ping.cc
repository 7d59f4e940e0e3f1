// ping: does nothing and succeeds. The health check and the benchmark load.
#include "worker/job.h"

namespace djinn {
namespace {

class PingJob : public JobHandler {
 public:
  Status Run(const DecodedJob&, JobContext&) override { return Status::Ok(); }
};

}  // namespace

std::unique_ptr<JobHandler> NewPingJob() { return std::make_unique<PingJob>(); }

}  // namespace djinn
