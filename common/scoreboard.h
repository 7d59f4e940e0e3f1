// The scoreboard: shared memory (MAP_SHARED|MAP_ANONYMOUS, created by the
// master before it forks) where each worker publishes what it is doing, as
// Apache's scoreboard does. The master reads it on its tick to enforce
// job_timeout and to name the job a dead worker was running.
//
// Why not a pipe message per job: at tens of thousands of jobs per second a
// message per state change would cost two syscalls per job in the worker
// and a wake-up per job in the master. A store to shared memory costs
// nothing; the master only needs the state when it looks.
//
// Each entry is written by exactly one worker and read by the master, with
// a sequence lock: the writer makes seq odd, writes, makes it even; the
// reader retries while seq is odd or changed. A worker that dies mid-write
// leaves seq odd; the master then treats the entry as busy with an unknown
// job (it requeues the worker's inflight set either way).
#ifndef DJINN_COMMON_SCOREBOARD_H_
#define DJINN_COMMON_SCOREBOARD_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/job_counters.h"

namespace djinn {

struct WorkerState {
  bool busy = false;
  bool torn = false;        // the writer died mid-update
  int64_t started_ms = 0;   // CLOCK_MONOTONIC ms when the job started
  uint64_t jobs_done = 0;   // jobs finished since the worker started
  std::string job_id;       // truncated to kIdMax
  std::string job_type;     // truncated to kTypeMax
};

class Scoreboard {
 public:
  static constexpr size_t kIdMax = 63;
  static constexpr size_t kTypeMax = 31;

  // Maps `entries` entries; aborts on failure (start-up only).
  explicit Scoreboard(size_t entries);
  ~Scoreboard();
  Scoreboard(const Scoreboard&) = delete;
  Scoreboard& operator=(const Scoreboard&) = delete;

  size_t size() const { return entries_; }
  // Every index is checked: out of range, writes do nothing and Read()
  // gives an idle state.
  // Master: zero an entry before giving it to a new worker.
  void Reset(size_t i);
  // Worker: publish state changes.
  void SetBusy(size_t i, std::string_view job_id, std::string_view job_type,
               int64_t started_ms);
  void SetIdle(size_t i);  // also counts a finished job
  // Master: consistent snapshot.
  WorkerState Read(size_t i) const;
  // In a child process that must not touch the board (a download
  // process): unmaps it here; every later call does nothing.
  void DetachInChild();
  // The entry's counters (common/job_counters.h): written by the worker
  // that owns the entry, read by the master; zeroed by Reset(). nullptr
  // when out of range (or detached).
  SlotStats* Stats(size_t i);
  const SlotStats* Stats(size_t i) const;

 private:
  struct Entry;
  Entry* entries_ptr_;
  size_t entries_;
  SlotStats* stats_ptr_ = nullptr;  // a mapping of its own, entries_ long
};

int64_t MonotonicMs();

}  // namespace djinn

#endif  // DJINN_COMMON_SCOREBOARD_H_
