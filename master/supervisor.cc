#include "master/supervisor.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/curly_queue.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "common/proctitle.h"
#include "common/signals.h"
#include "worker/worker.h"

namespace djinn {
namespace {

constexpr int kTickMs = 200;                 // longest wait without a look around
constexpr int kBoardEntries = 4096;          // > max workers x 2 generations
constexpr int64_t kYoungMs = 5000;           // a death before this uptime is "young"
constexpr int64_t kMaxThrottleMs = 60000;    // cap of the respawn delay
constexpr int64_t kJobKillGraceMs = 5000;    // job_timeout: TERM, then KILL after this
constexpr int64_t kScheduleEveryMs = 1000;   // scheduled -> active poll
constexpr int64_t kMaxMovePerTick = 1000;    // scheduled / orphans moved per call
constexpr int kMasterRedisTimeoutMs = 1000;  // the master never waits longer on Redis
constexpr int64_t kHeartbeatIntervalMs = 5000;  // well inside curlyq's 60 s
constexpr int64_t kOrphanPollMs = 5000;
constexpr int64_t kConsumerTimeoutSeconds = kCurlyOrphanTimeoutSeconds;

int g_sig_write_fd = -1;

// ---------------------------------------------------------------------
// SIGNAL HANDLER: async-signal context. It only writes the signal number
// to the self-pipe; Supervisor::HandleSignals() does the work.
// ---------------------------------------------------------------------
void OnSignal(int signo) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(signo);
  ssize_t r = write(g_sig_write_fd, &b, 1);
  (void)r;  // pipe full: the signal is already pending there
  errno = saved;
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) {
    int code = WEXITSTATUS(status);
    return "exited with code " + std::to_string(code) + " (" + WorkerExitCodeMeaning(code) + ")";
  }
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    std::string s = "killed by signal " + std::to_string(sig) + " (" + SignalName(sig) + ")";
    if (WCOREDUMP(status)) s += ", core dumped";
    return s;
  }
  return "ended with status " + std::to_string(status);
}

}  // namespace

Status PrepareStore(const Config& config) {
  std::error_code ec;
  std::filesystem::create_directories(config.store.path, ec);
  if (ec) return Status::Permanent("store " + config.store.path + ": " + ec.message());
  if (geteuid() == 0 && !config.user.empty()) {
    struct passwd* pw = getpwnam(config.user.c_str());
    if (!pw) return Status::Permanent("user " + config.user + ": no such user");
    gid_t gid = pw->pw_gid;
    if (!config.group.empty()) {
      struct group* gr = getgrnam(config.group.c_str());
      if (!gr) return Status::Permanent("group " + config.group + ": no such group");
      gid = gr->gr_gid;
    }
    struct stat st;
    if (::stat(config.store.path.c_str(), &st) == 0 && (st.st_uid != pw->pw_uid || st.st_gid != gid)) {
      if (chown(config.store.path.c_str(), pw->pw_uid, gid) != 0)
        return Status::FromErrno("store " + config.store.path + ": chown", errno);
      if (chmod(config.store.path.c_str(), 0750) != 0)
        return Status::FromErrno("store " + config.store.path + ": chmod", errno);
    }
  }
  return Status::Ok();
}

// As root, the log file belongs to the workers' user too, so a worker can
// reopen it after rotation (the master creates the new file first).
static void GiveLogToWorkers(const Config& config) {
  if (geteuid() != 0 || config.user.empty() || Log::Fd() < 0) return;
  struct passwd* pw = getpwnam(config.user.c_str());
  if (!pw) return;
  gid_t gid = pw->pw_gid;
  if (!config.group.empty())
    if (struct group* gr = getgrnam(config.group.c_str())) gid = gr->gr_gid;
  if (fchown(Log::Fd(), pw->pw_uid, gid) != 0)
    LOG_WARN("log file %s: chown to %s: %s", Log::File().c_str(), config.user.c_str(), strerror(errno));
}

Supervisor::Supervisor(Config config) : config_(std::move(config)) {}

Supervisor::~Supervisor() {
  if (g_sig_write_fd == sig_write_.get()) g_sig_write_fd = -1;
}

Status Supervisor::Start() {
  if (!config_.pidfile.empty()) {
    auto pf = PidFile::Acquire(config_.pidfile);
    if (!pf.ok()) return pf.status();
    pidfile_ = std::move(*pf);
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return Status::FromErrno("pipe", errno);
  sig_read_.Reset(p[0]);
  sig_write_.Reset(p[1]);
  g_sig_write_fd = p[1];
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = OnSignal;
  for (const auto& row : kMasterSignals) sigaction(row.signo, &sa, nullptr);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, nullptr);

  if (Status st = PrepareStore(config_); !st.ok()) return st;
  GiveLogToWorkers(config_);
  if (geteuid() == 0 && config_.user.empty())
    LOG_WARN("running as root with no 'user' set: workers keep root privileges");

  board_ = std::make_unique<Scoreboard>(kBoardEntries);
  queue_ = OpenQueue(config_, kMasterRedisTimeoutMs);
  auto policy = queue_->MaxmemoryPolicy();
  if (policy.ok() && !policy->empty() && *policy != "noeviction")
    LOG_WARN("redis maxmemory-policy is \"%s\": an evicting Redis can silently lose jobs; "
             "set it to noeviction", policy->c_str());
  test_jobs_ = getenv("DJINN_CONSUMER_TEST_JOBS") && std::string(getenv("DJINN_CONSUMER_TEST_JOBS")) == "1";
  // Test hook: a long idle wait proves that a job wakes idle workers (it is
  // done long before any wait would time out).
  if (const char* w = getenv("DJINN_CONSUMER_TEST_IDLE_WAIT_MS"); test_jobs_ && w)
    idle_wait_ms_ = std::clamp(atoi(w), 100, 600000);
  desired_ = config_.workers;
  slots_.assign(desired_, Slot{});
  LOG_INFO("started: %d workers, queue \"%s\", redis %s, store %s", desired_,
           config_.queue.c_str(), config_.redis.addr.c_str(), config_.store.path.c_str());
  return Status::Ok();
}

int Supervisor::Run() {
  SetProcTitle("djinn-consumer: master");
  if (Status st = Start(); !st.ok()) {
    LOG_ERROR("%s", st.message().c_str());
    return kExitFailure;
  }
  for (;;) {
    ManageWorkers();
    WaitForEvents(kTickMs);
    HandleSignals();
    ReapWorkers();
    CheckJobTimeouts();
    QueueDuties();
    if (stopping_) {
      StopTick();
      if (procs_.empty()) break;
    }
  }
  Shutdown();
  return kExitOk;
}

void Supervisor::WaitForEvents(int timeout_ms) {
  struct pollfd pfd = {sig_read_.get(), POLLIN, 0};
  poll(&pfd, 1, timeout_ms);
}

void Supervisor::HandleSignals() {
  unsigned char buf[64];
  ssize_t n;
  while ((n = read(sig_read_.get(), buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; i++) {
      int signo = buf[i];
      const SignalRow* row = nullptr;
      for (const auto& r : kMasterSignals)
        if (r.signo == signo) row = &r;
      if (!row) continue;
      if (row->action != MasterAction::kReap) LOG_INFO("%s: %s", row->name, row->effect);
      switch (row->action) {
        case MasterAction::kGracefulStop:
          if (!stopping_) {
            stopping_ = true;
            stop_deadline_ms_ = MonotonicMs() + int64_t{config_.shutdown_timeout} * 1000;
            for (auto& [pid, proc] : procs_) RetireWorker(proc, "shutdown");
          }
          break;
        case MasterAction::kFastStop:
          stopping_ = fast_stop_ = true;
          for (auto& [pid, proc] : procs_) {
            kill(pid, SIGKILL);
            proc.killed = true;
          }
          break;
        case MasterAction::kReload:
          if (!stopping_) Reload();
          break;
        case MasterAction::kReopenLogs: {
          Status st = Log::Reopen();
          if (st.ok()) LOG_INFO("log file reopened");
          else LOG_ERROR("reopen log: %s", st.message().c_str());
          GiveLogToWorkers(config_);
          for (auto& [pid, proc] : procs_) kill(pid, SIGUSR1);
          break;
        }
        case MasterAction::kMoreWorkers:
          if (!stopping_) {
            desired_ = std::min(desired_ + 1, 1024);
            slots_.resize(desired_);
          }
          break;
        case MasterAction::kFewerWorkers:
          if (!stopping_ && desired_ > 1) desired_--;
          break;
        case MasterAction::kReap:
          break;  // ReapWorkers() runs every turn
      }
    }
  }
}

void Supervisor::Reload() {
  auto loaded = LoadConfig(config_.path);
  if (!loaded.ok()) {
    LOG_ERROR("reload: %s; keeping the running configuration", loaded.status().message().c_str());
    return;
  }
  Config next = std::move(*loaded);
  for (const auto& w : next.warnings) LOG_WARN("reload: config: %s", w.c_str());
  if (next.pidfile != config_.pidfile)
    LOG_WARN("reload: pidfile change needs a restart; keeping %s", config_.pidfile.c_str());
  next.pidfile = config_.pidfile;
  if (Status st = PrepareStore(next); !st.ok()) {
    LOG_ERROR("reload: %s; keeping the running configuration", st.message().c_str());
    return;
  }
  if (next.log_file != config_.log_file || next.log_level != config_.log_level) {
    Status st = Log::Init(next.log_level, next.log_file, "master");
    if (!st.ok()) LOG_ERROR("reload: %s; logging to stderr", st.message().c_str());
    GiveLogToWorkers(next);
  }
  Log::ClearSecrets();
  for (const std::string& secret : ConfigSecrets(next)) Log::AddSecret(secret);
  bool new_queue = next.redis.addr != config_.redis.addr ||
                   next.redis.password != config_.redis.password || next.queue != config_.queue;
  // Jobs of workers that die from now on must go back to the queue they
  // came from: finish those first when the queue changes.
  if (new_queue) FailPendingJobs();
  config_ = std::move(next);
  if (new_queue) queue_ = OpenQueue(config_, kMasterRedisTimeoutMs);
  generation_++;
  // The new generation starts before the old one is told to finish (nginx):
  // no gap in service.
  std::vector<pid_t> old;
  for (auto& [pid, proc] : procs_)
    if (!proc.retiring) old.push_back(pid);
  desired_ = config_.workers;
  slots_.assign(desired_, Slot{});
  ManageWorkers();
  for (pid_t pid : old) RetireWorker(procs_[pid], "reload");
  LOG_INFO("reloaded: generation %d, %d workers", generation_, desired_);
}

void Supervisor::RetireWorker(Proc& proc, const char* why) {
  if (proc.retiring) return;
  proc.retiring = true;
  if (proc.term_ms == 0) {
    proc.term_ms = MonotonicMs();
    kill(proc.pid, SIGTERM);
  }
  for (auto& slot : slots_)
    if (slot.pid == proc.pid) slot.pid = -1;
  LOG_DEBUG("worker %d (pid %d) asked to stop: %s", proc.number, static_cast<int>(proc.pid), why);
}

void Supervisor::ManageWorkers() {
  if (stopping_) return;
  int64_t now = MonotonicMs();
  // Fewer wanted (TTOU): retire from the highest slot down.
  while (static_cast<int>(slots_.size()) > desired_) {
    Slot& s = slots_.back();
    if (s.pid > 0) {
      auto it = procs_.find(s.pid);
      if (it != procs_.end()) RetireWorker(it->second, "fewer workers");
    }
    slots_.pop_back();
  }
  for (int i = 0; i < static_cast<int>(slots_.size()); i++) {
    Slot& s = slots_[i];
    if (s.pid < 0 && now >= s.next_spawn_ms) SpawnWorker(i + 1);
  }
}

size_t Supervisor::FreeBoardEntry() const {
  std::vector<bool> used(board_->size());
  for (const auto& [pid, proc] : procs_) used[proc.board] = true;
  for (size_t i = 0; i < used.size(); i++)
    if (!used[i]) return i;
  return used.size();  // cannot happen: more entries than workers
}

void Supervisor::SpawnWorker(int number) {
  Proc proc;
  proc.number = number;
  proc.generation = generation_;
  proc.board = FreeBoardEntry();
  proc.consumer_key = NewConsumerKey(config_.queue);
  proc.spawned_ms = MonotonicMs();
  board_->Reset(proc.board);
  WorkerParams params;
  params.config = &config_;
  params.number = number;
  params.scoreboard = board_.get();
  params.board_index = proc.board;
  params.consumer_key = proc.consumer_key;
  params.master_pid = getpid();
  params.test_jobs = test_jobs_;
  params.idle_wait_ms = idle_wait_ms_;
  pid_t pid = fork();
  if (pid < 0) {
    LOG_ERROR("fork: %s; retrying", strerror(errno));
    slots_[number - 1].next_spawn_ms = MonotonicMs() + 1000;
    return;
  }
  if (pid == 0) {
    queue_.reset();  // the master's Redis connection is not the worker's
    RunWorkerProcess(params);
  }
  proc.pid = pid;
  procs_[pid] = proc;
  slots_[number - 1].pid = pid;
  LOG_INFO("worker %d started (pid %d, generation %d)", number, static_cast<int>(pid), generation_);
}

void Supervisor::ReapWorkers() {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto it = procs_.find(pid);
    if (it == procs_.end()) continue;
    OnWorkerExit(it->second, status);
    procs_.erase(it);
  }
}

void Supervisor::OnWorkerExit(Proc& proc, int status) {
  int64_t now = MonotonicMs();
  int64_t uptime = now - proc.spawned_ms;
  WorkerState ws = board_->Read(proc.board);
  bool clean = WIFEXITED(status) && WEXITSTATUS(status) == kExitOk;
  std::string who = "worker " + std::to_string(proc.number) + " (pid " + std::to_string(proc.pid) + ")";
  std::string how = DescribeExit(status);
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && !proc.killed) how += ", out of memory?";
  std::string job;
  if (ws.busy) job = ws.torn ? " while running a job" : " while running job " + ws.job_id + " (" + ws.job_type + ")";
  if (proc.timed_out) how += " after job_timeout " + std::to_string(config_.job_timeout) + "s";
  if (clean && (proc.retiring || stopping_)) LOG_INFO("%s %s", who.c_str(), how.c_str());
  else LOG_ERROR("%s %s%s", who.c_str(), how.c_str(), job.c_str());

  // Whatever it held goes back to the queue now (poison-pill protection:
  // a job that kills its worker every time reaches the dead set). A job the
  // shutdown killed did not fail: its attempt is not counted.
  bool count = !(stopping_ && proc.killed && !proc.timed_out);
  pending_fails_.push_back({proc.consumer_key, who, how, count});
  FailPendingJobs();

  // Its slot, if it still owns one, respawns; young deaths throttle it.
  for (size_t i = 0; i < slots_.size(); i++) {
    Slot& s = slots_[i];
    if (s.pid != proc.pid) continue;
    s.pid = -1;
    bool young = uptime < kYoungMs || (WIFEXITED(status) && WEXITSTATUS(status) == kExitWorkerSandbox);
    if (!young) {
      s.fails = 0;
      s.next_spawn_ms = now;
    } else {
      s.fails++;
      int64_t delay = std::min<int64_t>(kMaxThrottleMs, int64_t{1000} << std::min(s.fails - 1, 16));
      s.next_spawn_ms = now + delay;
      LOG_WARN("worker %zu died young (%d in a row); respawn in %llds", i + 1, s.fails,
               static_cast<long long>(delay / 1000));
    }
  }
}

void Supervisor::CheckJobTimeouts() {
  int64_t now = MonotonicMs();
  for (auto& [pid, proc] : procs_) {
    if (proc.killed) continue;
    if (proc.term_ms > 0) {
      // Asked to stop: after the grace for a timed-out job, or past the
      // shutdown deadline, it is killed.
      bool overdue = (proc.timed_out && now - proc.term_ms >= kJobKillGraceMs) ||
                     (stopping_ && now >= stop_deadline_ms_);
      if (overdue) {
        LOG_WARN("worker %d (pid %d) did not stop in time; killing it", proc.number, static_cast<int>(pid));
        kill(pid, SIGKILL);
        proc.killed = true;
      }
      if (!proc.timed_out || proc.killed) continue;
    }
    WorkerState ws = board_->Read(proc.board);
    if (!ws.busy || ws.torn || proc.timed_out) continue;
    if (now - ws.started_ms >= int64_t{config_.job_timeout} * 1000) {
      LOG_ERROR("worker %d (pid %d): job %s (%s) ran past job_timeout %ds; stopping the worker",
                proc.number, static_cast<int>(pid), ws.job_id.c_str(), ws.job_type.c_str(),
                config_.job_timeout);
      proc.timed_out = true;
      if (proc.term_ms == 0) {
        proc.term_ms = now;
        kill(pid, SIGTERM);
      }
    }
  }
}

void Supervisor::StopTick() {
  // CheckJobTimeouts() kills what outlives the deadline; nothing else here
  // but a progress line for the operator.
  int64_t now = MonotonicMs();
  if (!procs_.empty() && now - last_stop_note_ms_ >= 5000) {
    last_stop_note_ms_ = now;
    LOG_INFO("stopping: waiting for %zu worker(s)", procs_.size());
  }
}

void Supervisor::QueueResult(const Status& st) {
  if (st.ok()) {
    if (queue_down_) LOG_INFO("queue available again");
    queue_down_ = false;
  } else if (st.transient()) {
    if (!queue_down_) LOG_ERROR("queue unavailable: %s", st.message().c_str());
    queue_down_ = true;
  } else {
    LOG_ERROR("queue: %s", st.message().c_str());
  }
}

void Supervisor::QueueDuties() {
  int64_t now = MonotonicMs();
  if (!pending_fails_.empty()) FailPendingJobs();
  if (now >= next_heartbeat_ms_) {
    next_heartbeat_ms_ = now + kHeartbeatIntervalMs;
    std::vector<std::string> keys;
    for (const auto& [pid, proc] : procs_) keys.push_back(proc.consumer_key);
    if (!keys.empty()) QueueResult(queue_->Heartbeat(keys));
  }
  if (queue_down_) return;
  if (now >= next_schedule_ms_) {
    next_schedule_ms_ = now + kScheduleEveryMs;
    auto moved = queue_->EnqueueDueScheduled(kMaxMovePerTick);
    QueueResult(moved.status());
    if (moved.ok() && *moved > 0) LOG_DEBUG("%lld scheduled job(s) now active", static_cast<long long>(*moved));
  }
  if (now >= next_orphans_ms_) {
    next_orphans_ms_ = now + kOrphanPollMs;
    auto requeued = queue_->RequeueOrphans(kConsumerTimeoutSeconds, kMaxMovePerTick);
    QueueResult(requeued.status());
    if (requeued.ok() && *requeued > 0)
      LOG_WARN("requeued %lld job(s) of consumers whose heartbeat expired",
               static_cast<long long>(*requeued));
  }
}

void Supervisor::FailPendingJobs() {
  while (!pending_fails_.empty()) {
    PendingFail& f = pending_fails_.front();
    auto res = queue_->FailInflight(f.consumer_key, config_.attempts, f.count_attempt);
    QueueResult(res.status());
    if (!res.ok()) return;  // retried next tick; orphan requeue is the backstop
    for (const auto& job : *res) {
      if (job.dead)
        LOG_ERROR("job %s: its worker %s %s; attempts exhausted (%lld), moved to dead set",
                  job.id.c_str(), f.who.c_str(), f.cause.c_str(), static_cast<long long>(job.attempt));
      else
        LOG_WARN("job %s: its worker %s %s; requeued (attempt %lld)", job.id.c_str(),
                 f.who.c_str(), f.cause.c_str(), static_cast<long long>(job.attempt));
    }
    pending_fails_.erase(pending_fails_.begin());
  }
}

void Supervisor::Shutdown() {
  // Jobs of killed workers go back before we exit; Redis may be down, so
  // this is bounded.
  int64_t until = MonotonicMs() + 5000;
  while (!pending_fails_.empty() && MonotonicMs() < until) {
    FailPendingJobs();
    if (!pending_fails_.empty()) WaitForEvents(200);
  }
  for (const auto& f : pending_fails_)
    LOG_ERROR("could not requeue the jobs of %s (redis down); they come back through orphan requeue",
              f.who.c_str());
  if (!pidfile_.path().empty()) pidfile_.Remove();
  LOG_INFO("stopped");
}

}  // namespace djinn
