// Format detection is by content, not by a flag: the Djinn server sends gob
// and other producers send JSON through the same queue. A gob stream never
// parses as a JSON object (its type ids are bytes >= 0x80), so trying JSON
// first is unambiguous.
//
// nlohmann-json is used through its non-throwing parse with a callback that
// keeps only the top-level members a job can use: a hostile payload of
// deeply nested or very many values then costs no more memory than its
// parser's stack of flags, and nothing but the four known keys is stored.
#include "common/payload.h"

#include <cstdint>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/gob.h"

namespace djinn {

namespace {

using Json = nlohmann::json;

// `s` made safe for a one-line message: control bytes, quotes and
// backslashes as \xNN, cut at 200 bytes.
std::string Printable(std::string_view s) {
  constexpr size_t kMax = 200;
  std::string out;
  for (unsigned char c : s.substr(0, kMax)) {
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      char escaped[5];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", c);
      out += escaped;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

Status JsonError(const std::string& msg) { return Status::Poison("json: " + msg); }

// The payload as a JSON object with only its job members, or nothing if it
// is not a JSON object.
std::optional<Json> ParseJsonObject(std::string_view data) {
  size_t start = data.find_first_not_of(" \t\r\n");
  if (start == std::string_view::npos || data[start] != '{') return {};
  auto keep = [](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::key) {
      return depth == 1 && parsed.is_string() &&
             (parsed == "job" || parsed == "id" || parsed == "image_id" || parsed == "source" ||
              parsed == "ms" || parsed == "webhook_id" || parsed == "event_id" ||
              parsed == "body");
    }
    return depth <= 1;
  };
  try {
    Json j = Json::parse(data.begin(), data.end(), keep,
                         /*allow_exceptions=*/false);
    if (j.is_object()) return j;
  } catch (const Json::exception&) {
    // Not expected with allow_exceptions=false; treated as "not JSON".
  }
  return {};
}

// An int64 member; absent leaves *out alone unless it is required.
Status JsonInt64(const Json& obj, const char* key, bool required, int64_t* out) {
  auto it = obj.find(key);
  const std::string quoted = std::string("\"") + key + "\"";
  if (it == obj.end()) {
    return required ? JsonError("missing " + quoted) : Status::Ok();
  }
  if (it->is_number_unsigned()) {
    if (it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return JsonError(quoted + " exceeds int64");
    }
    *out = static_cast<int64_t>(it->get<uint64_t>());
  } else if (it->is_number_integer()) {
    *out = it->get<int64_t>();
  } else {
    // Integers beyond uint64 arrive as floats too.
    return JsonError(
        quoted + " is " +
        (it->is_number_float() ? "not an integer (float)" : std::string("a ") + it->type_name()) +
        ", want an int64");
  }
  return Status::Ok();
}

Result<DecodedJob> JobFromJson(const Json& obj) {
  auto job = obj.find("job");
  if (job == obj.end()) return JsonError("missing \"job\"");
  if (!job->is_string()) {
    return JsonError(std::string("\"job\" is a ") + job->type_name() + ", want a string");
  }
  const std::string& name = job->get_ref<const std::string&>();
  if (name == "ping") return DecodedJob{name, PingArgs{}};
  if (name == "sleep" || name == "crash" || name == "fail" || name == "hog") {
    // The test suite's jobs; the worker knows them only when test jobs are
    // enabled, and treats them as unknown (poison) otherwise.
    TestArgs args;
    if (Status s = JsonInt64(obj, "ms", false, &args.ms); !s.ok()) return s;
    return DecodedJob{name, args};
  }
  if (name == "webhook") {
    WebhookArgs args;
    if (Status s = JsonInt64(obj, "webhook_id", true, &args.webhook_id); !s.ok()) return s;
    auto event = obj.find("event_id");
    auto body = obj.find("body");
    if (event == obj.end() || !event->is_string() || event->get_ref<const std::string&>().size() != 36)
      return JsonError("\"event_id\" must be a 36-character UUID string");
    if (body == obj.end() || !body->is_string()) return JsonError("\"body\" must be a string");
    args.event_id = event->get<std::string>();
    args.body = body->get<std::string>();
    return DecodedJob{name, std::move(args)};
  }
  if (name != "download_job") {
    return Status::Poison("unknown job \"" + Printable(name) + "\"");
  }
  DownloadArgs args;
  if (Status s = JsonInt64(obj, "id", true, &args.id); !s.ok()) return s;
  if (Status s = JsonInt64(obj, "image_id", false, &args.image_id); !s.ok()) {
    return s;
  }
  auto source = obj.find("source");
  if (source == obj.end()) return JsonError("missing \"source\"");
  if (!source->is_string()) {
    return JsonError(std::string("\"source\" is a ") + source->type_name() + ", want a string");
  }
  args.source = source->get<std::string>();
  if (args.source.empty()) return JsonError("\"source\" is empty");
  return DecodedJob{name, std::move(args)};
}

Status CheckSize(std::string_view data) {
  if (data.size() > kMaxPayloadBytes) {
    return Status::Poison("payload of " + std::to_string(data.size()) + " bytes exceeds " +
                          std::to_string(kMaxPayloadBytes));
  }
  if (data.empty()) return Status::Poison("empty payload");
  return Status::Ok();
}

}  // namespace

Result<DecodedJob> DecodeJsonPayload(std::string_view data) {
  if (Status s = CheckSize(data); !s.ok()) return s;
  std::optional<Json> obj = ParseJsonObject(data);
  if (!obj) return JsonError("payload is not a JSON object");
  return JobFromJson(*obj);
}

Result<DecodedJob> DecodePayload(std::string_view data) {
  if (Status s = CheckSize(data); !s.ok()) return s;
  if (std::optional<Json> obj = ParseJsonObject(data)) return JobFromJson(*obj);
  Result<GobInterfaceValue> job = DecodeGobInterface(data);
  if (!job.ok()) return job.status();
  if (job->name != kGobDownloadJobName) {
    return Status::Poison("job type " + Printable(job->name) + " not handled");
  }
  Result<DownloadArgs> args = DownloadArgsFromGob(*job);
  if (!args.ok()) return args.status();
  return DecodedJob{"download_job", std::move(args).value()};
}

}  // namespace djinn
