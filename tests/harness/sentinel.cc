#include "tests/harness/sentinel.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>

#include "common/c_handles.h"

namespace djinn::testing {
namespace {

constexpr char kSentinelBinary[] = "/usr/bin/redis-sentinel";

// One command to 127.0.0.1:port; null when the server does not answer
// (starting, killed). Never fails the test itself.
RedisReplyPtr Ask(int port, const std::vector<std::string>& args) {
  timeval tv{0, 500 * 1000};
  RedisContextPtr c(redisConnectWithTimeout("127.0.0.1", port, tv));
  if (!c || c->err || redisSetTimeout(c.get(), tv) != REDIS_OK) return nullptr;
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  return RedisReplyPtr(static_cast<redisReply*>(
      redisCommandArgv(c.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
}

std::string Str(const redisReply* r) {
  if (r == nullptr) return "";
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR)
    return std::string(r->str, r->len);
  return "";
}

// A field of a flat key/value array reply (SENTINEL MASTER).
std::string Field(const redisReply* r, const std::string& key) {
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY) return "";
  for (size_t i = 0; i + 1 < r->elements; i += 2)
    if (Str(r->element[i]) == key) return Str(r->element[i + 1]);
  return "";
}

}  // namespace

SentinelCluster::SentinelCluster(std::string master_name)
    : name_(std::move(master_name)), dir_("djinn-sentinel") {
  for (int i = 0; i < 2; i++) server_ports_.push_back(FreePort());
  for (int i = 0; i < 3; i++) sentinel_ports_.push_back(FreePort());
}

SentinelCluster::~SentinelCluster() {
  // Sentinels first: they would otherwise start failovers of what stops.
  for (Process& p : sentinels_) p.Stop(std::chrono::milliseconds(0));
  for (Process& p : servers_) p.Stop(std::chrono::milliseconds(0));
}

std::vector<std::string> SentinelCluster::sentinel_addrs() const {
  std::vector<std::string> v;
  for (int p : sentinel_ports_) v.push_back("127.0.0.1:" + std::to_string(p));
  return v;
}

std::string SentinelCluster::SentinelConfig(size_t i) const {
  std::string c;
  c += "port " + std::to_string(sentinel_ports_.at(i)) + "\n";
  c += "bind 127.0.0.1\n";
  c += "daemonize no\n";
  c += "dir " + dir_.path() + "\n";
  c += "sentinel monitor " + name_ + " 127.0.0.1 " + std::to_string(server_ports_[0]) + " 2\n";
  c += "sentinel down-after-milliseconds " + name_ + " 1000\n";
  c += "sentinel failover-timeout " + name_ + " 3000\n";
  c += "sentinel parallel-syncs " + name_ + " 1\n";
  return c;
}

void SentinelCluster::Start() {
  ASSERT_TRUE(FileExists(kSentinelBinary)) << kSentinelBinary
                                           << " missing: install the redis-sentinel package";
  for (size_t i = 0; i < server_ports_.size(); i++) {
    std::string sub = dir_.Sub("server" + std::to_string(i));
    ASSERT_EQ(mkdir(sub.c_str(), 0755), 0) << sub;
    std::vector<std::string> argv = {"redis-server", "--port", std::to_string(server_ports_[i]),
                                     "--bind", "127.0.0.1", "--dir", sub, "--save", "",
                                     "--appendonly", "no", "--daemonize", "no",
                                     // A replica's first sync at once, not after 5 s.
                                     "--repl-diskless-sync-delay", "0"};
    if (i > 0) {
      argv.insert(argv.end(), {"--replicaof", "127.0.0.1", std::to_string(server_ports_[0])});
    }
    Process p;
    ASSERT_TRUE(p.Start(argv, sub + ".log")) << "cannot start redis-server";
    servers_.push_back(std::move(p));
  }
  for (size_t i = 0; i < server_ports_.size(); i++) {
    ASSERT_TRUE(WaitFor([&] { return Str(Ask(server_ports_[i], {"PING"}).get()) == "PONG"; }))
        << "redis-server on port " << server_ports_[i] << " does not answer: "
        << ReadFile(dir_.Sub("server" + std::to_string(i) + ".log"));
  }
  // The replica in sync before the sentinels look: their first INFO of the
  // master then lists it.
  ASSERT_TRUE(WaitFor([&] {
    RedisReplyPtr r = Ask(server_ports_[1], {"ROLE"});
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= 4 &&
           Str(r->element[3]) == "connected";
  })) << "replica never synced: " << ReadFile(dir_.Sub("server1.log"));
  for (size_t i = 0; i < sentinel_ports_.size(); i++) {
    std::string conf = dir_.Sub("sentinel" + std::to_string(i) + ".conf");
    WriteFile(conf, SentinelConfig(i));
    Process p;
    ASSERT_TRUE(p.Start({kSentinelBinary, conf}, dir_.Sub("sentinel" + std::to_string(i) + ".log")))
        << "cannot start redis-sentinel";
    sentinels_.push_back(std::move(p));
  }
  // Hello messages go every 2 s: the sentinels know each other in ~2-4 s.
  for (size_t i = 0; i < sentinel_ports_.size(); i++) {
    ASSERT_TRUE(WaitFor(
        [&] {
          RedisReplyPtr r = Ask(sentinel_ports_[i], {"SENTINEL", "MASTER", name_});
          return Field(r.get(), "num-slaves") == "1" && Field(r.get(), "num-other-sentinels") == "2";
        },
        std::chrono::seconds(20), std::chrono::milliseconds(50)))
        << "sentinel " << i << " never saw the replica and both other sentinels: "
        << ReadFile(dir_.Sub("sentinel" + std::to_string(i) + ".log"));
  }
}

int SentinelCluster::MasterPort() {
  for (int port : sentinel_ports_) {
    RedisReplyPtr r = Ask(port, {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", name_});
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
      return std::atoi(Str(r->element[1]).c_str());
    }
  }
  return 0;
}

std::string SentinelCluster::Failover() {
  RedisReplyPtr r = Ask(sentinel_ports_[0], {"SENTINEL", "FAILOVER", name_});
  return r ? Str(r.get()) : "no reply";
}

void SentinelCluster::KillServer(int port) {
  for (size_t i = 0; i < server_ports_.size(); i++)
    if (server_ports_[i] == port) servers_[i].Stop(std::chrono::milliseconds(0));
}

}  // namespace djinn::testing
