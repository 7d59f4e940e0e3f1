// Logging: one line per event,
//   2026-11-29T23:59:01.123Z info  [1234] worker 2: message
// to a file (O_APPEND) or stderr. Per process: master and each worker call
// Log::Init() with their role. Every line is scrubbed of URL passwords
// (scheme://user:PASSWORD@host) and of registered secrets before writing,
// so a password never reaches a log even by mistake.
//
// Not async-signal-safe: never call from a signal handler.
#ifndef DJINN_COMMON_LOG_H_
#define DJINN_COMMON_LOG_H_

#include <sys/types.h>

#include <string>

#include "common/status.h"
#include "common/unique_fd.h"

namespace djinn {

enum class LogLevel { kDebug, kInfo, kWarn, kError };
// text: the line above; json: one JSON object per line,
//   {"time":"2026-11-29T23:59:01.123Z","level":"info","pid":1234,
//    "role":"worker 2","job_id":"8812","message":"..."}
// ("job_id" only while the process runs a job: LogJobScope).
enum class LogFormat { kText, kJson };

// "debug", "info", "warn" (or "warning"), "error".
bool ParseLogLevel(const std::string& s, LogLevel* out);
const char* LogLevelName(LogLevel level);
// "text", "json".
bool ParseLogFormat(const std::string& s, LogFormat* out);
const char* LogFormatName(LogFormat format);

// Opens one of the daemon's own files, which the master writes as root
// (the log, the pidfile), for writing: open(2) with `flags` | O_CREAT
// (`mode`) | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, then fstat(2) on the fd.
// `what` names the file in errors ("log.file", "pidfile"). Refuses, with
// one kPermanent line naming the path:
//   - a symbolic link as the last component, root or not:
//     "log.file /x.log: is a symbolic link; refusing to follow it (running
//     as root)" (the parenthesis only when euid is 0);
//   - anything but a regular file: "... is a FIFO, not a regular file;
//     refusing to write to it" (opened with O_NONBLOCK, so a FIFO put in
//     its place cannot block the open; cleared on the returned fd);
//   - when euid is 0, a file with more than one hard link: "... has 2 hard
//     links; refusing to write to it (running as root)" (a hard link to
//     /etc/shadow is the other way to make root write where it should not).
// Other failures: "<what> <path>: <strerror>". Only the last component is
// protected: the directories above must be writable by root only (the
// operator's job; OwnFileDirectoryWarning checks the nearest one).
Result<UniqueFd> OpenOwnFile(const std::string& what, const std::string& path, int flags,
                             mode_t mode);
// "" when path's directory is fine; else one line for a warning, when the
// directory is writable by every user without the sticky bit (anyone could
// replace the file between two opens, or before the first).
std::string OwnFileDirectoryWarning(const std::string& what, const std::string& path);

class Log {
 public:
  // Opens file (empty = stderr) with OpenOwnFile("log.file", ...): O_APPEND,
  // created with mode 0640; a directory writable by everyone is logged as a
  // warning. Returns the error if the file cannot be opened (or is refused);
  // logging then goes to stderr.
  static Status Init(LogLevel level, const std::string& file,
                     const std::string& role);
  static void SetRole(const std::string& role);
  static void SetLevel(LogLevel level);
  // Per process, like the level; a forked worker keeps its master's.
  static void SetFormat(LogFormat format);
  // The job this process is running ("" = none), the "job_id" of JSON
  // lines; text lines do not show it (their messages name the job). Scrubbed
  // like messages and cut to 128 bytes. Use LogJobScope.
  static void SetJobId(const std::string& id);
  // Reopen the log file (logrotate, SIGUSR1), with the same checks as
  // Init. No-op for stderr. On error the old file stays in use.
  static Status Reopen();
  // The log file's fd (or -1 for stderr), e.g. for the sandbox's allow-list.
  static int Fd();
  static const std::string& File();
  // Adds a literal secret (a password) that is replaced by "****" in lines.
  static void AddSecret(const std::string& secret);
  static void ClearSecrets();
  static bool Enabled(LogLevel level);
  static void Write(LogLevel level, const char* fmt, ...)
      __attribute__((format(printf, 2, 3)));
  // Formats a line without writing it (tests). In JSON every string is
  // escaped and bytes that are not UTF-8 become U+FFFD, so every line is
  // valid JSON whatever a message holds; scrubbing comes first, then the
  // cut to the longest message (at a character boundary), then escaping.
  static std::string Format(LogLevel level, const std::string& msg);
  // The scrubbing applied to every line.
  static std::string Scrub(const std::string& msg);
};

// Names a job in the lines logged while it is in scope (the worker holds
// one while it runs a job).
class LogJobScope {
 public:
  explicit LogJobScope(const std::string& job_id) { Log::SetJobId(job_id); }
  ~LogJobScope() { Log::SetJobId(""); }
  LogJobScope(const LogJobScope&) = delete;
  LogJobScope& operator=(const LogJobScope&) = delete;
};

#define LOG_DEBUG(...) \
  do { if (::djinn::Log::Enabled(::djinn::LogLevel::kDebug)) ::djinn::Log::Write(::djinn::LogLevel::kDebug, __VA_ARGS__); } while (0)
#define LOG_INFO(...) ::djinn::Log::Write(::djinn::LogLevel::kInfo, __VA_ARGS__)
#define LOG_WARN(...) ::djinn::Log::Write(::djinn::LogLevel::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) ::djinn::Log::Write(::djinn::LogLevel::kError, __VA_ARGS__)

}  // namespace djinn

#endif  // DJINN_COMMON_LOG_H_
