// Resuming downloads: the sidecar (worker/part_resume.h), PartFile's keep
// and resume (worker/fetch.h) and the master's sweep of abandoned .part
// files (master/part_sweep.h). Files in temp dirs; no servers.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <string>

#include "common/qcow2.h"
#include "master/part_sweep.h"
#include "tests/harness/harness.h"
#include "tests/harness/qcow2_image.h"
#include "worker/fetch.h"
#include "worker/part_resume.h"

namespace djinn::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kUrl[] = "https://deploy:s3cret@images.example/x.qcow2";

PartMeta SomeMeta() {
  PartMeta m;
  m.image_id = 42;
  m.source_digest = SourceDigest(kUrl);
  m.saved_at = 1700000000;
  m.length = 4096;
  m.validator.etag = "\"abc-1\"";
  m.validator.last_modified = "Tue, 14 Nov 2023 22:13:20 GMT";
  return m;
}

// ------------------------------------------------------------ the sidecar

TEST(PartMeta, FormatThenParseGivesTheSame) {
  PartMeta m = SomeMeta();
  Result<PartMeta> back = ParsePartMeta(FormatPartMeta(m));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->image_id, 42);
  EXPECT_EQ(back->source_digest, m.source_digest);
  EXPECT_EQ(back->saved_at, m.saved_at);
  EXPECT_EQ(back->length, 4096u);
  EXPECT_EQ(back->validator, m.validator);

  PartMeta sftp = m;
  sftp.validator = PartValidator{};
  sftp.validator.remote_size = 123456789;
  sftp.validator.remote_mtime = 1699999999;
  back = ParsePartMeta(FormatPartMeta(sftp));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->validator, sftp.validator);
}

TEST(PartMeta, MalformedSidecarsAreRefused) {
  const std::string good = FormatPartMeta(SomeMeta());
  auto without = [&](const std::string& key) {
    size_t at = good.find("\n" + key + " ");
    size_t end = good.find('\n', at + 1);
    return good.substr(0, at) + good.substr(end);
  };
  const std::string bad[] = {
      "",
      "djinn-consumer resume 2\nimage 1\n",
      good.substr(0, good.size() - 1),  // no final newline: cut short
      without("image"),
      without("source"),
      without("saved"),
      without("length"),
      good + "etag W/\"weak\"\n",
      good + "etag unquoted\n",
      good + "length 5\n",  // twice
      good + "size -3\n",
      good + "bogus 1\n",
      good + "image\n",
      good + "last-modified bad\ttab\n",
      good + std::string(5000, '#') + "\n",
  };
  for (const std::string& text : bad) {
    Result<PartMeta> m = ParsePartMeta(text);
    EXPECT_FALSE(m.ok()) << text;
  }
  EXPECT_TRUE(ParsePartMeta(good).ok());
}

TEST(PartMeta, SourceDigestIgnoresThePasswordOnly) {
  EXPECT_EQ(SourceDigest(kUrl), SourceDigest("https://deploy:other@images.example/x.qcow2"));
  EXPECT_NE(SourceDigest(kUrl), SourceDigest("https://deploy:s3cret@images.example/y.qcow2"));
  EXPECT_NE(SourceDigest(kUrl), SourceDigest("https://bot:s3cret@images.example/x.qcow2"));
  EXPECT_EQ(SourceDigest(kUrl).size(), 64u);
  EXPECT_EQ(FormatPartMeta(SomeMeta()).find("s3cret"), std::string::npos);
}

TEST(PartMeta, ResumeRefusalNamesEachReason) {
  PartMeta m = SomeMeta();
  DownloadIdentity id{42, kUrl};
  const int64_t now = m.saved_at + 3600;
  EXPECT_EQ(ResumeRefusal(m, id, now, 4096), "");
  EXPECT_NE(ResumeRefusal(m, {43, kUrl}, now, 4096).find("belongs to image 42"), std::string::npos);
  EXPECT_NE(
      ResumeRefusal(m, {42, "https://images.example/other.qcow2"}, now, 4096).find("another URL"),
      std::string::npos);
  EXPECT_EQ(ResumeRefusal(m, id, m.saved_at + kResumeMaxAgeSeconds, 4096), "");  // at the bound
  EXPECT_NE(
      ResumeRefusal(m, id, m.saved_at + kResumeMaxAgeSeconds + 1, 4096).find("older than 168 h"),
      std::string::npos);
  EXPECT_NE(ResumeRefusal(m, id, m.saved_at - 3600, 4096).find("in the future"), std::string::npos);
  EXPECT_NE(ResumeRefusal(m, id, now, 5000).find("has 5000 bytes, its sidecar says 4096"),
            std::string::npos);
  PartMeta none = m;
  none.validator = PartValidator{};
  EXPECT_NE(ResumeRefusal(none, id, now, 4096).find("no validator"), std::string::npos);
  PartMeta half = none;  // sftp needs both size and mtime
  half.validator.remote_size = 10;
  EXPECT_FALSE(half.validator.Usable());
  half.validator.remote_mtime = 0;
  EXPECT_TRUE(half.validator.Usable());
}

TEST(PartValidator, IfRangePrefersTheEtag) {
  PartValidator v;
  v.last_modified = "Tue, 14 Nov 2023 22:13:20 GMT";
  EXPECT_EQ(v.IfRange(), v.last_modified);
  v.etag = "\"e\"";
  EXPECT_EQ(v.IfRange(), "\"e\"");
}

TEST(PartValidator, OnlyStrongEtagsAreKept) {
  EXPECT_EQ(StrongEtag("\"abc\""), "\"abc\"");
  EXPECT_EQ(StrongEtag("\"\""), "\"\"");
  EXPECT_EQ(StrongEtag("W/\"abc\""), "");
  EXPECT_EQ(StrongEtag("abc"), "");
  EXPECT_EQ(StrongEtag("\"a\"b\""), "");
  EXPECT_EQ(StrongEtag("\"a\x01\""), "");
  EXPECT_EQ(StrongEtag("\"" + std::string(300, 'a') + "\""), "");
}

TEST(ContentRangeTest, ParsesBytesRanges) {
  auto r = ParseContentRange("bytes 100-199/200");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, 100u);
  EXPECT_EQ(r->last, 199u);
  ASSERT_TRUE(r->total);
  EXPECT_EQ(*r->total, 200u);
  r = ParseContentRange("bytes 5-9/*");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->total);
  for (const char* bad :
       {"bytes */200", "bytes 9-5/200", "bytes 0-199/199", "items 0-1/2", "bytes 1-/2",
        "bytes -1-2/3", "bytes 0-1", "bytes 0-99999999999999999999/1"})
    EXPECT_FALSE(ParseContentRange(bad)) << bad;
}

TEST(ValidatorReport, RoundTripsAndRefusesGarbage) {
  PartValidator v;
  v.etag = "\"x y\"";
  v.last_modified = "Tue, 14 Nov 2023 22:13:20 GMT";
  bool restarted = false;
  auto back = DecodeValidatorReport(EncodeValidatorReport(v, true), &restarted);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, v);
  EXPECT_TRUE(restarted);
  PartValidator s;
  s.remote_size = 77;
  s.remote_mtime = 88;
  back = DecodeValidatorReport(EncodeValidatorReport(s, false), &restarted);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, s);
  EXPECT_FALSE(restarted);
  for (const char* bad : {"", "2\t\t\t-1\t-1", "0\tW/\"w\"\t\t-1\t-1", "0\t\t\t-2\t-1",
                          "0\t\t\tx\t-1", "0\t\t\t-1", "0\t\t\t-1\t-1\textra"})
    EXPECT_FALSE(DecodeValidatorReport(bad, &restarted)) << bad;
}

// ------------------------------------------------------------ PartFile

class PartFileResume : public ::testing::Test {
 protected:
  void SetUp() override { body_ = WithQcow2Header(std::string(8000, 'b')); }
  std::string PartPath() const { return store_.path() + "/7/qemu/.img.part"; }
  std::string MetaPath() const { return PartPath() + ".meta"; }
  // Reserves, writes the first n bytes of the body and keeps them.
  void KeepFirst(size_t n, const DownloadIdentity& id, const PartValidator& v) {
    PartFile f;
    bool busy = false;
    ASSERT_TRUE(f.Reserve(target_, &busy, &id).ok());
    ASSERT_TRUE(f.Write(body_.data(), n).ok());
    ASSERT_TRUE(f.Keep(v, n).ok());
    EXPECT_FALSE(f.reserved());
  }
  static PartValidator Etag() {
    PartValidator v;
    v.etag = "\"v1\"";
    return v;
  }

  TempDir store_;
  FetchTarget target_{store_.path(), {"7", "qemu"}, "img"};
  DownloadIdentity id_{42, kUrl};
  std::string body_;
};

TEST_F(PartFileResume, KeptBytesAreContinuedByTheSameDownload) {
  KeepFirst(3000, id_, Etag());
  EXPECT_EQ(ReadFile(PartPath()), body_.substr(0, 3000));
  struct stat st {};
  ASSERT_EQ(stat(MetaPath().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777 & ~0640, 0u) << std::oct << st.st_mode;
  Result<PartMeta> meta = ParsePartMeta(ReadFile(MetaPath()));
  ASSERT_TRUE(meta.ok()) << meta.status().message();
  EXPECT_EQ(meta->length, 3000u);
  EXPECT_LE(std::abs(meta->saved_at - static_cast<int64_t>(time(nullptr))), 5);

  PartFile f;
  bool busy = false;
  ASSERT_TRUE(f.Reserve(target_, &busy, &id_).ok());
  EXPECT_EQ(f.resume_from(), 3000u);
  EXPECT_EQ(f.resume_validator(), Etag());
  EXPECT_EQ(f.resume_note(), "");
  EXPECT_FALSE(FileExists(MetaPath()));  // consumed while the lock is held
  ASSERT_TRUE(f.Write(body_.data() + 3000, body_.size() - 3000).ok());
  EXPECT_EQ(f.written(), body_.size());
  Result<uint64_t> size = f.Verify();
  ASSERT_TRUE(size.ok()) << size.status().message();
  ASSERT_TRUE(f.Commit().ok());
  EXPECT_EQ(ReadFile(store_.path() + "/7/qemu/img"), body_);
}

TEST_F(PartFileResume, AnotherDownloadStartsOver) {
  KeepFirst(3000, id_, Etag());
  DownloadIdentity other{42, "https://images.example/other.qcow2"};
  PartFile f;
  bool busy = false;
  ASSERT_TRUE(f.Reserve(target_, &busy, &other).ok());
  EXPECT_EQ(f.resume_from(), 0u);
  EXPECT_NE(f.resume_note().find("another URL"), std::string::npos) << f.resume_note();
  EXPECT_EQ(ReadFile(PartPath()), "");
  EXPECT_FALSE(FileExists(MetaPath()));
}

TEST_F(PartFileResume, OldSidecarStartsOver) {
  KeepFirst(3000, id_, Etag());
  Result<PartMeta> meta = ParsePartMeta(ReadFile(MetaPath()));
  ASSERT_TRUE(meta.ok());
  meta->saved_at -= kResumeMaxAgeSeconds + 60;
  WriteFile(MetaPath(), FormatPartMeta(*meta), 0640);
  PartFile f;
  bool busy = false;
  ASSERT_TRUE(f.Reserve(target_, &busy, &id_).ok());
  EXPECT_EQ(f.resume_from(), 0u);
  EXPECT_NE(f.resume_note().find("older than"), std::string::npos) << f.resume_note();
  EXPECT_EQ(ReadFile(PartPath()), "");
}

TEST_F(PartFileResume, KeptBytesWithABadHeaderStartOver) {
  KeepFirst(3000, id_, Etag());
  std::string bytes = ReadFile(PartPath());
  bytes[0] = 'X';
  WriteFile(PartPath(), bytes, 0640);
  PartFile f;
  bool busy = false;
  ASSERT_TRUE(f.Reserve(target_, &busy, &id_).ok());
  EXPECT_EQ(f.resume_from(), 0u);
  EXPECT_NE(f.resume_note().find("bad magic"), std::string::npos) << f.resume_note();
}

TEST_F(PartFileResume, APartGrownPastItsSidecarStartsOver) {
  // A try that died while appending (a killed worker) left no sidecar of
  // its own; an older one that does not match the size is not trusted.
  KeepFirst(3000, id_, Etag());
  int fd = open(PartPath().c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, body_.data() + 3000, 100), 100);
  close(fd);
  PartFile f;
  bool busy = false;
  ASSERT_TRUE(f.Reserve(target_, &busy, &id_).ok());
  EXPECT_EQ(f.resume_from(), 0u);
  EXPECT_NE(f.resume_note().find("has 3100 bytes, its sidecar says 3000"), std::string::npos)
      << f.resume_note();
}

TEST_F(PartFileResume, ReserveWithoutIdentityDropsTheSidecar) {
  KeepFirst(3000, id_, Etag());
  PartFile f;
  bool busy = false;
  ASSERT_TRUE(f.Reserve(target_, &busy).ok());
  EXPECT_EQ(f.resume_from(), 0u);
  EXPECT_FALSE(f.keep_on_failure());
  EXPECT_EQ(ReadFile(PartPath()), "");
  EXPECT_FALSE(FileExists(MetaPath()));
}

TEST_F(PartFileResume, KeepCutsToTheReportedLengthAndRefusesMore) {
  PartFile f;
  bool busy = false;
  ASSERT_TRUE(f.Reserve(target_, &busy, &id_).ok());
  f.KeepOnFailure(true);
  EXPECT_TRUE(f.keep_on_failure());
  ASSERT_TRUE(f.Write(body_.data(), 5000).ok());
  EXPECT_FALSE(f.Keep(Etag(), 6000).ok());
  EXPECT_TRUE(f.reserved());
  ASSERT_TRUE(f.Keep(Etag(), 4000).ok());
  EXPECT_EQ(ReadFile(PartPath()), body_.substr(0, 4000));
}

TEST_F(PartFileResume, RewindWritesFromByteZeroAndTruncateCutsTheRest) {
  KeepFirst(6000, id_, Etag());
  PartFile f;
  bool busy = false;
  ASSERT_TRUE(f.Reserve(target_, &busy, &id_).ok());
  ASSERT_EQ(f.resume_from(), 6000u);
  ASSERT_TRUE(f.Rewind().ok());
  EXPECT_TRUE(f.rewound());
  EXPECT_EQ(f.resume_from(), 0u);
  std::string other = WithQcow2Header(std::string(200, 'n'));
  ASSERT_TRUE(f.Write(other.data(), other.size()).ok());
  EXPECT_EQ(f.written(), other.size());
  ASSERT_TRUE(f.TruncateTo(f.written()).ok());
  ASSERT_TRUE(f.Verify().ok());
  ASSERT_TRUE(f.Commit().ok());
  EXPECT_EQ(ReadFile(store_.path() + "/7/qemu/img"), other);
}

TEST_F(PartFileResume, DiscardRemovesTheKeptFileOnTheLastAttempt) {
  KeepFirst(3000, id_, Etag());
  PartFile f;
  bool busy = false;
  ASSERT_TRUE(f.Reserve(target_, &busy, &id_).ok());
  f.KeepOnFailure(false);
  EXPECT_FALSE(f.keep_on_failure());
  f.Discard();
  EXPECT_FALSE(FileExists(PartPath()));
  EXPECT_FALSE(FileExists(MetaPath()));
}

// ------------------------------------------------------------ the sweep

void SetAge(const std::string& path, int64_t seconds) {
  struct timespec times[2];
  times[0].tv_sec = times[1].tv_sec = time(nullptr) - seconds;
  times[0].tv_nsec = times[1].tv_nsec = 0;
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
}

// Another uid's .part that a worker (not root) may not open: another
// delivery's while recently written (busy, left alone), abandoned when
// older (removed with its sidecar, then reserved afresh). The Reserve runs
// in a child dropped to the unprivileged test user, as a worker would be.
TEST_F(PartFileResume, AnotherUsersPartIsWaitedForThenTakenWhenStale) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to make a file of another uid";
  const TestUser& user = UnprivilegedUser();
  ASSERT_FALSE(user.name.empty());
  const std::string dir = store_.path() + "/7/qemu";
  fs::create_directories(dir);
  for (const std::string& d : {store_.path(), store_.path() + "/7", dir})
    ASSERT_EQ(chown(d.c_str(), user.uid, user.gid), 0) << d;
  WriteFile(PartPath(), "root's bytes", 0600);  // root's: the user may not open it
  WriteFile(MetaPath(), "root's sidecar", 0600);
  // 10: busy; 20: reserved, not busy; 30 + n: something else.
  auto reserve_as_user = [&]() {
    pid_t pid = fork();
    if (pid == 0) {
      if (setgroups(0, nullptr) != 0 || setresgid(user.gid, user.gid, user.gid) != 0 ||
          setresuid(user.uid, user.uid, user.uid) != 0)
        _exit(31);
      PartFile f;
      f.SetForeignStaleAfter(600);
      bool busy = false;
      Status st = f.Reserve(target_, &busy, &id_);
      if (busy) _exit(st.transient() ? 10 : 32);
      if (!st.ok()) _exit(33);
      if (!f.Write("new", 3).ok()) _exit(34);
      f.Discard();
      _exit(20);
    }
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(reserve_as_user(), 10);  // written just now: maybe another delivery's
  EXPECT_TRUE(FileExists(PartPath()));
  EXPECT_TRUE(FileExists(MetaPath()));
  struct timespec old[2] = {{time(nullptr) - 601, 0}, {time(nullptr) - 601, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, PartPath().c_str(), old, AT_SYMLINK_NOFOLLOW), 0);
  EXPECT_EQ(reserve_as_user(), 20);  // stale: removed, reserved as the user
  EXPECT_FALSE(FileExists(PartPath()));  // and discarded by the child
  EXPECT_FALSE(FileExists(MetaPath()));
}

TEST(PartSweep, RemovesOldUnlockedPartsAndTheirSidecarsOnly) {
  TempDir store, outside;
  const std::string d = store.path() + "/7/qemu";
  fs::create_directories(d);
  fs::create_directories(store.path() + "/8/docker");
  const int64_t old = kResumeMaxAgeSeconds + 3600, young = 3600;
  auto put = [&](const std::string& path, int64_t age) {
    WriteFile(path, "bytes", 0640);
    SetAge(path, age);
  };
  put(d + "/.old.part", old);
  put(d + "/.old.part.meta", old);
  put(d + "/.young.part", young);
  put(d + "/.young.part.meta", young);
  put(d + "/.busy.part", old);
  put(d + "/.stray.part.meta", old);
  put(d + "/.stray.part.meta.tmp", old);
  put(d + "/.keptmeta.part.meta", old);  // its .part is young: goes with it later
  put(d + "/.keptmeta.part", young);
  put(d + "/image", old);         // a stored image
  put(d + "/notours.part", old);  // not a dot-file
  put(store.path() + "/8/docker/.other.part", old);
  // Links are never followed: a user directory that is a symlink, a
  // .part that is one.
  fs::create_directories(outside.path() + "/qemu");
  put(outside.path() + "/qemu/.victim.part", old);
  ASSERT_EQ(symlink(outside.path().c_str(), (store.path() + "/9").c_str()), 0);
  ASSERT_EQ(symlink((outside.path() + "/qemu/.victim.part").c_str(), (d + "/.link.part").c_str()),
            0);
  // A live download holds its lock.
  int busy = open((d + "/.busy.part").c_str(), O_RDWR);
  ASSERT_GE(busy, 0);
  ASSERT_EQ(flock(busy, LOCK_EX | LOCK_NB), 0);

  PartSweeper sweeper;
  PartSweepStats stats = sweeper.SweepAll(store.path());
  close(busy);

  EXPECT_EQ(stats.removed, 2);
  EXPECT_EQ(stats.strays, 2);
  EXPECT_EQ(stats.busy, 1);
  EXPECT_EQ(stats.errors, 0);
  EXPECT_FALSE(FileExists(d + "/.old.part"));
  EXPECT_FALSE(FileExists(d + "/.old.part.meta"));
  EXPECT_FALSE(FileExists(d + "/.stray.part.meta"));
  EXPECT_FALSE(FileExists(d + "/.stray.part.meta.tmp"));
  EXPECT_FALSE(FileExists(store.path() + "/8/docker/.other.part"));
  for (const std::string& kept : {d + "/.young.part", d + "/.young.part.meta", d + "/.busy.part",
                                  d + "/.keptmeta.part", d + "/.keptmeta.part.meta", d + "/image",
                                  d + "/notours.part", outside.path() + "/qemu/.victim.part"})
    EXPECT_TRUE(FileExists(kept)) << kept;
  struct stat st {};
  EXPECT_EQ(lstat((d + "/.link.part").c_str(), &st), 0);  // not followed, not removed
}

TEST(PartSweep, TickSpreadsAPassAndRunsAgainAfterThePeriod) {
  TempDir store;
  for (int u = 0; u < kPartSweepDirsPerTick + 5; ++u) {
    std::string d = store.path() + "/" + std::to_string(u) + "/qemu";
    fs::create_directories(d);
    WriteFile(d + "/.x.part", "b", 0640);
    SetAge(d + "/.x.part", kResumeMaxAgeSeconds + 60);
  }
  auto left = [&] {
    int n = 0;
    for (int u = 0; u < kPartSweepDirsPerTick + 5; ++u)
      n += FileExists(store.path() + "/" + std::to_string(u) + "/qemu/.x.part");
    return n;
  };
  PartSweeper sweeper(1000);
  sweeper.Tick(store.path(), 0);  // the first tick starts a pass at once
  EXPECT_TRUE(sweeper.in_pass());
  EXPECT_EQ(left(), 5);
  sweeper.Tick(store.path(), 10);
  EXPECT_FALSE(sweeper.in_pass());
  EXPECT_EQ(left(), 0);
  std::string d = store.path() + "/0/qemu/.y.part";
  WriteFile(d, "b", 0640);
  SetAge(d, kResumeMaxAgeSeconds + 60);
  sweeper.Tick(store.path(), 500);  // not due yet
  EXPECT_TRUE(FileExists(d));
  sweeper.Tick(store.path(), 1000);
  EXPECT_FALSE(FileExists(d));
}

}  // namespace
}  // namespace djinn::testing
