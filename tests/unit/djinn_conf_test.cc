// The reader of Djinn's own config syntax (andrewpillar/config v1.0.0):
// every value kind, the separator rules, includes, error positions, Djinn's
// shipped sample, and the syntax sniffing LoadConfig relies on.
#include "common/djinn_conf.h"

#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "tests/harness/harness.h"

namespace djinn {
namespace {

using Kind = ConfNode::Kind;
using testing::TempDir;
using testing::WriteFile;

// The environment the tests see through DjinnConfOptions::getenv.
DjinnConfOptions FakeEnv(std::map<std::string, std::string> env = {},
                         std::vector<std::string>* lookups = nullptr) {
  DjinnConfOptions opts;
  opts.getenv = [env, lookups](const std::string& name) -> std::optional<std::string> {
    if (lookups) lookups->push_back(name);
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  return opts;
}

// Text parsed as "t.conf" without includes; fails the test on an error.
ConfNode Parse(const std::string& text, const DjinnConfOptions& opts = FakeEnv()) {
  auto r = ParseDjinnConfText(text, "t.conf", "", opts);
  EXPECT_TRUE(r.ok()) << r.status().message() << "\nin:\n" << text;
  return r.ok() ? *r : ConfNode();
}

// The error message for text parsed as "t.conf"; fails the test if accepted.
std::string Error(const std::string& text, const DjinnConfOptions& opts = FakeEnv()) {
  auto r = ParseDjinnConfText(text, "t.conf", "", opts);
  EXPECT_FALSE(r.ok()) << "accepted:\n" << text;
  if (r.ok()) return "";
  EXPECT_TRUE(r.status().permanent());
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  return r.status().message();
}

// The only parameter of text.
ConfNode One(const std::string& text, const DjinnConfOptions& opts = FakeEnv()) {
  ConfNode root = Parse(text, opts);
  EXPECT_EQ(root.children.size(), 1u) << text;
  return root.children.empty() ? ConfNode() : root.children[0];
}

std::string FileError(const std::string& path, const DjinnConfOptions& opts = {}) {
  auto r = ParseDjinnConf(path, opts);
  EXPECT_FALSE(r.ok()) << "accepted " << path;
  return r.ok() ? "" : r.status().message();
}

// Changes the working directory for one test.
class ScopedCwd {
 public:
  explicit ScopedCwd(const std::string& dir) {
    char buf[PATH_MAX];
    if (getcwd(buf, sizeof buf) == nullptr || chdir(dir.c_str()) != 0) std::abort();
    old_ = buf;
  }
  ~ScopedCwd() {
    if (chdir(old_.c_str()) != 0) std::abort();
  }

 private:
  std::string old_;
};

std::string DataFile(const std::string& name) {
  const char* dir = std::getenv("DJINN_TEST_DATA");
  return std::string(dir ? dir : "tests/data") + "/djinn/" + name;
}

// ------------------------------------------------------------------- values

TEST(DjinnConfTest, StringIsUnquoted) {
  ConfNode n = One("addr \"localhost:5432\"\n");
  EXPECT_EQ(n.name, "addr");
  EXPECT_EQ(n.kind, Kind::kString);
  EXPECT_EQ(n.text, "localhost:5432");
  EXPECT_EQ(n.file, "t.conf");
  EXPECT_EQ(n.line, 1);
}

TEST(DjinnConfTest, BackslashEscapesTheNextCharacter) {
  EXPECT_EQ(One(R"(s "a\"b\\c\x d\#")").text, "a\"b\\cx d#");
  EXPECT_EQ(One(R"(s "\\")").text, "\\");
}

TEST(DjinnConfTest, NonAsciiBytesInStringsPassThrough) {
  EXPECT_EQ(One("s \"\xe7\xbb\x86 \xff\"").text, "\xe7\xbb\x86 \xff");
}

TEST(DjinnConfTest, EnvVarExpandsInString) {
  auto opts = FakeEnv({{"DB_PASSWORD", "s3cret"}, {"HOST", "db"}});
  EXPECT_EQ(One("password \"${DB_PASSWORD}\"", opts).text, "s3cret");
  EXPECT_EQ(One("addr \"${HOST}:${PORT}/x\"", opts).text, "db:/x");
}

TEST(DjinnConfTest, EachEnvVarIsLookedUpByItsOwnName) {
  std::vector<std::string> lookups;
  auto opts = FakeEnv({{"A", "1"}, {"B", "2"}}, &lookups);
  EXPECT_EQ(One("s \"${A}${B}\"", opts).text, "12");
  EXPECT_EQ(lookups, (std::vector<std::string>{"A", "B"}));
}

TEST(DjinnConfTest, UnterminatedEnvVarIsKeptLiterally) {
  auto opts = FakeEnv({{"A", "1"}});
  EXPECT_EQ(One("s \"x${A\"", opts).text, "x${A");
  EXPECT_EQ(One("s \"$A ${A\"", opts).text, "$A ${A");
}

TEST(DjinnConfTest, EscapedDollarIsNotExpanded) {
  EXPECT_EQ(One(R"(s "\${A}")", FakeEnv({{"A", "1"}})).text, "${A}");
}

TEST(DjinnConfTest, DefaultGetenvReadsTheProcessEnvironment) {
  setenv("DJINN_CONF_TEST_VAR", "from-env", 1);
  auto r = ParseDjinnConfText("s \"${DJINN_CONF_TEST_VAR}\"", "t.conf", "");
  unsetenv("DJINN_CONF_TEST_VAR");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->children.at(0).text, "from-env");
}

TEST(DjinnConfTest, IntegerValues) {
  ConfNode n = One("workers 4");
  EXPECT_EQ(n.kind, Kind::kInt);
  EXPECT_EQ(n.num, 4);
  EXPECT_EQ(n.text, "4");
  EXPECT_EQ(One("n -17").num, -17);
  EXPECT_EQ(One("n 9223372036854775807").num, INT64_MAX);
  EXPECT_EQ(One("n -9223372036854775808").num, INT64_MIN);
}

TEST(DjinnConfTest, IntegerOverflowIsError) {
  EXPECT_EQ(Error("a 1\nn 9223372036854775808\n"),
            "t.conf:2: n: integer 9223372036854775808 out of range");
  EXPECT_EQ(Error("n -9223372036854775809"),
            "t.conf:1: n: integer -9223372036854775809 out of range");
}

TEST(DjinnConfTest, FloatValues) {
  ConfNode n = One("ratio 1.5");
  EXPECT_EQ(n.kind, Kind::kFloat);
  EXPECT_DOUBLE_EQ(n.real, 1.5);
  EXPECT_DOUBLE_EQ(One("r -0.25").real, -0.25);
  EXPECT_DOUBLE_EQ(One("r 2.").real, 2.0);
  EXPECT_DOUBLE_EQ(One("r -.5").real, -0.5);
}

TEST(DjinnConfTest, MalformedNumbersAreErrors) {
  EXPECT_EQ(Error("n 1.2.3"), "t.conf:1: n: invalid number \"1.2.3\"");
  EXPECT_EQ(Error("n -"), "t.conf:1: n: invalid number \"-\"");
  EXPECT_EQ(Error("n 1e5"),
            "t.conf:1: n: invalid number \"1e5\": unknown unit \"e5\" (durations "
            "take h, m, s or ms; sizes B, KB, MB, GB or TB)");
  EXPECT_EQ(Error("n 5K"),
            "t.conf:1: n: invalid number \"5K\": unknown unit \"K\" (durations "
            "take h, m, s or ms; sizes B, KB, MB, GB or TB)");
}

TEST(DjinnConfTest, LiteralErrorNamesTheDottedParameter) {
  EXPECT_EQ(Error("download {\n  timeout 8d\n}"),
            "t.conf:2: download.timeout: invalid number \"8d\": unknown unit \"d\" (durations "
            "take h, m, s or ms; sizes B, KB, MB, GB or TB)");
  EXPECT_EQ(Error("store images { limit 1.5MB }"),
            "t.conf:1: store.images.limit: invalid size \"1.5MB\": not a whole number");
  EXPECT_EQ(Error("a [1,\n99999999999999999999]"),
            "t.conf:2: a: integer 99999999999999999999 out of range");
}

TEST(DjinnConfTest, BoolValues) {
  ConfNode t = One("tls true");
  EXPECT_EQ(t.kind, Kind::kBool);
  EXPECT_TRUE(t.flag);
  EXPECT_EQ(t.label, "");
  ConfNode f = One("tls false;");
  EXPECT_EQ(f.kind, Kind::kBool);
  EXPECT_FALSE(f.flag);
}

TEST(DjinnConfTest, NameTrueAloneIsBoolNotLabel) {
  ConfNode root = Parse("a true\nb { c false }\nd true");
  ASSERT_EQ(root.children.size(), 3u);
  EXPECT_EQ(root.children[0].kind, Kind::kBool);
  EXPECT_EQ(root.children[0].label, "");
  ASSERT_EQ(root.children[1].children.size(), 1u);
  EXPECT_EQ(root.children[1].children[0].kind, Kind::kBool);
  EXPECT_FALSE(root.children[1].children[0].flag);
  EXPECT_TRUE(root.children[2].flag);
}

TEST(DjinnConfTest, TrueBeforeAValueIsALabel) {
  ConfNode n = One("a true \"x\"");
  EXPECT_EQ(n.label, "true");
  EXPECT_EQ(n.kind, Kind::kString);
  ConfNode b = One("a x false");
  EXPECT_EQ(b.label, "x");
  EXPECT_EQ(b.kind, Kind::kBool);
}

TEST(DjinnConfTest, DurationHoursAndMinutes) {
  ConfNode n = One("cleanup_interval 1h30m");
  EXPECT_EQ(n.kind, Kind::kDuration);
  EXPECT_EQ(n.num, int64_t{5400} * 1000000000);
  EXPECT_EQ(n.text, "1h30m");
}

TEST(DjinnConfTest, DurationForms) {
  constexpr int64_t kSec = 1000000000;
  EXPECT_EQ(One("d 1h").num, 3600 * kSec);
  EXPECT_EQ(One("d 1.5h").num, 5400 * kSec);
  EXPECT_EQ(One("d 90s").num, 90 * kSec);
  EXPECT_EQ(One("d 2m").num, 120 * kSec);
  EXPECT_EQ(One("d 100ms").num, 100000000);
  EXPECT_EQ(One("d 1h30m45s").num, 5445 * kSec);
  EXPECT_EQ(One("d 0s").num, 0);
  EXPECT_EQ(One("d -1h").num, -3600 * kSec);
  EXPECT_EQ(One("d 2562047h").num, int64_t{2562047} * 3600 * kSec);
}

TEST(DjinnConfTest, MalformedDurationsAreErrors) {
  EXPECT_EQ(Error("d 1h30"), "t.conf:1: d: invalid duration \"1h30\"");  // missing unit
  EXPECT_EQ(Error("d 1mm"), "t.conf:1: d: invalid duration \"1mm\"");    // unknown unit
  EXPECT_EQ(Error("d 1hx"), "t.conf:1: d: invalid duration \"1hx\"");
  EXPECT_EQ(Error("d -h"), "t.conf:1: d: invalid duration \"-h\"");
}

// Go's time.ParseDuration says "invalid duration" for overflow too.
TEST(DjinnConfTest, DurationOverflowIsError) {
  EXPECT_EQ(Error("d 2562048h"), "t.conf:1: d: invalid duration \"2562048h\"");
  EXPECT_EQ(Error("d 99999999999999999999s"),
            "t.conf:1: d: invalid duration \"99999999999999999999s\"");
}

TEST(DjinnConfTest, SizeUnitsArePowersOf1024) {
  ConfNode n = One("limit 50MB");
  EXPECT_EQ(n.kind, Kind::kSize);
  EXPECT_EQ(n.num, 52428800);
  EXPECT_EQ(n.text, "50MB");
  EXPECT_EQ(One("s 7B").num, 7);
  EXPECT_EQ(One("s 2KB").num, 2048);
  EXPECT_EQ(One("s 3GB").num, int64_t{3} << 30);
  EXPECT_EQ(One("s 5TB").num, int64_t{5} << 40);
}

TEST(DjinnConfTest, SizeOverflowIsError) {
  EXPECT_EQ(Error("s 8388608TB"), "t.conf:1: s: size 8388608TB out of range");
  EXPECT_EQ(One("s 8388607TB").num, int64_t{8388607} << 40);
  EXPECT_EQ(Error("s 99999999999999999999B"),
            "t.conf:1: s: size 99999999999999999999B out of range");
}

TEST(DjinnConfTest, FractionalSizeIsError) {
  EXPECT_EQ(Error("s 1.5MB"), "t.conf:1: s: invalid size \"1.5MB\": not a whole number");
}

// ------------------------------------------------------ structure and syntax

TEST(DjinnConfTest, LabelIsTheSecondName) {
  ConfNode root = Parse("store images {\n\ttype \"file\"\n}\nlog info \"/var/log/x.log\"\n");
  ASSERT_EQ(root.children.size(), 2u);
  EXPECT_EQ(root.children[0].name, "store");
  EXPECT_EQ(root.children[0].label, "images");
  EXPECT_EQ(root.children[0].kind, Kind::kBlock);
  EXPECT_EQ(root.children[1].name, "log");
  EXPECT_EQ(root.children[1].label, "info");
  EXPECT_EQ(root.children[1].text, "/var/log/x.log");
}

TEST(DjinnConfTest, LabelWithoutValueIsError) {
  EXPECT_EQ(Error("log info\n"), "t.conf:1: syntax error: expected value after \"log info\"");
}

TEST(DjinnConfTest, MissingValueNamesLineAndParameter) {
  EXPECT_EQ(Error("a 1\n\naddr\nb 2\n"), "t.conf:3: syntax error: expected value after \"addr\"");
  EXPECT_EQ(Error("a {\n  addr }"),
            "t.conf:2: syntax error: expected value after \"addr\", found \"}\"");
}

TEST(DjinnConfTest, SemicolonAndNewlineBothEndAParameter) {
  ConfNode root = Parse("a 1; b 2\nc 3;\nd { e 4; f 5 }");
  ASSERT_EQ(root.children.size(), 4u);
  EXPECT_EQ(root.children[1].name, "b");
  EXPECT_EQ(root.children[2].line, 2);
  EXPECT_EQ(root.children[3].children.size(), 2u);
}

TEST(DjinnConfTest, EmptyStatementsAreSkipped) {
  ConfNode root = Parse(";;\n\n\na 1;;\n;\nb {;;c 2;;}\n\n");
  ASSERT_EQ(root.children.size(), 2u);
  EXPECT_EQ(root.children[0].line, 4);
  EXPECT_EQ(root.children[1].children.size(), 1u);
}

TEST(DjinnConfTest, EmptyInputHasNoParameters) {
  EXPECT_TRUE(Parse("").children.empty());
  EXPECT_TRUE(Parse("\n  # only a comment").children.empty());
}

TEST(DjinnConfTest, TwoParametersOnOneLineIsError) {
  EXPECT_EQ(Error("a 1 b 2"),
            "t.conf:1: syntax error: expected newline or \";\" after the value of \"a\", found "
            "name \"b\"");
}

TEST(DjinnConfTest, NewlineAfterOpeningBraceIsSpace) {
  ConfNode n = One("net\t{\n\n\tlisten \"x\"\n\n\ttls {\n\t\tcert \"c\"\n\t}\n}\n");
  ASSERT_EQ(n.children.size(), 2u);
  EXPECT_EQ(n.children[0].line, 3);
  EXPECT_EQ(n.children[1].name, "tls");
  EXPECT_EQ(n.children[1].line, 5);
  EXPECT_EQ(n.children[1].children.at(0).line, 6);
  EXPECT_TRUE(One("provider github {}").children.empty());
}

TEST(DjinnConfTest, NewlineBeforeOpeningBraceIsError) {
  EXPECT_EQ(Error("net\n{\n}\n"), "t.conf:1: syntax error: expected value after \"net\"");
}

TEST(DjinnConfTest, CommentsRunToEndOfLine) {
  ConfNode root = Parse("# head\na 1 # tail\nb { # open\n  c \"#x\" # tail\n} # close\n# end");
  ASSERT_EQ(root.children.size(), 2u);
  EXPECT_EQ(root.children[0].num, 1);
  EXPECT_EQ(root.children[1].children.at(0).text, "#x");
  EXPECT_EQ(root.children[1].children.at(0).line, 4);
}

TEST(DjinnConfTest, NamesKeepTheirCase) {
  ConfNode n = One("Database { Addr \"x\" }");
  EXPECT_EQ(n.name, "Database");
  EXPECT_EQ(n.children.at(0).name, "Addr");
}

TEST(DjinnConfTest, NamesMayHoldUnderscoresDigitsAndUnicodeLetters) {
  EXPECT_EQ(One("_job_timeout2 1").name, "_job_timeout2");
  ConfNode n = One("block \xe6\xa0\x87\xe7\xad\xbe { s 1 }");  // Go's testdata/utf8.conf
  EXPECT_EQ(n.label, "\xe6\xa0\x87\xe7\xad\xbe");
}

TEST(DjinnConfTest, UnexpectedCharacterIsError) {
  EXPECT_EQ(Error("a 1\nb @"), "t.conf:2: syntax error: unexpected character '@'");
  EXPECT_EQ(Error("a \xc2\xa0"), "t.conf:1: syntax error: unexpected character U+00A0");
  EXPECT_EQ(Error("a \xff"), "t.conf:1: syntax error: unexpected character (invalid UTF-8)");
  EXPECT_EQ(Error(std::string("a 1\n\0", 5)), "t.conf:2: syntax error: invalid NUL byte");
  EXPECT_EQ(Error(std::string("a \"x\0\"", 6)), "t.conf:1: syntax error: invalid NUL byte");
}

TEST(DjinnConfTest, UnterminatedStringIsError) {
  EXPECT_EQ(Error("a 1\nb \"abc"), "t.conf:2: syntax error: unterminated string");
  EXPECT_EQ(Error("b \"abc\\"), "t.conf:1: syntax error: unterminated string");
}

TEST(DjinnConfTest, NewlineInStringIsError) {
  EXPECT_EQ(Error("a 1\nb \"ab\nc\"\n"), "t.conf:2: syntax error: unexpected newline in string");
  EXPECT_EQ(Error("b \"ab\\\nc\"\n"), "t.conf:1: syntax error: unexpected newline in string");
}

TEST(DjinnConfTest, UnclosedBlockNamesWhereItOpened) {
  EXPECT_EQ(Error("a 1\nb {\n  c 2\n"),
            "t.conf:4: syntax error: unexpected end of file, expected \"}\" to close the block "
            "opened on line 2");
}

TEST(DjinnConfTest, StrayClosingBraceIsError) {
  EXPECT_EQ(Error("a 1\n}\n"), "t.conf:2: syntax error: expected a parameter name, found \"}\"");
}

TEST(DjinnConfTest, ErrorsNameTheirLine) {
  EXPECT_EQ(Error("a 1\nb {\n  c [1, 2,\n    x]\n}\n"),
            "t.conf:4: syntax error: expected value in array, found name \"x\"");
  EXPECT_EQ(Error("\n\n\na \"ok\"\nb , \n"),
            "t.conf:5: syntax error: expected value after \"b\", found \",\"");
}

// ------------------------------------------------------------------- arrays

TEST(DjinnConfTest, ArrayTrailingCommaIsAllowed) {
  for (const char* text : {"a [1, 2, 3]", "a [1, 2, 3,]", "a [\n\t1,\n\t2,\n\t3,\n]"}) {
    ConfNode n = One(text);
    EXPECT_EQ(n.kind, Kind::kArray) << text;
    ASSERT_EQ(n.children.size(), 3u) << text;
    EXPECT_EQ(n.children[2].num, 3) << text;
    EXPECT_EQ(n.children[2].name, "") << text;
  }
  EXPECT_TRUE(One("a []").children.empty());
}

TEST(DjinnConfTest, MultiLineArrayWithoutTrailingCommaIsError) {
  EXPECT_EQ(Error("drivers [\n\t\"docker\",\n\t\"qemu\"\n]\n"),
            "t.conf:3: syntax error: expected \",\" or \"]\" after array item, found newline "
            "(in a multi-line array every item needs a comma after it)");
}

TEST(DjinnConfTest, ArrayItemsMayBeAnyValue) {
  ConfNode n =
      One("a [\"s\", 1, 1.5, true, 1s, 2KB, [1, [2,],], {\n\tx 1\n\ty \"z\"\n}, {},\n\tfalse,\n]");
  ASSERT_EQ(n.children.size(), 10u);
  const Kind kinds[] = {Kind::kString, Kind::kInt,   Kind::kFloat, Kind::kBool,  Kind::kDuration,
                        Kind::kSize,   Kind::kArray, Kind::kBlock, Kind::kBlock, Kind::kBool};
  for (size_t i = 0; i < 10; i++) EXPECT_EQ(n.children[i].kind, kinds[i]) << i;
  EXPECT_EQ(n.children[6].children.at(1).children.at(0).num, 2);
  const ConfNode& block = n.children[7];
  ASSERT_EQ(block.children.size(), 2u);
  EXPECT_EQ(block.children[1].name, "y");
  EXPECT_EQ(block.children[1].line, 3);
  EXPECT_EQ(n.children[9].line, 5);
}

TEST(DjinnConfTest, ArrayItemLineIsTheItemsOwn) {
  ConfNode n = One("blocks [{\n\tstring \"foo\"\n}, {\n\tstring \"bar\"\n},\n\"s\",\n]");
  ASSERT_EQ(n.children.size(), 3u);
  EXPECT_EQ(n.line, 1);
  EXPECT_EQ(n.children[0].line, 1);
  EXPECT_EQ(n.children[1].line, 3);
  EXPECT_EQ(n.children[1].children.at(0).line, 4);
  EXPECT_EQ(n.children[2].line, 6);
}

TEST(DjinnConfTest, LabelledArray) {
  ConfNode n = One("ports open [\"8080\", \"8443\"]");
  EXPECT_EQ(n.label, "open");
  EXPECT_EQ(n.children.size(), 2u);
}

TEST(DjinnConfTest, DeepNestingIsBounded) {
  std::string ok =
      "a " + std::string(kDjinnConfMaxNesting, '[') + std::string(kDjinnConfMaxNesting, ']');
  EXPECT_EQ(One(ok).kind, Kind::kArray);
  EXPECT_EQ(Error("a " + std::string(kDjinnConfMaxNesting + 1, '[')),
            "t.conf:1: syntax error: blocks and arrays nested deeper than 64 levels");
  std::string blocks;
  for (int i = 0; i < 100; i++) blocks += "b {\n";
  EXPECT_EQ(Error(blocks),
            "t.conf:65: syntax error: blocks and arrays nested deeper than 64 levels");
  Error(std::string(1000000, '{'));
  Error("a " + std::string(1000000, '['));
}

// ------------------------------------------------------------------ includes

class DjinnConfIncludeTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string Path(const std::string& name) const { return dir_.Sub(name); }
  // Writes dir_/name, making its directories.
  void Write(const std::string& name, const std::string& text) {
    std::filesystem::create_directories(std::filesystem::path(Path(name)).parent_path());
    WriteFile(Path(name), text);
  }
  ConfNode Load(const std::string& name, const DjinnConfOptions& opts = {}) {
    auto r = ParseDjinnConf(Path(name), opts);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? *r : ConfNode();
  }
};

TEST_F(DjinnConfIncludeTest, RootIsABlockNamedForTheFile) {
  Write("a.conf", "x 1\n");
  ConfNode root = Load("a.conf");
  EXPECT_EQ(root.kind, Kind::kBlock);
  EXPECT_EQ(root.name, "");
  EXPECT_EQ(root.file, Path("a.conf"));
  ASSERT_EQ(root.children.size(), 1u);
  EXPECT_EQ(root.children[0].file, Path("a.conf"));
}

TEST_F(DjinnConfIncludeTest, IncludeIsReplacedInPlace) {
  Write("a.conf", "first 1\ninclude \"b.conf\"\nlast 3\n");
  Write("b.conf", "\nmiddle { x 2 }\n");
  ConfNode root = Load("a.conf");
  ASSERT_EQ(root.children.size(), 3u);
  EXPECT_EQ(root.children[0].name, "first");
  EXPECT_EQ(root.children[1].name, "middle");
  EXPECT_EQ(root.children[1].file, Path("b.conf"));
  EXPECT_EQ(root.children[1].line, 2);
  EXPECT_EQ(root.children[1].children.at(0).file, Path("b.conf"));
  EXPECT_EQ(root.children[2].name, "last");
  EXPECT_EQ(root.children[2].file, Path("a.conf"));
  EXPECT_EQ(root.children[2].line, 3);
}

TEST_F(DjinnConfIncludeTest, IncludeArrayReadsEachFileInOrder) {
  Write("a.conf", "include [\n\t\"b.conf\",\n\t\"c.conf\",\n]\nz 0\n");
  Write("b.conf", "b 1\n");
  Write("c.conf", "c 2\n");
  ConfNode root = Load("a.conf");
  ASSERT_EQ(root.children.size(), 3u);
  EXPECT_EQ(root.children[0].name, "b");
  EXPECT_EQ(root.children[1].name, "c");
  EXPECT_EQ(root.children[2].name, "z");
}

TEST_F(DjinnConfIncludeTest, RelativeIncludeResolvesAgainstIncludingFilesDirectory) {
  Write("etc/a.conf", "include \"conf.d/b.conf\"\n");
  Write("etc/conf.d/b.conf", "include \"c.conf\"\nfrom_b 1\n");
  Write("etc/conf.d/c.conf", "from_c 1\n");
  Write("elsewhere/conf.d/b.conf", "decoy 1\n");
  Write("elsewhere/c.conf", "decoy 1\n");
  ScopedCwd cwd(Path("elsewhere"));
  ConfNode root = Load("etc/a.conf");
  ASSERT_EQ(root.children.size(), 2u);
  EXPECT_EQ(root.children[0].name, "from_c");
  EXPECT_EQ(root.children[0].file, Path("etc/conf.d/c.conf"));
  EXPECT_EQ(root.children[1].name, "from_b");
}

TEST_F(DjinnConfIncludeTest, RelativeRootPathGivesRelativeIncludePaths) {
  Write("etc/a.conf", "include \"b.conf\"\n");
  Write("etc/b.conf", "b 1\n");
  ScopedCwd cwd(dir_.path());
  auto r = ParseDjinnConf("etc/a.conf");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->children.at(0).file, "etc/b.conf");
}

TEST_F(DjinnConfIncludeTest, AbsoluteIncludeIsUsedAsIs) {
  Write("a.conf", "include \"" + Path("sub/b.conf") + "\"\n");
  Write("sub/b.conf", "b 1\n");
  EXPECT_EQ(Load("a.conf").children.at(0).file, Path("sub/b.conf"));
}

TEST_F(DjinnConfIncludeTest, IncludeNameExpandsEnvVar) {
  Write("a.conf", "include \"${CONF_D}/b.conf\"\n");
  Write("sub/b.conf", "b 1\n");
  EXPECT_EQ(Load("a.conf", FakeEnv({{"CONF_D", "sub"}})).children.at(0).name, "b");
}

TEST_F(DjinnConfIncludeTest, IncludeInTextResolvesAgainstBaseDir) {
  Write("b.conf", "b 1\n");
  auto r = ParseDjinnConfText("include \"b.conf\"", "mem.conf", dir_.path());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->children.at(0).file, Path("b.conf"));
}

TEST_F(DjinnConfIncludeTest, IncludeInTextWithoutBaseDirIsError) {
  EXPECT_EQ(Error("a 1\ninclude \"b.conf\"\n"),
            "t.conf:2: include \"b.conf\": includes need a base directory");
}

TEST_F(DjinnConfIncludeTest, IncludeInsideBlockIsAnOrdinaryParameter) {
  ConfNode n = One("a { include \"x.conf\" }");
  EXPECT_EQ(n.children.at(0).name, "include");
  EXPECT_EQ(n.children.at(0).text, "x.conf");
}

TEST_F(DjinnConfIncludeTest, MissingIncludeNamesIncludingFileAndLine) {
  Write("a.conf", "a 1\n\n\ninclude \"x.conf\"\n");
  EXPECT_EQ(FileError(Path("a.conf")),
            Path("a.conf") + ":4: include \"x.conf\": No such file or directory");
}

TEST_F(DjinnConfIncludeTest, ErrorInIncludedFileNamesThatFileAndLine) {
  Write("a.conf", "a 1\ninclude \"b.conf\"\n");
  Write("b.conf", "b 1\n\nc\n");
  EXPECT_EQ(FileError(Path("a.conf")),
            Path("b.conf") + ":3: syntax error: expected value after \"c\"");
}

TEST_F(DjinnConfIncludeTest, IncludeOfNonStringIsError) {
  Write("a.conf", "include 5\n");
  EXPECT_EQ(FileError(Path("a.conf")),
            Path("a.conf") +
                ":1: syntax error: expected a file name string or array after \"include\", "
                "found \"5\"");
  Write("a.conf", "include [\"b.conf\", 1]\n");
  EXPECT_EQ(FileError(Path("a.conf")),
            Path("a.conf") +
                ":1: syntax error: expected a file name string in include array, found \"1\"");
}

TEST_F(DjinnConfIncludeTest, IncludeCycleIsError) {
  Write("a.conf", "a 1\ninclude \"b.conf\"\n");
  Write("b.conf", "include \"a.conf\"\n");
  EXPECT_EQ(FileError(Path("a.conf")), Path("b.conf") +
                                           ":1: include \"a.conf\": " + Path("a.conf") +
                                           " already included as the top-level file");
  Write("a.conf", "include \"b.conf\"\n");
  Write("b.conf", "include \"c.conf\"\n");
  Write("c.conf", "include \"b.conf\"\n");
  EXPECT_EQ(FileError(Path("a.conf")), Path("c.conf") +
                                           ":1: include \"b.conf\": " + Path("b.conf") +
                                           " already included from " + Path("a.conf") + ":1");
}

TEST_F(DjinnConfIncludeTest, IncludeSelfIsError) {
  Write("a.conf", "\ninclude \"a.conf\"\n");
  EXPECT_EQ(FileError(Path("a.conf")), Path("a.conf") +
                                           ":2: include \"a.conf\": " + Path("a.conf") +
                                           " already included as the top-level file");
}

TEST_F(DjinnConfIncludeTest, IncludingTheSameFileTwiceIsError) {
  Write("a.conf", "include [\n\t\"b.conf\",\n\t\"./b.conf\",\n]\n");
  Write("b.conf", "b 1\n");
  EXPECT_EQ(FileError(Path("a.conf")), Path("a.conf") +
                                           ":3: include \"./b.conf\": " + Path("./b.conf") +
                                           " already included from " + Path("a.conf") + ":2");
}

TEST_F(DjinnConfIncludeTest, IncludeDepthIsBounded) {
  for (int i = 0; i < 4; i++)
    Write(std::to_string(i) + ".conf", "include \"" + std::to_string(i + 1) + ".conf\"\n");
  Write("4.conf", "x 1\n");
  DjinnConfOptions opts;
  opts.max_include_depth = 4;
  EXPECT_EQ(Load("0.conf", opts).children.at(0).name, "x");
  opts.max_include_depth = 3;
  EXPECT_EQ(FileError(Path("0.conf"), opts),
            Path("3.conf") + ":1: include \"4.conf\": includes nested deeper than 3 levels");
}

TEST_F(DjinnConfIncludeTest, IncludeOfDirectoryIsError) {
  Write("sub/x", "");
  Write("a.conf", "include \"sub\"\n");
  EXPECT_EQ(FileError(Path("a.conf")), Path("a.conf") + ":1: include \"sub\": Is a directory");
}

TEST_F(DjinnConfIncludeTest, MissingFileIsNamed) {
  EXPECT_EQ(FileError(Path("nope.conf")), Path("nope.conf") + ": No such file or directory");
}

TEST_F(DjinnConfIncludeTest, TooLargeFileIsError) {
  Write("a.conf", "a \"" + std::string(100, 'x') + "\"\n");
  Write("b.conf", "include \"a.conf\"\n");
  DjinnConfOptions opts;
  opts.max_file_bytes = 64;
  EXPECT_EQ(FileError(Path("a.conf"), opts), Path("a.conf") + ": larger than 64 bytes");
  EXPECT_EQ(FileError(Path("b.conf"), opts),
            Path("b.conf") + ":1: include \"a.conf\": larger than 64 bytes");
  EXPECT_EQ(Error(std::string(65, '\n'), opts), "t.conf: larger than 64 bytes");
}

// ------------------------------------------------------------ Djinn's sample

TEST(DjinnConfTest, ShippedSampleVerbatim) {
  const std::string path = DataFile("consumer.conf");
  auto r = ParseDjinnConf(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const ConfNode& root = *r;
  EXPECT_EQ(root.kind, Kind::kBlock);
  EXPECT_EQ(root.file, path);
  ASSERT_EQ(root.children.size(), 5u);

  struct Want {
    const char* name;
    const char* label;
    Kind kind;
    const char* text;
    int line;
  };
  auto check = [&](const ConfNode& n, const Want& w) {
    SCOPED_TRACE(w.name);
    EXPECT_EQ(n.name, w.name);
    EXPECT_EQ(n.label, w.label);
    EXPECT_EQ(n.kind, w.kind);
    EXPECT_EQ(n.text, w.text);
    EXPECT_EQ(n.line, w.line);
    EXPECT_EQ(n.file, path);
    if (n.kind != Kind::kBlock) {
      EXPECT_TRUE(n.children.empty());
    }
  };
  check(root.children[0], {"pidfile", "", Kind::kString, "/var/run/djinn/consumer.pid", 3});
  check(root.children[1], {"log", "info", Kind::kString, "/var/log/djinn/consumer.log", 5});

  const ConfNode& db = root.children[2];
  check(db, {"database", "", Kind::kBlock, "", 7});
  ASSERT_EQ(db.children.size(), 4u);
  check(db.children[0], {"addr", "", Kind::kString, "localhost:5432", 8});
  check(db.children[1], {"name", "", Kind::kString, "djinn", 9});
  check(db.children[2], {"username", "", Kind::kString, "djinn_consumer", 11});
  check(db.children[3], {"password", "", Kind::kString, "secret", 12});

  const ConfNode& redis = root.children[3];
  check(redis, {"redis", "", Kind::kBlock, "", 15});
  ASSERT_EQ(redis.children.size(), 1u);
  check(redis.children[0], {"addr", "", Kind::kString, "localhost:6379", 16});

  const ConfNode& store = root.children[4];
  check(store, {"store", "images", Kind::kBlock, "", 19});
  ASSERT_EQ(store.children.size(), 2u);
  check(store.children[0], {"type", "", Kind::kString, "file", 20});
  check(store.children[1], {"path", "", Kind::kString, "/var/lib/djinn/images", 21});
}

TEST(DjinnConfTest, EveryValueKindInOneFile) {
  auto r = ParseDjinnConf(DataFile("values.conf"), FakeEnv({{"HOME", "/root"}}));
  ASSERT_TRUE(r.ok()) << r.status().message();
  const auto& c = r->children;
  ASSERT_EQ(c.size(), 10u);
  EXPECT_EQ(c[0].text, "a \"quoted\" \\ /root string");
  const Kind kinds[] = {Kind::kString, Kind::kInt,   Kind::kFloat, Kind::kBool,  Kind::kDuration,
                        Kind::kSize,   Kind::kArray, Kind::kBlock, Kind::kArray, Kind::kBool};
  for (size_t i = 0; i < c.size(); i++) EXPECT_EQ(c[i].kind, kinds[i]) << c[i].name;
  EXPECT_EQ(c[6].children.size(), 8u);
  EXPECT_EQ(c[7].label, "label");
  EXPECT_EQ(c[7].children.at(0).children.size(), 2u);
  EXPECT_EQ(c[8].children.size(), 2u);
  EXPECT_EQ(c[9].line, 20);
}

// ---------------------------------------------------------- syntax sniffing

TEST(DjinnConfTest, LooksLikeDjinnSyntaxRejectsLibconfig) {
  EXPECT_FALSE(LooksLikeDjinnSyntax("workers = 4;"));
  EXPECT_FALSE(LooksLikeDjinnSyntax("log = { level = \"info\"; };"));
  EXPECT_FALSE(LooksLikeDjinnSyntax("# c\nredis: { addr = \"x\"; };"));
  EXPECT_FALSE(LooksLikeDjinnSyntax("@include \"x\""));
  EXPECT_FALSE(LooksLikeDjinnSyntax("// c\n/* multi\nline */ workers\t= 4;"));
  EXPECT_FALSE(LooksLikeDjinnSyntax("job-timeout = 4;"));
  EXPECT_FALSE(LooksLikeDjinnSyntax(""));
  EXPECT_FALSE(LooksLikeDjinnSyntax("  \n# only a comment\n/* and"));
}

TEST(DjinnConfTest, LooksLikeDjinnSyntaxAcceptsDjinn) {
  EXPECT_TRUE(LooksLikeDjinnSyntax(testing::ReadFile(DataFile("consumer.conf"))));
  EXPECT_TRUE(LooksLikeDjinnSyntax("parallelism 4"));
  EXPECT_TRUE(LooksLikeDjinnSyntax("# c\nstore images {\n}"));
  EXPECT_TRUE(LooksLikeDjinnSyntax("include \"a.conf\""));
}

TEST(DjinnConfTest, ConfKindNamesReadAsPhrases) {
  EXPECT_STREQ(ConfKindName(Kind::kString), "a string");
  EXPECT_STREQ(ConfKindName(Kind::kInt), "an integer");
  EXPECT_STREQ(ConfKindName(Kind::kDuration), "a duration");
  EXPECT_STREQ(ConfKindName(Kind::kSize), "a size");
  EXPECT_STREQ(ConfKindName(Kind::kArray), "an array");
  EXPECT_STREQ(ConfKindName(Kind::kBlock), "a block");
}

}  // namespace
}  // namespace djinn
