#include "master/control.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/scoreboard.h"

namespace djinn {
namespace {

constexpr int kMaxAcceptsPerTurn = 16;   // the rest wait for the next turn
constexpr size_t kMaxDocument = 1 << 20;  // what a client reads at most

Status FillAddr(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr->sun_path)
    return Status::Permanent("control socket " + path + ": path too long for a unix socket");
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return Status::Ok();
}

// umask for the time of one bind(): the socket is 0660 from its creation.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(umask(mask)) {}
  ~ScopedUmask() { umask(old_); }
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

}  // namespace

std::string StatusJson(const MasterStatus& s) {
  nlohmann::json workers = nlohmann::json::array();
  for (size_t i = 0; i < s.workers.size() && i < kMaxListedWorkers; i++) {
    const WorkerStatus& w = s.workers[i];
    nlohmann::json j = {{"number", w.number},
                        {"kind", w.webhooks ? "webhooks" : "worker"},
                        {"pid", w.pid},
                        {"generation", w.generation},
                        {"state", w.state},
                        {"jobs_done", w.jobs_done},
                        {"uptime_seconds", w.uptime_ms / 1000}};
    if (w.state == "busy" || !w.job_id.empty()) {
      j["job_id"] = w.job_id;
      j["job_type"] = w.job_type;
      j["running_seconds"] = w.running_ms / 1000;
    } else {
      j["job_id"] = nullptr;
      j["job_type"] = nullptr;
      j["running_seconds"] = nullptr;
    }
    workers.push_back(std::move(j));
  }
  nlohmann::json doc = {
      {"pid", s.pid},
      {"version", DJINN_VERSION},
      {"started_at", s.started_at},
      {"uptime_seconds", s.uptime_ms / 1000},
      {"generation", s.generation},
      {"queue", s.queue},
      {"stopping", s.stopping},
      {"desired_workers", s.desired_workers},
      {"desired_webhook_workers", s.desired_webhook_workers},
      {"workers_total", s.workers.size()},
      {"workers", std::move(workers)},
      {"counters",
       {{"jobs_done", s.jobs_done},
        {"workers_started", s.workers_started},
        {"worker_restarts", s.worker_restarts}}},
  };
  // Job IDs come from producers: never let a stray byte make it throw.
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string ControlSocketPath(const Config& config) {
  if (!config.control_socket.empty()) return config.control_socket;
  if (config.pidfile.empty()) return "";
  std::string p = config.pidfile;
  if (p.size() > 4 && p.compare(p.size() - 4, 4, ".pid") == 0) p.resize(p.size() - 4);
  return p + ".sock";
}

ControlSocket::~ControlSocket() { Remove(); }

Status ControlSocket::Open(const std::string& path, const Config& config) {
  sockaddr_un addr;
  if (Status st = FillAddr(path, &addr); !st.ok()) return st;
  // Only a socket is replaced: our pidfile lock says no master uses it.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Status::Permanent("control socket " + path + ": exists and is not a socket");
    if (unlink(path.c_str()) != 0) return Status::FromErrno("control socket " + path + ": unlink", errno);
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return Status::FromErrno("control socket: socket", errno);
  {
    ScopedUmask mask(0117);  // 0660
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      return Status::FromErrno("control socket " + path + ": bind", errno);
  }
  if (listen(fd.get(), 16) != 0) {
    int err = errno;
    unlink(path.c_str());
    return Status::FromErrno("control socket " + path + ": listen", err);
  }
  if (lstat(path.c_str(), &st) != 0) return Status::FromErrno("control socket " + path, errno);
  path_ = path;
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  fd_ = std::move(fd);
  // As root with a workers' user: root and that group (lchown: a link put
  // in its place meanwhile is not followed).
  if (geteuid() == 0 && !config.user.empty()) {
    gid_t gid = 0;
    if (struct passwd* pw = getpwnam(config.user.c_str())) gid = pw->pw_gid;
    if (!config.group.empty())
      if (struct group* gr = getgrnam(config.group.c_str())) gid = gr->gr_gid;
    if (lchown(path.c_str(), 0, gid) != 0) {
      Status err = Status::FromErrno("control socket " + path + ": chown", errno);
      Remove();
      return err;
    }
  }
  return Status::Ok();
}

void ControlSocket::Serve(const std::function<std::string()>& snapshot) {
  if (!fd_) return;
  std::string doc;
  for (int i = 0; i < kMaxAcceptsPerTurn; i++) {
    UniqueFd client(accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!client) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
        LOG_WARN("control socket %s: accept: %s", path_.c_str(), strerror(errno));
      return;
    }
    if (doc.empty()) doc = snapshot();
    // One non-blocking write; whatever does not fit is the client's loss.
    ssize_t n = send(client.get(), doc.data(), doc.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(doc.size()))
      LOG_DEBUG("control socket: a client took %zd of %zu bytes", n, doc.size());
  }
}

void ControlSocket::Remove() {
  if (!fd_) return;
  fd_.Reset();
  struct stat st;
  if (lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev_ &&
      st.st_ino == ino_)
    unlink(path_.c_str());
}

Result<std::string> ReadControlSocket(const std::string& path, int timeout_ms) {
  sockaddr_un addr;
  if (Status st = FillAddr(path, &addr); !st.ok()) return st;
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::FromErrno("socket", errno);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    std::string why = "cannot reach the master at " + path + ": " + strerror(err);
    if (err == ENOENT || err == ECONNREFUSED) why += " (is it running with this configuration?)";
    if (err == EACCES) why += " (run as root or as a member of the socket's group)";
    return Status::Permanent(why);
  }
  std::string doc;
  char buf[16384];
  int64_t deadline = MonotonicMs() + timeout_ms;
  for (;;) {
    int64_t left = deadline - MonotonicMs();
    if (left <= 0) return Status::Transient("master at " + path + ": no answer in time");
    pollfd pfd = {fd.get(), POLLIN, 0};
    int r = poll(&pfd, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno("poll " + path, errno);
    if (r == 0) continue;
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("read " + path, errno);
    if (n == 0) break;
    doc.append(buf, static_cast<size_t>(n));
    if (doc.size() > kMaxDocument) return Status::Permanent("master at " + path + ": answer too long");
  }
  if (doc.empty()) return Status::Permanent("master at " + path + ": empty answer");
  return doc;
}

}  // namespace djinn
