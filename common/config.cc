// Config loading: read the file into one ConfNode tree (libconfig's C API
// or common/djinn_conf.h), map Djinn's names onto ours, then walk the tree
// once: every parameter is looked up in Params() (unknown ones are errors,
// or warnings in Djinn's syntax), checked for type and range, and stored.
// Then required parameters and combinations are checked.
#include "common/config.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "common/c_handles.h"
#include "common/conf_tree.h"
#include "common/djinn_conf.h"
#include "common/listen_address.h"
#include "common/pg.h"
#include "common/redis.h"
#include "common/url.h"
#include "common/units.h"

namespace djinn {
namespace {

using Kind = ConfNode::Kind;

// kDuration: seconds (an integer, or a duration "15m"); kSize: bytes (an
// integer, or a size "50MB").
// kStrings: an array of strings; kMinFree: a size or "N%".
enum class Type { kString, kInt, kBool, kGroup, kDuration, kSize, kStrings, kMinFree };

// A checked value handed to a setter.
struct Value {
  const ConfNode& node;
  std::string str;  // kString
  int64_t num = 0;  // kInt, kDuration (seconds), kSize (bytes)
  bool flag = false;
  std::vector<std::string> list;  // kStrings
  double percent = -1;            // kMinFree given as "N%"
};

struct Param {
  const char* name;  // dotted path
  Type type;
  int64_t min = 0, max = 0;  // kInt, kDuration, kSize range
  // Stores the value; returns an error message ("" when fine).
  std::function<std::string(Config*, const Value&)> set;
  const char* djinn_name = nullptr;  // Djinn's name for it, if different
};

#define STR(field) [](Config* c, const Value& v) { c->field = v.str; return std::string(); }
#define NUM(field) [](Config* c, const Value& v) { c->field = v.num; return std::string(); }
#define BOOL(field) [](Config* c, const Value& v) { c->field = v.flag; return std::string(); }

std::string NonEmpty(const std::string& v) { return v.empty() ? "must not be empty" : ""; }

// Files the workers read later (CAs, keys, known_hosts): a typo should
// fail -t, not the first job that needs them.
std::string Readable(const std::string& path) {
  if (path.empty()) return "must not be empty";
  if (access(path.c_str(), R_OK) != 0) return path + ": " + std::strerror(errno);
  return "";
}

#define FILE(field) [](Config* c, const Value& v) { c->field = v.str; return Readable(c->field); }

// Files the master writes as root (pidfile, log.file): a relative name
// would depend on the directory it was started in. "" means none.
std::string Absolute(const std::string& path) {
  if (path.empty() || path[0] == '/') return "";
  return "must be an absolute path (got \"" + path + "\")";
}

constexpr int64_t kWeek = 7 * 86400;
// Go curlyq's heartbeat interval (HeartbeatPollInterval), for the
// queue_consumer_timeout warning.
constexpr int64_t kGoHeartbeatSeconds = 60;

// The password in a proxy URL, for the log scrubber ("" when none).
std::string ProxyPassword(const std::string& proxy) {
  if (proxy.empty()) return "";
  auto u = ParseUrl(proxy);
  return u.ok() ? u->password : "";
}

// download.proxy: "scheme://[user:password@]host[:port]" with a scheme
// libcurl speaks for a proxy. ParseUrl's messages never quote the URL, so
// the password does not appear in them.
std::string CheckProxy(const std::string& v) {
  static const char* const kSchemes[] = {"http", "https", "socks5", "socks5h", "socks4", "socks4a"};
  auto u = ParseUrl(v);
  if (!u.ok()) return u.status().message();
  if (std::none_of(std::begin(kSchemes), std::end(kSchemes),
                   [&](const char* scheme) { return u->scheme == scheme; }))
    return "expected a proxy URL starting with http://, https://, socks5://, socks5h://, "
           "socks4:// or socks4a://";
  if ((!u->path.empty() && u->path != "/") || !u->raw_query.empty() || !u->fragment.empty())
    return "expected scheme://host[:port] (no path)";
  return "";
}

const std::vector<Param>& Params() {
  static const std::vector<Param> params = {
      {"pidfile", Type::kString, 0, 0,
       [](Config* c, const Value& v) { c->pidfile = v.str; return Absolute(v.str); }},
      {"control_socket", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         c->control_socket = v.str;
         if (v.str.empty()) return "must not be empty";
         if (v.str.size() > 107) return "must be at most 107 bytes (a unix socket path)";
         return Absolute(v.str);
       }},
      {"log", Type::kGroup, 0, 0, nullptr},
      {"log.level", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         if (!ParseLogLevel(v.str, &c->log_level))
           return "expected one of debug, info, warn, error (got \"" + v.str + "\")";
         return "";
       }},
      {"log.format", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         if (!ParseLogFormat(v.str, &c->log_format))
           return "expected text or json (got \"" + v.str + "\")";
         return "";
       }},
      {"log.file", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         // Djinn writes "/dev/stdout" for "no file"; under systemd stdout
         // may be a socket that cannot be opened by name.
         c->log_file = (v.str == "/dev/stdout" || v.str == "/dev/stderr") ? "" : v.str;
         return Absolute(v.str);
       }},
      {"workers", Type::kInt, 1, 1024, NUM(workers), "parallelism"},
      {"user", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         c->user = v.str;
         if (c->user.empty()) return "must not be empty";
         if (!getpwnam(c->user.c_str())) return "no such user \"" + c->user + "\"";
         return "";
       }},
      {"group", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         c->group = v.str;
         if (c->group.empty()) return "must not be empty";
         if (!getgrnam(c->group.c_str())) return "no such group \"" + c->group + "\"";
         return "";
       }},
      {"queue", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         c->queue = v.str;
         if (c->queue.empty() || c->queue.size() > 200) return "must be 1 to 200 characters";
         return "";
       }},
      {"attempts", Type::kInt, 0, 1000, NUM(attempts)},
      {"job_timeout", Type::kDuration, 1, kWeek, NUM(job_timeout)},
      {"shutdown_timeout", Type::kDuration, 0, 86400, NUM(shutdown_timeout)},
      {"queue_consumer_timeout", Type::kDuration, 10, 86400, NUM(queue_consumer_timeout)},
      {"database", Type::kGroup, 0, 0, nullptr},
      {"database.addr", Type::kString, 0, 0,
       [](Config* c, const Value& v) { c->database.addr = v.str; return ValidateDatabaseAddr(c->database.addr); }},
      {"database.name", Type::kString, 0, 0,
       [](Config* c, const Value& v) { c->database.name = v.str; return NonEmpty(c->database.name); }},
      {"database.username", Type::kString, 0, 0,
       [](Config* c, const Value& v) { c->database.username = v.str; return NonEmpty(c->database.username); }},
      {"database.password", Type::kString, 0, 0, STR(database.password)},
      {"database.password_file", Type::kString, 0, 0, STR(database.password_file)},
      {"database.tls", Type::kGroup, 0, 0,
       [](Config* c, const Value&) { c->database.tls_enabled = true; return std::string(); }},
      {"database.tls.ca", Type::kString, 0, 0, FILE(database.tls.ca)},
      {"database.tls.cert", Type::kString, 0, 0, FILE(database.tls.cert)},
      {"database.tls.key", Type::kString, 0, 0, FILE(database.tls.key)},
      {"redis", Type::kGroup, 0, 0, nullptr},
      {"redis.addr", Type::kString, 0, 0,
       [](Config* c, const Value& v) { c->redis.addr = v.str; return NonEmpty(c->redis.addr); }},
      {"redis.password", Type::kString, 0, 0, STR(redis.password)},
      {"redis.password_file", Type::kString, 0, 0, STR(redis.password_file)},
      {"redis.sentinels", Type::kStrings, 0, 0,
       [](Config* c, const Value& v) {
         if (v.list.empty()) return std::string("must list at least one \"host:port\"");
         for (size_t i = 0; i < v.list.size(); ++i) {
           RedisAddr a;
           Status st = ParseRedisAddr(v.list[i], &a);
           if (!st.ok()) return "item " + std::to_string(i + 1) + ": " + st.message();
           if (a.is_unix()) return "item " + std::to_string(i + 1) + ": a sentinel is a host:port, not a unix socket";
         }
         c->redis.sentinels = v.list;
         return std::string();
       }},
      {"redis.master", Type::kString, 0, 0,
       [](Config* c, const Value& v) { c->redis.master = v.str; return NonEmpty(c->redis.master); }},
      {"redis.sentinel_password", Type::kString, 0, 0, STR(redis.sentinel_password)},
      {"redis.sentinel_password_file", Type::kString, 0, 0, STR(redis.sentinel_password_file)},
      {"store", Type::kGroup, 0, 0, nullptr},
      {"store.images", Type::kGroup, 0, 0, nullptr},
      {"store.images.type", Type::kString, 0, 0,
       [](Config*, const Value& v) -> std::string {
         if (v.str != "file") return "only \"file\" is supported (got \"" + v.str + "\")";
         return "";
       }},
      {"store.images.path", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         c->store.path = v.str;
         if (c->store.path.empty() || c->store.path[0] != '/') return "must be an absolute path";
         while (c->store.path.size() > 1 && c->store.path.back() == '/') c->store.path.pop_back();
         return "";
       }},
      {"store.images.limit", Type::kSize, 0, INT64_MAX, NUM(store.limit)},
      {"store.images.min_free", Type::kMinFree, 0, INT64_MAX,
       [](Config* c, const Value& v) {
         c->store.min_free_percent = v.percent;
         c->store.min_free_bytes = v.percent >= 0 ? -1 : v.num;
         return std::string();
       }},
      {"download", Type::kGroup, 0, 0, nullptr},
      {"download.timeout", Type::kDuration, 1, kWeek, NUM(download.timeout)},
      {"download.max_size", Type::kSize, 0, INT64_MAX, NUM(download.max_size)},
      {"download.allow_private", Type::kBool, 0, 0, BOOL(download.allow_private)},
      {"download.ca", Type::kString, 0, 0, FILE(download.ca)},
      {"download.known_hosts", Type::kString, 0, 0, FILE(download.known_hosts)},
      {"download.proxy", Type::kString, 0, 0,
       [](Config* c, const Value& v) { c->download.proxy = v.str; return CheckProxy(v.str); }},
      {"download.no_proxy", Type::kString, 0, 0, STR(download.no_proxy)},
      {"webhooks", Type::kGroup, 0, 0, nullptr},
      {"webhooks.timeout", Type::kDuration, 1, 3600, NUM(webhooks.timeout)},
      {"webhooks.attempts", Type::kInt, 0, 100, NUM(webhooks.attempts)},
      {"webhooks.allow_private", Type::kBool, 0, 0, BOOL(webhooks.allow_private)},
      {"webhooks.ca", Type::kString, 0, 0, FILE(webhooks.ca)},
      {"webhooks.api_server", Type::kString, 0, 0, STR(webhooks.api_server)},
      {"webhooks.workers", Type::kInt, 1, 64, NUM(webhooks.workers)},
      {"metrics", Type::kGroup, 0, 0, nullptr},
      {"metrics.listen", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         c->metrics.listen = v.str;
         auto a = ParseListenAddress(v.str);
         return a.ok() ? "" : a.status().message();
       }},
      {"metrics.allow_remote", Type::kBool, 0, 0, BOOL(metrics.allow_remote)},
      {"crypto", Type::kGroup, 0, 0,
       [](Config* c, const Value&) { c->crypto.set = true; return std::string(); }},
      {"crypto.auth", Type::kString, 0, 0, STR(crypto.auth)},
      {"crypto.block", Type::kString, 0, 0,
       [](Config* c, const Value& v) -> std::string {
         c->crypto.block = v.str;
         size_t n = v.str.size();
         if (n != 16 && n != 24 && n != 32)
           return "must be 16, 24 or 32 bytes long (got " + std::to_string(n) + ")";
         return "";
       }},
      {"crypto.hash", Type::kString, 0, 0, STR(crypto.hash)},
      {"crypto.salt", Type::kString, 0, 0,
       [](Config* c, const Value& v) { c->crypto.salt = v.str; return NonEmpty(v.str); }},
  };
  return params;
}

#undef STR
#undef NUM
#undef BOOL
#undef FILE

const char* kRequired[] = {"database", "redis", "store.images", "store.images.type",
                           "store.images.path"};

const Param* FindParam(const std::string& name, bool djinn_names) {
  for (const auto& p : Params())
    if (name == p.name || (djinn_names && p.djinn_name && name == p.djinn_name)) return &p;
  return nullptr;
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::kString: return "a string";
    case Type::kInt: return "an integer";
    case Type::kBool: return "true or false";
    case Type::kGroup: return "a group { ... }";
    case Type::kDuration: return "a duration (seconds, or \"90s\", \"15m\", \"1h30m\")";
    case Type::kSize: return "a size (bytes, or \"512MB\", \"10GB\")";
    case Type::kStrings: return "an array of strings [\"...\", ...]";
    case Type::kMinFree: return "a size (bytes, \"2GB\") or a percentage (\"5%\")";
  }
  return "?";
}

std::string Where(const ConfNode& n, const std::string& name) {
  std::string w = n.file;
  if (n.line > 0) w += ":" + std::to_string(n.line);
  return w + ": " + name + ": ";
}

// ------------------------------------------------------------------ readers

// libconfig's tree as a ConfNode tree. libconfig clamps a plain integer
// literal to 32 bits (a 64-bit one needs the L suffix): say so instead of
// using the clamped value.
Status FromLibconfig(const config_setting_t* s, const std::string& file,
                     const std::string& prefix, ConfNode* out) {
  const char* name = config_setting_name(s);
  out->name = name ? name : "";
  const char* f = config_setting_source_file(s);
  out->file = f ? f : file;
  out->line = static_cast<int>(config_setting_source_line(s));
  std::string dotted = prefix.empty() ? out->name : prefix + "." + out->name;
  switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST: {
      out->kind = config_setting_type(s) == CONFIG_TYPE_GROUP ? Kind::kBlock : Kind::kArray;
      int n = config_setting_length(s);
      out->children.resize(static_cast<size_t>(n));
      for (int i = 0; i < n; i++) {
        Status st = FromLibconfig(config_setting_get_elem(s, static_cast<unsigned>(i)), out->file,
                                  dotted, &out->children[static_cast<size_t>(i)]);
        if (!st.ok()) return st;
      }
      return Status::Ok();
    }
    case CONFIG_TYPE_INT:
      out->kind = Kind::kInt;
      out->num = config_setting_get_int(s);
      if (out->num == INT32_MAX || out->num == INT32_MIN)
        return Status::Permanent(Where(*out, dotted) +
                                 "integer out of 32-bit range; write large values with an L "
                                 "suffix (e.g. 10737418240L) or a unit (\"10GB\")");
      return Status::Ok();
    case CONFIG_TYPE_INT64:
      out->kind = Kind::kInt;
      out->num = config_setting_get_int64(s);
      return Status::Ok();
    case CONFIG_TYPE_FLOAT:
      out->kind = Kind::kFloat;
      out->real = config_setting_get_float(s);
      return Status::Ok();
    case CONFIG_TYPE_BOOL:
      out->kind = Kind::kBool;
      out->flag = config_setting_get_bool(s);
      return Status::Ok();
    case CONFIG_TYPE_STRING:
      out->kind = Kind::kString;
      out->text = config_setting_get_string(s);
      return Status::Ok();
  }
  return Status::Permanent(Where(*out, dotted) + "unsupported value");
}

Result<ConfNode> ReadLibconfig(const std::string& path) {
  ConfigPtr cf(new config_t);
  config_init(cf.get());
  if (config_read_file(cf.get(), path.c_str()) != CONFIG_TRUE) {
    if (config_error_type(cf.get()) == CONFIG_ERR_FILE_IO)
      return Status::Permanent(path + ": cannot read: " + std::strerror(errno));
    const char* f = config_error_file(cf.get());
    return Status::Permanent(std::string(f ? f : path.c_str()) + ":" +
                             std::to_string(config_error_line(cf.get())) + ": " +
                             config_error_text(cf.get()));
  }
  ConfNode root;
  Status st = FromLibconfig(config_root_setting(cf.get()), path, "", &root);
  if (!st.ok()) return st;
  root.name.clear();
  root.file = path;
  return root;
}

std::string Lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// Djinn's tree onto ours: names folded to lower case (the Go decoder
// matches them case-insensitively) and Djinn's spellings mapped.
class DjinnMapper {
 public:
  explicit DjinnMapper(std::vector<std::string>* warnings) : warnings_(warnings) {}

  Status Map(ConfNode* root) {
    std::vector<ConfNode> out;
    const ConfNode* chosen_log = nullptr;
    LogLevel chosen_level = LogLevel::kError;
    size_t store_at = SIZE_MAX;  // index in out of the store block
    for (ConfNode& p : root->children) {
      FoldNames(&p);
      if (p.name == "log" && !p.label.empty()) {
        // log LEVEL "FILE", possibly several: the most verbose wins, the
        // last of equals (as the Go consumer's logger() picks).
        LogLevel level;
        if (!ParseLogLevel(p.label, &level))
          return Status::Permanent(Where(p, "log") + "unknown level \"" + p.label +
                                   "\" (expected debug, info, warn or error)");
        if (p.kind != Kind::kString)
          return Status::Permanent(Where(p, "log " + p.label) + "expected a file name string");
        // Djinn allows this: no warning.
        if (chosen_log && level > chosen_level) continue;
        chosen_log = &p;
        chosen_level = level;
        continue;
      }
      if (p.name == "store" && !p.label.empty()) {
        // store images { ... }  ==  store { images { ... } }; several
        // labelled stores share one store block.
        if (store_at == SIZE_MAX) {
          store_at = out.size();
          ConfNode store;
          store.name = "store";
          store.kind = Kind::kBlock;
          store.file = p.file;
          store.line = p.line;
          out.push_back(std::move(store));
        }
        p.name = p.label;
        p.label.clear();
        out[store_at].children.push_back(std::move(p));
        continue;
      }
      if (Status st = NoLabel(p, ""); !st.ok()) return st;
      if (p.name == "database") {
        if (Status st = MapDatabase(&p); !st.ok()) return st;
      }
      out.push_back(std::move(p));
    }
    if (chosen_log) {
      ConfNode log;
      log.name = "log";
      log.kind = Kind::kBlock;
      log.file = chosen_log->file;
      log.line = chosen_log->line;
      ConfNode level = *chosen_log, file = *chosen_log;
      level.name = "level";
      level.text = chosen_log->label;
      level.label.clear();
      file.name = "file";
      file.label.clear();
      log.children = {std::move(level), std::move(file)};
      // An unlabelled `log { format "json" }` beside `log info "FILE"` is
      // the same group: one group, its settings after level and file.
      auto block = std::find_if(out.begin(), out.end(), [](const ConfNode& n) {
        return n.name == "log" && n.kind == Kind::kBlock;
      });
      if (block != out.end()) {
        for (ConfNode& c : block->children) log.children.push_back(std::move(c));
        out.erase(block);
      }
      out.insert(out.begin(), std::move(log));
    }
    root->children = std::move(out);
    return Status::Ok();
  }

 private:
  static void FoldNames(ConfNode* n) {
    n->name = Lower(n->name);
    for (ConfNode& c : n->children) FoldNames(&c);
  }

  // Labels mean something only on log and store.
  static Status NoLabel(const ConfNode& n, const std::string& prefix) {
    std::string dotted = prefix.empty() ? n.name : prefix + "." + n.name;
    if (!n.label.empty())
      return Status::Permanent(Where(n, dotted) + "unexpected label \"" + n.label + "\"");
    if (n.kind == Kind::kBlock)
      for (const ConfNode& c : n.children)
        if (Status st = NoLabel(c, dotted); !st.ok()) return st;
    return Status::Ok();
  }

  // ssl { } is Djinn's deprecated alias of tls { }.
  Status MapDatabase(ConfNode* db) {
    const ConfNode* tls = nullptr;
    for (ConfNode& c : db->children) {
      if (c.name == "tls") tls = &c;
    }
    for (ConfNode& c : db->children) {
      if (c.name != "ssl") continue;
      if (tls)
        return Status::Permanent(Where(c, "database.ssl") + "give tls or ssl, not both");
      Warn(c, "database.ssl", "deprecated: read as database.tls");
      c.name = "tls";
    }
    return Status::Ok();
  }

  void Warn(const ConfNode& n, const std::string& name, const std::string& what) {
    warnings_->push_back(Where(n, name) + what);
  }

  std::vector<std::string>* warnings_;
};

Result<ConfNode> ReadDjinn(const std::string& path, std::vector<std::string>* warnings) {
  auto root = ParseDjinnConf(path);
  if (!root.ok()) return root.status();
  DjinnMapper mapper(warnings);
  if (Status st = mapper.Map(&*root); !st.ok()) return st;
  return root;
}

// ---------------------------------------------------------------- validator

class Validator {
 public:
  Validator(Config* cfg, bool lenient) : cfg_(cfg), lenient_(lenient) {}

  Status Walk(const ConfNode& group, const std::string& prefix) {
    for (const ConfNode& s : group.children) {
      std::string name = prefix.empty() ? s.name : prefix + "." + s.name;
      const Param* p = FindParam(name, lenient_);
      if (!p) {
        std::string what = prefix == "store" ? "unknown store (the only store is \"images\")"
                                             : "unknown parameter";
        if (!lenient_) return Error(s, name, what);
        cfg_->warnings.push_back(Where(s, name) + what + "; ignored");
        continue;
      }
      // Errors name the parameter as written; the checks use our name.
      const std::string canon = p->name;
      Value v{s, "", 0, false, {}, -1};
      if (Status st = Check(*p, s, name, &v); !st.ok()) return st;
      if (Seen(canon)) cfg_->warnings.push_back(Where(s, name) + "given again; this one wins");
      else seen_.push_back(canon);
      if (p->set) {
        std::string err = p->set(cfg_, v);
        if (!err.empty()) return Error(s, name, err);
      }
      if (canon == "database.password_file" || canon == "redis.password_file" ||
          canon == "redis.sentinel_password_file") {
        if (Status st = ReadSecret(s, canon); !st.ok()) return st;
      }
      if (p->type == Type::kGroup) {
        if (Status st = Walk(s, canon); !st.ok()) return st;
      }
    }
    return Status::Ok();
  }

  Status Finish(const ConfNode& root) {
    for (const char* req : kRequired)
      if (!Seen(req)) return Status::Permanent(root.file + ": " + req + ": missing (required)");
    if (Seen("database.password") && Seen("database.password_file"))
      return ErrorAt(root, "database.password_file", "give password or password_file, not both");
    if (Seen("redis.password") && Seen("redis.password_file"))
      return ErrorAt(root, "redis.password_file", "give password or password_file, not both");
    if (Seen("redis.sentinel_password") && Seen("redis.sentinel_password_file"))
      return ErrorAt(root, "redis.sentinel_password_file",
                     "give sentinel_password or sentinel_password_file, not both");
    if (Seen("redis.sentinels") != Seen("redis.master"))
      return ErrorAt(root, Seen("redis.master") ? "redis.sentinels" : "redis.master",
                     "redis.sentinels and redis.master go together");
    if (Seen("redis.sentinels") && Seen("redis.addr"))
      return ErrorAt(root, "redis.addr",
                     "give addr or sentinels, not both (with sentinels the master is found through them)");
    if ((Seen("redis.sentinel_password") || Seen("redis.sentinel_password_file")) &&
        !Seen("redis.sentinels"))
      return ErrorAt(root, "redis.sentinel_password", "needs redis.sentinels");
    if (Seen("download.no_proxy") && !Seen("download.proxy"))
      return ErrorAt(root, "download.no_proxy", "needs download.proxy");
    if (cfg_->queue_consumer_timeout < kGoHeartbeatSeconds + 5)
      cfg_->warnings.push_back(
          cfg_->path + ": queue_consumer_timeout: " + std::to_string(cfg_->queue_consumer_timeout) +
          "s is shorter than 65s: a Go curlyq consumer sharing the queue heartbeats only every "
          "60s, so its running jobs would be requeued and run twice; use it only when every "
          "consumer of the queue is djinn-consumer (which heartbeats every 5s)");
    if (cfg_->database.tls_enabled && cfg_->database.tls.ca.empty())
      return ErrorAt(root, "database.tls.ca", "required when database.tls is set");
    if (cfg_->database.tls.cert.empty() != cfg_->database.tls.key.empty())
      return ErrorAt(root, "database.tls", "cert and key go together");
    if (!cfg_->group.empty() && cfg_->user.empty()) return ErrorAt(root, "group", "needs user");
    if (cfg_->crypto.set) {
      if (!Seen("crypto.block")) return ErrorAt(root, "crypto.block", "required when crypto is set");
      if (!Seen("crypto.salt")) return ErrorAt(root, "crypto.salt", "required when crypto is set");
    }
    if (!cfg_->metrics.listen.empty() && !cfg_->metrics.allow_remote) {
      auto a = ParseListenAddress(cfg_->metrics.listen);
      if (a.ok() && !a->loopback)
        return ErrorAt(root, "metrics.listen",
                       "\"" + cfg_->metrics.listen + "\" is not a loopback address; the endpoint "
                       "has no authentication: set metrics.allow_remote = true to serve other hosts");
    }
    if (cfg_->workers == 0) {
      long n = sysconf(_SC_NPROCESSORS_ONLN);
      cfg_->workers = n > 0 ? static_cast<int>(n) : 1;
    }
    return Status::Ok();
  }

 private:
  // Type and range; fills v.
  Status Check(const Param& p, const ConfNode& s, const std::string& name, Value* v) {
    auto wrong = [&] { return Error(s, name, std::string("expected ") + TypeName(p.type)); };
    switch (p.type) {
      case Type::kString:
        if (s.kind != Kind::kString) return wrong();
        v->str = s.text;
        return Status::Ok();
      case Type::kBool:
        if (s.kind != Kind::kBool) return wrong();
        v->flag = s.flag;
        return Status::Ok();
      case Type::kGroup:
        return s.kind == Kind::kBlock ? Status::Ok() : wrong();
      case Type::kStrings:
        if (s.kind != Kind::kArray) return wrong();
        for (const ConfNode& item : s.children) {
          if (item.kind != Kind::kString) return wrong();
          v->list.push_back(item.text);
        }
        return Status::Ok();
      case Type::kInt:
        if (s.kind != Kind::kInt) return wrong();
        v->num = s.num;
        break;
      case Type::kDuration: {
        int64_t ns;
        if (s.kind == Kind::kInt) {
          v->num = s.num;
          break;
        } else if (s.kind == Kind::kDuration) {
          ns = s.num;
        } else if (s.kind == Kind::kString) {
          auto d = ParseGoDuration(s.text);
          if (!d.ok()) return Error(s, name, d.status().message());
          ns = *d;
        } else {
          return wrong();
        }
        if (ns % 1000000000 != 0)
          return Error(s, name, "must be a whole number of seconds (got \"" + s.text + "\")");
        v->num = ns / 1000000000;
        break;
      }
      case Type::kMinFree:
        if (s.kind == Kind::kString && !s.text.empty() && s.text.back() == '%') {
          std::string n = s.text.substr(0, s.text.size() - 1);
          char* end = nullptr;
          errno = 0;
          double pct = n.empty() ? -1 : std::strtod(n.c_str(), &end);
          if (n.empty() || errno != 0 || *end != '\0' || !(pct >= 0 && pct < 100))
            return Error(s, name, "a percentage must be from 0% to below 100% (got \"" + s.text + "\")");
          v->percent = pct;
          return Status::Ok();
        }
        [[fallthrough]];  // bytes: as a Size
      case Type::kSize:
        if (s.kind == Kind::kInt || s.kind == Kind::kSize) {
          v->num = s.num;
        } else if (s.kind == Kind::kString) {
          auto b = ParseSize(s.text);
          if (!b.ok()) return Error(s, name, b.status().message());
          v->num = *b;
        } else {
          return wrong();
        }
        break;
    }
    if (v->num < p.min || v->num > p.max)
      return Error(s, name, "must be between " + std::to_string(p.min) + " and " +
                                std::to_string(p.max) + " (got " + std::to_string(v->num) + ")");
    return Status::Ok();
  }

  bool Seen(const std::string& name) const {
    return std::find(seen_.begin(), seen_.end(), name) != seen_.end();
  }

  static Status Error(const ConfNode& s, const std::string& name, const std::string& what) {
    return Status::Permanent(Where(s, name) + what);
  }

  // For errors about a combination: points at the setting when present,
  // else at the nearest group around where it belongs.
  static Status ErrorAt(const ConfNode& root, const std::string& name, const std::string& what) {
    const ConfNode* found = nullptr;
    const ConfNode* n = &root;
    for (size_t start = 0; n;) {
      size_t dot = name.find('.', start);
      std::string part = name.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      const ConfNode* next = nullptr;
      for (const ConfNode& c : n->children)
        if (c.name == part) next = &c;
      if (next) found = next;
      n = next;
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (found) return Error(*found, name, what);
    return Status::Permanent(root.file + ": " + name + ": " + what);
  }

  Status ReadSecret(const ConfNode& s, const std::string& name) {
    const std::string& file = s.text;
    std::ifstream in(file, std::ios::binary);
    if (!in) return Error(s, name, file + ": " + std::strerror(errno));
    std::stringstream ss;
    ss << in.rdbuf();
    std::string secret = ss.str();
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    if (secret.empty()) return Error(s, name, file + ": empty");
    if (name == "database.password_file") cfg_->database.password = secret;
    else if (name == "redis.sentinel_password_file") cfg_->redis.sentinel_password = secret;
    else cfg_->redis.password = secret;
    return Status::Ok();
  }

  Config* cfg_;
  bool lenient_;  // Djinn syntax: unknown parameters are warnings
  std::vector<std::string> seen_;
};

Result<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Permanent(path + ": cannot read: " + std::strerror(errno));
  std::string text;
  char buf[4096];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > DjinnConfOptions().max_file_bytes)
      return Status::Permanent(path + ": larger than " +
                               std::to_string(DjinnConfOptions().max_file_bytes) + " bytes");
  }
  if (in.bad()) return Status::Permanent(path + ": cannot read: " + std::strerror(errno));
  return text;
}

// ---------------------------------------------------------------- printing

std::string Quote(const std::string& s) {
  std::string q = "\"";
  for (char c : s) {
    switch (c) {
      case '"': q += "\\\""; break;
      case '\\': q += "\\\\"; break;
      case '\n': q += "\\n"; break;
      case '\t': q += "\\t"; break;
      case '\r': q += "\\r"; break;
      case '\f': q += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
          q += hex;
        } else {
          q += c;
        }
    }
  }
  return q + "\"";
}

std::string Int(int64_t v) {
  // libconfig reads a bare literal as 32 bits: mark larger ones 64-bit.
  std::string s = std::to_string(v);
  if (v > INT32_MAX - 1 || v < INT32_MIN + 1) s += "L";
  return s;
}

}  // namespace

Result<Config> LoadConfig(const std::string& path) {
  auto text = ReadWhole(path);
  if (!text.ok()) return text.status();
  Config cfg;
  cfg.path = path;
  cfg.djinn_syntax = LooksLikeDjinnSyntax(*text);
  auto root = cfg.djinn_syntax ? ReadDjinn(path, &cfg.warnings) : ReadLibconfig(path);
  if (!root.ok()) return root.status();
  Validator v(&cfg, cfg.djinn_syntax);
  Status st = v.Walk(*root, "");
  if (st.ok()) st = v.Finish(*root);
  if (!st.ok()) return st;
  return cfg;
}

std::string FormatConfig(const Config& c, bool redact) {
  auto secret = [&](const std::string& v) { return redact && !v.empty() ? "\"<redacted>\"" : Quote(v); };
  // A proxy URL's password is a secret; the rest of it is not.
  auto secret_url = [&](const std::string& v) { return Quote(redact ? RedactUrl(v) : v); };
  std::ostringstream o;
  o << "# djinn-consumer configuration (libconfig syntax), as read from " << c.path << "\n";
  o << "# by djinn-consumer -t -print. See djinn-consumer.conf(5).\n";
  if (!c.pidfile.empty()) o << "pidfile = " << Quote(c.pidfile) << ";\n";
  if (!c.control_socket.empty()) o << "control_socket = " << Quote(c.control_socket) << ";\n";
  o << "log = { level = " << Quote(LogLevelName(c.log_level)) << ";";
  if (!c.log_file.empty()) o << " file = " << Quote(c.log_file) << ";";
  o << " format = " << Quote(LogFormatName(c.log_format)) << ";";
  o << " };\n";
  o << "workers = " << c.workers << ";\n";
  if (!c.user.empty()) o << "user = " << Quote(c.user) << ";\n";
  if (!c.group.empty()) o << "group = " << Quote(c.group) << ";\n";
  o << "queue = " << Quote(c.queue) << ";\n";
  o << "attempts = " << c.attempts << ";\n";
  o << "job_timeout = " << c.job_timeout << ";\n";
  o << "shutdown_timeout = " << c.shutdown_timeout << ";\n";
  o << "queue_consumer_timeout = " << c.queue_consumer_timeout << ";\n";
  o << "database = {\n";
  o << "  addr = " << Quote(c.database.addr) << ";\n";
  o << "  name = " << Quote(c.database.name) << ";\n";
  o << "  username = " << Quote(c.database.username) << ";\n";
  if (!c.database.password_file.empty())
    o << "  password_file = " << Quote(c.database.password_file) << ";\n";
  else
    o << "  password = " << secret(c.database.password) << ";\n";
  if (c.database.tls_enabled) {
    o << "  tls = { ca = " << Quote(c.database.tls.ca) << ";";
    if (!c.database.tls.cert.empty())
      o << " cert = " << Quote(c.database.tls.cert) << "; key = " << Quote(c.database.tls.key) << ";";
    o << " };\n";
  }
  o << "};\n";
  o << "redis = {\n";
  if (c.redis.sentinels.empty()) {
    o << "  addr = " << Quote(c.redis.addr) << ";\n";
  } else {
    o << "  sentinels = [";
    for (size_t i = 0; i < c.redis.sentinels.size(); ++i)
      o << (i ? ", " : "") << Quote(c.redis.sentinels[i]);
    o << "];\n  master = " << Quote(c.redis.master) << ";\n";
    if (!c.redis.sentinel_password_file.empty())
      o << "  sentinel_password_file = " << Quote(c.redis.sentinel_password_file) << ";\n";
    else if (!c.redis.sentinel_password.empty())
      o << "  sentinel_password = " << secret(c.redis.sentinel_password) << ";\n";
  }
  if (!c.redis.password_file.empty())
    o << "  password_file = " << Quote(c.redis.password_file) << ";\n";
  else if (!c.redis.password.empty())
    o << "  password = " << secret(c.redis.password) << ";\n";
  o << "};\n";
  o << "store = { images = { type = \"file\"; path = " << Quote(c.store.path)
    << "; limit = " << Int(static_cast<int64_t>(c.store.limit)) << ";";
  // Both bounds set is the default, which has no spelling of its own.
  if (c.store.min_free_bytes >= 0 && c.store.min_free_percent >= 0)
    o << " }; };  # min_free: the default, " << Int(c.store.min_free_bytes) << " bytes or "
      << c.store.min_free_percent << "%, whichever is smaller\n";
  else if (c.store.min_free_percent >= 0)
    o << " min_free = \"" << c.store.min_free_percent << "%\"; }; };\n";
  else
    o << " min_free = " << Int(c.store.min_free_bytes) << "; }; };\n";
  o << "download = {\n";
  o << "  timeout = " << c.download.timeout << ";\n";
  o << "  max_size = " << Int(static_cast<int64_t>(c.download.max_size)) << ";\n";
  o << "  allow_private = " << (c.download.allow_private ? "true" : "false") << ";\n";
  if (!c.download.ca.empty()) o << "  ca = " << Quote(c.download.ca) << ";\n";
  if (!c.download.known_hosts.empty())
    o << "  known_hosts = " << Quote(c.download.known_hosts) << ";\n";
  if (!c.download.proxy.empty()) o << "  proxy = " << secret_url(c.download.proxy) << ";\n";
  if (!c.download.no_proxy.empty()) o << "  no_proxy = " << Quote(c.download.no_proxy) << ";\n";
  o << "};\n";
  o << "webhooks = {\n";
  o << "  timeout = " << c.webhooks.timeout << ";\n";
  o << "  attempts = " << c.webhooks.attempts << ";\n";
  o << "  allow_private = " << (c.webhooks.allow_private ? "true" : "false") << ";\n";
  if (!c.webhooks.ca.empty()) o << "  ca = " << Quote(c.webhooks.ca) << ";\n";
  if (!c.webhooks.api_server.empty()) o << "  api_server = " << Quote(c.webhooks.api_server) << ";\n";
  o << "  workers = " << c.webhooks.workers << ";\n";
  o << "};\n";
  if (!c.metrics.listen.empty()) {
    o << "metrics = { listen = " << Quote(c.metrics.listen) << "; allow_remote = "
      << (c.metrics.allow_remote ? "true" : "false") << "; };\n";
  }
  if (c.crypto.set) {
    o << "crypto = {\n";
    if (!c.crypto.auth.empty()) o << "  auth = " << secret(c.crypto.auth) << ";\n";
    o << "  block = " << secret(c.crypto.block) << ";\n";
    if (!c.crypto.hash.empty()) o << "  hash = " << secret(c.crypto.hash) << ";\n";
    o << "  salt = " << secret(c.crypto.salt) << ";\n";
    o << "};\n";
  }
  return o.str();
}

std::vector<std::string> ConfigSecrets(const Config& c) {
  std::vector<std::string> v = {c.database.password, c.redis.password,
                                c.redis.sentinel_password, ProxyPassword(c.download.proxy),
                                c.crypto.auth,
                                c.crypto.block, c.crypto.hash, c.crypto.salt};
  v.erase(std::remove(v.begin(), v.end(), std::string()), v.end());
  return v;
}

uint64_t StoreConfig::MinFreeBytes(uint64_t total_bytes) const {
  bool any = false;
  uint64_t keep = 0;
  auto bound = [&](uint64_t b) {
    keep = any ? std::min(keep, b) : b;
    any = true;
  };
  if (min_free_bytes >= 0) bound(static_cast<uint64_t>(min_free_bytes));
  if (min_free_percent >= 0)
    bound(static_cast<uint64_t>(static_cast<long double>(total_bytes) * min_free_percent / 100));
  return keep;
}

const std::vector<std::string>& ConfigParameterNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& p : Params()) v.push_back(p.name);
    return v;
  }();
  return names;
}

}  // namespace djinn
