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
#include <ctime>
#include <filesystem>
#include <tuple>

#include "common/curly_queue.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "common/proctitle.h"
#include "common/signals.h"
#include "master/part_sweep.h"
#include "worker/worker.h"

namespace djinn {
namespace {

constexpr int kTickMs = 200;                 // longest wait without a look around
constexpr int kMaxGenerations = 4;           // live at once: the current and 3 retiring
constexpr int kBoardEntries = 1024 * kMaxGenerations;  // max workers x generations
constexpr int64_t kYoungMs = 5000;           // a death before this uptime is "young"
constexpr int64_t kMaxThrottleMs = 60000;    // cap of the respawn delay
constexpr int64_t kJobKillGraceMs = 5000;    // job_timeout: TERM, then KILL after this
constexpr int64_t kScheduleEveryMs = 1000;   // scheduled -> active poll
constexpr int64_t kMaxMovePerTick = 1000;    // scheduled / orphans moved per call
constexpr int kMasterRedisTimeoutMs = 1000;  // the master never waits longer on Redis
constexpr int64_t kHeartbeatIntervalMs = 5000;  // well inside curlyq's 60 s
constexpr int64_t kOrphanPollMs = 5000;

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

Supervisor::Supervisor(Config config) {
  auto gen = std::make_shared<Generation>();
  gen->number = 1;
  gen->config = std::make_shared<const Config>(std::move(config));
  gen_ = std::move(gen);
}

Supervisor::~Supervisor() {
  if (g_sig_write_fd == sig_write_.get()) g_sig_write_fd = -1;
}

Status Supervisor::Start() {
  if (!config().pidfile.empty()) {
    auto pf = PidFile::Acquire(config().pidfile);
    if (!pf.ok()) return pf.status();
    pidfile_ = std::move(*pf);
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return Status::FromErrno("pipe", errno);
  sig_read_.Reset(p[0]);
  sig_write_.Reset(p[1]);
  g_sig_write_fd = p[1];
  if (pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno("pipe", errno);
  life_read_.Reset(p[0]);
  life_write_.Reset(p[1]);
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = OnSignal;
  for (const auto& row : kMasterSignals) sigaction(row.signo, &sa, nullptr);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, nullptr);

  if (Status st = PrepareStore(config()); !st.ok()) return st;
  GiveLogToWorkers(config());
  if (geteuid() == 0 && config().user.empty())
    LOG_WARN("running as root with no 'user' set: workers keep root privileges");

  board_ = std::make_unique<Scoreboard>(kBoardEntries);
  auto gen = std::make_shared<Generation>(*gen_);
  OpenQueues(gen.get(), nullptr);
  gen_ = std::move(gen);
  OpenSentinelWatch();
  if (!config().crypto.set)
    LOG_INFO("webhooks off: no crypto block in the configuration (the images event is not sent)");
  auto policy = gen_->queue->MaxmemoryPolicy();
  if (policy.ok() && !policy->empty() && *policy != "noeviction")
    LOG_WARN("redis maxmemory-policy is \"%s\": an evicting Redis can silently lose jobs; "
             "set it to noeviction", policy->c_str());
  test_jobs_ = getenv("DJINN_CONSUMER_TEST_JOBS") && std::string(getenv("DJINN_CONSUMER_TEST_JOBS")) == "1";
  // Test hook: a long idle wait proves that a job wakes idle workers (it is
  // done long before any wait would time out).
  if (const char* w = getenv("DJINN_CONSUMER_TEST_IDLE_WAIT_MS"); test_jobs_ && w)
    idle_wait_ms_ = std::clamp(atoi(w), 100, 600000);
  desired_ = config().workers;
  throttle_.assign(desired_, SlotThrottle{});
  webhook_throttle_.assign(static_cast<size_t>(gen_->webhook_workers()), SlotThrottle{});
  started_ms_ = MonotonicMs();
  started_unix_ = static_cast<int64_t>(time(nullptr));
  // Status for operators; without it the daemon still does its work.
  if (std::string path = ControlSocketPath(config()); !path.empty()) {
    if (Status st = control_.Open(path, config()); !st.ok())
      LOG_ERROR("%s; `djinn-consumer status` will not reach this master", st.message().c_str());
  }
  if (Status st = OpenMetrics(); !st.ok()) return st;
  LOG_INFO("started: %d workers, queue \"%s\", redis %s, store %s", desired_,
           config().queue.c_str(), DescribeRedis(config().redis).c_str(), config().store.path.c_str());
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
    NotifyState();
    WaitForEvents(kTickMs);
    HandleSignals();
    ReapWorkers();
    CheckJobTimeouts();
    QueueDuties();
    if (!stopping_) MasterPartSweeper().Tick(config().store.path, MonotonicMs());
    if (stopping_) {
      StopTick();
      if (procs_.empty()) break;
    }
  }
  Shutdown();
  return kExitOk;
}

void Supervisor::WaitForEvents(int timeout_ms) {
  // The control socket's fd is -1 when it is not open: poll skips it.
  // So is the metrics endpoint's (MHD's epoll fd; no thread of its own),
  // and the sentinel subscription's while it has none.
  struct pollfd pfd[4] = {{sig_read_.get(), POLLIN, 0}, {control_.fd(), POLLIN, 0},
                          {metrics_ ? metrics_->http.fd() : -1, POLLIN, 0},
                          {sentinel_watch_ ? sentinel_watch_->fd() : -1, POLLIN, 0}};
  if (poll(pfd, 4, timeout_ms) > 0 && (pfd[1].revents & POLLIN))
    control_.Serve([this] { return StatusJson(Snapshot()); });
  if (metrics_) metrics_->http.Serve();  // also its connection timeouts
  WatchSentinels();
}

void Supervisor::OpenSentinelWatch() {
  const RedisConfig& r = config().redis;
  if (r.sentinels.empty()) {
    sentinel_watch_.reset();
    return;
  }
  if (sentinel_watch_) {  // a reload: keep the subscription unless it changed
    const SentinelOptions& w = sentinel_watch_->options();
    if (w.sentinels == r.sentinels && w.master == r.master && w.password == r.sentinel_password)
      return;
  }
  sentinel_watch_ = std::make_unique<SentinelWatch>(
      RedisOptionsFor(r, std::chrono::milliseconds(kMasterRedisTimeoutMs)).sentinel);
}

void Supervisor::WatchSentinels() {
  if (!sentinel_watch_) return;
  for (const SwitchMaster& sw : sentinel_watch_->Poll()) {
    LOG_INFO("redis: sentinel says master \"%s\" moved from %s to %s", sw.name.c_str(),
             sw.from.c_str(), sw.to.c_str());
    // Correctness never depends on this (a demoted or dead master's errors
    // make every connection ask again); it only saves the wait for them.
    RedisConn::ResolveAgainAll();
    for (auto& [pid, proc] : procs_)
      if (!proc.killed) kill(pid, SIGUSR2);
  }
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
            notify_.Stopping("stopping: waiting for " + std::to_string(procs_.size()) + " worker(s)");
            stopping_ = true;
            stop_deadline_ms_ = MonotonicMs() + int64_t{config().shutdown_timeout} * 1000;
            for (auto& [pid, proc] : procs_) RetireWorker(proc, "shutdown");
          }
          break;
        case MasterAction::kFastStop:
          if (!stopping_) notify_.Stopping("stopping now: killing the workers");
          stopping_ = fast_stop_ = true;
          for (auto& [pid, proc] : procs_) KillWorker(proc);
          break;
        case MasterAction::kReload:
          if (!stopping_) {
            notify_.Reloading();
            int before = gen_->number;
            Reload();
            // Refused: the running generation goes on, ready as it was.
            // Else READY=1 once the new generation's slots are filled.
            if (gen_->number == before) notify_.Ready(NotifyStatusLine());
            else ready_pending_ = true;
          }
          break;
        case MasterAction::kReopenLogs: {
          Status st = Log::Reopen();
          if (st.ok()) LOG_INFO("log file reopened");
          else LOG_ERROR("reopen log: %s", st.message().c_str());
          GiveLogToWorkers(config());
          for (auto& [pid, proc] : procs_) kill(pid, SIGUSR1);
          break;
        }
        case MasterAction::kMoreWorkers:
          if (!stopping_) {
            desired_ = std::min(desired_ + 1, 1024);
            throttle_.resize(static_cast<size_t>(desired_));
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
  auto loaded = LoadConfig(config().path);
  if (!loaded.ok()) {
    LOG_ERROR("reload: %s; keeping the running configuration", loaded.status().message().c_str());
    return;
  }
  Config next = std::move(*loaded);
  for (const auto& w : next.warnings) LOG_WARN("reload: config: %s", w.c_str());
  if (next.pidfile != config().pidfile)
    LOG_WARN("reload: pidfile change needs a restart; keeping %s", config().pidfile.c_str());
  next.pidfile = config().pidfile;
  if (next.control_socket != config().control_socket)
    LOG_WARN("reload: control_socket change needs a restart; keeping %s", control_.path().c_str());
  next.control_socket = config().control_socket;
  if (next.metrics.listen != config().metrics.listen ||
      next.metrics.allow_remote != config().metrics.allow_remote)
    LOG_WARN("reload: metrics change needs a restart; keeping listen \"%s\"",
             config().metrics.listen.c_str());
  next.metrics = config().metrics;
  if (Status st = PrepareStore(next); !st.ok()) {
    LOG_ERROR("reload: %s; keeping the running configuration", st.message().c_str());
    return;
  }
  if (next.log_file != config().log_file || next.log_level != config().log_level) {
    Status st = Log::Init(next.log_level, next.log_file, "master");
    if (!st.ok()) LOG_ERROR("reload: %s; logging to stderr", st.message().c_str());
    GiveLogToWorkers(next);
  }
  Log::SetFormat(next.log_format);  // the new generation inherits it
  Log::ClearSecrets();
  for (const std::string& secret : ConfigSecrets(next)) Log::AddSecret(secret);
  // Old workers keep their generation (config and queue handle); the new
  // one gets its own handle only when it talks to another queue.
  bool same_queue = next.redis.addr == config().redis.addr &&
                    next.redis.password == config().redis.password &&
                    next.redis.sentinels == config().redis.sentinels &&
                    next.redis.master == config().redis.master &&
                    next.redis.sentinel_password == config().redis.sentinel_password &&
                    next.queue == config().queue;
  auto gen = std::make_shared<Generation>();
  gen->number = gen_->number + 1;
  gen->config = std::make_shared<const Config>(std::move(next));
  OpenQueues(gen.get(), same_queue ? gen_.get() : nullptr);
  gen_ = std::move(gen);
  OpenSentinelWatch();
  // The new generation starts before the old one is told to finish (nginx):
  // no gap in service.
  std::vector<pid_t> old;
  for (auto& [pid, proc] : procs_)
    if (!proc.retiring) old.push_back(pid);
  desired_ = config().workers;
  throttle_.assign(static_cast<size_t>(desired_), SlotThrottle{});
  webhook_throttle_.assign(static_cast<size_t>(gen_->webhook_workers()), SlotThrottle{});
  ManageWorkers();
  for (pid_t pid : old) RetireWorker(procs_[pid], "reload");
  BoundGenerations();
  LOG_INFO("reloaded: generation %d, %d workers", gen_->number, desired_);
}

// Reloads faster than old workers finish would stack generations without
// bound (and fill the scoreboard): beyond kMaxGenerations, the oldest ones'
// workers are killed now. Their jobs go back without an attempt counted.
void Supervisor::BoundGenerations() {
  std::vector<int> live;
  for (const auto& [pid, proc] : procs_)
    if (std::find(live.begin(), live.end(), proc.gen->number) == live.end())
      live.push_back(proc.gen->number);
  std::sort(live.begin(), live.end());
  if (static_cast<int>(live.size()) <= kMaxGenerations) return;
  int oldest_kept = live[live.size() - kMaxGenerations];
  for (auto& [pid, proc] : procs_) {
    if (proc.gen->number >= oldest_kept || proc.killed) continue;
    LOG_WARN("worker %d (pid %d) of generation %d still draining after %d newer generations; "
             "killing it, its job goes back",
             proc.number, static_cast<int>(pid), proc.gen->number, kMaxGenerations - 1);
    KillWorker(proc);
  }
}

void Supervisor::OpenQueues(Generation* gen, const Generation* like) {
  gen->queue = like ? like->queue : std::shared_ptr<Queue>(OpenQueue(*gen->config, kMasterRedisTimeoutMs));
  if (gen->config->crypto.set)
    gen->webhook_queue = like && like->webhook_queue
                             ? like->webhook_queue
                             : std::shared_ptr<Queue>(OpenQueue(*gen->config, kMasterRedisTimeoutMs,
                                                                WebhookQueueName(*gen->config)));
}

void Supervisor::KillWorker(Proc& proc) {
  if (proc.killed) return;
  kill(proc.pid, SIGKILL);
  proc.killed = true;
  proc.retiring = true;
}

void Supervisor::RetireWorker(Proc& proc, const char* why) {
  if (proc.retiring) return;
  proc.retiring = true;
  if (proc.term_ms == 0) {
    proc.term_ms = MonotonicMs();
    kill(proc.pid, SIGTERM);
  }
  LOG_DEBUG("worker %d (pid %d) asked to stop: %s", proc.number, static_cast<int>(proc.pid), why);
}

bool Supervisor::SlotFilled(int number, bool webhooks) const {
  for (const auto& [pid, proc] : procs_)
    if (proc.number == number && proc.webhooks == webhooks && proc.gen == gen_ && !proc.retiring)
      return true;
  return false;
}

void Supervisor::ManageWorkers() {
  if (stopping_) return;
  int64_t now = MonotonicMs();
  // Fewer wanted (TTOU): retire the current generation's highest slots.
  for (auto& [pid, proc] : procs_)
    if (proc.gen == gen_ && !proc.retiring && !proc.webhooks && proc.number > desired_)
      RetireWorker(proc, "fewer workers");
  throttle_.resize(static_cast<size_t>(desired_));
  for (int n = 1; n <= desired_; n++)
    if (!SlotFilled(n, false) && now >= throttle_[static_cast<size_t>(n - 1)].next_spawn_ms)
      SpawnWorker(n, false);
  // Delivery workers: their own slots, so a slow receiver never takes a
  // worker from downloads.
  for (int n = 1; n <= gen_->webhook_workers(); n++)
    if (!SlotFilled(n, true) && now >= webhook_throttle_[static_cast<size_t>(n - 1)].next_spawn_ms)
      SpawnWorker(n, true);
}

size_t Supervisor::FreeBoardEntry() const {
  std::vector<bool> used(board_->size());
  for (const auto& [pid, proc] : procs_)
    if (proc.board < used.size()) used[proc.board] = true;
  for (size_t i = 0; i < used.size(); i++)
    if (!used[i]) return i;
  return used.size();  // full: the caller does not spawn
}

void Supervisor::SpawnWorker(int number, bool webhooks) {
  SlotThrottle& slot = (webhooks ? webhook_throttle_ : throttle_)[static_cast<size_t>(number - 1)];
  Proc proc;
  proc.number = number;
  proc.webhooks = webhooks;
  proc.gen = gen_;
  proc.board = FreeBoardEntry();
  if (proc.board >= board_->size()) {
    LOG_ERROR("scoreboard full (%zu entries); worker %d not started", board_->size(), number);
    slot.next_spawn_ms = MonotonicMs() + 1000;
    return;
  }
  proc.consumer_key = NewConsumerKey(webhooks ? WebhookQueueName(config()) : config().queue);
  proc.spawned_ms = MonotonicMs();
  board_->Reset(proc.board);
  WorkerParams params;
  params.config = gen_->config.get();
  params.number = number;
  params.scoreboard = board_.get();
  params.board_index = proc.board;
  params.consumer_key = proc.consumer_key;
  params.master_pid = getpid();
  params.test_jobs = test_jobs_;
  params.idle_wait_ms = idle_wait_ms_;
  params.life_fd = life_read_.get();
  params.webhooks = webhooks;
  // Signals wait in the child until it has a worker's handlers
  // (InstallWorkerSignals unblocks them): before that the master's handler
  // would run there and swallow them, and a SIGTERM right after a start
  // left the worker running until shutdown_timeout.
  sigset_t all, old_mask;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old_mask);
  pid_t pid = fork();
  if (pid != 0) sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  if (pid < 0) {
    LOG_ERROR("fork: %s; retrying", strerror(errno));
    slot.next_spawn_ms = MonotonicMs() + 1000;
    return;
  }
  if (pid == 0) {
    // The master's Redis connections are not the worker's: drop them
    // (closing a socket says nothing to Redis). The worker's config stays.
    std::shared_ptr<const Config> keep = gen_->config;
    for (auto& [p, other] : procs_) other.gen.reset();
    pending_fails_.clear();
    gen_.reset();
    Notifier::ForgetInChild();  // only the master talks to systemd
    RunWorkerProcess(params);
  }
  proc.pid = pid;
  procs_[pid] = proc;
  workers_started_++;
  LOG_INFO("%s %d started (pid %d, generation %d)", webhooks ? "webhooks" : "worker", number,
           static_cast<int>(pid), gen_->number);
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
  exited_jobs_done_ += ws.jobs_done;
  NoteWorkerExit(proc, status);
  bool clean = WIFEXITED(status) && WEXITSTATUS(status) == kExitOk;
  std::string who = std::string(proc.webhooks ? "webhooks " : "worker ") + std::to_string(proc.number) +
                    " (pid " + std::to_string(proc.pid) + ")";
  std::string how = DescribeExit(status);
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && !proc.killed) how += ", out of memory?";
  std::string job;
  if (ws.busy) job = ws.torn ? " while running a job" : " while running job " + ws.job_id + " (" + ws.job_type + ")";
  if (proc.timed_out) how += " after job_timeout " + std::to_string(proc.gen->config->job_timeout) + "s";
  if (clean && (proc.retiring || stopping_)) LOG_INFO("%s %s", who.c_str(), how.c_str());
  else LOG_ERROR("%s %s%s", who.c_str(), how.c_str(), job.c_str());
  if (!proc.retiring && !stopping_) worker_restarts_++;

  // Whatever it held goes back to the queue now (poison-pill protection:
  // a job that kills its worker every time reaches the dead set). A job
  // whose worker we killed for another reason than its job_timeout
  // (shutdown, SIGQUIT, too many generations) did not fail: not counted.
  bool count = !(proc.killed && !proc.timed_out);
  pending_fails_.push_back({proc.gen, proc.webhooks, proc.consumer_key, who, how, count,
                            who + " " + how + "; attempts exhausted"});
  FailPendingJobs();

  // Its slot, when it held one, respawns; young deaths throttle it.
  std::vector<SlotThrottle>& slots = proc.webhooks ? webhook_throttle_ : throttle_;
  if (proc.gen != gen_ || proc.retiring || proc.number > static_cast<int>(slots.size())) return;
  SlotThrottle& slot = slots[static_cast<size_t>(proc.number - 1)];
  bool young = uptime < kYoungMs || (WIFEXITED(status) && WEXITSTATUS(status) == kExitWorkerSandbox);
  if (!young) {
    slot.fails = 0;
    slot.next_spawn_ms = now;
  } else {
    slot.fails++;
    int64_t delay = std::min<int64_t>(kMaxThrottleMs, int64_t{1000} << std::min(slot.fails - 1, 16));
    slot.next_spawn_ms = now + delay;
    LOG_WARN("worker %d died young (%d in a row); respawn in %llds", proc.number, slot.fails,
             static_cast<long long>(delay / 1000));
  }
}

void Supervisor::CheckJobTimeouts() {
  int64_t now = MonotonicMs();
  for (auto& [pid, proc] : procs_) {
    if (proc.killed) continue;
    // Due: the grace after a job_timeout's SIGTERM, or the shutdown deadline.
    if ((proc.kill_at_ms > 0 && now >= proc.kill_at_ms) ||
        (stopping_ && proc.term_ms > 0 && now >= stop_deadline_ms_)) {
      LOG_WARN("worker %d (pid %d) did not stop in time; killing it", proc.number, static_cast<int>(pid));
      kill(pid, SIGKILL);
      proc.killed = true;
      continue;
    }
    // Every worker, retiring or not, with its own generation's limit.
    if (proc.timed_out) continue;
    WorkerState ws = board_->Read(proc.board);
    if (!ws.busy || ws.torn) continue;
    int job_timeout = proc.gen->config->job_timeout;
    if (now - ws.started_ms >= int64_t{job_timeout} * 1000) {
      LOG_ERROR("worker %d (pid %d): job %s (%s) ran past job_timeout %ds; stopping the worker",
                proc.number, static_cast<int>(pid), ws.job_id.c_str(), ws.job_type.c_str(),
                job_timeout);
      proc.timed_out = true;
      proc.kill_at_ms = now + kJobKillGraceMs;
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
    // Each worker's key on the queue it took its jobs from.
    std::map<Queue*, std::vector<std::string>> keys;
    for (const auto& [pid, proc] : procs_) keys[&proc.queue()].push_back(proc.consumer_key);
    for (auto& [queue, k] : keys) QueueResult(queue->Heartbeat(k));
  }
  if (queue_down_) return;
  // Djinn's queue, and ours of webhook deliveries when they are on.
  std::vector<Queue*> queues = {gen_->queue.get()};
  if (gen_->webhook_queue) queues.push_back(gen_->webhook_queue.get());
  if (now >= next_schedule_ms_) {
    next_schedule_ms_ = now + kScheduleEveryMs;
    for (Queue* queue : queues) {
      auto moved = queue->EnqueueDueScheduled(kMaxMovePerTick);
      QueueResult(moved.status());
      if (moved.ok() && *moved > 0) LOG_DEBUG("%lld scheduled job(s) now active", static_cast<long long>(*moved));
    }
  }
  if (now >= next_orphans_ms_) {
    next_orphans_ms_ = now + kOrphanPollMs;
    for (Queue* queue : queues) {
      auto requeued = queue->RequeueOrphans(config().queue_consumer_timeout, kMaxMovePerTick);
      QueueResult(requeued.status());
      if (requeued.ok() && *requeued > 0)
        LOG_WARN("requeued %lld job(s) of consumers whose heartbeat expired",
                 static_cast<long long>(*requeued));
    }
  }
}

void Supervisor::FailPendingJobs() {
  // Each in its own generation's queue: one whose Redis is unreachable (a
  // generation configured with a wrong master, say) must not hold back the
  // others, so a failure skips to the next and is retried next tick.
  for (auto it = pending_fails_.begin(); it != pending_fails_.end();) {
    PendingFail& f = *it;
    // The worker's own generation: the queue it took the job from and the
    // attempts it ran under.
    const Config& c = *f.gen->config;
    Queue& queue = f.webhooks ? *f.gen->webhook_queue : *f.gen->queue;
    auto res = queue.FailInflight(f.consumer_key, f.webhooks ? c.webhooks.attempts : c.attempts,
                                  f.count_attempt, f.why);
    QueueResult(res.status());
    if (!res.ok()) {  // retried next tick; orphan requeue is the backstop
      ++it;
      continue;
    }
    for (const auto& job : *res) {
      if (job.dead)
        LOG_ERROR("job %s: its worker %s %s; attempts exhausted (%lld), moved to dead set",
                  job.id.c_str(), f.who.c_str(), f.cause.c_str(), static_cast<long long>(job.attempt));
      else
        LOG_WARN("job %s: its worker %s %s; requeued (attempt %lld)", job.id.c_str(),
                 f.who.c_str(), f.cause.c_str(), static_cast<long long>(job.attempt));
    }
    it = pending_fails_.erase(it);
  }
}

void Supervisor::Shutdown() {
  // Jobs of killed workers go back before we exit; Redis may be down, so
  // this is bounded.
  int64_t until = MonotonicMs() + 5000;
  while (!pending_fails_.empty() && MonotonicMs() < until) {
    FailPendingJobs();
    if (!pending_fails_.empty()) WaitForEvents(200);
    notify_.Watchdog(MonotonicMs());
  }
  for (const auto& f : pending_fails_)
    LOG_ERROR("could not requeue the jobs of %s (redis down); they come back through orphan requeue",
              f.who.c_str());
  control_.Remove();
  if (!pidfile_.path().empty()) pidfile_.Remove();
  LOG_INFO("stopped");
}

MasterStatus Supervisor::Snapshot() const {
  MasterStatus s;
  int64_t now = MonotonicMs();
  s.pid = getpid();
  s.started_at = started_unix_;
  s.uptime_ms = now - started_ms_;
  s.generation = gen_->number;
  s.queue = config().queue;
  s.desired_workers = desired_;
  s.desired_webhook_workers = gen_->webhook_workers();
  s.stopping = stopping_;
  s.workers_started = workers_started_;
  s.worker_restarts = worker_restarts_;
  s.jobs_done = exited_jobs_done_;
  for (const auto& [pid, proc] : procs_) {
    WorkerState ws = board_->Read(proc.board);
    WorkerStatus w;
    w.number = proc.number;
    w.webhooks = proc.webhooks;
    w.pid = pid;
    w.generation = proc.gen->number;
    w.state = proc.killed ? "killed" : proc.retiring ? "retiring" : ws.busy ? "busy" : "idle";
    if (ws.busy) {
      w.job_id = ws.torn ? "?" : ws.job_id;
      w.job_type = ws.torn ? "?" : ws.job_type;
      w.running_ms = ws.torn ? 0 : now - ws.started_ms;
    }
    w.jobs_done = ws.jobs_done;
    w.uptime_ms = now - proc.spawned_ms;
    s.jobs_done += ws.jobs_done;
    s.workers.push_back(std::move(w));
  }
  std::sort(s.workers.begin(), s.workers.end(), [](const WorkerStatus& a, const WorkerStatus& b) {
    return std::tie(a.webhooks, a.number, a.generation) < std::tie(b.webhooks, b.number, b.generation);
  });
  return s;
}

bool Supervisor::AllSlotsFilled() const {
  for (int n = 1; n <= desired_; n++)
    if (!SlotFilled(n, false)) return false;
  for (int n = 1; n <= gen_->webhook_workers(); n++)
    if (!SlotFilled(n, true)) return false;
  return true;
}

// "4 workers (1 busy), queue \"jobs\", generation 2; redis unavailable"
std::string Supervisor::NotifyStatusLine() const {
  int workers = 0, busy = 0, webhooks = 0;
  for (const auto& [pid, proc] : procs_) {
    if (proc.retiring || proc.gen != gen_) continue;
    if (proc.webhooks) {
      webhooks++;
      continue;
    }
    workers++;
    if (board_ && board_->Read(proc.board).busy) busy++;
  }
  std::string s = std::to_string(workers) + (workers == 1 ? " worker" : " workers") + " (" +
                  std::to_string(busy) + " busy), queue \"" + config().queue + "\"";
  if (webhooks > 0) s += ", " + std::to_string(webhooks) + " webhook worker(s)";
  if (gen_->number > 1) s += ", generation " + std::to_string(gen_->number);
  if (queue_down_) s += "; redis unavailable";
  return s;
}

// Once per turn of Run()'s loop: the watchdog ping (so it stops when the
// loop stops turning), READY=1 when due, and STATUS= at most once a second.
void Supervisor::NotifyState() {
  int64_t now = MonotonicMs();
  notify_.Watchdog(now);
  if (!notify_.enabled()) return;
  if (ready_pending_ && !stopping_) {
    if (!AllSlotsFilled()) return;
    ready_pending_ = false;
    next_notify_status_ms_ = now + 1000;
    notify_.Ready(NotifyStatusLine());
    return;
  }
  if (now < next_notify_status_ms_) return;
  next_notify_status_ms_ = now + 1000;
  if (stopping_)
    notify_.Status("stopping: waiting for " + std::to_string(procs_.size()) + " worker(s)");
  else
    notify_.Status(NotifyStatusLine());
}

}  // namespace djinn
