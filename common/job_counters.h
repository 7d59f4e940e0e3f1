// Per-worker counters for the master's metrics (master/metrics.h).
//
// SlotStats lives in shared memory beside each scoreboard entry
// (Scoreboard::Stats). Exactly one process writes it, the worker that owns
// the entry, and the master reads it; so there are no locks and no
// read-modify-write instructions: every field is a std::atomic written
// with relaxed load + store (a single writer cannot lose an increment).
// The master may read a histogram row mid-update (a bucket counted, the
// sum not yet): a scrape is a sample, the next one is consistent again,
// and no counter ever reads lower than before.
//
// Job types: a row per type, published by storing its name first and then
// bumping `types` with release; the master reads `types` with acquire and
// only those rows, whose names never change afterwards. The worker passes
// only names of job types it has registered (others are "unknown"), so
// the set is bounded by the registry; a type past kTypes rows counts as
// "other".
//
// The master folds a worker's SlotStats into a JobTotals when the worker
// has exited (before the entry is Reset for another), so the totals it
// serves never go backwards.
#ifndef DJINN_COMMON_JOB_COUNTERS_H_
#define DJINN_COMMON_JOB_COUNTERS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace djinn {

// How a job run ended, as the worker decided its fate (worker/job.h).
enum class JobOutcome : uint8_t {
  kOk,       // acked
  kFailed,   // recorded where the user sees it (kPermanent), acked
  kRetried,  // transient, scheduled for another try
  kDead,     // transient on its last try: moved to the dead set
  kPoison,   // unusable message: moved to the dead set untouched
  kHeld,     // a dependency of ours failed: given back, no attempt counted
};
constexpr int kJobOutcomes = 6;
const char* JobOutcomeName(JobOutcome o);  // "ok", "failed", ...

// Upper bounds, in seconds, of the job duration histogram's buckets (the
// +Inf bucket is implicit): from a ping's tens of microseconds to an hour
// of download.
constexpr std::array<double, 16> kJobDurationBuckets = {
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};

// What a worker is doing beyond busy/idle (the scoreboard's seqlocked
// entry says busy). Bits, so both can hold at once.
enum WorkerCondition : uint8_t {
  kConditionHeldBack = 1,     // holding jobs back: a dependency is down
  kConditionRedisDown = 2,    // its queue connection is failing
};

// What the last PostgreSQL statement of a worker said about the server.
enum class Reach : uint8_t { kUnknown = 0, kUp = 1, kDown = 2 };

struct JobTypeTotals {
  std::array<uint64_t, kJobOutcomes> outcomes{};
  std::array<uint64_t, kJobDurationBuckets.size() + 1> buckets{};  // not cumulative; last: +Inf
  uint64_t sum_us = 0;
  uint64_t count() const;
};

// The master's sums (plain memory, master only).
struct JobTotals {
  std::map<std::string, JobTypeTotals> types;
  uint64_t downloaded_bytes = 0;
  void Add(const JobTotals& other);
};

struct SlotStats {
  static constexpr size_t kTypes = 8;
  static constexpr size_t kNameMax = 31;

  // --- the worker (single writer) ---
  // Counts a finished run of `type` (a registered name, or "unknown").
  void CountJob(std::string_view type, JobOutcome outcome, int64_t duration_us);
  void CountDownloadedBytes(uint64_t n);
  void SetCondition(WorkerCondition c, bool on);
  void SetPgReach(Reach r, int64_t at_ms);

  // --- the master ---
  // Zeroes everything; only while no worker owns the entry.
  void Clear();
  // Adds this slot's counts to *totals.
  void AddTo(JobTotals* totals) const;
  uint8_t condition() const { return condition_.load(std::memory_order_relaxed); }
  Reach pg_reach() const { return static_cast<Reach>(pg_reach_.load(std::memory_order_relaxed)); }
  int64_t pg_reach_ms() const { return pg_reach_ms_.load(std::memory_order_relaxed); }

 private:
  struct Row {
    char name[kNameMax + 1];
    std::atomic<uint64_t> outcomes[kJobOutcomes];
    std::atomic<uint64_t> buckets[kJobDurationBuckets.size() + 1];
    std::atomic<uint64_t> sum_us;
  };
  Row* FindOrAddRow(std::string_view type);

  std::atomic<uint32_t> types_;
  Row rows_[kTypes];
  std::atomic<uint64_t> downloaded_bytes_;
  std::atomic<uint8_t> condition_;
  std::atomic<uint8_t> pg_reach_;
  std::atomic<int64_t> pg_reach_ms_;
};

// CLOCK_MONOTONIC in microseconds (job durations).
int64_t MonotonicUs();

}  // namespace djinn

#endif  // DJINN_COMMON_JOB_COUNTERS_H_
