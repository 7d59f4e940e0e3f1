// The metrics' pieces without a daemon: the Prometheus text format
// (escaping, cumulative histogram buckets ending in +Inf, _sum, _count),
// the per-worker counters and their folding, the listen address and the
// `metrics` block in both config syntaxes.
#include <gtest/gtest.h>

#include <string>

#include "common/config.h"
#include "common/job_counters.h"
#include "common/listen_address.h"
#include "common/scoreboard.h"
#include "master/prom_text.h"
#include "tests/harness/harness.h"

namespace djinn {
namespace {

TEST(PromTextTest, LabelValuesAreEscaped) {
  EXPECT_EQ(PromEscapeLabelValue("plain"), "plain");
  EXPECT_EQ(PromEscapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(PromEscapeLabelValue("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(PromEscapeLabelValue("two\nlines"), "two\\nlines");
  PromText t;
  t.Sample("m", {{"job", "x\"y\\z\n"}, {"outcome", "ok"}}, 3);
  EXPECT_EQ(t.text(), "m{job=\"x\\\"y\\\\z\\n\",outcome=\"ok\"} 3\n");
}

TEST(PromTextTest, HelpIsEscapedButQuotesAreNot) {
  PromText t;
  t.Family("m_total", "counter", "a \"b\" \\ c\nd");
  EXPECT_EQ(t.text(), "# HELP m_total a \"b\" \\\\ c\\nd\n# TYPE m_total counter\n");
}

TEST(PromTextTest, ValuesAreExact) {
  EXPECT_EQ(PromValue(0), "0");
  EXPECT_EQ(PromValue(25), "25");
  EXPECT_EQ(PromValue(0.005), "0.005");
  EXPECT_EQ(PromValue(1e15), "1e+15");
  EXPECT_EQ(PromValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(PromValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(PromValue(0.0 / 0.0), "NaN");
  PromText t;
  t.Sample("bare", {}, 7);
  EXPECT_EQ(t.text(), "bare 7\n");
}

TEST(PromTextTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  PromText t;
  t.Histogram("d_seconds", {{"job", "ping"}}, {0.1, 1, 10}, {2, 0, 3, 1}, 12.5);
  EXPECT_EQ(t.text(),
            "d_seconds_bucket{job=\"ping\",le=\"0.1\"} 2\n"
            "d_seconds_bucket{job=\"ping\",le=\"1\"} 2\n"
            "d_seconds_bucket{job=\"ping\",le=\"10\"} 5\n"
            "d_seconds_bucket{job=\"ping\",le=\"+Inf\"} 6\n"
            "d_seconds_sum{job=\"ping\"} 12.5\n"
            "d_seconds_count{job=\"ping\"} 6\n");
}

TEST(PromTextTest, EmptyHistogramStillHasEveryBucket) {
  PromText t;
  t.Histogram("h", {}, {1}, {}, 0);
  EXPECT_EQ(t.text(), "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n");
}

TEST(SlotStatsTest, CountsByTypeOutcomeAndBucket) {
  Scoreboard board(2);
  board.Reset(1);
  SlotStats* s = board.Stats(1);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(board.Stats(2), nullptr);
  s->CountJob("ping", JobOutcome::kOk, 50);            // 50 us: first bucket
  s->CountJob("ping", JobOutcome::kOk, 2'000'000);     // 2 s: le=5
  s->CountJob("fail", JobOutcome::kRetried, 7200'000'000);  // 2 h: +Inf
  s->CountDownloadedBytes(1000);
  JobTotals t;
  s->AddTo(&t);
  ASSERT_EQ(t.types.size(), 2u);
  const JobTypeTotals& ping = t.types["ping"];
  EXPECT_EQ(ping.outcomes[static_cast<size_t>(JobOutcome::kOk)], 2u);
  EXPECT_EQ(ping.buckets[0], 1u);
  EXPECT_EQ(ping.buckets[7], 1u);  // kJobDurationBuckets[7] == 5
  EXPECT_EQ(ping.sum_us, 2'000'050u);
  EXPECT_EQ(ping.count(), 2u);
  EXPECT_EQ(t.types["fail"].buckets.back(), 1u);
  EXPECT_EQ(t.downloaded_bytes, 1000u);
  // Folding keeps counting; a Reset entry starts from zero.
  JobTotals sum = t;
  sum.Add(t);
  EXPECT_EQ(sum.types["ping"].count(), 4u);
  board.Reset(1);
  JobTotals after;
  s->AddTo(&after);
  EXPECT_TRUE(after.types.empty());
  EXPECT_EQ(after.downloaded_bytes, 0u);
}

TEST(SlotStatsTest, TypesBeyondTheTableCountAsOther) {
  Scoreboard board(1);
  board.Reset(0);
  SlotStats* s = board.Stats(0);
  for (int i = 0; i < 20; i++) s->CountJob("t" + std::to_string(i), JobOutcome::kOk, 1);
  JobTotals t;
  s->AddTo(&t);
  EXPECT_EQ(t.types.size(), SlotStats::kTypes);
  EXPECT_EQ(t.types["other"].count(), 20u - (SlotStats::kTypes - 1));
}

TEST(SlotStatsTest, ConditionsAndPostgresReach) {
  Scoreboard board(1);
  board.Reset(0);
  SlotStats* s = board.Stats(0);
  s->SetCondition(kConditionHeldBack, true);
  s->SetCondition(kConditionRedisDown, true);
  s->SetCondition(kConditionHeldBack, false);
  EXPECT_EQ(s->condition(), kConditionRedisDown);
  EXPECT_EQ(s->pg_reach(), Reach::kUnknown);
  s->SetPgReach(Reach::kDown, 42);
  EXPECT_EQ(s->pg_reach(), Reach::kDown);
  EXPECT_EQ(s->pg_reach_ms(), 42);
}

TEST(ListenAddressTest, NumericAddressesOnly) {
  auto a = ParseListenAddress("127.0.0.1:9187");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_TRUE(a->loopback);
  a = ParseListenAddress("[::1]:9187");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_TRUE(a->loopback);
  a = ParseListenAddress("10.0.0.5:9187");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->loopback);
  for (const char* bad : {"localhost:9187", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:http", "[::1:9187", "::1:9187", ":9187", ""})
    EXPECT_FALSE(ParseListenAddress(bad).ok()) << bad;
}

constexpr const char* kMinimal = R"(
database = { addr = "127.0.0.1:5432"; name = "djinn"; username = "u"; };
redis = { addr = "127.0.0.1:6379"; };
store = { images = { type = "file"; path = "/var/lib/djinn/images"; }; };
)";

class MetricsConfigTest : public ::testing::Test {
 protected:
  Result<Config> Load(const std::string& text) {
    testing::WriteFile(path_, text);
    return LoadConfig(path_);
  }
  testing::TempDir dir_;
  const std::string path_ = dir_.Sub("consumer.conf");
};

TEST_F(MetricsConfigTest, OffByDefault) {
  auto c = Load(kMinimal);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->metrics.listen, "");
  EXPECT_FALSE(c->metrics.allow_remote);
  EXPECT_EQ(FormatConfig(*c).find("metrics"), std::string::npos);
}

TEST_F(MetricsConfigTest, BothSyntaxes) {
  auto c = Load(std::string(kMinimal) + "metrics = { listen = \"127.0.0.1:9187\"; };\n");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->metrics.listen, "127.0.0.1:9187");
  EXPECT_NE(FormatConfig(*c).find("metrics = { listen = \"127.0.0.1:9187\"; allow_remote = false; };"),
            std::string::npos);
  auto d = Load(
      "database { addr \"127.0.0.1:5432\" }\nredis { addr \"127.0.0.1:6379\" }\n"
      "store images { type \"file\"\n path \"/var/lib/djinn/images\" }\n"
      "metrics { listen \"[::1]:9187\" }\n");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_TRUE(d->djinn_syntax);
  EXPECT_EQ(d->metrics.listen, "[::1]:9187");
}

TEST_F(MetricsConfigTest, RemoteAddressNeedsAllowRemote) {
  auto c = Load(std::string(kMinimal) + "metrics = { listen = \"0.0.0.0:9187\"; };\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("metrics.listen: \"0.0.0.0:9187\" is not a loopback address"),
            std::string::npos)
      << c.status().message();
  c = Load(std::string(kMinimal) + "metrics = { listen = \"0.0.0.0:9187\"; allow_remote = true; };\n");
  EXPECT_TRUE(c.ok()) << c.status().message();
  c = Load(std::string(kMinimal) + "metrics = { listen = \"localhost:9187\"; };\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("metrics.listen: \"localhost:9187\": not a numeric"),
            std::string::npos)
      << c.status().message();
}

}  // namespace
}  // namespace djinn
