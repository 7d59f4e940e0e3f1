#include "worker/fetch_child.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>

#include "common/log.h"
#include "common/qcow2.h"
#include "common/sandbox.h"
#include "common/text.h"
#include "common/unique_fd.h"

namespace djinn {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxReportLine = 4096;  // longer lines from the child are dropped
constexpr size_t kMaxShownMessage = 2048;
constexpr int kTimeoutSlackSeconds = 30;  // past download.timeout: killed
constexpr int kDnsPort = 53;              // glibc's resolver falls back to TCP
constexpr int kReapGraceMs = 2000;        // after its report pipe closed

bool WriteAll(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = write(fd, s.data(), s.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string OneLine(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

void Report(int fd, const Status& st, uint64_t bytes) {
  WriteAll(fd, "R" + std::to_string(static_cast<int>(st.kind())) + " " + std::to_string(bytes) +
                   " " + OneLine(st.message()) + "\n");
}

// The child's address space now, from /proc/self/statm (pages).
uint64_t AddressSpaceNow() {
  FILE* f = std::fopen("/proc/self/statm", "re");
  if (f == nullptr) return 0;
  unsigned long long pages = 0;
  if (std::fscanf(f, "%llu", &pages) != 1) pages = 0;
  std::fclose(f);
  return pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// Test hook: what a compromised child would try first.
Status Probe(const std::string& probe) {
  std::string what = probe.substr(0, probe.find(':'));
  std::string arg = probe.find(':') == std::string::npos ? "" : probe.substr(probe.find(':') + 1);
  auto outcome = [&](bool ok, int err) {
    return Status::Permanent("test probe " + probe + ": " +
                             (ok ? std::string("succeeded") : std::strerror(err)));
  };
  if (what == "read") {
    int fd = open(arg.c_str(), O_RDONLY | O_CLOEXEC);
    int err = errno;
    if (fd >= 0) close(fd);
    return outcome(fd >= 0, err);
  }
  if (what == "write") {
    int fd = open(arg.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    int err = errno;
    if (fd >= 0) close(fd);
    return outcome(fd >= 0, err);
  }
  if (what == "connect") {
    UniqueFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(static_cast<uint16_t>(std::atoi(arg.c_str())));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = s.valid() && connect(s.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0;
    return outcome(ok, errno);
  }
  if (what == "exec") {
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    execv("/bin/true", argv);
    return outcome(false, errno);
  }
  if (what == "fork") {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    int err = errno;
    if (pid > 0) waitpid(pid, nullptr, 0);
    return outcome(pid > 0, err);
  }
  if (what == "find-hex") {  // how many copies of these bytes its memory holds
    const size_t len = arg.size() / 2;
    if (len == 0) return Status::Permanent("test probe " + probe + ": empty");
    void* area = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) return outcome(false, errno);
    char* bytes = static_cast<char*>(area);
    for (size_t i = 0; i < len; ++i)
      bytes[i] = static_cast<char>(std::strtoul(arg.substr(2 * i, 2).c_str(), nullptr, 16));
    Result<size_t> n = ScanOwnMemory({std::string_view(bytes, len)}, area, len, false);
    munmap(area, len);
    if (!n.ok()) return Status::Permanent("test probe find-hex: " + n.status().message());
    return Status::Permanent("test probe find-hex: found " + std::to_string(*n) + " copies");
  }
  if (what == "unavailable") {  // a compromised child claiming our store failed
    return Status::Unavailable("test probe " + probe + ": the store is failing");
  }
  return Status::Permanent("test probe " + probe + ": unknown probe");
}

[[noreturn]] void ChildMain(pid_t worker, int report, const std::string& url, PartFile* file,
                            const FetchOptions& options, const FetchHooks& hooks,
                            const ConfineOptions& confine) {
  const std::string context = FetchContext(url);
  // Dies with its worker, whatever it is doing.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != worker) _exit(1);
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = SIG_DFL;
  sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGPIPE, &sa, nullptr);
  CloseFdsExcept({Log::Fd(), report, file->fd()});
  if (confine.in_child) confine.in_child();
  // A fork is a copy of the worker: no configured secret may stay readable.
  const auto scrub_start = Clock::now();
  Result<size_t> scrubbed = ScrubSecrets(confine.secrets);
  const auto scrub_us =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - scrub_start).count();
  if (!scrubbed.ok()) {
    Report(report, Status::Unavailable("cannot confine the download process: " +
                                       scrubbed.status().message())
                       .Wrap(context),
           0);
    _exit(0);
  }
  Log::ClearSecrets();  // its copies are zeroed; nothing left to scrub
  // ...but the proxy's password, which it keeps to use (never scrubbed:
  // FetchConfined leaves it out of confine.secrets).
  if (!options.proxy_password.empty()) Log::AddSecret(options.proxy_password);
  InstallSigsysReporter(report);

  DownloadSandbox box;  // no rw_dirs: writes go through the inherited .part fd only
  box.ro_paths = DownloadReadPaths({options.known_hosts});
  box.tcp_connect_ports = options.tcp_ports;
  if (!box.tcp_connect_ports.empty()) {
    box.tcp_connect_ports.push_back(kDnsPort);
    if (!options.proxy.empty()) box.tcp_connect_ports.push_back(options.proxy_port);
  }
  if (confine.address_space_headroom > 0)
    box.address_space = AddressSpaceNow() + confine.address_space_headroom;
  std::string notes;
  if (Status st = ApplyDownloadSandbox(box, &notes); !st.ok()) {
    Report(report, Status::Unavailable("cannot confine the download process: " + st.message())
                       .Wrap(context),
           0);
    _exit(0);
  }
  LOG_DEBUG("%s: download process %d confined (%s; %zu secret copies zeroed in %lld us)",
            hooks.log_prefix.c_str(), static_cast<int>(getpid()), notes.c_str(), *scrubbed,
            static_cast<long long>(scrub_us));
  // From here on the worker distrusts what it reads: an outcome that would
  // spare the job an attempt needs the worker's own confirmation.
  if (!WriteAll(report, "C\n")) _exit(0);

  Status outcome;
  uint64_t bytes = 0;
  try {
    if (!confine.probe.empty()) {
      outcome = Probe(confine.probe).Wrap(context);
    } else {
      FetchHooks mine;
      mine.log_prefix = hooks.log_prefix;
      mine.set_progress = [report](const std::string& progress) {
        WriteAll(report, "P" + OneLine(progress) + "\n");
      };
      mine.space_short = [report](uint64_t needed) {
        WriteAll(report, "N" + std::to_string(needed) + "\n");
      };
      mine.validator = [report](const PartValidator& v, bool restarted) {
        WriteAll(report, "V" + OneLine(EncodeValidatorReport(v, restarted)) + "\n");
      };
      Result<FetchResult> got = FetchBody(url, file, options, mine);
      outcome = got.status();
      if (got.ok()) bytes = got->bytes;
      // How much of the file is the body, from byte 0 (the rest, if any,
      // is what a rewound file held before).
      WriteAll(report, "L" + std::to_string(file->written()) + "\n");
    }
  } catch (const std::bad_alloc&) {
    outcome = Status::Transient("download process ran out of memory (address space limit " +
                                std::to_string(box.address_space >> 20) + " MiB)")
                  .Wrap(context);
  }
  Report(report, outcome, bytes);
  _exit(0);
}

// What the child said, read as untrusted input.
struct ChildReport {
  bool have_result = false;
  Status result;
  uint64_t bytes = 0;
  int sigsys = -1;  // the refused system call's number
  bool confined = false;       // "C" seen: later lines may be a hostile child's
  uint64_t space_needed = 0;   // "N": bytes the image still needed (claimed)
  // Resuming: "V" the validator of the body being written (restarted: the
  // file was rewound to byte 0), "L" the file's leading bytes that are body.
  std::optional<PartValidator> validator;
  bool restarted = false;
  std::optional<uint64_t> length;
  bool result_confined = false;  // the result came after "C"
};

void HandleLine(std::string_view line, ChildReport* rep, const FetchHooks& hooks) {
  if (line.empty()) return;
  char tag = line[0];
  line.remove_prefix(1);
  if (tag == 'C') {
    rep->confined = true;
  } else if (tag == 'P') {
    if (hooks.set_progress) hooks.set_progress(Printable(line, 40));
  } else if (tag == 'N') {
    // Digits only, 64 bits; anything else leaves 0 (ConfirmNoSpace caps it).
    if (!ParseU64(line, &rep->space_needed)) rep->space_needed = 0;
  } else if (tag == 'V') {
    bool restarted = false;
    std::optional<PartValidator> v = DecodeValidatorReport(line, &restarted);
    rep->validator = v ? *v : PartValidator{};  // garbled: nothing to keep
    rep->restarted = rep->restarted || restarted;
  } else if (tag == 'L' && !rep->length) {
    uint64_t n = 0;
    if (ParseU64(line, &n)) rep->length = n;
  } else if (tag == 'S') {
    rep->sigsys = std::atoi(std::string(line.substr(0, 10)).c_str());
  } else if (tag == 'R' && !rep->have_result) {
    // "<kind> <bytes> <message>"
    size_t sp1 = line.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) return;
    int kind = std::atoi(std::string(line.substr(0, sp1)).c_str());
    rep->bytes = std::strtoull(std::string(line.substr(sp1 + 1, sp2 - sp1 - 1)).c_str(), nullptr, 10);
    std::string msg = Printable(line.substr(sp2 + 1), kMaxShownMessage);
    switch (static_cast<Status::Kind>(kind)) {
      case Status::Kind::kOk:
        rep->result = Status::Ok();
        break;
      case Status::Kind::kTransient:
        rep->result = Status::Transient(msg);
        break;
      case Status::Kind::kPermanent:
        rep->result = Status::Permanent(msg);
        break;
      case Status::Kind::kUnavailable:
        rep->result = Status::Unavailable(msg);
        break;
      default:  // poison is not a download's outcome; anything else is noise
        rep->result = Status::Transient("download process sent an unknown report");
        break;
    }
    rep->have_result = true;
    rep->result_confined = rep->confined;
  }
}

std::string SyscallName(int nr) {
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
  std::string out = name ? name : "#" + std::to_string(nr);
  std::free(name);
  return out;
}

std::string DescribeExit(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "exited with status " + std::to_string(WEXITSTATUS(status)) + " without a report";
}

// After a failure: the .part kept for the next try (fetch.h "Resuming")
// when the job will have one, the failure is not the image's fault and
// the leading bytes and their validator are known; else removed.
void KeepOrDiscard(PartFile* file, const Status& failure, const ChildReport& rep,
                   const std::string& prefix) {
  if (!file->reserved()) return;
  if (failure.permanent() || !file->keep_on_failure()) {
    file->Discard();
    return;
  }
  // No "V": nothing new was written, the kept bytes' own validator holds.
  PartValidator v = rep.validator ? *rep.validator : file->resume_validator();
  std::optional<uint64_t> length = rep.length;
  if (!length && !rep.restarted) {
    // The process died without its word. Without a rewind the file is the
    // body's first bytes: what was written, in order.
    Result<uint64_t> size = file->Size();
    if (size.ok()) length = *size;
  }
  if (!v.Usable() || !length || *length < kQcow2CheckBytes) {
    file->Discard();
    return;
  }
  const std::string path = file->path();
  if (Status kept = file->Keep(v, *length); !kept.ok()) {
    LOG_WARN("%s: cannot keep the partial download for the next try: %s", prefix.c_str(),
             kept.message().c_str());
    file->Discard();
    return;
  }
  LOG_INFO("%s: kept the first %" PRIu64 " bytes of %s for the next try (%s)", prefix.c_str(),
           *length, path.c_str(), v.Describe().c_str());
}

}  // namespace

Result<FetchResult> FetchConfined(const std::string& url, PartFile* file,
                                  const FetchOptions& options, const FetchHooks& hooks,
                                  const ConfineOptions& confine) {
  const std::string context = FetchContext(url);
  ChildReport rep;
  auto fail = [&](const Status& st) -> Result<FetchResult> {
    KeepOrDiscard(file, st, rep, hooks.log_prefix);
    return st;
  };
  if (!file->reserved()) return fail(Status::Transient("internal error: target not reserved").Wrap(context));
  // A store already below its floor: the job waits (no process started).
  if (!options.store.path.empty()) {
    Result<StoreSpace> space = GetStoreSpace(file->fd(), options.store);
    Status room = space.ok() ? CheckStoreSpace(*space, 0, options.store.path) : space.status();
    if (!room.ok()) return fail(room);
  }
  // The child keeps the proxy's password (it authenticates with it): not
  // scrubbed, whichever configured secret it equals.
  ConfineOptions confined = confine;
  if (!options.proxy_password.empty()) {
    auto& v = confined.secrets;
    v.erase(std::remove(v.begin(), v.end(), options.proxy_password), v.end());
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return fail(Status::FromErrno("cannot start the download process: pipe", errno,
                                  Status::Kind::kUnavailable)
                    .Wrap(context));
  UniqueFd from_child(fds[0]), to_parent(fds[1]);
  const pid_t worker = getpid();
  auto start = Clock::now();
  pid_t pid = fork();
  if (pid < 0)
    return fail(Status::FromErrno("cannot start the download process: fork", errno,
                                  Status::Kind::kUnavailable)
                    .Wrap(context));
  if (pid == 0) ChildMain(worker, to_parent.get(), url, file, options, hooks, confined);
  to_parent.Reset();

  std::string pending;
  bool killed = false;
  auto deadline = start + std::chrono::seconds(options.timeout_seconds + kTimeoutSlackSeconds);
  for (;;) {
    struct pollfd pfd = {from_child.get(), POLLIN, 0};
    int n = poll(&pfd, 1, 1000);
    if (hooks.keep_alive) hooks.keep_alive();
    if (!killed && Clock::now() >= deadline) {
      kill(pid, SIGKILL);
      killed = true;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[4096];
    ssize_t got = read(from_child.get(), buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // end of file: the child is gone (or closed it)
    pending.append(buf, static_cast<size_t>(got));
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      HandleLine(std::string_view(pending).substr(0, nl), &rep, hooks);
      pending.erase(0, nl + 1);
    }
    if (pending.size() > kMaxReportLine) pending.clear();  // overlong: dropped
  }
  // Reap. The pipe's end comes just before the exit, so wait for the exit
  // itself (a pidfd polls readable then) rather than sleeping in steps: a
  // 10 ms step cost 7 ms per download on average. A child that closed its
  // end but lingers gets 2 s, then SIGKILL.
  int status = 0;
  UniqueFd exited(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (exited.valid()) {
    struct pollfd pfd = {exited.get(), POLLIN, 0};
    int n;
    do {
      n = poll(&pfd, 1, kReapGraceMs);
    } while (n < 0 && errno == EINTR);
    if (n == 0) kill(pid, SIGKILL);
  } else {
    kill(pid, SIGKILL);  // no pidfd (kernel < 5.3): do not wait on a lingering child
  }
  for (;;) {
    pid_t r = waitpid(pid, &status, 0);
    if (r == pid) break;
    if (r < 0 && errno == EINTR) continue;
    status = 0;
    break;
  }

  if (rep.sigsys >= 0 || (WIFEXITED(status) && WEXITSTATUS(status) == kSigsysExit)) {
    std::string call = rep.sigsys >= 0 ? SyscallName(rep.sigsys) : "unknown";
    LOG_ERROR("%s: download process %d stopped by the sandbox: forbidden system call %s",
              hooks.log_prefix.c_str(), static_cast<int>(pid), call.c_str());
    return fail(Status::Permanent("download process stopped by the sandbox: forbidden system call " +
                                  call)
                    .Wrap(context));
  }
  if (killed)
    return fail(Status::Transient("download process killed after " +
                                  std::to_string(options.timeout_seconds + kTimeoutSlackSeconds) +
                                  " s (download.timeout + " +
                                  std::to_string(kTimeoutSlackSeconds) + " s)")
                    .Wrap(context));
  if (!rep.have_result)
    return fail(Status::Transient("download process " + DescribeExit(status)).Wrap(context));
  if (rep.result.unavailable() && rep.result_confined) {
    // "Our store is failing" gives the job back without an attempt counted:
    // believed only when the store fails for the worker too, so that a
    // hostile child cannot hold a job (and the worker) back forever.
    if (Status store = file->CheckStore(); !store.ok()) return fail(store.Wrap(context));
    // A store without room: the worker's own statvfs (and an allocation)
    // must agree. What the child says the image still needed is believed
    // up to the size limit: a hostile child can make its job wait only
    // while the store is that close to its floor.
    uint64_t needed = rep.space_needed;
    if (options.max_bytes > 0) needed = std::min(needed, options.max_bytes);
    if (Status space = file->ConfirmNoSpace(options.store, needed); !space.ok())
      return fail(space);
    return fail(Status::Transient(rep.result.message() +
                                  " (the store answers: counted as a failed attempt)"));
  }
  if (!rep.result.ok()) return fail(rep.result);

  // A body rewritten from byte 0 may be shorter than what the file held.
  if (rep.length) {
    if (Status st = file->TruncateTo(*rep.length); !st.ok()) return fail(st.Wrap(context));
  }
  Result<uint64_t> size = file->Verify(options.max_bytes);
  if (!size.ok()) return fail(size.status().Wrap(context));
  if (Status st = file->Commit(); !st.ok()) return fail(st.Wrap(context));
  FetchResult r;
  r.bytes = *size;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.path = file->path();
  r.resumed_from = rep.restarted ? 0 : file->resume_from();
  return r;
}

}  // namespace djinn
