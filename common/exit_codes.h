// Exit codes of the master and the workers: the one table (the man page's
// EXIT STATUS section shows the same).
#ifndef DJINN_COMMON_EXIT_CODES_H_
#define DJINN_COMMON_EXIT_CODES_H_

namespace djinn {

enum ExitCode : int {
  kExitOk = 0,             // clean stop; -t: config valid
  kExitFailure = 1,        // bad config, pidfile held, cannot start
  kExitUsage = 2,          // unknown flag or missing argument
  // Worker exit codes, read by the master when it reaps:
  kExitWorkerSandbox = 3,  // could not apply its sandbox; slot throttled
  kExitWorkerInit = 4,     // could not set itself up (not the sandbox)
  kExitWorkerOrphan = 5,   // the master went away
};

// One-line description for a worker's exit code (master's reap log).
inline const char* WorkerExitCodeMeaning(int code) {
  switch (code) {
    case kExitOk: return "stopped";
    case kExitFailure: return "failed";
    case kExitUsage: return "usage error";
    case kExitWorkerSandbox: return "sandbox set-up failed";
    case kExitWorkerInit: return "worker set-up failed";
    case kExitWorkerOrphan: return "master went away";
  }
  return "unexpected exit code";
}

}  // namespace djinn

#endif  // DJINN_COMMON_EXIT_CODES_H_
