// The Prometheus text exposition format (version 0.0.4), written by hand
// because it is a few lines of printf: families with # HELP and # TYPE,
// samples with escaped label values, histograms with cumulative buckets
// ending in le="+Inf", then _sum and _count.
//
// Nothing here checks that a name is a valid metric name: callers pass
// constants. Label values are arbitrary bytes and are escaped (\\, \",
// \n), as the format requires.
#ifndef DJINN_MASTER_PROM_TEXT_H_
#define DJINN_MASTER_PROM_TEXT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace djinn {

using PromLabels = std::vector<std::pair<std::string, std::string>>;

// A label value as the format wants it: \ " and newline escaped.
std::string PromEscapeLabelValue(std::string_view v);
// A HELP text: \ and newline escaped.
std::string PromEscapeHelp(std::string_view v);
// Shortest exact form: "3", "0.005", "+Inf", "-Inf", "NaN".
std::string PromValue(double v);

class PromText {
 public:
  // "# HELP name help" and "# TYPE name type" (counter, gauge, histogram).
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, const PromLabels& labels, double value);
  // One histogram series: `counts` per bucket (not cumulative), one more
  // than `bounds` (the last is the +Inf bucket); `sum` in the unit of
  // the bounds. Writes name_bucket (cumulative), name_sum, name_count.
  void Histogram(std::string_view name, const PromLabels& labels, const std::vector<double>& bounds,
                 const std::vector<uint64_t>& counts, double sum);
  const std::string& text() const { return out_; }

 private:
  void Series(std::string_view name, const PromLabels& labels, const std::string& value);
  std::string out_;
};

}  // namespace djinn

#endif  // DJINN_MASTER_PROM_TEXT_H_
