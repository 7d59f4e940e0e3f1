// The operator commands (status, queue, dead, retry, purge) through the
// real binary against a real daemon and redis-server: dead jobs made by
// poison and by a failing job with its attempts used up, retry and purge
// of a mix of existing and missing IDs, -json parsed, status as root with
// `user` set and as an unprivileged master, and a control socket that
// takes no command.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>

#include "common/envelope.h"
#include "common/unique_fd.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/queue_fixture.h"
#include "tests/harness/redis_client.h"

namespace djinn::testing {
namespace {

using nlohmann::json;
using std::chrono::seconds;

// Far longer than any wait below: only a wake-up can run a job in time.
const char kLongIdleWait[] = "DJINN_CONSUMER_TEST_IDLE_WAIT_MS=600000";

struct CmdResult {
  int code = -1;
  std::string out, err;
};

// Runs `djinn-consumer -config <config> args...`, as `as` when given,
// with standard output and standard error apart.
CmdResult Cmd(const std::string& config, const std::vector<std::string>& args,
              const TestUser* as = nullptr) {
  TempDir dir("djinn-cmd");
  if (as) {
    EXPECT_EQ(chown(dir.path().c_str(), as->uid, as->gid), 0);
  }
  std::vector<std::string> argv = {"sh", "-c", "exec \"$0\" \"$@\" 2>\"$CMD_ERR\"", ConsumerBinary(),
                                   "-config", config};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p;
  CmdResult r;
  if (!p.Start(argv, dir.Sub("out"), {"CMD_ERR=" + dir.Sub("err")}, as)) return r;
  int st = p.Wait(seconds(30));
  r.out = ReadFile(dir.Sub("out"));
  r.err = ReadFile(dir.Sub("err"));
  r.code = st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

json Parse(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << text;
  return j;
}

std::string SocketOf(const Daemon& d) { return d.dir() + "/consumer.sock"; }

class CommandsTest : public QueueFixture {
 protected:
  CmdResult Run(const Daemon& d, const std::vector<std::string>& args,
                const TestUser* as = nullptr) {
    return Cmd(d.config_path(), args, as);
  }
  // A job killed elsewhere (a Go consumer): in Q:dead, no reason.
  void PutDead(const std::string& id, const std::string& payload, int64_t attempt, int64_t died) {
    client_->Cmd({"HSET", "jobs:data", id, JsonJobEnvelope(id, payload, attempt)});
    client_->Cmd({"ZADD", "jobs:dead", std::to_string(died), id});
  }
  // Dead by our own workers: poison, and a failing job out of attempts.
  void MakeDeadJobs(Daemon& d) {
    ASSERT_TRUE(d.Start());
    ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
    Push("fail-1", R"({"job":"fail"})");
    Push("poison-1", R"({"job":"no_such_job"})");
    client_->PushLikeCurlyqV040("jobs", "poison-2", "\xc1 not msgpack");
    ASSERT_TRUE(WaitFor([&] { return Dead("fail-1") && Dead("poison-1") && Dead("poison-2"); },
                        seconds(20)))
        << d.Log();
  }
  // Nothing of id is left in any key of the queue.
  void ExpectNoTrace(const std::string& id) {
    for (const std::string& key : client_->List({"KEYS", "jobs:*"})) {
      std::string type = client_->Str({"TYPE", key});
      if (type == "hash") {
        EXPECT_EQ(client_->Int({"HEXISTS", key, id}), 0) << key << " " << id;
      } else if (type == "zset") {
        EXPECT_EQ(client_->Str({"ZSCORE", key, id}), "") << key << " " << id;
      } else if (type == "set") {
        EXPECT_EQ(client_->Int({"SISMEMBER", key, id}), 0) << key << " " << id;
      }
      if (type == "list") {
        auto items = client_->List({"LRANGE", key, "0", "-1"});
        EXPECT_EQ(std::count(items.begin(), items.end(), id), 0) << key << " " << id;
      }
    }
  }
};

// ------------------------------------------------------------------ status

TEST_F(CommandsTest, StatusShowsTheMasterAndItsWorkersToRootAndTheWorkersUser) {
  DaemonOptions o = Opts(2);
  bool root = geteuid() == 0;
  if (root) o.user = UnprivilegedUser().name;
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  Push("busy-1", R"({"job":"sleep","ms":20000})");
  ASSERT_TRUE(WaitFor([&] {
    for (pid_t w : d.Workers())
      if (ProcTitle(w).find("busy sleep busy-1") != std::string::npos) return true;
    return false;
  })) << d.Log();

  struct stat st;
  ASSERT_EQ(stat(SocketOf(d).c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  if (root) {
    EXPECT_EQ(st.st_uid, 0u);
    EXPECT_EQ(st.st_gid, UnprivilegedUser().gid);
  }

  CmdResult r = Run(d, {"status", "-json"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = Parse(r.out);
  EXPECT_EQ(j["pid"], d.pid());
  EXPECT_EQ(j["generation"], 1);
  EXPECT_EQ(j["queue"], "jobs");
  EXPECT_GE(j["uptime_seconds"].get<int64_t>(), 0);
  ASSERT_EQ(j["workers"].size(), 2u) << r.out;
  int busy = 0;
  for (const json& w : j["workers"]) {
    if (w["state"] != "busy") continue;
    busy++;
    EXPECT_EQ(w["job_id"], "busy-1");
    EXPECT_EQ(w["job_type"], "sleep");
    EXPECT_GE(w["running_seconds"].get<int64_t>(), 0);
  }
  EXPECT_EQ(busy, 1) << r.out;
  EXPECT_EQ(j["counters"]["workers_started"], 2);

  // The workers' user reads it too (the table form).
  const TestUser* as = root ? &UnprivilegedUser() : nullptr;
  r = Run(d, {"status"}, as);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("pid " + std::to_string(d.pid())), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("busy-1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("WORKER"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");

  // Gone with the master.
  d.Signal(SIGQUIT);
  ASSERT_NE(d.Wait(seconds(20)), -1);
  EXPECT_FALSE(FileExists(SocketOf(d)));
  r = Run(d, {"status"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot reach the master"), std::string::npos) << r.err;
}

TEST_F(CommandsTest, StatusWorksForAMasterStartedUnprivileged) {
  DaemonOptions o = Opts(1);
  const TestUser* as = geteuid() == 0 ? &UnprivilegedUser() : nullptr;
  o.run_as = as;
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  struct stat st;
  ASSERT_TRUE(WaitFor([&] { return stat(SocketOf(d).c_str(), &st) == 0; })) << d.Log();
  EXPECT_EQ(st.st_uid, as ? as->uid : geteuid());
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  CmdResult r = Run(d, {"status", "-json"}, as);
  ASSERT_EQ(r.code, 0) << r.err << d.Log();
  json j = Parse(r.out);
  EXPECT_EQ(j["pid"], d.pid());
  ASSERT_EQ(j["workers"].size(), 1u);
  EXPECT_EQ(j["workers"][0]["state"], "idle");
}

TEST_F(CommandsTest, StatusFollowsControlSocketAndSaysHowToConfigureWithoutOne) {
  Daemon d(Opts(1));
  std::string sock = d.dir() + "/ctl.sock";
  d.options().extra = "control_socket = \"" + sock + "\";\n";
  d.WriteConfig(d.ConfigText());
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  CmdResult r = Run(d, {"status", "-json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse(r.out)["pid"], d.pid());
  EXPECT_TRUE(FileExists(sock));
  EXPECT_FALSE(FileExists(SocketOf(d)));

  // Neither control_socket nor pidfile: nothing to reach, and it says why.
  Daemon bare(Opts(1));
  std::string text = bare.ConfigText();
  text.erase(0, text.find('\n') + 1);  // the pidfile line
  bare.WriteConfig(text);
  r = Run(bare, {"status"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("control_socket"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("pidfile"), std::string::npos) << r.err;
}

// The socket is read-only: what a client writes is never read, nothing
// changes, and clients that never read do not hold the master up.
TEST_F(CommandsTest, ControlSocketAcceptsNoCommandAndSlowClientsDoNotBlockTheMaster) {
  Daemon d(Opts(1));
  PutDead("keep-1", R"({"job":"ping"})", 3, std::time(nullptr));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 40; i++) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = SocketOf(d);
    memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << strerror(errno);
    if (i % 2 == 0) {
      std::string cmd = "retry -all\npurge -all\n{\"command\":\"stop\"}\n";
      ASSERT_EQ(write(fd.get(), cmd.data(), cmd.size()), static_cast<ssize_t>(cmd.size()));
    }
    idle.push_back(std::move(fd));  // never read
  }
  CmdResult r = Run(d, {"status", "-json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse(r.out)["pid"], d.pid());
  EXPECT_TRUE(Dead("keep-1"));
  EXPECT_FALSE(Gone("keep-1"));
  EXPECT_TRUE(d.Running());
  EXPECT_EQ(d.Workers().size(), 1u);
}

// ------------------------------------------------------------------- queue

TEST_F(CommandsTest, QueueCountsJobsAndTellsLiveFromOrphanedConsumers) {
  Daemon d(Opts(2));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  Push("sleep-1", R"({"job":"sleep","ms":20000})");
  Push("sleep-2", R"({"job":"sleep","ms":20000})");
  ASSERT_TRUE(WaitFor([&] { return client_->Int({"LLEN", "jobs:active"}) == 0; })) << d.Log();
  for (int i = 0; i < 3; i++) Push("wait-" + std::to_string(i), R"({"job":"ping"})");
  int64_t due = std::time(nullptr) + 600;
  client_->Cmd({"HSET", "jobs:data", "later-1", JsonJobEnvelope("later-1", R"({"job":"ping"})")});
  client_->Cmd({"ZADD", "jobs:scheduled", std::to_string(due), "later-1"});
  PutDead("dead-1", R"({"job":"ping"})", 6, std::time(nullptr));

  CmdResult r = Run(d, {"queue", "-json"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = Parse(r.out);
  EXPECT_EQ(j["active"], 3);
  EXPECT_EQ(j["scheduled"], 1);
  EXPECT_EQ(j["next_due"], due);
  EXPECT_EQ(j["dead"], 1);
  ASSERT_EQ(j["consumers"].size(), 2u) << r.out;
  int inflight = 0;
  for (const json& c : j["consumers"]) {
    EXPECT_EQ(c["state"], "live");
    EXPECT_EQ(c["key"].get<std::string>().rfind("jobs:inflight:", 0), 0u);
    EXPECT_LE(c["heartbeat_age_seconds"].get<int64_t>(), 10);
    inflight += c["inflight"].get<int>();
  }
  EXPECT_EQ(inflight, 2);
  d.Signal(SIGQUIT);
  ASSERT_NE(d.Wait(seconds(20)), -1);

  // A consumer whose heartbeat is older than the daemon's timeout (120 s).
  client_->Cmd({"ZADD", "jobs:consumers", std::to_string(std::time(nullptr) - 500),
                "jobs:inflight:gone"});
  client_->Cmd({"SADD", "jobs:inflight:gone", "lost-1"});
  r = Run(d, {"queue"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("jobs:inflight:gone"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("orphaned"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("next due in"), std::string::npos) << r.out;
  json k = Parse(Run(d, {"queue", "-json"}).out);
  ASSERT_EQ(k["consumers"].size(), 1u);
  EXPECT_EQ(k["consumers"][0]["state"], "orphaned");
  EXPECT_EQ(k["consumers"][0]["inflight"], 1);
}

// -------------------------------------------------------------------- dead

TEST_F(CommandsTest, DeadListsPoisonAndExhaustedJobsNewestFirstWithWhy) {
  DaemonOptions o = Opts(1);
  o.attempts = 0;  // the first failure is the last
  Daemon d(o);
  PutDead("go-killed", R"({"job":"download_job","id":12,"image_id":34,"source":"https://bob:hunter2@images.example/x.qcow2"})",
          5, std::time(nullptr) - 3600);
  MakeDeadJobs(d);

  CmdResult r = Run(d, {"dead", "-json"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = Parse(r.out);
  EXPECT_EQ(j["dead"], 4);
  ASSERT_EQ(j["jobs"].size(), 4u) << r.out;
  std::map<std::string, json> by_id;
  for (const json& job : j["jobs"]) by_id[job["id"]] = job;
  EXPECT_EQ(j["jobs"][3]["id"], "go-killed");  // the oldest last
  EXPECT_GE(j["jobs"][0]["died_at"].get<int64_t>(), j["jobs"][1]["died_at"].get<int64_t>());

  json fail = by_id["fail-1"];
  EXPECT_EQ(fail["type"], "fail");
  EXPECT_EQ(fail["attempts"], 1);
  EXPECT_NE(fail["why"].get<std::string>().find("failing on purpose"), std::string::npos) << fail;
  json poison = by_id["poison-1"];
  EXPECT_EQ(poison["attempts"], 0);
  EXPECT_NE(poison["why"].get<std::string>().find("poison"), std::string::npos) << poison;
  EXPECT_NE(poison["why"].get<std::string>().find("no_such_job"), std::string::npos) << poison;
  json raw = by_id["poison-2"];
  EXPECT_TRUE(raw["attempts"].is_null());
  EXPECT_NE(raw["summary"].get<std::string>().find("undecodable envelope"), std::string::npos);
  EXPECT_NE(raw["why"].get<std::string>().find("poison"), std::string::npos) << raw;
  json go = by_id["go-killed"];
  EXPECT_EQ(go["type"], "download_job");
  EXPECT_EQ(go["attempts"], 5);
  EXPECT_TRUE(go["why"].is_null());
  EXPECT_EQ(go["summary"], "download 12, image 34, https://bob:****@images.example/x.qcow2");

  r = Run(d, {"dead"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("ID ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("failing on purpose"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("hunter2"), std::string::npos) << r.out;

  json one = Parse(Run(d, {"dead", "-n", "1", "-json"}).out);
  ASSERT_EQ(one["jobs"].size(), 1u);
  EXPECT_EQ(one["dead"], 4);
  r = Run(d, {"dead", "-n=2"});
  EXPECT_NE(r.out.find("2 newest of 4"), std::string::npos) << r.out;
}

// ---------------------------------------------------------- retry, purge

TEST_F(CommandsTest, RetryResetsAttemptsOfExistingIdsAndReportsMissingOnes) {
  DaemonOptions o = Opts(1);
  o.attempts = 0;
  Daemon d(o);
  MakeDeadJobs(d);
  ASSERT_TRUE(WIFEXITED(d.Stop()));
  PutDead("ping-1", R"({"job":"ping"})", 4, std::time(nullptr));
  EXPECT_EQ(client_->Int({"HEXISTS", "jobs:dead:why", "fail-1"}), 1);

  CmdResult r = Cmd(d.config_path(), {"retry", "fail-1", "missing-1", "ping-1", "poison-2"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("retry missing-1: not in the dead set"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("retry poison-2: its envelope cannot be decoded"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("retried 2 of 4"), std::string::npos) << r.out;
  for (const char* id : {"fail-1", "ping-1"}) {
    EXPECT_FALSE(Dead(id)) << id;
    EXPECT_EQ(Stored(id).attempt, 0) << id;
    EXPECT_EQ(client_->Int({"HEXISTS", "jobs:dead:why", id}), 0) << id;
  }
  EXPECT_EQ(client_->List({"LRANGE", "jobs:active", "0", "-1"}),
            (std::vector<std::string>{"fail-1", "ping-1"}));
  EXPECT_EQ(Stored("fail-1").data, R"({"job":"fail"})");
  EXPECT_TRUE(Dead("poison-1"));
  EXPECT_TRUE(Dead("poison-2"));
  EXPECT_EQ(client_->Int({"EXISTS", "jobs:signal"}), 1);  // later curlyq consumers wake too
}

TEST_F(CommandsTest, RetriedJobWakesIdleWorkersAndRuns) {
  DaemonOptions o = Opts(2);
  o.env = {kLongIdleWait};
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Blocked() == 2; })) << "workers never waited idle";
  PutDead("again-1", R"({"job":"ping"})", 5, std::time(nullptr));
  client_->Cmd({"HSET", "jobs:dead:why", "again-1", "it was tired"});
  CmdResult r = Run(d, {"retry", "again-1"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_TRUE(WaitFor([&] { return Gone("again-1"); })) << d.Log();
  EXPECT_TRUE(d.WaitForLog("job again-1 (ping): done")) << d.Log();
  ExpectNoTrace("again-1");
}

TEST_F(CommandsTest, RetryAllRequeuesEveryDeadJob) {
  for (int i = 0; i < 5; i++) PutDead("all-" + std::to_string(i), R"({"job":"ping"})", 7, 1000 + i);
  client_->Cmd({"HSET", "jobs:dead:why", "all-1", "x", "stale-1", "left by another tool"});
  Daemon d(Opts(1));  // not started: its config names the Redis
  CmdResult r = Run(d, {"retry", "-all"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("retried 5 of 5"), std::string::npos) << r.out;
  EXPECT_EQ(client_->Int({"ZCARD", "jobs:dead"}), 0);
  EXPECT_EQ(client_->Int({"LLEN", "jobs:active"}), 5);
  EXPECT_EQ(client_->Int({"EXISTS", "jobs:dead:why"}), 0);  // stale reason pruned too
  for (int i = 0; i < 5; i++) EXPECT_EQ(Stored("all-" + std::to_string(i)).attempt, 0);
}

TEST_F(CommandsTest, PurgeRemovesDeadJobsLeavingNoKeyBehind) {
  DaemonOptions o = Opts(1);
  o.attempts = 0;
  Daemon d(o);
  MakeDeadJobs(d);
  ASSERT_TRUE(WIFEXITED(d.Stop()));
  PutDead("go-1", R"({"job":"ping"})", 5, std::time(nullptr));
  Push("alive-1", R"({"job":"ping"})");  // not dead: left alone

  CmdResult r = Run(d, {"purge", "fail-1", "alive-1", "nope"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("purge alive-1: not in the dead set"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("purge nope: not in the dead set"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("purged 1 of 3"), std::string::npos) << r.out;
  ExpectNoTrace("fail-1");
  EXPECT_FALSE(Gone("alive-1"));

  r = Run(d, {"purge", "-all"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("purged 3 of 3"), std::string::npos) << r.out;
  for (const char* id : {"poison-1", "poison-2", "go-1"}) ExpectNoTrace(id);
  for (const char* key : {"jobs:dead", "jobs:dead:why", "jobs:scheduled"})
    EXPECT_EQ(client_->Int({"EXISTS", key}), 0) << key;
  // Only the live job is left in the queue.
  EXPECT_EQ(client_->Int({"HLEN", "jobs:data"}), 1);
  EXPECT_EQ(client_->List({"LRANGE", "jobs:active", "0", "-1"}), std::vector<std::string>{"alive-1"});
}

TEST_F(CommandsTest, UsageErrorsExitTwoAndRedisDownExitsOne) {
  Daemon d(Opts(1));
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"retry"}, {"purge", "-all", "x"}, {"dead", "-n", "x"},
                                             {"status", "extra"}, {"frobnicate"}, {"queue", "-all"}}) {
    CmdResult r = Run(d, args);
    EXPECT_EQ(r.code, 2) << args[0] << ": " << r.err;
  }
  DaemonOptions o = Opts(1);
  o.redis_addr = "127.0.0.1:1";
  Daemon down(o);
  CmdResult r = Run(down, {"queue"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("127.0.0.1:1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace djinn::testing
