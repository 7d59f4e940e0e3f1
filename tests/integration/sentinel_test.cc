// Redis Sentinel: the daemon finds its master through the sentinels, and a
// failover in the middle of a stream of download jobs loses none of those
// the producer had replicated (WAIT) and runs every job to one recorded
// outcome (tests/harness/sentinel.h starts master, replica, 3 sentinels).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/postgres.h"
#include "tests/harness/qcow2_image.h"
#include "tests/harness/redis_client.h"
#include "tests/harness/sentinel.h"

namespace djinn::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class SentinelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  // One deployment for the suite (its start is most of a test's time); the
  // failover test leaves it with a new master, which the others find
  // through the sentinels as the daemon does.
  void SetUp() override {
    if (cluster_ == nullptr) {
      cluster_ = new SentinelCluster("mymaster");
      ASSERT_NO_FATAL_FAILURE(cluster_->Start());
    }
    ASSERT_NE(cluster_->MasterPort(), 0);
  }

  // The daemon's config with its redis block pointing at the sentinels.
  static void UseSentinels(Daemon& d, const std::string& master) {
    std::string text = d.ConfigText();
    std::string line = "redis = { addr = \"" + d.options().redis_addr + "\"; };\n";
    size_t at = text.find(line);
    ASSERT_NE(at, std::string::npos) << text;
    std::string list;
    for (const std::string& s : cluster_->sentinel_addrs()) list += (list.empty() ? "\"" : ", \"") + s + "\"";
    text.replace(at, line.size(), "redis = { sentinels = [" + list + "]; master = \"" + master + "\"; };\n");
    d.WriteConfig(text);
  }

  static inline SentinelCluster* cluster_ = nullptr;
};

TEST_F(SentinelTest, UnknownMasterNameIsNamedAndJobsWaitForAFixedConfig) {
  DaemonOptions o;
  o.workers = 1;
  o.queue = "wrongname";
  Daemon d(o);
  ASSERT_NO_FATAL_FAILURE(UseSentinels(d, "nosuch"));
  ASSERT_TRUE(d.Start());
  std::vector<std::string> s = cluster_->sentinel_addrs();
  std::string want = "redis: no sentinel knows master \"nosuch\" (asked 3: " + s[0] +
                     ": does not know master \"nosuch\"; " + s[1] + ": does not know master \"nosuch\"; " +
                     s[2] + ": does not know master \"nosuch\")";
  // The master's line and the worker's.
  ASSERT_TRUE(WaitFor([&] { return CountOf(d.Log(), want) >= 2; })) << d.Log();
  RedisClient client(cluster_->MasterPort());
  client.PushLikeCurlyqV040("wrongname", "wait-1", JsonJobEnvelope("wait-1", R"({"job":"sleep","ms":1})"));
  // It waits: nobody takes it for 2 s (two of the workers' retries), and
  // the daemon stays up.
  EXPECT_FALSE(WaitFor([&] { return client.Int({"LLEN", "wrongname:active"}) != 1; }, seconds(2)))
      << d.Log();
  EXPECT_TRUE(d.Running());

  ASSERT_NO_FATAL_FAILURE(UseSentinels(d, cluster_->master_name()));
  ASSERT_TRUE(d.Signal(SIGHUP));
  ASSERT_TRUE(WaitFor([&] { return client.Int({"HEXISTS", "wrongname:data", "wait-1"}) == 0; }))
      << d.Log();
  EXPECT_TRUE(d.WaitForLog("job wait-1 (sleep): done")) << d.Log();  // ran, not lost
  EXPECT_EQ(client.Int({"ZCARD", "wrongname:dead"}), 0);
  EXPECT_EQ(d.Stop(), 0) << d.Log();
}

TEST_F(SentinelTest, FailoverLosesNoReplicatedJobAndFinishesEachOnce) {
  PostgresServer pg;
  ASSERT_TRUE(pg.Start());
  ASSERT_TRUE(pg.CreateDjinnSchema());
  std::string audit;
  ASSERT_TRUE(pg.CreateFinishAudit(&audit)) << audit;
  TempDir files("djinn-sentinel-files");
  HttpServer http;
  ASSERT_TRUE(http.Start(files.path()));

  DaemonOptions o;
  o.workers = 2;
  o.database_addr = pg.addr();
  o.database_password = pg.consumer_password();
  // As root with workers dropped to `user` (the PostgreSQL failover test
  // starts the daemon as the unprivileged user).
  if (geteuid() == 0) o.user = UnprivilegedUser().name;
  Daemon d(o);
  chmod(d.dir().c_str(), 0755);  // the workers' user must reach the store
  ASSERT_NO_FATAL_FAILURE(UseSentinels(d, cluster_->master_name()));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();

  struct Job {
    std::string id, hash, body;
    int download = 0;
  };
  std::vector<Job> before, after;
  int serial = 0;
  // slow: served at 32 KiB/s (2 s), so that it is still running when the
  // master fails over.
  auto push = [&](RedisClient& client, std::vector<Job>* into, bool slow = false) {
    Job j;
    std::string name = "sent-" + std::to_string(++serial);
    j.hash = name;
    j.body = Qcow2Header() + name;
    j.body.resize(64 * 1024, 'q');
    WriteFile(files.Sub(name + ".qcow2"), j.body);
    int image = pg.AddImage(7, "qemu", j.hash);
    std::string url = http.url((slow ? "trickle/32768/" : "files/") + name + ".qcow2");
    j.download = pg.AddDownload(image, url);
    j.id = "dl-" + name;
    std::string payload = nlohmann::json{{"job", "download_job"}, {"id", j.download},
                                         {"image_id", image}, {"source", url}}
                              .dump();
    client.PushLikeCurlyqV040("jobs", j.id, JsonJobEnvelope(j.id, payload));
    into->push_back(j);
  };

  // A steady stream; each batch replicated before the next (the producer's
  // WAIT), so the failover may lose none of them.
  int old_master = cluster_->MasterPort();
  {
    RedisClient producer(old_master);
    for (int batch = 0; batch < 5; batch++) {
      const bool last = batch == 4;  // both workers busy with it at the failover
      push(producer, &before, last);
      push(producer, &before, last);
      ASSERT_EQ(producer.Int({"WAIT", "1", "1000"}), 1) << "batch " << batch << " not replicated";
      if (!last) std::this_thread::sleep_for(milliseconds(100));  // a steady stream
    }
    // Not a failover of an idle queue: replicated jobs are unacked.
    ASSERT_GT(producer.Int({"HLEN", "jobs:data"}), 0);
  }

  double failover_at = UnixNow();
  ASSERT_EQ(cluster_->Failover(), "OK");
  cluster_->KillServer(old_master);
  int new_master = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        new_master = cluster_->MasterPort();
        return new_master != 0 && new_master != old_master;
      },
      seconds(15), milliseconds(20)))
      << "the sentinels never named a new master";
  double switched_at = UnixNow();
  EXPECT_EQ(new_master, cluster_->other_server_port(old_master));
  {
    RedisClient producer(new_master);  // no replica left: no WAIT
    for (int batch = 0; batch < 5; batch++) {
      push(producer, &after);
      push(producer, &after);
      std::this_thread::sleep_for(milliseconds(100));  // a steady stream
    }
  }

  auto finished = [&](const Job& j) { return pg.Download(j.download).finished; };
  for (const std::vector<Job>* jobs : {&before, &after}) {
    for (const Job& j : *jobs) {
      ASSERT_TRUE(WaitFor([&] { return finished(j); }, seconds(30))) << j.id << " never finished\n"
                                                                     << d.Log();
    }
  }
  RedisClient check(new_master);
  for (const std::vector<Job>* jobs : {&before, &after}) {
    for (const Job& j : *jobs) {
      auto row = pg.Download(j.download);
      EXPECT_FALSE(row.has_error) << j.id << ": " << row.error;
      EXPECT_TRUE(ReadFile(d.store() + "/7/qemu/" + j.hash) == j.body) << j.id << ": not stored";
      EXPECT_EQ(check.Str({"ZSCORE", "jobs:dead", j.id}), "") << j.id << " is dead";
    }
  }
  // Every delivery acked on the new master: nothing left queued or in flight.
  ASSERT_TRUE(WaitFor([&] { return check.Int({"HLEN", "jobs:data"}) == 0; })) << d.Log();
  EXPECT_EQ(check.Int({"LLEN", "jobs:active"}), 0);
  EXPECT_EQ(check.Int({"ZCARD", "jobs:dead"}), 0);
  EXPECT_EQ(check.Int({"ZCARD", "jobs:scheduled"}), 0);

  // Each row finished exactly once as the database sees it.
  EXPECT_EQ(pg.Query1("SELECT count(DISTINCT download_id) FROM finish_log"),
            std::to_string(before.size() + after.size()));
  EXPECT_EQ(pg.FinishedMoreThanOnce(), "");

  std::string moved = "redis: sentinel says master \"mymaster\" moved from 127.0.0.1:" +
                      std::to_string(old_master) + " to 127.0.0.1:" + std::to_string(new_master);
  ASSERT_TRUE(d.WaitForLog(moved)) << d.Log();
  std::string log = d.Log();
  EXPECT_EQ(CountOf(log, "; retry "), 0u) << log;
  EXPECT_EQ(CountOf(log, "moved to dead set"), 0u) << log;
  EXPECT_TRUE(d.Running());

  std::string ids;
  for (const Job& j : after) ids += (ids.empty() ? "" : ",") + std::to_string(j.download);
  double first_after =
      std::atof(pg.Query1("SELECT extract(epoch FROM min(finished_at)) FROM image_downloads WHERE id IN (" +
                          ids + ")")
                    .c_str());
  // At-least-once across a failover: a job whose ack died with the old
  // master runs again and finds its row finished.
  size_t repeated = CountOf(log, "finished already (a repeated delivery)");
  std::printf("[ MEASURE  ] sentinel failover -> sentinels name the new master: %.2f s; "
              "failover -> first job finished through it: %.2f s; "
              "%zu + %zu jobs, %zu repeated deliveries\n",
              switched_at - failover_at, first_after - failover_at, before.size(), after.size(),
              repeated);
  EXPECT_EQ(d.Stop(), 0) << d.Log();
}

}  // namespace
}  // namespace djinn::testing
