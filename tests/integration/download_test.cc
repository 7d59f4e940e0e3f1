// download_job end to end: jobs pushed into a real redis-server (JSON
// payloads in curlyq envelopes), run by the real djinn-consumer binary
// against a real PostgreSQL (least-privilege role), HTTP(S) server and sshd,
// all on loopback. Each test checks the stored bytes (sha256) or their
// absence, that no .part file is left, the image_downloads row, and whether
// the job was acked or retried.
//
// Servers and one daemon are shared by the suite (SetUpTestSuite); tests
// that need another configuration (timeouts, known_hosts, allow_private =
// false, a PostgreSQL to restart) start their own daemon on their own queue.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "common/curly_queue.h"
#include "common/envelope.h"
#include "common/pg.h"
#include "common/sandbox.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/postgres.h"
#include "tests/harness/qcow2_image.h"
#include "tests/harness/redis_client.h"
#include "tests/harness/sshd.h"
#include "tests/harness/tls.h"
#include "worker/fetch.h"

namespace djinn::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kUserId = 7;
constexpr uint64_t kMaxSize = 1 << 20;
constexpr char kSmall[] = "small.qcow2";

std::string QcowBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return WithQcow2Header(s);
}

// The body of the config's download group.
std::string DownloadBlock(bool allow_private, int timeout, uint64_t max_size, const std::string& ca,
                          const std::string& known_hosts = "") {
  std::string b = std::string("allow_private = ") + (allow_private ? "true" : "false") +
                  "; timeout = " + std::to_string(timeout) + "; max_size = " +
                  std::to_string(max_size) + "L;";
  if (!ca.empty()) b += " ca = \"" + ca + "\";";
  if (!known_hosts.empty()) b += " known_hosts = \"" + known_hosts + "\";";
  return b;
}

::testing::AssertionResult StartDaemon(Daemon* d, const std::string& download_block) {
  d->options().download = download_block;
  d->WriteConfig(d->ConfigText());
  if (!d->Start()) return ::testing::AssertionFailure() << "cannot start the daemon";
  if (!d->WaitForWorkers(d->options().workers))
    return ::testing::AssertionFailure() << "workers did not come up: " << d->Log();
  return ::testing::AssertionSuccess();
}

// Files named *.part anywhere beneath dir.
std::vector<std::string> PartFiles(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.size() > 5 && name.substr(name.size() - 5) == ".part")
      out.push_back(e.path().string());
  }
  return out;
}

// A job as the tests submit it.
struct Submitted {
  int download = 0;
  int image = 0;
  std::string hash;
  std::string job_id;
  std::string queue;
};

// A network namespace for the calling thread, with lo up and one extra
// public address on it (198.20.0.1), so a test can serve from an address
// the SSRF guard lets through and redirect to loopback. Processes forked
// while inside inherit it. Needs CAP_SYS_ADMIN.
class PrivateNetwork {
 public:
  static constexpr char kPublicAddr[] = "198.20.0.1";

  ~PrivateNetwork() { Leave(); }
  bool Enter(std::string* why) {
    orig_ = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (orig_ < 0) return Fail(why, "open /proc/self/ns/net");
    if (unshare(CLONE_NEWNET) != 0) return Fail(why, "unshare(CLONE_NEWNET)");
    inside_ = true;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return Fail(why, "socket");
    ifreq ifr{};
    std::snprintf(ifr.ifr_name, IFNAMSIZ, "lo");
    bool ok = ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
    ok = ok && ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    ifreq alias{};
    std::snprintf(alias.ifr_name, IFNAMSIZ, "lo:1");
    auto* sin = reinterpret_cast<sockaddr_in*>(&alias.ifr_addr);
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, kPublicAddr, &sin->sin_addr);
    ok = ok && ioctl(s, SIOCSIFADDR, &alias) == 0;
    close(s);
    if (!ok) return Fail(why, "configuring lo");
    return true;
  }
  void Leave() {
    if (inside_ && orig_ >= 0) setns(orig_, CLONE_NEWNET);
    inside_ = false;
    if (orig_ >= 0) close(orig_);
    orig_ = -1;
  }

 private:
  static bool Fail(std::string* why, const std::string& what) {
    *why = what + ": " + std::strerror(errno);
    return false;
  }
  int orig_ = -1;
  bool inside_ = false;
};

// A minimal HTTP/1.0 responder on PrivateNetwork::kPublicAddr:
//   /image    200, application/x-qemu-disk, body()
//   /redirect 302 to `redirect_to`
class PublicResponder {
 public:
  PublicResponder(std::string body, std::string redirect_to)
      : body_(std::move(body)), redirect_to_(std::move(redirect_to)) {}
  ~PublicResponder() { Stop(); }
  bool Start() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, PrivateNetwork::kPublicAddr, &a.sin_addr);
    socklen_t len = sizeof a;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        listen(fd_, 16) != 0 || getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      return false;
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Serve(); });
    return true;
  }
  void Stop() {
    if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  std::string url(const std::string& path) const {
    return std::string("http://") + PrivateNetwork::kPublicAddr + ":" + std::to_string(port_) +
           path;
  }
  int hits() const { return hits_; }

 private:
  void Serve() {
    for (;;) {
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      ++hits_;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = read(c, buf, sizeof buf);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      std::string resp;
      if (req.rfind("GET /image ", 0) == 0) {
        resp = "HTTP/1.0 200 OK\r\nContent-Type: application/x-qemu-disk\r\nContent-Length: " +
               std::to_string(body_.size()) + "\r\n\r\n" + body_;
      } else {
        resp = "HTTP/1.0 302 Found\r\nLocation: " + redirect_to_ + "\r\nContent-Length: 0\r\n\r\n";
      }
      for (size_t off = 0; off < resp.size();) {
        ssize_t n = write(c, resp.data() + off, resp.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      close(c);
    }
  }
  std::string body_, redirect_to_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> hits_{0};
  std::thread thread_;
};

class DownloadTest : public ::testing::Test {
 protected:
  struct Env {
    TempDir dir{"djinn-dl"};
    TestCerts certs;
    RedisServer redis;
    PostgresServer pg;
    HttpServer http, https;
    std::unique_ptr<SshServer> sshd;
    std::string no_sshd;  // why sftp tests skip
    std::unique_ptr<Daemon> daemon;
    std::string small;  // files/small.qcow2
    std::string setup_error;
  };

  static void SetUpTestSuite() {
    env_ = new Env();
    Env& e = *env_;
    auto fail = [&](const std::string& why) { e.setup_error = why; };
    std::string files = e.dir.Sub("files");
    fs::create_directories(files);
    fs::create_directories(e.dir.Sub("certs"));
    e.small = QcowBytes(300 * 1024, 1);
    WriteFile(files + "/" + kSmall, e.small);
    WriteFile(files + "/page.html", "<html><body>not an image</body></html>\n");
    WriteFile(files + "/tiny.qcow2", "QF");
    e.certs = GenerateTestCa(e.dir.Sub("certs"));
    if (!e.certs.ok()) return fail("test CA: " + e.certs.error);
    e.redis.Start();
    if (auto r = e.pg.Start(); !r) return fail(r.message());
    if (auto r = e.pg.CreateDjinnSchema(); !r) return fail(r.message());
    if (auto r = e.http.Start(files); !r) return fail(r.message());
    if (auto r = e.https.Start(files, &e.certs); !r) return fail(r.message());
    if (SshServer::Available(&e.no_sshd)) {
      e.sshd = std::make_unique<SshServer>();
      if (auto r = e.sshd->Start(); !r) return fail(r.message());
      WriteFile(e.sshd->root() + "/images/" + kSmall, e.small, 0644);
      WriteFile(e.sshd->root() + "/images/page.html", "<html>nope</html>\n", 0644);
    }
    e.daemon = std::make_unique<Daemon>(Options("jobs", 1, 2));
    if (auto r = StartDaemon(e.daemon.get(), DownloadBlock(true, 30, kMaxSize, e.certs.ca_cert));
        !r)
      return fail(r.message());
  }

  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(env_, nullptr);
    ASSERT_EQ(env_->setup_error, "");
  }

  // attempts: retries after the first try, as curlyq's JobMaxAttempts.
  static DaemonOptions Options(const std::string& queue, int attempts, int workers) {
    DaemonOptions o;
    o.workers = workers;
    o.queue = queue;
    o.attempts = attempts;
    o.redis_addr = env_->redis.addr();
    o.database_addr = env_->pg.addr();
    o.database_password = env_->pg.consumer_password();
    return o;
  }

  static Env& env() { return *env_; }
  static Daemon& daemon() { return *env_->daemon; }
  static PostgresServer& pg() { return env_->pg; }

  void SkipWithoutSshd() {
    if (!env().sshd) GTEST_SKIP() << "sftp: " << env().no_sshd;
  }

  // A unique image hash per test.
  static std::string NewHash() {
    static int n = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return std::string(info->name()) + "-" + std::to_string(++n);
  }

  static void Push(const std::string& queue, const std::string& job_id, int64_t download,
                   int64_t image, const std::string& source) {
    nlohmann::json payload = {
        {"job", "download_job"}, {"id", download}, {"image_id", image}, {"source", source}};
    RedisOptions ro;
    ro.addr = env().redis.addr();
    CurlyQueue q(queue, ro);
    Envelope envelope;
    envelope.id = job_id;
    envelope.data = payload.dump();
    Status st = q.Push(envelope);
    ASSERT_TRUE(st.ok()) << st.message();
  }

  // Rows for a new image and download, and the job for them.
  static Submitted Submit(const std::string& source, const std::string& queue = "jobs",
                          PostgresServer* db = nullptr, const std::string& hash = "") {
    PostgresServer& p = db ? *db : pg();
    Submitted s;
    s.queue = queue;
    s.hash = hash.empty() ? NewHash() : hash;
    s.image = p.AddImage(kUserId, "qemu", s.hash);
    s.download = p.AddDownload(s.image, source);
    s.job_id = "dl-" + std::to_string(s.download) + "-" + s.hash;
    Push(queue, s.job_id, s.download, s.image, source);
    return s;
  }

  static bool InData(const Submitted& s) {
    return env().redis.Cli({"HEXISTS", s.queue + ":data", s.job_id}) == "1";
  }
  static bool Dead(const Submitted& s) {
    return !env().redis.Cli({"ZSCORE", s.queue + ":dead", s.job_id}).empty();
  }

  // Acked = gone from Q:data (never through the dead set).
  static ::testing::AssertionResult WaitAcked(const Submitted& s, const Daemon& d,
                                              seconds timeout = seconds(20)) {
    bool done = WaitFor([&] { return !InData(s) || Dead(s); }, timeout, milliseconds(20));
    if (Dead(s))
      return ::testing::AssertionFailure()
             << "job " << s.job_id << " went to the dead set: " << d.Log();
    if (!done)
      return ::testing::AssertionFailure() << "job " << s.job_id << " not acked: " << d.Log();
    // Sanitizer builds: a worker's report goes to the daemon's stderr.
    std::string log = d.Log();
    if (log.find("Sanitizer") != std::string::npos ||
        log.find("runtime error:") != std::string::npos)
      return ::testing::AssertionFailure() << "sanitizer report in the daemon's output: " << log;
    return ::testing::AssertionSuccess();
  }

  static std::string ImagePath(const Daemon& d, const Submitted& s) {
    return d.store() + "/" + std::to_string(kUserId) + "/qemu/" + s.hash;
  }

  static void ExpectStored(const Daemon& d, const Submitted& s, const std::string& bytes,
                           PostgresServer* db = nullptr) {
    PostgresServer& p = db ? *db : pg();
    auto row = p.Download(s.download);
    EXPECT_TRUE(row.exists);
    EXPECT_TRUE(row.started);
    EXPECT_TRUE(row.finished);
    EXPECT_FALSE(row.has_error) << row.error;
    std::string path = ImagePath(d, s);
    ASSERT_TRUE(FileExists(path)) << path << "\n" << d.Log();
    std::string got = ReadFile(path);
    EXPECT_EQ(got.size(), bytes.size());
    EXPECT_EQ(Sha256Hex(got), Sha256Hex(bytes));
    EXPECT_EQ(PartFiles(d.store()), std::vector<std::string>{});
  }

  // The row records an error containing `want`; no file, no .part.
  static void ExpectRecorded(const Daemon& d, const Submitted& s, const std::string& want,
                             PostgresServer* db = nullptr) {
    PostgresServer& p = db ? *db : pg();
    auto row = p.Download(s.download);
    EXPECT_TRUE(row.exists);
    EXPECT_TRUE(row.started);
    EXPECT_TRUE(row.finished);
    EXPECT_TRUE(row.has_error);
    EXPECT_NE(row.error.find(want), std::string::npos) << "error column: " << row.error;
    EXPECT_EQ(row.error.find('\n'), std::string::npos) << row.error;
    EXPECT_FALSE(FileExists(ImagePath(d, s)));
    EXPECT_EQ(PartFiles(d.store()), std::vector<std::string>{});
  }

  static bool Retried(const Daemon& d, const Submitted& s) {
    std::string log = d.Log();
    size_t p = log.find("job " + s.job_id + ": download_job: ");
    return p != std::string::npos && log.find("; retry 1/", p) != std::string::npos;
  }

  // DownloadProcessIsConfined*: see there.
  void ExpectConfined(const TestUser* drop_to, const TestUser* run_as);

  static Env* env_;
};
DownloadTest::Env* DownloadTest::env_ = nullptr;

// ------------------------------------------------------------ success

TEST_F(DownloadTest, HttpStoresIdenticalBytes) {
  Submitted s = Submit(env().http.url(std::string("files/") + kSmall));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectStored(daemon(), s, env().small);
  struct stat file {
  }, dir{};
  ASSERT_EQ(stat(ImagePath(daemon(), s).c_str(), &file), 0);
  ASSERT_EQ(stat((daemon().store() + "/7/qemu").c_str(), &dir), 0);
  EXPECT_EQ(file.st_mode & 0777 & ~0640, 0u) << std::oct << file.st_mode;
  EXPECT_EQ(dir.st_mode & 0777 & ~0750, 0u) << std::oct << dir.st_mode;
  EXPECT_FALSE(Retried(daemon(), s));
}

TEST_F(DownloadTest, HttpsTrustsDownloadCa) {
  // By name: the worker resolves it (threaded resolver, inside the
  // sandbox) and verifies the certificate's DNS name.
  Submitted s =
      Submit("https://localhost:" + std::to_string(env().https.port()) + "/files/" + kSmall);
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectStored(daemon(), s, env().small);
}

TEST_F(DownloadTest, SftpWithTimeoutParameter) {
  SkipWithoutSshd();
  Submitted s = Submit(env().sshd->url(std::string("images/") + kSmall) + "?timeout=5s");
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectStored(daemon(), s, env().small);
}

TEST_F(DownloadTest, RedirectsAreFollowed) {
  Submitted s = Submit(env().http.url(std::string("redirect/3/files/") + kSmall));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectStored(daemon(), s, env().small);
}

TEST_F(DownloadTest, ChunkedBodyIsStored) {
  Submitted s = Submit(env().http.url(std::string("chunked/") + kSmall));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectStored(daemon(), s, env().small);
}

TEST_F(DownloadTest, BasicAuthFromEscapedUserinfo) {
  // user "deploy+bot", password "p@ss:w0rd!" (escaped as Go's url.URL writes them)
  std::string url =
      "http://deploy+bot:p%40ss%3Aw0rd%21@127.0.0.1:" + std::to_string(env().http.port()) +
      "/auth/deploy%2Bbot/p%40ss%3Aw0rd%21/" + kSmall;
  Submitted s = Submit(url);
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectStored(daemon(), s, env().small);
}

TEST_F(DownloadTest, ServerErrorIsRetriedThenSucceeds) {
  std::string path = "flaky/1/" + NewHash() + "/" + kSmall;
  Submitted s = Submit(env().http.url(path));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  EXPECT_TRUE(Retried(daemon(), s)) << daemon().Log();
  EXPECT_EQ(env().http.Hits("/" + path), 2);
  ExpectStored(daemon(), s, env().small);
}

TEST_F(DownloadTest, RepeatedDeliveryOfFinishedDownloadChangesNothing) {
  Submitted s = Submit(env().http.url(std::string("files/") + kSmall));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  std::string finished = pg().Query1("SELECT finished_at FROM image_downloads WHERE id = " +
                                     std::to_string(s.download));
  int hits = env().http.Hits(std::string("/files/") + kSmall);
  Submitted again = s;
  again.job_id += "-again";
  Push(again.queue, again.job_id, s.download, s.image,
       env().http.url(std::string("files/") + kSmall));
  ASSERT_TRUE(WaitAcked(again, daemon()));
  EXPECT_TRUE(daemon().WaitForLog("job " + again.job_id + ": image download " +
                                  std::to_string(s.download) + " finished already"));
  EXPECT_EQ(pg().Query1("SELECT finished_at FROM image_downloads WHERE id = " +
                        std::to_string(s.download)),
            finished);
  EXPECT_EQ(env().http.Hits(std::string("/files/") + kSmall), hits);
  ExpectStored(daemon(), s, env().small);
}

TEST_F(DownloadTest, RacingDeliveriesOfOneDownloadLeaveOneCorrectFile) {
  // Both workers take a delivery of the same download at once: one writes
  // the file; the other finds the .part locked, waits, sees the row
  // finished by the first and acks without downloading.
  std::string body = QcowBytes(120 * 1024, 3);  // 2 s at the trickle's rate
  WriteFile(env().dir.Sub("files/race.qcow2"), body);
  std::string path = "/trickle/60000/race.qcow2";
  Submitted first = Submit(env().http.url(path));
  Submitted second = first;
  second.job_id += "-twin";
  Push(second.queue, second.job_id, first.download, first.image, env().http.url(path));
  ASSERT_TRUE(WaitAcked(first, daemon()));
  ASSERT_TRUE(WaitAcked(second, daemon()));
  // Either may win.
  std::string log = daemon().Log();
  bool first_waited =
      log.find("job " + first.job_id + ": another delivery is writing ") != std::string::npos;
  const Submitted& waiter = first_waited ? first : second;
  const Submitted& writer = first_waited ? second : first;
  EXPECT_NE(log.find("job " + waiter.job_id + ": another delivery is writing "), std::string::npos)
      << log;
  EXPECT_NE(log.find("job " + waiter.job_id + ": image download " + std::to_string(first.download) +
                     " was finished by another delivery"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("job " + writer.job_id + ": image download " + std::to_string(first.download) +
                     ": "),
            std::string::npos)
      << log;
  EXPECT_FALSE(Retried(daemon(), first));
  EXPECT_FALSE(Retried(daemon(), second));
  EXPECT_EQ(env().http.Hits(path), 1);
  ExpectStored(daemon(), first, body);
}

// ------------------------------------------------- recorded failures

TEST_F(DownloadTest, WrongContentTypeIsRecorded) {
  Submitted s = Submit(env().http.url(std::string("ctype/text%2Fhtml/") + kSmall));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "content type \"text/html\" is not application/x-qemu-disk");
  EXPECT_FALSE(Retried(daemon(), s));
}

TEST_F(DownloadTest, NotFoundIsRecordedNamingTheUrl) {
  std::string url = env().http.url("files/missing.qcow2");
  Submitted s = Submit(url);
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "GET " + url + ": HTTP 404 Not Found");
  EXPECT_FALSE(Retried(daemon(), s));
}

TEST_F(DownloadTest, PersistentServerErrorIsRecordedOnLastAttempt) {
  Submitted s = Submit(env().http.url("status/503"));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  EXPECT_TRUE(Retried(daemon(), s));
  ExpectRecorded(daemon(), s, "HTTP 503 Service Unavailable");
  EXPECT_EQ(env().http.Hits("/status/503"), 2);
}

TEST_F(DownloadTest, ConnectionRefusedIsRetriedThenRecorded) {
  Submitted s = Submit("http://127.0.0.1:" + std::to_string(FreePort()) + "/x.qcow2");
  ASSERT_TRUE(WaitAcked(s, daemon()));
  EXPECT_TRUE(Retried(daemon(), s));
  ExpectRecorded(daemon(), s, "onnect");
}

TEST_F(DownloadTest, RedirectToFileSchemeIsRefused) {
  Submitted s = Submit(env().http.url("redirect-to?url=file:///etc/passwd"));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "redirect to a forbidden scheme \"file\"");
}

// The download process connects only to the URL's port, 80 and 443 (and 53
// for DNS): a redirect to another port is refused before connecting, here
// to the https server, which would serve the file.
TEST_F(DownloadTest, RedirectToAnotherPortIsRefused) {
  const std::string port = std::to_string(env().https.port());
  Submitted s = Submit(env().http.url("redirect-to?url=https://localhost:" + port + "/files/" +
                                      std::string(kSmall)));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "destination port " + port + " not allowed (localhost; ");
  EXPECT_FALSE(Retried(daemon(), s));
}

TEST_F(DownloadTest, TooManyRedirectsIsRecorded) {
  Submitted s = Submit(env().http.url(std::string("redirect/9/files/") + kSmall));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "too many redirects (more than 5)");
}

TEST_F(DownloadTest, ContentLengthOverLimitIsRefusedUpFront) {
  Submitted s = Submit(env().http.url("big/" + std::to_string(2 * kMaxSize)));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "image larger than the 1048576-byte limit");
}

TEST_F(DownloadTest, BodyOverLimitWithoutLengthIsCut) {
  for (const char* flag : {"nolength=1", "chunked=1"}) {
    Submitted s = Submit(env().http.url("big/" + std::to_string(2 * kMaxSize) + "?" + flag));
    ASSERT_TRUE(WaitAcked(s, daemon()));
    ExpectRecorded(daemon(), s, "image larger than the 1048576-byte limit");
  }
}

TEST_F(DownloadTest, BodyAtLimitIsStored) {
  Submitted s = Submit(env().http.url("big/" + std::to_string(kMaxSize) + "?nolength=1"));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectStored(daemon(), s, HttpServer::BigBody(kMaxSize));
}

TEST_F(DownloadTest, BadMagicIsRecorded) {
  Submitted s = Submit(env().http.url("files/page.html"));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "not a qcow2 image (bad magic 3c68746d)");
}

TEST_F(DownloadTest, ShortBodyIsRecorded) {
  Submitted s = Submit(env().http.url("files/tiny.qcow2"));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "not a qcow2 image (only 2 bytes)");
}

TEST_F(DownloadTest, WrongBasicAuthIsRecordedWithoutThePassword) {
  std::string url = "http://djinn:hunter2pw@127.0.0.1:" + std::to_string(env().http.port()) +
                    "/auth/djinn/s3cret/" + kSmall;
  Submitted s = Submit(url);
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s,
                 "GET http://djinn:****@127.0.0.1:" + std::to_string(env().http.port()) +
                     "/auth/djinn/s3cret/" + kSmall + ": HTTP 401 Unauthorized");
  EXPECT_EQ(pg().Download(s.download).error.find("hunter2pw"), std::string::npos);
  EXPECT_EQ(daemon().Log().find("hunter2pw"), std::string::npos);
}

TEST_F(DownloadTest, SftpWrongPasswordIsRecorded) {
  SkipWithoutSshd();
  std::string url =
      "sftp://djinn:wrongpw@127.0.0.1:" + std::to_string(env().sshd->port()) + "/images/" + kSmall;
  Submitted s = Submit(url);
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "authentication refused");
  EXPECT_EQ(pg().Download(s.download).error.find("wrongpw"), std::string::npos);
  EXPECT_FALSE(Retried(daemon(), s));
}

TEST_F(DownloadTest, SftpMissingFileIsRecorded) {
  SkipWithoutSshd();
  Submitted s = Submit(env().sshd->url("images/missing.qcow2"));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s,
                 "GET sftp://djinn:****@127.0.0.1:" + std::to_string(env().sshd->port()) +
                     "/images/missing.qcow2: ");
  EXPECT_FALSE(Retried(daemon(), s));
}

TEST_F(DownloadTest, SftpBadMagicIsRecorded) {
  SkipWithoutSshd();
  Submitted s = Submit(env().sshd->url("images/page.html"));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "not a qcow2 image (bad magic 3c68746d)");
}

TEST_F(DownloadTest, UnsafeHashIsRecordedAndNothingWritten) {
  Submitted s =
      Submit(env().http.url(std::string("files/") + kSmall), "jobs", nullptr, "../escape");
  ASSERT_TRUE(WaitAcked(s, daemon()));
  auto row = pg().Download(s.download);
  EXPECT_TRUE(row.finished);
  EXPECT_NE(row.error.find("image hash \"../escape\" is not a safe file name"), std::string::npos)
      << row.error;
  EXPECT_FALSE(FileExists(daemon().store() + "/7/escape"));
}

TEST_F(DownloadTest, MissingImageRowIsRecorded) {
  std::string hash = NewHash();
  int image = pg().AddImage(kUserId, "qemu", hash);
  std::string source = env().http.url(std::string("files/") + kSmall);
  Submitted s;
  s.queue = "jobs";
  s.hash = hash;
  s.download = pg().AddDownload(image, source);
  s.job_id = "dl-no-image-" + hash;
  Push(s.queue, s.job_id, s.download, 999999, source);
  ASSERT_TRUE(WaitAcked(s, daemon()));
  ExpectRecorded(daemon(), s, "image 999999 does not exist");
}

TEST_F(DownloadTest, MissingDownloadRowIsAckedAndLogged) {
  Submitted s;
  s.queue = "jobs";
  s.job_id = "dl-no-row-" + NewHash();
  Push(s.queue, s.job_id, 888888, 1, env().http.url(std::string("files/") + kSmall));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  EXPECT_TRUE(daemon().WaitForLog("job " + s.job_id +
                                  " (download_job): failed: image_downloads row 888888 "
                                  "does not exist"));
  EXPECT_FALSE(pg().Download(888888).exists);
}

TEST_F(DownloadTest, IdsBeyondTheSerialColumnsMeanNoRow) {
  // The job carries int64 IDs; the tables' serial columns hold int4.
  Submitted s;
  s.queue = "jobs";
  s.job_id = "dl-huge-id-" + NewHash();
  Push(s.queue, s.job_id, INT64_MAX, 1, env().http.url(std::string("files/") + kSmall));
  ASSERT_TRUE(WaitAcked(s, daemon()));
  EXPECT_TRUE(daemon().WaitForLog("image_downloads row 9223372036854775807 does not exist"));

  std::string hash = NewHash();
  int image = pg().AddImage(kUserId, "qemu", hash);
  Submitted t;
  t.queue = "jobs";
  t.hash = hash;
  t.download = pg().AddDownload(image, "http://x/");
  t.job_id = "dl-huge-image-" + hash;
  Push(t.queue, t.job_id, t.download, INT64_MIN, "http://x/");
  ASSERT_TRUE(WaitAcked(t, daemon()));
  ExpectRecorded(daemon(), t, "image -9223372036854775808 does not exist");
}

// ------------------------------------------- their own configuration

TEST_F(DownloadTest, TrickleBeyondTimeoutIsAbandoned) {
  Daemon d(Options("jobs-slow", 0, 1));
  ASSERT_TRUE(StartDaemon(&d, DownloadBlock(true, 2, kMaxSize, "")));
  auto start = std::chrono::steady_clock::now();
  Submitted s = Submit(env().http.url(std::string("trickle/1000/") + kSmall), "jobs-slow");
  ASSERT_TRUE(WaitAcked(s, d));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, seconds(10));
  ExpectRecorded(d, s, "timed out");
}

TEST_F(DownloadTest, WorkersDroppedToAnUnprivilegedUserStoreImages) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop privileges";
  const TestUser& user = UnprivilegedUser();
  ASSERT_FALSE(user.name.empty());
  DaemonOptions o = Options("jobs-user", 0, 1);
  o.user = user.name;
  Daemon d(o);
  chmod(d.dir().c_str(), 0755);  // the workers' user must reach the store
  // The extra CA is read by the worker after the drop, like in production.
  ASSERT_TRUE(StartDaemon(&d, DownloadBlock(true, 30, kMaxSize, env().certs.ca_cert)));
  Submitted s = Submit(env().https.url(std::string("files/") + kSmall), "jobs-user");
  ASSERT_TRUE(WaitAcked(s, d)) << d.Log();
  ExpectStored(d, s, env().small);
  struct stat st {};
  ASSERT_EQ(stat(ImagePath(d, s).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, user.uid);
}

// ------------------------------------------------------------ image checks

// Real images made by qemu-img: each refusal is recorded with a message a
// user understands and nothing is stored; valid v2 and v3 images are.
TEST_F(DownloadTest, QemuImgImagesAreCheckedBeforeStoring) {
  std::string files = env().dir.Sub("files");
  auto qemu_img = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "qemu-img");
    std::string out;
    int rc = RunQemuImg(args, &out);
    EXPECT_EQ(rc, 0) << "qemu-img (Debian package qemu-utils) failed: " << out;
  };
  qemu_img({"create", "-q", "-f", "qcow2", files + "/v3.qcow2", "64M"});
  qemu_img({"create", "-q", "-f", "qcow2", "-o", "compat=0.10", files + "/v2.qcow2", "64M"});
  qemu_img({"create", "-q", "-f", "qcow2", "-b", files + "/v3.qcow2", "-F", "qcow2",
            files + "/backed.qcow2"});
  qemu_img({"create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw",
            files + "/shadow.qcow2", "64M"});
  qemu_img({"create", "-q", "-f", "qcow2", "-o", "data_file=" + files + "/ext.raw",
            files + "/external.qcow2", "64M"});
  qemu_img({"create", "-q", "--object", "secret,id=sec0,data=hunter2", "-f", "qcow2", "-o",
            "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
            files + "/luks.qcow2", "16M"});
  // Its LUKS header makes it 2.5 MiB, over this suite's 1 MiB limit: serve
  // its first 64 KiB (qemu-img's own header) so the check, not the size
  // limit, decides.
  fs::resize_file(files + "/luks.qcow2", 64 * 1024);
  std::string garbage = Qcow2Header();
  garbage[7] = 9;  // version 9 (big-endian u32 at offset 4)
  WriteFile(files + "/garbage.qcow2", garbage + std::string(4096, 'g'));

  struct Case {
    std::string file, want;  // want empty: stored
  } cases[] = {
      {"v3.qcow2", ""},
      {"v2.qcow2", ""},
      {"backed.qcow2", "image refers to a backing file; upload a standalone image"},
      {"shadow.qcow2", "image refers to a backing file; upload a standalone image"},
      {"external.qcow2", "image uses an external data file; upload a standalone image"},
      {"luks.qcow2", "image is encrypted; upload an unencrypted image"},
      {"garbage.qcow2", "qcow2 version 9 is not supported (only 2 and 3)"},
  };
  std::vector<Submitted> jobs;
  for (const Case& c : cases) jobs.push_back(Submit(env().http.url("files/" + c.file)));
  // All done first: the checks below also look for stray .part files, which
  // jobs still running on the other workers would have.
  for (size_t i = 0; i < jobs.size(); ++i) ASSERT_TRUE(WaitAcked(jobs[i], daemon()));
  for (size_t i = 0; i < jobs.size(); ++i) {
    SCOPED_TRACE(cases[i].file);
    if (cases[i].want.empty())
      ExpectStored(daemon(), jobs[i], ReadFile(files + "/" + cases[i].file));
    else
      ExpectRecorded(daemon(), jobs[i], cases[i].want);
  }
}

// ------------------------------------------------------------ confinement

// The download process of each job below tries one thing a compromised
// libcurl, OpenSSL or libssh2 would (DJINN_CONSUMER_TEST_DOWNLOAD_PROBE),
// after its confinement and before its transfer; the outcome is recorded
// in the job's row. Controls show that the same probes succeed where they
// should, so a refusal is the sandbox's doing. Then real http, https and
// sftp downloads run under the same confinement.
//
// Run three ways, as operators run it: as root with no user (the store is
// root's), as root with workers dropped to `user`, and started directly as
// an unprivileged user who owns the whole store. In the last two, file
// permissions allow every probe: only the sandbox refuses.
void DownloadTest::ExpectConfined(const TestUser* drop_to, const TestUser* run_as) {
  Result<int> abi = LandlockAbi();
  ASSERT_TRUE(abi.ok()) << abi.status().message();
  std::string queue = std::string("jobs-probe-") + (drop_to ? "user" : run_as ? "run-as" : "root");
  DaemonOptions o = Options(queue, 0, 1);
  if (drop_to) o.user = drop_to->name;
  o.run_as = run_as;
  Daemon d(o);
  const std::string store = d.store();
  const std::string own = store + "/" + std::to_string(kUserId) + "/qemu";
  const std::string other = store + "/8/qemu";
  fs::create_directories(other);
  fs::create_directories(own);
  WriteFile(other + "/their-image", "QFI\xfb their secret");
  if (const TestUser* owner = drop_to ? drop_to : run_as) {
    // The store belongs to the daemon's user, as in production: the kernel's
    // file permissions would let its download process do every probe.
    chmod(d.dir().c_str(), 0755);
    for (const auto& e : fs::recursive_directory_iterator(store)) {
      ASSERT_EQ(lchown(e.path().c_str(), owner->uid, owner->gid), 0) << e.path();
    }
    ASSERT_EQ(chown(store.c_str(), owner->uid, owner->gid), 0);
  }
  std::string url = env().http.url(std::string("files/") + kSmall);

  struct Probe {
    std::string probe, want;
    bool needs_net_rules = false;
  };
  auto hex = [](const std::string& bytes) {
    std::string out;
    char b[3];
    for (unsigned char c : bytes) {
      std::snprintf(b, sizeof b, "%02x", c);
      out += b;
    }
    return out;
  };
  std::vector<Probe> probes = {
      {"read:/etc/hosts", "succeeded"},  // control: name resolution
      {"read:" + own, "Permission denied"},  // it writes only through its .part descriptor
      {"write:" + own + "/planted", "Permission denied"},
      {"read:" + other + "/their-image", "Permission denied"},
      {"write:" + other + "/planted", "Permission denied"},
      {"write:" + store + "/planted", "Permission denied"},
      {"read:/etc/passwd", "Permission denied"},
      {"read:" + d.config_path(), "Permission denied"},  // the database password
      {"connect:" + std::to_string(env().http.port()), "succeeded"},  // control: the source
      {"connect:" + std::to_string(env().redis.port()), "Permission denied", true},
      {"connect:" + std::to_string(env().pg.port()), "Permission denied", true},
      {"exec", "download process stopped by the sandbox: forbidden system call execve"},
      {"fork", "download process stopped by the sandbox: forbidden system call clone"},
      // A fork is a copy of the worker: the database password must be gone
      // from its memory. Control: the image's hash, which it holds.
      {"find-hex:" + hex(pg().consumer_password()), "found 0 copies"},
      {"find-hex:HASH", "found "},
      // Claiming our store failed would give the job back uncounted, and
      // hold the worker back: not believed while the store answers.
      {"unavailable", "(the store answers: counted as a failed attempt)"},
  };
  if (FileExists("/etc/ssl/certs/ca-certificates.crt")) {
    probes.push_back({"read:/etc/ssl/certs/ca-certificates.crt", "succeeded"});  // TLS trust
  }
  std::vector<Submitted> jobs;
  std::string env_value;
  for (const Probe& p : probes) {
    Submitted s;
    s.queue = queue;
    s.hash = NewHash();
    s.image = pg().AddImage(kUserId, "qemu", s.hash);
    s.download = pg().AddDownload(s.image, url);
    s.job_id = "dl-" + std::to_string(s.download) + "-" + s.hash;
    std::string probe = p.probe == "find-hex:HASH" ? "find-hex:" + hex(s.hash) : p.probe;
    env_value += (env_value.empty() ? "" : ";") + std::to_string(s.download) + "=" + probe;
    jobs.push_back(s);
  }
  d.options().env.push_back("DJINN_CONSUMER_TEST_DOWNLOAD_PROBE=" + env_value);
  ASSERT_TRUE(StartDaemon(&d, DownloadBlock(true, 30, kMaxSize, env().certs.ca_cert)));
  for (const Submitted& s : jobs) Push(s.queue, s.job_id, s.download, s.image, url);
  for (size_t i = 0; i < jobs.size(); ++i) {
    SCOPED_TRACE(probes[i].probe);
    ASSERT_TRUE(WaitAcked(jobs[i], d));
    if (probes[i].needs_net_rules && *abi < 4) {
      ADD_FAILURE() << "Landlock ABI " << *abi << " has no TCP rules; this kernel cannot confine "
                    << "the download process's connects (needs ABI 4, Linux 6.7)";
      continue;
    }
    auto row = pg().Download(jobs[i].download);
    EXPECT_TRUE(row.finished);
    EXPECT_NE(row.error.find(probes[i].want), std::string::npos) << row.error << "\n" << d.Log();
    if (probes[i].probe == "find-hex:HASH") {
      EXPECT_EQ(row.error.find("found 0 copies"), std::string::npos) << row.error;
    }
  }
  EXPECT_FALSE(FileExists(other + "/planted"));
  EXPECT_FALSE(FileExists(store + "/planted"));
  EXPECT_EQ(ReadFile(other + "/their-image"), "QFI\xfb their secret");

  // The worker itself is unharmed, and full downloads over each protocol
  // succeed under the allow-list.
  std::vector<std::string> sources = {
      url, "https://localhost:" + std::to_string(env().https.port()) + "/files/" + kSmall};
  if (env().sshd) sources.push_back(env().sshd->url(std::string("images/") + kSmall));
  for (const std::string& source : sources) {
    SCOPED_TRACE(source);
    Submitted s = Submit(source, queue);
    ASSERT_TRUE(WaitAcked(s, d));
    ExpectStored(d, s, env().small);
  }
  // Only the exec and fork probes may trip the allow-list.
  std::istringstream log(d.Log());
  for (std::string line; std::getline(log, line);) {
    if (line.find("forbidden system call") == std::string::npos) continue;
    EXPECT_TRUE(line.find("call execve") != std::string::npos ||
                line.find("call clone") != std::string::npos)
        << line;
  }
}

TEST_F(DownloadTest, DownloadProcessIsConfined) { ExpectConfined(nullptr, nullptr); }

TEST_F(DownloadTest, DownloadProcessIsConfinedAfterDroppingToUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop privileges";
  ExpectConfined(&UnprivilegedUser(), nullptr);
}

TEST_F(DownloadTest, DownloadProcessIsConfinedStartedUnprivileged) {
  if (geteuid() != 0) {
    ExpectConfined(nullptr, nullptr);  // already unprivileged: the plain run is this mode
    return;
  }
  ExpectConfined(nullptr, &UnprivilegedUser());
}

TEST_F(DownloadTest, KnownHostsMatchingKeyIsAccepted) {
  SkipWithoutSshd();
  std::string kh = env().dir.Sub("known_hosts_good");
  WriteFile(kh, env().sshd->HostKeyLine() + "\n");
  Daemon d(Options("jobs-kh-good", 0, 1));
  ASSERT_TRUE(StartDaemon(&d, DownloadBlock(true, 30, kMaxSize, "", kh)));
  Submitted s = Submit(env().sshd->url(std::string("images/") + kSmall), "jobs-kh-good");
  ASSERT_TRUE(WaitAcked(s, d));
  ExpectStored(d, s, env().small);
}

TEST_F(DownloadTest, KnownHostsOtherKeyIsRefused) {
  SkipWithoutSshd();
  std::string key = env().dir.Sub("other_key");
  std::string out;
  ASSERT_EQ(RunCommand({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key}, &out), 0) << out;
  std::string pub = ReadFile(key + ".pub");
  std::string kh = env().dir.Sub("known_hosts_bad");
  WriteFile(kh, "[127.0.0.1]:" + std::to_string(env().sshd->port()) + " " +
                    pub.substr(0, pub.rfind(' ')) + "\n");
  Daemon d(Options("jobs-kh-bad", 0, 1));
  ASSERT_TRUE(StartDaemon(&d, DownloadBlock(true, 30, kMaxSize, "", kh)));
  Submitted s = Submit(env().sshd->url(std::string("images/") + kSmall), "jobs-kh-bad");
  ASSERT_TRUE(WaitAcked(s, d));
  ExpectRecorded(d, s, "host key does not match the one in " + kh);
}

// allow_private = false. The daemon runs in a private network namespace
// where 198.20.0.1 (a public address) is on lo, so one test server can be
// "public"; Redis and PostgreSQL are reached through their unix sockets.
TEST_F(DownloadTest, SsrfGuardRefusesLoopbackAndRedirectsToIt) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for a network namespace";
  std::string small_url = env().http.url(std::string("files/") + kSmall);
  // The same file by name: a refusal names the URL's host, never the
  // address it resolved to.
  std::string by_name = small_url;
  by_name.replace(by_name.find("127.0.0.1"), 9, "localhost");
  PublicResponder responder(env().small, by_name);
  auto daemon_ssrf = std::make_unique<Daemon>(Options("jobs-ssrf", 0, 1));
  {
    PrivateNetwork net;
    std::string why;
    if (!net.Enter(&why)) GTEST_SKIP() << "no private network namespace: " << why;
    ASSERT_TRUE(responder.Start());
    daemon_ssrf->options().redis_addr = env().redis.unix_socket();
    daemon_ssrf->options().database_addr =
        env().pg.socket_dir() + ":" + std::to_string(env().pg.port());
    ASSERT_TRUE(StartDaemon(daemon_ssrf.get(), DownloadBlock(false, 30, kMaxSize, "")));
  }  // back in the test's own network namespace
  Daemon& d = *daemon_ssrf;

  // A public address is fine.
  Submitted ok = Submit(responder.url("/image"), "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(ok, d));
  ExpectStored(d, ok, env().small);

  // A loopback URL is refused before connecting.
  int hits = env().http.Hits(std::string("/files/") + kSmall);
  Submitted direct = Submit(small_url, "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(direct, d));
  ExpectRecorded(d, direct,
                 "GET " + small_url +
                     ": destination not allowed (127.0.0.1; set download.allow_private to allow)");
  Submitted named = Submit(by_name, "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(named, d));
  ExpectRecorded(d, named,
                 "GET " + by_name +
                     ": destination not allowed (localhost; set download.allow_private to allow)");
  EXPECT_EQ(pg().Download(named.download).error.find("127.0.0.1"), std::string::npos);

  // So is a redirect from the public address to loopback (by name): the
  // refusal names the redirect's host.
  Submitted redirected = Submit(responder.url("/redirect"), "jobs-ssrf");
  ASSERT_TRUE(WaitAcked(redirected, d));
  ExpectRecorded(d, redirected,
                 ": destination not allowed (localhost; set download.allow_private to allow)");
  EXPECT_EQ(pg().Download(redirected.download).error.find("127.0.0.1"), std::string::npos);
  EXPECT_EQ(responder.hits(), 2);
  EXPECT_EQ(env().http.Hits(std::string("/files/") + kSmall), hits);
  daemon_ssrf.reset();
  responder.Stop();
}

// The database going away mid-transfer is an outage of ours, not the
// job's failure: the job is held back (no retry counted) and done after.
TEST_F(DownloadTest, PostgresRestartMidJobIsHeldBackAndRowEndsCorrect) {
  PostgresServer db;
  ASSERT_TRUE(db.Start());
  ASSERT_TRUE(db.CreateDjinnSchema());
  DaemonOptions o = Options("jobs-pg", 3, 1);
  o.database_addr = db.addr();
  o.database_password = db.consumer_password();
  Daemon d(o);
  ASSERT_TRUE(StartDaemon(&d, DownloadBlock(true, 30, kMaxSize, "")));
  // ~2 s per transfer: time to stop PostgreSQL while it runs.
  std::string body = QcowBytes(40 * 1024, 2);
  WriteFile(env().dir.Sub("files/pg-restart.qcow2"), body);
  Submitted s = Submit(env().http.url("trickle/20000/pg-restart.qcow2"), "jobs-pg", &db);
  ASSERT_TRUE(WaitFor([&] { return db.Download(s.download).started; }, seconds(10))) << d.Log();
  db.Stop();
  ASSERT_TRUE(d.WaitForLog("job " + s.job_id + " (download_job): database: ")) << d.Log();
  EXPECT_TRUE(d.WaitForLog("a dependency is unavailable: holding jobs back")) << d.Log();
  ASSERT_TRUE(db.Start());
  ASSERT_TRUE(WaitAcked(s, d, seconds(45)));
  ExpectStored(d, s, body, &db);
  EXPECT_FALSE(Retried(d, s));
}

TEST_F(DownloadTest, WorkerWithoutDatabaseStillRunsPing) {
  DaemonOptions o = Options("jobs-nodb", 0, 1);
  o.database_addr = "127.0.0.1:" + std::to_string(FreePort());
  Daemon d(o);
  ASSERT_TRUE(StartDaemon(&d, DownloadBlock(true, 30, kMaxSize, "")));
  RedisOptions ro;
  ro.addr = env().redis.addr();
  CurlyQueue q("jobs-nodb", ro);
  Envelope ping;
  ping.id = "ping-nodb";
  ping.data = R"({"job":"ping"})";
  ASSERT_TRUE(q.Push(ping).ok());
  Submitted p;
  p.queue = "jobs-nodb";
  p.job_id = ping.id;
  ASSERT_TRUE(WaitAcked(p, d));
  // A download needs the database: held back, never dead, never counted,
  // even with attempts = 0.
  Submitted s;
  s.queue = "jobs-nodb";
  s.job_id = "dl-nodb";
  Push(s.queue, s.job_id, 1, 1, env().http.url(std::string("files/") + kSmall));
  EXPECT_TRUE(d.WaitForLog("database: cannot connect to 127.0.0.1:")) << d.Log();
  ASSERT_TRUE(d.WaitForLog("a dependency is unavailable: holding jobs back")) << d.Log();
  // Given back untouched, and again at the next trial (1 s later).
  ASSERT_TRUE(d.WaitForLog("job dl-nodb: database: cannot connect")) << d.Log();
  EXPECT_FALSE(Dead(s));
  EXPECT_TRUE(InData(s));
  RedisClient client(env().redis.port());
  auto stored = DecodeEnvelope(client.Str({"HGET", "jobs-nodb:data", s.job_id}));
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->attempt, 0);
  EXPECT_EQ(d.Workers().size(), 1u);
}

// ------------------------------------------------------------ PgClient

// common/pg.h against a live PostgreSQL with ssl=on, as the consumer role.
class PgClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("djinn-pgc");
    certs_ = new TestCerts(GenerateTestCa(dir_->path()));
    pg_ = new PostgresServer();
    if (!certs_->ok()) {
      error_ = certs_->error;
      return;
    }
    pg_->EnableTls(certs_->ca_cert, certs_->server_cert, certs_->server_key);
    if (auto r = pg_->Start(); !r)
      error_ = r.message();
    else if (auto s = pg_->CreateDjinnSchema(); !s)
      error_ = s.message();
  }
  static void TearDownTestSuite() {
    delete pg_;
    delete certs_;
    delete dir_;
  }
  void SetUp() override { ASSERT_EQ(error_, ""); }

  static DatabaseConfig Config() {
    DatabaseConfig c;
    c.addr = pg_->addr();
    c.name = kDjinnDatabase;
    c.username = pg_->consumer_user();
    c.password = pg_->consumer_password();
    return c;
  }
  static std::string Value(Result<PgResultPtr>& r) {
    if (!r.ok() || PQntuples(r->get()) == 0) return "<" + r.status().message() + ">";
    return PQgetvalue(r->get(), 0, 0);
  }

  static TempDir* dir_;
  static TestCerts* certs_;
  static PostgresServer* pg_;
  static std::string error_;
};
TempDir* PgClientTest::dir_ = nullptr;
TestCerts* PgClientTest::certs_ = nullptr;
PostgresServer* PgClientTest::pg_ = nullptr;
std::string PgClientTest::error_;

TEST_F(PgClientTest, ParametersAreDataNeverSql) {
  PgClient db(Config());
  EXPECT_FALSE(db.connected());
  auto r = db.Exec("SELECT $1::int + 1", {"41"});
  EXPECT_EQ(Value(r), "42");
  EXPECT_TRUE(db.connected());
  std::string evil = "x'); DROP TABLE images; --";
  auto e = db.Exec("SELECT $1::text", {evil});
  EXPECT_EQ(Value(e), evil);
  auto null = db.Exec("SELECT $1::text IS NULL", {std::nullopt});
  EXPECT_EQ(Value(null), "t");
  EXPECT_EQ(pg_->Query1("SELECT count(*) FROM images"), "0");
}

TEST_F(PgClientTest, UpdateReportsRowsAffected) {
  int image = pg_->AddImage(3, "qemu", "pgc-" + std::to_string(FreePort()));
  int dl = pg_->AddDownload(image, "http://x/");
  PgClient db(Config());
  auto n = db.ExecCount("UPDATE image_downloads SET started_at = now() WHERE id = $1",
                        {std::to_string(dl)});
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(*n, 1);
  auto none =
      db.ExecCount("UPDATE image_downloads SET started_at = now() WHERE id = $1", {"987654"});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0);
}

TEST_F(PgClientTest, NoTlsConfiguredMeansPlainConnection) {
  PgClient db(Config());
  auto r = db.Exec("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", {});
  EXPECT_EQ(Value(r), "f");
}

TEST_F(PgClientTest, TlsVerifiesTheServerAgainstTheCa) {
  DatabaseConfig c = Config();
  c.tls_enabled = true;
  c.tls.ca = certs_->ca_cert;
  PgClient db(c);
  auto r = db.Exec("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", {});
  EXPECT_EQ(Value(r), "t");
  // With a client certificate too.
  c.tls.cert = certs_->client_cert;
  c.tls.key = certs_->client_key;
  PgClient with_cert(c);
  auto cr = with_cert.Exec("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()", {});
  EXPECT_NE(Value(cr).find("djinn_consumer"), std::string::npos) << Value(cr);
}

TEST_F(PgClientTest, TlsWithAnotherCaIsRefused) {
  TempDir other;
  TestCerts wrong = GenerateTestCa(other.path());
  ASSERT_TRUE(wrong.ok()) << wrong.error;
  DatabaseConfig c = Config();
  c.tls_enabled = true;
  c.tls.ca = wrong.ca_cert;
  PgClient db(c);
  auto r = db.Exec("SELECT 1", {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().unavailable());
  EXPECT_NE(r.status().message().find("certificate"), std::string::npos) << r.status().message();
}

TEST_F(PgClientTest, PermissionDeniedIsPermanent) {
  PgClient db(Config());
  auto r = db.ExecCount("DELETE FROM images WHERE id = $1", {"1"});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().permanent()) << r.status().message();
  EXPECT_NE(r.status().message().find("permission denied"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
}

TEST_F(PgClientTest, StatementIsResentOnceAfterServerRestart) {
  PgClient db(Config());
  auto before = db.Exec("SELECT pg_backend_pid()", {});
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(pg_->Restart());
  auto after = db.Exec("SELECT pg_backend_pid()", {});
  ASSERT_TRUE(after.ok()) << after.status().message();
  EXPECT_NE(Value(after), Value(before));
}

// ------------------------------------------------------------ PartFile

// worker/fetch.h's temporary file: no servers needed.
TEST(PartFile, ReserveMakesDirectoriesAndALockedPart) {
  TempDir store;
  FetchTarget target{store.path(), {"7", "qemu"}, "abc"};
  PartFile file;
  bool busy = true;
  ASSERT_TRUE(file.Reserve(target, &busy).ok());
  EXPECT_FALSE(busy);
  EXPECT_EQ(file.path(), store.path() + "/7/qemu/abc");
  struct stat st {};
  ASSERT_EQ(stat((store.path() + "/7/qemu").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777 & ~0750, 0u);
  EXPECT_TRUE(FileExists(store.path() + "/7/qemu/.abc.part"));
  file.Discard();
  EXPECT_FALSE(FileExists(store.path() + "/7/qemu/.abc.part"));
  EXPECT_FALSE(FileExists(store.path() + "/7/qemu/abc"));
}

TEST(PartFile, SecondReserveIsBusyWhileTheFirstHoldsIt) {
  TempDir store;
  FetchTarget target{store.path(), {"1", "qemu"}, "h"};
  PartFile first, second;
  bool busy = false;
  ASSERT_TRUE(first.Reserve(target, &busy).ok());
  ASSERT_TRUE(first
                  .Write("QFI\xfb"
                         "data",
                         8)
                  .ok());
  Status st = second.Reserve(target, &busy);
  EXPECT_TRUE(busy);
  EXPECT_TRUE(st.transient());
  EXPECT_FALSE(second.reserved());
  // The busy attempt did not truncate the holder's data.
  ASSERT_TRUE(first.Commit().ok());
  EXPECT_EQ(ReadFile(store.path() + "/1/qemu/h"), std::string("QFI\xfb"
                                                              "data",
                                                              8));
  // Once the holder is done, the next reservation gets a fresh .part and
  // leaves the committed image alone.
  ASSERT_TRUE(second.Reserve(target, &busy).ok());
  EXPECT_FALSE(busy);
  EXPECT_EQ(ReadFile(store.path() + "/1/qemu/h"), std::string("QFI\xfb"
                                                              "data",
                                                              8));
  second.Discard();
  EXPECT_EQ(PartFiles(store.path()), std::vector<std::string>{});
}

TEST(PartFile, StalePartOfADeadWorkerIsReused) {
  TempDir store;
  fs::create_directories(store.path() + "/1/qemu");
  WriteFile(store.path() + "/1/qemu/.h.part", "leftover bytes of a killed worker");
  FetchTarget target{store.path(), {"1", "qemu"}, "h"};
  PartFile file;
  bool busy = false;
  ASSERT_TRUE(file.Reserve(target, &busy).ok());
  EXPECT_EQ(ReadFile(store.path() + "/1/qemu/.h.part"), "");
}

TEST(PartFile, SymlinkInTheStoreIsNotFollowed) {
  TempDir store, elsewhere;
  ASSERT_EQ(symlink(elsewhere.path().c_str(), (store.path() + "/7").c_str()), 0);
  FetchTarget target{store.path(), {"7", "qemu"}, "h"};
  PartFile file;
  bool busy = false;
  Status st = file.Reserve(target, &busy);
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(busy);
  EXPECT_FALSE(FileExists(elsewhere.path() + "/qemu"));
}

TEST(PartFile, UnsafeNamesAreRefused) {
  TempDir store;
  PartFile file;
  bool busy = false;
  for (const FetchTarget& t : {FetchTarget{store.path(), {"..", "qemu"}, "h"},
                               FetchTarget{store.path(), {"1", "a/b"}, "h"},
                               FetchTarget{store.path(), {"1", "qemu"}, ".hidden"},
                               FetchTarget{store.path(), {"1", "qemu"}, ""}}) {
    Status st = file.Reserve(t, &busy);
    EXPECT_TRUE(st.permanent()) << t.Path() << ": " << st.ToString();
  }
  EXPECT_TRUE(fs::is_empty(store.path()));
}

}  // namespace
}  // namespace djinn::testing
