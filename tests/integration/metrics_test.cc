// The master's metrics endpoint (`metrics { listen ... }`) against the real
// daemon and a real redis-server: /metrics counts exactly the jobs that
// ran (ping, failing, poison, a real download against PostgreSQL and the
// test HTTP server), passes `promtool check metrics`, never goes backwards
// when a worker is replaced or the config reloaded; /healthz follows
// Redis and the worker count; the listening socket stays in the master.
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include "common/c_handles.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/http_server.h"
#include "tests/harness/postgres.h"
#include "tests/harness/qcow2_image.h"
#include "tests/harness/queue_fixture.h"

namespace djinn::testing {
namespace {

using std::chrono::seconds;

struct HttpReply {
  long code = 0;  // 0: no answer
  std::string body;
};

size_t Append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

HttpReply Get(int port, const std::string& path) {
  HttpReply r;
  CurlPtr curl(curl_easy_init());
  if (!curl) return r;
  std::string url = "http://127.0.0.1:" + std::to_string(port) + path;
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(curl.get(), CURLOPT_NOPROXY, "*");
  if (curl_easy_perform(curl.get()) != CURLE_OK) return HttpReply{};
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &r.code);
  return r;
}

// "name{labels}" -> value, for every sample line.
std::map<std::string, double> Samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

double Value(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? -1 : it->second;
}

std::string MetricsBlock(int port) {
  return "metrics = { listen = \"127.0.0.1:" + std::to_string(port) + "\"; };\n";
}

// `promtool check metrics` reads the text on stdin.
int Promtool(const std::string& text, const std::string& dir, std::string* out) {
  std::string file = dir + "/scrape.txt";
  WriteFile(file, text);
  return RunCommand({"/bin/sh", "-c", "promtool check metrics < " + file}, out);
}

class MetricsTest : public QueueFixture {};

TEST_F(MetricsTest, HealthzFollowsRedis) {
  int port = FreePort();
  DaemonOptions o = Opts(2);
  o.extra = MetricsBlock(port);
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Get(port, "/healthz").code == 200; }, seconds(10))) << d.Log();
  EXPECT_EQ(Get(port, "/healthz").body, "ok\n");
  redis_->Stop();
  HttpReply r;
  ASSERT_TRUE(WaitFor([&] { r = Get(port, "/healthz"); return r.code == 503; }, seconds(10)))
      << r.code << " " << r.body << d.Log();
  EXPECT_EQ(r.body.rfind("redis unavailable", 0), 0u) << r.body;
  EXPECT_EQ(std::count(r.body.begin(), r.body.end(), '\n'), 1) << r.body;
  auto m = Samples(Get(port, "/metrics").body);
  EXPECT_EQ(Value(m, "djinn_consumer_dependency_up{dependency=\"redis\"}"), 0);
  redis_->Start();
  ASSERT_TRUE(WaitFor([&] { return Get(port, "/healthz").code == 200; }, seconds(15))) << d.Log();
  m = Samples(Get(port, "/metrics").body);
  EXPECT_EQ(Value(m, "djinn_consumer_dependency_up{dependency=\"redis\"}"), 1);
}

// A worker killed young is respawned after a 1 s throttle: meanwhile the
// master does not supervise its full count.
TEST_F(MetricsTest, HealthzIs503WhileAWorkerIsMissing) {
  int port = FreePort();
  DaemonOptions o = Opts(2);
  o.extra = MetricsBlock(port);
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Get(port, "/healthz").code == 200; }, seconds(10))) << d.Log();
  std::vector<pid_t> workers = ChildrenOf(d.pid());
  ASSERT_EQ(workers.size(), 2u);
  ASSERT_EQ(kill(workers[0], SIGKILL), 0);
  HttpReply r;
  ASSERT_TRUE(WaitFor([&] { r = Get(port, "/healthz"); return r.code == 503; }, seconds(5),
                      std::chrono::milliseconds(5)))
      << d.Log();
  EXPECT_EQ(r.body, "1 of 2 workers running\n");
  ASSERT_TRUE(WaitFor([&] { return Get(port, "/healthz").code == 200; }, seconds(15))) << d.Log();
  auto m = Samples(Get(port, "/metrics").body);
  EXPECT_EQ(Value(m, "djinn_consumer_worker_restarts_total{reason=\"sigkill\"}"), 1);
}

// The listening socket is the master's alone: close-on-exec, and no worker
// holds it (they close what they inherit).
TEST_F(MetricsTest, ListeningSocketStaysInTheMaster) {
  int port = FreePort();
  DaemonOptions o = Opts(2);
  o.extra = MetricsBlock(port);
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  ASSERT_EQ(Get(port, "/metrics").code, 200);
  namespace fs = std::filesystem;
  auto sockets = [](pid_t pid) {
    std::map<std::string, std::string> out;  // socket:[inode] -> fd
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      std::string target = fs::read_symlink(e.path(), ec).string();
      if (!ec && target.rfind("socket:", 0) == 0) out[target] = e.path().filename().string();
    }
    return out;
  };
  // The master's listening socket: the one in /proc/net/tcp on our port
  // in state LISTEN (0A).
  char hexport[8];
  snprintf(hexport, sizeof hexport, ":%04X", port);
  std::string inode;
  std::istringstream tcp(ReadFile("/proc/net/tcp"));
  std::string line;
  while (std::getline(tcp, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, st, q, tr, retr, uid, timeout, ino;
    f >> sl >> local >> remote >> st >> q >> tr >> retr >> uid >> timeout >> ino;
    if (local.size() > 5 && local.substr(local.size() - 5) == hexport && st == "0A") inode = ino;
  }
  ASSERT_FALSE(inode.empty());
  auto master = sockets(d.pid());
  std::string key = "socket:[" + inode + "]";
  ASSERT_TRUE(master.count(key)) << key;
  std::string fdinfo = ReadFile("/proc/" + std::to_string(d.pid()) + "/fdinfo/" + master[key]);
  size_t at = fdinfo.find("flags:");
  ASSERT_NE(at, std::string::npos);
  unsigned long flags = std::stoul(fdinfo.substr(at + 6), nullptr, 8);
  EXPECT_TRUE(flags & 02000000) << "listening socket without O_CLOEXEC: " << fdinfo;
  for (pid_t w : ChildrenOf(d.pid())) EXPECT_EQ(sockets(w).count(key), 0u) << "worker " << w;
}

// Everything counted, against a real PostgreSQL and image server.
class MetricsJobsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    env_ = new Env();
    Env& e = *env_;
    std::string files = e.dir.Sub("files");
    std::filesystem::create_directories(files);
    std::mt19937_64 rng(3);
    std::string raw(200 * 1024, '\0');
    for (auto& c : raw) c = static_cast<char>(rng());
    e.image = WithQcow2Header(raw);
    WriteFile(files + "/img.qcow2", e.image);
    e.redis.Start();
    if (auto r = e.pg.Start(); !r) e.error = r.message();
    else if (auto s = e.pg.CreateDjinnSchema(); !s) e.error = s.message();
    else if (auto h = e.http.Start(files); !h) e.error = h.message();
  }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }
  struct Env {
    TempDir dir{"djinn-metrics"};
    RedisServer redis;
    PostgresServer pg;
    HttpServer http;
    std::string image;
    std::string error;
  };
  static inline Env* env_ = nullptr;
};

TEST_F(MetricsJobsTest, CountersMatchTheJobsRunAndPassPromtool) {
  ASSERT_NE(env_, nullptr);
  ASSERT_EQ(env_->error, "");
  Env& e = *env_;
  int port = FreePort();
  DaemonOptions o;
  o.workers = 2;
  o.redis_addr = e.redis.addr();
  o.database_addr = e.pg.addr();
  o.database_password = e.pg.consumer_password();
  o.attempts = 1;  // a failing job: one retry, then dead
  o.extra = MetricsBlock(port);
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
  RedisClient client(e.redis.port());
  client.Cmd({"FLUSHALL"});

  constexpr int kPings = 25, kFails = 2;
  for (int i = 0; i < kPings; i++)
    client.PushLikeCurlyqV040("jobs", "ping-" + std::to_string(i),
                              JsonJobEnvelope("ping-" + std::to_string(i), R"({"job":"ping"})"));
  for (int i = 0; i < kFails; i++)
    client.PushLikeCurlyqV040("jobs", "fail-" + std::to_string(i),
                              JsonJobEnvelope("fail-" + std::to_string(i), R"({"job":"fail"})"));
  client.PushLikeCurlyq("jobs", "p-envelope", "\xc1\x01\x02not msgpack");
  client.PushLikeCurlyqV040("jobs", "p-unknown", JsonJobEnvelope("p-unknown", R"({"job":"make_coffee"})"));
  client.PushLikeCurlyqV040("jobs", "p-missing",
                            JsonJobEnvelope("p-missing", R"({"job":"download_job","image_id":3})"));
  int image = e.pg.AddImage(7, "qemu", "metrics-img");
  int download = e.pg.AddDownload(image, e.http.url("files/img.qcow2"));
  std::string dl = "{\"job\":\"download_job\",\"id\":" + std::to_string(download) +
                   ",\"image_id\":" + std::to_string(image) + ",\"source\":\"" +
                   e.http.url("files/img.qcow2") + "\"}";
  client.PushLikeCurlyqV040("jobs", "dl-1", JsonJobEnvelope("dl-1", dl));

  auto settled = [&] {
    return client.Int({"HLEN", "jobs:data"}) == kFails + 3 &&
           client.Int({"ZCARD", "jobs:dead"}) == kFails + 3;
  };
  ASSERT_TRUE(WaitFor(settled, seconds(30))) << d.Log();

  std::map<std::string, double> m;
  // The queue sample may be up to a second old.
  ASSERT_TRUE(WaitFor([&] {
    m = Samples(Get(port, "/metrics").body);
    return Value(m, "djinn_consumer_queue_jobs{queue=\"jobs\",state=\"dead\"}") == kFails + 3;
  }, seconds(5)));
  HttpReply r = Get(port, "/metrics");
  ASSERT_EQ(r.code, 200);
  m = Samples(r.body);
  auto jobs = [&](const std::string& job, const std::string& outcome) {
    return Value(m, "djinn_consumer_jobs_total{job=\"" + job + "\",outcome=\"" + outcome + "\"}");
  };
  EXPECT_EQ(jobs("ping", "ok"), kPings) << r.body;
  EXPECT_EQ(jobs("ping", "retried"), 0);
  EXPECT_EQ(jobs("fail", "retried"), kFails);
  EXPECT_EQ(jobs("fail", "dead"), kFails);
  EXPECT_EQ(jobs("fail", "ok"), 0);
  EXPECT_EQ(jobs("unknown", "poison"), 3);
  EXPECT_EQ(jobs("download_job", "ok"), 1) << d.Log();
  EXPECT_EQ(r.body.find("make_coffee"), std::string::npos) << "untrusted job name as a label";
  EXPECT_EQ(Value(m, "djinn_consumer_job_duration_seconds_count{job=\"ping\"}"), kPings);
  EXPECT_EQ(Value(m, "djinn_consumer_job_duration_seconds_bucket{job=\"ping\",le=\"+Inf\"}"), kPings);
  EXPECT_EQ(Value(m, "djinn_consumer_job_duration_seconds_count{job=\"fail\"}"), 2 * kFails);
  EXPECT_EQ(Value(m, "djinn_consumer_downloaded_bytes_total"), static_cast<double>(e.image.size()));
  EXPECT_EQ(Value(m, "djinn_consumer_queue_jobs{queue=\"jobs\",state=\"active\"}"), 0);
  EXPECT_EQ(Value(m, "djinn_consumer_workers{kind=\"download\",state=\"idle\"}") +
                Value(m, "djinn_consumer_workers{kind=\"download\",state=\"busy\"}"),
            2);
  EXPECT_EQ(Value(m, "djinn_consumer_dependency_up{dependency=\"redis\"}"), 1);
  EXPECT_EQ(Value(m, "djinn_consumer_dependency_up{dependency=\"postgresql\"}"), 1);
  EXPECT_EQ(Value(m, "djinn_consumer_config_generation"), 1);
  EXPECT_EQ(Value(m, "djinn_consumer_build_info{version=\"0.1.0\"}"), 1);
  std::string out;
  EXPECT_EQ(Promtool(r.body, d.dir(), &out), 0) << out << "\n" << r.body;
  // Every family served is in djinn-consumer(8) METRICS.
  std::string page = ReadFile("man/djinn-consumer.8");
  size_t from = page.find(".SH METRICS"), to = page.find(".SH SIGNALS");
  ASSERT_TRUE(from != std::string::npos && to != std::string::npos) << "run from the repository root";
  std::string section = page.substr(from, to - from);
  std::istringstream lines(r.body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("# TYPE djinn_consumer_", 0) != 0) continue;
    std::string name = line.substr(22, line.find(' ', 22) - 22);
    EXPECT_NE(section.find(".B " + name) == std::string::npos &&
                  section.find(".BR " + name + " ") == std::string::npos,
              true)
        << name << " is not documented in djinn-consumer(8) METRICS";
  }

  // A worker replaced and a reload: no counter goes backwards.
  std::vector<pid_t> workers = ChildrenOf(d.pid());
  ASSERT_EQ(workers.size(), 2u);
  ASSERT_EQ(kill(workers[0], SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] {
    m = Samples(Get(port, "/metrics").body);
    return Value(m, "djinn_consumer_worker_restarts_total{reason=\"sigkill\"}") == 1;
  }, seconds(10))) << d.Log();
  EXPECT_EQ(jobs("ping", "ok"), kPings);
  ASSERT_TRUE(d.Signal(SIGHUP));
  ASSERT_TRUE(WaitFor([&] {
    m = Samples(Get(port, "/metrics").body);
    return Value(m, "djinn_consumer_config_generation") == 2 &&
           Value(m, "djinn_consumer_workers{kind=\"download\",state=\"idle\"}") == 2 &&
           Value(m, "djinn_consumer_workers{kind=\"download\",state=\"retiring\"}") == 0;
  }, seconds(20))) << d.Log();
  EXPECT_EQ(jobs("ping", "ok"), kPings);
  EXPECT_EQ(jobs("fail", "dead"), kFails);
  EXPECT_EQ(jobs("unknown", "poison"), 3);
  EXPECT_EQ(jobs("download_job", "ok"), 1);
  EXPECT_EQ(Value(m, "djinn_consumer_downloaded_bytes_total"), static_cast<double>(e.image.size()));
  EXPECT_EQ(Value(m, "djinn_consumer_worker_restarts_total{reason=\"sigkill\"}"), 1);
  EXPECT_EQ(Value(m, "djinn_consumer_dependency_up{dependency=\"postgresql\"}"), 1);
  client.PushLikeCurlyqV040("jobs", "ping-after", JsonJobEnvelope("ping-after", R"({"job":"ping"})"));
  ASSERT_TRUE(WaitFor([&] {
    m = Samples(Get(port, "/metrics").body);
    return jobs("ping", "ok") == kPings + 1;
  }, seconds(10))) << d.Log();
  EXPECT_EQ(Get(port, "/nothing").code, 404);
}

}  // namespace
}  // namespace djinn::testing
