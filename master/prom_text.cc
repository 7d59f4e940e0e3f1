#include "master/prom_text.h"

#include <charconv>
#include <cmath>

namespace djinn {

std::string PromEscapeLabelValue(std::string_view v) {
  std::string o;
  o.reserve(v.size());
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string PromEscapeHelp(std::string_view v) {
  std::string o;
  o.reserve(v.size());
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string PromValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

void PromText::Family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += PromEscapeHelp(help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void PromText::Series(std::string_view name, const PromLabels& labels, const std::string& value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); i++) {
      if (i > 0) out_ += ',';
      out_ += labels[i].first;
      out_ += "=\"";
      out_ += PromEscapeLabelValue(labels[i].second);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void PromText::Sample(std::string_view name, const PromLabels& labels, double value) {
  Series(name, labels, PromValue(value));
}

void PromText::Histogram(std::string_view name, const PromLabels& labels,
                         const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                         double sum) {
  std::string bucket = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds.size(); i++) {
    cumulative += i < counts.size() ? counts[i] : 0;
    PromLabels l = labels;
    l.emplace_back("le", i < bounds.size() ? PromValue(bounds[i]) : "+Inf");
    Series(bucket, l, std::to_string(cumulative));
  }
  Series(std::string(name) + "_sum", labels, PromValue(sum));
  Series(std::string(name) + "_count", labels, std::to_string(cumulative));
}

}  // namespace djinn
