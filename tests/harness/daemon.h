// Drives the real djinn-consumer binary: writes its config, starts it,
// finds its workers through /proc, sends signals, reads its log.
#ifndef DJINN_TESTS_HARNESS_DAEMON_H_
#define DJINN_TESTS_HARNESS_DAEMON_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/harness/harness.h"

namespace djinn::testing {

// Live children of pid (from /proc/*/stat), sorted.
std::vector<pid_t> ChildrenOf(pid_t pid);
// /proc/<pid>/cmdline as ps shows it (NULs as spaces, trailing trimmed).
std::string ProcTitle(pid_t pid);

struct DaemonOptions {
  int workers = 2;
  std::string redis_addr = "127.0.0.1:1";
  std::string database_addr = "127.0.0.1:1";
  std::string database_password;
  std::string queue = "jobs";
  int attempts = 5;
  int job_timeout = 900;
  int shutdown_timeout = 10;
  std::string user;  // workers drop to this when running as root
  // The body of the config's download group.
  std::string download = "allow_private = true; timeout = 30;";
  std::string extra;  // appended verbatim to the config file
  bool test_jobs = true;
  std::vector<std::string> env;      // "K=V" added to the daemon's environment
  const TestUser* run_as = nullptr;  // start it as this user (dir() is given to it)
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions opts = {});
  ~Daemon();

  // Config text for opts (pidfile, log file and store inside dir()), in
  // libconfig syntax.
  std::string ConfigText() const;
  void WriteConfig(const std::string& text);
  // Starts the binary with the current config; false when it fails.
  bool Start();
  // Waits until `n` workers of the newest generation are up (their titles
  // say idle), or timeout.
  bool WaitForWorkers(int n, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Workers whose title says they are ready (idle or busy).
  std::vector<pid_t> Workers() const;
  pid_t pid() const { return proc_.pid(); }
  bool Signal(int sig) { return proc_.Signal(sig); }
  // Sends TERM and waits; returns the wait status (-1: still running).
  int Stop(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  int Wait(std::chrono::milliseconds timeout) { return proc_.Wait(timeout); }
  bool Running() { return proc_.Running(); }

  std::string Log() const;
  // Polls the log for text.
  bool WaitForLog(const std::string& text,
                  std::chrono::milliseconds timeout = std::chrono::seconds(20)) const;

  const std::string& dir() const { return dir_.path(); }
  std::string config_path() const { return dir_.Sub("consumer.conf"); }
  std::string pidfile() const { return dir_.Sub("consumer.pid"); }
  std::string log_path() const { return dir_.Sub("consumer.log"); }
  std::string stdout_path() const { return dir_.Sub("stdout.log"); }
  std::string store() const { return dir_.Sub("store"); }
  DaemonOptions& options() { return opts_; }

 private:
  DaemonOptions opts_;
  TempDir dir_;
  Process proc_;
};

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_DAEMON_H_
