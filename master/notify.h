// systemd service notifications from the master (sd_notify(3)): READY=1
// once the workers run, RELOADING=1 and READY=1 around a reload,
// STOPPING=1, WATCHDOG=1 pings and STATUS= lines. Type=notify in
// dist/systemd/djinn-consumer.service.
//
// Without NOTIFY_SOCKET in the environment (started by hand, by SysVinit,
// or by a unit that is not Type=notify) every call does nothing.
//
// Only the master notifies. The variables (NOTIFY_SOCKET, WATCHDOG_USEC,
// WATCHDOG_PID) stay in the master's environment, where sd_notify reads
// them on every call; a worker calls ForgetInChild() first thing after
// fork(), so neither it nor the download processes it forks can send.
//
// Not thread-safe, not async-signal-safe: the supervisor's loop only.
#ifndef DJINN_MASTER_NOTIFY_H_
#define DJINN_MASTER_NOTIFY_H_

#include <cstdint>
#include <string>

namespace djinn {

class Notifier {
 public:
  // Reads the environment once: is there a notify socket, and does the
  // service manager expect watchdog pings (sd_watchdog_enabled(3):
  // WATCHDOG_USEC set, WATCHDOG_PID unset or ours)?
  Notifier();

  bool enabled() const { return enabled_; }
  // The watchdog interval in microseconds, 0 when off.
  uint64_t watchdog_usec() const { return watchdog_usec_; }

  // READY=1 with a STATUS= line.
  void Ready(const std::string& status);
  // RELOADING=1 with MONOTONIC_USEC= (what sd_notify(3) asks for).
  void Reloading();
  // STOPPING=1 with a STATUS= line.
  void Stopping(const std::string& status);
  // STATUS= alone, sent only when it differs from the last one sent.
  void Status(const std::string& status);
  // WATCHDOG=1 when half the watchdog interval passed since the last ping.
  // The supervisor calls it once per turn of its loop, so pings stop when
  // the loop stops turning.
  void Watchdog(int64_t now_ms);

  // In a freshly forked worker: removes the variables from its environment.
  static void ForgetInChild();

 private:
  void Send(const std::string& state);

  bool enabled_ = false;
  uint64_t watchdog_usec_ = 0;
  int64_t last_ping_ms_ = 0;
  std::string last_status_;
  bool warned_ = false;  // a failed send is logged once, not every tick
};

}  // namespace djinn

#endif  // DJINN_MASTER_NOTIFY_H_
