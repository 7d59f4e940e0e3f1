#include "worker/worker.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <new>

#include "common/envelope.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "common/payload.h"
#include "common/pg.h"
#include "common/proctitle.h"
#include "common/redis.h"
#include "common/sandbox.h"
#include "common/unique_fd.h"
#include "worker/fetch.h"

namespace djinn {
namespace {

constexpr int kMaxBackoffMs = 5000;  // Redis down: retry at most this far apart
constexpr int kWorkerRedisTimeoutMs = 5000;
// A dependency of ours down (kUnavailable): one trial job after this,
// doubling up to the cap, while the others wait in the queue.
constexpr int64_t kHoldBackMinMs = 1000;
constexpr int64_t kHoldBackMaxMs = 30000;
// Held back with the store below its floor: how often it is looked at.
constexpr int64_t kStoreLookMs = 1000;
// An orphan (master gone) heartbeats its own consumer key this often while
// it finishes its job: well inside curlyq's 120 s expiry.
constexpr int64_t kOrphanHeartbeatMs = 5000;
// RLIMIT_NPROC headroom over the tasks the worker's uid runs at its start,
// plus 4 per configured worker (see RunWorkerProcess).
constexpr uint64_t kProcessHeadroom = 64;

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_reopen = 0;
volatile sig_atomic_t g_resolve = 0;
// RedisConn::SentinelReconnects() when our inflight set was last recovered.
uint64_t g_reconnects_seen = 0;

// ---------------------------------------------------------------------
// SIGNAL HANDLERS: async-signal context. Only set a flag; the loop acts.
// ---------------------------------------------------------------------
void OnTerm(int) { g_stop = 1; }
void OnUsr1(int) { g_reopen = 1; }
void OnUsr2(int) { g_resolve = 1; }

void InstallWorkerSignals() {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = OnTerm;
  sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = OnUsr1;
  sigaction(SIGUSR1, &sa, nullptr);
  sa.sa_handler = OnUsr2;  // the master heard of a Redis failover
  sigaction(SIGUSR2, &sa, nullptr);
  // Terminal signals (Ctrl-C goes to the whole process group) and the
  // master's own signals mean nothing to a worker.
  sa.sa_handler = SIG_IGN;
  for (int s : {SIGINT, SIGQUIT, SIGHUP, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE})
    sigaction(s, &sa, nullptr);
  sa.sa_handler = SIG_DFL;
  sigaction(SIGCHLD, &sa, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

// SIGUSR2: the master heard +switch-master from a sentinel. Our queue
// connections ask the sentinels again before their next command (the
// command at hand, a wait of at most idle_wait_ms, ends first).
void ResolveIfAsked() {
  if (!g_resolve) return;
  g_resolve = 0;
  RedisConn::ResolveAgainAll();
}

// Closes every inherited fd but stdio, the log and the read end of the
// master's life pipe: other workers' state, the pidfile lock, the master's
// Redis connection, and the life pipe's write end (held by the master
// alone, so that its death reads as end of file here).
void CloseInheritedFds(int life_fd) {
  CloseFdsExcept({Log::Fd(), life_fd});
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, STDIN_FILENO);
    close(devnull);
  }
}

}  // namespace

[[noreturn]] void RunWorkerProcess(const WorkerParams& params) {
  Log::SetRole(std::string(params.webhooks ? "webhooks " : "worker ") + std::to_string(params.number));
  InstallWorkerSignals();
  // If the master dies, finish the job at hand and leave (SIGTERM), rather
  // than run unsupervised. The check closes the race with a master that
  // died before prctl.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != params.master_pid) _exit(kExitWorkerOrphan);
  CloseInheritedFds(params.life_fd);
  SetProcTitle(std::string("djinn-consumer: ") + (params.webhooks ? "webhooks " : "worker ") +
               std::to_string(params.number) + " starting");

  const Config& cfg = *params.config;
  SandboxOptions sb;
  sb.user = cfg.user;
  sb.group = cfg.group;
  // Delivery workers never touch the store.
  if (!params.webhooks) sb.writable_dirs = {cfg.store.path};
  if (!cfg.log_file.empty()) sb.writable_files = {cfg.log_file};
  std::string notes;
  Status st = ApplySandbox(sb, &notes);
  // A worker needs at most a download process and two resolver threads
  // beyond itself; the headroom covers the other workers starting too.
  if (st.ok())
    st = LimitProcesses(kProcessHeadroom + 4 * static_cast<uint64_t>(cfg.workers + cfg.webhooks.workers),
                        &notes);
  if (!st.ok()) {
    LOG_ERROR("cannot apply sandbox: %s", st.message().c_str());
    _exit(kExitWorkerSandbox);
  }
  LOG_DEBUG("sandbox applied (%s)", notes.c_str());
  // The kernel clears the parent-death signal when a process changes its
  // uid or gid (the drop above): set it again, and look again whether the
  // master died meanwhile.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != params.master_pid) _exit(kExitWorkerOrphan);

  Worker worker(params, OpenQueue(cfg, kWorkerRedisTimeoutMs,
                                  params.webhooks ? WebhookQueueName(cfg) : std::string()));
  _exit(worker.Run());
}

Worker::Worker(const WorkerParams& params, std::unique_ptr<Queue> queue)
    : p_(params), config_(*params.config), queue_(std::move(queue)) {
  attempts_ = p_.webhooks ? config_.webhooks.attempts : config_.attempts;
  if (p_.webhooks) RegisterWebhookJobs(config_, &jobs_);
  else RegisterJobs(config_, p_.test_jobs, &jobs_);
  title_prefix_ = std::string("djinn-consumer: ") + (p_.webhooks ? "webhooks " : "worker ") +
                  std::to_string(p_.number) + " ";
}

void Worker::Title(const std::string& state) { SetProcTitle(title_prefix_ + state); }

int Worker::Run() {
  RegisterConsumer();
  Title("idle");
  std::string pending_ack;
  while (!g_stop) {
    ReopenLogIfAsked();
    ResolveIfAsked();
    if (MasterGone()) {
      LOG_WARN("master (pid %d) is gone; leaving", static_cast<int>(p_.master_pid));
      break;
    }
    if (!MayTakeJob()) continue;
    if (queue_down_ || RedisConn::SentinelReconnects() != g_reconnects_seen) {
      // Back from an outage? The reply of the call that failed may have
      // been lost after Redis ran it: a job taken that we never saw would
      // sit in our inflight set for as long as we live. Give such jobs
      // back before taking more; the one we hold (pending_ack) stays.
      // Likewise after a silent reconnect through the sentinels: a new
      // master (failover) may hold a take whose ack never reached it.
      auto recovered = queue_->RecoverInflight(p_.consumer_key, pending_ack);
      if (!recovered.ok()) {
        QueueDown(recovered.status());
        Backoff();
        continue;
      }
      g_reconnects_seen = RedisConn::SentinelReconnects();
      if (*recovered > 0)
        LOG_WARN("gave back %lld job(s) taken while the connection broke",
                 static_cast<long long>(*recovered));
    }
    auto taken = queue_->AckAndTake(p_.consumer_key, pending_ack, p_.idle_wait_ms);
    if (!taken.ok()) {
      if (taken.status().message().find("not registered") != std::string::npos) {
        // The supervisor judged us dead (heartbeat gap): our inflight jobs
        // were requeued already; join again.
        LOG_WARN("consumer %s was unregistered; registering again", p_.consumer_key.c_str());
        pending_ack.clear();
        RegisterConsumer();
        continue;
      }
      QueueDown(taken.status());
      Backoff();
      continue;
    }
    QueueUp();
    pending_ack.clear();
    if (!taken->has_value()) continue;
    pending_ack = RunJob(**taken);
    Title("idle");
  }
  // Stopping: ack the last job on its own (no new take), bounded tries; a
  // job whose ack cannot be written stays in our inflight set and is
  // requeued by the master.
  for (int i = 0; !pending_ack.empty() && i < 3; i++) {
    Status st = queue_->Ack(p_.consumer_key, pending_ack);
    if (st.ok()) pending_ack.clear();
    else Backoff();
  }
  if (!pending_ack.empty())
    LOG_ERROR("job %s: ack failed; it stays in flight and will be requeued", pending_ack.c_str());
  else if (Status st = queue_->Unregister(p_.consumer_key); !st.ok())
    LOG_WARN("unregister: %s", st.message().c_str());
  LOG_DEBUG("stopped");
  return MasterGone() ? kExitWorkerOrphan : kExitOk;
}

bool Worker::MasterGone() {
  if (master_gone_) return true;
  bool gone = getppid() != p_.master_pid;
  if (!gone && p_.life_fd >= 0) {
    // Nobody writes the pipe: readable means end of file, the master's end
    // closed (it died, whatever PR_SET_PDEATHSIG did or did not do).
    struct pollfd pfd = {p_.life_fd, POLLIN, 0};
    gone = poll(&pfd, 1, 0) > 0;
  }
  master_gone_ = gone;
  return gone;
}

void Worker::KeepAlive() {
  int64_t now = MonotonicMs();
  if (now - last_alive_check_ms_ < 1000) return;
  last_alive_check_ms_ = now;
  if (!MasterGone()) return;
  if (last_orphan_heartbeat_ms_ == 0)
    LOG_WARN("master (pid %d) is gone; finishing job %s, heartbeating consumer %s myself",
             static_cast<int>(p_.master_pid), job_id_.c_str(), p_.consumer_key.c_str());
  if (now - job_start_ms_ >= int64_t{config_.job_timeout} * 1000) {
    // Nobody else enforces job_timeout now. Leave the job in flight: once
    // our heartbeats stop, any consumer requeues it (curlyq's expiry).
    LOG_ERROR("job %s ran past job_timeout %ds with no master; exiting, the job is requeued "
              "when consumer %s expires",
              job_id_.c_str(), config_.job_timeout, p_.consumer_key.c_str());
    _exit(kExitWorkerOrphan);
  }
  if (last_orphan_heartbeat_ms_ == 0 || now - last_orphan_heartbeat_ms_ >= kOrphanHeartbeatMs) {
    last_orphan_heartbeat_ms_ = now;
    if (Status st = queue_->Heartbeat({p_.consumer_key}); !st.ok())
      LOG_WARN("heartbeat of %s: %s", p_.consumer_key.c_str(), st.message().c_str());
  }
}

bool Worker::MayTakeJob() {
  if (!hold_.on) return true;
  int64_t now = MonotonicMs();
  if (hold_.store_full && now >= hold_.next_store_look_ms) {
    hold_.next_store_look_ms = now + kStoreLookMs;
    if (!StoreBelowFloor()) {
      LOG_INFO("store %s has room again; trying a job", config_.store.path.c_str());
      hold_.store_full = false;
      return true;
    }
  }
  int64_t wait = hold_.next_trial_ms - now;
  if (wait <= 0) return true;
  // Short naps: a stop, a log reopen or the master's death is seen at once.
  int64_t nap = std::min<int64_t>(wait, 200);
  struct timespec ts = {static_cast<time_t>(nap / 1000), static_cast<long>(nap % 1000) * 1000000};
  nanosleep(&ts, nullptr);
  return false;
}

void Worker::HoldBack(const Envelope& env, const std::string& name, const Status& st) {
  Status rs = queue_->Release(p_.consumer_key, env.id);
  if (!rs.ok()) {
    LOG_ERROR("job %s: cannot give it back: %s; it goes back when redis answers",
              env.id.c_str(), rs.message().c_str());
    QueueDown(rs);  // the next turn gives back what we hold (RecoverInflight)
  }
  int64_t now = MonotonicMs();
  if (!hold_.on) {
    hold_ = HoldState{true, now, 0, kHoldBackMinMs, 0, st.message()};
    LOG_ERROR("job %s (%s): %s; a dependency is unavailable: holding jobs back (given back, no "
              "attempt counted) until it answers",
              env.id.c_str(), name.c_str(), st.message().c_str());
  } else {
    hold_.delay_ms = std::min(hold_.delay_ms * 2, kHoldBackMaxMs);
    LOG_DEBUG("job %s: %s; given back", env.id.c_str(), st.message().c_str());
  }
  hold_.held++;
  hold_.next_trial_ms = now + hold_.delay_ms;
  hold_.store_full = !p_.webhooks && StoreBelowFloor();
  hold_.next_store_look_ms = now + kStoreLookMs;
  if (SlotStats* s = p_.scoreboard->Stats(p_.board_index)) s->SetCondition(kConditionHeldBack, true);
  Title(hold_.store_full ? "held back: store full" : "held back: dependency unavailable");
}

bool Worker::StoreBelowFloor() const {
  UniqueFd dir(open(config_.store.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return false;  // another trouble: the trials find it
  Result<StoreSpace> space = GetStoreSpace(dir.get(), config_.store);
  if (!space.ok()) return false;
  return !CheckStoreSpace(*space, 0, config_.store.path).ok();
}

void Worker::DependencyAnswered() {
  if (!hold_.on) return;
  LOG_WARN("dependency available again after %llds (it was: %s); %lld job(s) held back meanwhile",
           static_cast<long long>((MonotonicMs() - hold_.since_ms) / 1000),
           hold_.first_error.c_str(), static_cast<long long>(hold_.held));
  hold_ = HoldState{};
  if (SlotStats* s = p_.scoreboard->Stats(p_.board_index)) s->SetCondition(kConditionHeldBack, false);
}

void Worker::ReopenLogIfAsked() {
  if (!g_reopen) return;
  g_reopen = 0;
  Status st = Log::Reopen();
  if (st.ok()) LOG_INFO("log file reopened");
  else LOG_WARN("cannot reopen log: %s", st.message().c_str());
}

void Worker::RegisterConsumer() {
  while (!g_stop) {
    ReopenLogIfAsked();
    Status st = queue_->Register(p_.consumer_key);
    if (st.ok()) {
      QueueUp();
      return;
    }
    QueueDown(st);
    Backoff();
  }
}

std::string Worker::RunJob(const RawJob& raw) {
  LogJobScope log_job(raw.id);  // "job_id" in JSON log lines until it returns
  // The decoders bound what they allocate by their input (common/gob.h),
  // but a payload that still exhausts memory is the message's fault: it is
  // poison, kept untouched in the dead set, and the worker goes on.
  try {
    return RunDecodedJob(raw);
  } catch (const std::bad_alloc&) {
    p_.scoreboard->SetIdle(p_.board_index);
    Envelope bare;
    bare.id = raw.id;
    std::string unused;
    Finish(bare, "?",
           Status::Poison("out of memory handling it (" + std::to_string(raw.envelope.size()) +
                          "-byte envelope)"),
           &unused);
    return "";
  }
}

std::string Worker::RunDecodedJob(const RawJob& raw) {
  job_start_us_ = MonotonicUs();
  auto env = DecodeEnvelope(raw.envelope);
  if (!env.ok()) {
    Envelope bare;
    bare.id = raw.id;
    std::string unused;
    Finish(bare, "?", env.status(), &unused);
    return "";
  }
  Envelope& e = *env;
  // The Redis key is what the queue's sets hold; curlyq always writes the
  // same ID inside. Should they differ, the key wins (acks must match).
  if (e.id != raw.id) {
    LOG_WARN("job %s: envelope names ID \"%s\"; using the queue's", raw.id.c_str(), e.id.c_str());
    e.id = raw.id;
  }
  auto job = DecodePayload(e.data);
  std::string name = job.ok() ? job->name : "?";
  p_.scoreboard->SetBusy(p_.board_index, e.id, name, MonotonicMs());
  Title("busy " + name + " " + e.id);
  std::string ack;
  if (!job.ok()) {
    Finish(e, name, job.status(), &ack);
  } else if (auto it = jobs_.find(job->name); it == jobs_.end()) {
    Finish(e, name, Status::Poison("unknown job \"" + job->name + "\""), &ack);
  } else {
    job_id_ = e.id;
    job_start_ms_ = MonotonicMs();
    JobContext ctx{config_, e, RetriesExhausted(e, attempts_),
                   [this, &name, &e](const std::string& progress) {
                     Title("busy " + name + " " + e.id + " " + progress);
                     KeepAlive();
                   },
                   [this] { KeepAlive(); },
                   [this] { p_.scoreboard->DetachInChild(); },
                   [this](uint64_t bytes) {
                     if (SlotStats* s = p_.scoreboard->Stats(p_.board_index))
                       s->CountDownloadedBytes(bytes);
                   }};
    Status st = it->second->Run(*job, ctx);
    Finish(e, name, st, &ack);
  }
  p_.scoreboard->SetIdle(p_.board_index);
  return ack;
}

void Worker::Finish(const Envelope& env, const std::string& name, const Status& st,
                    std::string* ack) {
  CountJob(env, name, st);
  if (!st.unavailable() && !st.poison()) DependencyAnswered();
  switch (st.kind()) {
    case Status::Kind::kUnavailable:
      HoldBack(env, name, st);
      return;
    case Status::Kind::kOk:
      LOG_DEBUG("job %s (%s): done", env.id.c_str(), name.c_str());
      *ack = env.id;
      return;
    case Status::Kind::kPermanent:
      LOG_ERROR("job %s (%s): failed: %s", env.id.c_str(), name.c_str(), st.message().c_str());
      *ack = env.id;
      return;
    case Status::Kind::kTransient:
      Retry(env, name + ": " + st.message());
      return;
    case Status::Kind::kPoison: {
      // A message we cannot use is kept exactly as it arrived (no attempt
      // counted: it never ran) for a human to look at.
      LOG_ERROR("job %s: poison: %s; moved to dead set", env.id.c_str(), st.message().c_str());
      Status ks = queue_->KillRaw(p_.consumer_key, env.id, "poison: " + st.message());
      if (!ks.ok()) {
        LOG_ERROR("job %s: cannot move to dead set: %s; it goes back to the queue when redis "
                  "answers", env.id.c_str(), ks.message().c_str());
        QueueDown(ks);
      }
      return;
    }
  }
}

void Worker::CountJob(const Envelope& env, const std::string& name, const Status& st) {
  SlotStats* s = p_.scoreboard->Stats(p_.board_index);
  if (!s) return;
  JobOutcome outcome = JobOutcome::kOk;
  switch (st.kind()) {
    case Status::Kind::kOk: outcome = JobOutcome::kOk; break;
    case Status::Kind::kPermanent: outcome = JobOutcome::kFailed; break;
    case Status::Kind::kTransient:
      outcome = RetriesExhausted(env, attempts_) ? JobOutcome::kDead : JobOutcome::kRetried;
      break;
    case Status::Kind::kPoison: outcome = JobOutcome::kPoison; break;
    case Status::Kind::kUnavailable: outcome = JobOutcome::kHeld; break;
  }
  // Only our registered names become labels: a payload's own job name is
  // untrusted and unbounded.
  s->CountJob(jobs_.count(name) ? std::string_view(name) : std::string_view("unknown"), outcome,
              MonotonicUs() - job_start_us_);
  uint64_t seen = 0;
  Reach pg = PgClient::LastReach(&seen);
  if (seen != pg_observations_seen_) {
    pg_observations_seen_ = seen;
    s->SetPgReach(pg, MonotonicMs());
  }
}

void Worker::Retry(const Envelope& env, const std::string& reason) {
  if (RetriesExhausted(env, attempts_)) {
    Kill(env, reason + " (attempts exhausted)");
    return;
  }
  Envelope next = env;
  next.attempt = NextAttempt(env);
  double delay = RetryBackoffSeconds(RunsSoFar(env));  // curlyq: the attempt as taken
  LOG_WARN("job %s: %s; retry %lld/%d in %.0fs", env.id.c_str(), reason.c_str(),
           static_cast<long long>(next.attempt), attempts_, delay);
  Status st = queue_->Retry(p_.consumer_key, next, delay);
  if (!st.ok()) {
    // Given back when Redis answers, attempt unchanged: the outage is not
    // the job's fault, so this try is not counted.
    LOG_ERROR("job %s: cannot schedule retry: %s; it goes back to the queue when redis answers",
              env.id.c_str(), st.message().c_str());
    QueueDown(st);
  }
}

void Worker::Kill(const Envelope& env, const std::string& reason) {
  Envelope next = env;
  next.attempt = NextAttempt(env);
  LOG_ERROR("job %s: %s; moved to dead set", env.id.c_str(), reason.c_str());
  Status st = queue_->Kill(p_.consumer_key, next, reason);
  if (!st.ok()) {
    LOG_ERROR("job %s: cannot move to dead set: %s; it goes back to the queue when redis answers",
              env.id.c_str(), st.message().c_str());
    QueueDown(st);
  }
}

void Worker::QueueDown(const Status& st) {
  if (!queue_down_) LOG_ERROR("queue unavailable: %s; retrying", st.message().c_str());
  queue_down_ = true;
  Title("waiting for redis");
  if (SlotStats* s = p_.scoreboard->Stats(p_.board_index)) s->SetCondition(kConditionRedisDown, true);
}

void Worker::QueueUp() {
  if (queue_down_) LOG_INFO("queue available again");
  queue_down_ = false;
  backoff_ms_ = 0;
  if (SlotStats* s = p_.scoreboard->Stats(p_.board_index)) s->SetCondition(kConditionRedisDown, false);
}

void Worker::Backoff() {
  backoff_ms_ = std::clamp(backoff_ms_ * 2, 100, kMaxBackoffMs);
  struct timespec ts = {backoff_ms_ / 1000, (backoff_ms_ % 1000) * 1000000L};
  nanosleep(&ts, nullptr);  // a signal (TERM) cuts it short
}

}  // namespace djinn
