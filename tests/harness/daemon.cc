#include "tests/harness/daemon.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

namespace djinn::testing {

std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (struct dirent* e = readdir(d)) {
    char* end;
    long p = strtol(e->d_name, &end, 10);
    if (*end || p <= 0) continue;
    std::string stat = ReadFile("/proc/" + std::string(e->d_name) + "/stat");
    // pid (comm) state ppid ...: comm may hold spaces, so parse after ')'.
    size_t rp = stat.rfind(')');
    if (rp == std::string::npos) continue;
    char state;
    int ppid;
    if (sscanf(stat.c_str() + rp + 1, " %c %d", &state, &ppid) == 2 && ppid == pid && state != 'Z')
      out.push_back(static_cast<pid_t>(p));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string ProcTitle(pid_t pid) {
  std::string s = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  while (!s.empty() && s.back() == '\0') s.pop_back();
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

Daemon::Daemon(DaemonOptions opts) : opts_(std::move(opts)), dir_("djinn-daemon") {
  mkdir(store().c_str(), 0755);
  WriteConfig(ConfigText());
}

Daemon::~Daemon() {
  if (proc_.Running()) {
    proc_.Signal(SIGQUIT);
    proc_.Wait(std::chrono::seconds(10));
  }
}

std::string Daemon::ConfigText() const {
  std::string c;
  c += "pidfile = \"" + pidfile() + "\";\n";
  c += "log = { level = \"debug\"; file = \"" + log_path() + "\"; };\n";
  c += "workers = " + std::to_string(opts_.workers) + ";\n";
  if (!opts_.user.empty()) c += "user = \"" + opts_.user + "\";\n";
  c += "queue = \"" + opts_.queue + "\";\n";
  c += "attempts = " + std::to_string(opts_.attempts) + ";\n";
  c += "job_timeout = " + std::to_string(opts_.job_timeout) + ";\n";
  c += "shutdown_timeout = " + std::to_string(opts_.shutdown_timeout) + ";\n";
  c += "database = { addr = \"" + opts_.database_addr +
       "\"; name = \"djinn\"; username = \"djinn_consumer\"; password = \"" +
       opts_.database_password + "\"; };\n";
  c += "redis = { addr = \"" + opts_.redis_addr + "\"; };\n";
  c += "store = { images = { type = \"file\"; path = \"" + store() + "\"; }; };\n";
  c += "download = { " + opts_.download + " };\n";
  c += opts_.extra;
  return c;
}

void Daemon::WriteConfig(const std::string& text) { WriteFile(config_path(), text); }

bool Daemon::Start() {
  std::vector<std::string> env;
  if (opts_.test_jobs) env.push_back("DJINN_CONSUMER_TEST_JOBS=1");
  // Leak checks run in the master at exit; workers leave through _exit
  // (LeakSanitizer would need ptrace, which their sandbox denies).
  env.push_back("ASAN_OPTIONS=detect_leaks=1");
  env.insert(env.end(), opts_.env.begin(), opts_.env.end());
  if (opts_.run_as) {
    // Started directly as that user, as Djinn's own units do: it needs its
    // pidfile, log and store directory.
    for (const std::string& p : {dir(), store(), log_path(), stdout_path()}) {
      if (FileExists(p) && chown(p.c_str(), opts_.run_as->uid, opts_.run_as->gid) != 0) return false;
    }
  }
  return proc_.Start({ConsumerBinary(), "-config", config_path()}, stdout_path(), env,
                     opts_.run_as);
}

std::vector<pid_t> Daemon::Workers() const {
  std::vector<pid_t> out;
  for (pid_t c : ChildrenOf(proc_.pid())) {
    std::string t = ProcTitle(c);
    if (t.find("worker") != std::string::npos &&
        (t.find(" idle") != std::string::npos || t.find(" busy") != std::string::npos))
      out.push_back(c);
  }
  return out;
}

bool Daemon::WaitForWorkers(int n, std::chrono::milliseconds timeout) {
  return WaitFor([&] { return static_cast<int>(Workers().size()) == n; }, timeout);
}

int Daemon::Stop(std::chrono::milliseconds timeout) {
  proc_.Signal(SIGTERM);
  return proc_.Wait(timeout);
}

std::string Daemon::Log() const { return ReadFile(log_path()) + ReadFile(stdout_path()); }

bool Daemon::WaitForLog(const std::string& text, std::chrono::milliseconds timeout) const {
  return WaitFor([&] { return Log().find(text) != std::string::npos; }, timeout,
                 std::chrono::milliseconds(20));
}

}  // namespace djinn::testing
