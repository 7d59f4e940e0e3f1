#include "common/units.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace djinn {
namespace {

constexpr int64_t kMs = 1000000, kSec = 1000 * kMs;

TEST(ParseGoDuration, AcceptsWhatGoAccepts) {
  struct Case {
    const char* in;
    int64_t ns;
  } cases[] = {
      {"0", 0},
      {"30s", 30 * kSec},
      {"1m30s", 90 * kSec},
      {"500ms", 500 * kMs},
      {"1h", 3600 * kSec},
      {"1.5s", 1500 * kMs},
      {".5s", 500 * kMs},
      {"1.s", kSec},
      {"+5s", 5 * kSec},
      {"-1.5h", -5400 * kSec},
      {"1h2m3s4ms5us6ns", 3723 * kSec + 4 * kMs + 5000 + 6},
      {"3\xc2\xb5s", 3000},  // U+00B5 micro sign
      {"3\xce\xbcs", 3000},  // U+03BC Greek mu
      {"0.000000001s", 1},
      {"9223372036854775807ns", INT64_MAX},
      {"2562047h47m16.854775807s", INT64_MAX},
      {"-9223372036854775808ns", INT64_MIN},
  };
  for (const auto& c : cases) {
    auto d = ParseGoDuration(c.in);
    ASSERT_TRUE(d.ok()) << c.in << ": " << d.status().message();
    EXPECT_EQ(*d, c.ns) << c.in;
  }
}

TEST(ParseGoDuration, RejectsWhatGoRejects) {
  for (const char* bad : {"", "3", "-", "s", ".s", "1.2.3s", "1x", "1 s", "1sm", "5 ", "10d",
                          "9223372036854775808ns", "2562047h47m17s", "-9223372036854775809ns"}) {
    auto d = ParseGoDuration(bad);
    EXPECT_FALSE(d.ok()) << bad;
  }
}

TEST(ParseSize, ReadsDjinnSizesInPowersOf1024) {
  EXPECT_EQ(*ParseSize("0B"), 0);
  EXPECT_EQ(*ParseSize("512B"), 512);
  EXPECT_EQ(*ParseSize("1KB"), 1024);
  EXPECT_EQ(*ParseSize("50MB"), 50 << 20);
  EXPECT_EQ(*ParseSize("10GB"), int64_t{10} << 30);
  EXPECT_EQ(*ParseSize("2TB"), int64_t{2} << 40);
  EXPECT_EQ(*ParseSize("8388607TB"), int64_t{8388607} << 40);
}

TEST(ParseSize, RejectsWhatIsNotASize) {
  for (const char* bad : {"", "MB", "5", "5K", "5kb", "1.5MB", "-1MB", "5 MB", "5PB", "5MBB"}) {
    auto r = ParseSize(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().message(), std::string("invalid size \"") + bad + "\"");
    }
  }
  auto big = ParseSize("8388608TB");
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().message(), "size \"8388608TB\" out of range");
  EXPECT_FALSE(ParseSize("99999999999999999999B").ok());
}

}  // namespace
}  // namespace djinn
