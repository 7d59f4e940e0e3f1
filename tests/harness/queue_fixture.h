// A test fixture for suites that drive the daemon through one Redis queue:
// a redis-server shared by the suite (flushed before each test), a client,
// and the queue's questions every such test asks (gone? dead? scheduled?
// what envelope?), for the queue "jobs" unless told otherwise.
#ifndef DJINN_TESTS_HARNESS_QUEUE_FIXTURE_H_
#define DJINN_TESTS_HARNESS_QUEUE_FIXTURE_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/envelope.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/redis_client.h"

namespace djinn::testing {

class QueueFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = new RedisServer();
    redis_->Start();
  }
  static void TearDownTestSuite() {
    delete redis_;
    redis_ = nullptr;
  }
  void SetUp() override {
    if (!redis_->Ping()) redis_->Start();  // a test may have stopped it
    Reconnect();
    client_->Cmd({"FLUSHALL"});
  }
  // After the server restarted.
  void Reconnect() { client_ = std::make_unique<RedisClient>(redis_->port()); }

  static DaemonOptions Opts(int workers = 1) {
    DaemonOptions o;
    o.workers = workers;
    o.redis_addr = redis_->addr();
    return o;
  }
  // As the Djinn server's curlyq v0.4.0 pushes: HSETNX + RPUSH.
  void Push(const std::string& id, const std::string& json, int64_t attempt = 0,
            const std::string& queue = "jobs") {
    client_->PushLikeCurlyqV040(queue, id, JsonJobEnvelope(id, json, attempt));
  }
  bool Gone(const std::string& id, const std::string& queue = "jobs") {
    return client_->Int({"HEXISTS", queue + ":data", id}) == 0;
  }
  bool Dead(const std::string& id) { return client_->Str({"ZSCORE", "jobs:dead", id}) != ""; }
  bool Scheduled(const std::string& id) {
    return client_->Str({"ZSCORE", "jobs:scheduled", id}) != "";
  }
  Envelope Stored(const std::string& id) {
    auto env = DecodeEnvelope(client_->Str({"HGET", "jobs:data", id}));
    EXPECT_TRUE(env.ok()) << env.status().message();
    return env.ok() ? *env : Envelope{};
  }
  // Clients blocked in a wait (idle workers), -1 when unknown.
  int64_t Blocked() {
    std::string info = client_->Str({"INFO", "clients"});
    size_t at = info.find("blocked_clients:");
    return at == std::string::npos ? -1 : std::stoll(info.substr(at + 16));
  }
  // Nothing left in any key of the queue but the consumer bookkeeping.
  void ExpectQueueEmpty() {
    EXPECT_EQ(client_->Int({"LLEN", "jobs:active"}), 0);
    EXPECT_EQ(client_->Int({"HLEN", "jobs:data"}), 0);
    EXPECT_EQ(client_->Int({"ZCARD", "jobs:scheduled"}), 0);
    EXPECT_EQ(client_->Int({"ZCARD", "jobs:dead"}), 0);
    for (const auto& key : client_->List({"KEYS", "jobs:inflight:*"}))
      EXPECT_EQ(client_->Int({"SCARD", key}), 0) << key;
  }

  static inline RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisClient> client_;
};

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_QUEUE_FIXTURE_H_
