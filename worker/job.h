// Job handlers: one file per job type under worker/jobs/, registered by
// name in worker/jobs/registry.cc (adding a job type = one file + one line
// there). A handler is created in the worker after fork, so it may hold
// per-worker state (a database connection) that never crosses a fork.
//
// Outcome of Run(), which decides the job's fate in Worker::FinishJob():
//   ok          -> ack
//   kPermanent  -> ack; the handler has recorded the error where the user
//                  sees it (e.g. image_downloads.error)
//   kTransient  -> retry with backoff; when ctx.last_attempt the handler
//                  should record the error and return kPermanent instead
//   kPoison     -> dead set at once (arguments unusable)
//   kUnavailable -> a dependency of ours failed, not the job: given back
//                  with no attempt counted; the worker holds back
#ifndef DJINN_WORKER_JOB_H_
#define DJINN_WORKER_JOB_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/envelope.h"
#include "common/payload.h"
#include "common/status.h"

namespace djinn {

struct JobContext {
  const Config& config;
  const Envelope& envelope;
  bool last_attempt = false;
  // Shows a short state in the worker's process title ("42%").
  std::function<void(const std::string&)> set_progress;
  // Call at least every few seconds during long work (cheap: it does
  // something at most once a second): lets the worker notice that its
  // master died and keep its claim on the job alive meanwhile.
  std::function<void()> keep_alive;
  // Runs in a child process the job forks (the download process), first
  // thing: drops what the worker holds that a child must not keep (the
  // scoreboard mapping). May be empty.
  std::function<void()> in_child;
  // Counts the bytes of an image stored (the master's metrics). May be
  // empty.
  std::function<void(uint64_t)> count_bytes;
};

class JobHandler {
 public:
  virtual ~JobHandler() = default;
  virtual Status Run(const DecodedJob& job, JobContext& ctx) = 0;
};

using JobRegistry = std::map<std::string, std::unique_ptr<JobHandler>>;

// Fills the registry with every job type this build handles. With
// test_jobs, also the jobs only the test suite uses (sleep, crash, fail).
void RegisterJobs(const Config& config, bool test_jobs, JobRegistry* registry);
// The delivery workers' registry: the webhook job only.
void RegisterWebhookJobs(const Config& config, JobRegistry* registry);

// One factory per job file.
std::unique_ptr<JobHandler> NewPingJob();
// test_hooks: honour DJINN_CONSUMER_TEST_DOWNLOAD_PROBE (the test suite's
// sandbox probes; see worker/fetch_child.h ConfineOptions::probe).
std::unique_ptr<JobHandler> NewDownloadJob(const Config& config, bool test_hooks = false);
std::unique_ptr<JobHandler> NewWebhookJob(const Config& config);
std::unique_ptr<JobHandler> NewSleepJob();
std::unique_ptr<JobHandler> NewCrashJob();
std::unique_ptr<JobHandler> NewFailJob();
std::unique_ptr<JobHandler> NewHogJob();

}  // namespace djinn

#endif  // DJINN_WORKER_JOB_H_
