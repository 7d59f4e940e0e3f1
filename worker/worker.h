// The worker process: after fork it sandboxes itself, registers a curlyq
// consumer and runs jobs one at a time until told to stop:
//
//   take one job (ack of the previous one in the same round trip)
//   -> decode envelope and payload (poison -> dead set)
//   -> run the handler -> ack / retry with backoff / dead set
//
// It publishes busy/idle on the master's scoreboard (common/scoreboard.h).
// SIGTERM: finish the current job, ack it, unregister, exit 0.
// SIGUSR1: reopen the log file. Terminal signals are ignored.
#ifndef DJINN_WORKER_WORKER_H_
#define DJINN_WORKER_WORKER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "common/config.h"
#include "common/queue.h"
#include "common/scoreboard.h"
#include "worker/job.h"

namespace djinn {

struct WorkerParams {
  const Config* config = nullptr;
  int number = 0;               // the slot number shown in titles and logs
  Scoreboard* scoreboard = nullptr;
  size_t board_index = 0;
  std::string consumer_key;     // Q:inflight:<uuid>, chosen by the master
  pid_t master_pid = 0;
  bool test_jobs = false;       // register the test suite's jobs
  int idle_wait_ms = 1000;      // longest idle wait on Q:active (bounds stop latency)
};

// Runs in the child right after fork(); never returns.
[[noreturn]] void RunWorkerProcess(const WorkerParams& params);

class Worker {
 public:
  Worker(const WorkerParams& params, std::unique_ptr<Queue> queue);
  // The worker's only endless loop. Returns the process exit code.
  int Run();

 private:
  void RegisterConsumer();
  void ReopenLogIfAsked();
  // Runs one job; returns the ID to ack with the next take, or "" when the
  // job was already retried or killed.
  std::string RunJob(const RawJob& raw);
  void Finish(const Envelope& env, const std::string& name, const Status& st,
              std::string* ack);
  void Retry(const Envelope& env, const std::string& reason);
  void Kill(const Envelope& env, const std::string& reason);
  void QueueDown(const Status& st);
  void QueueUp();
  void Backoff();
  void Title(const std::string& state);

  const WorkerParams& p_;
  const Config& config_;
  std::unique_ptr<Queue> queue_;
  JobRegistry jobs_;
  bool queue_down_ = false;
  int backoff_ms_ = 0;
  std::string title_prefix_;
};

}  // namespace djinn

#endif  // DJINN_WORKER_WORKER_H_
