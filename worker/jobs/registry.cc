// The job registry: name -> handler. One line per job type.
#include "worker/job.h"

namespace djinn {

void RegisterJobs(const Config& config, bool test_jobs, JobRegistry* registry) {
  (*registry)["ping"] = NewPingJob();
  (*registry)["download_job"] = NewDownloadJob(config, test_jobs);
  if (test_jobs) {
    (*registry)["sleep"] = NewSleepJob();
    (*registry)["crash"] = NewCrashJob();
    (*registry)["fail"] = NewFailJob();
    (*registry)["hog"] = NewHogJob();
  }
}

void RegisterWebhookJobs(const Config& config, JobRegistry* registry) {
  (*registry)["webhook"] = NewWebhookJob(config);
}

}  // namespace djinn
