// log.format = "json" on the real daemon: every line of the log, from the
// master and the workers, is one JSON object a real parser accepts, with
// time, level, pid, role, message, and job_id on the lines a worker logs
// while it runs a job; secrets are scrubbed as in text lines, and bytes
// that are not UTF-8 (a job id from the queue) do not break a line.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <regex>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/queue_fixture.h"

namespace djinn::testing {
namespace {

using std::chrono::seconds;

const char kSecret[] = "db-secret-Zq8xW3";
const char kFffd[] = "\xef\xbf\xbd";

class JsonLogDaemonTest : public QueueFixture {};

TEST_F(JsonLogDaemonTest, EveryLineIsJsonWithJobIdsAndNoSecret) {
  DaemonOptions o = Opts(1);
  o.attempts = 0;  // the failing job dies on its first try
  o.database_password = kSecret;
  Daemon d(o);
  std::string config = d.ConfigText();
  const std::string log_group = "log = { level = \"debug\";";
  ASSERT_NE(config.find(log_group), std::string::npos);
  config.replace(config.find(log_group), log_group.size(), log_group + " format = \"json\";");
  d.WriteConfig(config);
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  const pid_t master = d.pid();  // -1 once it is reaped

  Push("json-ping", R"({"job":"ping"})");
  Push("json-fail", R"({"job":"fail"})");
  // An unknown job whose name is the password: poison, logged scrubbed.
  Push("json-unknown", std::string(R"({"job":")") + kSecret + R"("})");
  // Poison with an id that is not UTF-8 and an envelope that is not msgpack.
  const std::string bad_id = "json-poison-\xff\xfe";
  client_->PushLikeCurlyqV040("jobs", bad_id, std::string("not an envelope \xc3(") + kSecret);
  ASSERT_TRUE(WaitFor([&] { return Gone("json-ping"); })) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Dead("json-fail"); })) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Dead("json-unknown"); })) << d.Log();
  ASSERT_TRUE(WaitFor([&] { return Dead(bad_id); })) << d.Log();
  ASSERT_TRUE(d.Signal(SIGTERM));
  int status = d.Wait(seconds(30));
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  std::string text = ReadFile(d.log_path());
  EXPECT_EQ(text.find(kSecret), std::string::npos) << text;
  ASSERT_FALSE(text.empty());
  ASSERT_EQ(text.back(), '\n');
  const std::regex time_re(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
  const std::set<std::string> keys = {"time", "level", "pid", "role", "job_id", "message"};
  const std::set<std::string> levels = {"debug", "info", "warn", "error"};
  std::map<std::string, int> job_lines;  // job_id -> lines
  std::set<pid_t> master_pids, worker_pids;
  bool scrubbed = false;
  size_t lines = 0;
  for (size_t start = 0, nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::string line = text.substr(start, nl - start);
    lines++;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << line;
    for (const auto& [k, v] : j.items()) EXPECT_TRUE(keys.count(k)) << k << " in " << line;
    ASSERT_TRUE(j["time"].is_string() && j["level"].is_string() && j["pid"].is_number_integer() &&
                j["role"].is_string() && j["message"].is_string())
        << line;
    EXPECT_TRUE(std::regex_match(j["time"].get<std::string>(), time_re)) << line;
    EXPECT_TRUE(levels.count(j["level"].get<std::string>())) << line;
    std::string role = j["role"], message = j["message"];
    pid_t pid = j["pid"].get<pid_t>();
    if (role == "master") {
      master_pids.insert(pid);
      EXPECT_FALSE(j.contains("job_id")) << line;  // the master runs no job
    } else {
      EXPECT_EQ(role, "worker 1") << line;
      worker_pids.insert(pid);
    }
    if (message.find("****") != std::string::npos) scrubbed = true;
    if (j.contains("job_id")) {
      std::string id = j["job_id"];
      job_lines[id]++;
      // A job line is about that job.
      EXPECT_NE(message.find("job " + id), std::string::npos) << line;
    } else if (role != "master") {
      // A worker's line naming a job is logged while it runs it.
      for (const char* id : {"json-ping", "json-fail", "json-unknown", "json-poison"})
        EXPECT_EQ(message.find(std::string("job ") + id), std::string::npos) << line;
    }
  }
  EXPECT_GT(lines, 10u);
  EXPECT_EQ(master_pids, std::set<pid_t>{master});
  EXPECT_EQ(worker_pids.size(), 1u);
  EXPECT_TRUE(scrubbed) << text;
  EXPECT_GE(job_lines["json-ping"], 1) << text;  // "done", at debug level
  EXPECT_GE(job_lines["json-fail"], 1) << text;
  EXPECT_GE(job_lines["json-unknown"], 1) << text;
  EXPECT_GE(job_lines[std::string("json-poison-") + kFffd + kFffd], 1) << text;
  // The same secret scrubbing as in text lines: the poison name is there,
  // the password is not.
  EXPECT_NE(text.find(R"(unknown job \"****\")"), std::string::npos) << text;
}

}  // namespace
}  // namespace djinn::testing
