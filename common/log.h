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

#include <string>

#include "common/status.h"

namespace djinn {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// "debug", "info", "warn" (or "warning"), "error".
bool ParseLogLevel(const std::string& s, LogLevel* out);
const char* LogLevelName(LogLevel level);

class Log {
 public:
  // Opens file (empty = stderr). Returns the error if the file cannot be
  // opened; logging then goes to stderr.
  static Status Init(LogLevel level, const std::string& file,
                     const std::string& role);
  static void SetRole(const std::string& role);
  static void SetLevel(LogLevel level);
  // Reopen the log file (logrotate, SIGUSR1). No-op for stderr.
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
  // Formats a line without writing it (tests).
  static std::string Format(LogLevel level, const std::string& msg);
  // The scrubbing applied to every line.
  static std::string Scrub(const std::string& msg);
};

#define LOG_DEBUG(...) \
  do { if (::djinn::Log::Enabled(::djinn::LogLevel::kDebug)) ::djinn::Log::Write(::djinn::LogLevel::kDebug, __VA_ARGS__); } while (0)
#define LOG_INFO(...) ::djinn::Log::Write(::djinn::LogLevel::kInfo, __VA_ARGS__)
#define LOG_WARN(...) ::djinn::Log::Write(::djinn::LogLevel::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) ::djinn::Log::Write(::djinn::LogLevel::kError, __VA_ARGS__)

}  // namespace djinn

#endif  // DJINN_COMMON_LOG_H_
