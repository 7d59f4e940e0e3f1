#include "common/scoreboard.h"

#include <sys/mman.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace djinn {

struct Scoreboard::Entry {
  std::atomic<uint64_t> seq;
  std::atomic<uint8_t> busy;
  int64_t started_ms;
  uint64_t jobs_done;
  char job_id[kIdMax + 1];
  char job_type[kTypeMax + 1];
};

namespace {
void CopyTrunc(char* dst, size_t cap, std::string_view s) {
  size_t n = std::min(s.size(), cap - 1);
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}
}  // namespace

int64_t MonotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

Scoreboard::Scoreboard(size_t entries) : entries_(entries) {
  void* p = mmap(nullptr, sizeof(Entry) * entries, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("scoreboard mmap");
    std::abort();
  }
  entries_ptr_ = static_cast<Entry*>(p);  // zero-filled by the kernel
  // Counters: pages are only backed once a worker writes them.
  p = mmap(nullptr, sizeof(SlotStats) * entries, PROT_READ | PROT_WRITE,
           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("scoreboard mmap");
    std::abort();
  }
  stats_ptr_ = static_cast<SlotStats*>(p);
}

Scoreboard::~Scoreboard() {
  if (entries_ > 0) munmap(entries_ptr_, sizeof(Entry) * entries_);
  if (entries_ > 0) munmap(stats_ptr_, sizeof(SlotStats) * entries_);
}

void Scoreboard::DetachInChild() {
  if (entries_ > 0) munmap(entries_ptr_, sizeof(Entry) * entries_);
  if (entries_ > 0) munmap(stats_ptr_, sizeof(SlotStats) * entries_);
  entries_ = 0;
  stats_ptr_ = nullptr;
}

SlotStats* Scoreboard::Stats(size_t i) { return i < entries_ ? &stats_ptr_[i] : nullptr; }

const SlotStats* Scoreboard::Stats(size_t i) const {
  return i < entries_ ? &stats_ptr_[i] : nullptr;
}

void Scoreboard::Reset(size_t i) {
  if (i >= entries_) return;
  Entry& e = entries_ptr_[i];
  e.seq.store(0, std::memory_order_relaxed);
  e.busy.store(0, std::memory_order_relaxed);
  e.started_ms = 0;
  e.jobs_done = 0;
  e.job_id[0] = e.job_type[0] = '\0';
  stats_ptr_[i].Clear();
  std::atomic_thread_fence(std::memory_order_release);
}

void Scoreboard::SetBusy(size_t i, std::string_view job_id, std::string_view job_type,
                         int64_t started_ms) {
  if (i >= entries_) return;
  Entry& e = entries_ptr_[i];
  uint64_t s = e.seq.load(std::memory_order_relaxed);
  e.seq.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  e.busy.store(1, std::memory_order_relaxed);
  e.started_ms = started_ms;
  CopyTrunc(e.job_id, sizeof e.job_id, job_id);
  CopyTrunc(e.job_type, sizeof e.job_type, job_type);
  e.seq.store(s + 2, std::memory_order_release);
}

void Scoreboard::SetIdle(size_t i) {
  if (i >= entries_) return;
  Entry& e = entries_ptr_[i];
  uint64_t s = e.seq.load(std::memory_order_relaxed);
  e.seq.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  e.busy.store(0, std::memory_order_relaxed);
  e.jobs_done++;
  e.seq.store(s + 2, std::memory_order_release);
}

WorkerState Scoreboard::Read(size_t i) const {
  WorkerState st;
  if (i >= entries_) return st;
  const Entry& e = entries_ptr_[i];
  for (int tries = 0; tries < 100; tries++) {
    uint64_t s1 = e.seq.load(std::memory_order_acquire);
    if (s1 & 1) continue;
    st.busy = e.busy.load(std::memory_order_relaxed) != 0;
    st.started_ms = e.started_ms;
    st.jobs_done = e.jobs_done;
    char id[kIdMax + 1], type[kTypeMax + 1];
    std::memcpy(id, e.job_id, sizeof id);
    std::memcpy(type, e.job_type, sizeof type);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (e.seq.load(std::memory_order_relaxed) != s1) continue;
    id[kIdMax] = type[kTypeMax] = '\0';
    st.job_id = id;
    st.job_type = type;
    return st;
  }
  st.busy = true;
  st.torn = true;
  return st;
}

}  // namespace djinn
