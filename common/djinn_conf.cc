// Djinn's config syntax: a hand-written scanner and recursive-descent parser
// after andrewpillar/config v1.0.0 (scanner.go, parser.go, decode.go). The
// Go library decodes literals only when it maps them onto a struct, and
// ignores most conversion errors there; we convert while parsing so that
// every error carries the file and line of the literal at fault.
#include "common/djinn_conf.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "common/units.h"

namespace djinn {

const char* ConfKindName(ConfNode::Kind kind) {
  using K = ConfNode::Kind;
  switch (kind) {
    case K::kString:
      return "a string";
    case K::kInt:
      return "an integer";
    case K::kFloat:
      return "a float";
    case K::kBool:
      return "a boolean";
    case K::kDuration:
      return "a duration";
    case K::kSize:
      return "a size";
    case K::kArray:
      return "an array";
    case K::kBlock:
      return "a block";
  }
  return "a value";
}

namespace {

using Kind = ConfNode::Kind;

// --------------------------------------------------------------- characters

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAsciiLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

// Decodes one UTF-8 sequence at s[i] (s[i] >= 0x80). Returns its length, or
// 0 when it is malformed, overlong, a surrogate or beyond U+10FFFF.
size_t DecodeUtf8(std::string_view s, size_t i, char32_t* cp) {
  unsigned char b = static_cast<unsigned char>(s[i]);
  size_t len;
  char32_t min;
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2, min = 0x80, *cp = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3, min = 0x800, *cp = b & 0x0F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4, min = 0x10000, *cp = b & 0x07;
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  for (size_t k = 1; k < len; k++) {
    unsigned char c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xC0) != 0x80) return 0;
    *cp = (*cp << 6) | (c & 0x3F);
  }
  if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return 0;
  return len;
}

// Go asks unicode.IsLetter. Without Unicode tables we accept every code point
// but controls, spaces, the byte-order mark and Latin-1's symbols: a wider
// set, which only turns some errors into names the consumer will not know.
bool IsNonAsciiLetter(char32_t cp) {
  if (cp < 0xC0) return cp == 0xAA || cp == 0xB5 || cp == 0xBA;
  if (cp == 0xD7 || cp == 0xF7) return false;
  if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F) || cp == 0x2028 || cp == 0x2029 ||
      cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0xFEFF)
    return false;
  return true;
}

// Length of the letter (or, when digits, letter or digit) at s[i]; 0 if none.
size_t LetterAt(std::string_view s, size_t i, bool digits) {
  char c = s[i];
  if (IsAsciiLetter(c) || (digits && IsDigit(c))) return 1;
  if (static_cast<unsigned char>(c) < 0x80) return 0;
  char32_t cp;
  size_t len = DecodeUtf8(s, i, &cp);
  return len > 0 && IsNonAsciiLetter(cp) ? len : 0;
}

std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// Messages are one line: control characters (from a string, a path or an
// environment variable) become '?'.
Status Fail(std::string msg) {
  for (char& c : msg)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = '?';
  return Status::Permanent(std::move(msg));
}

// ------------------------------------------------------------------ scanner

enum class Tok { kEof, kName, kString, kNumber, kSemi, kComma, kLbrace, kRbrace, kLbrack, kRbrack };

struct Token {
  Tok kind = Tok::kEof;
  // kName: the name; kString: the raw text between the quotes; kNumber: the
  // literal with any unit; kSemi: "\n" or ";".
  std::string_view text;
  int line = 1;
};

std::string Describe(const Token& t) {
  switch (t.kind) {
    case Tok::kEof:
      return "end of file";
    case Tok::kName:
      return "name " + Quoted(t.text);
    case Tok::kString:
      return "string " + Quoted(t.text.size() > 40 ? std::string(t.text.substr(0, 40)) + "..."
                                                   : std::string(t.text));
    case Tok::kNumber:
      return Quoted(t.text);
    case Tok::kSemi:
      return t.text == "\n" ? "newline" : "\";\"";
    case Tok::kComma:
      return "\",\"";
    case Tok::kLbrace:
      return "\"{\"";
    case Tok::kRbrace:
      return "\"}\"";
    case Tok::kLbrack:
      return "\"[\"";
    case Tok::kRbrack:
      return "\"]\"";
  }
  return "token";
}

// Splits text into tokens. As Go's scanner, it turns a newline into a
// separator only after a name, a literal, "}" or "]", so that a newline after
// "{", "[" or "," is just space.
class Scanner {
 public:
  Scanner(std::string_view src, const std::string& file) : src_(src), file_(file) {}

  Status Next(Token* tok) {
    bool nlsemi = std::exchange(nlsemi_, false);
    for (;;) {
      if (pos_ == src_.size()) {
        *tok = {Tok::kEof, {}, line_};
        return Status::Ok();
      }
      char c = src_[pos_];
      if (c == ' ' || c == '\t' || c == '\r') {
        pos_++;
      } else if (c == '\n') {
        if (nlsemi) {
          *tok = {Tok::kSemi, src_.substr(pos_++, 1), line_++};
          return Status::Ok();
        }
        pos_++, line_++;
      } else if (c == '#') {
        // Up to, not including, the newline: it still ends the parameter
        // before the comment (Go's scanner swallows it).
        while (pos_ < src_.size() && src_[pos_] != '\n') {
          if (src_[pos_] == '\0') return Error("syntax error: invalid NUL byte");
          pos_++;
        }
      } else {
        break;
      }
    }
    size_t start = pos_;
    tok->line = line_;
    char c = src_[pos_];
    if (LetterAt(src_, pos_, false) > 0) {
      while (pos_ < src_.size()) {
        size_t len = LetterAt(src_, pos_, true);
        if (len == 0) break;
        pos_ += len;
      }
      return Emit(tok, Tok::kName, start, true);
    }
    if (IsDigit(c) || c == '-') {
      // The number as Go's scanner reads it ("-", digits and points), then
      // every letter, digit or point after it as its unit: "5K" or "1e5" is
      // one bad literal rather than a number followed by a stray name.
      pos_++;
      while (pos_ < src_.size() && (IsDigit(src_[pos_]) || src_[pos_] == '.')) pos_++;
      while (pos_ < src_.size() &&
             (IsAsciiLetter(src_[pos_]) || IsDigit(src_[pos_]) || src_[pos_] == '.'))
        pos_++;
      return Emit(tok, Tok::kNumber, start, true);
    }
    pos_++;
    switch (c) {
      case ';':
        return Emit(tok, Tok::kSemi, start, false);
      case ',':
        return Emit(tok, Tok::kComma, start, false);
      case '{':
        return Emit(tok, Tok::kLbrace, start, false);
      case '}':
        return Emit(tok, Tok::kRbrace, start, true);
      case '[':
        return Emit(tok, Tok::kLbrack, start, false);
      case ']':
        return Emit(tok, Tok::kRbrack, start, true);
      case '"':
        return String(tok);
      case '\0':
        return Error("syntax error: invalid NUL byte");
      default:
        break;
    }
    return Error("syntax error: unexpected character " + CharName(start));
  }

 private:
  Status Emit(Token* tok, Tok kind, size_t start, bool nlsemi) {
    tok->kind = kind;
    tok->text = src_.substr(start, pos_ - start);
    nlsemi_ = nlsemi;
    return Status::Ok();
  }

  // After the opening quote. The token keeps the raw text; Expand() resolves
  // escapes and ${VAR}.
  Status String(Token* tok) {
    size_t start = pos_;
    for (;;) {
      if (pos_ == src_.size()) return Error("syntax error: unterminated string");
      char c = src_[pos_];
      if (c == '"') break;
      if (c == '\\') c = ++pos_ < src_.size() ? src_[pos_] : '"';
      if (pos_ == src_.size()) return Error("syntax error: unterminated string");
      if (c == '\n') return Error("syntax error: unexpected newline in string");
      if (c == '\0') return Error("syntax error: invalid NUL byte");
      pos_++;
    }
    tok->kind = Tok::kString;
    tok->text = src_.substr(start, pos_ - start);
    pos_++;
    nlsemi_ = true;
    return Status::Ok();
  }

  std::string CharName(size_t i) const {
    unsigned char c = static_cast<unsigned char>(src_[i]);
    if (c > 0x20 && c < 0x7F) return std::string("'") + src_[i] + "'";
    char32_t cp = c;
    if (c >= 0x80 && DecodeUtf8(src_, i, &cp) == 0) return "(invalid UTF-8)";
    char buf[16];
    std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(cp));
    return buf;
  }

  Status Error(const std::string& what) const {
    return Fail(file_ + ":" + std::to_string(line_) + ": " + what);
  }

  std::string_view src_;
  const std::string& file_;
  size_t pos_ = 0;
  int line_ = 1;
  bool nlsemi_ = false;
};

// ----------------------------------------------------------------- literals

int64_t SizeUnit(std::string_view u) {
  if (u == "B") return 1;
  if (u == "KB") return int64_t{1} << 10;
  if (u == "MB") return int64_t{1} << 20;
  if (u == "GB") return int64_t{1} << 30;
  if (u == "TB") return int64_t{1} << 40;
  return 0;
}

// A number token as an int, float, size or duration. Returns "" or why not.
std::string ParseNumber(std::string_view t, ConfNode* out) {
  size_t end = t[0] == '-' ? 1 : 0;
  size_t digits = 0, points = 0;
  for (; end < t.size() && (IsDigit(t[end]) || t[end] == '.'); end++)
    (t[end] == '.' ? points : digits)++;
  std::string_view num = t.substr(0, end), unit = t.substr(end);
  const char* first = num.data();
  const char* last = num.data() + num.size();
  out->text = std::string(t);
  if (unit.empty() && digits > 0 && points == 0) {
    out->kind = Kind::kInt;
    auto [ptr, ec] = std::from_chars(first, last, out->num);
    if (ec == std::errc::result_out_of_range) return "integer " + out->text + " out of range";
    return ec == std::errc() && ptr == last ? "" : "invalid number " + Quoted(t);
  }
  if (unit.empty() && digits > 0 && points == 1) {
    out->kind = Kind::kFloat;
    auto [ptr, ec] = std::from_chars(first, last, out->real);
    if (ec == std::errc::result_out_of_range) {
      // Without an exponent only a long integer part overflows; a long run
      // of zeros after the point underflows, and Go reads that as 0.
      if (num.find_first_of("123456789") < num.find('.'))
        return "float " + out->text + " out of range";
      out->real = 0;
      return "";
    }
    return ec == std::errc() && ptr == last ? "" : "invalid number " + Quoted(t);
  }
  if (int64_t scale = SizeUnit(unit); scale > 0) {
    out->kind = Kind::kSize;
    if (digits == 0 || points > 0) return "invalid size " + Quoted(t) + ": not a whole number";
    int64_t n = 0;
    auto [ptr, ec] = std::from_chars(first, last, n);
    if (ec == std::errc::result_out_of_range || __builtin_mul_overflow(n, scale, &out->num))
      return "size " + out->text + " out of range";
    return ec == std::errc() && ptr == last ? "" : "invalid size " + Quoted(t);
  }
  if (!unit.empty() && (unit[0] == 's' || unit[0] == 'm' || unit[0] == 'h')) {
    // Go's scanner takes runs of s, m and h, each optionally followed by a
    // number that starts with a digit ("1h30m", "1.5h", "100ms").
    out->kind = Kind::kDuration;
    for (size_t i = 0; i < unit.size(); i++) {
      char c = unit[i];
      bool ok =
          c == 's' || c == 'm' || c == 'h' || IsDigit(c) || (c == '.' && IsDigit(unit[i - 1]));
      if (!ok) return "invalid duration " + Quoted(t);
    }
    auto ns = ParseGoDuration(t);
    if (!ns.ok()) return ns.status().message();
    out->num = *ns;
    return "";
  }
  if (!unit.empty() && IsAsciiLetter(unit[0]))
    return "invalid number " + Quoted(t) + ": unknown unit " + Quoted(unit) +
           " (durations take h, m, s or ms; sizes B, KB, MB, GB or TB)";
  return "invalid number " + Quoted(t);
}

// ------------------------------------------------------------------- files

struct FileId {
  dev_t dev;
  ino_t ino;
  bool operator<(const FileId& o) const { return dev != o.dev ? dev < o.dev : ino < o.ino; }
};

// Reads a whole file of at most max_bytes. Errors are "<what>: <reason>".
Status ReadConfFile(const std::string& path, const std::string& what, size_t max_bytes,
                    bool regular_only, std::string* text, FileId* id) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) return Status::FromErrno(what, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(what, errno);
  if (S_ISDIR(st.st_mode)) return Status::FromErrno(what, EISDIR);
  // A FIFO or a device could block a reload for ever.
  if (regular_only && !S_ISREG(st.st_mode)) return Fail(what + ": not a regular file");
  *id = {st.st_dev, st.st_ino};
  std::string too_big = what + ": larger than " + std::to_string(max_bytes) + " bytes";
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > max_bytes) return Fail(too_big);
  text->clear();
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(what, errno);
    if (n == 0) break;
    if (text->size() + static_cast<size_t>(n) > max_bytes) return Fail(too_big);
    text->append(buf, static_cast<size_t>(n));
  }
  return Status::Ok();
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return "";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || name[0] == '/') return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

// ------------------------------------------------------------------- parser

// What one top-level parse shares with the parsers of its included files.
struct Session {
  const DjinnConfOptions& opts;
  std::function<std::optional<std::string>(const std::string&)> getenv;
  // Every file read so far -> "<file>:<line>" of the include that read it
  // ("" for the top-level file).
  std::map<FileId, std::string> seen;
};

class Parser {
 public:
  // includes: whether `include` is allowed; relative names resolve against
  // dir ("" = the working directory).
  Parser(Session* session, std::string_view text, std::string file, bool includes, std::string dir,
         int include_depth)
      : session_(session),
        file_(std::move(file)),
        scanner_(text, file_),
        includes_(includes),
        dir_(std::move(dir)),
        include_depth_(include_depth) {}

  // Appends the file's top-level parameters, includes expanded, to *out.
  Status ParseFile(std::vector<ConfNode>* out) {
    if (Status st = Advance(); !st.ok()) return st;
    return ParseParams(0, 0, "", out);
  }

 private:
  Status Advance() { return scanner_.Next(&tok_); }

  Status Error(int line, const std::string& what) const {
    return Fail(file_ + ":" + std::to_string(line) + ": " + what);
  }

  // The parameters of the file (depth 0, up to the end) or of a block (up to
  // and including its "}"), each ended by ";", a newline or the end. path
  // names the block in messages ("store.images"; "" for the file).
  Status ParseParams(int depth, int open_line, const std::string& path,
                     std::vector<ConfNode>* out) {
    const bool top = depth == 0;
    for (;;) {
      while (tok_.kind == Tok::kSemi)
        if (Status st = Advance(); !st.ok()) return st;
      if (top && tok_.kind == Tok::kEof) return Status::Ok();
      if (!top && tok_.kind == Tok::kRbrace) return Advance();
      if (!top && tok_.kind == Tok::kEof)
        return Error(tok_.line,
                     "syntax error: unexpected end of file, expected \"}\" to "
                     "close the block opened on line " +
                         std::to_string(open_line));
      if (tok_.kind != Tok::kName)
        return Error(tok_.line, "syntax error: expected a parameter name, found " + Describe(tok_));
      std::string name(tok_.text);
      Status st;
      if (top && name == "include") {
        st = ParseInclude(out);
      } else {
        out->emplace_back();
        st = ParseParam(depth, path, &out->back());
      }
      if (!st.ok()) return st;
      if (tok_.kind != Tok::kSemi && tok_.kind != (top ? Tok::kEof : Tok::kRbrace))
        return Error(tok_.line, "syntax error: expected newline or \";\" after the value of " +
                                    Quoted(name) + ", found " + Describe(tok_));
    }
  }

  // name [label] value. As Go's parser, "name true" and "name false" alone
  // are a bool, not a label without a value.
  Status ParseParam(int depth, const std::string& parent, ConfNode* out) {
    out->name = std::string(tok_.text);
    out->file = file_;
    out->line = tok_.line;
    if (Status st = Advance(); !st.ok()) return st;
    std::string after = out->name;
    if (tok_.kind == Tok::kName) {
      Token label = tok_;
      if (Status st = Advance(); !st.ok()) return st;
      if (tok_.kind == Tok::kSemi || tok_.kind == Tok::kRbrace || tok_.kind == Tok::kEof) {
        if (label.text != "true" && label.text != "false")
          return Error(tok_.line, "syntax error: expected value after " +
                                      Quoted(after + " " + std::string(label.text)));
        out->kind = Kind::kBool;
        out->flag = label.text == "true";
        out->text = std::string(label.text);
        return Status::Ok();
      }
      out->label = std::string(label.text);
      after += " " + out->label;
    }
    std::string path = parent.empty() ? out->name : parent + "." + out->name;
    if (!out->label.empty()) path += "." + out->label;
    return ParseValue(depth, "after " + Quoted(after), path, out);
  }

  // One value into *out (whose name, file and line the caller sets). depth
  // is that of the block or array holding it; where ("after \"addr\"") places
  // a syntax error, path ("download.timeout") names the parameter whose
  // literal is wrong.
  Status ParseValue(int depth, const std::string& where, const std::string& path, ConfNode* out) {
    switch (tok_.kind) {
      case Tok::kString:
        out->kind = Kind::kString;
        out->text = Expand(tok_.text);
        return Advance();
      case Tok::kNumber:
        if (std::string why = ParseNumber(tok_.text, out); !why.empty())
          return Error(tok_.line, path + ": " + why);
        return Advance();
      case Tok::kName:
        if (tok_.text != "true" && tok_.text != "false") break;
        out->kind = Kind::kBool;
        out->flag = tok_.text == "true";
        out->text = std::string(tok_.text);
        return Advance();
      case Tok::kLbrace:
      case Tok::kLbrack: {
        if (depth >= kDjinnConfMaxNesting)
          return Error(tok_.line, "syntax error: blocks and arrays nested deeper than " +
                                      std::to_string(kDjinnConfMaxNesting) + " levels");
        bool block = tok_.kind == Tok::kLbrace;
        int open_line = tok_.line;
        out->kind = block ? Kind::kBlock : Kind::kArray;
        if (Status st = Advance(); !st.ok()) return st;
        return block ? ParseParams(depth + 1, open_line, path, &out->children)
                     : ParseArray(depth + 1, path, out);
      }
      case Tok::kSemi:
      case Tok::kEof:
        return Error(tok_.line, "syntax error: expected value " + where);
      default:
        break;
    }
    return Error(tok_.line, "syntax error: expected value " + where + ", found " + Describe(tok_));
  }

  // After "[": items, each followed by "," unless it is the last.
  Status ParseArray(int depth, const std::string& path, ConfNode* out) {
    for (;;) {
      if (tok_.kind == Tok::kRbrack) return Advance();
      ConfNode item;
      item.file = file_;
      item.line = tok_.line;
      if (Status st = ParseValue(depth, "in array", path, &item); !st.ok()) return st;
      out->children.push_back(std::move(item));
      if (Status st = EndOfItem(); !st.ok()) return st;
    }
  }

  // After an array item: "," (consumed) or "]" (left for the caller).
  Status EndOfItem() {
    if (tok_.kind == Tok::kComma) return Advance();
    if (tok_.kind == Tok::kRbrack) return Status::Ok();
    std::string hint = tok_.kind == Tok::kSemi && tok_.text == "\n"
                           ? " (in a multi-line array every item needs a comma after it)"
                           : "";
    return Error(tok_.line, "syntax error: expected \",\" or \"]\" after array item, found " +
                                Describe(tok_) + hint);
  }

  // After the name `include` at top level: a string or an array of strings.
  Status ParseInclude(std::vector<ConfNode>* out) {
    if (Status st = Advance(); !st.ok()) return st;
    std::vector<std::pair<std::string, int>> names;
    if (tok_.kind == Tok::kString) {
      names.emplace_back(Expand(tok_.text), tok_.line);
      if (Status st = Advance(); !st.ok()) return st;
    } else if (tok_.kind == Tok::kLbrack) {
      if (Status st = Advance(); !st.ok()) return st;
      while (tok_.kind != Tok::kRbrack) {
        if (tok_.kind != Tok::kString)
          return Error(tok_.line,
                       "syntax error: expected a file name string in include "
                       "array, found " +
                           Describe(tok_));
        names.emplace_back(Expand(tok_.text), tok_.line);
        if (Status st = Advance(); !st.ok()) return st;
        if (Status st = EndOfItem(); !st.ok()) return st;
      }
      if (Status st = Advance(); !st.ok()) return st;
    } else {
      std::string found = Describe(tok_);
      return Error(tok_.line,
                   "syntax error: expected a file name string or array after "
                   "\"include\", found " +
                       found);
    }
    for (const auto& [name, line] : names)
      if (Status st = Include(name, line, out); !st.ok()) return st;
    return Status::Ok();
  }

  Status Include(const std::string& name, int line, std::vector<ConfNode>* out) {
    std::string what = "include " + Quoted(name);
    if (!includes_) return Error(line, what + ": includes need a base directory");
    if (name.empty()) return Error(line, what + ": empty file name");
    if (name.find('\0') != std::string::npos) return Error(line, what + ": NUL byte in file name");
    if (include_depth_ >= session_->opts.max_include_depth)
      return Error(line, what + ": includes nested deeper than " +
                             std::to_string(session_->opts.max_include_depth) + " levels");
    std::string path = JoinPath(dir_, name);
    std::string text;
    FileId id;
    Status st = ReadConfFile(path, what, session_->opts.max_file_bytes, true, &text, &id);
    if (!st.ok()) return Error(line, st.message());
    auto [it, fresh] = session_->seen.emplace(id, file_ + ":" + std::to_string(line));
    if (!fresh && it->second.empty())
      return Error(line, what + ": " + path + " already included as the top-level file");
    if (!fresh) return Error(line, what + ": " + path + " already included from " + it->second);
    Parser child(session_, text, path, true, DirName(path), include_depth_ + 1);
    return child.ParseFile(out);
  }

  // A string token's raw text with escapes and ${VAR} resolved. The scanner
  // guarantees a character after every backslash.
  std::string Expand(std::string_view raw) const {
    std::string out;
    out.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); i++) {
      if (raw[i] == '\\') {
        out += raw[++i];
        continue;
      }
      if (raw[i] == '$' && i + 1 < raw.size() && raw[i + 1] == '{') {
        size_t close = raw.find('}', i + 2);
        if (close != std::string_view::npos) {
          auto value = session_->getenv(std::string(raw.substr(i + 2, close - i - 2)));
          if (value) out += *value;
          i = close;
          continue;
        }
      }
      out += raw[i];
    }
    return out;
  }

  Session* session_;
  std::string file_;
  Scanner scanner_;
  bool includes_;
  std::string dir_;
  int include_depth_;
  Token tok_;
};

Session MakeSession(const DjinnConfOptions& opts) {
  Session s{opts, opts.getenv, {}};
  if (!s.getenv) {
    s.getenv = [](const std::string& name) -> std::optional<std::string> {
      const char* v = ::getenv(name.c_str());
      if (v == nullptr) return std::nullopt;
      return std::string(v);
    };
  }
  return s;
}

ConfNode Root(const std::string& file) {
  ConfNode root;
  root.kind = Kind::kBlock;
  root.file = file;
  return root;
}

}  // namespace

Result<ConfNode> ParseDjinnConf(const std::string& path, const DjinnConfOptions& opts) {
  Session session = MakeSession(opts);
  std::string text;
  FileId id;
  Status st = ReadConfFile(path, path, opts.max_file_bytes, false, &text, &id);
  if (!st.ok()) return Fail(st.message());
  session.seen.emplace(id, "");
  ConfNode root = Root(path);
  Parser parser(&session, text, path, true, DirName(path), 0);
  if (st = parser.ParseFile(&root.children); !st.ok()) return st;
  return root;
}

Result<ConfNode> ParseDjinnConfText(std::string_view text, const std::string& name,
                                    const std::string& base_dir, const DjinnConfOptions& opts) {
  if (text.size() > opts.max_file_bytes)
    return Fail(name + ": larger than " + std::to_string(opts.max_file_bytes) + " bytes");
  Session session = MakeSession(opts);
  ConfNode root = Root(name);
  Parser parser(&session, text, name, !base_dir.empty(), base_dir, 0);
  if (Status st = parser.ParseFile(&root.children); !st.ok()) return st;
  return root;
}

bool LooksLikeDjinnSyntax(std::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  for (;;) {
    while (i < n && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n' ||
                     text[i] == '\f' || text[i] == '\v'))
      i++;
    if (i < n && (text[i] == '#' || text.substr(i, 2) == "//")) {
      size_t nl = text.find('\n', i);
      i = nl == std::string_view::npos ? n : nl;
    } else if (text.substr(i, 2) == "/*") {
      size_t close = text.find("*/", i + 2);
      i = close == std::string_view::npos ? n : close + 2;
    } else {
      break;
    }
  }
  if (i == n || text[i] == '@') return false;
  // libconfig names may also hold '-' and '*'; Djinn's may hold UTF-8.
  while (i < n && (IsAsciiLetter(text[i]) || IsDigit(text[i]) || text[i] == '-' || text[i] == '*' ||
                   static_cast<unsigned char>(text[i]) >= 0x80))
    i++;
  while (i < n && (text[i] == ' ' || text[i] == '\t')) i++;
  return !(i < n && (text[i] == '=' || text[i] == ':'));
}

}  // namespace djinn
