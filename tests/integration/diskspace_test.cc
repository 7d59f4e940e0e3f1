// store.images.min_free end to end: the real daemon with its store on a
// 64 MiB tmpfs and min_free 16 MiB. A ballast file brings the store near
// or below the floor; jobs must then wait (given back, no attempt
// counted, nothing recorded, never dead), the outage logged once, and
// finish once the ballast is gone. Plus the pieces a daemon cannot show
// cheaply: ENOSPC on the .part file is an outage, and the worker's own
// confirmation of a "no room" report (PartFile::ConfirmNoSpace).
//
// Needs root (mount); skipped otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/envelope.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/postgres.h"
#include "tests/harness/qcow2_image.h"
#include "tests/harness/redis_client.h"
#include "worker/fetch.h"

namespace djinn::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kUserId = 11;
constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kFloor = 16 * kMiB;  // min_free = "16MB"
constexpr char kQueue[] = "jobs-space";

// A tmpfs of `size` bytes mounted on dir (which must exist) until
// destroyed.
class Tmpfs {
 public:
  bool Mount(const std::string& dir, uint64_t size, std::string* why) {
    std::string opts = "size=" + std::to_string(size) + ",mode=0755";
    if (mount("tmpfs", dir.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
      *why = "mount tmpfs on " + dir + ": " + std::strerror(errno);
      return false;
    }
    dir_ = dir;
    return true;
  }
  ~Tmpfs() {
    if (!dir_.empty()) umount2(dir_.c_str(), MNT_DETACH);
  }

 private:
  std::string dir_;
};

uint64_t Avail(const std::string& dir) {
  struct statvfs v {};
  if (statvfs(dir.c_str(), &v) != 0) return 0;
  return static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
}

class DiskSpaceTest : public ::testing::Test {
 protected:
  struct Env {
    TempDir dir{"djinn-space"};
    RedisServer redis;
    PostgresServer pg;
    HttpServer http;
    std::unique_ptr<Daemon> daemon;
    Tmpfs store;
    std::string small;
    std::string skip, setup_error;
  };

  static void SetUpTestSuite() {
    env_ = new Env();
    Env& e = *env_;
    if (geteuid() != 0) {
      e.skip = "needs root to mount a tmpfs store";
      return;
    }
    auto fail = [&](const std::string& why) { e.setup_error = why; };
    std::string files = e.dir.Sub("files");
    fs::create_directories(files);
    e.small = WithQcow2Header(std::string(300 * 1024, 's'));
    WriteFile(files + "/small.qcow2", e.small);
    e.redis.Start();
    if (auto r = e.pg.Start(); !r) return fail(r.message());
    if (auto r = e.pg.CreateDjinnSchema(); !r) return fail(r.message());
    if (auto r = e.http.Start(files); !r) return fail(r.message());
    DaemonOptions o;
    o.workers = 1;
    o.queue = kQueue;
    o.attempts = 2;
    o.redis_addr = e.redis.addr();
    o.database_addr = e.pg.addr();
    o.database_password = e.pg.consumer_password();
    // As root with workers dropped to `user` (who owns the store): the
    // free space they see is statvfs's f_bavail, an unprivileged writer's.
    const TestUser& user = UnprivilegedUser();
    if (user.name.empty()) return fail("no unprivileged user");
    o.user = user.name;
    e.daemon = std::make_unique<Daemon>(o);
    Daemon& d = *e.daemon;
    chmod(d.dir().c_str(), 0755);  // the workers' user must reach the store
    std::string why;
    if (!e.store.Mount(d.store(), 64 * kMiB, &why)) return fail(why);
    if (chown(d.store().c_str(), user.uid, user.gid) != 0) return fail("chown the store");
    std::string config = d.ConfigText();
    const std::string path = "path = \"" + d.store() + "\";";
    size_t at = config.find(path);
    if (at == std::string::npos) return fail("no store path in the config: " + config);
    config.insert(at + path.size(), " min_free = \"16MB\";");
    d.WriteConfig(config);
    if (!d.Start() || !d.WaitForWorkers(1)) return fail("daemon did not start: " + d.Log());
  }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(env_, nullptr);
    if (!env_->skip.empty()) GTEST_SKIP() << env_->skip;
    ASSERT_EQ(env_->setup_error, "");
  }
  void TearDown() override {
    if (!env_ || !env_->skip.empty() || !env_->daemon) return;
    std::error_code ec;
    fs::remove(Ballast(), ec);
    fs::remove_all(daemon().store() + "/" + std::to_string(kUserId), ec);
  }

  static Env& env() { return *env_; }
  static Daemon& daemon() { return *env_->daemon; }
  static std::string Ballast() { return daemon().store() + "/ballast"; }

  // Fills the store with a ballast file until `avail` bytes are left.
  static ::testing::AssertionResult LeaveFree(uint64_t avail) {
    uint64_t now = Avail(daemon().store());
    if (now < avail) return ::testing::AssertionFailure() << "only " << now << " bytes free";
    int fd = open(Ballast().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && posix_fallocate(fd, 0, static_cast<off_t>(now - avail)) == 0;
    if (fd >= 0) close(fd);
    if (!ok) return ::testing::AssertionFailure() << "cannot write the ballast";
    return ::testing::AssertionSuccess() << Avail(daemon().store()) << " bytes free";
  }

  struct Job {
    int download = 0;
    std::string hash, id;
  };
  static Job Submit(const std::string& source) {
    static int n = 0;
    Job j;
    j.hash = "space-" + std::to_string(++n);
    int image = env().pg.AddImage(kUserId, "qemu", j.hash);
    j.download = env().pg.AddDownload(image, source);
    j.id = "dl-" + std::to_string(j.download);
    nlohmann::json payload = {
        {"job", "download_job"}, {"id", j.download}, {"image_id", image}, {"source", source}};
    RedisClient(env().redis.port())
        .PushLikeCurlyqV040(kQueue, j.id, JsonJobEnvelope(j.id, payload.dump()));
    return j;
  }
  static bool InData(const Job& j) {
    return env().redis.Cli({"HEXISTS", std::string(kQueue) + ":data", j.id}) == "1";
  }
  static bool Dead(const Job& j) {
    return !env().redis.Cli({"ZSCORE", std::string(kQueue) + ":dead", j.id}).empty();
  }
  static int64_t Attempt(const Job& j) {
    auto e = DecodeEnvelope(RedisClient(env().redis.port()).Str({"HGET", std::string(kQueue) + ":data", j.id}));
    return e.ok() ? e->attempt : -1;
  }
  static std::string ImagePath(const Job& j) {
    return daemon().store() + "/" + std::to_string(kUserId) + "/qemu/" + j.hash;
  }
  // Waiting: queued with its attempt untouched, nothing recorded.
  static void ExpectWaiting(const Job& j) {
    EXPECT_TRUE(InData(j));
    EXPECT_FALSE(Dead(j));
    EXPECT_EQ(Attempt(j), 0);
    auto row = env().pg.Download(j.download);
    EXPECT_FALSE(row.finished) << row.error;
    EXPECT_FALSE(FileExists(ImagePath(j)));
  }
  static ::testing::AssertionResult WaitStored(const Job& j, const std::string& bytes,
                                               seconds timeout = seconds(15)) {
    bool gone = WaitFor([&] { return !InData(j); }, timeout, milliseconds(20));
    if (!gone || Dead(j)) return ::testing::AssertionFailure() << j.id << ": " << daemon().Log();
    auto row = env().pg.Download(j.download);
    if (!row.finished || row.has_error)
      return ::testing::AssertionFailure() << j.id << " row: " << row.error;
    if (Sha256Hex(ReadFile(ImagePath(j))) != Sha256Hex(bytes))
      return ::testing::AssertionFailure() << j.id << ": stored bytes differ";
    return ::testing::AssertionSuccess();
  }

  static Env* env_;
};
DiskSpaceTest::Env* DiskSpaceTest::env_ = nullptr;

// Below the floor: every job waits, the outage is logged once, and both
// finish as soon as the ballast is gone (the worker looks every second).
TEST_F(DiskSpaceTest, JobsWaitBelowTheFloorAndFinishWhenSpaceIsFreed) {
  ASSERT_TRUE(LeaveFree(kFloor - 4 * kMiB));
  const size_t holds_before = CountOf(daemon().Log(), "holding jobs back");
  Job a = Submit(env().http.url("files/small.qcow2"));
  Job b = Submit(env().http.url("files/small.qcow2"));
  const std::string line = "MiB free, below min_free 16.0 MiB; downloads wait";
  ASSERT_TRUE(daemon().WaitForLog(" (download_job): store " + daemon().store() + ": 1", seconds(10)))
      << daemon().Log();
  EXPECT_TRUE(daemon().WaitForLog(line)) << daemon().Log();
  // A second trial, given back again, no attempt counted.
  ASSERT_TRUE(daemon().WaitForLog(line + "; given back", seconds(10))) << daemon().Log();
  ExpectWaiting(a);
  ExpectWaiting(b);
  std::string log = daemon().Log();
  EXPECT_EQ(CountOf(log, "holding jobs back"), holds_before + 1) << log;
  EXPECT_EQ(log.find("; retry "), std::string::npos) << log;

  auto freed = std::chrono::steady_clock::now();
  fs::remove(Ballast());
  EXPECT_TRUE(WaitStored(a, env().small, seconds(10)));
  EXPECT_TRUE(WaitStored(b, env().small, seconds(10)));
  EXPECT_LT(std::chrono::steady_clock::now() - freed, seconds(5));
  EXPECT_TRUE(daemon().WaitForLog("dependency available again")) << daemon().Log();
}

// Room above the floor but not for this image: one of known size waits
// before writing a byte; one the store could never hold is recorded.
TEST_F(DiskSpaceTest, KnownSizeThatWouldCrossTheFloorWaitsAndOneTooLargeIsRecorded) {
  ASSERT_TRUE(LeaveFree(kFloor + 8 * kMiB));
  Job never = Submit(env().http.url("big/" + std::to_string(50 * kMiB)));
  ASSERT_TRUE(WaitFor([&] { return !InData(never); }, seconds(10))) << daemon().Log();
  auto row = env().pg.Download(never.download);
  EXPECT_TRUE(row.finished);
  EXPECT_NE(row.error.find("image of 50.0 MiB larger than the image store can hold (64.0 MiB, of "
                           "which min_free 16.0 MiB stays free)"),
            std::string::npos)
      << row.error;
  EXPECT_EQ(row.error.find(daemon().store()), std::string::npos) << row.error;

  const uint64_t size = 16 * kMiB;
  Job big = Submit(env().http.url("big/" + std::to_string(size)));
  ASSERT_TRUE(daemon().WaitForLog("MiB free, 16.0 MiB more needed by an image, plus "
                                  "min_free 16.0 MiB; downloads wait",
                                  seconds(10)))
      << daemon().Log();
  ExpectWaiting(big);
  // Not a byte written: no .part, or an empty one.
  const std::string part = daemon().store() + "/" + std::to_string(kUserId) + "/qemu/." + big.hash + ".part";
  struct stat st {};
  EXPECT_TRUE(stat(part.c_str(), &st) != 0 || st.st_size == 0) << part << ": " << st.st_size << " bytes";
  fs::remove(Ballast());
  EXPECT_TRUE(WaitStored(big, HttpServer::BigBody(size)));
}

// Size unknown (no Content-Length): the download stops before it would
// take the store below the floor, then waits, and finishes after.
TEST_F(DiskSpaceTest, UnknownSizeStopsBeforeTheFloor) {
  ASSERT_TRUE(LeaveFree(kFloor + 8 * kMiB));
  const uint64_t size = 12 * kMiB;
  Job j = Submit(env().http.url("big/" + std::to_string(size) + "?nolength=1"));
  // Never below the floor, looked at every millisecond while it runs.
  uint64_t least = UINT64_MAX;
  const std::string stopped = "job " + j.id + " (download_job): store " + daemon().store();
  ASSERT_TRUE(WaitFor(
      [&] {
        least = std::min(least, Avail(daemon().store()));
        return daemon().Log().find(stopped) != std::string::npos;
      },
      seconds(10), milliseconds(1)))
      << daemon().Log();
  EXPECT_TRUE(daemon().WaitForLog("2.0 MiB more needed by an image")) << daemon().Log();
  EXPECT_GE(least, kFloor);
  EXPECT_GE(Avail(daemon().store()), kFloor);
  ExpectWaiting(j);
  fs::remove(Ballast());
  EXPECT_TRUE(WaitStored(j, HttpServer::BigBody(size)));
}

// Without a daemon: a full store makes the .part's writes an outage
// (kUnavailable), and the worker's own look confirms it; with room, it
// does not.
TEST_F(DiskSpaceTest, EnospcIsAnOutageAndTheWorkerConfirmsIt) {
  TempDir dir("djinn-enospc");
  Tmpfs small;
  std::string why;
  ASSERT_TRUE(small.Mount(dir.path(), 2 * kMiB, &why)) << why;
  StoreConfig store;
  store.path = dir.path();
  store.min_free_bytes = 0;  // off: only ENOSPC stops it
  store.min_free_percent = -1;
  PartFile file;
  bool busy = false;
  ASSERT_TRUE(file.Reserve(FetchTarget{dir.path(), {"7", "qemu"}, "full"}, &busy).ok());
  EXPECT_TRUE(file.ConfirmNoSpace(store, 0).ok());  // 2 MiB free: room
  std::string chunk(256 * 1024, 'x');
  Status st;
  for (int i = 0; i < 16 && st.ok(); ++i) st = file.Write(chunk.data(), chunk.size());
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.unavailable()) << st.message();
  EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
  Status confirmed = file.ConfirmNoSpace(store, 0);
  EXPECT_TRUE(confirmed.unavailable()) << confirmed.message();
  EXPECT_NE(confirmed.message().find("store " + dir.path() + ": "), std::string::npos)
      << confirmed.message();
  // A claim of more than the file system could ever hold (a hostile child's
  // "N", up to the largest number) is no outage: waiting would not help.
  EXPECT_TRUE(file.ConfirmNoSpace(store, 4 * kMiB).ok());
  EXPECT_TRUE(file.ConfirmNoSpace(store, UINT64_MAX).ok());
  file.Discard();
}

}  // namespace
}  // namespace djinn::testing
