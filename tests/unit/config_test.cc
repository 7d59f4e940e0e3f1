#include "common/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/harness/harness.h"

namespace djinn {
namespace {

using testing::TempDir;
using testing::WriteFile;

constexpr const char* kMinimal = R"(
database = { addr = "127.0.0.1:5432"; name = "djinn"; username = "u"; };
redis = { addr = "127.0.0.1:6379"; };
store = { images = { type = "file"; path = "/var/lib/djinn/images"; }; };
)";

class ConfigTest : public ::testing::Test {
 protected:
  // Writes text to a file and loads it.
  Result<Config> Load(const std::string& text) {
    WriteFile(path_, text);
    return LoadConfig(path_);
  }
  std::string Error(const std::string& text) {
    auto r = Load(text);
    EXPECT_FALSE(r.ok()) << "accepted:\n" << text;
    return r.ok() ? "" : r.status().message();
  }
  TempDir dir_;
  const std::string path_ = dir_.Sub("consumer.conf");
};

TEST_F(ConfigTest, MinimalConfigGetsEveryDefault) {
  auto r = Load(kMinimal);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Config& c = *r;
  EXPECT_EQ(c.pidfile, "");
  EXPECT_EQ(c.log_level, LogLevel::kInfo);
  EXPECT_EQ(c.log_file, "");
  EXPECT_EQ(c.workers, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
  EXPECT_EQ(c.user, "");
  EXPECT_EQ(c.queue, "jobs");
  EXPECT_EQ(c.attempts, 5);
  EXPECT_EQ(c.job_timeout, 900);
  EXPECT_EQ(c.shutdown_timeout, 60);
  EXPECT_EQ(c.database.addr, "127.0.0.1:5432");
  EXPECT_EQ(c.database.password, "");
  EXPECT_FALSE(c.database.tls_enabled);
  EXPECT_EQ(c.redis.addr, "127.0.0.1:6379");
  EXPECT_EQ(c.store.path, "/var/lib/djinn/images");
  EXPECT_EQ(c.store.limit, 0u);
  EXPECT_EQ(c.download.timeout, 600);
  EXPECT_EQ(c.download.max_size, 0u);
  EXPECT_FALSE(c.download.allow_private);
  EXPECT_EQ(c.download.ca, "");
  EXPECT_EQ(c.download.known_hosts, "");
}

TEST_F(ConfigTest, EveryParameterIsRead) {
  std::string pw = dir_.Sub("dbpass");
  WriteFile(pw, "s3cret\n");
  for (const char* f : {"ca.pem", "c.pem", "k.pem", "d.pem", "kh"}) WriteFile(dir_.Sub(f), "x");
  std::string d = dir_.path();
  auto r = Load(R"(
pidfile = "/run/x.pid";
log = { level = "debug"; file = "/tmp/x.log"; };
workers = 3; user = "root"; group = "root"; queue = "q2"; attempts = 7;
job_timeout = 30; shutdown_timeout = 5;
database = { addr = "/run/postgresql"; name = "n"; username = "u"; password_file = ")" + pw + R"(";
  tls = { ca = ")" + d + R"(/ca.pem"; cert = ")" + d + R"(/c.pem"; key = ")" + d + R"(/k.pem"; }; };
redis = { addr = "/run/redis.sock"; password = "rp"; };
store = { images = { type = "file"; path = "/srv/images/"; limit = 1073741824; }; };
download = { timeout = 60; max_size = 2147483648L; allow_private = true; ca = ")" + d + R"(/d.pem"; known_hosts = ")" + d + R"(/kh"; };
)");
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Config& c = *r;
  EXPECT_EQ(c.pidfile, "/run/x.pid");
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
  EXPECT_EQ(c.log_file, "/tmp/x.log");
  EXPECT_EQ(c.workers, 3);
  EXPECT_EQ(c.user, "root");
  EXPECT_EQ(c.group, "root");
  EXPECT_EQ(c.queue, "q2");
  EXPECT_EQ(c.attempts, 7);
  EXPECT_EQ(c.job_timeout, 30);
  EXPECT_EQ(c.shutdown_timeout, 5);
  EXPECT_EQ(c.database.addr, "/run/postgresql");
  EXPECT_EQ(c.database.name, "n");
  EXPECT_EQ(c.database.password, "s3cret");
  EXPECT_TRUE(c.database.tls_enabled);
  EXPECT_EQ(c.database.tls.ca, d + "/ca.pem");
  EXPECT_EQ(c.database.tls.cert, d + "/c.pem");
  EXPECT_EQ(c.database.tls.key, d + "/k.pem");
  EXPECT_EQ(c.redis.addr, "/run/redis.sock");
  EXPECT_EQ(c.redis.password, "rp");
  EXPECT_EQ(c.store.path, "/srv/images");
  EXPECT_EQ(c.store.limit, 1073741824u);
  EXPECT_EQ(c.download.timeout, 60);
  EXPECT_EQ(c.download.max_size, 2147483648u);
  EXPECT_TRUE(c.download.allow_private);
  EXPECT_EQ(c.download.ca, d + "/d.pem");
  EXPECT_EQ(c.download.known_hosts, d + "/kh");
}

TEST_F(ConfigTest, WrongTypeNamesFileLineAndParameter) {
  std::string e = Error(std::string(kMinimal) + "\nworkers = \"four\";\n");
  EXPECT_EQ(e, path_ + ":6: workers: expected an integer");
  e = Error(R"(database = { addr = 5432; name = "d"; username = "u"; };)");
  EXPECT_EQ(e, path_ + ":1: database.addr: expected a string");
}

TEST_F(ConfigTest, UnknownParameterIsAnError) {
  EXPECT_EQ(Error(std::string(kMinimal) + "worker = 4;\n"), path_ + ":5: worker: unknown parameter");
  EXPECT_EQ(Error(std::string(kMinimal) + "download = { timout = 4; };\n"),
            path_ + ":5: download.timout: unknown parameter");
}

TEST_F(ConfigTest, RangesAreChecked) {
  EXPECT_NE(Error(std::string(kMinimal) + "workers = 0;\n").find("workers: must be between 1 and 1024 (got 0)"),
            std::string::npos);
  EXPECT_NE(Error(std::string(kMinimal) + "attempts = -1;\n").find("attempts: must be between 0 and 1000"), std::string::npos);
  EXPECT_NE(Error(std::string(kMinimal) + "job_timeout = -1;\n").find("job_timeout: must be between"), std::string::npos);
  EXPECT_NE(Error(std::string(kMinimal) + "download = { max_size = -1; };\n").find("download.max_size"), std::string::npos);
  EXPECT_NE(Error(std::string(kMinimal) + "log = { level = \"loud\"; };\n").find("log.level: expected one of"), std::string::npos);
}

TEST_F(ConfigTest, LargeIntegerWithoutSuffixIsExplained) {
  std::string e = Error(R"(database = { addr = "a:1"; name = "d"; username = "u"; };
redis = { addr = "a:1"; };
store = { images = { type = "file"; path = "/x"; limit = 10737418240; }; };)");
  EXPECT_NE(e.find(":3: store.images.limit: integer out of 32-bit range; write large values with an L"),
            std::string::npos) << e;
}

TEST_F(ConfigTest, StoreMustBeImagesOfTypeFile) {
  EXPECT_NE(Error(R"(database = { addr = "a:1"; name = "d"; username = "u"; };
redis = { addr = "a:1"; };
store = { images = { type = "s3"; path = "/x"; }; };)").find(":3: store.images.type: only \"file\""),
            std::string::npos);
  EXPECT_NE(Error(R"(database = { addr = "a:1"; name = "d"; username = "u"; };
redis = { addr = "a:1"; };
store = { other = { type = "file"; path = "/x"; }; };)").find(":3: store.other: unknown store"),
            std::string::npos);
  EXPECT_NE(Error(R"(database = { addr = "a:1"; name = "d"; username = "u"; };
redis = { addr = "a:1"; };
store = { images = { type = "file"; path = "relative"; }; };)").find("store.images.path: must be an absolute path"),
            std::string::npos);
}

TEST_F(ConfigTest, MissingRequiredIsAnError) {
  EXPECT_EQ(Error(R"(database = { addr = "a:1"; name = "d"; username = "u"; };
redis = { addr = "a:1"; };)"), path_ + ": store.images: missing (required)");
  EXPECT_EQ(Error(R"(redis = { addr = "a:1"; };
store = { images = { type = "file"; path = "/x"; }; };)"), path_ + ": database: missing (required)");
}

TEST_F(ConfigTest, PasswordAndPasswordFileAreExclusive) {
  std::string pw = dir_.Sub("p");
  WriteFile(pw, "x");
  EXPECT_NE(Error(R"(database = { addr = "a:1"; name = "d"; username = "u"; };
store = { images = { type = "file"; path = "/x"; }; };
redis = { addr = "a:1"; password = "a"; password_file = ")" + pw + R"("; };)")
                .find(":3: redis.password_file: give password or password_file, not both"),
            std::string::npos);
}

TEST_F(ConfigTest, MissingPasswordFileIsNamed) {
  std::string e = Error(R"(database = { addr = "a:1"; name = "d"; username = "u"; };
store = { images = { type = "file"; path = "/x"; }; };
redis = { addr = "a:1"; password_file = "/nonexistent/p"; };)");
  EXPECT_NE(e.find("redis.password_file: /nonexistent/p: No such file or directory"), std::string::npos) << e;
}

TEST_F(ConfigTest, SyntaxErrorNamesLine) {
  std::string e = Error("workers = 4\nqueue = ;\n");
  EXPECT_EQ(e.rfind(path_ + ":", 0), 0u) << e;
  EXPECT_NE(e.find(":2:"), std::string::npos) << e;
}

TEST_F(ConfigTest, UnknownUserIsAnError) {
  EXPECT_NE(Error(std::string(kMinimal) + "user = \"no-such-user-xyz\";\n").find("user: no such user"),
            std::string::npos);
}

TEST_F(ConfigTest, MissingCaOrKnownHostsFileIsNamed) {
  std::string e = Error(std::string(kMinimal) + "download = { ca = \"/nonexistent/ca.pem\"; };\n");
  EXPECT_NE(e.find(":5: download.ca: /nonexistent/ca.pem: No such file or directory"), std::string::npos) << e;
  e = Error(std::string(kMinimal) + "download = { known_hosts = \"/nonexistent/kh\"; };\n");
  EXPECT_NE(e.find(":5: download.known_hosts: /nonexistent/kh: No such file"), std::string::npos) << e;
}

TEST_F(ConfigTest, TlsNeedsCaAndCertWithKey) {
  EXPECT_NE(Error(R"(database = { addr = "a:1"; name = "d"; username = "u"; tls = { cert = "/dev/null"; key = "/dev/null"; }; };
redis = { addr = "a:1"; };
store = { images = { type = "file"; path = "/x"; }; };)").find("database.tls.ca: required"),
            std::string::npos);
  EXPECT_NE(Error(R"(database = { addr = "a:1"; name = "d"; username = "u"; tls = { ca = "/dev/null"; cert = "/dev/null"; }; };
redis = { addr = "a:1"; };
store = { images = { type = "file"; path = "/x"; }; };)").find("cert and key go together"),
            std::string::npos);
}

TEST_F(ConfigTest, UnreadableFileIsAnError) {
  auto r = LoadConfig(dir_.Sub("absent.conf"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("absent.conf: cannot read"), std::string::npos);
}

TEST_F(ConfigTest, SampleConfigIsValid) {
  auto r = LoadConfig("etc/djinn-consumer.conf");
  EXPECT_TRUE(r.ok()) << r.status().message();
}

TEST_F(ConfigTest, ParameterNamesListsEveryLeaf) {
  const auto& names = ConfigParameterNames();
  for (const char* n : {"pidfile", "log.level", "log.file", "workers", "user", "group", "queue",
                        "attempts", "job_timeout", "shutdown_timeout", "database.addr",
                        "database.password_file", "database.tls.ca", "redis.password_file",
                        "store.images.limit", "download.allow_private", "download.known_hosts"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

// ------------------------------------------------------ Djinn's own syntax

std::string DjinnSample() {
  const char* dir = getenv("DJINN_TEST_DATA");
  return testing::ReadFile(std::string(dir ? dir : "tests/data") + "/djinn/consumer.conf");
}

constexpr const char* kDjinnMinimal = R"(
database {
	addr "127.0.0.1:5432"
}
redis {
	addr "127.0.0.1:6379"
}
store images {
	type "file"
	path "/var/lib/djinn/images"
}
)";

TEST_F(ConfigTest, DjinnShippedSampleIsReadVerbatim) {
  auto r = Load(DjinnSample());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Config& c = *r;
  EXPECT_TRUE(c.djinn_syntax);
  EXPECT_TRUE(c.warnings.empty());
  EXPECT_EQ(c.pidfile, "/var/run/djinn/consumer.pid");
  EXPECT_EQ(c.log_level, LogLevel::kInfo);
  EXPECT_EQ(c.log_file, "/var/log/djinn/consumer.log");
  EXPECT_EQ(c.database.addr, "localhost:5432");
  EXPECT_EQ(c.database.name, "djinn");
  EXPECT_EQ(c.database.username, "djinn_consumer");
  EXPECT_EQ(c.database.password, "secret");
  EXPECT_EQ(c.redis.addr, "localhost:6379");
  EXPECT_EQ(c.store.path, "/var/lib/djinn/images");
  EXPECT_EQ(c.attempts, 5);
  EXPECT_EQ(c.workers, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
}

TEST_F(ConfigTest, DjinnSyntaxReadsEveryParameterOfOursAndDjinns) {
  std::string pw = dir_.Sub("dbpass");
  WriteFile(pw, "s3cret\n");
  for (const char* f : {"ca.pem", "c.pem", "k.pem", "d.pem", "kh"}) WriteFile(dir_.Sub(f), "x");
  std::string d = dir_.path();
  auto r = Load(R"(
pidfile "/run/x.pid"
log debug "/tmp/x.log"
Parallelism 3; user "root"; group "root"; queue "q2"; attempts 7
job_timeout 15m; shutdown_timeout 90s
crypto {
	auth "a"
	block "0123456789abcdef"
	hash "h"
	salt "pepper"
}
database {
	addr "/run/postgresql"; name "n"; username "u"; password_file ")" + pw + R"("
	tls { ca ")" + d + R"(/ca.pem"; cert ")" + d + R"(/c.pem"; key ")" + d + R"(/k.pem" }
}
redis { addr "/run/redis.sock"; password "rp" }
store images { type "file"; path "/srv/images/"; limit 10GB }
download { timeout 1h30m; max_size 512MB; allow_private true; ca ")" + d + R"(/d.pem"; known_hosts ")" + d + R"(/kh" }
)");
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Config& c = *r;
  EXPECT_TRUE(c.warnings.empty()) << c.warnings[0];
  EXPECT_EQ(c.pidfile, "/run/x.pid");
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
  EXPECT_EQ(c.log_file, "/tmp/x.log");
  EXPECT_EQ(c.workers, 3);
  EXPECT_EQ(c.user, "root");
  EXPECT_EQ(c.group, "root");
  EXPECT_EQ(c.queue, "q2");
  EXPECT_EQ(c.attempts, 7);
  EXPECT_EQ(c.job_timeout, 900);
  EXPECT_EQ(c.shutdown_timeout, 90);
  EXPECT_TRUE(c.crypto.set);
  EXPECT_EQ(c.crypto.auth, "a");
  EXPECT_EQ(c.crypto.block, "0123456789abcdef");
  EXPECT_EQ(c.crypto.hash, "h");
  EXPECT_EQ(c.crypto.salt, "pepper");
  EXPECT_EQ(c.database.addr, "/run/postgresql");
  EXPECT_EQ(c.database.password, "s3cret");
  EXPECT_EQ(c.database.password_file, pw);
  EXPECT_TRUE(c.database.tls_enabled);
  EXPECT_EQ(c.database.tls.key, d + "/k.pem");
  EXPECT_EQ(c.redis.password, "rp");
  EXPECT_EQ(c.store.path, "/srv/images");
  EXPECT_EQ(c.store.limit, uint64_t{10} << 30);
  EXPECT_EQ(c.download.timeout, 5400);
  EXPECT_EQ(c.download.max_size, uint64_t{512} << 20);
  EXPECT_TRUE(c.download.allow_private);
  EXPECT_EQ(c.download.known_hosts, d + "/kh");
}

TEST_F(ConfigTest, DurationsAndSizesMeanTheSameInBothSyntaxes) {
  auto lc = Load(std::string(kMinimal) +
                 "job_timeout = \"15m\"; download = { timeout = \"1h\"; max_size = \"50MB\"; };\n");
  ASSERT_TRUE(lc.ok()) << lc.status().message();
  auto dj = Load(std::string(kDjinnMinimal) + "job_timeout 15m\ndownload { timeout 1h; max_size 50MB }\n");
  ASSERT_TRUE(dj.ok()) << dj.status().message();
  auto bare = Load(std::string(kMinimal) + "job_timeout = 900; download = { timeout = 3600; max_size = 52428800; };\n");
  ASSERT_TRUE(bare.ok()) << bare.status().message();
  for (const Config* c : {&*lc, &*dj, &*bare}) {
    EXPECT_EQ(c->job_timeout, 900);
    EXPECT_EQ(c->download.timeout, 3600);
    EXPECT_EQ(c->download.max_size, 52428800u);
  }
  EXPECT_NE(Error(std::string(kMinimal) + "job_timeout = \"1.5s\";\n").find("job_timeout: must be a whole number of seconds"),
            std::string::npos);
  EXPECT_NE(Error(std::string(kMinimal) + "job_timeout = \"soon\";\n").find("job_timeout: invalid duration \"soon\""),
            std::string::npos);
  EXPECT_NE(Error(std::string(kDjinnMinimal) + "job_timeout 8d\n").find(":12: job_timeout: invalid number \"8d\""),
            std::string::npos);
  EXPECT_NE(Error(std::string(kMinimal) + "download = { max_size = \"5PB\"; };\n").find("download.max_size: invalid size \"5PB\""),
            std::string::npos);
  EXPECT_NE(Error(std::string(kDjinnMinimal) + "job_timeout \"later\"\n").find("job_timeout: invalid duration"),
            std::string::npos);
}

TEST_F(ConfigTest, DjinnLogGivenTwiceTakesTheMostVerbose) {
  auto r = Load(std::string(kDjinnMinimal) + "log error \"/tmp/e.log\"\nlog debug \"/tmp/d.log\"\nlog info \"/tmp/i.log\"\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->log_level, LogLevel::kDebug);
  EXPECT_EQ(r->log_file, "/tmp/d.log");
  EXPECT_TRUE(r->warnings.empty());
  auto out = Load(std::string(kDjinnMinimal) + "log warn \"/dev/stdout\"\n");
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(out->log_level, LogLevel::kWarn);
  EXPECT_EQ(out->log_file, "");  // standard error
  EXPECT_EQ(Error(std::string(kDjinnMinimal) + "log loud \"/tmp/x\"\n"),
            path_ + ":12: log: unknown level \"loud\" (expected debug, info, warn or error)");
}

// log.format: text by default, json on request, in both syntaxes; in
// Djinn's, a `log { }` block beside `log LEVEL "FILE"` is the same group.
TEST_F(ConfigTest, LogFormatInBothSyntaxes) {
  auto def = Load(kMinimal);
  ASSERT_TRUE(def.ok()) << def.status().message();
  EXPECT_EQ(def->log_format, LogFormat::kText);
  auto lc = Load(std::string(kMinimal) + "log = { level = \"warn\"; format = \"json\"; };\n");
  ASSERT_TRUE(lc.ok()) << lc.status().message();
  EXPECT_EQ(lc->log_format, LogFormat::kJson);
  EXPECT_EQ(lc->log_level, LogLevel::kWarn);
  EXPECT_NE(FormatConfig(*lc).find("format = \"json\";"), std::string::npos) << FormatConfig(*lc);
  EXPECT_EQ(Error(std::string(kMinimal) + "log = { format = \"xml\"; };\n"),
            path_ + ":5: log.format: expected text or json (got \"xml\")");

  auto dj = Load(std::string(kDjinnMinimal) + "log debug \"/tmp/d.log\"\nlog { format \"json\" }\n");
  ASSERT_TRUE(dj.ok()) << dj.status().message();
  EXPECT_EQ(dj->log_format, LogFormat::kJson);
  EXPECT_EQ(dj->log_level, LogLevel::kDebug);
  EXPECT_EQ(dj->log_file, "/tmp/d.log");
  EXPECT_TRUE(dj->warnings.empty()) << dj->warnings[0];
  // The block alone, and before the labelled form.
  auto alone = Load(std::string(kDjinnMinimal) + "log { format \"json\" }\n");
  ASSERT_TRUE(alone.ok()) << alone.status().message();
  EXPECT_EQ(alone->log_format, LogFormat::kJson);
  auto first = Load(std::string(kDjinnMinimal) + "log { format \"json\" }\nlog warn \"/tmp/w.log\"\n");
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_EQ(first->log_format, LogFormat::kJson);
  EXPECT_EQ(first->log_file, "/tmp/w.log");
  EXPECT_TRUE(first->warnings.empty()) << first->warnings[0];
}

// The master writes both as root: a relative name would depend on the
// directory it was started in.
TEST_F(ConfigTest, LogFileAndPidfileMustBeAbsolute) {
  EXPECT_EQ(Error(std::string(kMinimal) + "log = { file = \"x.log\"; };\n"),
            path_ + ":5: log.file: must be an absolute path (got \"x.log\")");
  EXPECT_EQ(Error(std::string(kMinimal) + "pidfile = \"run/x.pid\";\n"),
            path_ + ":5: pidfile: must be an absolute path (got \"run/x.pid\")");
  EXPECT_EQ(Error(std::string(kMinimal) + "pidfile = \"./x.pid\";\n"),
            path_ + ":5: pidfile: must be an absolute path (got \"./x.pid\")");
  auto r = Load(std::string(kMinimal) +
                "pidfile = \"/run/x.pid\"; log = { file = \"/var/log/x.log\"; };\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->pidfile, "/run/x.pid");
  EXPECT_EQ(r->log_file, "/var/log/x.log");
  // "" is none (standard error, no pidfile), as before.
  r = Load(std::string(kMinimal) + "pidfile = \"\"; log = { file = \"\"; };\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->pidfile, "");
  EXPECT_EQ(r->log_file, "");
}

TEST_F(ConfigTest, DjinnLogFileAndPidfileMustBeAbsolute) {
  EXPECT_EQ(Error(std::string(kDjinnMinimal) + "log info \"x.log\"\n"),
            path_ + ":12: log.file: must be an absolute path (got \"x.log\")");
  EXPECT_EQ(Error(std::string(kDjinnMinimal) + "pidfile \"consumer.pid\"\n"),
            path_ + ":12: pidfile: must be an absolute path (got \"consumer.pid\")");
  // The most verbose log wins before the check: a relative file given with
  // a less verbose level is ignored, as Djinn's consumer ignores it.
  auto r = Load(std::string(kDjinnMinimal) + "log error \"e.log\"\nlog debug \"/tmp/d.log\"\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->log_file, "/tmp/d.log");
  r = Load(std::string(kDjinnMinimal) + "log info \"/dev/stdout\"\npidfile \"/run/x.pid\"\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->log_file, "");
  EXPECT_EQ(r->pidfile, "/run/x.pid");
}

TEST_F(ConfigTest, DjinnUnknownParameterIsAWarningNamingFileAndLine) {
  auto r = Load(std::string(kDjinnMinimal) + "smtp { addr \"x\" }\ndownload { timout 4 }\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->warnings.size(), 2u);
  EXPECT_EQ(r->warnings[0], path_ + ":12: smtp: unknown parameter; ignored");
  EXPECT_EQ(r->warnings[1], path_ + ":13: download.timout: unknown parameter; ignored");
}

TEST_F(ConfigTest, DjinnOtherStoreIsAWarning) {
  auto r = Load(std::string(kDjinnMinimal) + "store other { type \"file\" }\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_EQ(r->warnings[0], path_ + ":12: store.other: unknown store (the only store is \"images\"); ignored");
}

TEST_F(ConfigTest, DjinnSslIsTlsWithAWarning) {
  std::string ca = dir_.Sub("ca.pem");
  WriteFile(ca, "x");
  auto r = Load("database {\n\taddr \"a:1\"\n\tssl {\n\t\tca \"" + ca +
                "\"\n\t}\n}\nredis { addr \"a:1\" }\nstore images { type \"file\"; path \"/x\" }\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->database.tls_enabled);
  EXPECT_EQ(r->database.tls.ca, ca);
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_EQ(r->warnings[0], path_ + ":3: database.ssl: deprecated: read as database.tls");
}

TEST_F(ConfigTest, DjinnErrorsNameFileLineAndParameter) {
  EXPECT_EQ(Error(std::string(kDjinnMinimal) + "parallelism \"four\"\n"),
            path_ + ":12: parallelism: expected an integer");
  EXPECT_EQ(Error(std::string(kDjinnMinimal) + "download { allow_private 1 }\n"),
            path_ + ":12: download.allow_private: expected true or false");
  EXPECT_EQ(Error(std::string(kDjinnMinimal) + "redis cache { addr \"x\" }\n"),
            path_ + ":12: redis: unexpected label \"cache\"");
  EXPECT_EQ(Error(std::string(kDjinnMinimal) + "crypto { block \"short\"; salt \"s\" }\n"),
            path_ + ":12: crypto.block: must be 16, 24 or 32 bytes long (got 5)");
  EXPECT_EQ(Error(std::string(kDjinnMinimal) + "crypto { block \"0123456789abcdef\" }\n"),
            path_ + ":12: crypto.salt: required when crypto is set");
  EXPECT_EQ(Error("database { addr \"a:1\" }\nredis { addr \"a:1\" }\n"),
            path_ + ": store.images: missing (required)");
}

TEST_F(ConfigTest, DjinnErrorInAnIncludedFileNamesThatFile) {
  std::string inc = dir_.Sub("inc.conf");
  WriteFile(inc, "# included\nworkers 0\n");
  std::string e = Error(std::string(kDjinnMinimal) + "include \"inc.conf\"\n");
  EXPECT_EQ(e, inc + ":2: workers: must be between 1 and 1024 (got 0)");
}

TEST_F(ConfigTest, LibconfigSyntaxKeepsItsErrorsForUnknownParameters) {
  auto r = Load(kMinimal);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->djinn_syntax);
}

// -t -print: the effective configuration, in libconfig syntax, reads back
// to the same configuration; secrets are redacted.
TEST_F(ConfigTest, PrintedConfigReadsBackToTheSameConfig) {
  auto r = Load(DjinnSample() + "crypto { block \"0123456789abcdef\"; salt \"pepper\" }\n"
                "download { max_size 10GB; timeout 1h }\nqueue \"q \\\"x\\\"\"\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  std::string printed = FormatConfig(*r, /*redact=*/false);
  WriteFile(dir_.Sub("printed.conf"), printed);
  auto back = LoadConfig(dir_.Sub("printed.conf"));
  ASSERT_TRUE(back.ok()) << back.status().message() << "\n" << printed;
  EXPECT_FALSE(back->djinn_syntax);
  EXPECT_EQ(back->queue, "q \"x\"");
  EXPECT_EQ(back->download.max_size, uint64_t{10} << 30);
  // The same but for the header (two comment lines naming the file).
  auto body = [](const std::string& text) { return text.substr(text.find("\npidfile")); };
  EXPECT_EQ(body(FormatConfig(*back, false)), body(printed));
  std::string redacted = FormatConfig(*r);
  EXPECT_EQ(redacted.find("secret"), std::string::npos) << redacted;
  EXPECT_EQ(redacted.find("pepper"), std::string::npos) << redacted;
  EXPECT_EQ(redacted.find("0123456789abcdef"), std::string::npos) << redacted;
  EXPECT_NE(redacted.find("password = \"<redacted>\";"), std::string::npos) << redacted;
}

TEST_F(ConfigTest, WebhooksAreReadInBothSyntaxes) {
  std::string ca = dir_.Sub("hook-ca.pem");
  WriteFile(ca, "x");
  auto lc = Load(std::string(kMinimal) +
                 "crypto = { block = \"0123456789abcdef\"; salt = \"s\"; };\n"
                 "webhooks = { timeout = \"2m\"; attempts = 3; allow_private = true; ca = \"" + ca +
                 "\"; api_server = \"https://djinn.example.com\"; workers = 2; };\n");
  ASSERT_TRUE(lc.ok()) << lc.status().message();
  auto dj = Load(std::string(kDjinnMinimal) +
                 "crypto { block \"0123456789abcdef\"; salt \"s\" }\n"
                 "webhooks { timeout 2m; attempts 3; allow_private true; ca \"" + ca +
                 "\"; api_server \"https://djinn.example.com\"; workers 2 }\n");
  ASSERT_TRUE(dj.ok()) << dj.status().message();
  for (const Config* c : {&*lc, &*dj}) {
    EXPECT_EQ(c->webhooks.timeout, 120);
    EXPECT_EQ(c->webhooks.attempts, 3);
    EXPECT_TRUE(c->webhooks.allow_private);
    EXPECT_EQ(c->webhooks.ca, ca);
    EXPECT_EQ(c->webhooks.api_server, "https://djinn.example.com");
    EXPECT_EQ(c->webhooks.workers, 2);
  }
  auto defaults = Load(kMinimal);
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->webhooks.timeout, 60);
  EXPECT_EQ(defaults->webhooks.attempts, 5);
  EXPECT_FALSE(defaults->webhooks.allow_private);
  EXPECT_EQ(defaults->webhooks.workers, 1);
  EXPECT_NE(Error(std::string(kMinimal) + "webhooks = { workers = 0; };\n").find("webhooks.workers: must be between 1 and 64"),
            std::string::npos);
}

// ---------------------------------------------------- scale-out parameters

TEST_F(ConfigTest, ConsumerTimeoutDefaultsTo120AndWarnsBelowGoHeartbeat) {
  auto r = Load(kMinimal);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->queue_consumer_timeout, 120);
  EXPECT_TRUE(r->warnings.empty());
  auto s = Load(std::string(kMinimal) + "queue_consumer_timeout = \"30s\";\n");
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->queue_consumer_timeout, 30);
  ASSERT_EQ(s->warnings.size(), 1u);
  EXPECT_NE(s->warnings[0].find("queue_consumer_timeout: 30s is shorter than 65s"), std::string::npos)
      << s->warnings[0];
  EXPECT_NE(s->warnings[0].find("Go curlyq consumer"), std::string::npos) << s->warnings[0];
  auto t = Load(std::string(kMinimal) + "queue_consumer_timeout = 65;\n");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->warnings.empty());
  EXPECT_NE(Error(std::string(kMinimal) + "queue_consumer_timeout = 5;\n")
                .find("queue_consumer_timeout: must be between 10 and 86400 (got 5)"),
            std::string::npos);
}

constexpr const char* kSentinelLibconfig = R"(
database = { addr = "127.0.0.1:5432"; };
redis = { sentinels = ["127.0.0.1:26379", "[::1]:26380", "localhost"]; master = "mymaster";
          password = "rpw"; sentinel_password = "spw"; };
store = { images = { type = "file"; path = "/var/lib/djinn/images"; }; };
)";

TEST_F(ConfigTest, SentinelsInBothSyntaxes) {
  auto r = Load(kSentinelLibconfig);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->redis.sentinels,
            (std::vector<std::string>{"127.0.0.1:26379", "[::1]:26380", "localhost"}));
  EXPECT_EQ(r->redis.master, "mymaster");
  EXPECT_EQ(r->redis.password, "rpw");
  EXPECT_EQ(r->redis.sentinel_password, "spw");
  auto secrets = ConfigSecrets(*r);
  EXPECT_NE(std::find(secrets.begin(), secrets.end(), "spw"), secrets.end());

  auto d = Load(R"(
database {
	addr "127.0.0.1:5432"
}
redis {
	sentinels ["10.0.0.1:26379", "10.0.0.2:26379",
		"10.0.0.3:26379"]
	master "djinn"
}
store images {
	type "file"
	path "/var/lib/djinn/images"
}
)");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_TRUE(d->djinn_syntax);
  EXPECT_EQ(d->redis.sentinels.size(), 3u);
  EXPECT_EQ(d->redis.sentinels[2], "10.0.0.3:26379");
  EXPECT_EQ(d->redis.master, "djinn");
  EXPECT_TRUE(d->warnings.empty());
}

TEST_F(ConfigTest, SentinelMistakesAreNamed) {
  const std::string tail = "store = { images = { type = \"file\"; path = \"/x\"; }; };\n"
                           "database = { addr = \"h\"; };\n";
  EXPECT_NE(Error(tail + "redis = { sentinels = [\"a:1\"]; };\n")
                .find("redis.master: redis.sentinels and redis.master go together"),
            std::string::npos);
  EXPECT_NE(Error(tail + "redis = { master = \"m\"; };\n")
                .find("redis.sentinels: redis.sentinels and redis.master go together"),
            std::string::npos);
  EXPECT_NE(Error(tail + "redis = { addr = \"h:1\"; sentinels = [\"a:1\"]; master = \"m\"; };\n")
                .find("redis.addr: give addr or sentinels, not both"),
            std::string::npos);
  EXPECT_NE(Error(tail + "redis = { sentinels = []; master = \"m\"; };\n")
                .find("redis.sentinels: must list at least one"),
            std::string::npos);
  EXPECT_NE(Error(tail + "redis = { sentinels = [\"a:1\", \"b:x\"]; master = \"m\"; };\n")
                .find("redis.sentinels: item 2: "),
            std::string::npos);
  EXPECT_NE(Error(tail + "redis = { sentinels = [\"/run/s.sock\"]; master = \"m\"; };\n")
                .find("not a unix socket"),
            std::string::npos);
  EXPECT_NE(Error(tail + "redis = { sentinels = \"a:1\"; master = \"m\"; };\n")
                .find("redis.sentinels: expected an array of strings"),
            std::string::npos);
  EXPECT_NE(Error(tail + "redis = { addr = \"h:1\"; sentinel_password = \"p\"; };\n")
                .find("redis.sentinel_password: needs redis.sentinels"),
            std::string::npos);
}

TEST_F(ConfigTest, SentinelPasswordFileIsRead) {
  WriteFile(dir_.Sub("spw"), "from-file\n");
  auto r = Load(std::string(R"(
database = { addr = "127.0.0.1:5432"; };
redis = { sentinels = ["127.0.0.1:26379"]; master = "m"; sentinel_password_file = ")") +
                dir_.Sub("spw") + R"("; };
store = { images = { type = "file"; path = "/var/lib/djinn/images"; }; };
)");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->redis.sentinel_password, "from-file");
  std::string printed = FormatConfig(*r);
  EXPECT_EQ(printed.find("from-file"), std::string::npos) << printed;
  EXPECT_NE(printed.find("sentinel_password_file = "), std::string::npos) << printed;
}

TEST_F(ConfigTest, MinFreeIsBytesOrPercentDefaultTheSmallerOfBoth) {
  auto r = Load(kMinimal);
  ASSERT_TRUE(r.ok());
  const uint64_t GiB = uint64_t{1} << 30;
  // Default: 1 GiB or 5 %, whichever is smaller.
  EXPECT_EQ(r->store.MinFreeBytes(100 * GiB), GiB);          // 5 % = 5 GiB
  EXPECT_EQ(r->store.MinFreeBytes(10 * GiB), GiB / 2);       // 5 % = 512 MiB
  auto with = [&](const std::string& v) {
    return Load("database = { addr = \"h\"; };\nredis = { addr = \"h\"; };\n"
                "store = { images = { type = \"file\"; path = \"/s\"; min_free = " + v + "; }; };\n");
  };
  auto b = with("\"2GB\"");
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(b->store.MinFreeBytes(10 * GiB), 2 * GiB);
  auto p = with("\"10%\"");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->store.MinFreeBytes(100 * GiB), 10 * GiB);
  auto z = with("0");
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->store.MinFreeBytes(100 * GiB), 0u);
  auto bad = with("\"120%\"");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("store.images.min_free: a percentage must be from 0% to below 100%"),
            std::string::npos) << bad.status().message();
  ASSERT_FALSE(with("\"lots\"").ok());
  // Each spelling reads back from -t -print as itself.
  for (auto* cfg : {&r, &b, &p}) {
    WriteFile(dir_.Sub("printed.conf"), FormatConfig(**cfg, false));
    auto back = LoadConfig(dir_.Sub("printed.conf"));
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(back->store.min_free_bytes, (*cfg)->store.min_free_bytes);
    EXPECT_EQ(back->store.min_free_percent, (*cfg)->store.min_free_percent);
  }
  // Djinn's syntax takes a bare size too.
  auto d = Load(std::string(kDjinnMinimal) + "store images {\n\tmin_free 3GB\n}\n");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->store.min_free_bytes, static_cast<int64_t>(3 * GiB));
  EXPECT_EQ(d->store.min_free_percent, -1);
}

TEST_F(ConfigTest, ProxyIsCheckedAndItsPasswordNeverPrinted) {
  auto with = [&](const std::string& dl) {
    return Load(std::string(kMinimal) + "download = { " + dl + " };\n");
  };
  auto r = with("proxy = \"http://u:s3cret@127.0.0.1:3128\"; no_proxy = \"localhost,.internal\";");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->download.proxy, "http://u:s3cret@127.0.0.1:3128");
  EXPECT_EQ(r->download.no_proxy, "localhost,.internal");
  std::string printed = FormatConfig(*r);
  EXPECT_EQ(printed.find("s3cret"), std::string::npos) << printed;
  EXPECT_NE(printed.find("proxy = \"http://u:****@127.0.0.1:3128\";"), std::string::npos) << printed;
  auto secrets = ConfigSecrets(*r);
  EXPECT_NE(std::find(secrets.begin(), secrets.end(), "s3cret"), secrets.end());
  EXPECT_TRUE(with("proxy = \"socks5h://127.0.0.1:1080\";").ok());
  auto ftp = with("proxy = \"ftp://u:pw@h:21\";");
  ASSERT_FALSE(ftp.ok());
  EXPECT_NE(ftp.status().message().find("download.proxy: expected a proxy URL starting with http://"),
            std::string::npos);
  EXPECT_EQ(ftp.status().message().find("pw"), std::string::npos) << ftp.status().message();
  EXPECT_FALSE(with("proxy = \"http://h:1/path\";").ok());
  EXPECT_FALSE(with("proxy = \"http://h:99999\";").ok());  // ParseUrl checks the port too
  EXPECT_NE(Error(std::string(kMinimal) + "download = { no_proxy = \"x\"; };\n")
                .find("download.no_proxy: needs download.proxy"),
            std::string::npos);
}

}  // namespace
}  // namespace djinn
