// The SysVinit script (dist/sysvinit/djinn-consumer) driving the real
// daemon through start-stop-daemon: start, status, reload, stop, with LSB
// exit codes. Its settings come from a defaults file named by
// DJINN_CONSUMER_DEFAULTS, so nothing under /etc is touched. The daemon
// needs only Redis to start. Runs from the repository root.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"

namespace djinn::testing {
namespace {

using std::chrono::seconds;

constexpr char kScript[] = "dist/sysvinit/djinn-consumer";

// A pid that runs and is not a zombie.
bool Alive(pid_t pid) {
  if (pid <= 0 || kill(pid, 0) != 0) return false;
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t rp = stat.rfind(')');
  return rp != std::string::npos && rp + 2 < stat.size() && stat[rp + 2] != 'Z';
}

// start-stop-daemon sees a process gone once its executable is unmapped,
// a moment before the kernel finishes the exit: allow that moment.
bool Gone(pid_t pid) {
  return WaitFor([&] { return !Alive(pid); }, std::chrono::seconds(5));
}

pid_t ReadPid(const std::string& pidfile) {
  std::string s = ReadFile(pidfile);
  return s.empty() ? -1 : static_cast<pid_t>(std::atoi(s.c_str()));
}

// The master's workers that are up (title says idle or busy), sorted.
std::vector<pid_t> ReadyWorkers(pid_t master) {
  std::vector<pid_t> out;
  for (pid_t c : ChildrenOf(master)) {
    std::string t = ProcTitle(c);
    if (t.find("worker") != std::string::npos &&
        (t.find(" idle") != std::string::npos || t.find(" busy") != std::string::npos))
      out.push_back(c);
  }
  return out;
}

class SysvinitTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    redis_ = new RedisServer();
    redis_->Start();
  }
  static void TearDownTestSuite() {
    delete redis_;
    redis_ = nullptr;
  }

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the init script test runs as root only";
    ASSERT_TRUE(FileExists(kScript)) << "run the tests from the repository root";
    DaemonOptions o;
    o.workers = 2;
    o.redis_addr = redis_->addr();
    o.test_jobs = false;
    daemon_ = std::make_unique<Daemon>(o);
    defaults_ = daemon_->dir() + "/default";
    WriteFile(defaults_, "DAEMON=" + ConsumerBinary() + "\nCONFIG=" + daemon_->config_path() +
                             "\nPIDFILE=" + daemon_->pidfile() + "\n");
  }

  void TearDown() override {
    // Whatever a failed test left running goes.
    if (!daemon_) return;
    pid_t pid = ReadPid(daemon_->pidfile());
    if (Alive(pid)) {
      kill(pid, SIGQUIT);
      if (!WaitFor([&] { return !Alive(pid); }, seconds(10))) kill(pid, SIGKILL);
    }
  }

  // Runs the script with an action; returns its exit status, output in out_.
  int Script(const std::string& action) {
    return RunCommand({"env", "DJINN_CONSUMER_DEFAULTS=" + defaults_, "ASAN_OPTIONS=detect_leaks=0",
                       "sh", kScript, action},
                      &out_);
  }

  static RedisServer* redis_;
  std::unique_ptr<Daemon> daemon_;
  std::string defaults_;
  std::string out_;
};
RedisServer* SysvinitTest::redis_ = nullptr;

TEST_F(SysvinitTest, StartStatusReloadStopStatus) {
  ASSERT_EQ(Script("status"), 3) << out_;

  ASSERT_EQ(Script("start"), 0) << out_ << daemon_->Log();
  pid_t master = ReadPid(daemon_->pidfile());
  ASSERT_TRUE(Alive(master)) << "pidfile " << daemon_->pidfile() << ": " << master;
  EXPECT_EQ(ProcTitle(master), "djinn-consumer: master");
  ASSERT_TRUE(WaitFor([&] { return ReadyWorkers(master).size() == 2; }, seconds(20)))
      << daemon_->Log();

  EXPECT_EQ(Script("status"), 0) << out_;
  EXPECT_NE(out_.find("is running"), std::string::npos) << out_;
  // Starting what runs is fine (LSB) and starts nothing new.
  EXPECT_EQ(Script("start"), 0) << out_;
  EXPECT_EQ(ReadPid(daemon_->pidfile()), master);

  // Reload: a new generation of workers, the same master.
  std::vector<pid_t> old = ReadyWorkers(master);
  ASSERT_EQ(Script("reload"), 0) << out_;
  EXPECT_TRUE(WaitFor(
      [&] {
        auto now = ReadyWorkers(master);
        if (now.size() != 2) return false;
        for (pid_t p : now)
          if (std::find(old.begin(), old.end(), p) != old.end()) return false;
        return true;
      },
      seconds(20)))
      << daemon_->Log();
  EXPECT_TRUE(daemon_->WaitForLog("reloaded: generation 2")) << daemon_->Log();
  EXPECT_EQ(ReadPid(daemon_->pidfile()), master);

  // Stop waits for the graceful shutdown to finish.
  ASSERT_EQ(Script("stop"), 0) << out_;
  EXPECT_TRUE(Gone(master)) << daemon_->Log();
  EXPECT_FALSE(FileExists(daemon_->pidfile()));
  EXPECT_TRUE(daemon_->WaitForLog("master: stopped", seconds(1))) << daemon_->Log();
  EXPECT_EQ(Script("status"), 3) << out_;
  // Stopping what does not run is fine too.
  EXPECT_EQ(Script("stop"), 0) << out_;
}

TEST_F(SysvinitTest, StatusIsOneWhenThePidfileOutlivedTheDaemon) {
  // A pid that surely ran and is gone: a child we reaped.
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  ASSERT_GT(gone, 0);
  ASSERT_EQ(waitpid(gone, nullptr, 0), gone);
  WriteFile(daemon_->pidfile(), std::to_string(gone) + "\n");
  EXPECT_EQ(Script("status"), 1) << out_;
  // Start replaces the stale pidfile.
  ASSERT_EQ(Script("start"), 0) << out_ << daemon_->Log();
  pid_t master = ReadPid(daemon_->pidfile());
  EXPECT_NE(master, gone);
  EXPECT_TRUE(Alive(master));
  EXPECT_EQ(Script("stop"), 0) << out_;
  EXPECT_TRUE(Gone(master)) << daemon_->Log();
}

TEST_F(SysvinitTest, StartWithAnInvalidConfigFailsAndSaysWhy) {
  WriteFile(daemon_->config_path(), daemon_->ConfigText() + "no_such_parameter = 1;\n");
  EXPECT_EQ(Script("start"), 1) << out_;
  EXPECT_NE(out_.find("no_such_parameter: unknown parameter"), std::string::npos) << out_;
  EXPECT_FALSE(FileExists(daemon_->pidfile()));
  EXPECT_EQ(Script("status"), 3) << out_;
}

TEST_F(SysvinitTest, ReloadWithAnInvalidConfigFailsAndKeepsTheWorkers) {
  ASSERT_EQ(Script("start"), 0) << out_ << daemon_->Log();
  pid_t master = ReadPid(daemon_->pidfile());
  ASSERT_TRUE(WaitFor([&] { return ReadyWorkers(master).size() == 2; }, seconds(20)))
      << daemon_->Log();
  std::vector<pid_t> before = ReadyWorkers(master);
  WriteFile(daemon_->config_path(), daemon_->ConfigText() + "no_such_parameter = 1;\n");
  EXPECT_EQ(Script("reload"), 1) << out_;
  EXPECT_NE(out_.find("no_such_parameter: unknown parameter"), std::string::npos) << out_;
  EXPECT_EQ(ReadyWorkers(master), before);
  EXPECT_FALSE(daemon_->Log().find("SIGHUP") != std::string::npos) << "the script signalled anyway";
  // Restart refuses too, and leaves the daemon running.
  EXPECT_EQ(Script("restart"), 1) << out_;
  EXPECT_TRUE(Alive(master));
  EXPECT_EQ(Script("stop"), 0) << out_;
  EXPECT_TRUE(Gone(master)) << daemon_->Log();
}

TEST_F(SysvinitTest, ReloadOfAStoppedDaemonIsSevenNotRunning) {
  EXPECT_EQ(Script("reload"), 7) << out_;
}

// Syntax checks: any user, no servers.
TEST(SysvinitScriptTest, PassesShDashN) {
  ASSERT_TRUE(FileExists(kScript)) << "run the tests from the repository root";
  std::string out;
  EXPECT_EQ(RunCommand({"sh", "-n", kScript}, &out), 0) << out;
  EXPECT_EQ(out, "");
}

TEST(SysvinitScriptTest, PassesCheckbashisms) {
  if (RunCommand({"sh", "-c", "command -v checkbashisms"}) != 0)
    GTEST_SKIP() << "checkbashisms (devscripts) is not installed";
  std::string out;
  EXPECT_EQ(RunCommand({"checkbashisms", "--force", "--posix", "--extra", kScript}, &out), 0)
      << out;
  EXPECT_EQ(out, "");
}

TEST(SysvinitScriptTest, HasTheLsbHeader) {
  std::string s = ReadFile(kScript);
  for (const char* line :
       {"### BEGIN INIT INFO\n", "# Provides:          djinn-consumer\n",
        "# Required-Start:    $network $remote_fs\n",
        "# Should-Start:      postgresql redis-server\n", "# Default-Start:     2 3 4 5\n",
        "# Default-Stop:      0 1 6\n", "### END INIT INFO\n"})
    EXPECT_NE(s.find(line), std::string::npos) << "missing: " << line;
}

}  // namespace
}  // namespace djinn::testing
