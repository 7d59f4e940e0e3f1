#include "common/units.h"

#include <limits>
#include <string>

namespace djinn {
namespace {

Status Invalid(std::string_view what, std::string_view text) {
  return Status::Permanent("invalid " + std::string(what) + " \"" + std::string(text) + "\"");
}

Status OutOfRange(std::string_view what, std::string_view text) {
  return Status::Permanent(std::string(what) + " \"" + std::string(text) + "\" out of range");
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

struct GoUnit {
  std::string_view name;
  uint64_t ns;
};
// time.ParseDuration's units; "µs" with U+00B5 (micro sign) or U+03BC (mu).
constexpr GoUnit kGoUnits[] = {
    {"ns", 1},       {"us", 1000},         {"\xc2\xb5s", 1000},       {"\xce\xbcs", 1000},
    {"ms", 1000000}, {"s", 1000000000ULL}, {"m", 60 * 1000000000ULL}, {"h", 3600 * 1000000000ULL},
};

}  // namespace

Result<int64_t> ParseGoDuration(std::string_view text) {
  // A port of Go's time.ParseDuration, so a "?timeout=" that the Go
  // consumer accepted means the same here.
  auto bad = [&] { return Status::Permanent("invalid duration \"" + std::string(text) + "\""); };
  std::string_view s = text;
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return int64_t{0};
  if (s.empty()) return bad();
  constexpr uint64_t kMax = uint64_t{1} << 63;
  uint64_t d = 0;
  while (!s.empty()) {
    if (s[0] != '.' && !IsDigit(s[0])) return bad();
    uint64_t v = 0;
    size_t i = 0;
    for (; i < s.size() && IsDigit(s[i]); ++i) {
      if (v > (kMax - 1) / 10) return bad();  // overflow
      v = v * 10 + static_cast<uint64_t>(s[i] - '0');
      if (v > kMax) return bad();
    }
    bool pre = i > 0;
    s.remove_prefix(i);
    uint64_t f = 0;
    double scale = 1;
    bool post = false;
    if (!s.empty() && s[0] == '.') {
      s.remove_prefix(1);
      size_t j = 0;
      bool overflow = false;
      for (; j < s.size() && IsDigit(s[j]); ++j) {
        if (overflow) continue;
        if (f > (std::numeric_limits<int64_t>::max() - 9) / 10) {
          overflow = true;  // further digits only add noise below a ns
          continue;
        }
        f = f * 10 + static_cast<uint64_t>(s[j] - '0');
        scale *= 10;
      }
      post = j > 0;
      s.remove_prefix(j);
    }
    if (!pre && !post) return bad();
    size_t u = 0;
    while (u < s.size() && s[u] != '.' && !IsDigit(s[u])) ++u;
    if (u == 0) return bad();  // missing unit
    std::string_view unit_name = s.substr(0, u);
    s.remove_prefix(u);
    uint64_t unit = 0;
    for (const GoUnit& k : kGoUnits) {
      if (k.name == unit_name) unit = k.ns;
    }
    if (unit == 0) return bad();
    if (v > kMax / unit) return bad();
    v *= unit;
    if (f > 0) {
      v += static_cast<uint64_t>(static_cast<double>(f) * (static_cast<double>(unit) / scale));
      if (v > kMax) return bad();
    }
    d += v;
    if (d > kMax) return bad();
  }
  if (neg) return static_cast<int64_t>(-static_cast<__int128>(d));
  if (d > kMax - 1) return bad();
  return static_cast<int64_t>(d);
}

Result<int64_t> ParseSize(std::string_view text) {
  size_t i = 0;
  uint64_t n = 0;
  for (; i < text.size() && IsDigit(text[i]); i++) {
    if (n > (uint64_t{INT64_MAX} - 9) / 10) return OutOfRange("size", text);
    n = n * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  if (i == 0) return Invalid("size", text);
  std::string_view unit = text.substr(i);
  int shift;
  if (unit == "B") shift = 0;
  else if (unit == "KB") shift = 10;
  else if (unit == "MB") shift = 20;
  else if (unit == "GB") shift = 30;
  else if (unit == "TB") shift = 40;
  else return Invalid("size", text);
  if (n > (uint64_t{INT64_MAX} >> shift)) return OutOfRange("size", text);
  return static_cast<int64_t>(n << shift);
}

}  // namespace djinn
