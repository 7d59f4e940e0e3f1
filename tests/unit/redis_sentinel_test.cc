// Redis Sentinel support (common/redis_sentinel.h): the reply parsers fed
// real RESP bytes, and AskSentinels, RedisConn and SentinelWatch against a
// real redis-sentinel and redis-server (tests/harness).
#include "common/redis_sentinel.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/c_handles.h"
#include "common/redis.h"
#include "tests/harness/harness.h"
#include "tests/harness/redis_client.h"

namespace djinn {
namespace {

using std::chrono::milliseconds;
using ReaderPtr = std::unique_ptr<redisReader, CFree<redisReader, redisReaderFree>>;

// The reply hiredis makes of RESP bytes (one whole reply).
RedisReplyPtr Reply(const std::string& resp) {
  ReaderPtr reader(redisReaderCreate());
  EXPECT_EQ(redisReaderFeed(reader.get(), resp.data(), resp.size()), REDIS_OK);
  void* raw = nullptr;
  EXPECT_EQ(redisReaderGetReply(reader.get(), &raw), REDIS_OK);
  EXPECT_NE(raw, nullptr) << "incomplete RESP: " << resp;
  return RedisReplyPtr(static_cast<redisReply*>(raw));
}

// ------------------------------------------------------------- parsing

TEST(RedisSentinelParse, MasterAddrReplyIsHostColonPort) {
  auto r = ParseMasterAddrReply(Reply("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n").get(), "m");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, "127.0.0.1:6380");
  r = ParseMasterAddrReply(Reply("*2\r\n$3\r\n::1\r\n$4\r\n6380\r\n").get(), "m");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, "[::1]:6380");
}

TEST(RedisSentinelParse, MasterAddrNilMeansUnknownMaster) {
  auto r = ParseMasterAddrReply(Reply("*-1\r\n").get(), "mymaster");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().transient());
  EXPECT_EQ(r.status().message(), "does not know master \"mymaster\"");
  r = ParseMasterAddrReply(Reply("$-1\r\n").get(), "mymaster");
  EXPECT_EQ(r.status().message(), "does not know master \"mymaster\"");
}

TEST(RedisSentinelParse, MasterAddrErrorsAndOddShapesAreErrors) {
  auto r = ParseMasterAddrReply(Reply("-NOAUTH Authentication required.\r\n").get(), "m");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "NOAUTH Authentication required.");
  for (const char* odd : {":1\r\n", "*1\r\n$9\r\n127.0.0.1\r\n", "*2\r\n$9\r\n127.0.0.1\r\n:6380\r\n",
                          "*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n", "*2\r\n$9\r\n127.0.0.1\r\n$2\r\nxx\r\n",
                          "*2\r\n$0\r\n\r\n$4\r\n6380\r\n", "*2\r\n$9\r\n127.0.0.1\r\n$5\r\n70000\r\n"}) {
    auto bad = ParseMasterAddrReply(Reply(odd).get(), "m");
    EXPECT_FALSE(bad.ok()) << odd;
    EXPECT_TRUE(bad.status().transient()) << odd;
  }
  EXPECT_FALSE(ParseMasterAddrReply(nullptr, "m").ok());
}

TEST(RedisSentinelParse, RoleReplyGivesTheRole) {
  auto r = ParseRoleReply(Reply("*3\r\n$6\r\nmaster\r\n:42\r\n*0\r\n").get());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "master");
  r = ParseRoleReply(
      Reply("*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:42\r\n").get());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "slave");
  r = ParseRoleReply(Reply("-NOPERM this user has no permissions to run the 'role' command\r\n").get());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "NOPERM this user has no permissions to run the 'role' command");
  EXPECT_FALSE(ParseRoleReply(Reply("*0\r\n").get()).ok());
  EXPECT_FALSE(ParseRoleReply(Reply("+OK\r\n").get()).ok());
}

TEST(RedisSentinelParse, SwitchMasterMessage) {
  auto sw = ParseSwitchMaster("mymaster 127.0.0.1 6379 127.0.0.1 6380");
  ASSERT_TRUE(sw.has_value());
  EXPECT_EQ(sw->name, "mymaster");
  EXPECT_EQ(sw->from, "127.0.0.1:6379");
  EXPECT_EQ(sw->to, "127.0.0.1:6380");
  sw = ParseSwitchMaster("m ::1 6379 fe80::1 6380");
  ASSERT_TRUE(sw.has_value());
  EXPECT_EQ(sw->to, "[fe80::1]:6380");
  for (const char* bad : {"", "mymaster", "mymaster 127.0.0.1 6379 127.0.0.1",
                          "mymaster 127.0.0.1 6379 127.0.0.1 6380 extra",
                          "mymaster 127.0.0.1 x 127.0.0.1 6380", "mymaster  127.0.0.1 6379 127.0.0.1 6380"}) {
    EXPECT_FALSE(ParseSwitchMaster(bad).has_value()) << bad;
  }
}

TEST(RedisSentinelParse, SwitchMasterPayloadOnlyFromItsChannel) {
  auto p = SwitchMasterPayload(
      Reply("*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$5\r\nm a 1\r\n").get());
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(*p, "m a 1");
  // The subscription's confirmation, another channel, a PONG.
  EXPECT_FALSE(SwitchMasterPayload(Reply("*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n").get()));
  EXPECT_FALSE(SwitchMasterPayload(Reply("*3\r\n$7\r\nmessage\r\n$6\r\n+sdown\r\n$1\r\nx\r\n").get()));
  EXPECT_FALSE(SwitchMasterPayload(Reply("*2\r\n$4\r\npong\r\n$0\r\n\r\n").get()));
  EXPECT_FALSE(SwitchMasterPayload(nullptr));
}

TEST(RedisSentinelParse, JoinHostPortBracketsIpv6) {
  EXPECT_EQ(JoinHostPort("10.0.0.1", "6379"), "10.0.0.1:6379");
  EXPECT_EQ(JoinHostPort("::1", "6379"), "[::1]:6379");
}

// ----------------------------------------------- against real servers

// One redis-sentinel monitoring `master` at 127.0.0.1:<master_port>
// (quorum 1; it answers get-master-addr-by-name from its configuration at
// once, whether or not that server is up). requirepass when password set.
class OneSentinel {
 public:
  OneSentinel(int master_port, const std::string& password = "")
      : dir_("djinn-sentinel-unit"), port_(testing::FreePort()) {
    std::string conf = dir_.Sub("sentinel.conf");
    std::string text = "port " + std::to_string(port_) + "\nbind 127.0.0.1\ndir " + dir_.path() +
                       "\nsentinel monitor mymaster 127.0.0.1 " + std::to_string(master_port) +
                       " 1\n";
    if (!password.empty()) text += "requirepass " + password + "\n";
    testing::WriteFile(conf, text);
    started_ = proc_.Start({"/usr/bin/redis-sentinel", conf}, dir_.Sub("sentinel.log"));
    if (started_) {
      started_ = testing::WaitFor([&] {
        RedisContextPtr c(redisConnect("127.0.0.1", port_));
        return c && !c->err;
      });
    }
  }
  ~OneSentinel() { proc_.Stop(milliseconds(0)); }
  bool started() const { return started_; }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return testing::ReadFile(dir_.Sub("sentinel.log")); }

 private:
  testing::TempDir dir_;
  int port_;
  testing::Process proc_;
  bool started_ = false;
};

std::string Refused() { return "127.0.0.1:" + std::to_string(testing::FreePort()); }

class RedisSentinelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }
  static SentinelOptions Options(std::vector<std::string> sentinels, std::string master = "mymaster") {
    SentinelOptions o;
    o.sentinels = std::move(sentinels);
    o.master = std::move(master);
    return o;
  }
  static RedisOptions ConnOptions(std::vector<std::string> sentinels) {
    RedisOptions o;
    o.sentinel = Options(std::move(sentinels));
    o.backoff_min = milliseconds(10);
    o.backoff_max = milliseconds(100);
    return o;
  }
};

TEST_F(RedisSentinelTest, FirstAnsweringSentinelWinsAndMovesToTheFront) {
  OneSentinel s(6399);
  ASSERT_TRUE(s.started()) << s.log();
  std::string dead = Refused();
  SentinelOptions o = Options({dead, s.addr()});
  auto r = AskSentinels(&o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, "127.0.0.1:6399");
  EXPECT_EQ(o.sentinels, (std::vector<std::string>{s.addr(), dead}));
}

TEST_F(RedisSentinelTest, NoSentinelKnowsTheMasterListsEveryAnswer) {
  OneSentinel s(6399);
  ASSERT_TRUE(s.started()) << s.log();
  std::string dead = Refused();
  SentinelOptions o = Options({s.addr(), dead}, "other");
  auto r = AskSentinels(&o);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().transient());
  EXPECT_EQ(r.status().message(), "redis: no sentinel knows master \"other\" (asked 2: " + s.addr() +
                                      ": does not know master \"other\"; " + dead +
                                      ": connection refused)");
  EXPECT_EQ(o.sentinels, (std::vector<std::string>{s.addr(), dead}));  // unchanged
}

TEST_F(RedisSentinelTest, SentinelPasswordIsSentAndARefusalNamed) {
  OneSentinel s(6399, "sentinel-secret");
  ASSERT_TRUE(s.started()) << s.log();
  SentinelOptions o = Options({s.addr()});
  auto r = AskSentinels(&o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(s.addr() + ": NOAUTH"), std::string::npos) << r.status().message();
  o.password = "wrong-password";
  r = AskSentinels(&o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(s.addr() + ": AUTH refused: WRONGPASS"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(r.status().message().find("wrong-password"), std::string::npos);
  o.password = "sentinel-secret";
  r = AskSentinels(&o);
  ASSERT_TRUE(r.ok()) << r.status().message();
}

TEST_F(RedisSentinelTest, ConnUsesTheMasterTheSentinelNames) {
  testing::RedisServer server;
  server.Start();
  OneSentinel s(server.port());
  ASSERT_TRUE(s.started()) << s.log();
  RedisConn conn(ConnOptions({Refused(), s.addr()}));
  EXPECT_EQ(conn.addr(), "master \"mymaster\"");
  auto r = conn.Command({"SET", "k", "v"});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(conn.addr(), server.addr());
  EXPECT_EQ(testing::RedisClient(server.port()).Str({"GET", "k"}), "v");
}

TEST_F(RedisSentinelTest, ConnRefusesAServerThatIsNoMaster) {
  testing::RedisServer server({"--replicaof", "127.0.0.1", std::to_string(testing::FreePort())});
  server.Start();
  OneSentinel s(server.port());
  ASSERT_TRUE(s.started()) << s.log();
  RedisConn conn(ConnOptions({s.addr()}));
  Status st = conn.Command({"PING"}).status();
  EXPECT_TRUE(st.transient());
  EXPECT_EQ(st.message(), "redis " + server.addr() +
                              ": the sentinels name it master \"mymaster\" but it says it is a "
                              "slave (failover in progress?)");
  EXPECT_FALSE(conn.connected());
}

TEST_F(RedisSentinelTest, DemotedMasterDropsTheConnectionAndIsAskedAgain) {
  testing::RedisServer server;
  server.Start();
  OneSentinel s(server.port());
  ASSERT_TRUE(s.started()) << s.log();
  RedisConn conn(ConnOptions({s.addr()}));
  int downs = 0, ups = 0;
  conn.SetStateCallback([&](bool up, const std::string&) { (up ? ups : downs)++; });
  ASSERT_TRUE(conn.Command({"SET", "k", "v"}).ok());
  uint64_t reconnects = RedisConn::SentinelReconnects();

  // Demoted behind our back (as a failover does to a partitioned master
  // that comes back): writes say READONLY.
  testing::RedisClient admin(server.port());
  std::string nowhere = std::to_string(testing::FreePort());
  admin.Cmd({"REPLICAOF", "127.0.0.1", nowhere});
  admin.Cmd({"CONFIG", "SET", "replica-serve-stale-data", "yes"});
  Status st = conn.Command({"SET", "k", "w"}).status();
  EXPECT_TRUE(st.transient()) << st.message();
  EXPECT_EQ(st.message().rfind("redis " + server.addr() + ": READONLY ", 0), 0u) << st.message();
  EXPECT_NE(st.message().find("asking the sentinels again"), std::string::npos) << st.message();
  EXPECT_FALSE(conn.connected());
  // Asked again: still no master there.
  ASSERT_TRUE(testing::WaitFor([&] {
    st = conn.Command({"PING"}).status();
    return st.message().find("says it is a slave") != std::string::npos;
  })) << st.message();

  admin.Cmd({"REPLICAOF", "NO", "ONE"});
  ASSERT_TRUE(testing::WaitFor([&] { return conn.Command({"SET", "k", "x"}).ok(); }));
  EXPECT_EQ(downs, 1);
  EXPECT_EQ(ups, 1);
  EXPECT_EQ(RedisConn::SentinelReconnects(), reconnects + 1);
}

TEST_F(RedisSentinelTest, UnblockedWaitDropsTheConnection) {
  testing::RedisServer server;
  server.Start();
  OneSentinel s(server.port());
  ASSERT_TRUE(s.started()) << s.log();
  RedisConn conn(ConnOptions({s.addr()}));
  ASSERT_TRUE(conn.Command({"PING"}).ok());
  std::thread demote([&] {
    testing::RedisClient admin(server.port());
    EXPECT_TRUE(testing::WaitFor([&] {
      std::string info = admin.Str({"INFO", "clients"});
      return info.find("blocked_clients:1") != std::string::npos;
    })) << "the client never blocked";
    admin.Cmd({"REPLICAOF", "127.0.0.1", std::to_string(testing::FreePort())});
  });
  Status st = conn.BlockingCommand({"BLMOVE", "a", "b", "LEFT", "RIGHT", "5"}, milliseconds(5000)).status();
  demote.join();
  EXPECT_TRUE(st.transient()) << st.message();
  EXPECT_NE(st.message().find(": UNBLOCKED "), std::string::npos) << st.message();
  EXPECT_FALSE(conn.connected());
}

TEST_F(RedisSentinelTest, ResolveAgainAllReconnectsAtOnce) {
  testing::RedisServer server;
  server.Start();
  OneSentinel s(server.port());
  ASSERT_TRUE(s.started()) << s.log();
  RedisOptions o = ConnOptions({s.addr()});
  o.backoff_min = milliseconds(60000);  // a reconnect now cannot be a backoff's end
  RedisConn conn(o);
  ASSERT_TRUE(conn.Command({"PING"}).ok());
  uint64_t reconnects = RedisConn::SentinelReconnects();
  int64_t clients_before = testing::RedisClient(server.port()).Int({"CLIENT", "ID"});
  RedisConn::ResolveAgainAll();
  ASSERT_TRUE(conn.Command({"PING"}).ok());
  EXPECT_FALSE(conn.down());
  EXPECT_EQ(RedisConn::SentinelReconnects(), reconnects + 1);
  // A new connection: its client ID is newer than one made before it.
  auto id = conn.Command({"CLIENT", "ID"});
  ASSERT_TRUE(id.ok());
  EXPECT_GT((*id)->integer, clients_before);
}

TEST_F(RedisSentinelTest, ConnWithoutSentinelsIgnoresResolveAgainAll) {
  testing::RedisServer server;
  server.Start();
  RedisOptions o;
  o.addr = server.addr();
  RedisConn conn(o);
  auto before = conn.Command({"CLIENT", "ID"});
  ASSERT_TRUE(before.ok());
  RedisConn::ResolveAgainAll();
  auto after = conn.Command({"CLIENT", "ID"});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*before)->integer, (*after)->integer);
}

// SentinelWatch only subscribes: a plain redis-server, where a test may
// PUBLISH, stands in for the sentinel (a sentinel refuses PUBLISH).
TEST_F(RedisSentinelTest, WatchReportsOurMastersSwitchAndResubscribes) {
  testing::RedisServer server;
  server.Start();
  SentinelOptions o = Options({Refused(), server.addr()});
  SentinelWatch watch(o);
  testing::RedisClient pub(server.port());
  // The first attempt goes to the refusing one; then the backoff (0.5 s).
  ASSERT_TRUE(testing::WaitFor([&] {
    watch.Poll();
    return watch.fd() >= 0;
  }));
  EXPECT_EQ(pub.Int({"PUBLISH", "+switch-master", "other 127.0.0.1 1 127.0.0.1 2"}), 1);
  EXPECT_EQ(pub.Int({"PUBLISH", "+switch-master", "mymaster 127.0.0.1 1 127.0.0.1 2"}), 1);
  std::vector<SwitchMaster> seen;
  ASSERT_TRUE(testing::WaitFor([&] {
    for (auto& sw : watch.Poll()) seen.push_back(sw);
    return !seen.empty();
  }));
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].name, "mymaster");
  EXPECT_EQ(seen[0].from, "127.0.0.1:1");
  EXPECT_EQ(seen[0].to, "127.0.0.1:2");

  // The sentinel goes away and comes back: subscribed again.
  server.Stop();
  ASSERT_TRUE(testing::WaitFor([&] {
    watch.Poll();
    return watch.fd() < 0;
  }));
  server.Start();
  ASSERT_TRUE(testing::WaitFor([&] {
    watch.Poll();
    return watch.fd() >= 0;
  }));
  testing::RedisClient pub2(server.port());
  EXPECT_EQ(pub2.Int({"PUBLISH", "+switch-master", "mymaster 127.0.0.1 2 127.0.0.1 3"}), 1);
  seen.clear();
  ASSERT_TRUE(testing::WaitFor([&] {
    for (auto& sw : watch.Poll()) seen.push_back(sw);
    return !seen.empty();
  }));
  EXPECT_EQ(seen[0].to, "127.0.0.1:3");
}

}  // namespace
}  // namespace djinn
