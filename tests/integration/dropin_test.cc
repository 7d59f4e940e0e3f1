// A live Djinn install runs us unchanged (issue "Drop-in II"): jobs from
// curlyq v0.4.0 (no signal list) wake idle workers, Djinn's own config
// syntax runs the daemon end to end, `attempts` counts as curlyq counts,
// and the daemon runs as Djinn's dist files run it: started directly as an
// unprivileged user and stopped with SIGINT.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/envelope.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/postgres.h"
#include "tests/harness/qcow2_image.h"
#include "tests/harness/queue_fixture.h"
#include "tests/harness/redis_client.h"

namespace djinn::testing {
namespace {

using std::chrono::seconds;

// Far longer than any WaitFor below: a job finished while every worker's
// wait has this long to run can only have woken them.
const char kLongIdleWait[] = "DJINN_CONSUMER_TEST_IDLE_WAIT_MS=600000";

// "Uid:\treal\teffective..." of /proc/<pid>/status: the real uid.
uid_t UidOf(pid_t pid) {
  std::string status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  size_t at = status.find("\nUid:");
  return at == std::string::npos ? static_cast<uid_t>(-1)
                                  : static_cast<uid_t>(std::stoul(status.substr(at + 5)));
}

std::string StatusField(pid_t pid, const std::string& field) {
  std::string status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  size_t at = status.find("\n" + field + ":");
  if (at == std::string::npos) return "";
  size_t start = status.find_first_not_of(" \t", at + field.size() + 2);
  return status.substr(start, status.find('\n', start) - start);
}

class DropInTest : public QueueFixture {};

// ------------------------------------------------ waking on both producers

TEST_F(DropInTest, JobPushedLikeCurlyqV040WakesIdleWorkers) {
  DaemonOptions o = Opts(2);
  o.env = {kLongIdleWait};
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Blocked() == 2; })) << "workers never waited idle";
  // HSETNX + RPUSH and nothing else: no Q:signal.
  client_->PushLikeCurlyqV040("jobs", "v040-1", JsonJobEnvelope("v040-1", R"({"job":"ping"})"));
  ASSERT_TRUE(WaitFor([&] { return Gone("v040-1"); })) << d.Log();
  EXPECT_EQ(client_->Int({"EXISTS", "jobs:signal"}), 0);
  // Both go back to waiting.
  EXPECT_TRUE(WaitFor([&] { return Blocked() == 2; }));
}

TEST_F(DropInTest, JobPushedWithSignalWakesIdleWorkers) {
  DaemonOptions o = Opts(2);
  o.env = {kLongIdleWait};
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Blocked() == 2; })) << "workers never waited idle";
  client_->PushLikeCurlyq("jobs", "sig-1", JsonJobEnvelope("sig-1", R"({"job":"ping"})"));
  ASSERT_TRUE(WaitFor([&] { return Gone("sig-1"); })) << d.Log();
}

// ------------------------------------------------------ attempts, mixed fleet

// curlyq v0.4.0 retries while the Attempt as taken is < JobMaxAttempts
// (Djinn passes `attempts`): with attempts = 2 a job runs three times in
// all, whichever consumer ran the earlier tries. Here a Go consumer ran the
// first try (its retry wrote Attempt 1); we run the other two.
TEST_F(DropInTest, JobRunsAttemptsPlusOneTimesAcrossAMixedFleet) {
  DaemonOptions o = Opts(1);
  o.attempts = 2;
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  client_->PushLikeCurlyqV040("jobs", "mixed-1", JsonJobEnvelope("mixed-1", R"({"job":"fail"})", 1));
  ASSERT_TRUE(WaitFor([&] { return Dead("mixed-1"); }, seconds(30))) << d.Log();
  auto env = DecodeEnvelope(client_->Str({"HGET", "jobs:data", "mixed-1"}));
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->attempt, 3);  // as curlyq's kill writes it: the last try + 1
  std::string log = d.Log();
  size_t runs = 0;
  for (size_t at = 0; (at = log.find("job mixed-1: fail: failing on purpose", at)) != std::string::npos; at++)
    runs++;
  EXPECT_EQ(runs, 2u) << log;
  EXPECT_NE(log.find("job mixed-1: fail: failing on purpose; retry 2/2"), std::string::npos) << log;
}

// The boundary: taken with Attempt == attempts, a failure is final.
TEST_F(DropInTest, JobTakenWithAttemptEqualToAttemptsDiesOnFailure) {
  DaemonOptions o = Opts(1);
  o.attempts = 5;
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  client_->PushLikeCurlyqV040("jobs", "edge-5", JsonJobEnvelope("edge-5", R"({"job":"fail"})", 5));
  client_->PushLikeCurlyqV040("jobs", "edge-4", JsonJobEnvelope("edge-4", R"({"job":"fail"})", 4));
  ASSERT_TRUE(WaitFor([&] { return Dead("edge-5"); })) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return client_->Str({"ZSCORE", "jobs:scheduled", "edge-4"}) != ""; }))
      << d.Log();
  auto env = DecodeEnvelope(client_->Str({"HGET", "jobs:data", "edge-4"}));
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->attempt, 5);
  EXPECT_FALSE(Dead("edge-4"));
}

// ------------------------------------------------------- Djinn's dist files

// Djinn's systemd unit and SysVinit script start the binary directly as
// the unprivileged user djinn-consumer (no user/group in the config) and
// stop it with SIGINT. The sandbox applies without the drop.
TEST_F(DropInTest, StartedAsAnUnprivilegedUserItSandboxesWorkersAndStopsOnSigint) {
  DaemonOptions o = Opts(2);
  if (geteuid() == 0) o.run_as = &UnprivilegedUser();
  uid_t want = o.run_as ? o.run_as->uid : geteuid();
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  EXPECT_EQ(UidOf(d.pid()), want);
  for (pid_t w : d.Workers()) {
    EXPECT_EQ(UidOf(w), want);
    EXPECT_EQ(StatusField(w, "NoNewPrivs"), "1");
    EXPECT_EQ(StatusField(w, "Seccomp"), "2");  // a filter is installed
  }
  client_->PushLikeCurlyqV040("jobs", "unpriv-1", JsonJobEnvelope("unpriv-1", R"({"job":"ping"})"));
  ASSERT_TRUE(WaitFor([&] { return Gone("unpriv-1"); })) << d.Log();
  ASSERT_TRUE(FileExists(d.pidfile()));
  ASSERT_TRUE(d.Signal(SIGINT));
  int status = d.Wait(seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << d.Log();
  EXPECT_EQ(WEXITSTATUS(status), 0) << d.Log();
  EXPECT_FALSE(FileExists(d.pidfile()));
  EXPECT_NE(d.Log().find("SIGINT"), std::string::npos) << d.Log();
  EXPECT_EQ(client_->Int({"ZCARD", "jobs:consumers"}), 0) << "workers left without unregistering";
}

// ------------------------------------------ Djinn's own syntax, end to end

class DjinnSyntaxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = new RedisServer();
    redis_->Start();
    pg_ = new PostgresServer();
    ASSERT_TRUE(pg_->Start());
    ASSERT_TRUE(pg_->CreateDjinnSchema());
    files_ = new TempDir("djinn-dropin-files");
    http_ = new HttpServer();
    ASSERT_TRUE(http_->Start(files_->path()));
  }
  static void TearDownTestSuite() {
    delete http_;
    delete files_;
    delete pg_;
    delete redis_;
  }
  static RedisServer* redis_;
  static PostgresServer* pg_;
  static TempDir* files_;
  static HttpServer* http_;
};

RedisServer* DjinnSyntaxTest::redis_ = nullptr;
PostgresServer* DjinnSyntaxTest::pg_ = nullptr;
TempDir* DjinnSyntaxTest::files_ = nullptr;
HttpServer* DjinnSyntaxTest::http_ = nullptr;

// A Djinn-syntax file with `include` (relative to the including file),
// ${VAR} expansion and `log` given twice (the most verbose one wins)
// downloads an image into the store and records it.
TEST_F(DjinnSyntaxTest, ConfigWithIncludeVarsAndTwoLogLinesDownloadsAnImage) {
  Daemon d(DaemonOptions{});
  std::string dir = d.dir();
  mkdir((dir + "/conf.d").c_str(), 0755);
  WriteFile(dir + "/conf.d/database.conf",
            "database {\n"
            "\taddr \"" + pg_->addr() + "\"\n"
            "\tname \"djinn\"\n\n"
            "\tusername \"djinn_consumer\"\n"
            "\tpassword \"${DJINN_TEST_PG_PASSWORD}\"\n"
            "}\n");
  d.WriteConfig(
      "# Djinn's own syntax, as /etc/djinn/consumer.conf\n"
      "pidfile \"${DJINN_TEST_DIR}/consumer.pid\"\n\n"
      "log info \"${DJINN_TEST_DIR}/info.log\"\n"
      "log debug \"${DJINN_TEST_DIR}/consumer.log\"\n\n"
      "parallelism 2\n"
      "attempts 0\n\n"
      "include \"conf.d/database.conf\"\n\n"
      "redis {\n\taddr \"" + redis_->addr() + "\"\n}\n\n"
      "store images {\n\ttype \"file\"\n\tpath \"${DJINN_TEST_DIR}/store\"\n\tlimit 64MB\n}\n\n"
      "download { allow_private true; timeout 1m }\n"
      "crypto {\n\tblock \"0123456789abcdef0123456789abcdef\"\n\tsalt \"pepper\"\n}\n");
  d.options().env = {"DJINN_TEST_DIR=" + dir, "DJINN_TEST_PG_PASSWORD=" + pg_->consumer_password()};
  // -t accepts it without a warning.
  std::string out;
  ASSERT_EQ(RunCommand({"env", "DJINN_TEST_DIR=" + dir, ConsumerBinary(), "-t", "-config", d.config_path()},
                &out),
            0)
      << out;
  EXPECT_EQ(out.find("warning"), std::string::npos) << out;

  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  std::string image(128 * 1024, 'x');
  image = WithQcow2Header(image);
  WriteFile(files_->Sub("djinn-syntax.qcow2"), image);
  int image_id = pg_->AddImage(7, "qemu", "djinn-syntax-hash");
  std::string url = http_->url("files/djinn-syntax.qcow2");
  int download = pg_->AddDownload(image_id, url);
  nlohmann::json payload = {
      {"job", "download_job"}, {"id", download}, {"image_id", image_id}, {"source", url}};
  RedisClient client(redis_->port());
  client.PushLikeCurlyqV040("jobs", "dl-djinn", JsonJobEnvelope("dl-djinn", payload.dump()));
  ASSERT_TRUE(WaitFor([&] { return pg_->Download(download).finished; }, seconds(30))) << d.Log();
  auto row = pg_->Download(download);
  EXPECT_FALSE(row.has_error) << row.error;
  EXPECT_EQ(ReadFile(d.store() + "/7/qemu/djinn-syntax-hash"), image);
  // The debug log (the more verbose line) has the job; info.log was never made.
  EXPECT_TRUE(d.WaitForLog("job dl-djinn (download_job): done")) << d.Log();
  EXPECT_FALSE(FileExists(dir + "/info.log"));
  EXPECT_TRUE(FileExists(dir + "/consumer.pid"));
}

}  // namespace
}  // namespace djinn::testing
