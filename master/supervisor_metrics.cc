// The supervisor's metrics and health (master/metrics.h): what GET
// /metrics and GET /healthz say, made on the supervisor's thread from the
// process table, the scoreboard's per-entry counters and a queue sample.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <ctime>

#include "common/exit_codes.h"
#include "common/log.h"
#include "master/prom_text.h"
#include "master/supervisor.h"

namespace djinn {
namespace {

constexpr int64_t kSampleEveryMs = 1000;  // queue depth: at most one Stats() a second

// Why a worker that was not asked to stop ended (worker_restarts_total).
const char* const kRestartReasons[] = {"job_timeout", "sigkill", "signal", "sandbox", "setup", "exit"};

const char* RestartReason(bool timed_out, int status) {
  if (timed_out) return "job_timeout";
  if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGKILL ? "sigkill" : "signal";
  if (WIFEXITED(status) && WEXITSTATUS(status) == kExitWorkerSandbox) return "sandbox";
  if (WIFEXITED(status) && WEXITSTATUS(status) == kExitWorkerInit) return "setup";
  return "exit";
}

// Worker states, in the order a worker is reported by the first that holds.
const char* const kWorkerStates[] = {"killed", "retiring", "busy", "waiting_redis", "held_back", "idle"};

}  // namespace

Status Supervisor::OpenMetrics() {
  if (config().metrics.listen.empty()) return Status::Ok();
  metrics_ = std::make_unique<MasterMetrics>();
  Status st = metrics_->http.Open(config().metrics.listen,
                                  [this](std::string_view path) { return ServeHttp(path); });
  if (!st.ok()) {
    metrics_.reset();
    return st;
  }
  LOG_INFO("metrics: serving /metrics and /healthz on %s", config().metrics.listen.c_str());
  return Status::Ok();
}

void Supervisor::NoteWorkerExit(const Proc& proc, int status) {
  if (!metrics_) return;
  // Its entry will be Reset for another worker: keep what it counted.
  if (const SlotStats* s = board_->Stats(proc.board)) {
    s->AddTo(&metrics_->retired);
    if (s->pg_reach() != Reach::kUnknown && s->pg_reach_ms() >= metrics_->pg_ms) {
      metrics_->pg = s->pg_reach();
      metrics_->pg_ms = s->pg_reach_ms();
    }
  }
  if (!proc.retiring && !stopping_) metrics_->restarts[RestartReason(proc.timed_out, status)]++;
}

HttpServer::Response Supervisor::ServeHttp(std::string_view path) {
  HttpServer::Response r;
  if (path == "/metrics") {
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = MetricsText();
  } else if (path == "/healthz") {
    std::string problem = HealthProblem();
    r.code = problem.empty() ? 200 : 503;
    r.body = (problem.empty() ? "ok" : problem) + "\n";
  } else {
    r.code = 404;
    r.body = "not found: try /metrics or /healthz\n";
  }
  return r;
}

void Supervisor::SampleQueues() {
  int64_t now = MonotonicMs();
  if (metrics_->sampled && now - metrics_->sampled_ms < kSampleEveryMs) return;
  metrics_->sampled = true;
  metrics_->sampled_ms = now;
  auto st = gen_->queue->Stats();
  metrics_->redis_up = st.ok();
  metrics_->redis_error = st.ok() ? "" : st.status().message();
  metrics_->stats = st.ok() ? *st : QueueStats{};
  metrics_->webhook_sampled = false;
  if (st.ok() && gen_->webhook_queue) {
    auto ws = gen_->webhook_queue->Stats();
    metrics_->webhook_sampled = ws.ok();
    if (ws.ok()) metrics_->webhook_stats = *ws;
  }
}

std::string Supervisor::HealthProblem() {
  if (stopping_) return "stopping";
  SampleQueues();
  if (!metrics_->redis_up) return "redis unavailable: " + metrics_->redis_error;
  int running = 0, webhooks = 0;
  for (const auto& [pid, proc] : procs_) {
    if (proc.gen != gen_ || proc.retiring) continue;
    if (proc.webhooks) webhooks += proc.number <= gen_->webhook_workers();
    else running += proc.number <= desired_;
  }
  if (running < desired_)
    return std::to_string(running) + " of " + std::to_string(desired_) + " workers running";
  if (webhooks < gen_->webhook_workers())
    return std::to_string(webhooks) + " of " + std::to_string(gen_->webhook_workers()) +
           " webhook workers running";
  return "";
}

std::string Supervisor::MetricsText() {
  SampleQueues();
  PromText t;
  int64_t now = MonotonicMs();

  t.Family("djinn_consumer_build_info", "gauge", "Always 1; the version of this build.");
  t.Sample("djinn_consumer_build_info", {{"version", DJINN_VERSION}}, 1);
  t.Family("djinn_consumer_start_time_seconds", "gauge", "When the master started, unix seconds.");
  t.Sample("djinn_consumer_start_time_seconds", {}, static_cast<double>(started_unix_));
  t.Family("djinn_consumer_config_generation", "gauge",
           "Configuration generation: 1 at start, one more per successful reload (SIGHUP).");
  t.Sample("djinn_consumer_config_generation", {}, gen_->number);

  // Jobs: what exited workers counted plus what the live ones count now.
  JobTotals totals = metrics_->retired;
  Reach pg = metrics_->pg;
  int64_t pg_ms = metrics_->pg_ms;
  std::map<std::string, int> states[2];  // [webhooks]
  for (const auto& [pid, proc] : procs_) {
    const SlotStats* s = board_->Stats(proc.board);
    if (s) {
      s->AddTo(&totals);
      if (s->pg_reach() != Reach::kUnknown && s->pg_reach_ms() >= pg_ms) {
        pg = s->pg_reach();
        pg_ms = s->pg_reach_ms();
      }
    }
    WorkerState ws = board_->Read(proc.board);
    uint8_t cond = s ? s->condition() : 0;
    const char* state = proc.killed                        ? "killed"
                        : proc.retiring                    ? "retiring"
                        : ws.busy                          ? "busy"
                        : cond & kConditionRedisDown       ? "waiting_redis"
                        : cond & kConditionHeldBack        ? "held_back"
                                                           : "idle";
    states[proc.webhooks ? 1 : 0][state]++;
  }
  t.Family("djinn_consumer_jobs_total", "counter",
           "Job runs by job type and outcome: ok (acked), failed (recorded for the user, acked), "
           "retried, dead (attempts exhausted), poison (unusable message), held_back (a "
           "dependency was down; given back, no attempt counted).");
  for (const auto& [type, tt] : totals.types)
    for (int o = 0; o < kJobOutcomes; o++)
      t.Sample("djinn_consumer_jobs_total",
               {{"job", type}, {"outcome", JobOutcomeName(static_cast<JobOutcome>(o))}},
               static_cast<double>(tt.outcomes[static_cast<size_t>(o)]));
  t.Family("djinn_consumer_job_duration_seconds", "histogram",
           "Time from taking a job to deciding its fate, by job type.");
  std::vector<double> bounds(kJobDurationBuckets.begin(), kJobDurationBuckets.end());
  for (const auto& [type, tt] : totals.types)
    t.Histogram("djinn_consumer_job_duration_seconds", {{"job", type}}, bounds,
                std::vector<uint64_t>(tt.buckets.begin(), tt.buckets.end()),
                static_cast<double>(tt.sum_us) / 1e6);
  t.Family("djinn_consumer_downloaded_bytes_total", "counter",
           "Bytes of image downloads that completed.");
  t.Sample("djinn_consumer_downloaded_bytes_total", {}, static_cast<double>(totals.downloaded_bytes));

  t.Family("djinn_consumer_workers", "gauge", "Worker processes by kind and state.");
  for (int k = 0; k < 2; k++)
    for (const char* state : kWorkerStates)
      t.Sample("djinn_consumer_workers", {{"kind", k ? "webhooks" : "download"}, {"state", state}},
               states[k][state]);
  t.Family("djinn_consumer_workers_desired", "gauge", "Workers the master keeps running, by kind.");
  t.Sample("djinn_consumer_workers_desired", {{"kind", "download"}}, desired_);
  t.Sample("djinn_consumer_workers_desired", {{"kind", "webhooks"}}, gen_->webhook_workers());
  t.Family("djinn_consumer_worker_restarts_total", "counter",
           "Workers that ended without being asked (and were replaced), by reason.");
  for (const char* reason : kRestartReasons) {
    auto it = metrics_->restarts.find(reason);
    t.Sample("djinn_consumer_worker_restarts_total", {{"reason", reason}},
             it == metrics_->restarts.end() ? 0 : static_cast<double>(it->second));
  }

  t.Family("djinn_consumer_queue_jobs", "gauge",
           "Jobs in the queue by state, sampled at most once a second (absent while Redis is "
           "down); inflight = envelopes not active, scheduled or dead.");
  auto queue_rows = [&](const std::string& name, const QueueStats& q) {
    int64_t inflight = std::max<int64_t>(0, q.data - q.active - q.scheduled - q.dead);
    t.Sample("djinn_consumer_queue_jobs", {{"queue", name}, {"state", "active"}}, static_cast<double>(q.active));
    t.Sample("djinn_consumer_queue_jobs", {{"queue", name}, {"state", "scheduled"}},
             static_cast<double>(q.scheduled));
    t.Sample("djinn_consumer_queue_jobs", {{"queue", name}, {"state", "inflight"}}, static_cast<double>(inflight));
    t.Sample("djinn_consumer_queue_jobs", {{"queue", name}, {"state", "dead"}}, static_cast<double>(q.dead));
  };
  if (metrics_->redis_up) queue_rows(config().queue, metrics_->stats);
  if (metrics_->redis_up && metrics_->webhook_sampled)
    queue_rows(WebhookQueueName(config()), metrics_->webhook_stats);
  t.Family("djinn_consumer_queue_consumers", "gauge",
           "Consumers registered on the queue (ours and any other host's).");
  if (metrics_->redis_up)
    t.Sample("djinn_consumer_queue_consumers", {{"queue", config().queue}},
             static_cast<double>(metrics_->stats.consumers));

  t.Family("djinn_consumer_dependency_up", "gauge",
           "1 when the dependency answered, 0 when it did not: redis as the master last sampled "
           "it, postgresql as the newest statement of any worker found it (absent before one).");
  t.Sample("djinn_consumer_dependency_up", {{"dependency", "redis"}}, metrics_->redis_up ? 1 : 0);
  if (pg != Reach::kUnknown) {
    t.Sample("djinn_consumer_dependency_up", {{"dependency", "postgresql"}}, pg == Reach::kUp ? 1 : 0);
  }
  t.Family("djinn_consumer_dependency_checked_seconds", "gauge",
           "Seconds since the dependency_up value was observed.");
  t.Sample("djinn_consumer_dependency_checked_seconds", {{"dependency", "redis"}},
           static_cast<double>(now - metrics_->sampled_ms) / 1000);
  if (pg != Reach::kUnknown)
    t.Sample("djinn_consumer_dependency_checked_seconds", {{"dependency", "postgresql"}},
             static_cast<double>(now - pg_ms) / 1000);
  t.Family("djinn_consumer_healthy", "gauge", "1 when GET /healthz answers 200.");
  t.Sample("djinn_consumer_healthy", {}, HealthProblem().empty() ? 1 : 0);
  return t.text();
}

}  // namespace djinn
