// The supervisor: the master's only endless loop (Supervisor::Run).
//
// It forks `workers` workers, waits on a self-pipe of signals with a
// bounded tick, and on each turn: handles signals (DESIGN §5 table in
// common/signals.h), reaps dead workers (requeueing their in-flight jobs
// with Attempt+1), respawns what died unasked (throttled when workers die
// young), kills workers whose job ran past job_timeout (retiring ones
// too), and does the queue duties: heartbeats, scheduled -> active, orphan
// requeue. It never runs a job and never blocks long: Redis calls have
// short timeouts and failures are retried on later ticks.
//
// Reloads (SIGHUP) start a new generation; the old ones finish their jobs
// with their own configuration and queue. At most kMaxGenerations are
// alive at once: a reload beyond that kills the oldest generation's
// workers (their jobs go back without an attempt counted).
#ifndef DJINN_MASTER_SUPERVISOR_H_
#define DJINN_MASTER_SUPERVISOR_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/pidfile.h"
#include "common/queue.h"
#include "common/redis_sentinel.h"
#include "common/scoreboard.h"
#include "common/unique_fd.h"
#include "master/control.h"
#include "master/metrics.h"
#include "master/notify.h"

namespace djinn {

class Supervisor {
 public:
  explicit Supervisor(Config config);
  ~Supervisor();
  // Runs until stopped; returns the process exit code.
  int Run();

 private:
  // One generation's configuration and queue handle: a worker keeps those
  // of the generation it was started in until it ends, so heartbeats,
  // job_timeout and the requeue of its jobs use what the worker itself
  // uses, even after a reload changed them.
  struct Generation {
    int number = 0;
    std::shared_ptr<const Config> config;
    std::shared_ptr<Queue> queue;
    std::shared_ptr<Queue> webhook_queue;  // null when webhooks are off
    int webhook_workers() const { return config->crypto.set ? config->webhooks.workers : 0; }
  };
  // The process table, the single source of truth about workers (as
  // gunicorn's WORKERS and nginx's ngx_processes[]): a slot is filled when
  // a worker of the current generation with that number is not retiring.
  struct Proc {
    pid_t pid = -1;
    int number = 0;            // slot number, 1-based (per kind)
    bool webhooks = false;     // a delivery worker (its own slots and queue)
    std::shared_ptr<const Generation> gen;
    Queue& queue() const { return webhooks ? *gen->webhook_queue : *gen->queue; }
    size_t board = 0;          // scoreboard entry
    std::string consumer_key;
    int64_t spawned_ms = 0;
    int64_t term_ms = 0;       // when we sent SIGTERM (0: not sent)
    int64_t kill_at_ms = 0;    // SIGKILL due then (0: none): job_timeout grace
    bool killed = false;       // we sent SIGKILL
    bool timed_out = false;    // its job ran past job_timeout
    bool retiring = false;     // asked to stop (reload, TTOU, shutdown)
  };
  // Respawn throttling of a slot: not a pid, only its recent history.
  struct SlotThrottle {
    int fails = 0;             // consecutive young deaths
    int64_t next_spawn_ms = 0;
  };
  struct PendingFail {
    std::shared_ptr<const Generation> gen;
    bool webhooks = false;
    std::string consumer_key;
    std::string who;           // "worker 2 (pid 123)" for the log
    std::string cause;
    bool count_attempt = true;
    std::string why;           // kept in Q:dead:why for a job that dies
  };

  Status Start();
  void Shutdown();
  void WaitForEvents(int timeout_ms);
  // Redis Sentinel: the +switch-master subscription (none without
  // sentinels), and what a failover it reports sets off: this process's
  // queue connections and every worker's (SIGUSR2) ask the sentinels again.
  void OpenSentinelWatch();
  void WatchSentinels();
  void HandleSignals();
  void Reload();
  void BoundGenerations();
  void ReapWorkers();
  void OnWorkerExit(Proc& proc, int status);
  void ManageWorkers();
  void SpawnWorker(int number, bool webhooks);
  void RetireWorker(Proc& proc, const char* why);
  void KillWorker(Proc& proc);
  void CheckJobTimeouts();
  void StopTick();
  void QueueDuties();
  void FailPendingJobs();
  void QueueResult(const Status& st);
  bool SlotFilled(int number, bool webhooks) const;
  // Opens the generation's queue handles (sharing `like`'s when the same).
  void OpenQueues(Generation* gen, const Generation* like);
  size_t FreeBoardEntry() const;
  // What `djinn-consumer status` shows (master/control.h).
  MasterStatus Snapshot() const;
  const Config& config() const { return *gen_->config; }
  // Metrics and health (master/supervisor_metrics.cc): the endpoint, a
  // dead worker's counters folded into the master's before its entry is
  // reused, and what GET /metrics and /healthz say.
  Status OpenMetrics();
  void NoteWorkerExit(const Proc& proc, int status);
  HttpServer::Response ServeHttp(std::string_view path);
  std::string MetricsText();
  std::string HealthProblem();  // "" when healthy
  void SampleQueues();

  std::shared_ptr<const Generation> gen_;  // the current generation
  int desired_ = 0;
  std::map<pid_t, Proc> procs_;
  std::vector<SlotThrottle> throttle_;  // index = slot number - 1
  std::vector<SlotThrottle> webhook_throttle_;
  std::vector<PendingFail> pending_fails_;
  std::unique_ptr<Scoreboard> board_;
  PidFile pidfile_;
  UniqueFd sig_read_, sig_write_;
  // The life pipe: nobody writes it; workers hold the read end, only the
  // master the write end, so the master's death is end of file for them.
  UniqueFd life_read_, life_write_;
  bool stopping_ = false;
  bool fast_stop_ = false;
  int64_t stop_deadline_ms_ = 0;
  int64_t last_stop_note_ms_ = 0;
  bool queue_down_ = false;
  int64_t next_heartbeat_ms_ = 0, next_schedule_ms_ = 0, next_orphans_ms_ = 0;
  bool test_jobs_ = false;
  int idle_wait_ms_ = 1000;
  // The status socket (none when it has no path) and what it counts.
  ControlSocket control_;
  int64_t started_ms_ = 0, started_unix_ = 0;
  uint64_t exited_jobs_done_ = 0, workers_started_ = 0, worker_restarts_ = 0;
  std::unique_ptr<MasterMetrics> metrics_;  // null when metrics are off
  std::unique_ptr<SentinelWatch> sentinel_watch_;  // null without sentinels
  // systemd notifications (master/notify.h): READY=1 is due once every
  // slot of the current generation has its worker (at start, after a
  // reload); STATUS= at most once a second.
  Notifier notify_;
  bool ready_pending_ = true;
  int64_t next_notify_status_ms_ = 0;
  void NotifyState();
  bool AllSlotsFilled() const;
  std::string NotifyStatusLine() const;
};

// Creates the store directory (0750) when missing; as root, gives it to
// the workers' user and group.
Status PrepareStore(const Config& config);

}  // namespace djinn

#endif  // DJINN_MASTER_SUPERVISOR_H_
