#include "common/log.h"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <vector>

#include "common/unique_fd.h"

namespace djinn {
namespace {

// Per-process state. Workers inherit it through fork and then call Init or
// SetRole; nothing here is shared between processes after that.
struct LogState {
  LogLevel level = LogLevel::kInfo;
  std::string file;
  std::string role = "master";
  UniqueFd fd;  // invalid: stderr
  std::vector<std::string> secrets;
};

LogState& State() {
  static LogState* s = new LogState();  // never destroyed: usable at exit
  return *s;
}

Status OpenLogFile(const std::string& file, UniqueFd* out) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return Status::FromErrno("log file " + file, errno);
  out->Reset(fd);
  return Status::Ok();
}

void ReplaceAll(std::string* s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t pos = 0; (pos = s->find(from, pos)) != std::string::npos;
       pos += to.size())
    s->replace(pos, from.size(), to);
}

}  // namespace

bool ParseLogLevel(const std::string& s, LogLevel* out) {
  if (s == "debug") *out = LogLevel::kDebug;
  else if (s == "info") *out = LogLevel::kInfo;
  else if (s == "warn" || s == "warning") *out = LogLevel::kWarn;
  else if (s == "error") *out = LogLevel::kError;
  else return false;
  return true;
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "?";
}

Status Log::Init(LogLevel level, const std::string& file, const std::string& role) {
  LogState& s = State();
  s.level = level;
  s.role = role;
  s.file = file;
  s.fd.Reset();
  if (file.empty()) return Status::Ok();
  Status st = OpenLogFile(file, &s.fd);
  if (!st.ok()) s.file.clear();
  return st;
}

void Log::SetRole(const std::string& role) { State().role = role; }
void Log::SetLevel(LogLevel level) { State().level = level; }
int Log::Fd() { return State().fd.get(); }
const std::string& Log::File() { return State().file; }
bool Log::Enabled(LogLevel level) { return level >= State().level; }

Status Log::Reopen() {
  LogState& s = State();
  if (s.file.empty()) return Status::Ok();
  UniqueFd fd;
  Status st = OpenLogFile(s.file, &fd);
  if (!st.ok()) return st;  // keep writing to the old file
  s.fd = std::move(fd);
  return Status::Ok();
}

void Log::AddSecret(const std::string& secret) {
  // Very short secrets would mangle ordinary words; they are still kept out
  // of URLs by the userinfo scrubbing below.
  if (secret.size() >= 4) State().secrets.push_back(secret);
}

void Log::ClearSecrets() { State().secrets.clear(); }

std::string Log::Scrub(const std::string& msg) {
  std::string out = msg;
  for (const auto& secret : State().secrets) ReplaceAll(&out, secret, "****");
  // scheme://user:password@host -> scheme://user:****@host
  for (size_t pos = 0; (pos = out.find("://", pos)) != std::string::npos;) {
    size_t start = pos + 3;
    size_t end = out.find_first_of("/?# \t\"'", start);
    if (end == std::string::npos) end = out.size();
    size_t at = out.rfind('@', end);
    if (at != std::string::npos && at >= start) {
      size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at &&
          out.compare(colon + 1, at - colon - 1, "****") != 0) {
        out.replace(colon + 1, at - colon - 1, "****");
        end = out.find('@', start);
      }
    }
    pos = end;
  }
  // A log line is one line: newlines in messages (server answers) folded.
  for (char& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

std::string Log::Format(LogLevel level, const std::string& msg) {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof ts - n, ".%03dZ", static_cast<int>(tv.tv_usec / 1000));
  char head[96];
  snprintf(head, sizeof head, "%s %-5s [%d] ", ts, LogLevelName(level),
           static_cast<int>(getpid()));
  return head + State().role + ": " + Scrub(msg) + "\n";
}

void Log::Write(LogLevel level, const char* fmt, ...) {
  if (!Enabled(level)) return;
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::string msg(buf, n < 0 ? 0 : std::min<size_t>(n, sizeof buf - 1));
  std::string line = Format(level, msg);
  int fd = State().fd.valid() ? State().fd.get() : STDERR_FILENO;
  // One write per line: O_APPEND keeps lines of several processes whole.
  ssize_t w;
  do {
    w = ::write(fd, line.data(), line.size());
  } while (w < 0 && errno == EINTR);
}

}  // namespace djinn
