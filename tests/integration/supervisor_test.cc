// The master as a supervisor, driven through the real binary and signals.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <regex>

#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"

namespace djinn::testing {
namespace {

using std::chrono::seconds;

class SupervisorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = new RedisServer();
    redis_->Start();
  }
  static void TearDownTestSuite() {
    delete redis_;
    redis_ = nullptr;
  }
  DaemonOptions Opts(int workers = 2) {
    DaemonOptions o;
    o.workers = workers;
    o.redis_addr = redis_->addr();
    return o;
  }
  static RedisServer* redis_;
};
RedisServer* SupervisorTest::redis_ = nullptr;

TEST_F(SupervisorTest, StartsConfiguredWorkersWithTitles) {
  Daemon d(Opts(3));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(3)) << d.Log();
  EXPECT_EQ(ProcTitle(d.pid()), "djinn-consumer: master");
  std::vector<std::string> titles;
  for (pid_t w : d.Workers()) titles.push_back(ProcTitle(w));
  std::sort(titles.begin(), titles.end());
  EXPECT_EQ(titles, (std::vector<std::string>{"djinn-consumer: worker 1 idle",
                                              "djinn-consumer: worker 2 idle",
                                              "djinn-consumer: worker 3 idle"}));
  EXPECT_EQ(ReadFile(d.pidfile()), std::to_string(d.pid()) + "\n");
}

TEST_F(SupervisorTest, KilledWorkerIsReplacedAndItsDeathDecoded) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  std::vector<pid_t> before = d.Workers();
  ASSERT_EQ(kill(before[0], SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] {
    auto now = d.Workers();
    return now.size() == 2 && std::find(now.begin(), now.end(), before[0]) == now.end();
  }, seconds(15))) << d.Log();
  EXPECT_TRUE(d.WaitForLog("(pid " + std::to_string(before[0]) +
                           ") killed by signal 9 (SIGKILL), out of memory?"))
      << d.Log();
}

TEST_F(SupervisorTest, HupWithChangedWorkersStartsNewGeneration) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  std::vector<pid_t> old = d.Workers();
  d.options().workers = 3;
  d.WriteConfig(d.ConfigText());
  ASSERT_TRUE(d.Signal(SIGHUP));
  ASSERT_TRUE(WaitFor([&] {
    auto now = d.Workers();
    if (now.size() != 3) return false;
    for (pid_t p : old)
      if (std::find(now.begin(), now.end(), p) != now.end()) return false;
    return ChildrenOf(d.pid()).size() == 3;  // the old ones are gone too
  }, seconds(20))) << d.Log();
  EXPECT_TRUE(d.WaitForLog("reloaded: generation 2, 3 workers"));
  // Gone for good: reaped by the master (a zombie still answers kill 0).
  for (pid_t p : old)
    EXPECT_TRUE(WaitFor([&] { return kill(p, 0) != 0; })) << "old worker " << p << " still alive";
}

TEST_F(SupervisorTest, HupWithBrokenConfigKeepsWorkersRunning) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  std::vector<pid_t> before = d.Workers();
  std::string text = d.ConfigText();
  text.replace(text.find("workers = 2;"), 12, "workers = \"many\";");
  d.WriteConfig(text);
  ASSERT_TRUE(d.Signal(SIGHUP));
  ASSERT_TRUE(d.WaitForLog("keeping the running configuration")) << d.Log();
  EXPECT_NE(d.Log().find("workers: expected an integer"), std::string::npos);
  EXPECT_EQ(d.Workers(), before);
  EXPECT_TRUE(d.Running());
}

TEST_F(SupervisorTest, TermExitsZeroAndRemovesPidfile) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  std::vector<pid_t> workers = d.Workers();
  ASSERT_TRUE(FileExists(d.pidfile()));
  int st = d.Stop();
  ASSERT_NE(st, -1) << "did not stop: " << d.Log();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  EXPECT_FALSE(FileExists(d.pidfile()));
  for (pid_t w : workers) EXPECT_NE(kill(w, 0), 0);
}

TEST_F(SupervisorTest, QuitExitsZeroAtOnce) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  ASSERT_TRUE(d.Signal(SIGQUIT));
  int st = d.Wait(seconds(10));
  ASSERT_NE(st, -1) << d.Log();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  EXPECT_FALSE(FileExists(d.pidfile()));
}

TEST_F(SupervisorTest, SecondInstanceWithSamePidfileIsRefused) {
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  std::string out;
  int code = RunCommand({ConsumerBinary(), "-config", d.config_path()}, &out);
  EXPECT_EQ(code, 1);
  EXPECT_TRUE(WaitFor([&] {
    return d.Log().find("another djinn-consumer is running (pid " + std::to_string(d.pid())) !=
           std::string::npos;
  })) << d.Log();
  EXPECT_TRUE(d.Running());
  EXPECT_EQ(ReadFile(d.pidfile()), std::to_string(d.pid()) + "\n");
}

TEST_F(SupervisorTest, Usr1ReopensLogInMasterAndWorkers) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  ASSERT_EQ(rename(d.log_path().c_str(), (d.log_path() + ".1").c_str()), 0);
  WriteFile(d.log_path(), "", 0640);  // as logrotate's "create" does
  ASSERT_TRUE(d.Signal(SIGUSR1));
  ASSERT_TRUE(WaitFor([&] {
    std::string log = ReadFile(d.log_path());
    return CountOf(log, "log file reopened") == 3;  // master and both workers
  })) << ReadFile(d.log_path());
  std::string fresh = ReadFile(d.log_path());
  EXPECT_NE(fresh.find("master: log file reopened"), std::string::npos);
  EXPECT_NE(fresh.find("worker 1: log file reopened"), std::string::npos);
  EXPECT_NE(fresh.find("worker 2: log file reopened"), std::string::npos);
}

TEST_F(SupervisorTest, TtinAndTtouChangeWorkerCount) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  ASSERT_TRUE(d.Signal(SIGTTIN));
  ASSERT_TRUE(d.WaitForWorkers(3)) << d.Log();
  // One at a time: signals of one kind sent together may arrive as one.
  ASSERT_TRUE(d.Signal(SIGTTOU));
  ASSERT_TRUE(WaitFor([&] { return ChildrenOf(d.pid()).size() == 2; }, seconds(15))) << d.Log();
  ASSERT_TRUE(d.Signal(SIGTTOU));
  ASSERT_TRUE(WaitFor([&] { return ChildrenOf(d.pid()).size() == 1; }, seconds(15))) << d.Log();
  EXPECT_EQ(ProcTitle(d.Workers().at(0)), "djinn-consumer: worker 1 idle");
}

TEST_F(SupervisorTest, WorkerFailingItsSandboxIsThrottled) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (a worker user of uid 0 is refused)";
  DaemonOptions o = Opts(1);
  o.user = "root";  // the sandbox refuses to "drop" to uid 0
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForLog("respawn in 4s", seconds(15))) << d.Log();
  std::string log = d.Log();
  EXPECT_NE(log.find("exited with code 3 (sandbox set-up failed)"), std::string::npos) << log;
  // Delays 1 s, 2 s, 4 s: three respawns at most by now, not a tight loop.
  EXPECT_LE(CountOf(log, "worker 1 started"), 4u) << log;
  EXPECT_TRUE(d.Running());
}

TEST(CommandLineTest, UnknownFlagPrintsUsageAndExits2) {
  std::string out;
  EXPECT_EQ(RunCommand({ConsumerBinary(), "-bogus"}, &out), 2);
  EXPECT_NE(out.find("unknown flag -bogus"), std::string::npos);
  EXPECT_NE(out.find("usage: djinn-consumer"), std::string::npos);
}

TEST(CommandLineTest, VersionPrintsNameVersionPlatform) {
  std::string out;
  EXPECT_EQ(RunCommand({ConsumerBinary(), "-version"}, &out), 0);
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(^djinn-consumer \d+\.\d+\.\d+ Linux/\S+)"))) << out;
}

TEST(CommandLineTest, CheckConfigExitsZeroOrOne) {
  std::string out;
  EXPECT_EQ(RunCommand({ConsumerBinary(), "-t", "-config", "etc/djinn-consumer.conf"}, &out), 0) << out;
  TempDir dir;
  WriteFile(dir.Sub("bad.conf"), "workers = 0;\n");
  EXPECT_EQ(RunCommand({ConsumerBinary(), "-t", "--config", dir.Sub("bad.conf")}, &out), 1);
  EXPECT_NE(out.find(dir.Sub("bad.conf") + ":1: workers: must be between 1 and 1024"), std::string::npos) << out;
  EXPECT_EQ(RunCommand({ConsumerBinary(), "-t", "-config", dir.Sub("absent.conf")}, &out), 1);
}

}  // namespace
}  // namespace djinn::testing
