#include "tests/harness/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/unique_fd.h"
#include "tests/harness/harness.h"

namespace djinn::testing {

namespace {

namespace fs = std::filesystem;

constexpr char kPrefix[] = "djt-";

// Namespaces "djt-<pid>-..." whose process is gone: a test process that
// crashed before its destructors ran. Their processes died with it
// (PR_SET_PDEATHSIG), only the name is left.
void DeleteStale() {
  std::vector<std::string> stale;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/run/netns", ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(kPrefix, 0) != 0) continue;
    pid_t pid = static_cast<pid_t>(std::atoi(name.c_str() + sizeof kPrefix - 1));
    if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) stale.push_back(name);
  }
  for (const std::string& name : stale) Run({"ip", "netns", "del", name});
}

}  // namespace

std::string NetnsUnsupportedReason() {
  if (geteuid() != 0) return "network namespaces need root";
  std::string out;
  if (Run({"ip", "-V"}, &out) != 0) return "no usable `ip` (iproute2): " + out;
  return "";
}

NetNamespace::NetNamespace(const std::string& label) {
  static std::atomic<int> counter{0};
  name_ = kPrefix + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" + label;
}

NetNamespace::~NetNamespace() {
  if (!created_) return;
  if (!KillAll()) fprintf(stderr, "netns %s: processes left running\n", name_.c_str());
  std::string out;
  if (Run({"ip", "netns", "del", name_}, &out) != 0)
    fprintf(stderr, "ip netns del %s: %s\n", name_.c_str(), out.c_str());
}

::testing::AssertionResult NetNamespace::Create() {
  DeleteStale();
  std::string out;
  if (Run({"ip", "netns", "add", name_}, &out) != 0)
    return ::testing::AssertionFailure() << "ip netns add " << name_ << ": " << out;
  created_ = true;
  return Ip({"link", "set", "lo", "up"});
}

::testing::AssertionResult NetNamespace::Ip(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"ip", "-n", name_};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  if (Run(argv, &out) == 0) return ::testing::AssertionSuccess();
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  return ::testing::AssertionFailure() << cmd << ": " << out;
}

std::vector<pid_t> NetNamespace::Pids() const {
  std::vector<pid_t> out;
  struct stat want;
  if (!created_ || stat(path().c_str(), &want) != 0) return out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    std::string name = e.path().filename().string();
    char* end;
    long pid = strtol(name.c_str(), &end, 10);
    if (*end || pid <= 0) continue;
    // A zombie has left its namespaces: the link no longer resolves.
    struct stat st;
    std::string link = "/proc/" + name + "/ns/net";
    if (stat(link.c_str(), &st) == 0 && st.st_ino == want.st_ino && st.st_dev == want.st_dev)
      out.push_back(static_cast<pid_t>(pid));
  }
  return out;
}

bool NetNamespace::KillAll(std::chrono::milliseconds timeout) const {
  return WaitFor(
      [&] {
        std::vector<pid_t> pids = Pids();
        for (pid_t p : pids) kill(p, SIGKILL);
        return pids.empty();
      },
      timeout, std::chrono::milliseconds(5));
}

ScopedNetns::ScopedNetns(const NetNamespace& ns)
    : saved_(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
  UniqueFd fd(open(ns.path().c_str(), O_RDONLY | O_CLOEXEC));
  if (!saved_ || !fd || setns(fd.get(), CLONE_NEWNET) != 0) {
    error_ = "cannot enter network namespace " + ns.name() + ": " + strerror(errno);
    saved_.Reset();
  }
}

ScopedNetns::~ScopedNetns() {
  if (saved_ && setns(saved_.get(), CLONE_NEWNET) != 0) {
    // Staying in a namespace about to be deleted would cut every later
    // test off its servers.
    perror("ScopedNetns: cannot return to the previous network namespace");
    std::abort();
  }
}

StarNetwork::StarNetwork(int hosts, const std::string& prefix)
    : prefix_(prefix), services_(std::make_unique<NetNamespace>("svc")) {
  for (int i = 0; i < hosts; ++i)
    hosts_.push_back(std::make_unique<NetNamespace>("h" + std::to_string(i)));
}

::testing::AssertionResult StarNetwork::Create() {
  NetNamespace& s = *services_;
  if (auto r = s.Create(); !r) return r;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"link", "add", "br0", "type", "bridge"},
        {"addr", "add", services_addr() + "/24", "dev", "br0"},
        {"link", "set", "br0", "up"}}) {
    if (auto r = s.Ip(args); !r) return r;
  }
  for (int i = 0; i < hosts(); ++i) {
    NetNamespace& h = *hosts_[i];
    std::string port = "vh" + std::to_string(i);
    if (auto r = h.Create(); !r) return r;
    // Both ends are made inside the namespaces: the test's own never sees them.
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"link", "add", port, "type", "veth", "peer", "name", "eth0",
                                   "netns", h.name()},
          {"link", "set", port, "master", "br0"},
          {"link", "set", port, "up"}}) {
      if (auto r = s.Ip(args); !r) return r;
    }
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"addr", "add", host_addr(i) + "/24", "dev", "eth0"},
          {"link", "set", "eth0", "up"}}) {
      if (auto r = h.Ip(args); !r) return r;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace djinn::testing
