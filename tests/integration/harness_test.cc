// Tests of the test harness itself: each server starts, answers as the other
// integration tests expect, and stops leaving nothing behind.
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "common/c_handles.h"
#include "tests/harness/http_server.h"
#include "tests/harness/postgres.h"
#include "tests/harness/sshd.h"
#include "tests/harness/tls.h"

namespace djinn::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

long long MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

void ReportTiming(const std::string& what, long long ms) {
  std::cout << "[timing] " << what << ": " << ms << " ms" << std::endl;
}

std::string RandomBytes(size_t n) {
  std::mt19937_64 rng(n);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  s.replace(0, 4, "QFI\xfb");
  return s;
}

// curl with -sS; returns the exit status, *out gets stdout+stderr (the -w text).
int Curl(const std::vector<std::string>& args, std::string* out = nullptr) {
  std::vector<std::string> argv = {"curl", "-sS", "--noproxy", "*"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string ignored;
  return Run(argv, out ? out : &ignored);
}

bool PortAccepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

bool PidAlive(pid_t pid) { return pid > 0 && kill(pid, 0) == 0; }

// ---------------------------------------------------------------- TLS

TEST(TlsHarness, GeneratesCaSignedServerAndClientCerts) {
  TempDir dir;
  auto t = Clock::now();
  TestCerts certs = GenerateTestCa(dir.path());
  ReportTiming("GenerateTestCa", MsSince(t));
  ASSERT_TRUE(certs.ok()) << certs.error;
  std::string out;
  EXPECT_EQ(
      djinn::testing::Run({"openssl", "verify", "-CAfile", certs.ca_cert, certs.server_cert}, &out),
      0)
      << out;
  EXPECT_EQ(djinn::testing::Run({"openssl", "verify", "-CAfile", certs.ca_cert, "-purpose",
                                 "sslclient", certs.client_cert},
                                &out),
            0)
      << out;
  ASSERT_EQ(
      djinn::testing::Run(
          {"openssl", "x509", "-in", certs.server_cert, "-noout", "-ext", "subjectAltName"}, &out),
      0);
  EXPECT_NE(out.find("DNS:localhost"), std::string::npos) << out;
  EXPECT_NE(out.find("IP Address:127.0.0.1"), std::string::npos) << out;
  EXPECT_NE(out.find("IP Address:0:0:0:0:0:0:0:1"), std::string::npos) << out;
}

TEST(TlsHarness, TwoCasAreUnrelated) {
  TempDir a, b;
  TestCerts ca = GenerateTestCa(a.path());
  TestCerts cb = GenerateTestCa(b.path());
  ASSERT_TRUE(ca.ok() && cb.ok()) << ca.error << cb.error;
  EXPECT_NE(djinn::testing::Run({"openssl", "verify", "-CAfile", ca.ca_cert, cb.server_cert}), 0);
}

// ---------------------------------------------------------------- PostgreSQL

TEST(PostgresHarness, StartsAndAnswersSelect1) {
  PostgresServer pg;
  auto t = Clock::now();
  ASSERT_TRUE(pg.Start());
  ReportTiming("PostgresServer::Start (first in process, includes initdb)", MsSince(t));
  EXPECT_EQ(pg.Query1("SELECT 1"), "1");
  EXPECT_EQ(pg.host(), "127.0.0.1");
  std::string out;
  EXPECT_TRUE(pg.Exec("SELECT 1, NULL, 'x' UNION ALL SELECT 2, 'y', NULL", &out));
  EXPECT_EQ(out, "1||x\n2|y|");
  EXPECT_FALSE(pg.Exec("SELEC nonsense", &out));
  EXPECT_NE(out.find("syntax error"), std::string::npos) << out;
}

TEST(PostgresHarness, SecondServerStartsFast) {
  PostgresServer first;
  ASSERT_TRUE(first.Start());  // makes sure the template exists
  PostgresServer pg;
  auto t = Clock::now();
  ASSERT_TRUE(pg.Start());
  ReportTiming("PostgresServer::Start (template ready)", MsSince(t));
  t = Clock::now();
  ASSERT_TRUE(pg.CreateDjinnSchema());
  ReportTiming("PostgresServer::CreateDjinnSchema", MsSince(t));
  EXPECT_NE(pg.port(), first.port());
  EXPECT_EQ(pg.Query1("SELECT 1"), "1");
}

TEST(PostgresHarness, ConsumerRoleHasLeastPrivilege) {
  PostgresServer pg;
  ASSERT_TRUE(pg.Start());
  ASSERT_TRUE(pg.CreateDjinnSchema());
  int image = pg.AddImage(7, "qemu", "abc123", "debian");
  ASSERT_GT(image, 0);
  int dl = pg.AddDownload(image, "https://example.invalid/x.qcow2");
  ASSERT_GT(dl, 0);

  std::string out;
  ASSERT_TRUE(pg.ExecAsConsumer(
      "SELECT user_id, driver, hash FROM images WHERE id = " + std::to_string(image), &out))
      << out;
  EXPECT_EQ(out, "7|qemu|abc123");
  EXPECT_TRUE(pg.ExecAsConsumer(
      "UPDATE image_downloads SET started_at = now() WHERE id = " + std::to_string(dl), &out))
      << out;
  EXPECT_TRUE(
      pg.ExecAsConsumer("UPDATE image_downloads SET error = 'boom', finished_at = now() "
                        "WHERE id = " +
                            std::to_string(dl),
                        &out))
      << out;
  PostgresServer::DownloadRow row = pg.Download(dl);
  EXPECT_TRUE(row.exists && row.started && row.finished && row.has_error);
  EXPECT_EQ(row.error, "boom");

  for (const char* sql : {
           "INSERT INTO images (user_id, author_id, driver, hash, name) "
           "VALUES (1, 1, 'qemu', 'h', 'n')",
           "UPDATE images SET name = 'x'",
           "DELETE FROM image_downloads",
           "INSERT INTO image_downloads (image_id, source) VALUES (1, 's')",
           "CREATE TABLE t (x int)",
       }) {
    EXPECT_FALSE(pg.ExecAsConsumer(sql, &out)) << sql;
    EXPECT_NE(out.find("permission denied"), std::string::npos) << sql << ": " << out;
  }
  // Only the djinn database is open to it.
  PgConnPtr other(
      PQconnectdb(("host=127.0.0.1 port=" + std::to_string(pg.port()) +
                   " dbname=postgres user=djinn_consumer password=" + pg.consumer_password())
                      .c_str()));
  EXPECT_NE(PQstatus(other.get()), CONNECTION_OK);
  // And the password matters.
  PgConnPtr wrong(PQconnectdb(("host=127.0.0.1 port=" + std::to_string(pg.port()) +
                               " dbname=djinn user=djinn_consumer password=nope")
                                  .c_str()));
  EXPECT_NE(PQstatus(wrong.get()), CONNECTION_OK);
}

TEST(PostgresHarness, SchemaMatchesDjinn) {
  PostgresServer pg;
  ASSERT_TRUE(pg.Start());
  ASSERT_TRUE(pg.CreateDjinnSchema());
  EXPECT_EQ(pg.Query1("SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum "
                      "WHERE enumtypid = 'driver_type'::regtype"),
            "ssh,qemu,docker,os");
  EXPECT_EQ(pg.Query1("SELECT string_agg(column_name || ':' || is_nullable, ',' ORDER BY "
                      "ordinal_position) FROM information_schema.columns WHERE table_name = "
                      "'image_downloads'"),
            "id:NO,image_id:NO,source:NO,error:YES,created_at:NO,started_at:YES,finished_at:YES");
  // Fixed ids (the e2e vectors) and the cascade.
  ASSERT_EQ(pg.AddImage(1, "qemu", "e2e", "e2e", 601), 601);
  ASSERT_EQ(pg.AddDownload(601, "http://127.0.0.1:18931/images/e2e.qcow2", 501), 501);
  EXPECT_FALSE(pg.Download(502).exists);
  ASSERT_TRUE(pg.Exec("DELETE FROM images WHERE id = 601"));
  EXPECT_FALSE(pg.Download(501).exists);
}

TEST(PostgresHarness, RestartKeepsPortAndData) {
  PostgresServer pg;
  ASSERT_TRUE(pg.Start());
  ASSERT_TRUE(pg.CreateDjinnSchema());
  int image = pg.AddImage(1, "qemu", "keep", "keep");
  int port = pg.port();
  auto t = Clock::now();
  ASSERT_TRUE(pg.Restart());
  ReportTiming("PostgresServer::Restart", MsSince(t));
  EXPECT_EQ(pg.port(), port);
  EXPECT_EQ(pg.Query1("SELECT hash FROM images WHERE id = " + std::to_string(image)), "keep");
  // A crash too.
  pg.Kill();
  EXPECT_NE(PQping(("host=127.0.0.1 port=" + std::to_string(port)).c_str()), PQPING_OK);
  ASSERT_TRUE(pg.Start());
  EXPECT_EQ(pg.Query1("SELECT hash FROM images WHERE id = " + std::to_string(image)), "keep");
}

TEST(PostgresHarness, StopLeavesNothingBehind) {
  std::string dir;
  int port;
  {
    PostgresServer pg;
    ASSERT_TRUE(pg.Start());
    dir = pg.socket_dir();
    port = pg.port();
    EXPECT_TRUE(PortAccepts(port));
    pg.Stop();
    EXPECT_FALSE(pg.Running());
    EXPECT_FALSE(PortAccepts(port));
  }
  EXPECT_FALSE(fs::exists(dir));
  // No postgres process is left with that data dir.
  std::string out;
  djinn::testing::Run({"pgrep", "-f", dir + "/data"}, &out);
  EXPECT_EQ(out, "");
}

TEST(PostgresHarness, TlsVerifyFullWithTestCa) {
  TempDir certs_dir;
  TestCerts certs = GenerateTestCa(certs_dir.path());
  ASSERT_TRUE(certs.ok()) << certs.error;
  PostgresServer pg;
  pg.EnableTls(certs.ca_cert, certs.server_cert, certs.server_key);
  ASSERT_TRUE(pg.Start());
  ASSERT_TRUE(pg.CreateDjinnSchema());
  for (const char* host : {"127.0.0.1", "localhost"}) {
    PgConnPtr conn(PQconnectdb((pg.ConsumerConnInfo() + " host=" + host +
                                " sslmode=verify-full sslrootcert=" + certs.ca_cert +
                                " sslcert=" + certs.client_cert + " sslkey=" + certs.client_key)
                                   .c_str()));
    ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << host << ": " << PQerrorMessage(conn.get());
    EXPECT_EQ(PQsslInUse(conn.get()), 1);
  }
  // Another CA does not verify it.
  TempDir other_dir;
  TestCerts other = GenerateTestCa(other_dir.path());
  ASSERT_TRUE(other.ok());
  PgConnPtr bad(PQconnectdb(
      (pg.ConsumerConnInfo() + " sslmode=verify-full sslrootcert=" + other.ca_cert).c_str()));
  EXPECT_NE(PQstatus(bad.get()), CONNECTION_OK);
}

// ---------------------------------------------------------------- HTTP

class HttpHarness : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = RandomBytes(3 * 1024 * 1024 + 17);
    WriteFile(files_.Sub("img.qcow2"), image_);
    WriteFile(files_.Sub("e2e.qcow2"), image_);
    WriteFile(files_.Sub("e2e-auth.qcow2"), image_);
    auto t = Clock::now();
    ASSERT_TRUE(http_.Start(files_.path()));
    ReportTiming("HttpServer::Start", MsSince(t));
  }

  // GETs path into a file; returns "<curl exit> <http code> <content type>".
  std::string Get(const std::string& path, std::string* body = nullptr,
                  std::vector<std::string> extra = {}) {
    std::string file = out_.Sub("body");
    std::remove(file.c_str());
    std::vector<std::string> args = {"-o", file, "-w", "%{http_code} %{content_type}"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(http_.url(path));
    std::string out;
    int rc = Curl(args, &out);
    if (body) *body = ReadFile(file);
    return std::to_string(rc) + " " + out;
  }

  TempDir files_{"djinn-http-files"};
  TempDir out_{"djinn-http-out"};
  std::string image_;
  HttpServer http_;
};

TEST_F(HttpHarness, FilesServesIdenticalBytesAsQemuDisk) {
  std::string body;
  EXPECT_EQ(Get("/files/img.qcow2", &body), "0 200 application/x-qemu-disk");
  EXPECT_EQ(Sha256Hex(body), Sha256Hex(image_));
  EXPECT_EQ(Get("/images/e2e.qcow2", &body), "0 200 application/x-qemu-disk");
  EXPECT_EQ(body, image_);
  EXPECT_EQ(Get("/files/missing.qcow2"), "0 404 text/plain");
  EXPECT_EQ(Get("/files/../etc/passwd"), "0 404 text/plain");
  EXPECT_EQ(Get("/files/%2e%2e/%2e%2e/etc/passwd"), "0 404 text/plain");
  EXPECT_EQ(http_.Hits("/files/img.qcow2"), 1);
  EXPECT_EQ(http_.url("x"), "http://127.0.0.1:" + std::to_string(http_.port()) + "/x");
}

TEST_F(HttpHarness, CtypeRouteSetsThatContentType) {
  std::string body;
  EXPECT_EQ(Get("/ctype/text%2Fhtml/img.qcow2", &body), "0 200 text/html");
  EXPECT_EQ(body, image_);
  EXPECT_EQ(Get("/ctype/-/img.qcow2"), "0 200 ");
  EXPECT_EQ(Get("/files/img.qcow2?ctype=application/octet-stream"),
            "0 200 application/octet-stream");
}

TEST_F(HttpHarness, StatusRoute) {
  EXPECT_EQ(Get("/status/503"), "0 503 text/plain");
  EXPECT_EQ(Get("/status/404"), "0 404 text/plain");
  EXPECT_EQ(http_.Hits("/status/503"), 1);
  auto reqs = http_.Requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].method, "GET");
  EXPECT_EQ(reqs[0].path, "/status/503");
  EXPECT_EQ(reqs[0].status, 503);
}

TEST_F(HttpHarness, FlakyFailsNTimesThenServes) {
  std::string body;
  EXPECT_EQ(Get("/flaky/2/k1/img.qcow2"), "0 500 text/plain");
  EXPECT_EQ(Get("/flaky/2/k1/img.qcow2"), "0 500 text/plain");
  EXPECT_EQ(Get("/flaky/2/k2/img.qcow2"), "0 500 text/plain");  // its own count
  EXPECT_EQ(Get("/flaky/2/k1/img.qcow2", &body), "0 200 application/x-qemu-disk");
  EXPECT_EQ(body, image_);
  EXPECT_EQ(http_.Hits("/flaky/2/k1/img.qcow2"), 3);
}

TEST_F(HttpHarness, AuthRequiresBasicCredentials) {
  std::string body;
  EXPECT_EQ(Get("/auth/u/p/img.qcow2"), "0 401 text/plain");
  EXPECT_EQ(Get("/auth/u/p/img.qcow2", nullptr, {"-u", "u:wrong"}), "0 401 text/plain");
  EXPECT_EQ(Get("/auth/u/p/img.qcow2", &body, {"-u", "u:p"}), "0 200 application/x-qemu-disk");
  EXPECT_EQ(body, image_);
  // The e2e vector's route and credentials, given in the URL.
  EXPECT_EQ(Get("/images/e2e-auth.qcow2"), "0 401 text/plain");
  std::string url = http_.url("/images/e2e-auth.qcow2");
  url.replace(url.find("127.0.0.1"), 0, "djinn:s3cret@");
  std::string out;
  EXPECT_EQ(Curl({"-o", out_.Sub("auth"), "-w", "%{http_code}", url}, &out), 0);
  EXPECT_EQ(out, "200");
  EXPECT_EQ(ReadFile(out_.Sub("auth")), image_);
}

TEST_F(HttpHarness, Redirects) {
  std::string body;
  EXPECT_EQ(Get("/redirect/3/files/img.qcow2", &body, {"-L"}), "0 200 application/x-qemu-disk");
  EXPECT_EQ(body, image_);
  EXPECT_EQ(http_.Hits("/redirect/3/files/img.qcow2"), 1);
  EXPECT_EQ(http_.Hits("/redirect/1/files/img.qcow2"), 1);
  EXPECT_EQ(http_.Hits("/files/img.qcow2"), 1);
  std::string out;
  EXPECT_EQ(Curl({"-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                  http_.url("/redirect-to?url=file%3A%2F%2F%2Fetc%2Fpasswd")},
                 &out),
            0);
  EXPECT_EQ(out, "302 file:///etc/passwd");
  EXPECT_EQ(Curl({"-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                  http_.url("/redirect-to?code=307&url=http%3A%2F%2F127.0.0.1%3A1%2Fx")},
                 &out),
            0);
  EXPECT_EQ(out, "307 http://127.0.0.1:1/x");
}

TEST_F(HttpHarness, NoLengthAndChunkedBodiesAreComplete) {
  for (const char* path : {"/nolength/img.qcow2", "/chunked/img.qcow2",
                           "/files/img.qcow2?nolength=1", "/files/img.qcow2?chunked=1"}) {
    std::string file = out_.Sub("h");
    std::string out;
    EXPECT_EQ(Curl({"-D", file, "-o", out_.Sub("b"), http_.url(path)}, &out), 0) << out;
    std::string headers = ReadFile(file);
    EXPECT_EQ(headers.find("Content-Length"), std::string::npos) << path << headers;
    EXPECT_EQ(ReadFile(out_.Sub("b")), image_) << path;
  }
}

TEST_F(HttpHarness, BigStreamsGeneratedBody) {
  std::string body;
  EXPECT_EQ(Get("/big/3000001", &body), "0 200 application/x-qemu-disk");
  EXPECT_EQ(body.size(), 3000001u);
  EXPECT_EQ(body.substr(0, 4), "QFI\xfb");
  EXPECT_TRUE(body == HttpServer::BigBody(3000001));
  // How fast curl -o gets it (the benchmark's reference), for the report.
  size_t n = 512u << 20;
  std::string out;
  auto t = Clock::now();
  EXPECT_EQ(
      Curl({"-o", "/dev/null", "-w", "%{size_download}", http_.url("/big/" + std::to_string(n))},
           &out),
      0);
  EXPECT_EQ(out, std::to_string(n));
  long long ms = std::max(1LL, MsSince(t));
  std::cout << "[timing] curl -o /dev/null /big/512MiB: " << ms << " ms, " << (n >> 20) * 1000 / ms
            << " MiB/s" << std::endl;
}

TEST_F(HttpHarness, TrickleStopsWhenClientGoesAway) {
  // 3 MiB at 10 KiB/s would take minutes: curl gives up after 1 s.
  std::string out;
  auto t = Clock::now();
  EXPECT_EQ(
      Curl({"--max-time", "1", "-o", "/dev/null", http_.url("/trickle/10240/img.qcow2")}, &out), 28)
      << out;
  EXPECT_LT(MsSince(t), 3000);
  EXPECT_EQ(http_.Hits("/trickle/10240/img.qcow2"), 1);
  // Its handler thread ends promptly: only the main thread is left.
  pid_t pid = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string cmd = ReadFile(e.path().string() + "/cmdline");
    if (cmd.find("httpd.py") != std::string::npos && cmd.find(files_.path()) != std::string::npos) {
      pid = std::atoi(e.path().filename().c_str());
    }
  }
  ASSERT_GT(pid, 0);
  std::string task = "/proc/" + std::to_string(pid) + "/task";
  auto threads = [&] {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(task)) ++n;
    return n;
  };
  EXPECT_TRUE(WaitFor([&] { return threads() == 1; }, std::chrono::seconds(2)))
      << threads() << " threads";
  // A short one arrives whole.
  WriteFile(files_.Sub("small.qcow2"), "QFI\xfbhello");
  std::string body;
  EXPECT_EQ(Get("/trickle/20/small.qcow2", &body), "0 200 application/x-qemu-disk");
  EXPECT_EQ(body, "QFI\xfbhello");
}

TEST_F(HttpHarness, FixedPortThatIsTakenFailsClearly) {
  HttpServer second;
  ::testing::AssertionResult r = second.Start(files_.path(), nullptr, http_.port());
  ASSERT_FALSE(r);
  EXPECT_NE(std::string(r.message()).find("port " + std::to_string(http_.port()) + " is taken"),
            std::string::npos)
      << r.message();
}

TEST_F(HttpHarness, StopLeavesNothingBehind) {
  int port = http_.port();
  EXPECT_TRUE(PortAccepts(port));
  http_.Stop();
  EXPECT_FALSE(PortAccepts(port));
  // Start again on the same (now fixed) port.
  ASSERT_TRUE(http_.Start(files_.path(), nullptr, port));
  EXPECT_EQ(Get("/files/img.qcow2"), "0 200 application/x-qemu-disk");
}

TEST(HttpsHarness, ServesWithTestCa) {
  TempDir certs_dir, files;
  TestCerts certs = GenerateTestCa(certs_dir.path());
  ASSERT_TRUE(certs.ok()) << certs.error;
  std::string image = RandomBytes(2 << 20);
  WriteFile(files.Sub("img.qcow2"), image);
  HttpServer https;
  ASSERT_TRUE(https.Start(files.path(), &certs));
  EXPECT_TRUE(https.tls());
  EXPECT_EQ(https.url("a"), "https://127.0.0.1:" + std::to_string(https.port()) + "/a");
  std::string out;
  for (const char* path : {"/files/img.qcow2", "/chunked/img.qcow2", "/auth/a/b/img.qcow2"}) {
    std::string file = files.Sub("got");
    EXPECT_EQ(Curl({"--cacert", certs.ca_cert, "-u", "a:b", "-o", file, "-w", "%{http_code}",
                    https.url(path)},
                   &out),
              0)
        << out;
    EXPECT_EQ(out, "200");
    EXPECT_EQ(ReadFile(file), image) << path;
  }
  // By name too (SAN DNS:localhost).
  std::string by_name = https.url("/files/img.qcow2");
  by_name.replace(by_name.find("127.0.0.1"), 9, "localhost");
  EXPECT_EQ(Curl({"--cacert", certs.ca_cert, "-o", "/dev/null", by_name}, &out), 0) << out;
  // Without the CA: verification fails (curl 60).
  EXPECT_EQ(Curl({"-o", "/dev/null", https.url("/files/img.qcow2")}, &out), 60) << out;
  // The server survives the failed handshake.
  EXPECT_EQ(Curl({"--cacert", certs.ca_cert, "-o", "/dev/null", https.url("/status/204")}, &out), 0)
      << out;
}

// ---------------------------------------------------------------- sshd

class SshHarness : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!SshServer::Available(&why)) GTEST_SKIP() << why;
    auto t = Clock::now();
    ASSERT_TRUE(sshd_.Start());
    ReportTiming("SshServer::Start", MsSince(t));
    image_ = RandomBytes(1 << 20);
    WriteFile(sshd_.root() + "/images/e2e.qcow2", image_);
  }

  TempDir out_{"djinn-sftp-out"};
  std::string image_;
  SshServer sshd_;
};

TEST_F(SshHarness, SftpWithPasswordServesTheFile) {
  std::string out;
  std::string file = out_.Sub("got");
  auto t = Clock::now();
  ASSERT_EQ(Curl({"-k", "-o", file, sshd_.url("/images/e2e.qcow2")}, &out), 0) << out;
  ReportTiming("curl sftp 1 MiB", MsSince(t));
  EXPECT_EQ(ReadFile(file), image_);
}

TEST_F(SshHarness, WrongPasswordIsRefused) {
  std::string out;
  std::string url = sshd_.url("/images/e2e.qcow2");
  url.replace(url.find(":s3cret@"), 8, ":wrong@");
  EXPECT_EQ(Curl({"-k", "-o", "/dev/null", url}, &out), 67) << out;  // login denied
}

TEST_F(SshHarness, ChrootHidesTheRealFilesystem) {
  std::string out;
  EXPECT_EQ(Curl({"-k", "-o", "/dev/null", sshd_.url("/etc/passwd")}, &out), 78) << out;
  EXPECT_EQ(Curl({"-k", "-o", "/dev/null", sshd_.url("/images/missing.qcow2")}, &out), 78) << out;
}

TEST_F(SshHarness, HostKeyLineVerifiesTheServer) {
  std::string line = sshd_.HostKeyLine();
  EXPECT_EQ(line.rfind("[127.0.0.1]:" + std::to_string(sshd_.port()) + " ssh-ed25519 AAAA", 0), 0u)
      << line;
  TempDir home;
  fs::create_directories(home.Sub(".ssh"));
  WriteFile(home.Sub(".ssh/known_hosts"), line + "\n");
  std::string out;
  std::string file = out_.Sub("got");
  EXPECT_EQ(djinn::testing::Run({"env", "HOME=" + home.path(), "curl", "-sS", "-o", file,
                                 sshd_.url("/images/e2e.qcow2")},
                                &out),
            0)
      << out;
  EXPECT_EQ(ReadFile(file), image_);
  // Another server's key: refused.
  SshServer other;
  ASSERT_TRUE(other.Start());
  std::string wrong = other.HostKeyLine();
  wrong.replace(wrong.find(std::to_string(other.port())), std::to_string(other.port()).size(),
                std::to_string(sshd_.port()));
  WriteFile(home.Sub(".ssh/known_hosts"), wrong + "\n");
  EXPECT_NE(djinn::testing::Run({"env", "HOME=" + home.path(), "curl", "-sS", "-o", "/dev/null",
                                 sshd_.url("/images/e2e.qcow2")},
                                &out),
            0)
      << out;
}

TEST_F(SshHarness, FixedPortThatIsTakenFailsClearly) {
  SshServer second;
  ::testing::AssertionResult r = second.Start(sshd_.port());
  ASSERT_FALSE(r);
  EXPECT_NE(std::string(r.message()).find("port " + std::to_string(sshd_.port()) + " is taken"),
            std::string::npos)
      << r.message();
}

TEST(SshHarnessLifetime, StopLeavesNothingBehind) {
  std::string why;
  if (!SshServer::Available(&why)) GTEST_SKIP() << why;
  std::string root;
  int port;
  {
    SshServer sshd;
    ASSERT_TRUE(sshd.Start());
    root = sshd.root();
    port = sshd.port();
    WriteFile(root + "/images/x.qcow2", "QFI\xfb");
    std::string out;
    EXPECT_EQ(Curl({"-k", "-o", "/dev/null", sshd.url("/images/x.qcow2")}, &out), 0) << out;
    // A session still open when the server stops: a slow transfer.
    WriteFile(root + "/images/big.qcow2", std::string(64 << 20, 'x'));
    Process slow;
    TempDir logs;
    ASSERT_TRUE(slow.Start({"curl", "-sS", "-k", "--limit-rate", "100K", "-o", "/dev/null",
                            sshd.url("/images/big.qcow2")},
                           logs.Sub("curl.log")));
    // sshd forks one process per connection: wait for it, then check it dies.
    std::string sessions;
    ASSERT_TRUE(WaitFor([&] {
      djinn::testing::Run({"pgrep", "-P", std::to_string(sshd.pid())}, &sessions);
      return !sessions.empty();
    })) << "no session process appeared";
    sshd.Stop();
    EXPECT_FALSE(PortAccepts(port));
    EXPECT_NE(slow.Wait(std::chrono::seconds(5)), -1) << "the transfer was not cut";
    for (pid_t p : {static_cast<pid_t>(std::atoi(sessions.c_str()))}) {
      EXPECT_TRUE(WaitFor([&] {
        return !PidAlive(p) ||
               ReadFile("/proc/" + std::to_string(p) + "/stat").find(") Z") != std::string::npos;
      })) << "session "
          << p << " outlived sshd";
    }
  }
  EXPECT_FALSE(fs::exists(fs::path(root).parent_path()));
}

}  // namespace
}  // namespace djinn::testing
