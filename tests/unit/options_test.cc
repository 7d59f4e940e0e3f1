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

}  // namespace
}  // namespace djinn
