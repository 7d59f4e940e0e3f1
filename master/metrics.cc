#include "master/metrics.h"

#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/log.h"

namespace djinn {
namespace {

constexpr unsigned kMaxConnections = 32;     // scrapers are few
constexpr unsigned kConnectionTimeoutS = 10;  // a stalled client lets go of its slot

struct ResponseFree {
  void operator()(MHD_Response* r) const { MHD_destroy_response(r); }
};
using ResponsePtr = std::unique_ptr<MHD_Response, ResponseFree>;

int g_request_marker;  // *con_cls after the headers of a request arrived

MHD_Result Reply(MHD_Connection* connection, const HttpServer::Response& r) {
  ResponsePtr resp(MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()),
                                                   MHD_RESPMEM_MUST_COPY));
  if (!resp) return MHD_NO;
  if (MHD_add_response_header(resp.get(), MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str()) !=
      MHD_YES)
    return MHD_NO;
  return MHD_queue_response(connection, r.code, resp.get());
}

// MHD's access handler: called once when the headers are in (we say go
// on), then once more per body chunk and at the end. GET and HEAD have no
// body, so the second call answers.
MHD_Result Access(void* cls, MHD_Connection* connection, const char* url, const char* method,
                  const char* /*version*/, const char* /*upload_data*/, size_t* upload_data_size,
                  void** con_cls) {
  auto* server = static_cast<HttpServer*>(cls);
  if (*con_cls == nullptr) {
    *con_cls = &g_request_marker;
    return MHD_YES;
  }
  if (*upload_data_size != 0) {
    *upload_data_size = 0;  // a body we do not want: skip it
    return MHD_YES;
  }
  if (std::strcmp(method, MHD_HTTP_METHOD_GET) != 0 && std::strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
    HttpServer::Response r;
    r.code = MHD_HTTP_METHOD_NOT_ALLOWED;
    r.body = "method not allowed\n";
    return Reply(connection, r);
  }
  return Reply(connection, server->handler()(url ? url : ""));
}

}  // namespace

void HttpServer::DaemonFree::operator()(MHD_Daemon* d) const { MHD_stop_daemon(d); }

HttpServer::HttpServer() = default;
HttpServer::~HttpServer() = default;

Status HttpServer::Open(const std::string& listen, Handler handler) {
  auto addr = ParseListenAddress(listen);
  if (!addr.ok()) return Status::Permanent("metrics.listen " + addr.status().message());
  // Our own socket, so that the error says why and the flags are ours.
  UniqueFd fd(socket(addr->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Status::FromErrno("metrics: socket", errno);
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr->addr.ss_family == AF_INET6)
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr->addr), addr->len) != 0)
    return Status::FromErrno("metrics: listen " + listen, errno);
  if (::listen(fd.get(), 16) != 0) return Status::FromErrno("metrics: listen " + listen, errno);
  handler_ = std::move(handler);
  unsigned flags = MHD_USE_EPOLL;  // no MHD_USE_INTERNAL_POLLING_THREAD: no thread
  if (addr->addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  MHD_Daemon* d = MHD_start_daemon(
      flags, 0, nullptr, nullptr, &Access, this,
      MHD_OPTION_LISTEN_SOCKET, fd.get(),
      MHD_OPTION_CONNECTION_LIMIT, kMaxConnections,
      MHD_OPTION_CONNECTION_TIMEOUT, kConnectionTimeoutS,
      MHD_OPTION_END);
  if (!d) return Status::Permanent("metrics: listen " + listen + ": libmicrohttpd did not start");
  fd.Release();  // MHD closes it in MHD_stop_daemon
  daemon_.reset(d);
  return Status::Ok();
}

int HttpServer::fd() const {
  if (!daemon_) return -1;
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_.get(), MHD_DAEMON_INFO_EPOLL_FD);
  return info ? info->epoll_fd : -1;
}

void HttpServer::Serve() {
  if (daemon_) MHD_run(daemon_.get());
}

void HttpServer::Close() { daemon_.reset(); }

}  // namespace djinn
