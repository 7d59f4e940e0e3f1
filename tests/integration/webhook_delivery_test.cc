// The `images` webhook end to end (DESIGN §4b): the real daemon downloads
// an image against real PostgreSQL (Djinn's two webhook tables and grants),
// and delivers the event to a real HTTP receiver on loopback.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/webhook.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/postgres.h"
#include "tests/harness/qcow2_image.h"
#include "tests/harness/queue_fixture.h"

namespace djinn::testing {
namespace {

using std::chrono::seconds;

// The block32 vector of tests/data/webhooks/cases.json.
constexpr char kBlock[] = "0123456789abcdef0123456789abcdef";
constexpr char kSalt[] = "pepper-salt";
constexpr char kSealedHex[] =
    "000102030405060708090a0bbf377eccde1c7d0ca5ffbbfa1ac49cde23e0211b830e3b945f3660";
constexpr char kSecret[] = "s3cret-hook";
constexpr int kNamespace = 9;

std::string DataDir() {
  const char* d = getenv("DJINN_TEST_DATA");
  return d ? d : "tests/data";
}

class WebhookDeliveryTest : public QueueFixture {
 protected:
  static void SetUpTestSuite() {
    QueueFixture::SetUpTestSuite();
    pg_ = new PostgresServer();
    ASSERT_TRUE(pg_->Start());
    ASSERT_TRUE(pg_->CreateDjinnSchema());
    std::string schema = ReadFile(DataDir() + "/webhooks/schema.sql");
    const std::string role = pg_->consumer_user();
    for (size_t at = 0; (at = schema.find("djinn_consumer", at)) != std::string::npos;
         at += role.size())
      schema.replace(at, 14, role);
    std::string out;
    ASSERT_TRUE(pg_->Exec(schema, &out)) << out;
    files_ = new TempDir("djinn-hook-files");
    http_ = new HttpServer();
    ASSERT_TRUE(http_->Start(files_->path()));
  }
  static void TearDownTestSuite() {
    delete http_;
    delete files_;
    delete pg_;
    QueueFixture::TearDownTestSuite();
  }

  void SetUp() override {
    QueueFixture::SetUp();
    std::string out;
    ASSERT_TRUE(pg_->Exec("DELETE FROM namespace_webhook_deliveries; DELETE FROM namespace_webhooks",
                          &out))
        << out;
  }

  DaemonOptions HookOpts(bool allow_private = true) {
    DaemonOptions o = Opts(1);
    o.attempts = 0;
    o.database_addr = pg_->addr();
    o.database_password = pg_->consumer_password();
    o.extra = std::string("crypto = { block = \"") + kBlock + "\"; salt = \"" + kSalt + "\"; };\n" +
              "webhooks = { api_server = \"https://djinn.example.com\"; attempts = 3; " +
              "allow_private = " + (allow_private ? "true" : "false") + "; };\n";
    return o;
  }
  // A hook of the test namespace (or another), returning its id.
  int AddHook(const std::string& url, bool secret = true, bool active = true, int events = 512,
              int ns = kNamespace) {
    std::string sql = "INSERT INTO namespace_webhooks (user_id, author_id, namespace_id, "
                      "payload_url, secret, ssl, events, active) VALUES (1, 1, " +
                      std::to_string(ns) + ", '" + url + "', " +
                      (secret ? std::string("decode('") + kSealedHex + "', 'hex')" : "NULL") +
                      ", false, " + std::to_string(events) + ", " + (active ? "true" : "false") +
                      ") RETURNING id";
    return std::atoi(pg_->Query1(sql).c_str());
  }
  struct Download {
    int id = 0;
    int image = 0;
    std::string job;
  };
  // A download job of an image in the test namespace; `ok` false: a 404.
  Download Submit(const std::string& name, bool ok = true) {
    static int n = 0;
    std::string hash = name + "-" + std::to_string(++n);
    if (ok) {
      std::string body = Qcow2Header() + name;
      body.resize(4096, 'h');
      WriteFile(files_->Sub(hash + ".qcow2"), body);
    }
    Download d;
    d.image = pg_->AddImage(3, "qemu", hash, "debian/" + name);
    pg_->Query1("UPDATE images SET namespace_id = " + std::to_string(kNamespace) +
                " WHERE id = " + std::to_string(d.image) + " RETURNING id");
    std::string url = http_->url(ok ? "files/" + hash + ".qcow2" : "status/404");
    d.id = pg_->AddDownload(d.image, url);
    d.job = "dl-" + hash;
    Push(d.job, nlohmann::json{{"job", "download_job"}, {"id", d.id}, {"image_id", d.image},
                               {"source", url}}.dump());
    return d;
  }
  int Rows(int hook, const std::string& where = "true") {
    return std::atoi(pg_->Query1("SELECT count(*) FROM namespace_webhook_deliveries WHERE "
                                 "webhook_id = " + std::to_string(hook) + " AND " + where)
                         .c_str());
  }

  static PostgresServer* pg_;
  static TempDir* files_;
  static HttpServer* http_;
};

PostgresServer* WebhookDeliveryTest::pg_ = nullptr;
TempDir* WebhookDeliveryTest::files_ = nullptr;
HttpServer* WebhookDeliveryTest::http_ = nullptr;

// A successful and a failed download each deliver once, signed, to the
// active hook that wants images events, and to no other.
TEST_F(WebhookDeliveryTest, EveryDownloadDeliversOnceToMatchingActiveHooks) {
  int good = AddHook(http_->url("hook/match"));
  int off = AddHook(http_->url("hook/inactive"), true, false);
  int other_events = AddHook(http_->url("hook/builds"), true, true, 1);
  int other_ns = AddHook(http_->url("hook/other-ns"), true, true, 512, kNamespace + 1);
  Daemon d(HookOpts());
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Download ok = Submit("ok");
  Download bad = Submit("bad", false);
  ASSERT_TRUE(WaitFor([&] { return Rows(good) == 2; }, seconds(30))) << d.Log();
  auto got = http_->HookRequests("match");
  ASSERT_EQ(got.size(), 2u);
  for (const auto& req : got) {
    EXPECT_EQ(req.request_line, "POST /hook/match HTTP/1.1");
    EXPECT_NE(req.body.find("\"action\":\"downloaded\""), std::string::npos) << req.body;
    EXPECT_NE(req.body.find("\"url\":\"https://djinn.example.com/images/"), std::string::npos);
    auto sig = WebhookSignature(kSecret, req.body);
    ASSERT_TRUE(sig.ok());
    EXPECT_NE(req.header_block.find("X-Djinn-Ci-Signature: " + *sig + "\r\n"), std::string::npos)
        << req.header_block;
    EXPECT_NE(req.header_block.find("X-Djinn-CI-Event: images\r\n"), std::string::npos);
  }
  EXPECT_EQ(Rows(good, "response_code = 200 AND NOT redelivery AND error IS NULL AND "
                       "event = 512 AND duration > 0 AND request_headers LIKE 'Accept: */*%'"),
            2);
  // The recorded body is the one sent.
  EXPECT_EQ(pg_->Query1("SELECT count(*) FROM namespace_webhook_deliveries WHERE webhook_id = " +
                        std::to_string(good) + " AND request_body LIKE '%\"id\":" +
                        std::to_string(ok.image) + ",%'"),
            "1");
  EXPECT_TRUE(pg_->Download(bad.id).has_error);
  for (int hook : {off, other_events, other_ns}) EXPECT_EQ(Rows(hook), 0) << hook;
  for (const char* key : {"inactive", "builds", "other-ns"})
    EXPECT_TRUE(http_->HookRequests(key).empty()) << key;
}

// 500, 500, then 200: three attempts, three rows, the last two redeliveries.
TEST_F(WebhookDeliveryTest, FailingReceiverIsRetriedAndEveryAttemptRecorded) {
  int hook = AddHook(http_->url("hook-flaky/2/flaky"));
  Daemon d(HookOpts());
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Submit("flaky");
  ASSERT_TRUE(WaitFor([&] { return Rows(hook, "response_code = 200") == 1; }, seconds(30)))
      << d.Log();
  EXPECT_EQ(Rows(hook), 3);
  EXPECT_EQ(Rows(hook, "response_code = 500 AND NOT redelivery"), 1);
  EXPECT_EQ(Rows(hook, "response_code = 500 AND redelivery"), 1);
  EXPECT_EQ(Rows(hook, "response_code = 200 AND redelivery"), 1);
  EXPECT_EQ(http_->HookRequests("flaky").size(), 3u);
}

// A 4xx is final: one row, no retry.
TEST_F(WebhookDeliveryTest, ClientErrorIsFinal) {
  int hook = AddHook(http_->url("hook-status/404/gone"));
  Daemon d(HookOpts());
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Submit("gone");
  ASSERT_TRUE(WaitFor([&] { return Rows(hook) == 1; }, seconds(30))) << d.Log();
  ASSERT_TRUE(d.WaitForLog("webhook " + std::to_string(hook) + ": HTTP 404")) << d.Log();
  EXPECT_EQ(Rows(hook, "response_code = 404 AND response_body = E'status 404\\n'"), 1);
  EXPECT_EQ(client_->Int({"ZCARD", "jobs_webhooks:scheduled"}), 0);
}

// The request forgery guard: a loopback receiver is refused (unless
// webhooks.allow_private), no packet is sent, and the refusal is recorded
// naming the URL's host, never the address it resolved to.
TEST_F(WebhookDeliveryTest, PrivateReceiverIsRefusedAndRecorded) {
  std::string url = http_->url("hook/private");
  url.replace(url.find("127.0.0.1"), 9, "localhost");
  int hook = AddHook(url);
  DaemonOptions o = HookOpts(/*allow_private=*/false);
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Submit("private");
  ASSERT_TRUE(WaitFor([&] { return Rows(hook) == 1; }, seconds(30))) << d.Log();
  EXPECT_EQ(
      pg_->Query1("SELECT error FROM namespace_webhook_deliveries WHERE webhook_id = " +
                  std::to_string(hook)),
      "POST " + url + ": destination not allowed (localhost; set webhooks.allow_private to allow)");
  EXPECT_EQ(Rows(hook,
                 "response_code IS NULL AND error NOT LIKE '%127.0.0.1%' AND "
                 "error NOT LIKE '%::1%'"),
            1);
  EXPECT_TRUE(http_->HookRequests("private").empty());
  // The operators' log (debug level) still names the address.
  EXPECT_TRUE(d.WaitForLog("webhook: refused to connect to ")) << d.Log();
}

// A secret that does not decrypt: a row with the error, no request.
TEST_F(WebhookDeliveryTest, UndecryptableSecretIsRecordedWithoutARequest) {
  std::string url = http_->url("hook/badsecret");
  int hook = std::atoi(pg_->Query1("INSERT INTO namespace_webhooks (user_id, author_id, "
                                   "namespace_id, payload_url, secret, ssl, events) VALUES (1, 1, " +
                                   std::to_string(kNamespace) + ", '" + url +
                                   "', decode('00112233445566778899aabbccddeeff00112233445566778899', "
                                   "'hex'), false, 512) RETURNING id")
                         .c_str());
  Daemon d(HookOpts());
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Submit("badsecret");
  ASSERT_TRUE(WaitFor([&] { return Rows(hook) == 1; }, seconds(30))) << d.Log();
  EXPECT_EQ(Rows(hook, "error LIKE 'cannot decrypt the webhook secret%' AND response_code IS NULL"), 1);
  EXPECT_TRUE(http_->HookRequests("badsecret").empty());
}

// A delivery worker killed in the middle of a delivery: the event is
// delivered again, and ends with exactly one successful delivery row.
TEST_F(WebhookDeliveryTest, KilledDeliveryWorkerEndsWithOneSuccessfulDelivery) {
  int hook = AddHook(http_->url("hook-slow/3000/killed"));
  Daemon d(HookOpts());
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Submit("killed");
  ASSERT_TRUE(WaitFor([&] { return http_->HookRequests("killed").size() == 1; }, seconds(30)))
      << d.Log();
  pid_t hooks = 0;
  for (pid_t c : ChildrenOf(d.pid()))
    if (ProcTitle(c).find("webhooks 1 busy") != std::string::npos) hooks = c;
  ASSERT_NE(hooks, 0) << d.Log();
  ASSERT_EQ(kill(hooks, SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return Rows(hook, "response_code = 200") == 1; }, seconds(40)))
      << d.Log();
  EXPECT_EQ(Rows(hook), 1);
  EXPECT_EQ(http_->HookRequests("killed").size(), 2u);
}

// A receiver that never answers holds a delivery worker, never a download.
TEST_F(WebhookDeliveryTest, DeadReceiverDoesNotDelayDownloads) {
  int hook = AddHook(http_->url("hook-slow/600000/dead"));
  Daemon d(HookOpts());
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Download first = Submit("dead-1");
  ASSERT_TRUE(WaitFor([&] { return http_->HookRequests("dead").size() == 1; }, seconds(30)))
      << d.Log();
  Download second = Submit("dead-2");
  ASSERT_TRUE(WaitFor([&] { return pg_->Download(second.id).finished; }, seconds(20))) << d.Log();
  EXPECT_FALSE(pg_->Download(second.id).has_error);
  EXPECT_EQ(Rows(hook), 0);  // the first delivery still waits for its answer
}

// Without a crypto block: no deliveries, and the log says so once.
TEST_F(WebhookDeliveryTest, NoCryptoMeansNoWebhooks) {
  int hook = AddHook(http_->url("hook/nocrypto"));
  DaemonOptions o = HookOpts();
  o.extra.clear();
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  EXPECT_TRUE(d.WaitForLog("webhooks off: no crypto block in the configuration")) << d.Log();
  Download dl = Submit("nocrypto");
  ASSERT_TRUE(WaitFor([&] { return pg_->Download(dl.id).finished; }, seconds(20))) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Gone(dl.job); })) << d.Log();
  EXPECT_EQ(Rows(hook), 0);
  EXPECT_EQ(client_->Int({"EXISTS", "jobs_webhooks:data"}), 0);
}

// The role without its webhook grants: downloads go on, the log names the
// grants.
TEST_F(WebhookDeliveryTest, MissingGrantIsNamedAndDownloadsGoOn) {
  std::string out;
  ASSERT_TRUE(pg_->Exec("REVOKE SELECT ON namespace_webhooks FROM " + pg_->consumer_user(), &out))
      << out;
  AddHook(http_->url("hook/nogrant"));
  Daemon d(HookOpts());
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Download dl = Submit("nogrant");
  ASSERT_TRUE(WaitFor([&] { return Gone(dl.job); }, seconds(20))) << d.Log();
  EXPECT_TRUE(pg_->Download(dl.id).finished);
  EXPECT_FALSE(pg_->Download(dl.id).has_error);
  EXPECT_TRUE(d.WaitForLog("the database role needs SELECT on namespace_webhooks")) << d.Log();
  ASSERT_TRUE(pg_->Exec("GRANT SELECT ON namespace_webhooks TO " + pg_->consumer_user(), &out))
      << out;
}

}  // namespace
}  // namespace djinn::testing
