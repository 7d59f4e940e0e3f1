// Debian's tinyproxy (/usr/bin/tinyproxy) as a real HTTP proxy for the
// tests: a config file of its own in a temp dir, a free port, run in the
// foreground (-d) with its log on stderr, which the harness reads.
//
// Forward mode (the default) is what download.proxy points at: CONNECT is
// allowed only to connect_ports, and with user set it asks for Basic
// credentials. Reverse mode (reverse_to set) makes it an origin server
// in front of another one: requests for "/..." are fetched from
// reverse_to + "...", so a test can serve files on an address the HTTP
// test server (127.0.0.1 only) does not bind.
#ifndef DJINN_TESTS_HARNESS_TINYPROXY_H_
#define DJINN_TESTS_HARNESS_TINYPROXY_H_

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/harness/harness.h"

namespace djinn::testing {

class Tinyproxy {
 public:
  struct Options {
    std::string listen = "127.0.0.1";  // the address it binds
    std::vector<int> connect_ports;    // CONNECT allowed to these only
    std::string user, password;        // BasicAuth when user is not ""
    std::string allow = "127.0.0.1";   // clients allowed ("" = anyone)
    std::string reverse_to;            // reverse mode: "http://127.0.0.1:P/"
  };

  Tinyproxy();
  ~Tinyproxy();
  Tinyproxy(const Tinyproxy&) = delete;
  Tinyproxy& operator=(const Tinyproxy&) = delete;

  // False (with why) when /usr/bin/tinyproxy is not installed.
  static bool Available(std::string* why);

  // Starts it on a free port and waits until it accepts connections.
  ::testing::AssertionResult Start(const Options& options);
  void Stop();
  bool Running() { return proc_.Running(); }

  int port() const { return port_; }
  // "http://<listen>:<port>"
  std::string url() const;
  // Its log (stderr) so far.
  std::string Log() const;
  // The request lines it received, oldest first: "CONNECT 127.0.0.1:8080
  // HTTP/1.1", "GET /files/x HTTP/1.1", ...
  std::vector<std::string> Requests() const;
  // How many request lines start with prefix ("CONNECT 127.0.0.1:8080").
  int Count(const std::string& prefix) const;

 private:
  TempDir dir_;
  Process proc_;
  Options options_;
  int port_ = 0;
};

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_TINYPROXY_H_
