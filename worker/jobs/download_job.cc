// download_job: placeholder until the download issue lands.
#include "worker/job.h"

namespace djinn {
namespace {

class DownloadJob : public JobHandler {
 public:
  Status Run(const DecodedJob&, JobContext&) override {
    return Status::Permanent("download_job not implemented yet");
  }
};

}  // namespace

std::unique_ptr<JobHandler> NewDownloadJob(const Config&) { return std::make_unique<DownloadJob>(); }

}  // namespace djinn
