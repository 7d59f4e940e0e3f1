// Jobs for the test suite only, registered when the master was started
// with DJINN_CONSUMER_TEST_JOBS=1 (see docs/testing.md):
//   {"job":"sleep","ms":N}  runs for N milliseconds (job_timeout tests)
//   {"job":"crash"}         kills its worker (poison-pill tests)
//   {"job":"fail"}          fails transiently (retry and backoff tests)
//   {"job":"hog"}           asks for 1 PiB of memory (out-of-memory poison
//                           tests); sanitizer builds, whose allocator aborts
//                           instead of failing, throw std::bad_alloc
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <vector>

#include "worker/job.h"

namespace djinn {
namespace {

class SleepJob : public JobHandler {
 public:
  Status Run(const DecodedJob& job, JobContext& ctx) override {
    const auto* args = std::get_if<TestArgs>(&job.args);
    int64_t left = args ? args->ms : 0;
    // In slices, calling keep_alive as a real job's progress does.
    while (left > 0) {
      int64_t ms = std::min<int64_t>(left, 100);
      struct timespec ts = {0, static_cast<long>(ms) * 1000000};
      while (nanosleep(&ts, &ts) != 0) {
      }
      left -= ms;
      if (ctx.keep_alive) ctx.keep_alive();
    }
    return Status::Ok();
  }
};

class CrashJob : public JobHandler {
 public:
  Status Run(const DecodedJob&, JobContext&) override {
    raise(SIGSEGV);
    return Status::Ok();
  }
};

class FailJob : public JobHandler {
 public:
  Status Run(const DecodedJob&, JobContext&) override {
    return Status::Transient("failing on purpose");
  }
};

class HogJob : public JobHandler {
 public:
  Status Run(const DecodedJob&, JobContext&) override {
#if defined(__SANITIZE_ADDRESS__)
    throw std::bad_alloc();
#else
    std::vector<char> v;
    v.reserve(size_t{1} << 50);  // more than any x86-64 or arm64 address space
    return Status::Permanent("1 PiB allocated?");
#endif
  }
};

}  // namespace

std::unique_ptr<JobHandler> NewHogJob() { return std::make_unique<HogJob>(); }
std::unique_ptr<JobHandler> NewFailJob() { return std::make_unique<FailJob>(); }
std::unique_ptr<JobHandler> NewSleepJob() { return std::make_unique<SleepJob>(); }
std::unique_ptr<JobHandler> NewCrashJob() { return std::make_unique<CrashJob>(); }

}  // namespace djinn
