// libFuzzer target: any text as a config in Djinn's own syntax (without
// includes: they would read the fuzzing machine's files). Checks that a
// failure is one permanent line naming the file and that the tree keeps the
// invariants the config mapper relies on; also runs the syntax sniffer.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "common/djinn_conf.h"

namespace {

// Parameters have names, array items have none; every node has a line.
void CheckNode(const djinn::ConfNode& n, bool item, int depth) {
  if (item != n.name.empty() || n.line < 1 || n.file != "fuzz.conf") std::abort();
  if (item && !n.label.empty()) std::abort();
  if (depth > djinn::kDjinnConfMaxNesting) std::abort();
  using Kind = djinn::ConfNode::Kind;
  if (n.kind != Kind::kArray && n.kind != Kind::kBlock && !n.children.empty()) std::abort();
  for (const djinn::ConfNode& c : n.children) CheckNode(c, n.kind == Kind::kArray, depth + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  djinn::LooksLikeDjinnSyntax(text);
  djinn::DjinnConfOptions opts;
  opts.getenv = [](const std::string& name) -> std::optional<std::string> {
    if (name.size() % 2 == 1) return std::nullopt;
    return "<" + name + ">";
  };
  djinn::Result<djinn::ConfNode> root = djinn::ParseDjinnConfText(text, "fuzz.conf", "", opts);
  if (!root.ok()) {
    const std::string& msg = root.status().message();
    if (!root.status().permanent()) std::abort();
    if (msg.rfind("fuzz.conf:", 0) != 0 || msg.find('\n') != std::string::npos) std::abort();
    return 0;
  }
  if (root->kind != djinn::ConfNode::Kind::kBlock || !root->name.empty()) std::abort();
  for (const djinn::ConfNode& c : root->children) CheckNode(c, false, 0);
  return 0;
}
