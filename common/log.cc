#include "common/log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"

namespace djinn {
namespace {

// The longest message a log line carries (after scrubbing); longer ones
// are cut.
constexpr size_t kMaxMessage = 2047;
// The longest job id a JSON line carries (ids come from the queue).
constexpr size_t kMaxJobId = 128;

// Per-process state. Workers inherit it through fork and then call Init or
// SetRole; nothing here is shared between processes after that.
struct LogState {
  LogLevel level = LogLevel::kInfo;
  LogFormat format = LogFormat::kText;
  std::string job_id;  // the job being run ("" = none), for JSON lines
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
  auto fd = OpenOwnFile("log.file", file, O_WRONLY | O_APPEND, 0640);
  if (!fd.ok()) return fd.status();
  *out = std::move(*fd);
  return Status::Ok();
}

const char* FileTypeName(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "an unknown kind of file";
}

void ReplaceAll(std::string* s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t pos = 0; (pos = s->find(from, pos)) != std::string::npos;
       pos += to.size())
    s->replace(pos, from.size(), to);
}

// Appends s as the inside of a JSON string: `"` `\\` and controls escaped,
// UTF-8 kept, every byte that does not start a well-formed UTF-8 sequence
// (RFC 3629: no overlongs, surrogates or code points past U+10FFFF)
// replaced by U+FFFD, so the line is valid JSON whatever the message holds.
void AppendJsonString(std::string* out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': *out += "\\\""; break;
        case '\\': *out += "\\\\"; break;
        case '\n': *out += "\\n"; break;
        case '\r': *out += "\\r"; break;
        case '\t': *out += "\\t"; break;
        default:
          if (c < 0x20) {
            *out += "\\u00";
            *out += kHex[c >> 4];
            *out += kHex[c & 15];
          } else {
            *out += static_cast<char>(c);
          }
      }
      i++;
      continue;
    }
    // Length and the allowed range of the second byte, by the lead byte.
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c == 0xED) len = 3, hi = 0x9F;  // no UTF-16 surrogates
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c == 0xF4) len = 4, hi = 0x8F;  // nothing past U+10FFFF
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; k++) {
      unsigned char b = static_cast<unsigned char>(s[i + k]);
      ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    }
    if (!ok) {
      *out += "\xEF\xBF\xBD";  // U+FFFD for this byte; go on with the next
      i++;
      continue;
    }
    out->append(s.data() + i, len);
    i += len;
  }
}

// Cuts s to at most max bytes without splitting a UTF-8 sequence (a cut
// one would only become U+FFFD).
void CutAtCharBoundary(std::string* s, size_t max) {
  if (s->size() <= max) return;
  size_t cut = max;
  for (int back = 0; back < 3 && cut > 0 && (static_cast<unsigned char>((*s)[cut]) & 0xC0) == 0x80;
       back++)
    cut--;
  if ((static_cast<unsigned char>((*s)[cut]) & 0xC0) == 0x80) cut = max;  // not UTF-8 anyway
  s->resize(cut);
}

// One JSON object per line; `body` is scrubbed already. The job id comes
// from the queue: scrubbed too, and cut, so the line stays bounded.
std::string FormatJson(const char* ts, LogLevel level, std::string body) {
  const LogState& s = State();
  CutAtCharBoundary(&body, kMaxMessage);
  std::string line = "{\"time\":\"";
  line += ts;
  line += "\",\"level\":\"";
  line += LogLevelName(level);
  line += "\",\"pid\":" + std::to_string(static_cast<int>(getpid())) + ",\"role\":\"";
  AppendJsonString(&line, s.role);
  line += "\"";
  if (!s.job_id.empty()) {
    std::string id = Log::Scrub(s.job_id);
    CutAtCharBoundary(&id, kMaxJobId);
    line += ",\"job_id\":\"";
    AppendJsonString(&line, id);
    line += "\"";
  }
  line += ",\"message\":\"";
  AppendJsonString(&line, body);
  line += "\"}\n";
  return line;
}

}  // namespace

// The master runs as root and writes these files, then gives the log to the
// workers' user (fchown): a link planted in their place by someone who can
// write the directory would have root create, append to and chown any file.
// O_NOFOLLOW applies whoever we run as (simplest, and a link there is a
// mistake in any case); the hard-link check only as root, since otherwise
// the kernel's permission check already stands between us and others' files.
Result<UniqueFd> OpenOwnFile(const std::string& what, const std::string& path, int flags,
                             mode_t mode) {
  const std::string name = what + " " + path;
  const bool root = geteuid() == 0;
  const std::string as_root = root ? " (running as root)" : "";
  // O_NONBLOCK: a FIFO in the file's place fails (ENXIO, no reader) or opens
  // at once, instead of blocking the master; O_NOCTTY: a terminal there
  // never becomes ours.
  int fd =
      ::open(path.c_str(), flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode);
  if (fd < 0) {
    int err = errno;
    // Say what is in the way rather than ELOOP's "Too many levels of
    // symbolic links" or ENXIO's "No such device or address".
    struct stat ls;
    if (::lstat(path.c_str(), &ls) == 0) {
      if (S_ISLNK(ls.st_mode) && err == ELOOP)
        return Status::Permanent(name + ": is a symbolic link; refusing to follow it" + as_root);
      if (!S_ISREG(ls.st_mode) && !S_ISLNK(ls.st_mode))
        return Status::Permanent(name + ": is " + FileTypeName(ls.st_mode) +
                                 ", not a regular file; refusing to write to it");
    }
    return Status::FromErrno(name, err);
  }
  UniqueFd out(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(name + ": fstat", errno);
  if (!S_ISREG(st.st_mode))
    return Status::Permanent(name + ": is " + FileTypeName(st.st_mode) +
                             ", not a regular file; refusing to write to it");
  if (root && st.st_nlink > 1)
    return Status::Permanent(name + ": has " + std::to_string(st.st_nlink) +
                             " hard links; refusing to write to it" + as_root);
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
    return Status::FromErrno(name + ": fcntl", errno);
  return out;
}

std::string OwnFileDirectoryWarning(const std::string& what, const std::string& path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  // O_PATH: no read permission needed; fstat works on it.
  UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  struct stat st;
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0) return "";  // the file opened: nothing to add
  if ((st.st_mode & S_IWOTH) == 0 || (st.st_mode & S_ISVTX) != 0) return "";
  char mode[8];
  snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return what + " " + path + ": its directory " + dir + " is writable by every user (mode " + mode +
         ", no sticky bit), so anyone may replace the file; make it writable by root only";
}

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

bool ParseLogFormat(const std::string& s, LogFormat* out) {
  if (s == "text") *out = LogFormat::kText;
  else if (s == "json") *out = LogFormat::kJson;
  else return false;
  return true;
}

const char* LogFormatName(LogFormat format) {
  return format == LogFormat::kJson ? "json" : "text";
}

Status Log::Init(LogLevel level, const std::string& file, const std::string& role) {
  LogState& s = State();
  s.level = level;
  s.role = role;
  s.file = file;
  s.fd.Reset();
  if (file.empty()) return Status::Ok();
  Status st = OpenLogFile(file, &s.fd);
  if (!st.ok()) {
    s.file.clear();
    return st;
  }
  if (std::string w = OwnFileDirectoryWarning("log.file", file); !w.empty())
    LOG_WARN("%s", w.c_str());
  return st;
}

void Log::SetRole(const std::string& role) { State().role = role; }
void Log::SetLevel(LogLevel level) { State().level = level; }
void Log::SetFormat(LogFormat format) { State().format = format; }
void Log::SetJobId(const std::string& id) { State().job_id = id; }
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
  // Scrubbed first, then cut: a secret straddling the cut must not leave a
  // prefix behind.
  std::string body = Scrub(msg);
  if (State().format == LogFormat::kJson) return FormatJson(ts, level, body);
  if (body.size() > kMaxMessage) body.resize(kMaxMessage);
  return head + State().role + ": " + body + "\n";
}

void Log::Write(LogLevel level, const char* fmt, ...) {
  if (!Enabled(level)) return;
  char buf[kMaxMessage + 1];
  va_list ap, again;
  va_start(ap, fmt);
  va_copy(again, ap);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::string msg;
  if (n >= 0 && static_cast<size_t>(n) < sizeof buf) {
    msg.assign(buf, static_cast<size_t>(n));
  } else if (n > 0) {  // longer: format it whole, Format() cuts after scrubbing
    msg.resize(static_cast<size_t>(n) + 1);
    vsnprintf(msg.data(), msg.size(), fmt, again);
    msg.resize(static_cast<size_t>(n));
  }
  va_end(again);
  std::string line = Format(level, msg);
  int fd = State().fd.valid() ? State().fd.get() : STDERR_FILENO;
  // One write per line: O_APPEND keeps lines of several processes whole.
  ssize_t w;
  do {
    w = ::write(fd, line.data(), line.size());
  } while (w < 0 && errno == EINTR);
}

}  // namespace djinn
