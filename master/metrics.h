// The master's HTTP endpoint for metrics and health (`metrics { listen
// "127.0.0.1:9187" }`, off by default): GET /metrics (Prometheus text,
// master/prom_text.h) and GET /healthz. What they say is made by the
// supervisor (master/supervisor_metrics.cc); this file holds the HTTP
// server and the master's own metric state.
//
// Threading: none added. libmicrohttpd runs with no thread of its own
// (MHD_USE_EPOLL without MHD_USE_INTERNAL_POLLING_THREAD): its epoll fd is
// one more fd in the supervisor's poll(), and Serve() (MHD_run) handles
// what is ready without blocking. So a fork() for a worker never copies a
// thread or a held lock, and every response is built on the supervisor's
// own thread, which owns the scoreboard and the process table.
//
// Descriptors: the listening socket is opened here with SOCK_CLOEXEC (MHD
// accepts with accept4(SOCK_CLOEXEC), its epoll fd has EPOLL_CLOEXEC); a
// worker closes every inherited fd first thing anyway (CloseFdsExcept).
//
// Not thread-safe; the master's one thread only.
#ifndef DJINN_MASTER_METRICS_H_
#define DJINN_MASTER_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/job_counters.h"
#include "common/listen_address.h"
#include "common/queue.h"
#include "common/status.h"
#include "common/unique_fd.h"

struct MHD_Daemon;

namespace djinn {

class HttpServer {
 public:
  struct Response {
    unsigned code = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };
  // Called for GET and HEAD (others get 405) with the request's path.
  using Handler = std::function<Response(std::string_view path)>;

  HttpServer();
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; errors name the address ("address already in use").
  Status Open(const std::string& listen, Handler handler);
  // The fd to poll for POLLIN; -1 when not open.
  int fd() const;
  // Handles what is ready (accepts, reads, writes, timeouts); never blocks.
  // Call after every poll() return, ready or not (timeouts).
  void Serve();
  // Stops serving; closes every connection and the socket.
  void Close();
  bool open() const { return daemon_ != nullptr; }
  const Handler& handler() const { return handler_; }

 private:
  struct DaemonFree {
    void operator()(MHD_Daemon* d) const;
  };
  Handler handler_;
  std::unique_ptr<MHD_Daemon, DaemonFree> daemon_;  // owns the listening socket
};

// What the master keeps for its metrics besides the live scoreboard.
struct MasterMetrics {
  HttpServer http;
  JobTotals retired;                          // folded from exited workers' slots
  std::map<std::string, uint64_t> restarts;   // by reason
  Reach pg = Reach::kUnknown;                 // newest PostgreSQL observation of an exited worker
  int64_t pg_ms = 0;
  // The queue sample (at most one a second).
  int64_t sampled_ms = 0;
  bool sampled = false;
  bool redis_up = false;
  std::string redis_error;
  QueueStats stats, webhook_stats;
  bool webhook_sampled = false;
};

}  // namespace djinn

#endif  // DJINN_MASTER_METRICS_H_
