#include "tests/harness/http_server.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "tests/harness/qcow2_image.h"

namespace djinn::testing {

namespace fs = std::filesystem;

namespace {

std::string Python() {
  // Debian's own interpreter first: a pyenv shim on PATH costs ~100 ms.
  return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

}  // namespace

HttpServer::HttpServer() : dir_("djinn-httpd") {}

HttpServer::~HttpServer() { Stop(); }

std::string HttpServer::ScriptPath() {
  const char* env = std::getenv("DJINN_HTTPD_PY");
  if (env && *env) return env;
  std::error_code ec;
  std::vector<fs::path> candidates = {fs::path(__FILE__).parent_path() / "httpd.py",
                                      fs::path("tests/harness/httpd.py")};
  // Walk up from the test binary too (out-of-tree builds run from anywhere).
  for (fs::path p = fs::read_symlink("/proc/self/exe", ec).parent_path();
       !ec && p.has_relative_path(); p = p.parent_path()) {
    candidates.push_back(p / "tests/harness/httpd.py");
  }
  for (const auto& c : candidates) {
    if (fs::is_regular_file(c, ec)) return fs::absolute(c, ec).string();
  }
  return "tests/harness/httpd.py";
}

::testing::AssertionResult HttpServer::Start(const std::string& dir, const TestCerts* tls,
                                             int port) {
  Stop();
  std::string ready = dir_.Sub("ready");
  std::string log = dir_.Sub("httpd.log");
  std::remove(ready.c_str());
  std::vector<std::string> argv = {Python(),       ScriptPath(),
                                   "--dir",        dir,
                                   "--port",       std::to_string(port),
                                   "--log",        dir_.Sub("requests.log"),
                                   "--ready-file", ready,
                                   "--bind",       host_};
  tls_ = tls != nullptr;
  if (tls) {
    argv.insert(argv.end(), {"--cert", tls->server_cert, "--key", tls->server_key});
  }
  if (!proc_.Start(argv, log)) return ::testing::AssertionFailure() << "cannot fork httpd.py";
  bool up = WaitFor([&] { return FileExists(ready) || !proc_.Running(); });
  if (!up || !FileExists(ready)) {
    int st = proc_.Wait(std::chrono::seconds(2));
    proc_.Stop(std::chrono::milliseconds(0));
    std::string out = ReadFile(log);
    if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 3) {
      return ::testing::AssertionFailure()
             << "HTTP test server: port " << port << " is taken: " << out;
    }
    return ::testing::AssertionFailure()
           << "HTTP test server (" << ScriptPath() << ") did not start: " << out;
  }
  port_ = std::atoi(ReadFile(ready).c_str());
  return ::testing::AssertionSuccess();
}

void HttpServer::Stop() { proc_.Stop(std::chrono::milliseconds(0)); }

std::string HttpServer::url(const std::string& path) const {
  std::string p = !path.empty() && path[0] == '/' ? path.substr(1) : path;
  return std::string(tls_ ? "https" : "http") + "://" + host_ + ":" + std::to_string(port_) + "/" +
         p;
}

std::vector<HttpServer::Request> HttpServer::Requests() const {
  std::vector<Request> out;
  std::istringstream in(ReadFile(dir_.Sub("requests.log")));
  std::string line;
  while (std::getline(in, line)) {
    size_t a = line.find('\t');
    size_t b = line.rfind('\t');
    if (a == std::string::npos || b == a) continue;  // a line being written
    out.push_back(
        {line.substr(0, a), line.substr(a + 1, b - a - 1), std::atoi(line.c_str() + b + 1)});
  }
  return out;
}

int HttpServer::Hits(const std::string& path) const {
  bool with_query = path.find('?') != std::string::npos;
  int n = 0;
  for (const auto& r : Requests()) {
    std::string p = with_query ? r.path : r.path.substr(0, r.path.find('?'));
    if (p == path) ++n;
  }
  return n;
}

std::vector<HttpServer::BodySent> HttpServer::BodiesSent(const std::string& path) const {
  bool with_query = path.find('?') != std::string::npos;
  std::vector<BodySent> out;
  std::istringstream in(ReadFile(dir_.Sub("sent.log")));
  std::string line;
  while (std::getline(in, line)) {
    size_t a = line.find('\t');
    size_t b = a == std::string::npos ? a : line.find('\t', a + 1);
    size_t c = b == std::string::npos ? b : line.find('\t', b + 1);
    if (c == std::string::npos) continue;  // a line being written
    BodySent s{line.substr(0, a), line.substr(a + 1, b - a - 1),
               std::atoi(line.substr(b + 1, c - b - 1).c_str()),
               std::strtoull(line.c_str() + c + 1, nullptr, 10)};
    std::string p = with_query ? s.path : s.path.substr(0, s.path.find('?'));
    if (path.empty() || p == path) out.push_back(std::move(s));
  }
  return out;
}

std::vector<HttpServer::HookRequest> HttpServer::HookRequests(const std::string& key) const {
  // httpd.py writes hooks/<key>/<n>.request (n zero-padded, so the names
  // sort in arrival order), each renamed into place when complete.
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_.Sub("hooks/" + key), ec)) {
    std::string name = e.path().filename().string();
    if (name.size() > 8 && name.substr(name.size() - 8) == ".request") names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  std::vector<HookRequest> out;
  for (const std::string& name : names) {
    std::string raw = ReadFile(dir_.Sub("hooks/" + key + "/" + name));
    HookRequest r;
    size_t line_end = raw.find("\r\n");
    size_t head_end = raw.find("\r\n\r\n");
    if (line_end == std::string::npos || head_end == std::string::npos) continue;
    r.request_line = raw.substr(0, line_end);
    r.header_block = line_end == head_end ? "" : raw.substr(line_end + 2, head_end - line_end);
    r.body = raw.substr(head_end + 4);
    out.push_back(std::move(r));
  }
  return out;
}

std::string HttpServer::BigBody(size_t n) {
  // Keep in step with big_block() in httpd.py.
  constexpr size_t kBlock = 1 << 20;
  const std::string header = Qcow2Header();
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    size_t j = i % kBlock;
    out[i] = j < header.size() ? header[j] : static_cast<char>((j * 31 + 7) & 0xff);
  }
  return out;
}

}  // namespace djinn::testing
