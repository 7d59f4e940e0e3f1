// Job payloads: the bytes of an envelope's Data, decoded into a typed job.
//
// DecodePayload() detects the format: JSON when the payload parses as a
// JSON object, otherwise Go gob (what the Djinn server sends). Anything it
// cannot turn into a job it knows is returned as a kPoison Status with a
// one-line reason (the job goes to the dead set). It never throws.
#ifndef DJINN_COMMON_PAYLOAD_H_
#define DJINN_COMMON_PAYLOAD_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "common/status.h"

namespace djinn {

// {"job":"ping"}: does nothing, succeeds (health check, benchmark load).
struct PingArgs {};

// download_job: fetch `source` for image `image_id`, download row `id`.
//   JSON: {"job":"download_job","id":12,"image_id":34,"source":"https://..."}
//   gob:  interface value "*image.DownloadJob"{ID, ImageID, Source}
struct DownloadArgs {
  int64_t id = 0;
  int64_t image_id = 0;
  std::string source;
};

// The test suite's jobs ("sleep" with {"ms":N}, "crash"): decoded from
// JSON like any job; only registered when test jobs are enabled.
struct TestArgs {
  int64_t ms = 0;
};

// webhook: one delivery of an `images` event to one namespace webhook, on
// our own queue <queue>_webhooks (never on Djinn's `jobs`: Go consumers
// there would not know it). The body is made when the download ends.
//   JSON: {"job":"webhook","webhook_id":7,"event_id":"<uuid>","body":"..."}
struct WebhookArgs {
  int64_t webhook_id = 0;
  std::string event_id;  // 36-character UUID text
  std::string body;      // the exact bytes to post
};

struct DecodedJob {
  std::string name;  // "ping", "download_job", "webhook"; the registry key
  std::variant<PingArgs, DownloadArgs, TestArgs, WebhookArgs> args;
};

// Largest payload accepted (bytes); larger is poison.
inline constexpr size_t kMaxPayloadBytes = 16 << 20;

Result<DecodedJob> DecodePayload(std::string_view data);

// The JSON form only (also used by the fuzz target).
Result<DecodedJob> DecodeJsonPayload(std::string_view data);

}  // namespace djinn

#endif  // DJINN_COMMON_PAYLOAD_H_
