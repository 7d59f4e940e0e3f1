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
//
// Dependency outages: a job whose handler reports kUnavailable (PostgreSQL,
// the store, a configured file) is given back to the head of the queue
// with no attempt counted, and the worker holds back: it waits 1 s, then
// takes one trial job, doubling the wait up to 30 s while trials keep
// failing. One line is logged when an outage starts and one when it ends.
// When the store was below store.images.min_free as the job came back,
// the worker also looks at it every second and takes the trial as soon as
// it has room again.
//
// The master's death: the worker holds the read end of a pipe whose write
// end only the master holds (and PR_SET_PDEATHSIG, set again after the
// privilege drop). Idle, it leaves at once. Busy, it finishes the job
// while heartbeating its own consumer key, so no other consumer requeues
// the job meanwhile; past job_timeout it exits and leaves the job in
// flight for orphan requeue. Either way it exits with kExitWorkerOrphan.
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
  int life_fd = -1;             // read end of the master's life pipe (-1: none)
  bool webhooks = false;        // a delivery worker: the webhook queue and job only
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
  // A std::bad_alloc on the way makes the job poison.
  std::string RunJob(const RawJob& raw);
  std::string RunDecodedJob(const RawJob& raw);
  void Finish(const Envelope& env, const std::string& name, const Status& st,
              std::string* ack);
  // Counts the run in our scoreboard entry's SlotStats (the master's
  // metrics): outcome, duration, what PostgreSQL last said.
  void CountJob(const Envelope& env, const std::string& name, const Status& st);
  void Retry(const Envelope& env, const std::string& reason);
  void Kill(const Envelope& env, const std::string& reason);
  void HoldBack(const Envelope& env, const std::string& name, const Status& st);
  void DependencyAnswered();
  // False (after a short sleep) while holding back before the next trial.
  bool MayTakeJob();
  // The image store below its store.images.min_free (download workers).
  bool StoreBelowFloor() const;
  bool MasterGone();
  // Called often during a job: notices a vanished master and then keeps
  // our claim on the job alive (or gives up past job_timeout).
  void KeepAlive();
  void QueueDown(const Status& st);
  void QueueUp();
  void Backoff();
  void Title(const std::string& state);

  const WorkerParams& p_;
  const Config& config_;
  std::unique_ptr<Queue> queue_;
  JobRegistry jobs_;
  int attempts_ = 0;  // retries of a failed job on this worker's queue
  bool queue_down_ = false;
  int backoff_ms_ = 0;
  std::string title_prefix_;
  // A dependency outage (kUnavailable) in progress.
  struct HoldState {
    bool on = false;
    int64_t since_ms = 0;       // monotonic
    int64_t next_trial_ms = 0;  // monotonic
    int64_t delay_ms = 0;
    int64_t held = 0;           // jobs given back during it
    std::string first_error;
    // The store was below store.images.min_free when the job came back:
    // looked at every second, and a trial taken as soon as it has room.
    bool store_full = false;
    int64_t next_store_look_ms = 0;  // monotonic
  } hold_;
  bool master_gone_ = false;
  int64_t job_start_ms_ = 0;
  int64_t job_start_us_ = 0;             // for the duration histogram
  uint64_t pg_observations_seen_ = 0;    // PgClient::LastReach's count last published
  std::string job_id_;
  int64_t last_alive_check_ms_ = 0;
  int64_t last_orphan_heartbeat_ms_ = 0;
};

}  // namespace djinn

#endif  // DJINN_WORKER_WORKER_H_
