#include "common/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>

#include "tests/harness/harness.h"

namespace djinn {
namespace {

TEST(LogTest, LineHasTimestampLevelPidAndRole) {
  Log::SetRole("worker 3");
  std::string line = Log::Format(LogLevel::kWarn, "hello");
  std::regex re(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z warn  \[(\d+)\] worker 3: hello\n$)");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(line, m, re)) << line;
  EXPECT_EQ(std::stoi(m[1]), getpid());
  Log::SetRole("master");
}

TEST(LogTest, UrlPasswordsAreRedacted) {
  EXPECT_EQ(Log::Scrub("GET https://bob:hunter2@example.com/x failed"),
            "GET https://bob:****@example.com/x failed");
  EXPECT_EQ(Log::Scrub("sftp://u:p%40ss@h:22/a and http://x:y@z/"),
            "sftp://u:****@h:22/a and http://x:****@z/");
  EXPECT_EQ(Log::Scrub("http://user@host/ no password"), "http://user@host/ no password");
  EXPECT_EQ(Log::Scrub("http://host:8080/path"), "http://host:8080/path");
}

TEST(LogTest, RegisteredSecretsAreRedacted) {
  Log::AddSecret("correct-horse");
  EXPECT_EQ(Log::Scrub("auth correct-horse failed"), "auth **** failed");
  Log::ClearSecrets();
  EXPECT_EQ(Log::Scrub("auth correct-horse"), "auth correct-horse");
}

TEST(LogTest, NewlinesAreFolded) {
  EXPECT_EQ(Log::Scrub("a\nb\r\nc"), "a b  c");
}

TEST(LogTest, LevelsFilter) {
  testing::TempDir dir;
  std::string file = dir.Sub("x.log");
  ASSERT_TRUE(Log::Init(LogLevel::kWarn, file, "master").ok());
  LOG_INFO("not shown");
  LOG_WARN("shown %d", 1);
  std::string text = testing::ReadFile(file);
  EXPECT_EQ(text.find("not shown"), std::string::npos);
  EXPECT_NE(text.find("shown 1"), std::string::npos);
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, "", "master").ok());
}

TEST(LogTest, ReopenFollowsRenamedFile) {
  testing::TempDir dir;
  std::string file = dir.Sub("x.log");
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, file, "master").ok());
  LOG_INFO("before");
  ASSERT_EQ(rename(file.c_str(), dir.Sub("x.log.1").c_str()), 0);
  ASSERT_TRUE(Log::Reopen().ok());
  LOG_INFO("after");
  EXPECT_NE(testing::ReadFile(dir.Sub("x.log.1")).find("before"), std::string::npos);
  EXPECT_NE(testing::ReadFile(file).find("after"), std::string::npos);
  EXPECT_EQ(testing::ReadFile(file).find("before"), std::string::npos);
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, "", "master").ok());
}

TEST(LogTest, ParseLevel) {
  LogLevel l;
  EXPECT_TRUE(ParseLogLevel("debug", &l));
  EXPECT_EQ(l, LogLevel::kDebug);
  EXPECT_TRUE(ParseLogLevel("warning", &l));
  EXPECT_EQ(l, LogLevel::kWarn);
  EXPECT_FALSE(ParseLogLevel("INFO", &l));
}

}  // namespace
}  // namespace djinn
