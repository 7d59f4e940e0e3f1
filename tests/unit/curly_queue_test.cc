// CurlyQueue and RedisConn against a real redis-server (tests/harness).
// Key layout and script semantics are checked with raw hiredis commands,
// so what a Go curlyq producer or consumer would see is what is asserted.
#include "common/curly_queue.h"

#include <signal.h>
#include <time.h>

#include <chrono>
#include <cctype>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "common/redis.h"
#include "tests/harness/harness.h"

namespace djinn {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// clock_gettime, as the queue reads it: glibc's time() reads the coarse
// clock, which can lag a tick behind and made a fresh score look "future".
int64_t Now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec);
}

Envelope Env(const std::string& id, const std::string& data, int64_t attempt = 0) {
  Envelope e;
  e.id = id;
  e.data = data;
  e.attempt = attempt;
  return e;
}

// Raw commands for setting up and inspecting Redis state behind the queue's
// back, the way another (Go) client would.
class Raw {
 public:
  explicit Raw(int port) {
    timeval tv{2, 0};
    ctx_.reset(redisConnectWithTimeout("127.0.0.1", port, tv));
  }
  RedisReplyPtr Cmd(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return RedisReplyPtr(static_cast<redisReply*>(
        redisCommandArgv(ctx_.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
  }
  std::string Str(const std::vector<std::string>& args) {
    auto r = Cmd(args);
    if (!r || r->type != REDIS_REPLY_STRING) return "<nil>";
    return std::string(r->str, r->len);
  }
  long long Int(const std::vector<std::string>& args) {
    auto r = Cmd(args);
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
  }
  std::vector<std::string> List(const std::vector<std::string>& args) {
    std::vector<std::string> out;
    auto r = Cmd(args);
    if (!r || r->type != REDIS_REPLY_ARRAY) return out;
    for (size_t i = 0; i < r->elements; ++i) {
      out.emplace_back(r->element[i]->str ? r->element[i]->str : "", r->element[i]->len);
    }
    return out;
  }
  bool ok() const { return ctx_ && !ctx_->err; }

 private:
  RedisContextPtr ctx_;
};

class CurlyQueueTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    signal(SIGPIPE, SIG_IGN);  // as the daemon does: see common/redis.h
    server_ = new testing::RedisServer();
    server_->Start();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    raw_ = std::make_unique<Raw>(server_->port());
    ASSERT_TRUE(raw_->ok());
    raw_->Cmd({"FLUSHALL"});
    queue_ = std::make_unique<CurlyQueue>("jobs", Options());
    consumer_ = NewConsumerKey("jobs");
  }
  static RedisOptions Options() {
    RedisOptions o;
    o.addr = server_->addr();
    o.backoff_min = milliseconds(10);
    o.backoff_max = milliseconds(100);
    return o;
  }
  std::optional<RawJob> Take(const std::string& ack = "") {
    auto r = queue_->AckAndTake(consumer_, ack, 0);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::nullopt;
  }
  // Registers, pushes one job and takes it.
  RawJob PushAndTake(const Envelope& env) {
    EXPECT_TRUE(queue_->Register(consumer_).ok());
    EXPECT_TRUE(queue_->Push(env).ok());
    auto job = Take();
    EXPECT_TRUE(job.has_value());
    return job.value_or(RawJob{});
  }

  static testing::RedisServer* server_;
  std::unique_ptr<Raw> raw_;
  std::unique_ptr<CurlyQueue> queue_;
  std::string consumer_;
};

testing::RedisServer* CurlyQueueTest::server_ = nullptr;

TEST_F(CurlyQueueTest, PushWritesCurlyqKeys) {
  ASSERT_TRUE(queue_->Push(Env("a", "payload")).ok());
  EXPECT_EQ(raw_->List({"LRANGE", "jobs:active", "0", "-1"}), std::vector<std::string>{"a"});
  EXPECT_EQ(raw_->Str({"HGET", "jobs:data", "a"}), EncodeEnvelope(Env("a", "payload")));
  EXPECT_EQ(raw_->List({"LRANGE", "jobs:signal", "0", "-1"}), std::vector<std::string>{"1"});
}

TEST_F(CurlyQueueTest, PushOfExistingIdIsIgnored) {
  ASSERT_TRUE(queue_->Push(Env("a", "first")).ok());
  ASSERT_TRUE(queue_->Push(Env("a", "second")).ok());
  EXPECT_EQ(raw_->Int({"LLEN", "jobs:active"}), 1);
  EXPECT_EQ(raw_->Str({"HGET", "jobs:data", "a"}), EncodeEnvelope(Env("a", "first")));
}

TEST_F(CurlyQueueTest, PushThenTakeReturnsJobsInFifoOrder) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  for (const char* id : {"j1", "j2", "j3"}) ASSERT_TRUE(queue_->Push(Env(id, id)).ok());
  for (const char* id : {"j1", "j2", "j3"}) {
    auto job = Take();
    ASSERT_TRUE(job.has_value());
    EXPECT_EQ(job->id, id);
    EXPECT_EQ(job->envelope, EncodeEnvelope(Env(id, id)));
  }
  EXPECT_FALSE(Take().has_value());
}

TEST_F(CurlyQueueTest, TakenJobIsInTheConsumersInflightSet) {
  PushAndTake(Env("a", "x"));
  EXPECT_EQ(raw_->List({"SMEMBERS", consumer_}), std::vector<std::string>{"a"});
  EXPECT_EQ(raw_->Int({"LLEN", "jobs:active"}), 0);
}

TEST_F(CurlyQueueTest, TakeFromEmptyQueueClearsSignal) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  raw_->Cmd({"LPUSH", "jobs:signal", "1"});
  EXPECT_FALSE(Take().has_value());
  EXPECT_EQ(raw_->Int({"EXISTS", "jobs:signal"}), 0);
}

TEST_F(CurlyQueueTest, AckRemovesDataAndInflightEntry) {
  PushAndTake(Env("a", "x"));
  ASSERT_TRUE(queue_->Ack(consumer_, "a").ok());
  EXPECT_EQ(raw_->Int({"HEXISTS", "jobs:data", "a"}), 0);
  EXPECT_EQ(raw_->Int({"SCARD", consumer_}), 0);
}

TEST_F(CurlyQueueTest, AckOfJobNotInflightLeavesItsData) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  ASSERT_TRUE(queue_->Push(Env("a", "x")).ok());
  ASSERT_TRUE(queue_->Ack(consumer_, "a").ok());
  EXPECT_EQ(raw_->Int({"HEXISTS", "jobs:data", "a"}), 1);
}

TEST_F(CurlyQueueTest, AckAndTakeAcksPreviousJobAndTakesNext) {
  PushAndTake(Env("a", "x"));
  ASSERT_TRUE(queue_->Push(Env("b", "y")).ok());
  auto job = Take("a");
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->id, "b");
  EXPECT_EQ(raw_->Int({"HEXISTS", "jobs:data", "a"}), 0);
  EXPECT_EQ(raw_->List({"SMEMBERS", consumer_}), std::vector<std::string>{"b"});
}

TEST_F(CurlyQueueTest, RetrySchedulesNewEnvelopeAtNowPlusBackoff) {
  PushAndTake(Env("a", "payload", 2));
  double delay = RetryBackoffSeconds(2);
  int64_t before = Now();
  ASSERT_TRUE(queue_->Retry(consumer_, Env("a", "payload", 3), delay).ok());
  int64_t after = Now();

  auto score = raw_->Str({"ZSCORE", "jobs:scheduled", "a"});
  ASSERT_NE(score, "<nil>");
  double s = std::stod(score);
  EXPECT_GE(s, static_cast<double>(before) + std::floor(delay));
  EXPECT_LE(s, static_cast<double>(after) + std::ceil(delay));
  auto env = DecodeEnvelope(raw_->Str({"HGET", "jobs:data", "a"}));
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->attempt, 3);
  EXPECT_EQ(env->data, "payload");
  EXPECT_EQ(env->id, "a");
  EXPECT_EQ(raw_->Int({"SCARD", consumer_}), 0);
}

TEST_F(CurlyQueueTest, RetryBackoffFollowsCurlyqFormula) {
  for (int64_t attempt : {0, 1, 4, 10}) {
    double base = std::ldexp(1.0, static_cast<int>(attempt));
    for (int i = 0; i < 50; ++i) {
      double d = RetryBackoffSeconds(attempt);
      EXPECT_GE(d, base / 2) << "attempt " << attempt;
      EXPECT_LT(d, base) << "attempt " << attempt;
    }
  }
  EXPECT_EQ(RetryBackoffSeconds(40), kCurlyMaxBackoffSeconds);
  EXPECT_EQ(RetryBackoffSeconds(1000000), 7 * 24 * 3600.0);
}

TEST_F(CurlyQueueTest, KillMovesToDeadWithNewEnvelope) {
  PushAndTake(Env("a", "payload", 4));
  int64_t before = Now();
  ASSERT_TRUE(queue_->Kill(consumer_, Env("a", "payload", 5), "").ok());
  auto score = raw_->Str({"ZSCORE", "jobs:dead", "a"});
  ASSERT_NE(score, "<nil>");
  EXPECT_GE(std::stoll(score), before);
  EXPECT_LE(std::stoll(score), Now());
  auto env = DecodeEnvelope(raw_->Str({"HGET", "jobs:data", "a"}));
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->attempt, 5);
  EXPECT_EQ(env->data, "payload");
  EXPECT_EQ(raw_->Int({"SCARD", consumer_}), 0);
}

TEST_F(CurlyQueueTest, KillRawKeepsOriginalBytes) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  raw_->Cmd({"HSET", "jobs:data", "bad", "\xc1garbage"});
  raw_->Cmd({"RPUSH", "jobs:active", "bad"});
  auto job = Take();
  ASSERT_TRUE(job.has_value());
  ASSERT_TRUE(queue_->KillRaw(consumer_, job->id, "").ok());
  EXPECT_NE(raw_->Str({"ZSCORE", "jobs:dead", "bad"}), "<nil>");
  EXPECT_EQ(raw_->Str({"HGET", "jobs:data", "bad"}), "\xc1garbage");
  EXPECT_EQ(raw_->Int({"SCARD", consumer_}), 0);
}

TEST_F(CurlyQueueTest, TakeOfJobWithoutDataReturnsEmptyEnvelope) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  raw_->Cmd({"RPUSH", "jobs:active", "ghost"});
  auto job = Take();
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->id, "ghost");
  EXPECT_EQ(job->envelope, "");
}

TEST_F(CurlyQueueTest, EnqueueDueScheduledMovesOnlyDueJobs) {
  raw_->Cmd({"ZADD", "jobs:scheduled", std::to_string(Now() - 10), "due"});
  raw_->Cmd({"ZADD", "jobs:scheduled", std::to_string(Now() + 1000), "later"});
  auto moved = queue_->EnqueueDueScheduled(50);
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(*moved, 1);
  EXPECT_EQ(raw_->List({"LRANGE", "jobs:active", "0", "-1"}), std::vector<std::string>{"due"});
  EXPECT_EQ(raw_->List({"ZRANGE", "jobs:scheduled", "0", "-1"}),
            std::vector<std::string>{"later"});
  EXPECT_EQ(raw_->Int({"EXISTS", "jobs:signal"}), 1);
}

TEST_F(CurlyQueueTest, EnqueueDueScheduledHonoursMax) {
  for (int i = 0; i < 5; ++i) {
    raw_->Cmd({"ZADD", "jobs:scheduled", std::to_string(Now() - 10 + i), "j" + std::to_string(i)});
  }
  auto moved = queue_->EnqueueDueScheduled(2);
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(*moved, 2);
  EXPECT_EQ(raw_->List({"LRANGE", "jobs:active", "0", "-1"}),
            (std::vector<std::string>{"j0", "j1"}));
  EXPECT_EQ(raw_->Int({"ZCARD", "jobs:scheduled"}), 3);
}

TEST_F(CurlyQueueTest, UnregisteredConsumerIsRefused) {
  ASSERT_TRUE(queue_->Push(Env("a", "x")).ok());
  auto r = queue_->AckAndTake(consumer_, "", 0);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().transient());
  EXPECT_NE(r.status().message().find("consumer not registered"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(raw_->Int({"LLEN", "jobs:active"}), 1);
}

TEST_F(CurlyQueueTest, RegisterAndHeartbeatWriteNowToConsumers) {
  std::string other = NewConsumerKey("jobs");
  int64_t before = Now();
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  raw_->Cmd({"ZADD", "jobs:consumers", "5", other});
  ASSERT_TRUE(queue_->Heartbeat({consumer_, other}).ok());
  for (const auto& key : {consumer_, other}) {
    int64_t score = std::stoll(raw_->Str({"ZSCORE", "jobs:consumers", key}));
    EXPECT_GE(score, before);
    EXPECT_LE(score, Now());
  }
}

TEST_F(CurlyQueueTest, RequeueOrphansRequeuesOnlyExpiredConsumers) {
  std::string dead = NewConsumerKey("jobs");
  std::string alive = NewConsumerKey("jobs");
  ASSERT_TRUE(queue_->Register(dead).ok());
  ASSERT_TRUE(queue_->Register(alive).ok());
  ASSERT_TRUE(queue_->Push(Env("a", "x")).ok());
  ASSERT_TRUE(queue_->Push(Env("b", "y")).ok());
  ASSERT_TRUE(queue_->AckAndTake(dead, "", 0).ok());
  ASSERT_TRUE(queue_->AckAndTake(alive, "", 0).ok());
  raw_->Cmd({"ZADD", "jobs:consumers", std::to_string(Now() - kCurlyOrphanTimeoutSeconds - 5),
             dead});

  auto n = queue_->RequeueOrphans(kCurlyOrphanTimeoutSeconds, kCurlyCustodianMaxJobs);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(raw_->List({"LRANGE", "jobs:active", "0", "-1"}), std::vector<std::string>{"a"});
  EXPECT_EQ(raw_->Str({"ZSCORE", "jobs:consumers", dead}), "<nil>");
  EXPECT_EQ(raw_->Int({"EXISTS", dead}), 0);
  EXPECT_NE(raw_->Str({"ZSCORE", "jobs:consumers", alive}), "<nil>");
  EXPECT_EQ(raw_->List({"SMEMBERS", alive}), std::vector<std::string>{"b"});
}

TEST_F(CurlyQueueTest, FailInflightIncrementsAttemptAndRequeuesAtTail) {
  PushAndTake(Env("a", "payload", 1));
  ASSERT_TRUE(queue_->Push(Env("b", "other")).ok());
  auto r = queue_->FailInflight(consumer_, 5, true, "");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].id, "a");
  EXPECT_EQ((*r)[0].attempt, 2);
  EXPECT_FALSE((*r)[0].dead);
  EXPECT_EQ(raw_->List({"LRANGE", "jobs:active", "0", "-1"}),
            (std::vector<std::string>{"b", "a"}));
  auto env = DecodeEnvelope(raw_->Str({"HGET", "jobs:data", "a"}));
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->attempt, 2);
  EXPECT_EQ(env->data, "payload");
  EXPECT_EQ(raw_->Str({"ZSCORE", "jobs:consumers", consumer_}), "<nil>");
  EXPECT_EQ(raw_->Int({"EXISTS", consumer_}), 0);
}

TEST_F(CurlyQueueTest, FailInflightRequeuesTheLastRetry) {
  // curlyq v0.4.0 retries while Attempt < JobMaxAttempts: taken at 4 of 5,
  // the job still has its fifth retry.
  PushAndTake(Env("a", "payload", 4));
  auto r = queue_->FailInflight(consumer_, 5, true, "");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_FALSE((*r)[0].dead);
  EXPECT_EQ((*r)[0].attempt, 5);
  EXPECT_EQ(raw_->List({"LRANGE", "jobs:active", "0", "-1"}), std::vector<std::string>{"a"});
}

TEST_F(CurlyQueueTest, FailInflightDeadLettersWhenRetriesAreUsedUp) {
  PushAndTake(Env("a", "payload", 5));
  auto r = queue_->FailInflight(consumer_, 5, true, "");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_TRUE((*r)[0].dead);
  EXPECT_EQ((*r)[0].attempt, 6);
  EXPECT_NE(raw_->Str({"ZSCORE", "jobs:dead", "a"}), "<nil>");
  EXPECT_EQ(raw_->Int({"LLEN", "jobs:active"}), 0);
  auto env = DecodeEnvelope(raw_->Str({"HGET", "jobs:data", "a"}));
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->attempt, 6);
}

TEST_F(CurlyQueueTest, FailInflightSaturatesAttemptAtInt64Max) {
  PushAndTake(Env("a", "payload", INT64_MAX));
  auto r = queue_->FailInflight(consumer_, 5, true, "");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_TRUE((*r)[0].dead);
  EXPECT_EQ((*r)[0].attempt, INT64_MAX);
}

TEST_F(CurlyQueueTest, FailInflightCountsNegativeAttemptAsZero) {
  for (int64_t a : {int64_t{-1}, INT64_MIN}) {
    SCOPED_TRACE(a);
    raw_->Cmd({"FLUSHALL"});
    PushAndTake(Env("a", "payload", a));
    auto r = queue_->FailInflight(consumer_, 5, true, "");
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->size(), 1u);
    EXPECT_FALSE((*r)[0].dead);
    EXPECT_EQ((*r)[0].attempt, 1);
  }
}

TEST_F(CurlyQueueTest, FailInflightWithoutCountingKeepsEnvelope) {
  PushAndTake(Env("a", "payload", 4));
  std::string before = raw_->Str({"HGET", "jobs:data", "a"});
  auto r = queue_->FailInflight(consumer_, 5, false, "");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_FALSE((*r)[0].dead);
  EXPECT_EQ((*r)[0].attempt, 4);
  EXPECT_EQ(raw_->List({"LRANGE", "jobs:active", "0", "-1"}), std::vector<std::string>{"a"});
  EXPECT_EQ(raw_->Str({"HGET", "jobs:data", "a"}), before);
}

TEST_F(CurlyQueueTest, FailInflightSendsUndecodableEnvelopeToDeadUnchanged) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  raw_->Cmd({"HSET", "jobs:data", "bad", "\xc1"});
  raw_->Cmd({"RPUSH", "jobs:active", "bad"});
  ASSERT_TRUE(Take().has_value());
  auto r = queue_->FailInflight(consumer_, 5, true, "");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_TRUE((*r)[0].dead);
  EXPECT_NE(raw_->Str({"ZSCORE", "jobs:dead", "bad"}), "<nil>");
  EXPECT_EQ(raw_->Str({"HGET", "jobs:data", "bad"}), "\xc1");
}

TEST_F(CurlyQueueTest, UnregisterForgetsIdleConsumer) {
  PushAndTake(Env("a", "x"));
  EXPECT_FALSE(queue_->Unregister(consumer_).ok());  // still holds "a"
  EXPECT_NE(raw_->Str({"ZSCORE", "jobs:consumers", consumer_}), "<nil>");
  ASSERT_TRUE(queue_->Ack(consumer_, "a").ok());
  ASSERT_TRUE(queue_->Unregister(consumer_).ok());
  EXPECT_EQ(raw_->Str({"ZSCORE", "jobs:consumers", consumer_}), "<nil>");
}

// A job exactly as curlyq's Go producer (push_job.lua) writes it, with the
// envelope bytes vmihailenco/msgpack writes for Job{ID, Data, Attempt}.
TEST_F(CurlyQueueTest, JobPushedLikeCurlyqGoProducerIsTaken) {
  std::string id = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
  std::string data = "{\"job\":\"ping\"}";
  std::string env = "\x83\xa2ID\xd9";  // str8: the ID is 36 bytes
  env += static_cast<char>(id.size());
  env += id;
  env += "\xa4" "Data\xc4";
  env += static_cast<char>(data.size());
  env += data;
  env += "\xa7" "Attempt\xd3";
  env += std::string(8, '\0');
  raw_->Cmd({"HSETNX", "jobs:data", id, env});
  raw_->Cmd({"RPUSH", "jobs:active", id});
  raw_->Cmd({"DEL", "jobs:signal"});
  raw_->Cmd({"LPUSH", "jobs:signal", "1"});

  ASSERT_TRUE(queue_->Register(consumer_).ok());
  auto job = Take();
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(job->envelope, env);
  auto decoded = DecodeEnvelope(job->envelope);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->data, data);
  EXPECT_EQ(decoded->attempt, 0);
}

TEST_F(CurlyQueueTest, AckAndTakeWaitsAboutBlockMsWhenEmpty) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  auto start = steady_clock::now();
  auto r = queue_->AckAndTake(consumer_, "", 300);
  auto took = steady_clock::now() - start;
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->has_value());
  EXPECT_GE(took, milliseconds(250));
  EXPECT_LT(took, milliseconds(3000));  // bounded: about block_ms, not forever
}

TEST_F(CurlyQueueTest, AckAndTakeWakesEarlyWhenJobIsPushed) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  Result<std::optional<RawJob>> got = Status::Transient("not run");
  steady_clock::duration took{};
  std::thread consumer([&] {
    CurlyQueue q("jobs", Options());
    auto start = steady_clock::now();
    got = q.AckAndTake(consumer_, "", 10000);
    took = steady_clock::now() - start;
  });
  // Wait until the consumer is blocked in its wait, then push.
  bool blocked = testing::WaitFor([&] {
    auto info = raw_->Str({"INFO", "clients"});
    return info.find("blocked_clients:1") != std::string::npos;
  });
  EXPECT_TRUE(blocked);
  ASSERT_TRUE(queue_->Push(Env("a", "x")).ok());
  consumer.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->id, "a");
  EXPECT_LT(took, milliseconds(5000));
}

// Runs AckAndTake on its own connection in a thread, blocked (as Redis
// sees it) before `push` runs; returns what it took.
std::optional<RawJob> TakeWhileBlocked(const RedisOptions& options, const std::string& consumer,
                                       Raw* raw, const std::function<void()>& push) {
  Result<std::optional<RawJob>> got = Status::Transient("not run");
  std::thread taker([&] {
    CurlyQueue q("jobs", options);
    got = q.AckAndTake(consumer, "", 10000);
  });
  bool blocked = testing::WaitFor([&] {
    return raw->Str({"INFO", "clients"}).find("blocked_clients:1") != std::string::npos;
  });
  EXPECT_TRUE(blocked);
  push();
  taker.join();
  EXPECT_TRUE(got.ok()) << got.status().ToString();
  return got.ok() ? *got : std::nullopt;
}

// curlyq v0.4.0 (the Djinn server's) pushes HSETNX + RPUSH and no signal:
// an idle consumer must wake on Q:active itself.
TEST_F(CurlyQueueTest, IdleTakeWakesOnPushWithoutSignal) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  auto job = TakeWhileBlocked(Options(), consumer_, raw_.get(), [&] {
    raw_->Cmd({"HSETNX", "jobs:data", "a", EncodeEnvelope(Env("a", "x"))});
    raw_->Cmd({"RPUSH", "jobs:active", "a"});
  });
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->id, "a");
  EXPECT_EQ(raw_->Int({"EXISTS", "jobs:signal"}), 0);
}

// The wait does not reorder Q:active: the oldest job is taken first.
TEST_F(CurlyQueueTest, IdleTakeKeepsFifoOrderOfJobsArrivingTogether) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  auto job = TakeWhileBlocked(Options(), consumer_, raw_.get(), [&] {
    for (const char* id : {"a", "b", "c"})
      raw_->Cmd({"HSET", "jobs:data", id, EncodeEnvelope(Env(id, "x"))});
    raw_->Cmd({"RPUSH", "jobs:active", "a", "b", "c"});
  });
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->id, "a");
  EXPECT_EQ(raw_->List({"LRANGE", "jobs:active", "0", "-1"}),
            (std::vector<std::string>{"b", "c"}));
}

// A wait that times out found nothing: no take follows, and the next idle
// call waits first (one command per block_ms while idle).
TEST_F(CurlyQueueTest, IdleWaitThatTimesOutSendsNoTake) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  ASSERT_TRUE(queue_->AckAndTake(consumer_, "", 0).ok());  // scripts loaded
  raw_->Cmd({"CONFIG", "RESETSTAT"});
  for (int i = 0; i < 3; i++) {
    auto r = queue_->AckAndTake(consumer_, "", 100);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->has_value());
  }
  std::string stats = raw_->Str({"INFO", "commandstats"});
  EXPECT_NE(stats.find("cmdstat_blmove:calls=3,"), std::string::npos) << stats;
  EXPECT_EQ(stats.find("cmdstat_evalsha"), std::string::npos) << stats;
  // A job there by the next call is taken at once.
  ASSERT_TRUE(queue_->Push(Env("a", "x")).ok());
  auto r = queue_->AckAndTake(consumer_, "", 10000);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->id, "a");
}

// Redis < 6.2 has no BLMOVE: the wait falls back to BRPOPLPUSH active
// active, as curlyq v0.4.0's consumer does, and still wakes on a push.
TEST(CurlyQueueOldRedisTest, IdleTakeFallsBackToBrpoplpushWithoutBlmove) {
  signal(SIGPIPE, SIG_IGN);
  testing::RedisServer old({"--rename-command", "BLMOVE", ""});
  old.Start();
  RedisOptions o;
  o.addr = old.addr();
  CurlyQueue queue("jobs", o);
  std::string consumer = NewConsumerKey("jobs");
  ASSERT_TRUE(queue.Register(consumer).ok());
  Raw raw(old.port());
  auto job = TakeWhileBlocked(o, consumer, &raw, [&] {
    raw.Cmd({"HSETNX", "jobs:data", "a", EncodeEnvelope(Env("a", "x"))});
    raw.Cmd({"RPUSH", "jobs:active", "a"});
  });
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->id, "a");
}

TEST_F(CurlyQueueTest, ScriptsAreReloadedAfterScriptFlush) {
  PushAndTake(Env("a", "x"));
  raw_->Cmd({"SCRIPT", "FLUSH"});
  ASSERT_TRUE(queue_->Push(Env("b", "y")).ok());
  auto job = Take("a");
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->id, "b");
}

TEST_F(CurlyQueueTest, StatsCountsEachKey) {
  ASSERT_TRUE(queue_->Register(consumer_).ok());
  ASSERT_TRUE(queue_->Push(Env("a", "x")).ok());
  ASSERT_TRUE(queue_->Push(Env("b", "x")).ok());
  raw_->Cmd({"ZADD", "jobs:scheduled", "1", "c"});
  raw_->Cmd({"ZADD", "jobs:dead", "1", "d"});
  auto s = queue_->Stats();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->active, 2);
  EXPECT_EQ(s->scheduled, 1);
  EXPECT_EQ(s->dead, 1);
  EXPECT_EQ(s->data, 2);
  EXPECT_EQ(s->consumers, 1);
}

TEST_F(CurlyQueueTest, MaxmemoryPolicyIsRead) {
  raw_->Cmd({"CONFIG", "SET", "maxmemory-policy", "noeviction"});
  auto p = queue_->MaxmemoryPolicy();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, "noeviction");
}

// "jobs:inflight:xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx", lower-case hex.
bool IsConsumerKeyWithUuidV4(const std::string& key) {
  const std::string prefix = "jobs:inflight:";
  if (key.compare(0, prefix.size(), prefix) != 0) return false;
  std::string u = key.substr(prefix.size());
  if (u.size() != 36) return false;
  for (size_t i = 0; i < u.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (u[i] == '-')) return false;
    if (!dash && !std::isxdigit(static_cast<unsigned char>(u[i]))) return false;
    if (!dash && std::isupper(static_cast<unsigned char>(u[i]))) return false;
  }
  return u[14] == '4' && std::string("89ab").find(u[19]) != std::string::npos;
}

TEST(NewConsumerKeyTest, IsQueueInflightAndUuidV4) {
  std::string a = NewConsumerKey("jobs"), b = NewConsumerKey("jobs");
  EXPECT_TRUE(IsConsumerKeyWithUuidV4(a)) << a;
  EXPECT_NE(a, b);
}

TEST(ParseRedisAddrTest, AcceptsHostPortBracketedV6AndUnixPath) {
  RedisAddr a;
  ASSERT_TRUE(ParseRedisAddr("localhost:6379", &a).ok());
  EXPECT_EQ(a.host, "localhost");
  EXPECT_EQ(a.port, 6379);
  ASSERT_TRUE(ParseRedisAddr("[::1]:7000", &a).ok());
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 7000);
  ASSERT_TRUE(ParseRedisAddr("redis.internal", &a).ok());
  EXPECT_EQ(a.port, 6379);
  ASSERT_TRUE(ParseRedisAddr("/run/redis/redis.sock", &a).ok());
  EXPECT_TRUE(a.is_unix());
}

TEST(ParseRedisAddrTest, RejectsMalformed) {
  RedisAddr a;
  for (const char* bad : {"", ":6379", "host:", "host:0", "host:70000", "host:x",
                          "::1:6379", "[::1", "[::1]x"}) {
    Status st = ParseRedisAddr(bad, &a);
    EXPECT_FALSE(st.ok()) << bad;
    EXPECT_TRUE(st.permanent()) << bad;
  }
}

// --- RedisConn: connection handling, each with its own server ---

RedisOptions AddrOptions(const std::string& addr) {
  RedisOptions o;
  o.addr = addr;
  return o;
}

class RedisConnTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }
  // Options for addr with a short reconnect backoff, so tests see recovery.
  static RedisOptions FastBackoff(const std::string& addr) {
    RedisOptions o;
    o.addr = addr;
    o.backoff_min = milliseconds(10);
    o.backoff_max = milliseconds(200);
    return o;
  }
};

TEST_F(RedisConnTest, StoppedRedisIsTransientAndRestartedRedisIsUsedAgain) {
  testing::RedisServer server;
  server.Start();
  RedisOptions o = FastBackoff(server.addr());
  RedisConn conn(o);
  int downs = 0, ups = 0;
  conn.SetStateCallback([&](bool up, const std::string&) { (up ? ups : downs)++; });
  ASSERT_TRUE(conn.Command({"PING"}).ok());

  server.Stop();
  Status st;
  ASSERT_TRUE(testing::WaitFor([&] {
    st = conn.Command({"PING"}).status();
    return st.message().find("connection refused") != std::string::npos;
  })) << st.ToString();
  EXPECT_TRUE(st.transient());
  EXPECT_EQ(st.message(), "redis " + server.addr() + ": connection refused");
  EXPECT_TRUE(conn.down());

  server.Start();
  ASSERT_TRUE(testing::WaitFor([&] { return conn.Command({"PING"}).ok(); }));
  EXPECT_FALSE(conn.down());
  EXPECT_EQ(downs, 1);  // once per outage, however many calls failed
  EXPECT_EQ(ups, 1);
}

TEST_F(RedisConnTest, CallsWithinBackoffFailWithoutConnecting) {
  RedisOptions o;
  int port = testing::FreePort();
  o.addr = "127.0.0.1:" + std::to_string(port);
  o.backoff_min = milliseconds(60000);
  RedisConn conn(o);
  Status first = conn.Command({"PING"}).status();
  EXPECT_TRUE(first.transient());
  // Now something listens there (and never answers): a call that tried to
  // connect would get through the TCP handshake and fail differently, after
  // its command timeout.
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  Status second = conn.Command({"PING"}).status();
  close(lfd);
  EXPECT_TRUE(second.transient());
  EXPECT_EQ(second.message(), first.message());
}

TEST_F(RedisConnTest, QueueRecoversAfterRedisRestart) {
  testing::RedisServer server;
  server.Start();
  RedisOptions o = FastBackoff(server.addr());
  CurlyQueue q("jobs", o);
  std::string key = NewConsumerKey("jobs");
  ASSERT_TRUE(q.Register(key).ok());
  server.Stop();
  auto r = q.AckAndTake(key, "", 0);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().transient()) << r.status().ToString();
  server.Start();  // empty: no persistence, and the script cache is gone
  ASSERT_TRUE(testing::WaitFor([&] { return q.Register(key).ok(); }));
  ASSERT_TRUE(q.Push(Env("a", "x")).ok());
  auto job = q.AckAndTake(key, "", 0);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  ASSERT_TRUE(job->has_value());
  EXPECT_EQ((*job)->id, "a");
}

TEST_F(RedisConnTest, WorksOverUnixSocket) {
  testing::RedisServer server;
  server.Start();
  RedisOptions o;
  o.addr = server.unix_socket();
  RedisConn conn(o);
  auto r = conn.Command({"SET", "k", std::string_view("v\0w", 3)});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto g = conn.Command({"GET", "k"});
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(std::string((*g)->str, (*g)->len), std::string("v\0w", 3));
}

TEST_F(RedisConnTest, AuthenticatesWithPasswordAndNeverShowsIt) {
  testing::RedisServer server;
  server.Start();
  {
    RedisConn admin(AddrOptions(server.addr()));
    ASSERT_TRUE(admin.Command({"CONFIG", "SET", "requirepass", "s3cret-pw"}).ok());
  }
  RedisOptions o;
  o.addr = server.addr();
  o.password = "s3cret-pw";
  RedisConn good(o);
  EXPECT_TRUE(good.Command({"PING"}).ok());

  o.password = "wrong-pw";
  RedisConn bad(o);
  Status st = bad.Command({"PING"}).status();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("AUTH refused"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find("wrong-pw"), std::string::npos) << st.message();

  o.password.clear();
  RedisConn none(o);
  st = none.Command({"PING"}).status();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("NOAUTH"), std::string::npos) << st.message();
}

TEST_F(RedisConnTest, ServerClosingIdleConnectionIsReconnectedSilently) {
  testing::RedisServer server;
  server.Start();
  RedisConn conn(AddrOptions(server.addr()));
  int downs = 0;
  conn.SetStateCallback([&](bool up, const std::string&) { downs += up ? 0 : 1; });
  ASSERT_TRUE(conn.Command({"CLIENT", "SETNAME", "victim"}).ok());
  {
    RedisConn killer(AddrOptions(server.addr()));
    ASSERT_TRUE(killer.Command({"CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal"}).ok());
  }
  std::this_thread::sleep_for(milliseconds(1100));  // idle past the check age
  EXPECT_TRUE(conn.Command({"PING"}).ok());
  EXPECT_EQ(downs, 0);
}

}  // namespace
}  // namespace djinn
