#include "common/job_counters.h"

#include <time.h>

#include <algorithm>
#include <cstring>

namespace djinn {
namespace {

// The single writer's increment: no locked instruction needed.
void Bump(std::atomic<uint64_t>& a, uint64_t n = 1) {
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

size_t BucketOf(int64_t duration_us) {
  double s = static_cast<double>(std::max<int64_t>(duration_us, 0)) / 1e6;
  for (size_t i = 0; i < kJobDurationBuckets.size(); i++)
    if (s <= kJobDurationBuckets[i]) return i;
  return kJobDurationBuckets.size();
}

}  // namespace

const char* JobOutcomeName(JobOutcome o) {
  switch (o) {
    case JobOutcome::kOk: return "ok";
    case JobOutcome::kFailed: return "failed";
    case JobOutcome::kRetried: return "retried";
    case JobOutcome::kDead: return "dead";
    case JobOutcome::kPoison: return "poison";
    case JobOutcome::kHeld: return "held_back";
  }
  return "?";
}

uint64_t JobTypeTotals::count() const {
  uint64_t n = 0;
  for (uint64_t b : buckets) n += b;
  return n;
}

void JobTotals::Add(const JobTotals& other) {
  for (const auto& [name, t] : other.types) {
    JobTypeTotals& mine = types[name];
    for (size_t i = 0; i < t.outcomes.size(); i++) mine.outcomes[i] += t.outcomes[i];
    for (size_t i = 0; i < t.buckets.size(); i++) mine.buckets[i] += t.buckets[i];
    mine.sum_us += t.sum_us;
  }
  downloaded_bytes += other.downloaded_bytes;
}

int64_t MonotonicUs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

SlotStats::Row* SlotStats::FindOrAddRow(std::string_view type) {
  if (type.size() > kNameMax) type = type.substr(0, kNameMax);
  uint32_t n = types_.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < n; i++)
    if (type == rows_[i].name) return &rows_[i];
  if (n < kTypes - 1 || (n == kTypes - 1 && type == "other")) {
    Row& r = rows_[n];
    std::memcpy(r.name, type.data(), type.size());
    r.name[type.size()] = '\0';
    types_.store(n + 1, std::memory_order_release);  // name first, then the row
    return &r;
  }
  // Full: the last row is "other".
  return type == "other" ? nullptr : FindOrAddRow("other");
}

void SlotStats::CountJob(std::string_view type, JobOutcome outcome, int64_t duration_us) {
  Row* r = FindOrAddRow(type);
  if (!r) return;
  Bump(r->outcomes[static_cast<size_t>(outcome)]);
  Bump(r->buckets[BucketOf(duration_us)]);
  Bump(r->sum_us, static_cast<uint64_t>(std::max<int64_t>(duration_us, 0)));
}

void SlotStats::CountDownloadedBytes(uint64_t n) { Bump(downloaded_bytes_, n); }

void SlotStats::SetCondition(WorkerCondition c, bool on) {
  uint8_t v = condition_.load(std::memory_order_relaxed);
  uint8_t next = on ? static_cast<uint8_t>(v | c) : static_cast<uint8_t>(v & ~c);
  if (next != v) condition_.store(next, std::memory_order_relaxed);
}

void SlotStats::SetPgReach(Reach r, int64_t at_ms) {
  pg_reach_ms_.store(at_ms, std::memory_order_relaxed);
  pg_reach_.store(static_cast<uint8_t>(r), std::memory_order_relaxed);
}

void SlotStats::Clear() {
  types_.store(0, std::memory_order_relaxed);
  for (Row& r : rows_) {
    r.name[0] = '\0';
    for (auto& a : r.outcomes) a.store(0, std::memory_order_relaxed);
    for (auto& a : r.buckets) a.store(0, std::memory_order_relaxed);
    r.sum_us.store(0, std::memory_order_relaxed);
  }
  downloaded_bytes_.store(0, std::memory_order_relaxed);
  condition_.store(0, std::memory_order_relaxed);
  pg_reach_.store(0, std::memory_order_relaxed);
  pg_reach_ms_.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}

void SlotStats::AddTo(JobTotals* totals) const {
  uint32_t n = std::min<uint32_t>(types_.load(std::memory_order_acquire), kTypes);
  for (uint32_t i = 0; i < n; i++) {
    const Row& r = rows_[i];
    char name[kNameMax + 1];
    std::memcpy(name, r.name, sizeof name);
    name[kNameMax] = '\0';
    JobTypeTotals& t = totals->types[name];
    for (size_t k = 0; k < t.outcomes.size(); k++)
      t.outcomes[k] += r.outcomes[k].load(std::memory_order_relaxed);
    for (size_t k = 0; k < t.buckets.size(); k++)
      t.buckets[k] += r.buckets[k].load(std::memory_order_relaxed);
    t.sum_us += r.sum_us.load(std::memory_order_relaxed);
  }
  totals->downloaded_bytes += downloaded_bytes_.load(std::memory_order_relaxed);
}

}  // namespace djinn
