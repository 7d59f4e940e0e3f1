#include "master/options.h"

#include <gtest/gtest.h>

namespace djinn {
namespace {

TEST(OptionsTest, DefaultsToDjinnConsumerConf) {
  Options o;
  std::string err;
  ASSERT_TRUE(ParseOptions({}, &o, &err));
  EXPECT_EQ(o.config, "djinn-consumer.conf");
  EXPECT_FALSE(o.test);
}

TEST(OptionsTest, AcceptsOneOrTwoDashesAndEquals) {
  for (auto args : std::vector<std::vector<std::string>>{
           {"-config", "a.conf", "-t"}, {"--config", "a.conf", "--t"}, {"-config=a.conf", "-t"},
           {"--config=a.conf", "-t"}}) {
    Options o;
    std::string err;
    ASSERT_TRUE(ParseOptions(args, &o, &err)) << err;
    EXPECT_EQ(o.config, "a.conf");
    EXPECT_TRUE(o.test);
  }
}

TEST(OptionsTest, VersionAndHelp) {
  Options o;
  std::string err;
  ASSERT_TRUE(ParseOptions({"-version", "--help"}, &o, &err));
  EXPECT_TRUE(o.version);
  EXPECT_TRUE(o.help);
  EXPECT_NE(VersionString().find("djinn-consumer "), std::string::npos);
  EXPECT_NE(VersionString().find("Linux/"), std::string::npos);
}

TEST(OptionsTest, PrintGoesWithTest) {
  Options o;
  std::string err;
  ASSERT_TRUE(ParseOptions({"-t", "-print"}, &o, &err)) << err;
  EXPECT_TRUE(o.test);
  EXPECT_TRUE(o.print);
  Options p;
  EXPECT_FALSE(ParseOptions({"-print"}, &p, &err));
  EXPECT_EQ(err, "-print goes with -t");
}

TEST(OptionsTest, UnknownFlagIsAnError) {
  Options o;
  std::string err;
  EXPECT_FALSE(ParseOptions({"-x"}, &o, &err));
  EXPECT_EQ(err, "unknown flag -x");
  EXPECT_FALSE(ParseOptions({"-config"}, &o, &err));
  EXPECT_EQ(err, "flag needs an argument: -config");
  EXPECT_FALSE(ParseOptions({"stray"}, &o, &err));
  EXPECT_FALSE(ParseOptions({"-t=1"}, &o, &err));
}

// ------------------------------------------------------- operator commands

TEST(OptionsTest, CommandFollowsTheFlags) {
  Options o;
  std::string err;
  ASSERT_TRUE(ParseOptions({"-config", "a.conf", "status", "-json"}, &o, &err)) << err;
  EXPECT_EQ(o.config, "a.conf");
  EXPECT_EQ(o.command, "status");
  EXPECT_TRUE(o.json);
  Options q;
  ASSERT_TRUE(ParseOptions({"queue"}, &q, &err)) << err;
  EXPECT_EQ(q.command, "queue");
  EXPECT_FALSE(q.json);
  // A flag after the command is the command's: -config is not one.
  Options r;
  EXPECT_FALSE(ParseOptions({"status", "-config", "a.conf"}, &r, &err));
  EXPECT_EQ(err, "status: unknown flag -config");
}

TEST(OptionsTest, DeadTakesALimit) {
  for (auto args : std::vector<std::vector<std::string>>{
           {"dead", "-n", "5"}, {"dead", "-n=5"}, {"dead", "--n", "5", "-json"}}) {
    Options o;
    std::string err;
    ASSERT_TRUE(ParseOptions(args, &o, &err)) << err;
    EXPECT_EQ(o.limit, 5);
  }
  Options d;
  std::string err;
  ASSERT_TRUE(ParseOptions({"dead"}, &d, &err));
  EXPECT_EQ(d.limit, 20);
  ASSERT_TRUE(ParseOptions({"dead", "-n", "0"}, &d, &err));
  EXPECT_EQ(d.limit, 0);
  for (auto args : std::vector<std::vector<std::string>>{
           {"dead", "-n"}, {"dead", "-n", "-1"}, {"dead", "-n", "x"}, {"dead", "-n", "5x"}}) {
    Options o;
    EXPECT_FALSE(ParseOptions(args, &o, &err)) << args.back();
  }
  EXPECT_EQ(err, "dead: -n: expected a number >= 0 (got \"5x\")");
}

TEST(OptionsTest, RetryAndPurgeTakeIdsOrAll) {
  Options o;
  std::string err;
  ASSERT_TRUE(ParseOptions({"retry", "a", "b"}, &o, &err)) << err;
  EXPECT_EQ(o.ids, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(o.all);
  Options p;
  ASSERT_TRUE(ParseOptions({"purge", "-all"}, &p, &err)) << err;
  EXPECT_TRUE(p.all);
  EXPECT_TRUE(p.ids.empty());
  // "--" ends the flags: an ID may start with a dash.
  Options q;
  ASSERT_TRUE(ParseOptions({"purge", "--", "-odd-id"}, &q, &err)) << err;
  EXPECT_EQ(q.ids, std::vector<std::string>{"-odd-id"});
  Options r;
  EXPECT_FALSE(ParseOptions({"retry"}, &r, &err));
  EXPECT_EQ(err, "retry: give job IDs or -all");
  EXPECT_FALSE(ParseOptions({"purge", "-all", "a"}, &r, &err));
  EXPECT_EQ(err, "purge: give job IDs or -all, not both");
  EXPECT_FALSE(ParseOptions({"retry", "-json", "a"}, &r, &err));
  EXPECT_EQ(err, "retry: unknown flag -json");
}

TEST(OptionsTest, CommandUsageErrors) {
  std::string err;
  Options o;
  EXPECT_FALSE(ParseOptions({"frobnicate"}, &o, &err));
  EXPECT_EQ(err, "unknown command \"frobnicate\"");
  EXPECT_FALSE(ParseOptions({"status", "extra"}, &o, &err));
  EXPECT_EQ(err, "status: unexpected argument \"extra\"");
  EXPECT_FALSE(ParseOptions({"queue", "-all"}, &o, &err));
  EXPECT_EQ(err, "queue: unknown flag -all");
  EXPECT_FALSE(ParseOptions({"status", "-json=1"}, &o, &err));
  EXPECT_EQ(err, "status: flag -json takes no value");
  Options t;
  EXPECT_FALSE(ParseOptions({"-t", "status"}, &t, &err));
  EXPECT_EQ(err, "-t does not go with a command");
}

TEST(OptionsTest, UsageNamesEveryCommand) {
  for (const std::string& c : kCommands) EXPECT_NE(Usage().find("  " + c + " "), std::string::npos) << c;
}

}  // namespace
}  // namespace djinn
