// Test harness: real servers on free loopback ports in temp dirs, started
// and stopped by the tests themselves. Nothing here contacts anything but
// 127.0.0.1 / ::1.
#ifndef DJINN_TESTS_HARNESS_HARNESS_H_
#define DJINN_TESTS_HARNESS_HARNESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace djinn::testing {

// A fresh directory (mode 0755) under parent, or $TMPDIR, or /tmp; removed
// with its contents. Aborts when it cannot be made.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "djinn-test", const std::string& parent = "");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind 0, read, close).
int FreePort();

// Polls pred every few ms until it is true or timeout passes.
bool WaitFor(const std::function<bool()>& pred,
             std::chrono::milliseconds timeout = std::chrono::seconds(10),
             std::chrono::milliseconds every = std::chrono::milliseconds(10));

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& content, int mode = 0644);
bool FileExists(const std::string& path);
// How many times `what` occurs in text (not overlapping), as in a log.
size_t CountOf(const std::string& text, const std::string& what);
// Seconds since the epoch, with fractions (for timestamps the database or
// a log also writes).
double UnixNow();
std::string Sha256Hex(const std::string& bytes);

// Runs a command to completion; returns its exit status (-1 on failure to
// run) and collects stdout+stderr into *output when given.
int RunCommand(const std::vector<std::string>& argv, std::string* output = nullptr);
inline int Run(const std::vector<std::string>& argv, std::string* output = nullptr) {
  return RunCommand(argv, output);
}
// RunCommand for a qemu-img command line (argv[0] may be a shell wrapper).
// Creating a LUKS-encrypted image first times PBKDF2 on the CPU, and on a
// busy machine qemu-img sometimes fails with "Unable to get accurate CPU
// usage" (its measured CPU time came out 0); only that failure is retried,
// up to 5 times. Any other result is returned as is.
int RunQemuImg(const std::vector<std::string>& argv, std::string* output = nullptr);

// The unprivileged user that servers refusing root (PostgreSQL) run as when
// the tests run as root; created on first use ("djinn-test").
struct TestUser {
  uid_t uid;
  gid_t gid;
  std::string name;
};
const TestUser& UnprivilegedUser();

// A child process: fork+exec with stdout/stderr to a file. The destructor
// kills (SIGKILL) and reaps it if still running.
class Process {
 public:
  Process() = default;
  ~Process();
  Process(Process&& o) noexcept;
  Process& operator=(Process&& o) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // env entries "K=V" are added to the current environment. When run_as is
  // set, the child switches to that uid/gid before exec.
  bool Start(const std::vector<std::string>& argv, const std::string& log_path,
             const std::vector<std::string>& env = {},
             const TestUser* run_as = nullptr);
  pid_t pid() const { return pid_; }
  bool Running();
  bool Signal(int sig);
  // Waits up to timeout for exit; returns the raw wait status or -1.
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // SIGTERM, wait, then SIGKILL.
  void Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

// redis-server on 127.0.0.1:<free port> and a unix socket in its temp
// dir, no persistence. extra_args go to redis-server after ours
// ("--rename-command", "BLMOVE", "" plays an older Redis).
class RedisServer {
 public:
  explicit RedisServer(std::vector<std::string> extra_args = {});
  ~RedisServer();
  // Starts (or restarts on the same port). Aborts the test on failure.
  void Start();
  void Stop();
  int port() const { return port_; }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  // It also listens on this unix socket (mode 700).
  std::string unix_socket() const { return dir_.Sub("redis.sock"); }
  // Runs one command through redis-cli, returns its raw output (trimmed).
  std::string Cli(const std::vector<std::string>& args);
  bool Ping();

 private:
  TempDir dir_;
  int port_;
  std::vector<std::string> extra_args_;
  Process proc_;
};

// Path of the djinn-consumer binary under test ($DJINN_CONSUMER or
// ./djinn-consumer).
std::string ConsumerBinary();

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_HARNESS_H_
