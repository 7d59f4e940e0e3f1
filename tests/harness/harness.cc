#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <openssl/sha.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

namespace djinn::testing {

namespace fs = std::filesystem;

TempDir::TempDir(const std::string& prefix, const std::string& parent) {
  const char* tmp = std::getenv("TMPDIR");
  std::string base = !parent.empty() ? parent : tmp && *tmp ? tmp : "/tmp";
  std::string tmpl = base + "/" + prefix + ".XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) {
    perror("mkdtemp");
    std::abort();
  }
  path_ = buf.data();
  chmod(path_.c_str(), 0755);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    perror("FreePort");
    std::abort();
  }
  close(fd);
  return ntohs(a.sin_port);
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds every) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(every);
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& content, int mode) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  chmod(path.c_str(), mode);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string Sha256Hex(const std::string& bytes) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), md);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : md) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

size_t CountOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = 0; (at = text.find(what, at)) != std::string::npos; at += what.size()) n++;
  return n;
}

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int RunQemuImg(const std::vector<std::string>& argv, std::string* output) {
  std::string out;
  int rc = -1;
  for (int tries = 0; tries < 5; ++tries) {
    out.clear();
    rc = RunCommand(argv, &out);
    if (rc == 0 || out.find("Unable to get accurate CPU usage") == std::string::npos) break;
  }
  if (output) *output = out;
  return rc;
}

int RunCommand(const std::vector<std::string>& argv, std::string* output) {
  TempDir dir("djinn-run");
  std::string log = dir.Sub("out");
  Process p;
  if (!p.Start(argv, log)) return -1;
  int st = p.Wait(std::chrono::minutes(5));
  if (output) *output = ReadFile(log);
  if (st < 0 || !WIFEXITED(st)) return -1;
  return WEXITSTATUS(st);
}

const TestUser& UnprivilegedUser() {
  static TestUser user = [] {
    const char* name = "djinn-test";
    // Not root: we cannot switch users; everything runs as ourselves.
    if (geteuid() != 0) return TestUser{getuid(), getgid(), ""};
    if (!getpwnam(name)) {
      Run({"useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name});
    }
    struct passwd* pw = getpwnam(name);
    if (!pw) {
      // Not root and no such user: run as ourselves.
      return TestUser{getuid(), getgid(), ""};
    }
    return TestUser{pw->pw_uid, pw->pw_gid, name};
  }();
  return user;
}

Process::~Process() { Stop(std::chrono::milliseconds(0)); }

Process::Process(Process&& o) noexcept : pid_(o.pid_), status_(o.status_) { o.pid_ = -1; }

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    Stop(std::chrono::milliseconds(0));
    pid_ = o.pid_;
    status_ = o.status_;
    o.pid_ = -1;
  }
  return *this;
}

bool Process::Start(const std::vector<std::string>& argv, const std::string& log_path,
                    const std::vector<std::string>& env, const TestUser* run_as) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    setpgid(0, 0);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      if (fd > 2) close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    if (run_as && run_as->uid != getuid()) {
      if (setgroups(0, nullptr) != 0 || setgid(run_as->gid) != 0 ||
          setuid(run_as->uid) != 0) {
        perror("run_as");
        _exit(126);
      }
    }
    // A test process that dies (a crash, an ASan abort) takes its servers
    // with it. Set last: a change of credentials clears it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execvp(args[0], args.data());
    fprintf(stderr, "exec %s: %s\n", args[0], strerror(errno));
    _exit(127);
  }
  pid_ = pid;
  status_ = -1;
  return true;
}

bool Process::Running() {
  if (pid_ <= 0) return false;
  int st;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = st;
    pid_ = -1;
    return false;
  }
  return r == 0;
}

bool Process::Signal(int sig) { return pid_ > 0 && kill(pid_, sig) == 0; }

int Process::Wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return status_;
  WaitFor([&] { return !Running(); }, timeout, std::chrono::milliseconds(5));
  return pid_ > 0 ? -1 : status_;
}

void Process::Stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return;
  if (grace.count() > 0) {
    Signal(SIGTERM);
    if (Wait(grace) != -1) return;
  }
  kill(-pid_, SIGKILL);  // its process group: servers and their children
  Signal(SIGKILL);
  int st;
  if (waitpid(pid_, &st, 0) == pid_) status_ = st;
  pid_ = -1;
}

RedisServer::RedisServer(std::vector<std::string> extra_args)
    : dir_("djinn-redis"), port_(FreePort()), extra_args_(std::move(extra_args)) {}

RedisServer::~RedisServer() { Stop(); }

void RedisServer::Start() {
  std::vector<std::string> argv = {"redis-server", "--port", std::to_string(port_), "--bind",
                                   "127.0.0.1", "--unixsocket", unix_socket(), "--unixsocketperm",
                                   "700", "--dir", dir_.path(), "--save", "",
                                   "--appendonly", "no", "--daemonize", "no"};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  ASSERT_TRUE(proc_.Start(argv, dir_.Sub("redis.log")))
      << "cannot start redis-server";
  ASSERT_TRUE(WaitFor([&] { return Ping(); })) << "redis-server did not answer on port "
                                              << port_ << ": " << ReadFile(dir_.Sub("redis.log"));
}

void RedisServer::Stop() { proc_.Stop(std::chrono::seconds(5)); }

std::string RedisServer::Cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"redis-cli", "-h", "127.0.0.1", "-p", std::to_string(port_)};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  Run(argv, &out);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

bool RedisServer::Ping() { return Cli({"PING"}) == "PONG"; }

std::string ConsumerBinary() {
  const char* b = std::getenv("DJINN_CONSUMER");
  if (b && *b) return b;
  return fs::absolute("djinn-consumer").string();
}

}  // namespace djinn::testing
