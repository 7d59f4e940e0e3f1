#include "master/notify.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <ctime>

#include "common/log.h"

namespace djinn {
namespace {

// STATUS= is one line; the manager shows it in `systemctl status`.
std::string OneLine(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

}  // namespace

Notifier::Notifier() {
  const char* socket = getenv("NOTIFY_SOCKET");
  enabled_ = socket && *socket;
  uint64_t usec = 0;
  // 0 (unset, or meant for another pid: WATCHDOG_PID) or < 0 (malformed):
  // no pings.
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_usec_ = usec;
}

void Notifier::Send(const std::string& state) {
  if (!enabled_) return;
  int r = sd_notify(0, state.c_str());
  if (r < 0 && !warned_) {
    warned_ = true;
    LOG_WARN("sd_notify to %s: %s (further failures not logged)", getenv("NOTIFY_SOCKET"),
             strerror(-r));
  }
}

void Notifier::Ready(const std::string& status) {
  last_status_ = OneLine(status);
  Send("READY=1\nSTATUS=" + last_status_);
}

void Notifier::Reloading() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t usec = static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
  last_status_ = "reloading";
  Send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\nSTATUS=" + last_status_);
}

void Notifier::Stopping(const std::string& status) {
  last_status_ = OneLine(status);
  Send("STOPPING=1\nSTATUS=" + last_status_);
}

void Notifier::Status(const std::string& status) {
  std::string line = OneLine(status);
  if (line == last_status_) return;
  last_status_ = line;
  Send("STATUS=" + line);
}

void Notifier::Watchdog(int64_t now_ms) {
  if (!enabled_ || watchdog_usec_ == 0) return;
  if (last_ping_ms_ != 0 && now_ms - last_ping_ms_ < static_cast<int64_t>(watchdog_usec_ / 2000)) return;
  last_ping_ms_ = now_ms;
  Send("WATCHDOG=1");
}

void Notifier::ForgetInChild() {
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
}

}  // namespace djinn
