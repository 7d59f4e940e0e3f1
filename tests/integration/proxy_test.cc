// download.proxy end to end: the real daemon downloads through Debian's
// tinyproxy (tests/harness/tinyproxy.h) on loopback, from the HTTP(S) test
// server, into a real store, with the outcome in a real PostgreSQL.
//
// What is asserted: http and https go through the proxy as CONNECT
// tunnels (the proxy's log), with Basic credentials; no_proxy hosts do
// not; a proxy that is down is a transient failure (retried, then
// recorded, never dead-lettered); the proxy's password shows nowhere
// (log, row, process titles); and with download.allow_private off the
// SSRF guard judges the final destination, not the proxy: in a network
// namespace with one public address, a download from it goes through a
// proxy on loopback, while loopback destinations (by address, by name,
// by redirect) and other ports are refused before the proxy is asked.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/netns.h"
#include "tests/harness/postgres.h"
#include "tests/harness/qcow2_image.h"
#include "tests/harness/redis_client.h"
#include "tests/harness/tinyproxy.h"
#include "tests/harness/tls.h"

namespace djinn::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kUserId = 9;
constexpr char kProxyUser[] = "djinnproxy";
constexpr char kProxyPassword[] = "Pr0xyPw-4f1a9c";
constexpr char kSmall[] = "small.qcow2";
// An address the SSRF guard judges public (not 198.18/15), which exists
// only in the test's own network namespace.
constexpr char kPublicAddr[] = "198.20.0.1";

class ProxyTest : public ::testing::Test {
 protected:
  struct Env {
    TempDir dir{"djinn-proxy"};
    TestCerts certs;
    RedisServer redis;
    PostgresServer pg;
    HttpServer http, https;
    Tinyproxy proxy;  // Basic auth, CONNECT to the two servers only
    std::string small;
    std::string setup_error;
  };

  static void SetUpTestSuite() {
    env_ = new Env();
    Env& e = *env_;
    auto fail = [&](const std::string& why) { e.setup_error = why; };
    std::string why;
    if (!Tinyproxy::Available(&why)) return fail(why);
    std::string files = e.dir.Sub("files");
    std::filesystem::create_directories(files);
    std::filesystem::create_directories(e.dir.Sub("certs"));
    e.small = WithQcow2Header(std::string(200 * 1024, 'p'));
    WriteFile(files + "/" + kSmall, e.small);
    e.certs = GenerateTestCa(e.dir.Sub("certs"));
    if (!e.certs.ok()) return fail("test CA: " + e.certs.error);
    e.redis.Start();
    if (auto r = e.pg.Start(); !r) return fail(r.message());
    if (auto r = e.pg.CreateDjinnSchema(); !r) return fail(r.message());
    if (auto r = e.http.Start(files); !r) return fail(r.message());
    if (auto r = e.https.Start(files, &e.certs); !r) return fail(r.message());
    Tinyproxy::Options po;
    po.connect_ports = {e.http.port(), e.https.port()};
    po.user = kProxyUser;
    po.password = kProxyPassword;
    if (auto r = e.proxy.Start(po); !r) return fail(r.message());
  }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(env_, nullptr);
    if (env_->setup_error.find("not installed") != std::string::npos)
      GTEST_SKIP() << env_->setup_error;
    ASSERT_EQ(env_->setup_error, "");
  }

  static Env& env() { return *env_; }

  static std::string ProxyUrl(int port, const std::string& password = kProxyPassword) {
    return std::string("http://") + kProxyUser + ":" + password + "@127.0.0.1:" +
           std::to_string(port);
  }

  static DaemonOptions Options(const std::string& queue, int attempts) {
    DaemonOptions o;
    o.workers = 1;
    o.queue = queue;
    o.attempts = attempts;
    o.redis_addr = env().redis.addr();
    o.database_addr = env().pg.addr();
    o.database_password = env().pg.consumer_password();
    return o;
  }

  static ::testing::AssertionResult Start(Daemon* d, const std::string& download) {
    d->options().download = download;
    d->WriteConfig(d->ConfigText());
    if (!d->Start()) return ::testing::AssertionFailure() << "cannot start the daemon";
    if (!d->WaitForWorkers(d->options().workers))
      return ::testing::AssertionFailure() << "workers did not come up: " << d->Log();
    return ::testing::AssertionSuccess();
  }

  struct Job {
    int download = 0;
    std::string hash, id, queue;
  };

  static Job Submit(const std::string& source, const std::string& queue) {
    static int n = 0;
    Job j;
    j.queue = queue;
    j.hash = std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
             std::to_string(++n);
    int image = env().pg.AddImage(kUserId, "qemu", j.hash);
    j.download = env().pg.AddDownload(image, source);
    j.id = "dl-" + std::to_string(j.download);
    nlohmann::json payload = {
        {"job", "download_job"}, {"id", j.download}, {"image_id", image}, {"source", source}};
    RedisClient(env().redis.port())
        .PushLikeCurlyqV040(queue, j.id, JsonJobEnvelope(j.id, payload.dump()));
    return j;
  }

  static bool Dead(const Job& j) {
    return !env().redis.Cli({"ZSCORE", j.queue + ":dead", j.id}).empty();
  }
  static ::testing::AssertionResult WaitAcked(const Job& j, const Daemon& d,
                                              seconds timeout = seconds(20)) {
    bool gone = WaitFor([&] { return env().redis.Cli({"HEXISTS", j.queue + ":data", j.id}) == "0"; },
                        timeout, milliseconds(20));
    if (Dead(j)) return ::testing::AssertionFailure() << j.id << " is dead: " << d.Log();
    if (!gone) return ::testing::AssertionFailure() << j.id << " not acked: " << d.Log();
    return ::testing::AssertionSuccess();
  }
  static void ExpectStored(const Daemon& d, const Job& j) {
    auto row = env().pg.Download(j.download);
    EXPECT_TRUE(row.finished);
    EXPECT_FALSE(row.has_error) << row.error;
    std::string path = d.store() + "/" + std::to_string(kUserId) + "/qemu/" + j.hash;
    ASSERT_TRUE(FileExists(path)) << d.Log();
    EXPECT_EQ(Sha256Hex(ReadFile(path)), Sha256Hex(env().small));
  }
  static void ExpectRecorded(const Job& j, const std::string& want) {
    auto row = env().pg.Download(j.download);
    EXPECT_TRUE(row.finished);
    EXPECT_TRUE(row.has_error);
    EXPECT_NE(row.error.find(want), std::string::npos) << "error column: " << row.error;
  }
  // The password nowhere: the log, stdout/stderr, the workers' titles.
  static void ExpectNoPassword(const Daemon& d, const std::string& password) {
    EXPECT_EQ(d.Log().find(password), std::string::npos) << d.Log();
    EXPECT_EQ(ReadFile(d.stdout_path()).find(password), std::string::npos);
    for (pid_t w : d.Workers()) EXPECT_EQ(ProcTitle(w).find(password), std::string::npos);
  }

  static Env* env_;
};
ProxyTest::Env* ProxyTest::env_ = nullptr;

// http and https through the proxy as CONNECT tunnels, with credentials,
// a redirect followed hop by hop; a no_proxy host directly.
TEST_F(ProxyTest, DownloadsTunnelThroughTheProxyAndNoProxyHostsGoDirect) {
  // As root with workers dropped to `user`: they read the CA and reach the
  // proxy after the drop, as in production.
  DaemonOptions o = Options("jobs-via", 0);
  if (geteuid() == 0) {
    o.user = UnprivilegedUser().name;
    for (const std::string& dir : {env().dir.path(), env().dir.Sub("certs")})
      ASSERT_EQ(chmod(dir.c_str(), 0755), 0) << dir;
  }
  Daemon d(o);
  chmod(d.dir().c_str(), 0755);  // the workers' user must reach the store
  ASSERT_TRUE(Start(&d, "allow_private = true; timeout = 20; ca = \"" + env().certs.ca_cert +
                            "\"; proxy = \"" + ProxyUrl(env().proxy.port()) +
                            "\"; no_proxy = \"localhost\";"));
  const std::string http_connect = "CONNECT 127.0.0.1:" + std::to_string(env().http.port()) + " ";
  const std::string https_connect =
      "CONNECT 127.0.0.1:" + std::to_string(env().https.port()) + " ";
  const int http_before = env().proxy.Count(http_connect);
  const int https_before = env().proxy.Count(https_connect);

  Job plain = Submit(env().http.url(std::string("files/") + kSmall), "jobs-via");
  ASSERT_TRUE(WaitAcked(plain, d));
  ExpectStored(d, plain);
  EXPECT_EQ(env().proxy.Count(http_connect), http_before + 1) << env().proxy.Log();

  Job tls = Submit(env().https.url(std::string("files/") + kSmall), "jobs-via");
  ASSERT_TRUE(WaitAcked(tls, d));
  ExpectStored(d, tls);
  EXPECT_EQ(env().proxy.Count(https_connect), https_before + 1) << env().proxy.Log();

  // Two redirects, each hop asked of the proxy (one tunnel, reused).
  int redirect_hits = env().http.Hits(std::string("/redirect/2/files/") + kSmall);
  Job hops = Submit(env().http.url(std::string("redirect/2/files/") + kSmall), "jobs-via");
  ASSERT_TRUE(WaitAcked(hops, d));
  ExpectStored(d, hops);
  EXPECT_EQ(env().http.Hits(std::string("/redirect/2/files/") + kSmall), redirect_hits + 1);
  EXPECT_GT(env().proxy.Count(http_connect), http_before + 1);

  // no_proxy: straight to the server, the proxy never asked.
  const size_t proxy_requests = env().proxy.Requests().size();
  std::string direct_url = env().http.url(std::string("files/") + kSmall);
  direct_url.replace(direct_url.find("127.0.0.1"), 9, "localhost");
  Job direct = Submit(direct_url, "jobs-via");
  ASSERT_TRUE(WaitAcked(direct, d));
  ExpectStored(d, direct);
  EXPECT_EQ(env().proxy.Requests().size(), proxy_requests) << env().proxy.Log();

  ExpectNoPassword(d, kProxyPassword);
}

// A proxy that is down: the job is retried (an attempt counted: the proxy
// is the way to the source), then recorded on its last attempt; never
// dead-lettered, and the password shows nowhere.
TEST_F(ProxyTest, ProxyDownIsRetriedThenRecordedWithoutThePassword) {
  const int dead_port = FreePort();  // nothing listens there
  Daemon d(Options("jobs-down", 1));
  ASSERT_TRUE(Start(&d, "allow_private = true; timeout = 20; proxy = \"" + ProxyUrl(dead_port) +
                            "\";"));
  Job j = Submit(env().http.url(std::string("files/") + kSmall), "jobs-down");
  ASSERT_TRUE(d.WaitForLog("job " + j.id + ": download_job: ")) << d.Log();
  EXPECT_TRUE(d.WaitForLog("; retry 1/1")) << d.Log();
  ASSERT_TRUE(WaitAcked(j, d));
  ExpectRecorded(j, "download.proxy: cannot connect to the proxy");
  EXPECT_FALSE(Dead(j));
  EXPECT_EQ(env().pg.Download(j.download).error.find(kProxyPassword), std::string::npos);
  ExpectNoPassword(d, kProxyPassword);
}

// Credentials the proxy refuses: its answer, never the password.
TEST_F(ProxyTest, RefusedProxyCredentialsAreRecordedWithoutThePassword) {
  const std::string wrong = "Wr0ngProxyPw-77";
  DaemonOptions o = Options("jobs-auth", 0);
  if (geteuid() == 0) o.run_as = &UnprivilegedUser();  // started as the user, as Djinn's units do
  Daemon d(o);
  ASSERT_TRUE(Start(&d, "allow_private = true; timeout = 20; proxy = \"" +
                            ProxyUrl(env().proxy.port(), wrong) + "\";"));
  Job j = Submit(env().http.url(std::string("files/") + kSmall), "jobs-auth");
  ASSERT_TRUE(WaitAcked(j, d));
  ExpectRecorded(j, "download.proxy: the proxy refused the tunnel (response 40");
  EXPECT_EQ(env().pg.Download(j.download).error.find(wrong), std::string::npos);
  ExpectNoPassword(d, wrong);
}

// With download.allow_private off the guard judges where the download
// goes, not the proxy (on loopback, the operator's choice): a public
// destination goes through it; loopback ones, by address, by name or by
// redirect, and other ports are refused before the proxy is asked.
TEST_F(ProxyTest, SsrfGuardJudgesTheFinalDestinationNotTheProxy) {
  if (std::string why = NetnsUnsupportedReason(); !why.empty()) GTEST_SKIP() << why;
  NetNamespace ns("proxy");
  ASSERT_TRUE(ns.Create());
  ASSERT_TRUE(ns.Ip({"addr", "add", std::string(kPublicAddr) + "/32", "dev", "lo"}));
  HttpServer origin;
  Tinyproxy proxy;
  Daemon d(Options("jobs-ssrf", 0));
  {
    ScopedNetns in(ns);
    ASSERT_TRUE(in.ok()) << in.error();
    origin.BindTo(kPublicAddr);
    ASSERT_TRUE(origin.Start(env().dir.Sub("files")));
    Tinyproxy::Options po;
    po.connect_ports = {origin.port()};
    ASSERT_TRUE(proxy.Start(po));
    // Redis and PostgreSQL through their unix sockets (outside the namespace).
    d.options().redis_addr = env().redis.unix_socket();
    d.options().database_addr = env().pg.socket_dir() + ":" + std::to_string(env().pg.port());
    ASSERT_TRUE(Start(&d, "allow_private = false; timeout = 20; proxy = \"" + proxy.url() + "\";"));
  }
  const std::string port = std::to_string(origin.port());
  const std::string public_connect = std::string("CONNECT ") + kPublicAddr + ":" + port + " ";

  // Public, through the proxy; a redirect on it too (pinned hop by hop).
  Job ok = Submit(origin.url(std::string("files/") + kSmall), "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(ok, d));
  ExpectStored(d, ok);
  Job hop = Submit(origin.url(std::string("redirect/1/files/") + kSmall), "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(hop, d));
  ExpectStored(d, hop);
  EXPECT_GE(proxy.Count(public_connect), 1) << proxy.Log();
  const size_t asked = proxy.Requests().size();

  // Loopback by address and by name: refused, naming the URL's host.
  std::string loopback = "http://127.0.0.1:" + port + "/files/" + kSmall;
  Job direct = Submit(loopback, "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(direct, d));
  ExpectRecorded(direct, "GET " + loopback +
                             ": destination not allowed (127.0.0.1; set download.allow_private "
                             "to allow)");
  std::string by_name = "http://localhost:" + port + "/files/" + kSmall;
  Job named = Submit(by_name, "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(named, d));
  ExpectRecorded(named, "destination not allowed (localhost; set download.allow_private to allow)");
  EXPECT_EQ(env().pg.Download(named.download).error.find("127.0.0.1"), std::string::npos);

  // A public server redirecting to loopback, or to another port.
  Job redirected = Submit(origin.url("redirect-to?url=" + by_name), "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(redirected, d));
  ExpectRecorded(redirected, "(redirected to " + by_name +
                                 "): destination not allowed (localhost; set "
                                 "download.allow_private to allow)");
  std::string other_port = std::string("http://") + kPublicAddr + ":9/x.qcow2";
  Job ported = Submit(origin.url("redirect-to?url=" + other_port), "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(ported, d));
  ExpectRecorded(ported, std::string("destination port 9 not allowed (") + kPublicAddr);

  // The proxy was asked only for the two redirecting URLs' own server.
  for (size_t i = asked; i < proxy.Requests().size(); ++i)
    EXPECT_EQ(proxy.Requests()[i].rfind(public_connect, 0), 0u) << proxy.Requests()[i];
  EXPECT_EQ(proxy.Count("CONNECT 127.0.0.1"), 0) << proxy.Log();
  EXPECT_EQ(proxy.Count("CONNECT localhost"), 0) << proxy.Log();
  d.Stop();
}

}  // namespace
}  // namespace djinn::testing
