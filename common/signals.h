// The signals the master obeys: the one table (nginx's signals[] idea). The
// man page's SIGNALS section shows the same rows.
#ifndef DJINN_COMMON_SIGNALS_H_
#define DJINN_COMMON_SIGNALS_H_

#include <signal.h>

#include <string>

namespace djinn {

enum class MasterAction {
  kGracefulStop,  // TERM, INT: workers finish their job, then exit 0
  kFastStop,      // QUIT: workers killed now, jobs requeued, exit 0
  kReload,        // HUP: re-read config; new worker generation if valid
  kReopenLogs,    // USR1: reopen log files, master and workers
  kMoreWorkers,   // TTIN: one worker more
  kFewerWorkers,  // TTOU: one worker fewer
  kReap,          // CHLD: reap, respawn what died unasked
};

struct SignalRow {
  int signo;
  const char* name;
  MasterAction action;
  const char* effect;
};

inline constexpr SignalRow kMasterSignals[] = {
    {SIGTERM, "SIGTERM", MasterAction::kGracefulStop, "graceful stop"},
    {SIGINT, "SIGINT", MasterAction::kGracefulStop, "graceful stop"},
    {SIGQUIT, "SIGQUIT", MasterAction::kFastStop, "fast stop"},
    {SIGHUP, "SIGHUP", MasterAction::kReload, "reload configuration"},
    {SIGUSR1, "SIGUSR1", MasterAction::kReopenLogs, "reopen log files"},
    {SIGTTIN, "SIGTTIN", MasterAction::kMoreWorkers, "one worker more"},
    {SIGTTOU, "SIGTTOU", MasterAction::kFewerWorkers, "one worker fewer"},
    {SIGCHLD, "SIGCHLD", MasterAction::kReap, "reap workers"},
};

// "SIGKILL" for 9, "signal 64" for what has no name.
std::string SignalName(int signo);

}  // namespace djinn

#endif  // DJINN_COMMON_SIGNALS_H_
