// The master's control socket: how `djinn-consumer status` reaches the
// running master (docs/decisions.md, "Operator commands").
//
// Protocol: a client connects to the unix stream socket; the master writes
// one JSON document (StatusJson) and closes. It never reads from a client,
// so nobody can change anything through it. The master never blocks on a
// client: the listening socket and every accepted one are non-blocking, a
// snapshot is bounded (kMaxListedWorkers) so it fits a socket buffer in one
// write, and a client that cannot take it gets a cut document (its parse
// fails) rather than a stalled master.
//
// Path: the `control_socket` parameter, else the pidfile's name with
// ".pid" replaced by ".sock" (appended when the name has no ".pid"), else
// none. Mode 0660 from the start (bound under umask 0117); as root with
// `user` set it belongs to root and the workers' group (`group`, else the
// user's primary group), so the configured user can run status too;
// started unprivileged it belongs to the running user and their group.
//
// Not thread-safe; master only. The descriptors are close-on-exec, and
// workers close everything they inherit anyway.
#ifndef DJINN_MASTER_CONTROL_H_
#define DJINN_MASTER_CONTROL_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace djinn {

// One worker as the master sees it (scoreboard + process table).
struct WorkerStatus {
  int number = 0;
  bool webhooks = false;    // a delivery worker
  pid_t pid = -1;
  int generation = 0;
  std::string state;        // idle, busy, retiring, killed
  std::string job_id, job_type;
  int64_t running_ms = 0;   // busy: how long its job has run
  uint64_t jobs_done = 0;
  int64_t uptime_ms = 0;
};

struct MasterStatus {
  pid_t pid = -1;
  int64_t started_at = 0;   // unix seconds
  int64_t uptime_ms = 0;
  int generation = 0;
  std::string queue;
  int desired_workers = 0;
  int desired_webhook_workers = 0;  // webhooks.workers (0: webhooks off)
  bool stopping = false;
  std::vector<WorkerStatus> workers;
  // Since the master started.
  uint64_t jobs_done = 0;        // live workers' counts + those of exited ones
  uint64_t workers_started = 0;
  uint64_t worker_restarts = 0;  // workers that died unasked
};

// At most this many workers are listed (workers_total says how many).
inline constexpr size_t kMaxListedWorkers = 256;

// One JSON object, at most about 80 KiB.
std::string StatusJson(const MasterStatus& status);

// "" when there is none (no control_socket and no pidfile).
std::string ControlSocketPath(const Config& config);

class ControlSocket {
 public:
  ControlSocket() = default;
  ~ControlSocket();
  ControlSocket(const ControlSocket&) = delete;
  ControlSocket& operator=(const ControlSocket&) = delete;

  // Binds and listens on path. A stale socket there (the pidfile lock says
  // no other master runs) is replaced; anything else there is an error.
  Status Open(const std::string& path, const Config& config);
  int fd() const { return fd_.get(); }
  bool open() const { return fd_.valid(); }
  const std::string& path() const { return path_; }
  // Accepts the pending clients (a bounded number per call), writes each
  // the snapshot (made once per call, only when a client is there), closes.
  void Serve(const std::function<std::string()>& snapshot);
  // Closes and unlinks the socket, if the path still names ours.
  void Remove();

 private:
  std::string path_;
  UniqueFd fd_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

// Client: connects to path and reads the master's document (bounded in
// size and by timeout_ms). Errors name the path and say what to do.
Result<std::string> ReadControlSocket(const std::string& path, int timeout_ms);

}  // namespace djinn

#endif  // DJINN_MASTER_CONTROL_H_
