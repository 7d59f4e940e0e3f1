// Reader for Djinn's own configuration syntax (the Go library
// andrewpillar/config v1.0.0, nginx-like) into a ConfNode tree:
//
//   pidfile "/var/run/djinn/consumer.pid"
//   log info "/var/log/djinn/consumer.log"   # name, label, value
//   store images {
//       type "file"
//       limit 50MB
//   }
//   include ["conf.d/a.conf", "conf.d/b.conf",]
//
// Values: "strings" (backslash escapes the next character, ${VAR} expands),
// integers, floats, true/false, durations (1h30m, 1.5h, 90s, 100ms), sizes
// (B, KB, MB, GB, TB; 1 KB = 1024 B), arrays [a, b,] and blocks { ... }. A
// newline ends a parameter only after a name, a literal, "}" or "]" (as in
// Go), so a multi-line array needs a comma after every item. "#" comments
// run to the end of the line.
//
// Where this reader differs from the Go library (each a deliberate choice;
// the Go behaviour is a bug or an accident there):
//   - A relative include resolves against the directory of the including
//     file, not the process's working directory.
//   - "#" comments end at the newline, which still ends the parameter before
//     it (Go swallows it, and hangs on a comment at end of file).
//   - Top-level parameters need a separator like block ones ("a 1 b 2" on
//     one line is an error; Go accepts it at top level only).
//   - "name true" is a bool before "}" and at end of file too, not only
//     before a newline or ";".
//   - Every malformed literal is an error where Go decodes it silently to 0
//     or drops characters: "5K", "1.5MB", "-", an int64 or size overflow,
//     a float above double range. A negative size ("-5MB") is kept, as in
//     Go: the consumer of the tree judges ranges.
//   - Strings: "\\" is one backslash, "\$" a literal "$" (Go expands ${...}
//     after a backslash), "${A}${B}" looks up A then B (Go: A, then AB), an
//     unterminated "${" stays literal (Go drops the rest of the string).
//   - A non-ASCII character counts as a letter in names when it is valid
//     UTF-8 and not a control, space, Latin-1 symbol or byte-order mark (Go
//     asks unicode.IsLetter; we carry no Unicode tables). Invalid UTF-8
//     outside strings is an error; inside strings bytes pass through.
//   - Included files must be regular files; the same file (by device and
//     inode) may be included only once.
//
// Thread safety: the functions keep no state; opts.getenv is called from the
// calling thread only.
#ifndef DJINN_COMMON_DJINN_CONF_H_
#define DJINN_COMMON_DJINN_CONF_H_

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/conf_tree.h"
#include "common/status.h"

namespace djinn {

// Blocks and arrays nested deeper than this are an error (bounds recursion).
inline constexpr int kDjinnConfMaxNesting = 64;

struct DjinnConfOptions {
  // Looks up ${VAR}; default (empty): ::getenv. Unset -> expands to "" (as
  // Go does).
  std::function<std::optional<std::string>(const std::string&)> getenv;
  // Includes nested deeper than this (the top-level file is depth 0) are an
  // error.
  int max_include_depth = 16;
  // A bigger file (or text) is an error.
  size_t max_file_bytes = 1 << 20;
};

// Parses the file at path. Returns the root: kind kBlock, name "", file =
// path, line 0, children = the top-level parameters in order (a literal
// other than a string keeps its text as written in ConfNode::text), with each
// top-level `include` replaced in place by the included file's parameters
// (whose nodes carry the included file's path and lines). A relative
// include resolves against the directory of the file that includes it.
// Errors are Status::Permanent with one line "<file>:<line>: <what>", the
// file being the one the error is in; a bad literal's <what> starts with the
// dotted parameter (labels included) it belongs to. E.g.
//   a.conf:3: syntax error: expected value after "addr"
//   a.conf:7: store.images.limit: size 99999999TB out of range
//   a.conf:4: include "x.conf": No such file or directory
//   b.conf:1: include "c.conf": sub/c.conf already included from a.conf:2
//   b.conf:1: include "a.conf": ./a.conf already included as the top-level file
// (The top-level file is known only to ParseDjinnConf; text given to
// ParseDjinnConfText that includes its own file is caught one level later.)
// Failing to open or read path itself gives "<path>: <strerror>".
Result<ConfNode> ParseDjinnConf(const std::string& path, const DjinnConfOptions& opts = {});

// Same for text in memory: `name` is the file name in positions and in the
// nodes, relative includes resolve against base_dir, and an include is an
// error when base_dir is empty.
Result<ConfNode> ParseDjinnConfText(std::string_view text, const std::string& name,
                                    const std::string& base_dir, const DjinnConfOptions& opts = {});

// True when text looks like Djinn syntax rather than libconfig syntax. Skips
// whitespace and comments (#..., //..., /*...*/), then: nothing left ->
// false; '@' (libconfig's @include) -> false; otherwise reads a name, skips
// spaces and tabs, and is false when the next character is '=' or ':'
// (libconfig's assignment), true otherwise. Never fails.
bool LooksLikeDjinnSyntax(std::string_view text);

}  // namespace djinn

#endif  // DJINN_COMMON_DJINN_CONF_H_
