// The master opens its log file and pidfile itself (as root under systemd
// and SysVinit) and gives the log to the workers' user: a symbolic or hard
// link planted in their place must not make it write or chown another file.
// The real binary, started as in production; it must refuse to start with
// one line naming the path, and leave the link's target as it was.
//
// As root the workers' user is set, so without the checks the master would
// also have chowned the target. Not as root, what applies to everyone is
// still checked (O_NOFOLLOW); the hard-link checks need root.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "common/exit_codes.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"

namespace djinn::testing {
namespace {

using std::chrono::seconds;

bool Root() { return geteuid() == 0; }
std::string AsRoot() { return Root() ? " (running as root)" : ""; }

class SymlinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(target_, "secret", 0600);
    ASSERT_EQ(stat(target_.c_str(), &before_), 0);
  }

  static DaemonOptions Opts() {
    DaemonOptions o;
    o.workers = 1;
    if (Root()) o.user = UnprivilegedUser().name;
    return o;
  }
  // The config without its log line: errors after start-up go to stderr.
  static void LogToStderr(Daemon* d) {
    std::string text = d->ConfigText();
    size_t at = text.find("log = {");
    ASSERT_NE(at, std::string::npos);
    text.erase(at, text.find('\n', at) + 1 - at);
    d->WriteConfig(text);
  }
  // Starts d and returns its exit status once it has exited (-1: it runs).
  static int ExitStatus(Daemon* d) {
    if (!d->Start()) return -1;
    int st = d->Wait(seconds(20));
    if (st == -1) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  static std::string Stderr(const Daemon& d) { return ReadFile(d.stdout_path()); }
  static bool IsSymlink(const std::string& path) {
    struct stat st;
    return lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
  }
  // The target as it was: content, owner, group, mode.
  void ExpectTargetUntouched() {
    EXPECT_EQ(ReadFile(target_), "secret");
    struct stat now;
    ASSERT_EQ(stat(target_.c_str(), &now), 0);
    EXPECT_EQ(now.st_uid, before_.st_uid);
    EXPECT_EQ(now.st_gid, before_.st_gid);
    EXPECT_EQ(now.st_mode, before_.st_mode);
    EXPECT_EQ(now.st_size, before_.st_size);
  }

  // Outside the daemon's directory, owned by us (root when root).
  TempDir outside_{"djinn-link-target"};
  const std::string target_ = outside_.Sub("target");
  struct stat before_ {};
};

TEST_F(SymlinkTest, SymlinkedLogFileIsRefusedAndItsTargetUntouched) {
  Daemon d(Opts());
  ASSERT_EQ(symlink(target_.c_str(), d.log_path().c_str()), 0);
  EXPECT_EQ(ExitStatus(&d), kExitFailure) << Stderr(d);
  EXPECT_EQ(Stderr(d), "djinn-consumer: log.file " + d.log_path() +
                           ": is a symbolic link; refusing to follow it" + AsRoot() + "\n");
  ExpectTargetUntouched();
  EXPECT_TRUE(IsSymlink(d.log_path()));
  EXPECT_FALSE(FileExists(d.pidfile()));
}

TEST_F(SymlinkTest, DanglingSymlinkedLogFileCreatesNothing) {
  ASSERT_EQ(unlink(target_.c_str()), 0);
  Daemon d(Opts());
  ASSERT_EQ(symlink(target_.c_str(), d.log_path().c_str()), 0);
  EXPECT_EQ(ExitStatus(&d), kExitFailure) << Stderr(d);
  EXPECT_EQ(Stderr(d), "djinn-consumer: log.file " + d.log_path() +
                           ": is a symbolic link; refusing to follow it" + AsRoot() + "\n");
  EXPECT_FALSE(FileExists(target_));
}

TEST_F(SymlinkTest, SymlinkedPidfileIsRefusedAndItsTargetUntouched) {
  Daemon d(Opts());
  LogToStderr(&d);
  ASSERT_EQ(symlink(target_.c_str(), d.pidfile().c_str()), 0);
  EXPECT_EQ(ExitStatus(&d), kExitFailure) << Stderr(d);
  std::string err = Stderr(d);
  std::string want = " master: pidfile " + d.pidfile() +
                     ": is a symbolic link; refusing to follow it" + AsRoot() + "\n";
  ASSERT_GE(err.size(), want.size()) << err;
  EXPECT_EQ(err.substr(err.size() - want.size()), want) << err;
  EXPECT_NE(err.find(" error "), std::string::npos) << err;
  ExpectTargetUntouched();
  EXPECT_TRUE(IsSymlink(d.pidfile()));  // not removed at exit either
}

// With a log file, the pidfile's error is in the log (as every error after
// the log is open).
TEST_F(SymlinkTest, SymlinkedPidfileIsReportedInTheLogFile) {
  Daemon d(Opts());
  ASSERT_EQ(symlink(target_.c_str(), d.pidfile().c_str()), 0);
  EXPECT_EQ(ExitStatus(&d), kExitFailure) << d.Log();
  EXPECT_NE(ReadFile(d.log_path())
                .find("master: pidfile " + d.pidfile() +
                      ": is a symbolic link; refusing to follow it" + AsRoot() + "\n"),
            std::string::npos)
      << d.Log();
  ExpectTargetUntouched();
}

TEST_F(SymlinkTest, HardLinkedLogFileIsRefusedAsRoot) {
  if (!Root()) GTEST_SKIP() << "hard links are refused only as root";
  Daemon d(Opts());
  ASSERT_EQ(link(target_.c_str(), d.log_path().c_str()), 0);
  EXPECT_EQ(ExitStatus(&d), kExitFailure) << Stderr(d);
  EXPECT_EQ(Stderr(d), "djinn-consumer: log.file " + d.log_path() +
                           ": has 2 hard links; refusing to write to it (running as root)\n");
  ExpectTargetUntouched();
}

TEST_F(SymlinkTest, HardLinkedPidfileIsRefusedAsRoot) {
  if (!Root()) GTEST_SKIP() << "hard links are refused only as root";
  Daemon d(Opts());
  LogToStderr(&d);
  ASSERT_EQ(link(target_.c_str(), d.pidfile().c_str()), 0);
  EXPECT_EQ(ExitStatus(&d), kExitFailure) << Stderr(d);
  std::string err = Stderr(d);
  EXPECT_NE(err.find(" master: pidfile " + d.pidfile() +
                     ": has 2 hard links; refusing to write to it (running as root)\n"),
            std::string::npos)
      << err;
  ExpectTargetUntouched();  // not truncated
}

// Started as an unprivileged user (as Djinn's own units do), the link is
// still not followed, even to a file that user may write.
TEST_F(SymlinkTest, SymlinkedLogFileIsRefusedWhenNotRoot) {
  if (!Root()) GTEST_SKIP() << "the other tests run as this user already";
  const TestUser& user = UnprivilegedUser();
  if (user.name.empty()) GTEST_SKIP() << "no unprivileged user";
  ASSERT_EQ(chown(target_.c_str(), user.uid, user.gid), 0);
  ASSERT_EQ(stat(target_.c_str(), &before_), 0);
  DaemonOptions o;
  o.workers = 1;
  o.run_as = &user;
  Daemon d(o);
  ASSERT_EQ(symlink(target_.c_str(), d.log_path().c_str()), 0);
  EXPECT_EQ(ExitStatus(&d), kExitFailure) << Stderr(d);
  EXPECT_EQ(Stderr(d), "djinn-consumer: log.file " + d.log_path() +
                           ": is a symbolic link; refusing to follow it\n");
  ExpectTargetUntouched();
}

// Both are written by the master as root: a relative name (which would
// depend on the directory it was started in) is a configuration error,
// found by -t already.
TEST_F(SymlinkTest, RelativeLogFileIsAConfigError) {
  Daemon d(Opts());
  std::string text = d.ConfigText();
  text.replace(text.find(d.log_path()), d.log_path().size(), "consumer.log");
  d.WriteConfig(text);
  std::string out;
  EXPECT_EQ(RunCommand({ConsumerBinary(), "-t", "-config", d.config_path()}, &out), kExitFailure)
      << out;
  EXPECT_EQ(out, "djinn-consumer: " + d.config_path() +
                     ":2: log.file: must be an absolute path (got \"consumer.log\")\n");
  EXPECT_EQ(ExitStatus(&d), kExitFailure);
  EXPECT_FALSE(FileExists(d.dir() + "/consumer.log"));
}

}  // namespace
}  // namespace djinn::testing
