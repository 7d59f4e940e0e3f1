// ConfNode: one parsed configuration file, whatever its syntax, as a tree
// of named parameters with their source positions. Both readers produce it
// (libconfig syntax in common/config.cc, Djinn's own syntax in
// common/djinn_conf.h); common/config.cc validates one tree into a Config.
//
// A node is either a parameter (name, optional label, value) inside a
// block, or an item of an array (name empty). Positions point at the
// parameter's name: error messages are "<file>:<line>: <param>: <what>".
#ifndef DJINN_COMMON_CONF_TREE_H_
#define DJINN_COMMON_CONF_TREE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace djinn {

struct ConfNode {
  enum class Kind {
    kString,    // text: the string, escapes and ${VAR} already resolved
    kInt,       // num: the value
    kFloat,     // real: the value
    kBool,      // flag
    kDuration,  // num: nanoseconds (Go's time.Duration); text: as written
    kSize,      // num: bytes (1 KB = 1024 B, as Djinn); text: as written
    kArray,     // children: items, name empty
    kBlock,     // children: parameters
  };

  std::string name;   // parameter name as written (empty for array items)
  std::string label;  // Djinn syntax "store images { }": "images"; else ""
  Kind kind = Kind::kBlock;
  std::string text;
  int64_t num = 0;
  double real = 0;
  bool flag = false;
  std::vector<ConfNode> children;
  std::string file;  // the file it was read from (an included file: that one)
  int line = 0;      // 1-based; 0 when unknown
};

const char* ConfKindName(ConfNode::Kind kind);  // "a string", "a duration"...

}  // namespace djinn

#endif  // DJINN_COMMON_CONF_TREE_H_
