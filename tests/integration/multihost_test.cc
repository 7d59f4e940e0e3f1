// Several hosts, one queue (issue 14): three daemons, each in a network
// namespace of its own ("hosts", tests/harness/netns.h), share one Redis
// queue, one PostgreSQL and one image store (as an NFS mount would be
// shared); Redis, PostgreSQL and the image server live in a fourth
// namespace, reached over a bridge on 198.18.0.0/24, addresses that exist
// only inside these namespaces. 1,000 download jobs; mid-run one host's
// whole process tree is killed (SIGKILL), and the two others requeue its
// in-flight jobs once its heartbeat is older than queue_consumer_timeout.
// Every row must be finished exactly once as the database sees it (an
// audit trigger counts the UPDATEs that finish a row), every image stored
// once, nothing dead, the queue empty. The hosts run the three ways
// operators run the daemon: as root with `user` (host 0, the one killed),
// started as that unprivileged user, and as root without `user`.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/netns.h"
#include "tests/harness/postgres.h"
#include "tests/harness/redis_client.h"

namespace djinn::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kHosts = 3;
constexpr int kWorkersPerHost = 2;
constexpr int kJobs = 1000;
constexpr int kKillAfter = 300;     // jobs acked when one host is killed
constexpr int kImageBytes = 8192;   // small: the cost is per job, not per byte
constexpr int kConsumerTimeout = 10;  // queue_consumer_timeout, its minimum
constexpr int kUserId = 7;

double SecondsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

class MultihostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = NetnsUnsupportedReason(); !why.empty()) GTEST_SKIP() << why;
    net_ = std::make_unique<StarNetwork>(kHosts);
    ASSERT_TRUE(net_->Create());
    // This thread works in the services namespace from here on: the servers
    // it starts are there, and so are its own connections to them.
    in_services_ = std::make_unique<ScopedNetns>(net_->services());
    ASSERT_TRUE(in_services_->ok()) << in_services_->error();
    const std::string svc = net_->services_addr();
    redis_ = std::make_unique<RedisServer>(
        std::vector<std::string>{"--bind", "127.0.0.1", svc, "--protected-mode", "no"});
    redis_->Start();
    if (HasFatalFailure()) return;
    client_ = std::make_unique<RedisClient>(redis_->port());
    pg_ = std::make_unique<PostgresServer>();
    pg_->ListenAlso(svc, net_->subnet());
    ASSERT_TRUE(pg_->Start());
    ASSERT_TRUE(pg_->CreateDjinnSchema());
    // Counts every UPDATE that finishes a row (download_job's step 4), as
    // the table's owner, whoever runs it.
    std::string out;
    ASSERT_TRUE(pg_->CreateFinishAudit(&out)) << out;
    http_ = std::make_unique<HttpServer>();
    http_->BindTo(svc);
    ASSERT_TRUE(http_->Start(files_.path()));
    // The shared store belongs to the unprivileged user, as in production
    // (root's host writes there too).
    const TestUser& user = UnprivilegedUser();
    ASSERT_FALSE(user.name.empty());
    const std::string images = store_.path() + "/" + std::to_string(kUserId) + "/qemu";
    fs::create_directories(images);
    for (const std::string& d : {store_.path(), store_.path() + "/" + std::to_string(kUserId), images})
      ASSERT_EQ(chown(d.c_str(), user.uid, user.gid), 0) << d;
  }

  DaemonOptions HostOpts() const {
    DaemonOptions o;
    o.workers = kWorkersPerHost;
    o.redis_addr = net_->services_addr() + ":" + std::to_string(redis_->port());
    o.database_addr = net_->services_addr() + ":" + std::to_string(pg_->port());
    o.database_password = pg_->consumer_password();
    o.download = "allow_private = true; timeout = 30;";
    o.extra = "queue_consumer_timeout = " + std::to_string(kConsumerTimeout) + ";\n";
    o.test_jobs = false;
    return o;
  }

  std::vector<std::string> Consumers() {
    return client_->List({"ZRANGE", "jobs:consumers", "0", "-1"});
  }

  // Starts the daemons of hosts [from, to), each inside its namespace,
  // all with the shared store; returns the consumer keys their workers
  // registered.
  std::vector<std::string> StartHosts(int from, int to) {
    std::vector<std::string> before = Consumers();
    for (int i = from; i < to; ++i) {
      // The three ways operators run it, one per host: host 0 (the one
      // killed) as root with workers dropped to `user`, host 1 started
      // directly as that unprivileged user, host 2 as root without `user`.
      DaemonOptions o = HostOpts();
      if (i == 0) o.user = UnprivilegedUser().name;
      if (i == 1) o.run_as = &UnprivilegedUser();
      auto d = std::make_unique<Daemon>(o);
      d->WriteConfig(
          Replace(d->ConfigText(), "\"" + d->store() + "\"", "\"" + store_.path() + "\""));
      ScopedNetns in(net_->host(i));
      EXPECT_TRUE(in.ok()) << in.error();
      if (!in.ok()) return {};
      EXPECT_TRUE(d->Start());
      daemons_.push_back(std::move(d));
    }
    for (int i = from; i < to; ++i)
      EXPECT_TRUE(daemons_[i]->WaitForWorkers(kWorkersPerHost)) << daemons_[i]->Log();
    std::vector<std::string> keys;
    const size_t want = static_cast<size_t>((to - from) * kWorkersPerHost);
    EXPECT_TRUE(WaitFor([&] {
      std::set<std::string> old(before.begin(), before.end());
      keys.clear();
      for (const auto& k : Consumers())
        if (!old.count(k)) keys.push_back(k);
      return keys.size() == want;
    })) << "hosts " << from << "-" << to - 1 << " registered " << keys.size() << " consumer(s)";
    return keys;
  }

  // Members in the order they must go: the daemons first, the thread back
  // to its own namespace before the namespaces are deleted.
  std::unique_ptr<StarNetwork> net_;
  std::unique_ptr<ScopedNetns> in_services_;
  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<RedisClient> client_;
  std::unique_ptr<PostgresServer> pg_;
  TempDir files_{"djinn-mh-files"};
  std::unique_ptr<HttpServer> http_;
  TempDir store_{"djinn-mh-store"};
  std::vector<std::unique_ptr<Daemon>> daemons_;
};

TEST_F(MultihostTest, HostKilledMidRunEveryJobFinishesExactlyOnce) {
  // Every host can reach the services, and nothing else: no route out.
  for (int i = 0; i < kHosts; ++i) {
    std::string out;
    EXPECT_NE(RunCommand({"ip", "-n", net_->host(i).name(), "route", "get", "192.0.2.1"}, &out), 0)
        << "host " << i << " has a route out: " << out;
  }

  // Host 0 first, to know its workers' consumer keys; then the others.
  const std::vector<std::string> victim_keys = StartHosts(0, 1);
  ASSERT_FALSE(HasFailure());
  StartHosts(1, kHosts);
  ASSERT_FALSE(HasFailure());

  // The rows and jobs: /big/<n>?job=<id> gives every job its own URL, so
  // the request log tells how often each image was fetched.
  const std::string base = http_->url("big/" + std::to_string(kImageBytes)) + "?job=";
  std::string rows;
  ASSERT_TRUE(pg_->Exec(
      "WITH i AS (INSERT INTO images (user_id, author_id, driver, hash, name) "
      "SELECT " + std::to_string(kUserId) + ", " + std::to_string(kUserId) +
          ", 'qemu', 'mh-' || g, 'mh' FROM generate_series(1, " + std::to_string(kJobs) +
          ") g RETURNING id) "
          "INSERT INTO image_downloads (image_id, source) SELECT id, '" + base +
          "' || id FROM i RETURNING id, image_id",
      &rows))
      << rows;
  std::vector<std::pair<std::string, std::string>> jobs;
  std::map<std::string, int> image_of_job;  // job ID -> image id
  std::istringstream in(rows);
  for (std::string line; std::getline(in, line);) {
    int download = std::stoi(line.substr(0, line.find('|')));
    int image = std::stoi(line.substr(line.find('|') + 1));
    std::string id = "mh-" + std::to_string(download);
    std::string payload = nlohmann::json{{"job", "download_job"},
                                         {"id", download},
                                         {"image_id", image},
                                         {"source", base + std::to_string(image)}}
                              .dump();
    jobs.emplace_back(id, JsonJobEnvelope(id, payload));
    image_of_job[id] = image;
  }
  ASSERT_EQ(jobs.size(), static_cast<size_t>(kJobs));

  // Go: pushed at once, as curlyq v0.4.0 does (no signal key).
  const Clock::time_point start = Clock::now();
  client_->PushManyLikeCurlyq("jobs", jobs, false);
  ASSERT_TRUE(WaitFor([&] { return client_->Int({"HLEN", "jobs:data"}) <= kJobs - kKillAfter; },
                      seconds(60), milliseconds(5)))
      << "no " << kKillAfter << " jobs done in 60 s; left: " << client_->Int({"HLEN", "jobs:data"})
      << "\n" << daemons_[0]->Log();

  // Kill host 0: its process group (master, workers, download processes)
  // at once. Nothing of it may be left in its namespace afterwards.
  const Clock::time_point killed = Clock::now();
  const int64_t left_at_kill = client_->Int({"HLEN", "jobs:data"});
  Daemon& victim = *daemons_[0];
  ASSERT_EQ(kill(-victim.pid(), SIGKILL), 0);
  NetNamespace& victim_ns = net_->host(0);
  if (!WaitFor([&] { return victim_ns.Pids().empty(); }, seconds(3))) {
    std::string left;
    for (pid_t p : victim_ns.Pids()) left += "\n  " + std::to_string(p) + " " + ProcTitle(p);
    ADD_FAILURE() << "processes of the killed host outlived its process group:" << left;
    ASSERT_TRUE(victim_ns.KillAll());
  }
  victim.Wait(seconds(5));  // reaps the master
  // What it held: nothing of it can change these sets any more.
  std::set<std::string> orphans;
  for (const auto& k : victim_keys)
    for (const auto& id : client_->List({"SMEMBERS", k})) orphans.insert(id);
  EXPECT_FALSE(orphans.empty()) << "host 0 held no job when killed: nothing to recover";

  // Recovery: the other masters requeue them once host 0's heartbeat is
  // older than the timeout; they are at the tail of the queue then.
  // They are requeued when the last of host 0's consumers leaves
  // jobs:consumers (RequeueOrphans drops a consumer once its set is empty).
  Clock::time_point requeued = killed, recovered = killed;
  bool requeue_seen = false;
  EXPECT_TRUE(WaitFor(
      [&] {
        if (!requeue_seen) {
          std::vector<std::string> now = Consumers();
          std::set<std::string> listed(now.begin(), now.end());
          requeue_seen = true;
          for (const auto& k : victim_keys) requeue_seen = requeue_seen && !listed.count(k);
          if (requeue_seen) requeued = Clock::now();
        }
        for (const auto& id : orphans)
          if (client_->Int({"HEXISTS", "jobs:data", id}) != 0) return false;
        recovered = Clock::now();
        return true;
      },
      seconds(90), milliseconds(20)))
      << "host 0's in-flight jobs were not finished elsewhere";
  ASSERT_TRUE(WaitFor([&] { return client_->Int({"HLEN", "jobs:data"}) == 0; }, seconds(90),
                      milliseconds(10)))
      << client_->Int({"HLEN", "jobs:data"}) << " job(s) never finished\n"
      << daemons_[1]->Log();
  const Clock::time_point drained = Clock::now();

  printf("[ MEASURE  ] %d jobs, %d hosts x %d workers: drained in %.2f s (%.0f jobs/s); "
         "before the kill %.0f jobs/s\n",
         kJobs, kHosts, kWorkersPerHost, SecondsBetween(start, drained),
         kJobs / SecondsBetween(start, drained),
         (kJobs - left_at_kill) / SecondsBetween(start, killed));
  printf("[ MEASURE  ] host 0 killed with %zu job(s) in flight and %lld queued; requeued by "
         "another host %.2f s later, finished %.2f s later (queue_consumer_timeout = %d s)\n",
         orphans.size(), static_cast<long long>(left_at_kill), SecondsBetween(killed, requeued),
         SecondsBetween(killed, recovered), kConsumerTimeout);
  fflush(stdout);

  // The database: every row finished once, without error.
  EXPECT_EQ(pg_->Query1("SELECT count(*) FROM image_downloads WHERE finished_at IS NOT NULL "
                        "AND started_at IS NOT NULL AND error IS NULL"),
            std::to_string(kJobs));
  EXPECT_EQ(pg_->Query1("SELECT string_agg(id || ': ' || coalesce(error, 'unfinished'), '; ') "
                        "FROM image_downloads WHERE finished_at IS NULL OR error IS NOT NULL"),
            "");
  EXPECT_EQ(pg_->Query1("SELECT count(*) FROM finish_log"), std::to_string(kJobs));
  EXPECT_EQ(pg_->Query1("SELECT count(DISTINCT download_id) FROM finish_log"),
            std::to_string(kJobs));
  EXPECT_EQ(pg_->FinishedMoreThanOnce(), "")
      << "rows finished more than once";

  // The store: one file per image, whole, nothing else (no .part left).
  const std::string want = HttpServer::BigBody(kImageBytes);
  std::set<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(store_.path(), ec)) {
    if (e.is_directory()) continue;
    std::string rel = fs::relative(e.path(), store_.path()).string();
    files.insert(rel);
    if (rel.rfind(std::to_string(kUserId) + "/qemu/mh-", 0) == 0) {
      EXPECT_TRUE(ReadFile(e.path().string()) == want) << rel << ": not the image";
    }
  }
  EXPECT_EQ(files.size(), static_cast<size_t>(kJobs));
  for (int i = 1; i <= kJobs; ++i) {
    std::string rel = std::to_string(kUserId) + "/qemu/mh-" + std::to_string(i);
    EXPECT_TRUE(files.count(rel)) << rel << " missing";
    files.erase(rel);
  }
  for (const auto& f : files) ADD_FAILURE() << "unexpected file in the store: " << f;

  // The image server: every image fetched once, but the killed host's.
  std::map<std::string, int> fetched;  // job query value -> GETs
  for (const auto& r : http_->Requests()) {
    size_t q = r.path.find("?job=");
    if (r.method == "GET" && q != std::string::npos) fetched[r.path.substr(q + 5)]++;
  }
  for (const auto& [id, image] : image_of_job) {
    int n = fetched[std::to_string(image)];
    EXPECT_GE(n, 1) << id << " never fetched";
    if (!orphans.count(id)) {
      EXPECT_LE(n, 1) << id << " fetched " << n << " times";
    }
  }

  // The queue: empty, nothing dead or scheduled, host 0's consumers gone.
  EXPECT_EQ(client_->Int({"LLEN", "jobs:active"}), 0);
  EXPECT_EQ(client_->Int({"ZCARD", "jobs:scheduled"}), 0);
  EXPECT_EQ(client_->Int({"ZCARD", "jobs:dead"}), 0);
  for (const auto& key : client_->List({"KEYS", "jobs:inflight:*"}))
    EXPECT_EQ(client_->Int({"SCARD", key}), 0) << key;
  std::vector<std::string> consumers = client_->List({"ZRANGE", "jobs:consumers", "0", "-1"});
  std::set<std::string> alive(consumers.begin(), consumers.end());
  for (const auto& k : victim_keys) EXPECT_FALSE(alive.count(k)) << "dead consumer still listed: " << k;
  EXPECT_EQ(alive.size(), static_cast<size_t>((kHosts - 1) * kWorkersPerHost));

  // The survivors: up, one of them requeued the orphans, no job failed.
  std::string logs;
  for (int i = 1; i < kHosts; ++i) {
    EXPECT_TRUE(daemons_[i]->Running()) << "host " << i << "\n" << daemons_[i]->Log();
    logs += daemons_[i]->Log();
  }
  EXPECT_NE(logs.find("of consumers whose heartbeat expired"), std::string::npos) << logs;
  EXPECT_EQ(logs.find("moved to dead set"), std::string::npos);
  EXPECT_EQ(logs.find("; retry "), std::string::npos);
  for (int i = 1; i < kHosts; ++i) {
    int st = daemons_[i]->Stop(seconds(20));
    EXPECT_TRUE(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        << "host " << i << " stop status " << st << "\n" << daemons_[i]->Log();
  }
}

}  // namespace
}  // namespace djinn::testing
