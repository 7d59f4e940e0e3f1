// common/webhook.h: the images webhook's key, secret, body, signature and
// recorded headers, against the vectors Go's own encoders wrote
// (tests/data/webhooks/cases.json, a byte-exact copy of the shared set).
//
// The cases the vectors do not cover (control characters, invalid UTF-8,
// U+2028, extreme ids and years, an empty secret) expect what go1.19.8
// (Debian's golang-1.19-go, the toolchain of the job vectors) printed for a
// copy of Djinn's Image.MarshalJSON and handleDelivery: json.NewEncoder(&buf)
// .Encode(map[string]any{"image": img, "action": "downloaded"}), hmac.New
// (sha256.New, secret), http.Header.Write, and cipher.NewGCM Seal with a
// zero nonce for the sealed secrets.
#include "common/webhook.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace djinn {
namespace {

using nlohmann::json;
using namespace std::string_literals;

// A file of tests/data/webhooks ($DJINN_TEST_DATA overrides tests/data).
std::string ReadWebhookData(const std::string& name) {
  const char* dir = std::getenv("DJINN_TEST_DATA");
  const std::string path = std::string(dir ? dir : "tests/data") + "/webhooks/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// cases.json (an empty object, with a test failure, when unreadable).
const json& Cases() {
  static const json doc = [] {
    json parsed = json::parse(ReadWebhookData("cases.json"), nullptr, false);
    return parsed.is_object()
               ? parsed
               : json::object({{"crypto", json::array()}, {"events", json::array()}});
  }();
  EXPECT_FALSE(doc["crypto"].empty()) << "cases.json has no crypto vectors";
  EXPECT_FALSE(doc["events"].empty()) << "cases.json has no event vectors";
  return doc;
}

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

std::string Hex(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

ImageRow RowOf(const json& j) {
  ImageRow row;
  row.id = j["id"].get<int64_t>();
  row.user_id = j["user_id"].get<int64_t>();
  row.author_id = j["author_id"].get<int64_t>();
  if (!j["namespace_id"].is_null()) row.namespace_id = j["namespace_id"].get<int64_t>();
  row.driver = j["driver"].get<std::string>();
  row.hash = j["hash"].get<std::string>();
  row.name = j["name"].get<std::string>();
  row.created_at = j["created_at"].get<std::string>();
  return row;
}

std::vector<json> DeliveredEvents() {
  std::vector<json> out;
  for (const json& e : Cases()["events"]) {
    if (e["delivered"].get<bool>()) out.push_back(e);
  }
  EXPECT_FALSE(out.empty());
  return out;
}

// The failure every bad secret must give: kPermanent, one line, and none of
// the plaintext in it.
void ExpectCleanFailure(const Result<std::string>& r, const std::string& plaintext) {
  ASSERT_FALSE(r.ok()) << "accepted, gave " << Hex(r.value());
  EXPECT_TRUE(r.status().permanent()) << r.status().ToString();
  EXPECT_FALSE(r.status().message().empty());
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos) << r.status().message();
  if (!plaintext.empty()) {
    EXPECT_EQ(r.status().message().find(plaintext), std::string::npos) << r.status().message();
  }
}

// The key and sealed value of the first crypto vector.
struct Sealed {
  std::string key, sealed, plaintext;
};
Sealed FirstVector() {
  const json& c = Cases()["crypto"][0];
  return {Unhex(c["key_hex"].get<std::string>()), Unhex(c["ciphertext_hex"].get<std::string>()),
          c["plaintext"].get<std::string>()};
}

// An image as the go1.19.8 cases below had it.
ImageRow GoCaseRow(int64_t id = 1, std::string name = "x",
                   std::string created_at = "2026-11-30 21:04:05") {
  ImageRow row;
  row.id = id;
  row.user_id = 3;
  row.author_id = 5;
  row.namespace_id = 9;
  row.driver = "qemu";
  row.hash = "h";
  row.name = std::move(name);
  row.created_at = std::move(created_at);
  return row;
}

std::string BodyOf(const ImageRow& row, std::string_view api_server = "https://a") {
  Result<std::string> body = ImageEventBody(row, api_server);
  EXPECT_TRUE(body.ok()) << body.status().message();
  return body.ok() ? *body : "";
}

// Go's body for GoCaseRow(1, name-as-Go-wrote-it, created_at-as-Go-wrote-it).
std::string GoCaseBody(const std::string& name_json,
                       const std::string& created_at_json = R"("2026-11-30T21:04:05Z")") {
  return R"({"action":"downloaded","image":{"author":null,"author_id":5,"created_at":)" +
         created_at_json + R"(,"download":null,"driver":"qemu","id":1,"name":)" + name_json +
         R"(,"namespace":null,"namespace_id":9,"url":"https://a/images/1","user":null,)"
         R"("user_id":3}})"
         "\n";
}

// ---------------------------------------------------------------- crypto

TEST(WebhookKey, DerivesEveryVectorKey) {
  for (const json& c : Cases()["crypto"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    Result<std::string> key =
        DeriveWebhookKey(c["block"].get<std::string>(), c["salt"].get<std::string>());
    ASSERT_TRUE(key.ok()) << key.status().message();
    EXPECT_EQ(key->size(), kWebhookKeySize);
    EXPECT_EQ(Hex(*key), c["key_hex"].get<std::string>());
  }
}

TEST(WebhookSecret, DecryptsEveryVector) {
  for (const json& c : Cases()["crypto"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::string sealed = Unhex(c["ciphertext_hex"].get<std::string>());
    ASSERT_EQ(Hex(sealed.substr(0, kWebhookNonceSize)), c["nonce_hex"].get<std::string>());
    Result<std::string> plain =
        DecryptWebhookSecret(Unhex(c["key_hex"].get<std::string>()), sealed);
    ASSERT_TRUE(plain.ok()) << plain.status().message();
    EXPECT_EQ(*plain, c["plaintext"].get<std::string>());
  }
}

TEST(WebhookSecret, DecryptsWithTheKeyDerivedFromTheBlock) {
  for (const json& c : Cases()["crypto"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    Result<std::string> key =
        DeriveWebhookKey(c["block"].get<std::string>(), c["salt"].get<std::string>());
    ASSERT_TRUE(key.ok()) << key.status().message();
    Result<std::string> plain =
        DecryptWebhookSecret(*key, Unhex(c["ciphertext_hex"].get<std::string>()));
    ASSERT_TRUE(plain.ok()) << plain.status().message();
    EXPECT_EQ(*plain, c["plaintext"].get<std::string>());
  }
}

TEST(WebhookSecret, DecryptsAnEmptySecret) {
  // go1.19.8: gcm.Seal(nonce, nonce = 12 zero bytes, "", nil), block32's key.
  const Sealed v = FirstVector();
  Result<std::string> plain = DecryptWebhookSecret(
      v.key, Unhex("00000000000000000000000099be4742363be7822fbca01802394683"));
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  EXPECT_EQ(*plain, "");
}

TEST(WebhookSecret, DecryptsArbitraryBytes) {
  // go1.19.8: as above, plaintext "\x00\xff bin".
  const Sealed v = FirstVector();
  Result<std::string> plain = DecryptWebhookSecret(
      v.key, Unhex("0000000000000000000000006613ea72d3aeb7506786416f1c472d3e5953330521cf"));
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  EXPECT_EQ(*plain, std::string("\x00\xff bin", 6));
}

TEST(WebhookSecret, AnyAlteredByteFailsToVerify) {
  // Nonce, ciphertext and tag alike.
  const Sealed v = FirstVector();
  for (size_t i = 0; i < v.sealed.size(); ++i) {
    SCOPED_TRACE("byte " + std::to_string(i));
    std::string altered = v.sealed;
    altered[i] = static_cast<char>(altered[i] ^ 0x01);
    ExpectCleanFailure(DecryptWebhookSecret(v.key, altered), v.plaintext);
  }
}

TEST(WebhookSecret, TruncatedOrExtendedValueFailsToVerify) {
  const Sealed v = FirstVector();
  ExpectCleanFailure(DecryptWebhookSecret(v.key, v.sealed.substr(0, v.sealed.size() - 1)),
                     v.plaintext);
  ExpectCleanFailure(DecryptWebhookSecret(v.key, v.sealed + '\0'), v.plaintext);
}

TEST(WebhookSecret, WrongKeyFailsToVerify) {
  const Sealed v = FirstVector();
  // block16's key: right size, wrong key.
  const std::string other = Unhex(Cases()["crypto"][1]["key_hex"].get<std::string>());
  ASSERT_NE(other, v.key);
  ExpectCleanFailure(DecryptWebhookSecret(other, v.sealed), v.plaintext);
  std::string flipped = v.key;
  flipped[31] = static_cast<char>(flipped[31] ^ 0x80);
  ExpectCleanFailure(DecryptWebhookSecret(flipped, v.sealed), v.plaintext);
}

TEST(WebhookSecret, KeyOfWrongSizeIsRefused) {
  const Sealed v = FirstVector();
  for (size_t size : {size_t{0}, size_t{16}, size_t{24}, size_t{31}, size_t{33}}) {
    SCOPED_TRACE("key of " + std::to_string(size) + " bytes");
    ExpectCleanFailure(DecryptWebhookSecret(std::string(size, 'k'), v.sealed), v.plaintext);
  }
}

TEST(WebhookSecret, TooShortValueIsRefused) {
  const Sealed v = FirstVector();
  for (size_t size : {size_t{0}, size_t{1}, size_t{12}, size_t{27}}) {
    SCOPED_TRACE(std::to_string(size) + " bytes");
    Result<std::string> r = DecryptWebhookSecret(v.key, v.sealed.substr(0, size));
    ExpectCleanFailure(r, "");
    EXPECT_NE(r.status().message().find("too short"), std::string::npos) << r.status().message();
  }
}

// ------------------------------------------------------ the event vectors

TEST(WebhookVectors, BodyIsByteIdentical) {
  for (const json& e : DeliveredEvents()) {
    SCOPED_TRACE(e["name"].get<std::string>());
    EXPECT_EQ(BodyOf(RowOf(e["image"]), e["api_server"].get<std::string>()),
              e["body"].get<std::string>());
  }
}

TEST(WebhookVectors, BodyOfImageWithoutNamespaceHasNullNamespaceId) {
  // The undelivered vector still says what its body would be.
  for (const json& e : Cases()["events"]) {
    if (e["delivered"].get<bool>()) continue;
    SCOPED_TRACE(e["name"].get<std::string>());
    ImageRow row = RowOf(e["image"]);
    ASSERT_FALSE(row.namespace_id.has_value());
    EXPECT_EQ(BodyOf(row, e["api_server"].get<std::string>()), e["body"].get<std::string>());
  }
}

TEST(WebhookVectors, SignatureIsIdenticalWhenSecretIsSet) {
  int signed_events = 0;
  for (const json& e : DeliveredEvents()) {
    if (e["secret"].is_null()) continue;
    SCOPED_TRACE(e["name"].get<std::string>());
    Result<std::string> sig =
        WebhookSignature(e["secret"].get<std::string>(), e["body"].get<std::string>());
    ASSERT_TRUE(sig.ok()) << sig.status().message();
    EXPECT_EQ(*sig, e["signature"].get<std::string>());
    ++signed_events;
  }
  EXPECT_GT(signed_events, 0);
}

TEST(WebhookVectors, RequestHeadersAreIdentical) {
  for (const json& e : DeliveredEvents()) {
    SCOPED_TRACE(e["name"].get<std::string>());
    const std::string body = e["body"].get<std::string>();
    std::string signature;
    if (!e["secret"].is_null()) {
      Result<std::string> sig = WebhookSignature(e["secret"].get<std::string>(), body);
      ASSERT_TRUE(sig.ok()) << sig.status().message();
      signature = *sig;
    }
    const std::string headers =
        WebhookRequestHeaders(body.size(), e["hook_id"].get<int64_t>(), signature);
    EXPECT_EQ(headers, e["request_headers"].get<std::string>());
    EXPECT_EQ(headers.find("Signature") != std::string::npos, !e["secret"].is_null());
  }
}

TEST(WebhookVectors, StoredSecretSignsTheBodyAsGoDid) {
  // The whole chain: crypto block -> key -> stored secret -> signature.
  int chained = 0;
  for (const json& e : DeliveredEvents()) {
    if (e["secret"].is_null()) continue;
    for (const json& c : Cases()["crypto"]) {
      if (c["plaintext"] != e["secret"]) continue;
      SCOPED_TRACE(e["name"].get<std::string>() + " with " + c["name"].get<std::string>());
      Result<std::string> key =
          DeriveWebhookKey(c["block"].get<std::string>(), c["salt"].get<std::string>());
      ASSERT_TRUE(key.ok()) << key.status().message();
      Result<std::string> secret =
          DecryptWebhookSecret(*key, Unhex(c["ciphertext_hex"].get<std::string>()));
      ASSERT_TRUE(secret.ok()) << secret.status().message();
      Result<std::string> body =
          ImageEventBody(RowOf(e["image"]), e["api_server"].get<std::string>());
      ASSERT_TRUE(body.ok()) << body.status().message();
      Result<std::string> sig = WebhookSignature(*secret, *body);
      ASSERT_TRUE(sig.ok()) << sig.status().message();
      EXPECT_EQ(*sig, e["signature"].get<std::string>());
      ++chained;
    }
  }
  EXPECT_GT(chained, 0);
}

// ------------------------------------------ what the vectors do not cover

TEST(WebhookBody, ZeroFractionIsDropped) {
  const std::string want = GoCaseBody(R"("x")");
  EXPECT_EQ(BodyOf(GoCaseRow(1, "x", "2026-11-30 21:04:05.000000")), want);
  EXPECT_EQ(BodyOf(GoCaseRow(1, "x", "2026-11-30 21:04:05.0")), want);
  EXPECT_EQ(BodyOf(GoCaseRow(1, "x", "2026-11-30 21:04:05")), want);
}

TEST(WebhookBody, TrailingZerosOfFractionAreTrimmed) {
  EXPECT_EQ(BodyOf(GoCaseRow(1, "x", "2026-11-30 21:04:05.120000")),
            GoCaseBody(R"("x")", R"("2026-11-30T21:04:05.12Z")"));
  EXPECT_EQ(BodyOf(GoCaseRow(1, "x", "2026-11-30 21:04:05.000001")),
            GoCaseBody(R"("x")", R"("2026-11-30T21:04:05.000001Z")"));
}

TEST(WebhookBody, YearsAtGoLimitsAreWritten) {
  EXPECT_EQ(BodyOf(GoCaseRow(1, "x", "0001-01-01 00:00:00")),
            GoCaseBody(R"("x")", R"("0001-01-01T00:00:00Z")"));
  EXPECT_EQ(BodyOf(GoCaseRow(1, "x", "9999-12-31 23:59:59.999999")),
            GoCaseBody(R"("x")", R"("9999-12-31T23:59:59.999999Z")"));
  // PostgreSQL's 1 BC is Go's year 0 (both count proleptic Gregorian).
  EXPECT_EQ(BodyOf(GoCaseRow(1, "x", "0001-01-01 00:00:00 BC")),
            GoCaseBody(R"("x")", R"("0000-01-01T00:00:00Z")"));
  EXPECT_EQ(BodyOf(GoCaseRow(1, "x", "0001-02-29 00:00:00 BC")),
            GoCaseBody(R"("x")", R"("0000-02-29T00:00:00Z")"));
}

TEST(WebhookBody, YearOutsideGoRangeIsRefused) {
  // go1.19.8's Time.MarshalJSON: "year outside of range [0,9999]" (and
  // Djinn's consumer, ignoring the error, posts an empty body).
  for (const char* ts :
       {"10000-01-01 00:00:00", "294276-12-31 23:59:59.999999", "0002-12-31 23:59:59 BC"}) {
    SCOPED_TRACE(ts);
    Result<std::string> r = ImageEventBody(GoCaseRow(1, "x", ts), "https://a");
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.status().permanent());
    EXPECT_NE(r.status().message().find("0 to 9999"), std::string::npos) << r.status().message();
  }
}

TEST(WebhookBody, MalformedCreatedAtIsRefusedOnOneLine) {
  for (const char* ts : {"",
                         "infinity",
                         "-infinity",
                         "2026-11-30T21:04:05",
                         "2026-11-30 21:04:05Z",
                         "2026-11-30 21:04:05+00",
                         "2026-11-30 21:04:05.",
                         "2026-11-30 21:04:05.1234567",
                         "2026-11-30 21:04",
                         "26-11-30 21:04:05",
                         "2026-1-30 21:04:05",
                         "2026-13-01 00:00:00",
                         "2026-00-01 00:00:00",
                         "2026-02-29 00:00:00",
                         "2026-04-31 00:00:00",
                         "2026-11-30 24:00:00",
                         "2026-11-30 23:60:00",
                         "2026-11-30 23:59:60",
                         "0000-01-01 00:00:00",
                         "2026-11-30 21:04:05 AD",
                         "Mon Nov 30 21:04:05 2026",
                         "2026-11-30 21:04:05\n",
                         "2026-11-30\n21:04:05"}) {
    SCOPED_TRACE(::testing::PrintToString(std::string(ts)));
    Result<std::string> r = ImageEventBody(GoCaseRow(601, "x", ts), "https://a");
    ASSERT_FALSE(r.ok()) << *r;
    EXPECT_TRUE(r.status().permanent());
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos) << r.status().message();
    EXPECT_EQ(r.status().message().rfind("image 601: created_at ", 0), 0u) << r.status().message();
  }
}

TEST(WebhookBody, ControlCharactersAreEscapedAsGo119Does) {
  // Go < 1.22 has no short forms for \b and \f; DEL and '/' go as they are.
  const std::string name = "a\x00\x01\x07\b\t\n\v\f\r\x1b\x1f\x7f\"\\/z"s;
  EXPECT_EQ(BodyOf(GoCaseRow(1, name)),
            GoCaseBody("\"a\\u0000\\u0001\\u0007\\u0008\\t\\n\\u000b\\u000c\\r\\u001b\\u001f"
                       "\x7f\\\"\\\\/z\""));
}

TEST(WebhookBody, HtmlCharactersAreEscaped) {
  EXPECT_EQ(BodyOf(GoCaseRow(1, "<a href='x'>&amp;</a>")),
            GoCaseBody(R"("\u003ca href='x'\u003e\u0026amp;\u003c/a\u003e")"));
}

TEST(WebhookBody, InvalidUtf8BecomesOneReplacementPerByte) {
  // A lone byte, a truncated 3-byte sequence, a surrogate, an overlong '/',
  // a code point above U+10FFFF, a valid U+FFFD and emoji, a stray
  // continuation byte at the end.
  const std::string name =
      "a\xff"
      "b\xe2\x82"
      "c\xed\xa0\x80"
      "d\xc0\xaf"
      "e\xf4\x90\x80\x80"
      "f\xef\xbf\xbd"
      "g\xf0\x9f\x98\x80"
      "h\x80";
  EXPECT_EQ(BodyOf(GoCaseRow(1, name)),
            GoCaseBody(R"("a\ufffdb\ufffd\ufffdc\ufffd\ufffd\ufffdd\ufffd\ufffde)"
                       R"(\ufffd\ufffd\ufffd\ufffdf)"
                       "\xef\xbf\xbd"
                       "g\xf0\x9f\x98\x80"
                       R"(h\ufffd")"));
}

TEST(WebhookBody, LineAndParagraphSeparatorsAreEscaped) {
  // U+2027 and U+202A, their neighbours, go as they are.
  EXPECT_EQ(BodyOf(GoCaseRow(1, "a\u2028b\u2029c\u2027d\u202ae")),
            GoCaseBody("\"a\\u2028b\\u2029c\u2027d\u202ae\""));
}

TEST(WebhookBody, ExtremeIdsArePrintedInFull) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  ImageRow row = GoCaseRow(kMin);
  row.namespace_id = kMin;
  EXPECT_EQ(BodyOf(row),
            R"({"action":"downloaded","image":{"author":null,"author_id":5,)"
            R"("created_at":"2026-11-30T21:04:05Z","download":null,"driver":"qemu",)"
            R"("id":-9223372036854775808,"name":"x","namespace":null,)"
            R"("namespace_id":-9223372036854775808,)"
            R"("url":"https://a/images/-9223372036854775808","user":null,"user_id":3}})"
            "\n");
  row = GoCaseRow(std::numeric_limits<int64_t>::max());
  row.driver = "docker";
  EXPECT_EQ(BodyOf(row), R"({"action":"downloaded","image":{"author":null,"author_id":5,)"
                         R"("created_at":"2026-11-30T21:04:05Z","download":null,"driver":"docker",)"
                         R"("id":9223372036854775807,"name":"x","namespace":null,"namespace_id":9,)"
                         R"("url":"https://a/images/9223372036854775807","user":null,"user_id":3}})"
                         "\n");
}

TEST(WebhookBody, ApiServerIsEscapedLikeAnyString) {
  // Concatenated as is (no slash added or removed), then escaped.
  ImageRow row = GoCaseRow(5);
  row.namespace_id.reset();
  row.driver = "os";
  EXPECT_EQ(BodyOf(row, "https://h/?a=1&b=<2>/\u2028\xff"),
            R"({"action":"downloaded","image":{"author":null,"author_id":5,)"
            R"("created_at":"2026-11-30T21:04:05Z","download":null,"driver":"os","id":5,)"
            R"("name":"x","namespace":null,"namespace_id":null,)"
            R"("url":"https://h/?a=1\u0026b=\u003c2\u003e/\u2028\ufffd/images/5",)"
            R"("user":null,"user_id":3}})"
            "\n");
}

TEST(WebhookBody, HashIsNotPartOfTheBody) {
  ImageRow a = GoCaseRow();
  ImageRow b = a;
  b.hash = "something-else";
  EXPECT_EQ(BodyOf(a), BodyOf(b));
}

// -------------------------------------------------- signature and headers

TEST(WebhookSignature, EmptySecretSignsAsGoDoes) {
  // go1.19.8, the ExtremeIdsArePrintedInFull body with min ids, secret "".
  const std::string body =
      R"({"action":"downloaded","image":{"author":null,"author_id":5,)"
      R"("created_at":"2026-11-30T21:04:05Z","download":null,"driver":"qemu",)"
      R"("id":-9223372036854775808,"name":"x","namespace":null,)"
      R"("namespace_id":-9223372036854775808,)"
      R"("url":"https://a/images/-9223372036854775808","user":null,"user_id":3}})"
      "\n";
  Result<std::string> sig = WebhookSignature("", body);
  ASSERT_TRUE(sig.ok()) << sig.status().message();
  EXPECT_EQ(*sig, "sha256=ad2123c65cc9e68981649f72655f27b5073767b72cf9a56a7d58aa4fb1026a4b");
}

TEST(WebhookSignature, IsLowercaseHexOfSha256) {
  Result<std::string> sig = WebhookSignature("k", "");
  ASSERT_TRUE(sig.ok()) << sig.status().message();
  ASSERT_EQ(sig->size(), 7u + 64u);
  EXPECT_EQ(sig->substr(0, 7), "sha256=");
  EXPECT_EQ(sig->find_first_not_of("0123456789abcdef", 7), std::string::npos) << *sig;
}

TEST(WebhookHeaders, ExtremeHookIdsAndLengthsArePrintedInFull) {
  // go1.19.8: hook id math.MinInt64, empty secret's signature.
  EXPECT_EQ(WebhookRequestHeaders(
                290, std::numeric_limits<int64_t>::min(),
                "sha256=ad2123c65cc9e68981649f72655f27b5073767b72cf9a56a7d58aa4fb1026a4b"),
            "Accept: */*\r\nContent-Length: 290\r\n"
            "Content-Type: application/json; charset=utf-8\r\nUser-Agent: Djinn-CI-Hook\r\n"
            "X-Djinn-CI-Event: images\r\nX-Djinn-CI-Hook-ID: -9223372036854775808\r\n"
            "X-Djinn-Ci-Signature: "
            "sha256=ad2123c65cc9e68981649f72655f27b5073767b72cf9a56a7d58aa4fb1026a4b\r\n");
  EXPECT_EQ(WebhookRequestHeaders(0, std::numeric_limits<int64_t>::max(), ""),
            "Accept: */*\r\nContent-Length: 0\r\n"
            "Content-Type: application/json; charset=utf-8\r\nUser-Agent: Djinn-CI-Hook\r\n"
            "X-Djinn-CI-Event: images\r\nX-Djinn-CI-Hook-ID: 9223372036854775807\r\n");
}

TEST(WebhookHeaders, SignatureIsCleanedAsHeaderWriteDoes) {
  // go1.19.8 Header.Write of " \tsha256=ab\r\ncd\n ": newlines to spaces,
  // then trimmed. No header can be smuggled in.
  const std::string headers = WebhookRequestHeaders(1, 2, " \tsha256=ab\r\ncd\n ");
  EXPECT_EQ(headers.substr(headers.find("X-Djinn-Ci-Signature")),
            "X-Djinn-Ci-Signature: sha256=ab  cd\r\n");
}

TEST(WebhookEvents, ImagesIsBit512) {
  EXPECT_EQ(kImagesEvent, 512);
  EXPECT_EQ(kImagesEvent, int64_t{1} << 9);
}

TEST(WebhookEventIdTest, IsAStableVersion5UuidPerDownloadEnd) {
  std::string a = WebhookEventId(42, "2026-12-03 19:00:00.123456");
  EXPECT_EQ(a.size(), 36u);
  EXPECT_EQ(a[8], '-');
  EXPECT_EQ(a[14], '5');  // version
  EXPECT_NE(std::string("89ab").find(a[19]), std::string::npos);  // variant
  EXPECT_EQ(a, WebhookEventId(42, "2026-12-03 19:00:00.123456"));
  EXPECT_NE(a, WebhookEventId(43, "2026-12-03 19:00:00.123456"));
  EXPECT_NE(a, WebhookEventId(42, "2026-12-03 19:00:00.123457"));
}

}  // namespace
}  // namespace djinn
