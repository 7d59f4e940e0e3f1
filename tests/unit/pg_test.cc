// common/pg.h without a server: connection parameters and lazy, bounded
// failure. (Statements against a live PostgreSQL, TLS and reconnects are in
// tests/integration/download_test.cc.)
#include "common/pg.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>

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

TEST(PgConnParams, HostPortForms) {
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
  };
  for (const auto& t : cases) {
    c.addr = t.addr;
    auto m = Params(c);
    EXPECT_EQ(m["host"], t.host) << t.addr;
    EXPECT_EQ(m["port"], t.port) << t.addr;
  }
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

}  // namespace
}  // namespace djinn
