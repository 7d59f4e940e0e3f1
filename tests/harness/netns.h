// Private network namespaces for tests that need several "hosts": named
// namespaces (ip netns, /run/netns/<name>) wired as a star around a bridge
// in a "services" namespace, on addresses that exist only inside them
// (198.18.0.0/24, the benchmarking range, by default). Nothing is added to
// the test process's own namespace nor routed anywhere; every namespace is
// deleted (and every process still in it killed) by the destructors.
// Needs root and iproute2 (tests/deps.sh).
#ifndef DJINN_TESTS_HARNESS_NETNS_H_
#define DJINN_TESTS_HARNESS_NETNS_H_

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace djinn::testing {

// Why namespaces cannot be made here ("" when they can): not root, or no
// `ip` binary.
std::string NetnsUnsupportedReason();

// One named network namespace. The name is unique to this process
// ("djt-<pid>-<n>-<label>"); one a crashed test process left behind is
// deleted by the next Create() of any process.
class NetNamespace {
 public:
  explicit NetNamespace(const std::string& label);
  ~NetNamespace();  // KillAll, then ip netns del
  NetNamespace(const NetNamespace&) = delete;
  NetNamespace& operator=(const NetNamespace&) = delete;

  // ip netns add, then lo up.
  [[nodiscard]] ::testing::AssertionResult Create();
  const std::string& name() const { return name_; }
  std::string path() const { return "/run/netns/" + name_; }
  // Runs `ip -n <name> args...`.
  [[nodiscard]] ::testing::AssertionResult Ip(const std::vector<std::string>& args) const;
  // Live processes (not zombies) whose network namespace is this one.
  std::vector<pid_t> Pids() const;
  // SIGKILL to every process in it, again until none is left or timeout;
  // true when none is left.
  bool KillAll(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

 private:
  std::string name_;
  bool created_ = false;
};

// The calling thread works in ns until this is destroyed: the sockets it
// opens and the processes it forks (every harness server, a Daemon) are
// there. Processes keep their namespace afterwards. Use as
//   ScopedNetns in(ns); ASSERT_TRUE(in.ok()) << in.error();
class ScopedNetns {
 public:
  explicit ScopedNetns(const NetNamespace& ns);
  ~ScopedNetns();  // back to the thread's namespace before
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  UniqueFd saved_;  // the namespace before
  std::string error_;
};

// A services namespace holding bridge br0 with <prefix>.1/24, and `hosts`
// host namespaces whose eth0 (<prefix>.<11 + i>/24) is one end of a veth
// pair whose other end (vh<i>) is a port of that bridge. Only that /24
// exists in them: no default route, nothing outside is reachable.
class StarNetwork {
 public:
  explicit StarNetwork(int hosts, const std::string& prefix = "198.18.0");
  [[nodiscard]] ::testing::AssertionResult Create();
  NetNamespace& services() { return *services_; }
  NetNamespace& host(int i) { return *hosts_.at(i); }
  int hosts() const { return static_cast<int>(hosts_.size()); }
  std::string services_addr() const { return prefix_ + ".1"; }
  std::string host_addr(int i) const { return prefix_ + "." + std::to_string(11 + i); }
  std::string subnet() const { return prefix_ + ".0/24"; }

 private:
  std::string prefix_;
  std::unique_ptr<NetNamespace> services_;
  std::vector<std::unique_ptr<NetNamespace>> hosts_;
};

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_NETNS_H_
