// worker/webhook_send.h: PostWebhook against the real test HTTP(S) server
// (tests/harness/httpd.py, its /hook* receivers) on 127.0.0.1. The server
// records every webhook request byte for byte, so the tests check what went
// on the wire, not what libcurl says it sent.
//
// One plain server is shared by the suite; each test uses its own receiver
// key (the test's name). The https tests start their own server with a
// throw-away CA.
#include "worker/webhook_send.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/tls.h"

namespace djinn::testing {
namespace {

using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// What http_server's /hook* routes answer (see httpd.py), in Go's
// Header.Write form: canonical keys, sorted, values trimmed.
constexpr char kHookAnswerHeaders[] =
    "Content-Length: 7\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "X-Custom-Thing: a\r\n"
    "X-Repeated: one\r\n"
    "X-Repeated: two\r\n"
    "X-Spaced: padded\r\n";

class WebhookSendTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    files_ = std::make_unique<TempDir>("djinn-webhook-files");
    http_ = std::make_unique<HttpServer>();
    ASSERT_TRUE(http_->Start(files_->path()));
  }
  static void TearDownTestSuite() {
    http_.reset();
    files_.reset();
  }

  // This test's receiver key.
  static std::string Key() {
    return ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  static std::string Host(const HttpServer& server) {
    return "127.0.0.1:" + std::to_string(server.port());
  }
  // A request to the shared server, loopback allowed.
  static WebhookRequest To(const std::string& path) {
    WebhookRequest r;
    r.url = http_->url(path);
    r.allow_private = true;
    r.timeout_seconds = 10;
    return r;
  }

  static std::unique_ptr<TempDir> files_;
  static std::unique_ptr<HttpServer> http_;
};

std::unique_ptr<TempDir> WebhookSendTest::files_;
std::unique_ptr<HttpServer> WebhookSendTest::http_;

// The https receiver: a server of its own with a throw-away CA.
class WebhookSendTlsTest : public WebhookSendTest {
 protected:
  void SetUp() override {
    certs_ = GenerateTestCa(certs_dir_.path());
    ASSERT_TRUE(certs_.ok()) << certs_.error;
    ASSERT_TRUE(https_.Start(files_->path(), &certs_));
  }
  WebhookRequest ToHttps(const std::string& path) {
    WebhookRequest r;
    r.url = https_.url(path);
    r.allow_private = true;
    r.timeout_seconds = 10;
    return r;
  }

  TempDir certs_dir_{"djinn-webhook-ca"};
  TestCerts certs_;
  HttpServer https_;
};

TEST_F(WebhookSendTest, HeadersAndBodyArriveByteExactInOrder) {
  static const char kBody[] = "{\"action\":\"downloaded\"}\n\0\r\n\xff tail";
  WebhookRequest r = To("/hook/" + Key());
  r.body = std::string(kBody, sizeof kBody - 1);
  r.headers = {{"Accept", "*/*"},
               {"Content-Length", std::to_string(r.body.size())},
               {"Content-Type", "application/json; charset=utf-8"},
               {"User-Agent", "Djinn-CI-Hook"},
               {"X-Djinn-CI-Event", "images"},
               {"X-Djinn-CI-Hook-ID", "42"},
               {"X-Djinn-Ci-Signature", "sha256=00ff"},
               {"a-lower-case-name", "  spaced value\t"},
               {"X-Empty", ""}};

  WebhookResponse resp = PostWebhook(r);
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();

  std::vector<HttpServer::HookRequest> got = http_->HookRequests(Key());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].request_line, "POST /hook/" + Key() + " HTTP/1.1");
  EXPECT_EQ(got[0].header_block, "Host: " + Host(*http_) +
                                     "\r\n"
                                     "Accept: */*\r\n"
                                     "Content-Length: 33\r\n"
                                     "Content-Type: application/json; charset=utf-8\r\n"
                                     "User-Agent: Djinn-CI-Hook\r\n"
                                     "X-Djinn-CI-Event: images\r\n"
                                     "X-Djinn-CI-Hook-ID: 42\r\n"
                                     "X-Djinn-Ci-Signature: sha256=00ff\r\n"
                                     "a-lower-case-name:   spaced value\t\r\n"
                                     "X-Empty:\r\n");
  EXPECT_EQ(got[0].body, r.body);
}

TEST_F(WebhookSendTest, NothingButHostAndContentLengthIsAdded) {
  // Big enough for libcurl's "Expect: 100-continue" (over 1 MiB).
  WebhookRequest r = To("/hook/" + Key());
  r.body = std::string(2 << 20, 'x');
  r.headers = {{"X-One", "1"}};

  WebhookResponse resp = PostWebhook(r);
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();

  std::vector<HttpServer::HookRequest> got = http_->HookRequests(Key());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].header_block,
            "Host: " + Host(*http_) + "\r\nX-One: 1\r\nContent-Length: 2097152\r\n");
  EXPECT_EQ(got[0].body.size(), r.body.size());
}

TEST_F(WebhookSendTest, UrlUserinfoIsSentAsBasicAuth) {
  WebhookRequest r = To("/hook/" + Key());
  r.url = "http://user:p%40ss@" + Host(*http_) + "/hook/" + Key();
  r.headers = {{"X-One", "1"}};

  WebhookResponse resp = PostWebhook(r);
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();

  std::vector<HttpServer::HookRequest> got = http_->HookRequests(Key());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].request_line, "POST /hook/" + Key() + " HTTP/1.1");
  EXPECT_NE(got[0].header_block.find("\r\nAuthorization: Basic dXNlcjpwQHNz\r\n"),
            std::string::npos)
      << got[0].header_block;
}

TEST_F(WebhookSendTest, AnswerIsReportedWithHeadersInGoFormat) {
  WebhookResponse resp = PostWebhook(To("/hook/" + Key()));
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();
  EXPECT_EQ(resp.code, 200);
  EXPECT_EQ(resp.headers, kHookAnswerHeaders);
  EXPECT_EQ(resp.body, "thanks\n");
}

TEST_F(WebhookSendTest, DurationCoversTheWholeExchange) {
  WebhookResponse resp = PostWebhook(To("/hook-slow/300/" + Key()));
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();
  EXPECT_EQ(resp.code, 200);
  EXPECT_GE(resp.duration_ns, 300'000'000);
  EXPECT_LT(resp.duration_ns, 10'000'000'000);
}

TEST_F(WebhookSendTest, ServerErrorIsAnAnswer) {
  WebhookResponse resp = PostWebhook(To("/hook-status/500/" + Key()));
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();
  EXPECT_EQ(resp.code, 500);
  EXPECT_EQ(resp.body, "status 500\n");
  EXPECT_NE(resp.headers.find("Content-Length: 11\r\n"), std::string::npos) << resp.headers;
  EXPECT_GT(resp.duration_ns, 0);
}

TEST_F(WebhookSendTest, NotFoundIsAnAnswer) {
  WebhookResponse resp = PostWebhook(To("/hook-status/404/" + Key()));
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();
  EXPECT_EQ(resp.code, 404);
  EXPECT_EQ(resp.body, "status 404\n");
}

TEST_F(WebhookSendTest, RedirectIsReportedNotFollowed) {
  WebhookResponse resp = PostWebhook(To("/hook-status/302/" + Key()));
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();
  EXPECT_EQ(resp.code, 302);
  EXPECT_NE(resp.headers.find("Location: /hook/" + Key() + "-moved\r\n"), std::string::npos)
      << resp.headers;
  EXPECT_EQ(http_->HookRequests(Key()).size(), 1u);
  EXPECT_TRUE(http_->HookRequests(Key() + "-moved").empty());
}

TEST_F(WebhookSendTest, EachCallIsOneAttempt) {
  EXPECT_EQ(PostWebhook(To("/hook-flaky/1/" + Key())).code, 500);
  EXPECT_EQ(PostWebhook(To("/hook-flaky/1/" + Key())).code, 200);
  EXPECT_EQ(http_->HookRequests(Key()).size(), 2u);
}

TEST_F(WebhookSendTest, BodyOverLimitIsCutTo64KiB) {
  WebhookResponse resp = PostWebhook(To("/big/200000"));
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();
  EXPECT_EQ(resp.code, 200);
  ASSERT_EQ(resp.body.size(), kMaxWebhookResponseBody);
  EXPECT_EQ(resp.body, HttpServer::BigBody(kMaxWebhookResponseBody));
  EXPECT_NE(resp.headers.find("Content-Length: 200000\r\n"), std::string::npos) << resp.headers;
}

TEST_F(WebhookSendTest, ChunkedAnswerHasNoTransferEncodingHeader) {
  WebhookResponse resp = PostWebhook(To("/big/1000?chunked=1"));
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();
  EXPECT_EQ(resp.body, HttpServer::BigBody(1000));
  EXPECT_EQ(resp.headers.find("Transfer-Encoding"), std::string::npos) << resp.headers;
  EXPECT_EQ(resp.headers.find("Content-Length"), std::string::npos) << resp.headers;
  EXPECT_NE(resp.headers.find("Content-Type: application/x-qemu-disk\r\n"), std::string::npos)
      << resp.headers;
}

// The refusal names the URL's host, never the address it resolved to: the
// error is stored where the hook's owner reads it.
TEST_F(WebhookSendTest, LoopbackIsRefusedWithoutAllowPrivate) {
  WebhookRequest r = To("/hook/" + Key());
  r.url = "http://localhost:" + std::to_string(http_->port()) + "/hook/" + Key();
  r.allow_private = false;

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.permanent()) << resp.error.ToString();
  EXPECT_EQ(resp.error.message(),
            "POST " + r.url +
                ": destination not allowed (localhost; set webhooks.allow_private to allow)");
  EXPECT_EQ(resp.error.message().find("127.0.0.1"), std::string::npos) << resp.error.message();
  EXPECT_EQ(resp.error.message().find("::1"), std::string::npos) << resp.error.message();
  EXPECT_EQ(resp.code, 0);
  EXPECT_TRUE(http_->HookRequests(Key()).empty());
  EXPECT_EQ(http_->Hits("/hook/" + Key()), 0);
}

TEST_F(WebhookSendTest, LoopbackLiteralIsRefusedNamingTheLiteral) {
  WebhookRequest r = To("/hook/" + Key());
  r.allow_private = false;

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.permanent()) << resp.error.ToString();
  EXPECT_EQ(resp.error.message(),
            "POST " + r.url +
                ": destination not allowed (127.0.0.1; set webhooks.allow_private to allow)");
  EXPECT_TRUE(http_->HookRequests(Key()).empty());
}

TEST_F(WebhookSendTest, Ipv6LoopbackIsRefusedWithoutAllowPrivate) {
  WebhookRequest r = To("/hook/" + Key());
  r.url = "http://[::1]:" + std::to_string(http_->port()) + "/hook/" + Key();
  r.allow_private = false;

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.permanent()) << resp.error.ToString();
  EXPECT_EQ(
      resp.error.message(),
      "POST " + r.url + ": destination not allowed ([::1]; set webhooks.allow_private to allow)");
}

TEST_F(WebhookSendTest, ClosedPortIsTransient) {
  WebhookRequest r = To("/hook/" + Key());
  r.url = "http://127.0.0.1:" + std::to_string(FreePort()) + "/hook/" + Key();

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.transient()) << resp.error.ToString();
  EXPECT_EQ(resp.error.message().rfind("POST " + r.url + ": ", 0), 0u) << resp.error.message();
  EXPECT_EQ(resp.code, 0);
  EXPECT_GT(resp.duration_ns, 0);
}

TEST_F(WebhookSendTest, ErrorMessageShowsNoUserinfo) {
  int port = FreePort();
  WebhookRequest r = To("/hook/" + Key());
  r.url = "http://alice:hunter2@127.0.0.1:" + std::to_string(port) + "/hook/x";

  WebhookResponse resp = PostWebhook(r);
  EXPECT_FALSE(resp.error.ok());
  EXPECT_EQ(
      resp.error.message().rfind("POST http://127.0.0.1:" + std::to_string(port) + "/hook/x: ", 0),
      0u)
      << resp.error.message();
  EXPECT_EQ(resp.error.message().find("hunter2"), std::string::npos);
  EXPECT_EQ(resp.error.message().find("alice"), std::string::npos);
}

TEST_F(WebhookSendTest, TimeoutIsTransient) {
  WebhookRequest r = To("/hook-slow/20000/" + Key());
  r.timeout_seconds = 1;

  Clock::time_point start = Clock::now();
  WebhookResponse resp = PostWebhook(r);
  Clock::duration took = Clock::now() - start;
  EXPECT_TRUE(resp.error.transient()) << resp.error.ToString();
  EXPECT_NE(resp.error.message().find("timed out"), std::string::npos) << resp.error.message();
  EXPECT_EQ(resp.code, 0);
  EXPECT_LT(took, seconds(8));
  EXPECT_GE(resp.duration_ns, 900'000'000);
}

TEST_F(WebhookSendTest, UnsupportedSchemeIsPermanent) {
  WebhookRequest r = To("/hook/" + Key());
  r.url = "ftp://" + Host(*http_) + "/hook/" + Key();

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.permanent()) << resp.error.ToString();
  EXPECT_EQ(resp.error.message(),
            "POST " + r.url + ": unsupported scheme \"ftp\" (only http and https)");
  EXPECT_TRUE(http_->HookRequests(Key()).empty());
}

TEST_F(WebhookSendTest, MalformedUrlIsPermanent) {
  WebhookRequest r = To("/hook/" + Key());
  r.url = "http://[::1/hook";

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.permanent()) << resp.error.ToString();
  EXPECT_EQ(resp.error.message().rfind("POST http://[::1/hook: ", 0), 0u) << resp.error.message();
}

TEST_F(WebhookSendTest, HeaderWithLineBreakIsRefusedBeforeSending) {
  WebhookRequest r = To("/hook/" + Key());
  r.headers = {{"X-Djinn-CI-Event", "images\r\nX-Injected: 1"}};

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.permanent()) << resp.error.ToString();
  EXPECT_TRUE(http_->HookRequests(Key()).empty());
}

TEST_F(WebhookSendTest, WrongContentLengthIsRefusedBeforeSending) {
  WebhookRequest r = To("/hook/" + Key());
  r.body = "12345";
  r.headers = {{"Content-Length", "4"}};

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.permanent()) << resp.error.ToString();
  EXPECT_TRUE(http_->HookRequests(Key()).empty());
}

TEST_F(WebhookSendTlsTest, HttpsVerifiesWithCaBundle) {
  WebhookRequest r = ToHttps("/hook/" + Key());
  r.ca_bundle = ReadFile(certs_.ca_cert);
  r.body = "{}\n";

  WebhookResponse resp = PostWebhook(r);
  ASSERT_TRUE(resp.error.ok()) << resp.error.ToString();
  EXPECT_EQ(resp.code, 200);
  EXPECT_EQ(resp.headers, kHookAnswerHeaders);
  std::vector<HttpServer::HookRequest> got = https_.HookRequests(Key());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].request_line, "POST /hook/" + Key() + " HTTP/1.1");
  EXPECT_EQ(got[0].body, "{}\n");
}

TEST_F(WebhookSendTlsTest, HttpsWithoutCaBundleFailsVerification) {
  WebhookRequest r = ToHttps("/hook/" + Key());

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.transient()) << resp.error.ToString();
  EXPECT_NE(resp.error.message().find("certificate"), std::string::npos) << resp.error.message();
  EXPECT_EQ(resp.code, 0);
  EXPECT_TRUE(https_.HookRequests(Key()).empty());
}

TEST_F(WebhookSendTlsTest, HttpsWithAnotherCaFailsVerification) {
  TempDir other_dir("djinn-webhook-other-ca");
  TestCerts other = GenerateTestCa(other_dir.path());
  ASSERT_TRUE(other.ok()) << other.error;
  WebhookRequest r = ToHttps("/hook/" + Key());
  r.ca_bundle = ReadFile(other.ca_cert);

  WebhookResponse resp = PostWebhook(r);
  EXPECT_TRUE(resp.error.transient()) << resp.error.ToString();
  EXPECT_TRUE(https_.HookRequests(Key()).empty());
}

}  // namespace
}  // namespace djinn::testing
