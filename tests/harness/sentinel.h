// A Redis Sentinel deployment for failover tests: a redis-server master,
// one replica of it (replicaof) and three redis-sentinel processes
// (/usr/bin/redis-sentinel, package redis-sentinel) monitoring it under one
// name, all on free loopback ports, each with its files in one temp dir
// (a sentinel rewrites its config file: it lives there, writable).
// down-after-milliseconds 1000 and failover-timeout 3000: a forced or
// automatic failover takes about 1-3 s. The destructor kills everything.
#ifndef DJINN_TESTS_HARNESS_SENTINEL_H_
#define DJINN_TESTS_HARNESS_SENTINEL_H_

#include <string>
#include <vector>

#include "tests/harness/harness.h"

namespace djinn::testing {

class SentinelCluster {
 public:
  explicit SentinelCluster(std::string master_name = "mymaster");
  ~SentinelCluster();
  SentinelCluster(const SentinelCluster&) = delete;
  SentinelCluster& operator=(const SentinelCluster&) = delete;

  // Starts the servers, then the sentinels, and waits until every sentinel
  // knows the replica and the two other sentinels (a failover can then
  // start at once). Aborts the test on failure: ASSERT_NO_FATAL_FAILURE.
  void Start();

  const std::string& master_name() const { return name_; }
  // "127.0.0.1:<port>" of each sentinel, in start order.
  std::vector<std::string> sentinel_addrs() const;
  int sentinel_port(size_t i) const { return sentinel_ports_.at(i); }
  // The two data servers' ports (the first starts as master).
  int server_port(size_t i) const { return server_ports_.at(i); }
  int other_server_port(int port) const {
    return port == server_ports_[0] ? server_ports_[1] : server_ports_[0];
  }

  // The master's port as the sentinels say (the first that answers), 0
  // when none does.
  int MasterPort();
  // SENTINEL FAILOVER <name> on the first sentinel; the reply ("OK").
  std::string Failover();
  // SIGKILL to the data server on that port (a crash).
  void KillServer(int port);

  // Sentinel config text for sentinel i (for a test that wants its own).
  std::string SentinelConfig(size_t i) const;

 private:
  std::string name_;
  TempDir dir_;
  std::vector<int> server_ports_, sentinel_ports_;
  std::vector<Process> servers_, sentinels_;
};

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_SENTINEL_H_
