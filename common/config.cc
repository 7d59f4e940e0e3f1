// Config parsing with the libconfig C API. The file is walked once: every
// setting found is looked up in kParams (unknown ones are errors), checked
// for type and range, and stored. Then required parameters are checked.
#include "common/config.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "common/c_handles.h"

namespace djinn {
namespace {

enum class Type { kString, kInt, kBool, kGroup };

struct Param {
  const char* name;  // dotted path
  Type type;
  int64_t min = 0, max = 0;  // kInt range
  // Stores the value; returns an error message ("" when fine).
  std::function<std::string(Config*, const config_setting_t*)> set;
};

std::string Str(const config_setting_t* s) { return config_setting_get_string(s); }
int64_t Int(const config_setting_t* s) { return config_setting_get_int64(s); }

#define STR(field) [](Config* c, const config_setting_t* s) { c->field = Str(s); return std::string(); }
#define INT(field) [](Config* c, const config_setting_t* s) { c->field = Int(s); return std::string(); }
#define BOOL(field) [](Config* c, const config_setting_t* s) { c->field = config_setting_get_bool(s); return std::string(); }

std::string NonEmpty(const std::string& v) { return v.empty() ? "must not be empty" : ""; }

// Files the workers read later (CAs, keys, known_hosts): a typo should
// fail -t, not the first job that needs them.
std::string Readable(const std::string& path) {
  if (path.empty()) return "must not be empty";
  if (access(path.c_str(), R_OK) != 0) return path + ": " + std::strerror(errno);
  return "";
}

#define FILE(field) [](Config* c, const config_setting_t* s) { c->field = Str(s); return Readable(c->field); }

const std::vector<Param>& Params() {
  static const std::vector<Param> params = {
      {"pidfile", Type::kString, 0, 0, STR(pidfile)},
      {"log", Type::kGroup, 0, 0, nullptr},
      {"log.level", Type::kString, 0, 0,
       [](Config* c, const config_setting_t* s) -> std::string {
         if (!ParseLogLevel(Str(s), &c->log_level))
           return "expected one of debug, info, warn, error (got \"" + Str(s) + "\")";
         return "";
       }},
      {"log.file", Type::kString, 0, 0, STR(log_file)},
      {"workers", Type::kInt, 1, 1024, INT(workers)},
      {"user", Type::kString, 0, 0,
       [](Config* c, const config_setting_t* s) -> std::string {
         c->user = Str(s);
         if (c->user.empty()) return "must not be empty";
         if (!getpwnam(c->user.c_str())) return "no such user \"" + c->user + "\"";
         return "";
       }},
      {"group", Type::kString, 0, 0,
       [](Config* c, const config_setting_t* s) -> std::string {
         c->group = Str(s);
         if (c->group.empty()) return "must not be empty";
         if (!getgrnam(c->group.c_str())) return "no such group \"" + c->group + "\"";
         return "";
       }},
      {"queue", Type::kString, 0, 0,
       [](Config* c, const config_setting_t* s) -> std::string {
         c->queue = Str(s);
         if (c->queue.empty() || c->queue.size() > 200) return "must be 1 to 200 characters";
         return "";
       }},
      {"attempts", Type::kInt, 1, 1000, INT(attempts)},
      {"job_timeout", Type::kInt, 1, 7 * 86400, INT(job_timeout)},
      {"shutdown_timeout", Type::kInt, 0, 86400, INT(shutdown_timeout)},
      {"database", Type::kGroup, 0, 0, nullptr},
      {"database.addr", Type::kString, 0, 0,
       [](Config* c, const config_setting_t* s) { c->database.addr = Str(s); return NonEmpty(c->database.addr); }},
      {"database.name", Type::kString, 0, 0,
       [](Config* c, const config_setting_t* s) { c->database.name = Str(s); return NonEmpty(c->database.name); }},
      {"database.username", Type::kString, 0, 0,
       [](Config* c, const config_setting_t* s) { c->database.username = Str(s); return NonEmpty(c->database.username); }},
      {"database.password", Type::kString, 0, 0, STR(database.password)},
      {"database.password_file", Type::kString, 0, 0, nullptr},  // read below
      {"database.tls", Type::kGroup, 0, 0,
       [](Config* c, const config_setting_t*) { c->database.tls_enabled = true; return std::string(); }},
      {"database.tls.ca", Type::kString, 0, 0, FILE(database.tls.ca)},
      {"database.tls.cert", Type::kString, 0, 0, FILE(database.tls.cert)},
      {"database.tls.key", Type::kString, 0, 0, FILE(database.tls.key)},
      {"redis", Type::kGroup, 0, 0, nullptr},
      {"redis.addr", Type::kString, 0, 0,
       [](Config* c, const config_setting_t* s) { c->redis.addr = Str(s); return NonEmpty(c->redis.addr); }},
      {"redis.password", Type::kString, 0, 0, STR(redis.password)},
      {"redis.password_file", Type::kString, 0, 0, nullptr},  // read below
      {"store", Type::kGroup, 0, 0, nullptr},
      {"store.images", Type::kGroup, 0, 0, nullptr},
      {"store.images.type", Type::kString, 0, 0,
       [](Config*, const config_setting_t* s) -> std::string {
         if (Str(s) != "file") return "only \"file\" is supported (got \"" + Str(s) + "\")";
         return "";
       }},
      {"store.images.path", Type::kString, 0, 0,
       [](Config* c, const config_setting_t* s) -> std::string {
         c->store.path = Str(s);
         if (c->store.path.empty() || c->store.path[0] != '/') return "must be an absolute path";
         while (c->store.path.size() > 1 && c->store.path.back() == '/') c->store.path.pop_back();
         return "";
       }},
      {"store.images.limit", Type::kInt, 0, INT64_MAX, INT(store.limit)},
      {"download", Type::kGroup, 0, 0, nullptr},
      {"download.timeout", Type::kInt, 1, 7 * 86400, INT(download.timeout)},
      {"download.max_size", Type::kInt, 0, INT64_MAX, INT(download.max_size)},
      {"download.allow_private", Type::kBool, 0, 0, BOOL(download.allow_private)},
      {"download.ca", Type::kString, 0, 0, FILE(download.ca)},
      {"download.known_hosts", Type::kString, 0, 0, FILE(download.known_hosts)},
  };
  return params;
}

#undef STR
#undef INT
#undef BOOL
#undef FILE

const char* kRequired[] = {"database", "redis", "store.images", "store.images.type",
                           "store.images.path"};

const Param* FindParam(const std::string& name) {
  for (const auto& p : Params())
    if (name == p.name) return &p;
  return nullptr;
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::kString: return "a string";
    case Type::kInt: return "an integer";
    case Type::kBool: return "true or false";
    case Type::kGroup: return "a group { ... }";
  }
  return "?";
}

bool TypeMatches(Type t, int libconfig_type) {
  switch (t) {
    case Type::kString: return libconfig_type == CONFIG_TYPE_STRING;
    case Type::kInt: return libconfig_type == CONFIG_TYPE_INT || libconfig_type == CONFIG_TYPE_INT64;
    case Type::kBool: return libconfig_type == CONFIG_TYPE_BOOL;
    case Type::kGroup: return libconfig_type == CONFIG_TYPE_GROUP;
  }
  return false;
}

class Parser {
 public:
  Parser(const std::string& path, Config* cfg) : path_(path), cfg_(cfg) {}

  Status Walk(const config_setting_t* group, const std::string& prefix) {
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
      const config_setting_t* s = config_setting_get_elem(group, i);
      std::string name = prefix.empty() ? config_setting_name(s)
                                        : prefix + "." + config_setting_name(s);
      const Param* p = FindParam(name);
      if (!p) {
        if (prefix == "store")
          return Error(s, name, "unknown store (the only store is \"images\")");
        return Error(s, name, "unknown parameter");
      }
      if (!TypeMatches(p->type, config_setting_type(s)))
        return Error(s, name, std::string("expected ") + TypeName(p->type));
      if (p->type == Type::kInt) {
        int64_t v = Int(s);
        // libconfig clamps a plain integer literal to 32 bits; a 64-bit
        // value needs the L suffix. Say so instead of reporting the clamp.
        if (config_setting_type(s) == CONFIG_TYPE_INT && (v == INT32_MAX || v == INT32_MIN))
          return Error(s, name, "integer out of 32-bit range; write large values with an L suffix (e.g. 10737418240L)");
        if (v < p->min || v > p->max)
          return Error(s, name, "must be between " + std::to_string(p->min) + " and " +
                                    std::to_string(p->max) + " (got " + std::to_string(v) + ")");
      }
      seen_.push_back(name);
      if (p->set) {
        std::string err = p->set(cfg_, s);
        if (!err.empty()) return Error(s, name, err);
      }
      if (name == "database.password_file" || name == "redis.password_file") {
        Status st = ReadSecret(s, name);
        if (!st.ok()) return st;
      }
      if (p->type == Type::kGroup) {
        Status st = Walk(s, name);
        if (!st.ok()) return st;
      }
    }
    return Status::Ok();
  }

  Status Finish(const config_setting_t* root) {
    for (const char* req : kRequired)
      if (!Seen(req))
        return Status::Permanent(path_ + ": " + req + ": missing (required)");
    if (Seen("database.password") && Seen("database.password_file"))
      return ErrorAt(root, "database.password_file", "give password or password_file, not both");
    if (Seen("redis.password") && Seen("redis.password_file"))
      return ErrorAt(root, "redis.password_file", "give password or password_file, not both");
    if (cfg_->database.tls_enabled && cfg_->database.tls.ca.empty())
      return ErrorAt(root, "database.tls.ca", "required when database.tls is set");
    if (cfg_->database.tls.cert.empty() != cfg_->database.tls.key.empty())
      return ErrorAt(root, "database.tls", "cert and key go together");
    if (!cfg_->group.empty() && cfg_->user.empty())
      return ErrorAt(root, "group", "needs user");
    if (cfg_->workers == 0) {
      long n = sysconf(_SC_NPROCESSORS_ONLN);
      cfg_->workers = n > 0 ? static_cast<int>(n) : 1;
    }
    return Status::Ok();
  }

 private:
  bool Seen(const std::string& name) const {
    for (const auto& s : seen_)
      if (s == name) return true;
    return false;
  }

  Status Error(const config_setting_t* s, const std::string& name, const std::string& what) {
    return Status::Permanent(path_ + ":" + std::to_string(config_setting_source_line(s)) +
                             ": " + name + ": " + what);
  }

  // For errors about a combination: points at the setting when present.
  Status ErrorAt(const config_setting_t* root, const std::string& name, const std::string& what) {
    const config_setting_t* s = config_setting_lookup(const_cast<config_setting_t*>(root), name.c_str());
    if (s) return Error(s, name, what);
    return Status::Permanent(path_ + ": " + name + ": " + what);
  }

  Status ReadSecret(const config_setting_t* s, const std::string& name) {
    std::string file = Str(s);
    std::ifstream in(file, std::ios::binary);
    if (!in) return Error(s, name, file + ": " + std::strerror(errno));
    std::stringstream ss;
    ss << in.rdbuf();
    std::string secret = ss.str();
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    if (secret.empty()) return Error(s, name, file + ": empty");
    if (name == "database.password_file") cfg_->database.password = secret;
    else cfg_->redis.password = secret;
    return Status::Ok();
  }

  std::string path_;
  Config* cfg_;
  std::vector<std::string> seen_;
};

}  // namespace

Result<Config> LoadConfig(const std::string& path) {
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
  Config cfg;
  cfg.path = path;
  Parser parser(path, &cfg);
  const config_setting_t* root = config_root_setting(cf.get());
  Status st = parser.Walk(root, "");
  if (st.ok()) st = parser.Finish(root);
  if (!st.ok()) return st;
  return cfg;
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
