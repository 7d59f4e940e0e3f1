// common/pg.h without a server: connection parameters, database.addr
// validation and lazy, bounded failure. (Statements against a live
// PostgreSQL, TLS and reconnects are in tests/integration/download_test.cc;
// failover to a promoted standby in tests/integration/pg_failover_test.cc.)
#include "common/pg.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>

#include "common/config.h"
#include "tests/harness/harness.h"

namespace djinn {
namespace {

std::map<std::string, std::string> Params(const DatabaseConfig& c) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : PgClient::ConnParams(c, PgOptions{})) {
    EXPECT_EQ(m.count(k), 0u) << "duplicate keyword " << k;
    m[k] = v;
  }
  return m;
}

// One host: host/port as given and no target_session_attrs (as before
// lists existed). Several: libpq's multi-host form, asking for a primary.
TEST(PgConnParams, HostPortFormsAndLists) {
  DatabaseConfig c;
  struct Case {
    const char* addr;
    const char* host;
    const char* port;
  } cases[] = {
      {"db.example:6543", "db.example", "6543"},
      {"localhost", "localhost", "5432"},
      {"10.0.0.5:5432", "10.0.0.5", "5432"},
      {"[::1]:5433", "::1", "5433"},
      {"[::1]", "::1", "5432"},
      {"::1", "::1", "5432"},
      {"/run/postgresql", "/run/postgresql", "5432"},
      {"/run/postgresql:5433", "/run/postgresql", "5433"},
      {"10.0.0.1:5432,10.0.0.2:5432", "10.0.0.1,10.0.0.2", "5432,5432"},
      {"db1:6543,db2", "db1,db2", "6543,5432"},
      {"[::1]:5433,/run/postgresql,::1,[fe80::1%eth0]", "::1,/run/postgresql,::1,fe80::1%eth0",
       "5433,5432,5432,5432"},
      {"/run/postgresql:5433,127.0.0.1:5434", "/run/postgresql,127.0.0.1", "5433,5434"},
      {" db1:1 ,\tdb2:2 ", "db1,db2", "1,2"},  // spaces around the commas go
  };
  for (const auto& t : cases) {
    c.addr = t.addr;
    auto m = Params(c);
    EXPECT_EQ(m["host"], t.host) << t.addr;
    EXPECT_EQ(m["port"], t.port) << t.addr;
    bool list = std::string(t.addr).find(',') != std::string::npos;
    EXPECT_EQ(m.count("target_session_attrs"), list ? 1u : 0u) << t.addr;
    if (list) {
      EXPECT_EQ(m["target_session_attrs"], "read-write") << t.addr;
    }
    EXPECT_EQ(ValidateDatabaseAddr(t.addr), "") << t.addr;
  }
}

TEST(ValidateDatabaseAddr, AcceptsEverySingleForm) {
  for (const char* addr : {"fe80::1%eth0", "db_1.internal-net:1", "h:65535", "[::ffff:10.0.0.1]"}) {
    EXPECT_EQ(ValidateDatabaseAddr(addr), "") << addr;
  }
}

TEST(ValidateDatabaseAddr, NamesTheBadItemAndWhy) {
  struct Case {
    const char* addr;
    const char* error;
  } cases[] = {
      {"", "must not be empty"},
      {"  ", "must not be empty"},
      {"db:abc", "\"db:abc\": port \"abc\" is not a number from 1 to 65535"},
      {"db:0", "\"db:0\": port \"0\" is not a number from 1 to 65535"},
      {"db:65536", "\"db:65536\": port \"65536\" is not a number from 1 to 65535"},
      {"db:", "\"db:\": port \"\" is not a number from 1 to 65535"},
      {":5432", "\":5432\": no host before ':'"},
      {"[::1", "\"[::1\": no ']' after the IPv6 address"},
      {"[db]:5432", "\"[db]:5432\": \"db\" is not an IPv6 address"},
      {"[::1]5432", "\"[::1]5432\": expected \":port\" after ']'"},
      {"::1::2", "\"::1::2\": not an IPv6 address (an IPv6 address with a port is written "
                 "[address]:port)"},
      {"run/postgresql",
       "\"run/postgresql\": \"run/postgresql\" is not a host name, an IP address or an "
       "absolute socket directory"},
      {"/run/postgresql:0", "\"/run/postgresql:0\": port \"0\" is not a number from 1 to 65535"},
      {"db one:5432", "\"db one:5432\": contains a space or control character"},
      {"10.0.0.1:5432,10.0.0.2:x",
       "item 2 \"10.0.0.2:x\": port \"x\" is not a number from 1 to 65535"},
      {"10.0.0.1:5432,,10.0.0.2", "item 2 \"\": empty"},
      {"10.0.0.1:5432,", "item 2 \"\": empty"},
      {",10.0.0.1:5432", "item 1 \"\": empty"},
      {"a,b,c d", "item 3 \"c d\": contains a space or control character"},
  };
  for (const auto& t : cases) EXPECT_EQ(ValidateDatabaseAddr(t.addr), t.error) << t.addr;
}

TEST(ValidateDatabaseAddr, IsWhatTheConfigFileSays) {
  testing::TempDir dir;
  std::string path = dir.Sub("consumer.conf");
  auto load = [&](const std::string& addr) {
    testing::WriteFile(path, "database = { addr = \"" + addr +
                                 "\"; };\nredis = { addr = \"127.0.0.1:6379\"; };\n"
                                 "store = { images = { type = \"file\"; path = \"/srv\"; }; };\n");
    return LoadConfig(path);
  };
  auto good = load("10.0.0.1:5432,10.0.0.2:5432");
  ASSERT_TRUE(good.ok()) << good.status().message();
  EXPECT_EQ(good->database.addr, "10.0.0.1:5432,10.0.0.2:5432");
  auto bad = load("10.0.0.1:5432,10.0.0.2:x");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), path + ":1: database.addr: item 2 \"10.0.0.2:x\": port \"x\" "
                                           "is not a number from 1 to 65535");
}

TEST(PgConnParams, WithoutTlsDisablesSsl) {
  DatabaseConfig c;
  c.name = "djinn";
  c.username = "djinn_consumer";
  c.password = "pw with ' and \\ and spaces";
  auto m = Params(c);
  EXPECT_EQ(m["dbname"], "djinn");
  EXPECT_EQ(m["user"], "djinn_consumer");
  EXPECT_EQ(m["password"], c.password);  // passed as a value, never quoted into a string
  EXPECT_EQ(m["sslmode"], "disable");
  EXPECT_EQ(m["gssencmode"], "disable");
  EXPECT_EQ(m.count("sslrootcert"), 0u);
  EXPECT_EQ(m["connect_timeout"], "10");
  EXPECT_EQ(m["options"], "-c statement_timeout=30000");
  EXPECT_EQ(m["application_name"], "djinn-consumer");
}

TEST(PgConnParams, EmptyPasswordIsNotSent) {
  DatabaseConfig c;
  EXPECT_EQ(Params(c).count("password"), 0u);
}

TEST(PgConnParams, TlsMeansVerifyFull) {
  DatabaseConfig c;
  c.tls_enabled = true;
  c.tls.ca = "/etc/djinn/ca.pem";
  auto m = Params(c);
  EXPECT_EQ(m["sslmode"], "verify-full");
  EXPECT_EQ(m["sslrootcert"], "/etc/djinn/ca.pem");
  EXPECT_EQ(m.count("sslcert"), 0u);
  EXPECT_EQ(m.count("sslkey"), 0u);
  c.tls.cert = "/etc/djinn/client.pem";
  c.tls.key = "/etc/djinn/client.key";
  m = Params(c);
  EXPECT_EQ(m["sslcert"], "/etc/djinn/client.pem");
  EXPECT_EQ(m["sslkey"], "/etc/djinn/client.key");
}

TEST(PgDescribe, NamesHostPortAndDatabase) {
  DatabaseConfig c;
  c.addr = "[::1]:5433";
  c.name = "djinn";
  EXPECT_EQ(PgClient::Describe(c), "[::1]:5433/djinn");
  c.addr = "/run/postgresql";
  EXPECT_EQ(PgClient::Describe(c), "/run/postgresql:5432/djinn");
  c.addr = "10.0.0.1,[::1]:5433, /run/postgresql";
  EXPECT_EQ(PgClient::Describe(c), "10.0.0.1:5432,[::1]:5433,/run/postgresql:5432/djinn");
}

TEST(PgClient, DoesNotConnectUntilUsed) {
  DatabaseConfig c;
  c.addr = "127.0.0.1:1";
  PgClient db(c);
  EXPECT_FALSE(db.connected());
}

TEST(PgClient, UnreachableServerIsUnavailableThenFailsFastDuringBackoff) {
  DatabaseConfig c;
  c.addr = "127.0.0.1:1";  // nothing listens on port 1
  PgOptions o;
  o.connect_timeout_seconds = 2;
  o.backoff_min = std::chrono::milliseconds(5000);
  PgClient db(c, o);
  auto first = db.Exec("SELECT 1", {});
  ASSERT_FALSE(first.ok());
  EXPECT_TRUE(first.status().unavailable());
  EXPECT_NE(first.status().message().find("database: cannot connect to 127.0.0.1:1/djinn"),
            std::string::npos)
      << first.status().message();
  auto start = std::chrono::steady_clock::now();
  auto second = db.Exec("SELECT 1", {});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100));
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(second.status().unavailable());
  EXPECT_NE(second.status().message().find("next attempt in"), std::string::npos)
      << second.status().message();
  db.Close();  // forgets the backoff
  auto third = db.Exec("SELECT 1", {});
  EXPECT_EQ(third.status().message().find("next attempt in"), std::string::npos);
}

TEST(PgClient, NoHostOfSeveralReachableIsUnavailableNamingEach) {
  DatabaseConfig c;
  c.addr = "127.0.0.1:1,127.0.0.1:2";  // nothing listens on ports 1 and 2
  PgOptions o;
  o.connect_timeout_seconds = 2;
  PgClient db(c, o);
  auto r = db.Exec("SELECT 1", {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().unavailable());
  const std::string& m = r.status().message();
  EXPECT_EQ(m.rfind("database: cannot connect to 127.0.0.1:1,127.0.0.1:2/djinn: ", 0), 0u) << m;
  // libpq names each host it tried.
  EXPECT_NE(m.find("port 1 failed"), std::string::npos) << m;
  EXPECT_NE(m.find("port 2 failed"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

}  // namespace
}  // namespace djinn
