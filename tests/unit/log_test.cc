#include "common/log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <regex>

#include <nlohmann/json.hpp>

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

// A long line is scrubbed before it is cut, so a secret straddling the
// cut leaves no prefix of itself behind.
TEST(LogTest, LongLinesAreScrubbedBeforeTheyAreCut) {
  testing::TempDir dir;
  std::string file = dir.Sub("x.log");
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, file, "master").ok());
  const std::string secret = "correct-horse-battery-staple";
  Log::AddSecret(secret);
  for (size_t pad = 2030; pad < 2050; ++pad) {
    LOG_INFO("%s%s tail", std::string(pad, 'x').c_str(), secret.c_str());
  }
  Log::ClearSecrets();
  std::string text = testing::ReadFile(file);
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, "", "master").ok());
  EXPECT_EQ(text.find("correct-h"), std::string::npos) << text;
  EXPECT_EQ(text.find("xcorr"), std::string::npos);
  size_t lines = 0, longest = 0, start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    ++lines;
    longest = std::max(longest, nl - start);
  }
  EXPECT_EQ(lines, 20u);
  EXPECT_LT(longest, 2200u);  // still cut
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

// ------------------------------------------------ opening the file safely

// " (running as root)" when we are, as the messages say.
std::string AsRoot() { return geteuid() == 0 ? " (running as root)" : ""; }

class LogFileTest : public ::testing::Test {
 protected:
  void TearDown() override { ASSERT_TRUE(Log::Init(LogLevel::kInfo, "", "master").ok()); }
  testing::TempDir dir_;
  const std::string file_ = dir_.Sub("x.log");
  const std::string target_ = dir_.Sub("target");
};

// O_NOFOLLOW applies whoever we run as.
TEST_F(LogFileTest, SymlinkIsRefusedAndItsTargetLeftAlone) {
  testing::WriteFile(target_, "secret", 0600);
  ASSERT_EQ(symlink(target_.c_str(), file_.c_str()), 0);
  Status st = Log::Init(LogLevel::kInfo, file_, "master");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(),
            "log.file " + file_ + ": is a symbolic link; refusing to follow it" + AsRoot());
  EXPECT_EQ(Log::Fd(), -1);  // standard error meanwhile
  EXPECT_EQ(Log::File(), "");
  EXPECT_EQ(testing::ReadFile(target_), "secret");
  struct stat st_target;
  ASSERT_EQ(stat(target_.c_str(), &st_target), 0);
  EXPECT_EQ(st_target.st_mode & 07777, 0600u);
}

TEST_F(LogFileTest, DanglingSymlinkIsRefusedAndNothingCreated) {
  ASSERT_EQ(symlink(target_.c_str(), file_.c_str()), 0);
  Status st = Log::Init(LogLevel::kInfo, file_, "master");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(),
            "log.file " + file_ + ": is a symbolic link; refusing to follow it" + AsRoot());
  EXPECT_FALSE(testing::FileExists(target_));
}

// Rotation: a link planted where the new file goes is refused too, and
// the old file stays in use.
TEST_F(LogFileTest, ReopenRefusesASymlinkAndKeepsTheOldFile) {
  testing::WriteFile(target_, "secret", 0600);
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, file_, "master").ok());
  ASSERT_EQ(rename(file_.c_str(), dir_.Sub("x.log.1").c_str()), 0);
  ASSERT_EQ(symlink(target_.c_str(), file_.c_str()), 0);
  Status st = Log::Reopen();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(),
            "log.file " + file_ + ": is a symbolic link; refusing to follow it" + AsRoot());
  LOG_INFO("still here");
  EXPECT_NE(testing::ReadFile(dir_.Sub("x.log.1")).find("still here"), std::string::npos);
  EXPECT_EQ(testing::ReadFile(target_), "secret");
}

// A hard link to a file root must not write (/etc/shadow): refused as root.
// Without root the kernel's permission check stands between us and other
// users' files, and a hard-linked log is accepted.
TEST_F(LogFileTest, HardLinkIsRefusedOnlyWhenRoot) {
  testing::WriteFile(target_, "secret", 0600);
  ASSERT_EQ(link(target_.c_str(), file_.c_str()), 0);
  Status st = Log::Init(LogLevel::kInfo, file_, "master");
  if (geteuid() != 0) {
    EXPECT_TRUE(st.ok()) << st.message();
    return;
  }
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(),
            "log.file " + file_ + ": has 2 hard links; refusing to write to it (running as root)");
  EXPECT_EQ(testing::ReadFile(target_), "secret");
}

// O_NONBLOCK: a FIFO in the log's place neither blocks the master nor is
// written; and the flag is not left on a regular file's fd.
TEST_F(LogFileTest, FifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(mkfifo(file_.c_str(), 0600), 0);
  auto start = std::chrono::steady_clock::now();
  Status st = Log::Init(LogLevel::kInfo, file_, "master");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(),
            "log.file " + file_ + ": is a FIFO, not a regular file; refusing to write to it");
  // With a reader the open succeeds; fstat refuses it then.
  int reader = open(file_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  st = Log::Init(LogLevel::kInfo, file_, "master");
  close(reader);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(),
            "log.file " + file_ + ": is a FIFO, not a regular file; refusing to write to it");
}

TEST_F(LogFileTest, DirectoryIsRefused) {
  ASSERT_EQ(mkdir(file_.c_str(), 0755), 0);
  Status st = Log::Init(LogLevel::kInfo, file_, "master");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(),
            "log.file " + file_ + ": is a directory, not a regular file; refusing to write to it");
}

TEST_F(LogFileTest, RegularFileIsOpenedBlockingWithMode0640) {
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, file_, "master").ok());
  ASSERT_GE(Log::Fd(), 0);
  int fl = fcntl(Log::Fd(), F_GETFL);
  EXPECT_EQ(fl & O_NONBLOCK, 0);
  EXPECT_NE(fl & O_APPEND, 0);
  EXPECT_NE(fcntl(Log::Fd(), F_GETFD) & FD_CLOEXEC, 0);
  struct stat st;
  ASSERT_EQ(stat(file_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777 & ~0640u, 0u);
}

// Only the last component is protected: a directory anyone may write is
// worth a warning (not with the sticky bit, as /tmp).
TEST_F(LogFileTest, WorldWritableDirectoryIsAWarning) {
  std::string open_dir = dir_.Sub("open");
  ASSERT_EQ(mkdir(open_dir.c_str(), 0755), 0);
  ASSERT_EQ(chmod(open_dir.c_str(), 0777), 0);
  std::string file = open_dir + "/x.log";
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, file, "master").ok());
  EXPECT_NE(testing::ReadFile(file).find(
                "warn  [" + std::to_string(getpid()) + "] master: log.file " + file +
                ": its directory " + open_dir +
                " is writable by every user (mode 0777, no sticky bit), so anyone may replace "
                "the file; make it writable by root only"),
            std::string::npos)
      << testing::ReadFile(file);
  EXPECT_EQ(OwnFileDirectoryWarning("log.file", file_), "");
  ASSERT_EQ(chmod(open_dir.c_str(), 01777), 0);
  EXPECT_EQ(OwnFileDirectoryWarning("log.file", file), "");
}

TEST(LogTest, ParseLevel) {
  LogLevel l;
  EXPECT_TRUE(ParseLogLevel("debug", &l));
  EXPECT_EQ(l, LogLevel::kDebug);
  EXPECT_TRUE(ParseLogLevel("warning", &l));
  EXPECT_EQ(l, LogLevel::kWarn);
  EXPECT_FALSE(ParseLogLevel("INFO", &l));
}

// ------------------------------------------------------------- JSON lines

// Sets the JSON format for one test and puts text back after it.
class JsonLogTest : public ::testing::Test {
 protected:
  void SetUp() override { Log::SetFormat(LogFormat::kJson); }
  void TearDown() override {
    Log::SetFormat(LogFormat::kText);
    Log::SetJobId("");
    Log::SetRole("master");
    Log::ClearSecrets();
  }
  // The line parsed; fails the test when it is not one JSON object + "\n".
  static nlohmann::json Parse(const std::string& line) {
    EXPECT_FALSE(line.empty());
    EXPECT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(j.is_object()) << line;
    return j;
  }
};

TEST_F(JsonLogTest, LineHasTimeLevelPidRoleAndMessage) {
  Log::SetRole("worker 3");
  auto j = Parse(Log::Format(LogLevel::kWarn, "hello"));
  EXPECT_EQ(j.size(), 5u) << j.dump();
  EXPECT_TRUE(std::regex_match(j["time"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["pid"], getpid());
  EXPECT_EQ(j["role"], "worker 3");
  EXPECT_EQ(j["message"], "hello");
  EXPECT_FALSE(j.contains("job_id"));
}

TEST_F(JsonLogTest, JobIdIsThereWhileAJobIsInScope) {
  {
    LogJobScope scope("job-42");
    EXPECT_EQ(Parse(Log::Format(LogLevel::kInfo, "x"))["job_id"], "job-42");
  }
  EXPECT_FALSE(Parse(Log::Format(LogLevel::kInfo, "x")).contains("job_id"));
}

TEST_F(JsonLogTest, QuotesBackslashesAndControlsAreEscaped) {
  std::string msg = "a \"quoted\" \\path\\ tab\there \x01\x1f\x7f bell\a";
  std::string line = Log::Format(LogLevel::kInfo, msg);
  EXPECT_NE(line.find(R"(a \"quoted\" \\path\\ tab\there \u0001\u001f)"), std::string::npos)
      << line;
  EXPECT_EQ(Parse(line)["message"], msg);
  // Newlines are folded to spaces first, as in text lines.
  EXPECT_EQ(Parse(Log::Format(LogLevel::kInfo, "two\nlines\r"))["message"], "two lines ");
}

TEST_F(JsonLogTest, Utf8IsKeptAndInvalidBytesBecomeReplacementCharacters) {
  EXPECT_EQ(Parse(Log::Format(LogLevel::kInfo, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"))["message"],
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  const std::string kFffd = "\xef\xbf\xbd";
  struct Case {
    std::string in, out;
  } cases[] = {
      {"a\xff" "b", "a" + kFffd + "b"},                     // never valid
      {"\xc3", kFffd},                                     // truncated at the end
      {"\xc3(", kFffd + "("},                              // bad continuation
      {"\xc0\xaf", kFffd + kFffd},                        // overlong "/"
      {"\xe0\x80\xaf", kFffd + kFffd + kFffd},             // overlong, 3 bytes
      {"\xed\xa0\x80", kFffd + kFffd + kFffd},             // UTF-16 surrogate
      {"\xf4\x90\x80\x80", kFffd + kFffd + kFffd + kFffd},  // past U+10FFFF
      {"\x80x", kFffd + "x"},                              // lone continuation
  };
  for (const auto& c : cases) {
    std::string line = Log::Format(LogLevel::kInfo, c.in);
    auto j = Parse(line);
    EXPECT_EQ(j["message"], c.out) << line;
  }
  // Role and job id come from elsewhere and are escaped the same way.
  Log::SetRole("wor\"ker\xff");
  LogJobScope scope("id\\\x01\xfe");
  auto j = Parse(Log::Format(LogLevel::kInfo, "m"));
  EXPECT_EQ(j["role"], "wor\"ker" + kFffd);
  EXPECT_EQ(j["job_id"], "id\\\x01" + kFffd);
}

TEST_F(JsonLogTest, SecretsAreScrubbedBeforeEscaping) {
  Log::AddSecret("pa\"ss\\word");
  LogJobScope scope("job-with-pa\"ss\\word");
  std::string line = Log::Format(LogLevel::kError,
                                 "auth pa\"ss\\word failed for https://bob:hunter2@example.com/x");
  auto j = Parse(line);
  EXPECT_EQ(j["message"], "auth **** failed for https://bob:****@example.com/x");
  EXPECT_EQ(j["job_id"], "job-with-****");
  EXPECT_EQ(line.find("hunter2"), std::string::npos);
  EXPECT_EQ(line.find("ss\\\\word"), std::string::npos);
}

// Bounded as text lines are: the message is scrubbed, then cut to 2047
// bytes at a character boundary, then escaped; still one line, still JSON.
TEST_F(JsonLogTest, LongMessagesAreScrubbedThenCutAtACharacterBoundary) {
  const std::string secret = "correct-horse-battery-staple";
  Log::AddSecret(secret);
  for (size_t pad = 2030; pad < 2050; ++pad) {
    auto j = Parse(Log::Format(LogLevel::kInfo, std::string(pad, 'x') + secret + " tail"));
    std::string m = j["message"];
    EXPECT_LE(m.size(), 2047u);
    EXPECT_EQ(m.find("correct-h"), std::string::npos) << pad;
  }
  // "é" is two bytes: 2046 x then é ends at byte 2048, so it is left out
  // whole instead of leaving half of it behind.
  auto j = Parse(Log::Format(LogLevel::kInfo, std::string(2046, 'x') + "\xc3\xa9 tail"));
  EXPECT_EQ(j["message"], std::string(2046, 'x'));
  // Escaping grows a line of controls sixfold, and no more.
  std::string line = Log::Format(LogLevel::kInfo, std::string(5000, '\x01'));
  EXPECT_LT(line.size(), 2047u * 6 + 200);
  EXPECT_EQ(Parse(line)["message"].get<std::string>().size(), 2047u);
  // A job id from the queue is cut too.
  LogJobScope scope(std::string(1000, 'j'));
  EXPECT_EQ(Parse(Log::Format(LogLevel::kInfo, "m"))["job_id"].get<std::string>().size(), 128u);
}

TEST_F(JsonLogTest, WrittenLinesAreJson) {
  testing::TempDir dir;
  std::string file = dir.Sub("x.log");
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, file, "master").ok());
  LOG_INFO("one %s", "\xff");
  LOG_ERROR("two");
  ASSERT_TRUE(Log::Init(LogLevel::kInfo, "", "master").ok());
  std::string text = testing::ReadFile(file);
  size_t start = 0, lines = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1, lines++)
    Parse(text.substr(start, nl + 1 - start));
  EXPECT_EQ(lines, 2u) << text;
}

TEST(LogTest, ParseFormat) {
  LogFormat f;
  EXPECT_TRUE(ParseLogFormat("json", &f));
  EXPECT_EQ(f, LogFormat::kJson);
  EXPECT_TRUE(ParseLogFormat("text", &f));
  EXPECT_EQ(f, LogFormat::kText);
  EXPECT_FALSE(ParseLogFormat("JSON", &f));
  EXPECT_STREQ(LogFormatName(LogFormat::kJson), "json");
}

}  // namespace
}  // namespace djinn
