#include "tests/harness/tinyproxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sstream>

namespace djinn::testing {

namespace {

constexpr char kTinyproxy[] = "/usr/bin/tinyproxy";

// Whether something accepts TCP connections on addr:port (IPv4).
bool Accepts(const std::string& addr, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = inet_pton(AF_INET, addr.c_str(), &a.sin_addr) == 1 &&
            connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

}  // namespace

Tinyproxy::Tinyproxy() : dir_("djinn-tinyproxy") {}

Tinyproxy::~Tinyproxy() { Stop(); }

bool Tinyproxy::Available(std::string* why) {
  if (access(kTinyproxy, X_OK) == 0) return true;
  if (why) *why = std::string(kTinyproxy) + " is not installed (tests/deps.sh installs tinyproxy)";
  return false;
}

::testing::AssertionResult Tinyproxy::Start(const Options& options) {
  Stop();
  options_ = options;
  port_ = FreePort();
  std::string c;
  c += "Port " + std::to_string(port_) + "\n";
  c += "Listen " + options.listen + "\n";
  c += "Timeout 60\n";
  c += "MaxClients 50\n";
  // Connect level: one line per request, which Requests() reads.
  c += "LogLevel Connect\n";
  if (!options.allow.empty()) c += "Allow " + options.allow + "\n";
  for (int p : options.connect_ports) c += "ConnectPort " + std::to_string(p) + "\n";
  if (!options.user.empty()) c += "BasicAuth " + options.user + " " + options.password + "\n";
  if (!options.reverse_to.empty()) {
    c += "ReversePath \"/\" \"" + options.reverse_to + "\"\n";
    c += "ReverseOnly Yes\n";
  }
  WriteFile(dir_.Sub("tinyproxy.conf"), c);
  // No LogFile: with -d it logs to stderr, into our log file. Run as
  // root it keeps its user (with a warning): it binds a high port only.
  if (!proc_.Start({kTinyproxy, "-d", "-c", dir_.Sub("tinyproxy.conf")}, dir_.Sub("log")))
    return ::testing::AssertionFailure() << "cannot start " << kTinyproxy;
  if (!WaitFor([&] { return Accepts(options.listen, port_) || !proc_.Running(); },
               std::chrono::seconds(10)) ||
      !proc_.Running()) {
    return ::testing::AssertionFailure() << "tinyproxy did not come up on " << options.listen
                                         << ":" << port_ << ": " << Log();
  }
  return ::testing::AssertionSuccess();
}

void Tinyproxy::Stop() { proc_.Stop(std::chrono::milliseconds(0)); }

std::string Tinyproxy::url() const {
  return "http://" + options_.listen + ":" + std::to_string(port_);
}

std::string Tinyproxy::Log() const { return ReadFile(dir_.Sub("log")); }

std::vector<std::string> Tinyproxy::Requests() const {
  // "CONNECT   Dec 06 17:32:55.931 [14206]: Request (file descriptor 4): GET ..."
  static const std::string kMark = "]: Request (file descriptor ";
  std::vector<std::string> out;
  std::istringstream in(Log());
  std::string line;
  while (std::getline(in, line)) {
    size_t at = line.find(kMark);
    if (at == std::string::npos) continue;
    size_t colon = line.find("): ", at + kMark.size());
    if (colon != std::string::npos) out.push_back(line.substr(colon + 3));
  }
  return out;
}

int Tinyproxy::Count(const std::string& prefix) const {
  int n = 0;
  for (const std::string& r : Requests())
    if (r.compare(0, prefix.size(), prefix) == 0) ++n;
  return n;
}

}  // namespace djinn::testing
