// libFuzzer target: the JSON payload form. nlohmann-json must not throw
// out of DecodeJsonPayload, and what it accepts must be a known job.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "common/payload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  djinn::Result<djinn::DecodedJob> job = djinn::DecodeJsonPayload(bytes);
  if (!job.ok()) {
    if (!job.status().poison()) std::abort();
    return 0;
  }
  // download_job with its arguments, ping, or one of the test suite's jobs
  // (common/payload.cc decodes them; only DJINN_CONSUMER_TEST_JOBS runs them).
  const auto* download = std::get_if<djinn::DownloadArgs>(&job->args);
  bool known = job->name == "ping" || job->name == "sleep" || job->name == "crash" ||
               job->name == "fail" || job->name == "webhook";
  if (job->name == "download_job" ? download == nullptr || download->source.empty() : !known) {
    std::abort();
  }
  return 0;
}
