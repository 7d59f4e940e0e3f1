// Resuming interrupted downloads (worker/fetch.h "Resuming"), end to end:
// the real binary against a real redis-server, PostgreSQL, the test HTTP
// server (tests/harness/httpd.py: ranges=1, drop=<pct>, etag=changing,
// and its count of body bytes sent per request) and sshd. Each test checks
// the stored bytes against the source (sha256), the bytes the server sent
// on each try, and that no .part or sidecar is left. The master's sweep of
// abandoned .part files is checked at the daemon's start.
//
// Retries are fast without a test hook: the first retry's backoff is
// 0.5-1 s (curlyq) and the master moves due jobs every second.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>

#include "common/curly_queue.h"
#include "common/envelope.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/postgres.h"
#include "tests/harness/qcow2_image.h"
#include "tests/harness/sshd.h"
#include "worker/part_resume.h"

namespace djinn::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kUserId = 7;
constexpr size_t kHttpSize = 4 << 20;
constexpr size_t kSftpSize = 32 << 20;

std::string RandomImage(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  return WithQcow2Header(s);
}

// Names under dir ending in .part, .part.meta or .part.meta.tmp.
std::vector<std::string> Leftovers(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    for (const char* tail : {".part", ".part.meta", ".part.meta.tmp"}) {
      std::string t = tail;
      if (n.size() > t.size() && n.compare(n.size() - t.size(), t.size(), t) == 0)
        out.push_back(e.path().string());
    }
  }
  return out;
}

void SetAge(const std::string& path, int64_t seconds_ago) {
  struct timespec times[2];
  times[0].tv_sec = times[1].tv_sec = time(nullptr) - seconds_ago;
  times[0].tv_nsec = times[1].tv_nsec = 0;
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
}

// The number after `prefix` in text (the first occurrence), or -1.
long long NumberAfter(const std::string& text, const std::string& prefix) {
  size_t at = text.find(prefix);
  if (at == std::string::npos) return -1;
  return std::atoll(text.c_str() + at + prefix.size());
}

struct Submitted {
  int download = 0;
  int image = 0;
  std::string hash, job_id;
};

class ResumeTest : public ::testing::Test {
 protected:
  struct Env {
    TempDir dir{"djinn-resume"};
    RedisServer redis;
    PostgresServer pg;
    HttpServer http;
    std::unique_ptr<SshServer> sshd;
    std::string no_sshd;
    std::unique_ptr<Daemon> daemon;
    std::string image;  // files/resume.qcow2
    std::string setup_error;
  };

  static void SetUpTestSuite() {
    env_ = new Env();
    Env& e = *env_;
    auto fail = [&](const std::string& why) { e.setup_error = why; };
    std::string files = e.dir.Sub("files");
    fs::create_directories(files);
    e.image = RandomImage(kHttpSize, 15);
    WriteFile(files + "/resume.qcow2", e.image);
    e.redis.Start();
    if (auto r = e.pg.Start(); !r) return fail(r.message());
    if (auto r = e.pg.CreateDjinnSchema(); !r) return fail(r.message());
    if (auto r = e.http.Start(files); !r) return fail(r.message());
    if (SshServer::Available(&e.no_sshd)) {
      e.sshd = std::make_unique<SshServer>();
      if (auto r = e.sshd->Start(); !r) return fail(r.message());
    }
    DaemonOptions o;
    o.workers = 2;
    o.queue = "resume";
    o.redis_addr = e.redis.addr();
    o.database_addr = e.pg.addr();
    o.database_password = e.pg.consumer_password();
    o.download = "allow_private = true; timeout = 30;";
    e.daemon = std::make_unique<Daemon>(o);
    // Left for the master's sweep at start (MasterSweepsAbandonedPartsAtStart).
    const std::string d = e.daemon->store() + "/3/qemu";
    fs::create_directories(d);
    for (const char* name : {".abandoned.part", ".abandoned.part.meta", ".recent.part"})
      WriteFile(d + "/" + name, "x", 0640);
    SetAge(d + "/.abandoned.part", kResumeMaxAgeSeconds + 3600);
    SetAge(d + "/.abandoned.part.meta", kResumeMaxAgeSeconds + 3600);
    SetAge(d + "/.recent.part", 3600);
    if (!e.daemon->Start()) return fail("cannot start the daemon");
    if (!e.daemon->WaitForWorkers(o.workers)) return fail("workers: " + e.daemon->Log());
  }

  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(env_, nullptr);
    ASSERT_EQ(env_->setup_error, "");
  }

  static Env& env() { return *env_; }
  static Daemon& daemon() { return *env_->daemon; }

  // before_push: runs once the rows exist, before the job is queued.
  static Submitted Submit(const std::string& source,
                          const std::function<void(const Submitted&)>& before_push = nullptr,
                          const std::string& queue = "resume") {
    static int n = 0;
    Submitted s;
    s.hash = std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
             std::to_string(++n);
    int image = env().pg.AddImage(kUserId, "qemu", s.hash);
    s.image = image;
    s.download = env().pg.AddDownload(image, source);
    s.job_id = "dl-" + std::to_string(s.download);
    if (before_push) before_push(s);
    RedisOptions ro;
    ro.addr = env().redis.addr();
    CurlyQueue q(queue, ro);
    Envelope envelope;
    envelope.id = s.job_id;
    envelope.data = nlohmann::json{
        {"job", "download_job"},
        {"id", s.download},
        {"image_id", image},
        {"source",
         source}}.dump();
    Status st = q.Push(envelope);
    EXPECT_TRUE(st.ok()) << st.message();
    return s;
  }

  static ::testing::AssertionResult WaitAcked(const Submitted& s, const std::string& queue = "resume",
                                              const Daemon* d = nullptr) {
    bool done = WaitFor(
        [&] {
          return env().redis.Cli({"HEXISTS", queue + ":data", s.job_id}) == "0";
        },
        seconds(30), milliseconds(20));
    if (!done)
      return ::testing::AssertionFailure() << s.job_id << " not acked: " << (d ? *d : daemon()).Log();
    return ::testing::AssertionSuccess();
  }

  static std::string PartPath(const Submitted& s) {
    return daemon().store() + "/" + std::to_string(kUserId) + "/qemu/." + s.hash + ".part";
  }

  // What an earlier, interrupted try of s would have left: the first
  // `length` bytes of `bytes` and their sidecar.
  static void PlantKept(const Submitted& s, const std::string& source, const std::string& bytes,
                        size_t length, const PartValidator& v) {
    fs::create_directories(daemon().store() + "/" + std::to_string(kUserId) + "/qemu");
    WriteFile(PartPath(s), bytes.substr(0, length), 0640);
    PartMeta m;
    m.image_id = s.image;
    m.source_digest = SourceDigest(source);
    m.saved_at = time(nullptr);
    m.length = length;
    m.validator = v;
    WriteFile(PartPath(s) + ".meta", FormatPartMeta(m), 0640);
  }

  static void ExpectStored(const Submitted& s, const std::string& bytes) {
    auto row = env().pg.Download(s.download);
    EXPECT_TRUE(row.finished);
    EXPECT_FALSE(row.has_error) << row.error;
    std::string path = daemon().store() + "/" + std::to_string(kUserId) + "/qemu/" + s.hash;
    ASSERT_TRUE(FileExists(path)) << daemon().Log();
    std::string got = ReadFile(path);
    EXPECT_EQ(got.size(), bytes.size());
    EXPECT_EQ(Sha256Hex(got), Sha256Hex(bytes));
    EXPECT_EQ(Leftovers(daemon().store() + "/" + std::to_string(kUserId)),
              std::vector<std::string>{});
  }

  // The log of this job only.
  static std::string JobLog(const Submitted& s) {
    std::string out, line;
    std::istringstream in(daemon().Log());
    while (std::getline(in, line))
      if (line.find("job " + s.job_id + ":") != std::string::npos) out += line + "\n";
    return out;
  }

  // The resume sender's responses for path, once n of them are logged.
  static std::vector<HttpServer::BodySent> Bodies(const std::string& path, size_t n) {
    WaitFor([&] { return env().http.BodiesSent(path).size() >= n; }, seconds(5));
    return env().http.BodiesSent(path);
  }

  static Env* env_;

 public:  // for ExpectResumedAs
  static Env& Env_() { return env(); }
  static Submitted Submit_(const std::string& source, const std::string& queue) {
    return Submit(source, nullptr, queue);
  }
  static ::testing::AssertionResult WaitAcked_(const Submitted& s, const std::string& queue,
                                               const Daemon& d) {
    return WaitAcked(s, queue, &d);
  }
};
ResumeTest::Env* ResumeTest::env_ = nullptr;

// (1) The connection drops after 60% of the body; the retry asks for the
// rest and gets only the rest.
TEST_F(ResumeTest, HttpRetryFetchesOnlyTheRestAfterADrop) {
  const std::string path = "/files/resume.qcow2?ranges=1&drop=60";
  Submitted s = Submit(env().http.url(path));
  ASSERT_TRUE(WaitAcked(s));
  ExpectStored(s, env().image);
  const uint64_t cut = kHttpSize * 60 / 100;
  auto bodies = Bodies(path, 2);
  ASSERT_EQ(bodies.size(), 2u);
  EXPECT_EQ(bodies[0].status, 200);
  EXPECT_EQ(bodies[0].bytes, cut);
  EXPECT_EQ(bodies[1].status, 206);
  EXPECT_EQ(bodies[1].bytes, kHttpSize - cut);  // exactly the rest, counted by the server
  std::string log = JobLog(s);
  EXPECT_EQ(NumberAfter(log, "kept the first "), static_cast<long long>(cut)) << log;
  EXPECT_EQ(NumberAfter(log, " at byte "), static_cast<long long>(cut)) << log;
  EXPECT_NE(log.find("resumed at byte " + std::to_string(cut) + ": " +
                     std::to_string(kHttpSize - cut) + " bytes fetched"),
            std::string::npos)
      << log;
}

// (2) The ETag changes between the tries: If-Range does not match, the
// server sends everything (200) and the worker writes it from byte 0 in
// the same try.
TEST_F(ResumeTest, HttpChangedEtagStartsOverInTheSameTry) {
  const std::string path = "/files/resume.qcow2?ranges=1&drop=60&etag=changing";
  Submitted s = Submit(env().http.url(path));
  ASSERT_TRUE(WaitAcked(s));
  ExpectStored(s, env().image);
  auto bodies = Bodies(path, 2);
  ASSERT_EQ(bodies.size(), 2u);
  EXPECT_EQ(bodies[1].status, 200);
  EXPECT_EQ(bodies[0].bytes + bodies[1].bytes, kHttpSize + kHttpSize * 60 / 100);  // ~160%
  std::string log = JobLog(s);
  EXPECT_NE(log.find("the server sent the whole image; writing from byte 0"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("resumed at byte"), std::string::npos) << log;
  EXPECT_EQ(env().http.Hits(path), 2);  // one request per try: no third
}

// The source is replaced by a shorter image between the tries: its ETag
// and Last-Modified change, the server answers 200, and the file rewritten
// from byte 0 is cut to the new length (what the worker keeps is exactly
// the new image, not its tail of old bytes).
TEST_F(ResumeTest, HttpSourceReplacedByAShorterImageIsStoredExactly) {
  const std::string file = env().dir.Sub("files/replaced.qcow2");
  WriteFile(file, env().image);
  const std::string path = "/files/replaced.qcow2?ranges=1&drop=60";
  Submitted s = Submit(env().http.url(path));
  ASSERT_TRUE(WaitFor([&] { return JobLog(s).find("kept the first ") != std::string::npos; },
                      seconds(10), milliseconds(5)))
      << daemon().Log();
  // The retry comes 0.5 s or more after the failure (curlyq's backoff).
  const std::string shorter = RandomImage(kHttpSize / 4, 17);
  WriteFile(file + ".new", shorter);
  fs::rename(file + ".new", file);
  ASSERT_TRUE(WaitAcked(s));
  ExpectStored(s, shorter);
  auto bodies = Bodies(path, 2);
  ASSERT_EQ(bodies.size(), 2u);
  EXPECT_EQ(bodies[1].status, 200);
  EXPECT_EQ(bodies[1].bytes, shorter.size());
  std::string log = JobLog(s);
  EXPECT_NE(log.find("the server sent the whole image; writing from byte 0"), std::string::npos)
      << log;
}

// A kept .part as long as the whole file: the server refuses the range
// (416) and the same try downloads it again with a second request.
TEST_F(ResumeTest, HttpRefusedRangeStartsOverWithASecondRequest) {
  const std::string file = env().dir.Sub("files/resume.qcow2");
  struct stat st {};
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  char etag[64];  // httpd.py's: "<size hex>-<mtime ns hex>"
  std::snprintf(etag, sizeof etag, "\"%llx-%llx\"", static_cast<unsigned long long>(st.st_size),
                static_cast<unsigned long long>(st.st_mtim.tv_sec) * 1000000000ull +
                    static_cast<unsigned long long>(st.st_mtim.tv_nsec));
  PartValidator v;
  v.etag = etag;
  const std::string path = "/files/resume.qcow2?ranges=1&refused";
  const std::string url = env().http.url(path);
  Submitted s = Submit(
      url, [&](const Submitted& sub) { PlantKept(sub, url, env().image, env().image.size(), v); });
  ASSERT_TRUE(WaitAcked(s));
  ExpectStored(s, env().image);
  std::string log = JobLog(s);
  EXPECT_NE(log.find("resuming " + daemon().store()), std::string::npos) << log;
  EXPECT_NE(log.find("not resuming at byte " + std::to_string(kHttpSize) +
                     ": the server refused the range (HTTP 416); starting over from byte 0"),
            std::string::npos)
      << log;
  EXPECT_EQ(env().http.Hits(path), 2);  // the 416, then the whole image
  auto bodies = Bodies(path, 1);
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0].status, 200);
  EXPECT_EQ(log.find("retry 1/"), std::string::npos) << log;  // no attempt spent
}

// A kept sftp .part whose remote file changed since (another size and
// time): the same try starts over from byte 0.
TEST_F(ResumeTest, SftpChangedRemoteFileStartsOverInTheSameTry) {
  if (!env().sshd) GTEST_SKIP() << "sftp: " << env().no_sshd;
  SshServer& sshd = *env().sshd;
  const std::string now = RandomImage(kHttpSize, 18);
  WriteFile(sshd.root() + "/images/changed.qcow2", now, 0644);
  const std::string url = sshd.url("images/changed.qcow2");
  PartValidator before;  // what the kept bytes came from: another file
  before.remote_size = static_cast<int64_t>(env().image.size());
  before.remote_mtime = time(nullptr) - 86400;
  Submitted s =
      Submit(url, [&](const Submitted& sub) { PlantKept(sub, url, env().image, 1 << 20, before); });
  ASSERT_TRUE(WaitAcked(s));
  ExpectStored(s, now);
  std::string log = JobLog(s);
  EXPECT_NE(log.find("resuming " + daemon().store()), std::string::npos) << log;
  EXPECT_NE(log.find("not resuming at byte 1048576: the remote file changed (sftp size " +
                     std::to_string(env().image.size())),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("retry 1/"), std::string::npos) << log;
}

// (3) sftp: the server's session dies part-way; the retry seeks to the kept
// length and reads only the rest.
TEST_F(ResumeTest, SftpRetryResumesAtTheKeptByte) {
  if (!env().sshd) GTEST_SKIP() << "sftp: " << env().no_sshd;
  SshServer& sshd = *env().sshd;
  const std::string image = RandomImage(kSftpSize, 16);
  WriteFile(sshd.root() + "/images/resume-big.qcow2", image, 0644);
  Submitted s = Submit(sshd.url("images/resume-big.qcow2"));
  // Once 6 MiB arrived (of 32: the rest takes the transfer ~0.5 s here),
  // cut every session of the server (the listener stays): the download
  // fails with a broken connection.
  const std::string part = PartPath(s);
  constexpr off_t kCutAfter = 6 << 20;
  struct stat st {};
  ASSERT_TRUE(WaitFor([&] { return stat(part.c_str(), &st) == 0 && st.st_size >= kCutAfter; },
                      seconds(20), milliseconds(1)))
      << "the transfer did not get going: " << daemon().Log();
  // The whole tree first: a killed parent's children are reparented at once.
  std::vector<pid_t> sessions = ChildrenOf(sshd.pid());
  for (size_t i = 0; i < sessions.size(); ++i)
    for (pid_t c : ChildrenOf(sessions[i])) sessions.push_back(c);
  ASSERT_FALSE(sessions.empty());
  for (pid_t p : sessions) kill(p, SIGKILL);
  ASSERT_TRUE(WaitAcked(s));
  ExpectStored(s, image);
  std::string log = JobLog(s);
  long long kept = NumberAfter(log, "kept the first ");
  long long at = NumberAfter(log, " at byte ");
  ASSERT_GE(kept, kCutAfter) << "the first try was not interrupted: " << log;
  EXPECT_LT(kept, static_cast<long long>(kSftpSize)) << log;
  EXPECT_EQ(at, kept) << log;
  EXPECT_NE(log.find("(sftp size " + std::to_string(image.size())), std::string::npos) << log;
  // The retry read only the rest: its own count, past the seek.
  EXPECT_NE(log.find("resumed at byte " + std::to_string(kept) + ": " +
                     std::to_string(image.size() - static_cast<size_t>(kept)) + " bytes fetched"),
            std::string::npos)
      << log;
}

// (1) again, run as operators run it: as root with workers dropped to
// `user`, and started directly as an unprivileged user. The .part file, its
// sidecar and the stored image are the workers' user's; the retry (maybe
// in the other worker) reads and continues them.
void ExpectResumedAs(const TestUser* drop_to, const TestUser* run_as);

TEST_F(ResumeTest, HttpResumeWorksWithWorkersDroppedToUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop privileges";
  const TestUser& user = UnprivilegedUser();
  ASSERT_FALSE(user.name.empty());
  ExpectResumedAs(&user, nullptr);
}

TEST_F(ResumeTest, HttpResumeWorksStartedAsUnprivilegedUser) {
  const TestUser* run_as = nullptr;
  if (geteuid() == 0) {
    run_as = &UnprivilegedUser();
    ASSERT_FALSE(run_as->name.empty());
  }
  ExpectResumedAs(nullptr, run_as);
}

void ExpectResumedAs(const TestUser* drop_to, const TestUser* run_as) {
  using T = ResumeTest;
  const std::string queue = drop_to ? "resume-user" : "resume-run-as";
  DaemonOptions o;
  o.workers = 2;
  o.queue = queue;
  o.redis_addr = T::Env_().redis.addr();
  o.database_addr = T::Env_().pg.addr();
  o.database_password = T::Env_().pg.consumer_password();
  o.download = "allow_private = true; timeout = 30;";
  if (drop_to) o.user = drop_to->name;
  o.run_as = run_as;
  Daemon d(o);
  chmod(d.dir().c_str(), 0755);  // the workers' user must reach the store
  if (const TestUser* owner = drop_to ? drop_to : run_as) {
    fs::create_directories(d.store());
    ASSERT_EQ(chown(d.store().c_str(), owner->uid, owner->gid), 0);
  }
  ASSERT_TRUE(d.Start()) << d.Log();
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();

  const std::string path = std::string("/files/resume.qcow2?ranges=1&drop=60&mode=") + queue;
  Submitted s = T::Submit_(T::Env_().http.url(path), queue);
  ASSERT_TRUE(T::WaitAcked_(s, queue, d));
  auto row = T::Env_().pg.Download(s.download);
  EXPECT_TRUE(row.finished);
  EXPECT_FALSE(row.has_error) << row.error;
  std::string dir = d.store() + "/" + std::to_string(kUserId) + "/qemu";
  std::string stored = ReadFile(dir + "/" + s.hash);
  EXPECT_EQ(Sha256Hex(stored), Sha256Hex(T::Env_().image)) << d.Log();
  EXPECT_EQ(Leftovers(d.store()), std::vector<std::string>{});
  if (const TestUser* owner = drop_to ? drop_to : run_as) {
    struct stat st {};
    ASSERT_EQ(stat((dir + "/" + s.hash).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, owner->uid);
  }
  const uint64_t cut = kHttpSize * 60 / 100;
  WaitFor([&] { return T::Env_().http.BodiesSent(path).size() >= 2; }, seconds(5));
  auto bodies = T::Env_().http.BodiesSent(path);
  ASSERT_EQ(bodies.size(), 2u);
  EXPECT_EQ(bodies[0].bytes, cut);
  EXPECT_EQ(bodies[1].status, 206);
  EXPECT_EQ(bodies[1].bytes, kHttpSize - cut);  // only the rest, counted by the server
  EXPECT_EQ(d.Stop(), 0) << d.Log();
}

TEST_F(ResumeTest, MasterSweepsAbandonedPartsAtStart) {
  const std::string d = daemon().store() + "/3/qemu";
  ASSERT_TRUE(daemon().WaitForLog("part sweep: removed " + d + "/.abandoned.part"));
  EXPECT_FALSE(FileExists(d + "/.abandoned.part"));
  EXPECT_FALSE(FileExists(d + "/.abandoned.part.meta"));
  EXPECT_TRUE(FileExists(d + "/.recent.part"));
}

}  // namespace
}  // namespace djinn::testing
