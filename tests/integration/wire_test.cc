// Djinn wire compatibility, end to end: the Go-produced envelopes of
// tests/data/vectors are written into Redis exactly as curlyq's push does,
// and the real djinn-consumer processes them against real PostgreSQL,
// HTTP and sshd servers (DESIGN §3, §4; vectors README §4a).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <climits>
#include <filesystem>

#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/postgres.h"
#include "tests/harness/qcow2_image.h"
#include "tests/harness/redis_client.h"
#include "tests/harness/sshd.h"
#include "tests/harness/vectors.h"

namespace djinn::testing {
namespace {

using Json = nlohmann::json;
using std::chrono::seconds;

// A small qcow2-looking image: the magic, then bytes that differ per file.
std::string Qcow2Bytes(const std::string& seed, size_t n = 256 * 1024) {
  std::string s = Qcow2Header();
  uint32_t x = 2166136261u;
  for (char c : seed) x = (x ^ static_cast<unsigned char>(c)) * 16777619u;
  while (s.size() < n) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    s.push_back(static_cast<char>(x));
  }
  return s;
}

Json Case(const std::string& name) {
  for (const Json& c : VectorCases())
    if (c["name"] == name) return c;
  ADD_FAILURE() << "no vector " << name;
  return Json::object();
}

bool FitsSerial(int64_t v) { return v > 0 && v <= INT32_MAX; }

class WireTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = new RedisServer();
    redis_->Start();
    pg_ = new PostgresServer();
    ASSERT_TRUE(pg_->Start());
    ASSERT_TRUE(pg_->CreateDjinnSchema());
    files_ = new TempDir("djinn-wire-files");
    // The test server maps /images/<name> to <dir>/<name>.
    WriteFile(files_->Sub("e2e.qcow2"), Qcow2Bytes("e2e"));
    WriteFile(files_->Sub("e2e-auth.qcow2"), Qcow2Bytes("e2e-auth"));
    http_ = new HttpServer();
    ASSERT_TRUE(http_->Start(files_->path(), nullptr, kE2eHttpPort));
    std::string why;
    if (SshServer::Available(&why)) {
      sshd_ = new SshServer();
      ASSERT_TRUE(sshd_->Start(kE2eSshPort));
      WriteFile(sshd_->root() + "/images/e2e.qcow2", Qcow2Bytes("e2e-sftp"));
    } else {
      fprintf(stderr, "note: no sshd (%s): the sftp vector is skipped\n", why.c_str());
    }
  }
  static void TearDownTestSuite() {
    delete sshd_;
    delete http_;
    delete files_;
    delete pg_;
    delete redis_;
    sshd_ = nullptr;
  }

  void SetUp() override {
    client_ = std::make_unique<RedisClient>(redis_->port());
    client_->Cmd({"FLUSHALL"});
    DaemonOptions o;
    o.workers = 2;
    o.attempts = 0;  // vectors whose hosts do not resolve: one try, then recorded
    o.redis_addr = redis_->addr();
    o.database_addr = pg_->addr();
    o.database_password = pg_->consumer_password();
    daemon_ = std::make_unique<Daemon>(o);
    ASSERT_TRUE(daemon_->Start());
    ASSERT_TRUE(daemon_->WaitForWorkers(2)) << daemon_->Log();
  }

  // Pushes a vector's envelope as curlyq's Go producer does; returns the
  // Redis job ID used.
  std::string PushVector(const Json& c, const std::string& fallback_id) {
    std::string id = c["envelope"].is_object() && c["envelope"]["ID"].is_string()
                         ? c["envelope"]["ID"].get<std::string>()
                         : fallback_id;
    client_->PushLikeCurlyq("jobs", id, ReadVector(c["files"]["msgpack"]));
    return id;
  }
  bool Acked(const std::string& id) { return client_->Int({"HEXISTS", "jobs:data", id}) == 0; }
  bool Dead(const std::string& id) { return client_->Str({"ZSCORE", "jobs:dead", id}) != ""; }

  // Rows for a download vector, when its IDs fit the serial columns.
  bool MakeRows(const Json& job, const std::string& hash) {
    int64_t id = std::stoll(job["ID_string"].get<std::string>());
    int64_t image = std::stoll(job["ImageID_string"].get<std::string>());
    if (!FitsSerial(id) || !FitsSerial(image)) return false;
    pg_->Exec("DELETE FROM image_downloads WHERE id = " + std::to_string(id) +
              "; DELETE FROM images WHERE id = " + std::to_string(image));
    pg_->AddImage(1, "qemu", hash, "vector", static_cast<int>(image));
    pg_->AddDownload(static_cast<int>(image), job["Source"].get<std::string>(), static_cast<int>(id));
    return true;
  }

  static RedisServer* redis_;
  static PostgresServer* pg_;
  static TempDir* files_;
  static HttpServer* http_;
  static SshServer* sshd_;
  std::unique_ptr<RedisClient> client_;
  std::unique_ptr<Daemon> daemon_;
};
RedisServer* WireTest::redis_ = nullptr;
PostgresServer* WireTest::pg_ = nullptr;
TempDir* WireTest::files_ = nullptr;
HttpServer* WireTest::http_ = nullptr;
SshServer* WireTest::sshd_ = nullptr;

TEST_F(WireTest, EndToEndVectorsDownloadAndRecordSuccess) {
  struct E2e {
    const char* name;
    std::string served;  // bytes the server has
  } cases[] = {
      {"e2e_http_loopback", Qcow2Bytes("e2e")},
      {"e2e_http_loopback_basic_auth", Qcow2Bytes("e2e-auth")},
      {"e2e_sftp_loopback", Qcow2Bytes("e2e-sftp")},
  };
  for (const auto& e : cases) {
    SCOPED_TRACE(e.name);
    if (std::string(e.name) == "e2e_sftp_loopback" && !sshd_) continue;
    Json c = Case(e.name);
    std::string hash = std::string("hash-") + e.name;
    ASSERT_TRUE(MakeRows(c["job"], hash));
    int id = std::stoi(c["job"]["ID_string"].get<std::string>());
    std::string job_id = PushVector(c, "");
    ASSERT_TRUE(WaitFor([&] { return Acked(job_id); }, seconds(30))) << daemon_->Log();
    auto row = pg_->Download(id);
    EXPECT_TRUE(row.started && row.finished) << daemon_->Log();
    EXPECT_FALSE(row.has_error) << row.error << "\n" << daemon_->Log();
    std::string stored = daemon_->store() + "/1/qemu/" + hash;
    EXPECT_EQ(Sha256Hex(ReadFile(stored)), Sha256Hex(e.served));
    EXPECT_FALSE(FileExists(daemon_->store() + "/1/qemu/." + hash + ".part"));
  }
  EXPECT_EQ(client_->Int({"ZCARD", "jobs:dead"}), 0);
}

TEST_F(WireTest, EveryOtherDownloadVectorEndsWithItsErrorRecorded) {
  for (const Json& c : VectorCases()) {
    std::string name = c["name"];
    std::string category = c["category"];
    if ((category != "download_job" && category != "envelope_variant") || name.rfind("e2e_", 0) == 0)
      continue;
    SCOPED_TRACE(name);
    const Json& job = c["job"];
    bool rows = MakeRows(job, "hash-" + name);
    std::string job_id = PushVector(c, "");
    // One try (attempts = 0): the host does not resolve here, so the job is
    // acked with the error recorded, never retried, never dead.
    ASSERT_TRUE(WaitFor([&] { return Acked(job_id); }, seconds(30))) << daemon_->Log();
    EXPECT_FALSE(Dead(job_id));
    if (rows) {
      auto row = pg_->Download(std::stoi(job["ID_string"].get<std::string>()));
      EXPECT_TRUE(row.started && row.finished);
      EXPECT_TRUE(row.has_error);
      EXPECT_FALSE(row.error.empty());
      // Passwords of the vectors' URLs never reach the row.
      std::string password = job["source_parts"]["Password"];
      if (!password.empty()) {
        EXPECT_EQ(row.error.find(password), std::string::npos) << row.error;
      }
    } else {
      // IDs no serial column can hold: nothing to record, logged and acked.
      EXPECT_TRUE(daemon_->WaitForLog("job " + job_id + " (download_job)")) << daemon_->Log();
    }
  }
  EXPECT_EQ(client_->Int({"ZCARD", "jobs:scheduled"}), 0);
  EXPECT_EQ(client_->Int({"ZCARD", "jobs:dead"}), 0);
}

TEST_F(WireTest, MalformedAndForeignVectorsGoToDeadWithDataIntact) {
  int n = 0;
  for (const Json& c : VectorCases()) {
    std::string name = c["name"];
    std::string category = c["category"];
    if (category != "malformed" && category != "other_job_type") continue;
    SCOPED_TRACE(name);
    std::string bytes = ReadVector(c["files"]["msgpack"]);
    std::string job_id = "vector-" + name;  // a malformed envelope may have no usable ID
    client_->PushLikeCurlyq("jobs", job_id, bytes);
    ASSERT_TRUE(WaitFor([&] { return Dead(job_id); }, seconds(20))) << daemon_->Log();
    EXPECT_EQ(client_->Str({"HGET", "jobs:data", job_id}), bytes);
    n++;
  }
  EXPECT_EQ(n, 17);
  EXPECT_EQ(client_->Int({"LLEN", "jobs:active"}), 0);
  EXPECT_EQ(client_->Int({"ZCARD", "jobs:scheduled"}), 0);
  // The consumer is still running with its first workers.
  EXPECT_TRUE(daemon_->Running());
  EXPECT_EQ(daemon_->Workers().size(), 2u);
  EXPECT_EQ(daemon_->Log().find("died young"), std::string::npos) << daemon_->Log();
}

}  // namespace
}  // namespace djinn::testing
