// The part sweep: removes abandoned partial downloads from the image store.
//
// A transient failure leaves <store>/<user>/<driver>/.<hash>.part and its
// sidecar .<hash>.part.meta for the next try (worker/part_resume.h). When
// no try comes (the job was deleted, the image too, the queue purged) they
// would stay forever. The master sweeps the store at start and then every
// hour: a .part whose last write (mtime) is older than
// kResumeMaxAgeSeconds (7 days: it could no longer be resumed anyway) and
// whose lock is free is removed, with its sidecar; so are sidecars and
// their temporary files (.meta.tmp) of that age whose .part is gone.
//
// Why the master: it is the one process that lives as long as the daemon
// and runs periodic work (workers come and go and are busy with jobs), and
// it owns the store already (PrepareStore). It runs with the master's
// privileges (root when started as root), so the walk never follows a
// link: every directory is opened beneath its parent with O_NOFOLLOW, only
// the fixed depth <user>/<driver>/ is visited, only regular files with our
// names are touched and each removal is unlinkat() in its own directory.
//
// A live download is never touched: the sweep takes the .part's lock
// (flock LOCK_EX | LOCK_NB, as PartFile::Reserve does) before unlinking,
// checks that the name still is the locked inode, and skips it when the
// lock is held. A worker that tries to reserve the .part meanwhile finds it
// busy and waits (worker/fetch.h), then starts on a fresh file.
//
// The sweep never blocks the supervisor for long: a pass is spread over
// ticks, at most kPartSweepDirsPerTick user directories per call.
// Single-threaded (the master's loop).
#ifndef DJINN_MASTER_PART_SWEEP_H_
#define DJINN_MASTER_PART_SWEEP_H_

#include <cstdint>
#include <string>
#include <vector>

namespace djinn {

inline constexpr int64_t kPartSweepPeriodMs = 3600 * 1000;
inline constexpr int kPartSweepDirsPerTick = 64;

struct PartSweepStats {
  int removed = 0;  // .part files removed (with their sidecars)
  int busy = 0;     // old .part files skipped: a download holds them
  int strays = 0;   // sidecars and temporary files removed without a .part
  int errors = 0;   // entries that could not be looked at or removed (logged)
};

// Sweeps one user directory <store>/<user> (all its driver directories).
// now and max_age in seconds. Adds to *stats; logs what it removes.
void SweepUserDir(int store_fd, const std::string& store, const std::string& user, int64_t now,
                  int64_t max_age_seconds, PartSweepStats* stats);

class PartSweeper {
 public:
  explicit PartSweeper(int64_t period_ms = kPartSweepPeriodMs);
  // Does what is due at now_ms (a monotonic clock): starts a pass at the
  // first call and every period after the last pass started, and sweeps
  // the next few user directories of the pass under way. A store path that
  // changes (reload) is picked up by the next pass.
  void Tick(const std::string& store, int64_t now_ms);
  // Runs a whole pass now (tests, and callers that do not mind blocking).
  PartSweepStats SweepAll(const std::string& store);
  bool in_pass() const { return !pending_.empty(); }

 private:
  void StartPass(const std::string& store);
  void Step(int max_dirs);
  void FinishPass();

  int64_t period_ms_;
  int64_t next_pass_ms_ = 0;
  std::string store_;
  std::vector<std::string> pending_;  // user directories left in this pass
  PartSweepStats stats_;
};

// The master's sweeper (master/supervisor.cc calls Tick every turn).
PartSweeper& MasterPartSweeper();

}  // namespace djinn

#endif  // DJINN_MASTER_PART_SWEEP_H_
