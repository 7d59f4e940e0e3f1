// DecodeEnvelope, DecodeEnvelopeView and EncodeEnvelope against the curlyq vectors
// (tests/data/vectors, README §2) and hand-made msgpack.
#include "common/envelope.h"

#include <gtest/gtest.h>

#include "tests/harness/vectors.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace djinn {
namespace {

using Json = nlohmann::json;
using std::string_literals::operator""s;

using testing::ReadVector;
Json Cases() { return testing::VectorCases(); }

std::string Bytes(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

// fixmap(3) {ID: "j", Data: bin "x", Attempt: <attempt bytes>}
std::string EnvelopeWithAttempt(const std::string& attempt) {
  return "\x83\xa2ID\xa1j\xa4"
         "Data\xc4\x01x\xa7"
         "Attempt" +
         attempt;
}

TEST(EnvelopeVectors, EveryCaseDecodesOrIsRejectedAsRecorded) {
  Json cases = Cases();
  ASSERT_EQ(cases.size(), 39u);
  int decoded = 0;
  for (const Json& c : cases) {
    const std::string name = c["name"];
    if (!c["files"].contains("msgpack")) continue;
    SCOPED_TRACE(name);
    Result<Envelope> env = DecodeEnvelope(ReadVector(c["files"]["msgpack"]));
    if (c.contains("reject") && c["reject"]["stage"] == "msgpack") {
      ASSERT_FALSE(env.ok());
      EXPECT_TRUE(env.status().poison());
      EXPECT_EQ(env.status().message().rfind("msgpack: ", 0), 0u) << env.status().message();
      continue;
    }
    // Everything else is a valid envelope, even when its Data is bad.
    ASSERT_TRUE(env.ok()) << env.status().ToString();
    ++decoded;
    if (!c.contains("envelope")) continue;
    const Json& want = c["envelope"];
    EXPECT_EQ(env->id, want["ID"].get<std::string>());
    EXPECT_EQ(env->attempt, want["Attempt"].get<int64_t>());
    EXPECT_FALSE(env->data_nil);
    EXPECT_EQ(env->data, ReadVector(want["Data"]));
  }
  EXPECT_EQ(decoded, 36);
}

TEST(EnvelopeVectors, ExactV4EnvelopesReencodeByteForByte) {
  int checked = 0;
  for (const Json& c : Cases()) {
    if (!c.contains("envelope") || !c["envelope"]["is_exact_v4_marshal_output"].get<bool>()) {
      continue;
    }
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::string bytes = ReadVector(c["files"]["msgpack"]);
    Result<Envelope> env = DecodeEnvelope(bytes);
    ASSERT_TRUE(env.ok()) << env.status().ToString();
    EXPECT_EQ(EncodeEnvelope(*env), bytes);
    ++checked;
  }
  EXPECT_EQ(checked, 21);  // README §6: 18 dl/ev + 3 e2e
}

TEST(EnvelopeVectors, AlternativeFormsDecodeToTheSameJob) {
  const std::string data = ReadVector("dl_http_plain.gob");
  for (const char* name : {"alt_envelope_compact_ints", "alt_envelope_reordered_keys",
                           "alt_envelope_data_as_str", "alt_envelope_array"}) {
    SCOPED_TRACE(name);
    Result<Envelope> env = DecodeEnvelope(ReadVector(std::string(name) + ".msgpack"));
    ASSERT_TRUE(env.ok()) << env.status().ToString();
    EXPECT_EQ(env->data, data);
    EXPECT_FALSE(env->id.empty());
  }
}

TEST(EnvelopeVectors, MissingOrNilDataDecodesAsNil) {
  for (const char* name : {"bad_envelope_missing_data", "bad_envelope_nil_data"}) {
    SCOPED_TRACE(name);
    Result<Envelope> env = DecodeEnvelope(ReadVector(std::string(name) + ".msgpack"));
    ASSERT_TRUE(env.ok()) << env.status().ToString();
    EXPECT_TRUE(env->data_nil);
    EXPECT_TRUE(env->data.empty());
    EXPECT_EQ(env->id.rfind("3b1f6c2e-", 0), 0u);
  }
}

TEST(EnvelopeVectors, EveryProperPrefixIsRejected) {
  const std::string bytes = ReadVector("dl_http_plain.msgpack");
  for (size_t n = 0; n < bytes.size(); ++n) {
    Result<Envelope> env = DecodeEnvelope(std::string_view(bytes).substr(0, n));
    EXPECT_FALSE(env.ok()) << "prefix of " << n << " bytes";
  }
}

TEST(EnvelopeDecode, RejectsNeverUsedCode) {
  Result<Envelope> env = DecodeEnvelope(ReadVector("bad_msgpack_garbage.msgpack"));
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().message(), "msgpack: invalid code c1 at offset 0");
}

TEST(EnvelopeDecode, RejectsAStringAtTopLevel) {
  Result<Envelope> env = DecodeEnvelope(ReadVector("bad_msgpack_not_a_map.msgpack"));
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().message(), "msgpack: envelope is str (code a5), want map or array");
}

TEST(EnvelopeDecode, RejectsTruncatedData) {
  Result<Envelope> env = DecodeEnvelope(ReadVector("bad_msgpack_truncated.msgpack"));
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().message(), "msgpack: truncated at offset 281");
}

TEST(EnvelopeDecode, RejectsEmptyInput) { EXPECT_FALSE(DecodeEnvelope("").ok()); }

TEST(EnvelopeDecode, RejectsMissingId) {
  Result<Envelope> env = DecodeEnvelope(
      "\x81\xa4"
      "Data\xc4\x01x");
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().message(), "msgpack: envelope has no ID");
  EXPECT_FALSE(DecodeEnvelope("\x81\xa2ID\xc0").ok());
}

TEST(EnvelopeDecode, RejectsIdThatIsNotAString) {
  EXPECT_FALSE(DecodeEnvelope("\x81\xa2ID\x07").ok());
}

TEST(EnvelopeDecode, RejectsHugeMapCountWithoutAllocating) {
  Result<Envelope> env = DecodeEnvelope(Bytes({0xdf, 0xff, 0xff, 0xff, 0xff, 0xa2, 'I', 'D'}));
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().message(), "msgpack: map of 4294967295 entries exceeds 3 bytes left");
}

TEST(EnvelopeDecode, RejectsHugeArrayCountInsideAnUnknownKey) {
  std::string bytes = "\x82\xa2ID\xa1j\xa1X" + Bytes({0xdd, 0xff, 0xff, 0xff, 0xff});
  Result<Envelope> env = DecodeEnvelope(bytes);
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().message(), "msgpack: array of 4294967295 entries exceeds 0 bytes left");
}

TEST(EnvelopeDecode, RejectsArrayFormWithWrongLength) {
  EXPECT_FALSE(DecodeEnvelope("\x92\xa1j\xc4\x01x").ok());
}

TEST(EnvelopeDecode, SkipsUnknownKeysOfEveryType) {
  std::string extra =
      "\xa1"
      "a\xc0"  // nil
      "\xa1"
      "b\xc3"  // true
      "\xa1"
      "c\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18"  // float64
      "\xa1"
      "d\x92\x01\x81\xa1k\x93\x01\x02\x03"  // [1, {k: [1,2,3]}]
      "\xa1"
      "e\xd6\x01\x00\x00\x00\x00"  // fixext4
      "\xa1"
      "f\xc7\x02\x05zz"s;  // ext8, 2 bytes
  std::string bytes = "\x89\xa2ID\xa1j" + extra +
                      "\xa4"
                      "Data\xc4\x01x\xa7"
                      "Attempt\x02";
  Result<Envelope> env = DecodeEnvelope(bytes);
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->id, "j");
  EXPECT_EQ(env->data, "x");
  EXPECT_EQ(env->attempt, 2);
}

TEST(EnvelopeDecode, RejectsUnknownKeyNestedTooDeep) {
  std::string bytes = "\x82\xa2ID\xa1j\xa1X" + std::string(100, '\x91') + "\xc0";
  Result<Envelope> env = DecodeEnvelope(bytes);
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().message(), "msgpack: values nested deeper than 32");
}

TEST(EnvelopeDecode, AcceptsEveryIntWidthForAttempt) {
  struct Case {
    std::string bytes;
    int64_t want;
  } cases[] = {
      {Bytes({0x05}), 5},
      {Bytes({0xff}), -1},
      {Bytes({0xe0}), -32},
      {Bytes({0xcc, 0xc8}), 200},
      {Bytes({0xcd, 0x01, 0x00}), 256},
      {Bytes({0xce, 0x00, 0x01, 0x00, 0x00}), 65536},
      {Bytes({0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), INT64_MAX},
      {Bytes({0xd0, 0x80}), -128},
      {Bytes({0xd1, 0xff, 0x00}), -256},
      {Bytes({0xd2, 0xff, 0xff, 0xff, 0xfe}), -2},
      {Bytes({0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}), INT64_MIN},
      {Bytes({0xc0}), 0},
  };
  for (const Case& c : cases) {
    Result<Envelope> env = DecodeEnvelope(EnvelopeWithAttempt(c.bytes));
    ASSERT_TRUE(env.ok()) << env.status().ToString();
    EXPECT_EQ(env->attempt, c.want);
  }
}

TEST(EnvelopeDecode, RejectsAttemptBeyondInt64OrNotAnInt) {
  EXPECT_FALSE(DecodeEnvelope(EnvelopeWithAttempt(Bytes({0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0}))).ok());
  EXPECT_FALSE(DecodeEnvelope(EnvelopeWithAttempt("\xa1"
                                                  "1"))
                   .ok());
  EXPECT_FALSE(DecodeEnvelope(EnvelopeWithAttempt(Bytes({0xca, 0, 0, 0, 0}))).ok());
}

TEST(EnvelopeDecode, AcceptsKeysAndIdAsBin) {
  Result<Envelope> env = DecodeEnvelope(
      "\x82\xc4\x02ID\xc4\x01j\xa4"
      "Data\xa1x");
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->id, "j");
  EXPECT_EQ(env->data, "x");
}

TEST(EnvelopeEncode, WritesNilDataAsC0AndEmptyDataAsBin8) {
  Envelope env{"j", "", true, 0};
  const std::string tail =
      "\xa7"
      "Attempt" +
      Bytes({0xd3, 0, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_EQ(EncodeEnvelope(env),
            "\x83\xa2ID\xa1j\xa4"
            "Data\xc0" +
                tail);
  env.data_nil = false;
  EXPECT_EQ(EncodeEnvelope(env),
            "\x83\xa2ID\xa1j\xa4"
            "Data" +
                Bytes({0xc4, 0x00}) + tail);
}

TEST(EnvelopeEncode, PicksTheShortestStrAndBinHeaders) {
  struct Case {
    size_t len;
    std::string id_header, data_header;
  } cases[] = {
      {31, Bytes({0xbf}), Bytes({0xc4, 31})},
      {32, Bytes({0xd9, 32}), Bytes({0xc4, 32})},
      {255, Bytes({0xd9, 0xff}), Bytes({0xc4, 0xff})},
      {256, Bytes({0xda, 0x01, 0x00}), Bytes({0xc5, 0x01, 0x00})},
      {65535, Bytes({0xda, 0xff, 0xff}), Bytes({0xc5, 0xff, 0xff})},
      {65536, Bytes({0xdb, 0, 1, 0, 0}), Bytes({0xc6, 0, 1, 0, 0})},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.len);
    Envelope env{std::string(c.len, 'i'), std::string(c.len, 'd'), false, -2};
    std::string bytes = EncodeEnvelope(env);
    EXPECT_EQ(bytes.substr(4, c.id_header.size()), c.id_header);
    size_t data_at = 4 + c.id_header.size() + c.len + 5;
    EXPECT_EQ(bytes.substr(data_at, c.data_header.size()), c.data_header);
    EXPECT_EQ(bytes.substr(bytes.size() - 9),
              Bytes({0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}));
    Result<Envelope> back = DecodeEnvelope(bytes);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->id, env.id);
    EXPECT_EQ(back->data, env.data);
    EXPECT_EQ(back->attempt, -2);
  }
}

// --- DecodeEnvelopeView -------------------------------------------------------

// Every tests/data/vectors/*.msgpack file name.
std::vector<std::string> MsgpackVectors() {
  const char* dir = std::getenv("DJINN_TEST_DATA");
  std::vector<std::string> names;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(dir ? dir : "tests/data") + "/vectors")) {
    if (entry.path().extension() == ".msgpack") names.push_back(entry.path().filename());
  }
  return names;
}

// DecodeEnvelopeView(bytes) says what DecodeEnvelope(bytes) says, and its
// ID and Data point into `bytes`.
void ExpectViewMatchesCopy(std::string_view bytes) {
  Result<EnvelopeView> view = DecodeEnvelopeView(bytes);
  Result<Envelope> copy = DecodeEnvelope(bytes);
  ASSERT_EQ(view.ok(), copy.ok());
  if (!copy.ok()) {
    EXPECT_EQ(view.status().message(), copy.status().message());
    EXPECT_TRUE(view.status().poison());
    return;
  }
  EXPECT_EQ(view->id, copy->id);
  EXPECT_EQ(view->data, copy->data);
  EXPECT_EQ(view->data_nil, copy->data_nil);
  EXPECT_EQ(view->attempt, copy->attempt);
  EXPECT_EQ(EncodeEnvelope(*view), EncodeEnvelope(*copy));
  auto inside = [&](std::string_view s) {
    std::less_equal<const char*> le;
    return s.empty() ||
           (le(bytes.data(), s.data()) && le(s.data() + s.size(), bytes.data() + bytes.size()));
  };
  EXPECT_TRUE(inside(view->id));
  EXPECT_TRUE(inside(view->data));
}

TEST(EnvelopeView, EveryVectorDecodesAsThroughDecodeEnvelope) {
  const std::vector<std::string> names = MsgpackVectors();
  EXPECT_EQ(names.size(), 39u);
  int decoded = 0;
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const std::string bytes = ReadVector(name);
    ExpectViewMatchesCopy(bytes);
    decoded += DecodeEnvelopeView(bytes).ok();
  }
  EXPECT_EQ(decoded, 36);  // the other three are rejected at the msgpack stage
}

TEST(EnvelopeView, PrefixesAndByteMutationsOfEveryVectorDecodeAsThroughDecodeEnvelope) {
  for (const std::string& name : MsgpackVectors()) {
    SCOPED_TRACE(name);
    std::string bytes = ReadVector(name);
    if (bytes.size() > 4096) continue;
    for (size_t n = 0; n < bytes.size(); ++n) {
      ExpectViewMatchesCopy(std::string_view(bytes).substr(0, n));
    }
    for (size_t i = 0; i < bytes.size(); ++i) {
      const char saved = bytes[i];
      for (int b : {0x00, 0x7f, 0x80, 0xc0, 0xdf, 0xff, saved ^ 0x01}) {
        bytes[i] = static_cast<char>(b);
        ExpectViewMatchesCopy(bytes);
      }
      bytes[i] = saved;
    }
  }
}

TEST(EnvelopeView, ReencodesWithANewAttemptAsTheMasterDoes) {
  const std::string bytes = ReadVector("dl_http_plain.msgpack");
  Result<EnvelopeView> view = DecodeEnvelopeView(bytes);
  Result<Envelope> copy = DecodeEnvelope(bytes);
  ASSERT_TRUE(view.ok() && copy.ok());
  view->attempt = NextAttempt(*view);
  copy->attempt = NextAttempt(*copy);
  EXPECT_EQ(view->attempt, 1);
  const std::string again = EncodeEnvelope(*view);
  EXPECT_EQ(again, EncodeEnvelope(*copy));
  Result<Envelope> back = DecodeEnvelope(again);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->data, copy->data);
  EXPECT_EQ(back->attempt, 1);
}

}  // namespace
}  // namespace djinn
