#include "tests/harness/sshd.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <vector>

namespace djinn::testing {

namespace fs = std::filesystem;

namespace {

constexpr char kSshd[] = "/usr/sbin/sshd";
// Marks the system user as made by this harness: only such a user gets its
// password set, so a real "djinn" account on a developer's host is safe.
constexpr char kGecos[] = "djinn-consumer test user";
// sshd's ChrootDirectory wants every component of the path root-owned and
// not group/world-writable, which rules out /tmp.
constexpr char kBase[] = "/run/djinn-test";

bool UserIsOurs(const struct passwd* pw) {
  return pw->pw_gecos && std::strcmp(pw->pw_gecos, kGecos) == 0;
}

bool EnsureUser(std::string* why) {
  static std::string error = [] {
    struct passwd* pw = getpwnam(kSshUser);
    if (pw && !UserIsOurs(pw)) {
      return std::string("user ") + kSshUser + " exists and was not made by the test harness";
    }
    std::string out;
    if (!pw && Run({"useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell",
                    "/usr/sbin/nologin", "--comment", kGecos, kSshUser},
                   &out) != 0) {
      return "useradd " + std::string(kSshUser) + " failed: " + out;
    }
    std::string line = std::string(kSshUser) + ":" + kSshPassword;
    if (Run({"sh", "-c", "printf '%s\\n' \"$0\" | chpasswd", line}, &out) != 0) {
      return "chpasswd failed: " + out;
    }
    return std::string();
  }();
  if (why) *why = error;
  return error.empty();
}

// Every process below pid (sshd's per-connection and privsep children).
std::set<pid_t> Descendants(pid_t pid) {
  std::map<pid_t, std::vector<pid_t>> children;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    std::string name = e.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::string stat = ReadFile(e.path().string() + "/stat");
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream in(stat.substr(paren + 2));
    char state;
    pid_t ppid;
    if (in >> state >> ppid) children[ppid].push_back(std::atoi(name.c_str()));
  }
  std::set<pid_t> out;
  std::vector<pid_t> todo = {pid};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    for (pid_t c : children[p]) {
      if (out.insert(c).second) todo.push_back(c);
    }
  }
  return out;
}

}  // namespace

SshServer::SshServer() {
  mkdir(kBase, 0755);
  std::string tmpl = std::string(kBase) + "/sshd.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data())) {
    base_ = buf.data();
    chmod(base_.c_str(), 0755);
    root_ = base_ + "/root";
    mkdir(root_.c_str(), 0755);
    mkdir((root_ + "/images").c_str(), 0755);
  }
}

SshServer::~SshServer() {
  Stop();
  std::error_code ec;
  if (!base_.empty()) fs::remove_all(base_, ec);
}

bool SshServer::Available(std::string* why) {
  std::string reason;
  if (geteuid() != 0) {
    reason = "sshd tests need root (chroot, useradd)";
  } else if (access(kSshd, X_OK) != 0) {
    reason = std::string(kSshd) + " is missing (Debian package openssh-server)";
  } else if (struct passwd* pw = getpwnam(kSshUser); pw && !UserIsOurs(pw)) {
    reason = std::string("user ") + kSshUser + " exists and was not made by the test harness";
  }
  if (why) *why = reason;
  return reason.empty();
}

::testing::AssertionResult SshServer::Start(int port) {
  Stop();
  std::string why;
  if (!Available(&why) || !EnsureUser(&why)) return ::testing::AssertionFailure() << why;
  if (base_.empty()) return ::testing::AssertionFailure() << "cannot make a dir under " << kBase;
  mkdir("/run/sshd", 0755);  // privilege separation dir
  std::string key = base_ + "/ssh_host_ed25519_key";
  std::string out;
  if (!FileExists(key) &&
      Run({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "djinn-test", "-f", key}, &out) !=
          0) {
    return ::testing::AssertionFailure() << "ssh-keygen failed: " << out;
  }
  // With port 0 a FreePort() can be taken by someone else before sshd binds
  // it: try a few.
  for (int attempt = 0; attempt < 3; ++attempt) {
    port_ = port != 0 ? port : FreePort();
    std::string config = base_ + "/sshd_config";
    std::ostringstream conf;
    conf << "# djinn test harness\n"
         << "Port " << port_ << "\n"
         << "ListenAddress 127.0.0.1\n"
         << "HostKey " << key << "\n"
         << "PidFile " << base_ << "/sshd.pid\n"
         << "LogLevel VERBOSE\n"
         << "UsePAM no\n"
         << "StrictModes no\n"
         << "PermitRootLogin no\n"
         << "PasswordAuthentication yes\n"
         << "PermitEmptyPasswords no\n"
         << "KbdInteractiveAuthentication no\n"
         << "PubkeyAuthentication no\n"
         << "AuthorizedKeysFile none\n"
         << "AllowUsers " << kSshUser << "\n"
         << "AllowTcpForwarding no\n"
         << "X11Forwarding no\n"
         << "PrintMotd no\n"
         << "UseDNS no\n"
         << "Subsystem sftp internal-sftp\n"
         << "Match User " << kSshUser << "\n"
         << "  ChrootDirectory " << root_ << "\n"
         << "  ForceCommand internal-sftp\n";
    WriteFile(config, conf.str(), 0600);
    size_t log_start = ReadFile(log_path()).size();
    if (!proc_.Start({kSshd, "-D", "-e", "-f", config}, log_path())) {
      return ::testing::AssertionFailure() << "cannot fork sshd";
    }
    auto log = [&] { return ReadFile(log_path()).substr(log_start); };
    std::string listening = "Server listening on 127.0.0.1 port " + std::to_string(port_);
    WaitFor([&] { return log().find(listening) != std::string::npos || !proc_.Running(); });
    if (proc_.Running() && log().find(listening) != std::string::npos) {
      return ::testing::AssertionSuccess();
    }
    proc_.Stop(std::chrono::milliseconds(0));
    std::string text = log();
    bool taken = text.find("Address already in use") != std::string::npos;
    if (taken && port == 0) continue;
    if (taken) {
      return ::testing::AssertionFailure() << "sshd: port " << port_ << " is taken: " << text;
    }
    return ::testing::AssertionFailure() << "sshd did not start: " << text;
  }
  return ::testing::AssertionFailure() << "sshd: no free port after 3 tries";
}

void SshServer::Stop() {
  if (proc_.pid() <= 0) return;
  // The session processes call setsid(), so the process-group kill in
  // Process::Stop misses them: collect them while sshd is still their parent.
  std::set<pid_t> sessions = Descendants(proc_.pid());
  proc_.Stop(std::chrono::seconds(2));
  for (pid_t p : sessions) kill(p, SIGKILL);
}

std::string SshServer::url(const std::string& path) const {
  std::string p = !path.empty() && path[0] == '/' ? path.substr(1) : path;
  return std::string("sftp://") + kSshUser + ":" + kSshPassword +
         "@127.0.0.1:" + std::to_string(port_) + "/" + p;
}

std::string SshServer::HostKeyLine() const {
  std::istringstream in(ReadFile(base_ + "/ssh_host_ed25519_key.pub"));
  std::string type, blob;
  in >> type >> blob;
  return "[127.0.0.1]:" + std::to_string(port_) + " " + type + " " + blob;
}

}  // namespace djinn::testing
