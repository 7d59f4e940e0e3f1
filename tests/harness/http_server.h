// The test HTTP(S) server: tests/harness/httpd.py (Python 3 standard library)
// run as a child process on 127.0.0.1. The URL routes it understands
// (/files, /images, /ctype, /status, /flaky, /trickle, /redirect,
// /redirect-to, /auth, /nolength, /chunked, /big, /slow-headers, and the
// webhook receivers /hook, /hook-status, /hook-flaky, /hook-slow) are listed
// at the top of httpd.py, with the query flags for resumable downloads
// (ranges=1, drop=<pct>, etag=changing|none, lastmod=none).
#ifndef DJINN_TESTS_HARNESS_HTTP_SERVER_H_
#define DJINN_TESTS_HARNESS_HTTP_SERVER_H_

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/harness/harness.h"
#include "tests/harness/tls.h"

namespace djinn::testing {

// Fixed port of the wire-compatibility e2e vectors (../shared/vectors).
inline constexpr int kE2eHttpPort = 18931;

class HttpServer {
 public:
  struct Request {
    std::string method;
    std::string path;  // as sent, with the query
    int status;
  };

  HttpServer();
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves the files under dir. tls: serve HTTPS with certs->server_cert /
  // server_key (the pointer is not kept). port 0: a free port chosen by the
  // server itself (no race); otherwise exactly that port, and when it cannot
  // be bound, fails with "port N is taken". Takes ~100 ms.
  // Use as ASSERT_TRUE(http.Start(dir)): the result carries the reason.
  ::testing::AssertionResult Start(const std::string& dir, const TestCerts* tls = nullptr,
                                   int port = 0);
  // Before Start: listen on addr instead of 127.0.0.1 (an address of a
  // test's private network namespace); url() then names it.
  void BindTo(const std::string& addr) { host_ = addr; }
  // Kills the server (open connections are cut). Start may be called again;
  // the request log is kept, /flaky counters start over.
  void Stop();

  int port() const { return port_; }
  bool tls() const { return tls_; }
  // "http(s)://127.0.0.1:<port>/<path>" (path with or without leading '/';
  // the BindTo address instead of 127.0.0.1 when set).
  std::string url(const std::string& path) const;

  // The request log, oldest first. A request is logged when its status line
  // is sent, so it is there once the client has seen the headers.
  std::vector<Request> Requests() const;
  // Requests whose path (with or, if path has no '?', without the query)
  // equals path.
  int Hits(const std::string& path) const;

  // One response of the resume sender (the file routes with a resume flag:
  // ranges, drop, etag, lastmod), logged once its body is done or cut.
  struct BodySent {
    std::string method;
    std::string path;  // as sent, with the query
    int status;
    uint64_t bytes;    // body bytes written to the socket
  };
  // Those responses, oldest first; path matched as in Hits(), "" for all.
  std::vector<BodySent> BodiesSent(const std::string& path = "") const;

  // One request to a webhook route (/hook*/<key>), as received.
  struct HookRequest {
    std::string request_line;  // "POST /hook/k HTTP/1.1", no CR LF
    std::string header_block;  // the header lines, each with its CR LF, as
                               // sent; without the request line and the
                               // blank line
    std::string body;          // as sent (Content-Length bytes)
  };
  // The requests the webhook routes received for key, oldest first (kept
  // across Stop/Start). Each is listed, complete, as soon as it arrived,
  // before it is answered (a /hook-slow request shows while it waits).
  std::vector<HookRequest> HookRequests(const std::string& key) const;

  // The first n bytes of what /big/<n> sends (n up to a few MiB is sensible).
  static std::string BigBody(size_t n);
  // Path of httpd.py: $DJINN_HTTPD_PY, else found next to this source file
  // or under ./tests/harness.
  static std::string ScriptPath();

 private:
  TempDir dir_;
  Process proc_;
  int port_ = 0;
  bool tls_ = false;
  std::string host_ = "127.0.0.1";
};

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_HTTP_SERVER_H_
