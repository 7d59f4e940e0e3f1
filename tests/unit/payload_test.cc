// DecodePayload end to end over every vector (envelope, then payload), and
// the JSON form.
#include "common/payload.h"

#include <gtest/gtest.h>

#include "tests/harness/vectors.h"

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "common/envelope.h"

namespace djinn {
namespace {

using Json = nlohmann::json;

using testing::ReadVector;
Json Cases() { return testing::VectorCases(); }

// What the worker does with a hash value from Q:data.
Result<DecodedJob> DecodeMessage(const std::string& msgpack) {
  Result<Envelope> env = DecodeEnvelope(msgpack);
  if (!env.ok()) return env.status();
  return DecodePayload(env->data);
}

void ExpectDownload(const Result<DecodedJob>& job, const Json& want) {
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->name, "download_job");
  ASSERT_TRUE(std::holds_alternative<DownloadArgs>(job->args));
  const DownloadArgs& args = std::get<DownloadArgs>(job->args);
  EXPECT_EQ(std::to_string(args.id), want["ID_string"].get<std::string>());
  EXPECT_EQ(std::to_string(args.image_id), want["ImageID_string"].get<std::string>());
  EXPECT_EQ(args.source, want["Source"].get<std::string>());
}

// The job's DownloadArgs, or nullptr; `job` must outlive the pointer.
const DownloadArgs* Download(const Result<DecodedJob>& job) {
  return job.ok() ? std::get_if<DownloadArgs>(&job->args) : nullptr;
}

std::string Message(std::string_view json) { return DecodeJsonPayload(json).status().message(); }

TEST(PayloadVectors, EveryCaseEndsAsRecordedForDjinnsConsumer) {
  int performed = 0, rejected = 0;
  for (const Json& c : Cases()) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const Json& files = c["files"];
    const bool perform =
        c.contains("djinn_consumer") && c["djinn_consumer"]["outcome"] == "performs download_job";
    // Both entry points: the bare payload and the whole Redis value.
    std::vector<Result<DecodedJob>> results;
    if (files.contains("gob")) results.push_back(DecodePayload(ReadVector(files["gob"])));
    results.push_back(DecodeMessage(ReadVector(files["msgpack"])));
    for (const Result<DecodedJob>& job : results) {
      if (perform) {
        ExpectDownload(job, c["job"]);
        ++performed;
      } else {
        ASSERT_FALSE(job.ok());
        EXPECT_TRUE(job.status().poison()) << job.status().ToString();
        EXPECT_EQ(job.status().message().find('\n'), std::string::npos);
        ++rejected;
      }
    }
  }
  EXPECT_EQ(performed, (18 + 4) * 2);      // download_job and alt_* cases
  EXPECT_EQ(rejected, 3 * 2 + 9 * 2 + 5);  // ev_*, bad_* with .gob, others
}

TEST(PayloadVectors, OtherJobTypesAreNamedInTheRejection) {
  for (const char* name : {"ev_minimal", "ev_full", "ev_sparse_edges"}) {
    Result<DecodedJob> job = DecodePayload(ReadVector(std::string(name) + ".gob"));
    ASSERT_FALSE(job.ok());
    EXPECT_EQ(job.status().message(), "job type *image.TestEvent not handled");
  }
  EXPECT_EQ(DecodePayload(ReadVector("bad_gob_unregistered_name.gob")).status().message(),
            "job type *image.Downloadjob not handled");
}

TEST(PayloadVectors, NilOrMissingDataIsAnEmptyPayload) {
  for (const char* name : {"bad_envelope_missing_data", "bad_envelope_nil_data"}) {
    EXPECT_EQ(DecodeMessage(ReadVector(std::string(name) + ".msgpack")).status().message(),
              "empty payload");
  }
}

TEST(PayloadVectors, JsonLookingGobDataIsReadAsJson) {
  // bad_data_not_gob is a JSON object without "job".
  EXPECT_EQ(DecodePayload(ReadVector("bad_data_not_gob.gob")).status().message(),
            "json: missing \"job\"");
}

TEST(PayloadDecode, RejectsPayloadsOverTheLimit) {
  Result<DecodedJob> job = DecodePayload(std::string(kMaxPayloadBytes + 1, '{'));
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().message(), "payload of 16777217 bytes exceeds 16777216");
}

TEST(PayloadDecode, RejectsBytesThatAreNeitherJsonNorGob) {
  Result<DecodedJob> job = DecodePayload("hello");
  ASSERT_FALSE(job.ok());
  EXPECT_TRUE(job.status().poison());
  EXPECT_EQ(job.status().message().rfind("gob: ", 0), 0u);
}

TEST(JsonPayload, DecodesDownloadJob) {
  Result<DecodedJob> job = DecodePayload(
      R"({"job":"download_job","id":12,"image_id":34,"source":"https://e.com/a.qcow2"})");
  const DownloadArgs* args = Download(job);
  ASSERT_NE(args, nullptr) << job.status().ToString();
  EXPECT_EQ(job->name, "download_job");
  EXPECT_EQ(args->id, 12);
  EXPECT_EQ(args->image_id, 34);
  EXPECT_EQ(args->source, "https://e.com/a.qcow2");
}

TEST(JsonPayload, DecodesPingWithWhitespaceAndExtraKeys) {
  Result<DecodedJob> job =
      DecodePayload(" \n\t{\"x\": [1, {\"y\": null}], \"job\": \"ping\", \"id\": \"?\"}\r\n");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->name, "ping");
  EXPECT_TRUE(std::holds_alternative<PingArgs>(job->args));
}

TEST(JsonPayload, ImageIdDefaultsToZero) {
  Result<DecodedJob> job = DecodeJsonPayload(R"({"job":"download_job","id":-5,"source":"s"})");
  const DownloadArgs* args = Download(job);
  ASSERT_NE(args, nullptr) << job.status().ToString();
  EXPECT_EQ(args->id, -5);
  EXPECT_EQ(args->image_id, 0);
}

TEST(JsonPayload, AcceptsTheWholeInt64Range) {
  Result<DecodedJob> job = DecodeJsonPayload(R"({"job":"download_job","id":9223372036854775807,)"
                                             R"("image_id":-9223372036854775808,"source":"s"})");
  const DownloadArgs* args = Download(job);
  ASSERT_NE(args, nullptr) << job.status().ToString();
  EXPECT_EQ(args->id, INT64_MAX);
  EXPECT_EQ(args->image_id, INT64_MIN);
}

TEST(JsonPayload, RejectsNumbersBeyondInt64) {
  EXPECT_EQ(Message(R"({"job":"download_job","id":9223372036854775808,"source":"s"})"),
            "json: \"id\" exceeds int64");
  EXPECT_EQ(
      Message(R"({"job":"download_job","id":1,"image_id":-9223372036854775809,"source":"s"})"),
      "json: \"image_id\" is not an integer (float), want an int64");
  EXPECT_EQ(Message(R"({"job":"download_job","id":1e400,"source":"s"})"),
            "json: payload is not a JSON object");  // nlohmann: number overflow
}

TEST(JsonPayload, RejectsFloatIds) {
  EXPECT_EQ(Message(R"({"job":"download_job","id":12.0,"source":"s"})"),
            "json: \"id\" is not an integer (float), want an int64");
  EXPECT_EQ(Message(R"({"job":"download_job","id":1e3,"source":"s"})"),
            "json: \"id\" is not an integer (float), want an int64");
}

TEST(JsonPayload, RejectsIdsOfOtherTypes) {
  EXPECT_EQ(Message(R"({"job":"download_job","id":"12","source":"s"})"),
            "json: \"id\" is a string, want an int64");
  EXPECT_EQ(Message(R"({"job":"download_job","id":true,"source":"s"})"),
            "json: \"id\" is a boolean, want an int64");
  EXPECT_EQ(Message(R"({"job":"download_job","id":null,"source":"s"})"),
            "json: \"id\" is a null, want an int64");
  EXPECT_EQ(Message(R"({"job":"download_job","id":[12],"source":"s"})"),
            "json: \"id\" is a array, want an int64");
}

TEST(JsonPayload, RejectsMissingFields) {
  EXPECT_EQ(Message(R"({"job":"download_job","source":"s"})"), "json: missing \"id\"");
  EXPECT_EQ(Message(R"({"job":"download_job","id":1})"), "json: missing \"source\"");
  EXPECT_EQ(Message(R"({"id":1})"), "json: missing \"job\"");
  EXPECT_EQ(Message(R"({"x":{"job":"ping"}})"), "json: missing \"job\"");  // not top level
}

TEST(JsonPayload, RejectsEmptyOrNonStringSource) {
  EXPECT_EQ(Message(R"({"job":"download_job","id":1,"source":""})"), "json: \"source\" is empty");
  EXPECT_EQ(Message(R"({"job":"download_job","id":1,"source":7})"),
            "json: \"source\" is a number, want a string");
}

TEST(JsonPayload, RejectsUnknownJobNamingIt) {
  EXPECT_EQ(Message(R"({"job":"x"})"), "unknown job \"x\"");
  EXPECT_EQ(Message(R"({"job":"a\nb\"c"})"), "unknown job \"a\\x0ab\\x22c\"");
  EXPECT_EQ(Message(R"({"job":12})"), "json: \"job\" is a number, want a string");
}

TEST(JsonPayload, RejectsWhatIsNotAJsonObject) {
  for (const char* text : {"[1,2]", "\"str\"", "12", "{", "{\"job\":\"ping\"} x", "", " "}) {
    Result<DecodedJob> job = DecodeJsonPayload(text);
    ASSERT_FALSE(job.ok()) << text;
    EXPECT_TRUE(job.status().poison());
  }
  EXPECT_EQ(Message("[1,2]"), "json: payload is not a JSON object");
}

TEST(JsonPayload, SurvivesDeepNestingOutsideTheKnownKeys) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  Result<DecodedJob> job = DecodeJsonPayload("{\"job\":\"ping\",\"x\":" + deep + "}");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_FALSE(DecodeJsonPayload("{\"id\":" + deep + "}").ok());
  EXPECT_FALSE(DecodePayload(deep).ok());
}

TEST(JsonPayload, WebhookDeliveryJobIsDecoded) {
  Result<DecodedJob> job = DecodeJsonPayload(
      R"({"job":"webhook","webhook_id":7,"event_id":"9db86bbd-f82c-51aa-8b7f-72cd4bd440eb",)"
      R"("body":"{\"action\":\"downloaded\"}\n"})");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->name, "webhook");
  const auto& args = std::get<WebhookArgs>(job->args);
  EXPECT_EQ(args.webhook_id, 7);
  EXPECT_EQ(args.event_id, "9db86bbd-f82c-51aa-8b7f-72cd4bd440eb");
  EXPECT_EQ(args.body, "{\"action\":\"downloaded\"}\n");
}

TEST(JsonPayload, WebhookJobWithoutItsFieldsIsPoison) {
  for (const char* text : {R"({"job":"webhook","event_id":"x","body":""})",
                           R"({"job":"webhook","webhook_id":1,"event_id":"short","body":""})",
                           R"({"job":"webhook","webhook_id":1,"event_id":"9db86bbd-f82c-51aa-8b7f-72cd4bd440eb"})"}) {
    Result<DecodedJob> job = DecodeJsonPayload(text);
    EXPECT_FALSE(job.ok()) << text;
    if (!job.ok()) {
      EXPECT_TRUE(job.status().poison());
    }
  }
}

}  // namespace
}  // namespace djinn
