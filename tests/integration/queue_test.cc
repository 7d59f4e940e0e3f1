// The job loop and the master's queue duties, through the real binary and
// a real redis-server: what a curlyq producer writes is consumed, and no
// job is lost when workers or Redis die.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <regex>

#include "common/envelope.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/queue_fixture.h"
#include "tests/harness/redis_client.h"

namespace djinn::testing {
namespace {

using std::chrono::seconds;

class QueueTest : public QueueFixture {};

// Waits until a worker's title says it is busy with `what` ("sleep q-1");
// returns its pid, or -1 after the deadline.
pid_t WaitBusy(const Daemon& d, const std::string& what) {
  pid_t busy = -1;
  WaitFor([&] {
    for (pid_t w : d.Workers())
      if (ProcTitle(w).find(" busy " + what) != std::string::npos) busy = w;
    return busy > 0;
  });
  return busy;
}

TEST_F(QueueTest, JobsRunInFifoOrder) {
  Daemon d(Opts(1));
  std::vector<std::pair<std::string, std::string>> jobs;
  for (int i = 0; i < 20; i++) {
    std::string id = "fifo-" + std::to_string(100 + i);
    jobs.push_back({id, JsonJobEnvelope(id, R"({"job":"ping"})")});
  }
  client_->PushManyLikeCurlyq("jobs", jobs);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(WaitFor([&] { return client_->Int({"HLEN", "jobs:data"}) == 0; }, seconds(20))) << d.Log();
  std::regex done(R"(job (fifo-\d+) \(ping\): done)");
  std::string log = d.Log();
  std::vector<std::string> order;
  for (std::sregex_iterator it(log.begin(), log.end(), done), end; it != end; ++it) order.push_back((*it)[1]);
  ASSERT_EQ(order.size(), 20u) << log;
  for (int i = 0; i < 20; i++) EXPECT_EQ(order[i], "fifo-" + std::to_string(100 + i));
  ExpectQueueEmpty();
}

TEST_F(QueueTest, TransientFailureRetriesWithBackoffThenDies) {
  DaemonOptions o = Opts(1);
  o.attempts = 2;  // two retries: three tries in all, as curlyq counts
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Push("flaky-1", R"({"job":"fail"})");
  // First failure: scheduled 1-2 s ahead ((1+rand)*2^1/2) with Attempt 1.
  ASSERT_TRUE(WaitFor([&] { return client_->Str({"ZSCORE", "jobs:scheduled", "flaky-1"}) != ""; }))
      << d.Log();
  double when = std::stod(client_->Str({"ZSCORE", "jobs:scheduled", "flaky-1"}));
  double now = static_cast<double>(std::time(nullptr));
  EXPECT_GE(when, now - 1);  // whole seconds: allow for truncation
  EXPECT_LE(when, now + 3);
  EXPECT_EQ(Stored("flaky-1").attempt, 1);
  // Then retried when due, and dead after the third try.
  ASSERT_TRUE(WaitFor([&] { return Dead("flaky-1"); }, seconds(20))) << d.Log();
  Envelope e = Stored("flaky-1");
  EXPECT_EQ(e.attempt, 3);
  EXPECT_EQ(e.data, R"({"job":"fail"})");
  EXPECT_EQ(CountOf(d.Log(), "job flaky-1: fail: failing on purpose"), 3u) << d.Log();
  EXPECT_NE(d.Log().find("job flaky-1: fail: failing on purpose (attempts exhausted); moved to dead set"),
            std::string::npos);
}

// std::bad_alloc while handling a job (a payload that exhausts memory) is
// caught at the job boundary: the job is poison, kept untouched in the
// dead set, and the same worker goes on with the next job.
TEST_F(QueueTest, OutOfMemoryMakesTheJobPoisonAndTheWorkerGoesOn) {
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  std::string pid_before = d.Workers().empty() ? "" : std::to_string(d.Workers()[0]);
  Push("hog-1", R"({"job":"hog"})");
  Push("after-hog", R"({"job":"ping"})");
  ASSERT_TRUE(WaitFor([&] { return Dead("hog-1") && Gone("after-hog"); })) << d.Log();
  Envelope e = Stored("hog-1");
  EXPECT_EQ(e.attempt, 0);  // poison: kept as it arrived
  EXPECT_EQ(e.data, R"({"job":"hog"})");
  EXPECT_NE(d.Log().find("job hog-1: poison: out of memory handling it"), std::string::npos)
      << d.Log();
  ASSERT_FALSE(d.Workers().empty());
  EXPECT_EQ(std::to_string(d.Workers()[0]), pid_before);  // no crash, no respawn
}

TEST_F(QueueTest, ScheduledJobRunsWhenDue) {
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  auto start = std::chrono::steady_clock::now();
  std::string due = std::to_string(std::time(nullptr) + 3);
  client_->Cmd({"HSET", "jobs:data", "later-1", JsonJobEnvelope("later-1", R"({"job":"ping"})")});
  client_->Cmd({"ZADD", "jobs:scheduled", due, "later-1"});
  ASSERT_TRUE(WaitFor([&] { return Gone("later-1"); }, seconds(15))) << d.Log();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
  ExpectQueueEmpty();
}

TEST_F(QueueTest, PoisonMessagesGoStraightToDeadWithDataKept) {
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  std::string garbage = "\xc1\x01\x02not msgpack";
  client_->PushLikeCurlyq("jobs", "p-envelope", garbage);
  Push("p-neither", "this is neither JSON nor gob");
  Push("p-unknown", R"({"job":"make_coffee"})");
  Push("p-missing", R"({"job":"download_job","image_id":3})");
  Push("p-mistyped", R"({"job":"download_job","id":"12","image_id":3,"source":"http://x/"})");
  for (const char* id : {"p-envelope", "p-neither", "p-unknown", "p-missing", "p-mistyped"})
    ASSERT_TRUE(WaitFor([&] { return Dead(id); })) << id << "\n" << d.Log();
  EXPECT_EQ(client_->Str({"HGET", "jobs:data", "p-envelope"}), garbage);
  EXPECT_EQ(Stored("p-neither").data, "this is neither JSON nor gob");
  EXPECT_EQ(Stored("p-unknown").data, R"({"job":"make_coffee"})");
  std::string log = d.Log();
  for (const char* id : {"p-envelope", "p-neither", "p-unknown", "p-missing", "p-mistyped"})
    EXPECT_EQ(CountOf(log, std::string("job ") + id + ": "), 1u) << id << "\n" << log;
  EXPECT_NE(log.find("unknown job \"make_coffee\""), std::string::npos) << log;
  // Nothing was retried, and the worker goes on.
  EXPECT_EQ(client_->Int({"ZCARD", "jobs:scheduled"}), 0);
  Push("after-poison", R"({"job":"ping"})");
  ASSERT_TRUE(WaitFor([&] { return Gone("after-poison"); })) << d.Log();
  EXPECT_EQ(CountOf(log, "started (pid"), 1u) << "a worker died:\n" << log;
}

TEST_F(QueueTest, OrphansOfExpiredConsumerAreRequeued) {
  // A consumer on some other host that stopped heartbeating long ago.
  std::string ghost = "jobs:inflight:00000000-0000-4000-8000-000000000000";
  client_->Cmd({"ZADD", "jobs:consumers", std::to_string(std::time(nullptr) - 3600), ghost});
  client_->Cmd({"HSET", "jobs:data", "orphan-1", JsonJobEnvelope("orphan-1", R"({"job":"ping"})")});
  client_->Cmd({"SADD", ghost, "orphan-1"});
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(WaitFor([&] { return Gone("orphan-1"); }, seconds(20))) << d.Log();
  EXPECT_EQ(client_->Str({"ZSCORE", "jobs:consumers", ghost}), "");
  EXPECT_TRUE(d.WaitForLog("requeued 1 job(s) of consumers whose heartbeat expired")) << d.Log();
}

TEST_F(QueueTest, KilledBusyWorkerJobRunsAgainWithAttemptPlusOne) {
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Push("victim-1", R"({"job":"sleep","ms":2000})");
  pid_t busy = WaitBusy(d, "sleep victim-1");
  ASSERT_GT(busy, 0) << d.Log();
  EXPECT_EQ(ProcTitle(busy), "djinn-consumer: worker 1 busy sleep victim-1");
  ASSERT_EQ(kill(busy, SIGKILL), 0);
  ASSERT_TRUE(d.WaitForLog("job victim-1: its worker worker 1 (pid " + std::to_string(busy) +
                           ") killed by signal 9 (SIGKILL), out of memory?; requeued (attempt 1)"))
      << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Gone("victim-1"); }, seconds(20))) << d.Log();
  EXPECT_EQ(CountOf(d.Log(), "job victim-1 (sleep): done"), 1u);
  ExpectQueueEmpty();
}

TEST_F(QueueTest, JobThatKillsItsWorkerEveryTimeEndsDead) {
  DaemonOptions o = Opts(1);
  o.attempts = 2;  // two retries: three deaths in all
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Push("pill-1", R"({"job":"crash"})");
  ASSERT_TRUE(WaitFor([&] { return Dead("pill-1"); }, seconds(30))) << d.Log();
  EXPECT_EQ(Stored("pill-1").attempt, 3);
  EXPECT_EQ(CountOf(d.Log(), "job pill-1: its worker"), 3u) << d.Log();
  EXPECT_TRUE(d.WaitForLog("attempts exhausted (3), moved to dead set"));
  // The worker comes back and serves other jobs.
  Push("after-pill", R"({"job":"ping"})");
  ASSERT_TRUE(WaitFor([&] { return Gone("after-pill"); }, seconds(30))) << d.Log();
}

TEST_F(QueueTest, JobTimeoutKillsWorkerAndRequeues) {
  DaemonOptions o = Opts(1);
  o.job_timeout = 1;
  o.attempts = 1;  // one retry: two timeouts, then dead
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Push("slow-1", R"({"job":"sleep","ms":600000})");
  ASSERT_TRUE(d.WaitForLog("job slow-1 (sleep) ran past job_timeout 1s; stopping the worker")) << d.Log();
  ASSERT_TRUE(d.WaitForLog("after job_timeout 1s; requeued (attempt 1)")) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Dead("slow-1"); }, seconds(30))) << d.Log();
  EXPECT_EQ(Stored("slow-1").attempt, 2);
}

TEST_F(QueueTest, RedisRestartMidRunLosesAndDuplicatesNothing) {
  constexpr int kJobs = 5000;
  std::vector<std::pair<std::string, std::string>> jobs;
  for (int i = 0; i < kJobs; i++) {
    std::string id = "bulk-" + std::to_string(i);
    jobs.push_back({id, JsonJobEnvelope(id, R"({"job":"ping"})")});
  }
  client_->PushManyLikeCurlyq("jobs", jobs);
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(WaitFor([&] { return client_->Int({"HLEN", "jobs:data"}) < kJobs - 500; }, seconds(30)))
      << d.Log();
  // Stop Redis mid-run, keeping its data (as a restart of a persistent
  // Redis would), and bring it back on the same port.
  redis_->Cli({"SHUTDOWN", "SAVE"});  // no reply: the server is gone
  redis_->Stop();
  ASSERT_TRUE(d.WaitForLog("queue unavailable")) << d.Log();
  redis_->Start();
  Reconnect();
  ASSERT_TRUE(WaitFor([&] { return client_->Int({"HLEN", "jobs:data"}) == 0; }, seconds(60))) << d.Log();
  // Every job ran exactly once (the debug log names each done job).
  std::string log = d.Log();
  std::map<std::string, int> done;
  std::regex re(R"(job (bulk-\d+) \(ping\): done)");
  for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it) done[(*it)[1]]++;
  EXPECT_EQ(done.size(), static_cast<size_t>(kJobs));
  for (const auto& [id, n] : done) EXPECT_EQ(n, 1) << id;
  ExpectQueueEmpty();
  EXPECT_EQ(d.Stop(), 0);
}

TEST_F(QueueTest, RetriedJobLeavesEnvelopeInCurlyqForm) {
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Push("4a7c1e2b-0000-4000-8000-000000000001", R"({"job":"fail"})");
  ASSERT_TRUE(WaitFor([&] {
    return client_->Str({"ZSCORE", "jobs:scheduled", "4a7c1e2b-0000-4000-8000-000000000001"}) != "";
  })) << d.Log();
  std::string raw = client_->Str({"HGET", "jobs:data", "4a7c1e2b-0000-4000-8000-000000000001"});
  // fixmap(3) "ID" str8(36) ... "Data" bin8 ... "Attempt" d3 + 8 bytes.
  std::string expect = std::string("\x83\xa2ID\xd9\x24", 6) + "4a7c1e2b-0000-4000-8000-000000000001" +
                       std::string("\xa4" "Data\xc4\x0e", 7) + R"({"job":"fail"})" +
                       std::string("\xa7" "Attempt\xd3\x00\x00\x00\x00\x00\x00\x00\x01", 17);
  EXPECT_EQ(raw, expect);
}

TEST_F(QueueTest, GracefulStopFinishesAndAcksTheRunningJob) {
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Push("finish-me", R"({"job":"sleep","ms":1500})");
  ASSERT_GT(WaitBusy(d, "sleep finish-me"), 0) << d.Log();
  int st = d.Stop(seconds(20));
  ASSERT_NE(st, -1) << d.Log();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_NE(d.Log().find("job finish-me (sleep): done"), std::string::npos) << d.Log();
  ExpectQueueEmpty();
}

TEST_F(QueueTest, ShutdownPastTimeoutRequeuesTheKilledJob) {
  DaemonOptions o = Opts(1);
  o.shutdown_timeout = 1;
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  Push("long-1", R"({"job":"sleep","ms":600000})");
  ASSERT_TRUE(WaitFor([&] { return client_->Int({"LLEN", "jobs:active"}) == 0 && !Gone("long-1"); }));
  ASSERT_GT(WaitBusy(d, "sleep long-1"), 0) << d.Log();
  int st = d.Stop(seconds(20));
  ASSERT_NE(st, -1) << d.Log();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  // Back in the queue, its attempt not counted: the shutdown killed it.
  EXPECT_EQ(client_->List({"LRANGE", "jobs:active", "0", "-1"}), std::vector<std::string>{"long-1"});
  EXPECT_EQ(Stored("long-1").attempt, 0);
  EXPECT_NE(d.Log().find("job long-1: its worker"), std::string::npos) << d.Log();
}

TEST_F(QueueTest, QuitRequeuesBusyJobsAndExitsZero) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  Push("q-1", R"({"job":"sleep","ms":600000})");
  Push("q-2", R"({"job":"sleep","ms":600000})");
  ASSERT_GT(WaitBusy(d, "sleep q-1"), 0) << d.Log();
  ASSERT_GT(WaitBusy(d, "sleep q-2"), 0) << d.Log();
  ASSERT_TRUE(d.Signal(SIGQUIT));
  int st = d.Wait(seconds(10));
  ASSERT_NE(st, -1) << d.Log();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  auto active = client_->List({"LRANGE", "jobs:active", "0", "-1"});
  std::sort(active.begin(), active.end());
  EXPECT_EQ(active, (std::vector<std::string>{"q-1", "q-2"}));
}

TEST_F(QueueTest, RedisOutageDoesNotStopReapingOrSignals) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  redis_->Stop();
  ASSERT_TRUE(d.WaitForLog("queue unavailable")) << d.Log();
  // Workers wait for Redis with a title that says so; find one and kill it.
  std::vector<pid_t> before = ChildrenOf(d.pid());
  ASSERT_EQ(before.size(), 2u);
  ASSERT_EQ(kill(before[0], SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] {
    auto now = ChildrenOf(d.pid());
    return now.size() == 2 && std::find(now.begin(), now.end(), before[0]) == now.end();
  }, seconds(15))) << d.Log();
  auto t0 = std::chrono::steady_clock::now();
  int st = d.Stop(seconds(20));
  ASSERT_NE(st, -1) << d.Log();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(10));
}

TEST_F(QueueTest, EvictingRedisIsWarnedAbout) {
  client_->Cmd({"CONFIG", "SET", "maxmemory-policy", "allkeys-lru"});
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  EXPECT_TRUE(d.WaitForLog("redis maxmemory-policy is \"allkeys-lru\"")) << d.Log();
}

}  // namespace
}  // namespace djinn::testing
