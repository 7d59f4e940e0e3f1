#include "common/pg.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "common/text.h"

namespace djinn {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kDefaultPort[] = "5432";

// libpq messages span lines ("FATAL: ...\nDETAIL: ..."); logs and the
// Status contract want one line.
std::string OneLine(const char* msg) {
  std::string s = msg ? msg : "";
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  size_t start = s.find_first_not_of(' ');
  s = start == std::string::npos ? "" : s.substr(start);
  std::string out;
  for (char c : s) {
    if (c == ' ' && !out.empty() && out.back() == ' ') continue;
    out += c;
  }
  return out.empty() ? "unknown error" : out;
}

struct HostPort {
  std::string host, port;
};

HostPort SplitAddr(const std::string& addr) {
  HostPort hp{addr, kDefaultPort};
  auto trailing_port = [](const std::string& s, size_t colon) {
    if (colon == std::string::npos || colon + 1 >= s.size()) return false;
    return std::all_of(s.begin() + static_cast<long>(colon) + 1, s.end(),
                       [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!addr.empty() && addr[0] == '[') {
    size_t close = addr.find(']');
    if (close != std::string::npos) {
      hp.host = addr.substr(1, close - 1);
      if (trailing_port(addr, close + 1) && addr[close + 1] == ':')
        hp.port = addr.substr(close + 2);
    }
    return hp;
  }
  size_t colon = addr.rfind(':');
  bool bare_ipv6 = addr[0] != '/' && addr.find(':') != colon;
  if (!bare_ipv6 && trailing_port(addr, colon)) {
    hp.host = addr.substr(0, colon);
    hp.port = addr.substr(colon + 1);
  }
  return hp;
}

// database.addr's items: split at commas, spaces around them dropped.
std::vector<std::string> SplitList(const std::string& addr) {
  std::vector<std::string> items;
  size_t start = 0;
  for (;;) {
    size_t comma = addr.find(',', start);
    std::string item = addr.substr(start, comma == std::string::npos ? comma : comma - start);
    size_t first = item.find_first_not_of(" \t");
    size_t last = item.find_last_not_of(" \t");
    items.push_back(first == std::string::npos ? "" : item.substr(first, last - first + 1));
    if (comma == std::string::npos) return items;
    start = comma + 1;
  }
}

std::vector<HostPort> SplitAddrs(const std::string& addr) {
  std::vector<HostPort> out;
  for (const std::string& item : SplitList(addr)) out.push_back(SplitAddr(item));
  return out;
}

std::string CheckPort(const std::string& port) {
  if (ParsePort(port) == 0) return "port \"" + Printable(port) + "\" is not a number from 1 to 65535";
  return "";
}

bool IsIPv6(std::string text) {
  text = text.substr(0, text.find('%'));  // a zone ("fe80::1%eth0")
  unsigned char buf[16];
  return inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

// Why one item of database.addr is unusable ("" when it is fine).
std::string CheckAddrItem(const std::string& item) {
  if (item.empty()) return "empty";
  for (char c : item) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f)
      return "contains a space or control character";
  }
  if (item[0] == '/') {  // a socket directory, optionally ":port"
    HostPort hp = SplitAddr(item);
    return hp.host == item ? "" : CheckPort(hp.port);
  }
  if (item[0] == '[') {
    size_t close = item.find(']');
    if (close == std::string::npos) return "no ']' after the IPv6 address";
    if (!IsIPv6(item.substr(1, close - 1)))
      return "\"" + Printable(item.substr(1, close - 1)) + "\" is not an IPv6 address";
    if (close + 1 == item.size()) return "";
    if (item[close + 1] != ':') return "expected \":port\" after ']'";
    return CheckPort(item.substr(close + 2));
  }
  size_t colon = item.find(':');
  if (colon != std::string::npos && item.find(':', colon + 1) != std::string::npos) {
    if (IsIPv6(item)) return "";
    return "not an IPv6 address (an IPv6 address with a port is written [address]:port)";
  }
  std::string host = item.substr(0, colon);
  if (host.empty()) return "no host before ':'";
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_';
    if (!ok)
      return "\"" + Printable(host) +
             "\" is not a host name, an IP address or an absolute socket directory";
  }
  return colon == std::string::npos ? "" : CheckPort(item.substr(colon + 1));
}

// SQLSTATEs worth a retry: the server or the connection, not the statement.
bool TransientSqlState(const char* state) {
  if (state == nullptr) return true;  // no state: a client-side (connection) error
  std::string s = state;
  return s.rfind("08", 0) == 0 ||         // connection exception
         s.rfind("53", 0) == 0 ||         // insufficient resources (too many connections)
         s.rfind("57P", 0) == 0 ||        // admin shutdown, crash shutdown, cannot connect now
         s == "57014" ||                  // query canceled (statement_timeout)
         s == "40001" || s == "40P01" ||  // serialization failure, deadlock
         s == "55P03";                    // lock not available
}

void NoticeToLog(void*, const char* message) {
  LOG_DEBUG("database notice: %s", OneLine(message).c_str());
}

}  // namespace

std::string ValidateDatabaseAddr(const std::string& addr) {
  std::vector<std::string> items = SplitList(addr);
  if (items.size() == 1 && items[0].empty()) return "must not be empty";
  for (size_t i = 0; i < items.size(); i++) {
    std::string why = CheckAddrItem(items[i]);
    if (why.empty()) continue;
    std::string quoted = "\"" + Printable(items[i]) + "\": ";
    return items.size() == 1 ? quoted + why : "item " + std::to_string(i + 1) + " " + quoted + why;
  }
  return "";
}

PgClient::PgClient(DatabaseConfig config, PgOptions options)
    : config_(std::move(config)), options_(options) {}

std::vector<std::pair<std::string, std::string>> PgClient::ConnParams(const DatabaseConfig& config,
                                                                      const PgOptions& options) {
  std::vector<HostPort> hosts = SplitAddrs(config.addr);
  std::string host, port;
  for (size_t i = 0; i < hosts.size(); i++) {
    host += (i ? "," : "") + hosts[i].host;
    port += (i ? "," : "") + hosts[i].port;
  }
  std::vector<std::pair<std::string, std::string>> kv = {
      {"host", host},
      {"port", port},
      {"dbname", config.name},
      {"user", config.username},
  };
  // Several hosts: a primary and its standbys; connect to whichever
  // accepts writes (libpq asks each in turn).
  if (hosts.size() > 1) kv.emplace_back("target_session_attrs", "read-write");
  if (!config.password.empty()) kv.emplace_back("password", config.password);
  if (config.tls_enabled) {
    kv.emplace_back("sslmode", "verify-full");
    kv.emplace_back("sslrootcert", config.tls.ca);
    if (!config.tls.cert.empty()) kv.emplace_back("sslcert", config.tls.cert);
    if (!config.tls.key.empty()) kv.emplace_back("sslkey", config.tls.key);
  } else {
    kv.emplace_back("sslmode", "disable");
  }
  kv.emplace_back("gssencmode", "disable");
  kv.emplace_back("connect_timeout", std::to_string(options.connect_timeout_seconds));
  kv.emplace_back("options",
                  "-c statement_timeout=" + std::to_string(options.statement_timeout_ms));
  kv.emplace_back("application_name", "djinn-consumer");
  kv.emplace_back("client_encoding", "UTF8");
  kv.emplace_back("keepalives", "1");
  kv.emplace_back("keepalives_idle", "30");
  kv.emplace_back("keepalives_interval", "10");
  kv.emplace_back("keepalives_count", "3");
  kv.emplace_back("tcp_user_timeout", "30000");
  return kv;
}

std::string PgClient::Describe(const DatabaseConfig& config) {
  std::string out;
  for (const HostPort& hp : SplitAddrs(config.addr))
    out += (out.empty() ? "" : ",") + JoinHostPort(hp.host, hp.port);
  return out + "/" + config.name;
}

std::string PgClient::Server() const {
  if (!conn_) return Describe(config_);
  const char* host = PQhost(conn_.get());
  const char* port = PQport(conn_.get());
  if (host == nullptr || *host == '\0') return Describe(config_);
  return JoinHostPort(host, port && *port ? port : kDefaultPort) + "/" + config_.name;
}

bool PgClient::connected() const { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }

void PgClient::Close() {
  conn_.reset();
  backoff_ = std::chrono::milliseconds(0);
  next_attempt_ = {};
}

Status PgClient::Connect() {
  conn_.reset();
  Clock::time_point now = Clock::now();
  if (now < next_attempt_) {
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_attempt_ - now);
    return Status::Unavailable("database: unavailable: " + last_error_ + " (next attempt in " +
                             std::to_string(wait.count()) + " ms)");
  }
  auto kv = ConnParams(config_, options_);
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : kv) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PgConnPtr conn(PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/0));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    last_error_ = "cannot connect to " + Describe(config_) + ": " +
                  (conn ? OneLine(PQerrorMessage(conn.get())) : std::string("out of memory"));
    backoff_ = std::clamp(backoff_ * 2, options_.backoff_min, options_.backoff_max);
    next_attempt_ = Clock::now() + backoff_;
    return Status::Unavailable("database: " + last_error_);
  }
  PQsetNoticeProcessor(conn.get(), NoticeToLog, nullptr);
  conn_ = std::move(conn);
  std::string server = Server();
  if (!last_server_.empty() && server != last_server_)
    LOG_INFO("database %s: connected (before: %s; a failover)", server.c_str(),
             last_server_.c_str());
  else if (backoff_.count() > 0)
    LOG_INFO("database %s: connected again", server.c_str());
  else
    LOG_DEBUG("database %s: connected", server.c_str());
  last_server_ = server;
  backoff_ = std::chrono::milliseconds(0);
  next_attempt_ = {};
  return Status::Ok();
}

Result<PgResultPtr> PgClient::ExecOnce(const std::string& sql, const std::vector<Param>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const Param& p : params) values.push_back(p ? p->c_str() : nullptr);
  PgResultPtr res(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, /*resultFormat=*/0));
  ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return res;
  std::string msg =
      res ? OneLine(PQresultErrorMessage(res.get())) : OneLine(PQerrorMessage(conn_.get()));
  const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
  if (st != PGRES_FATAL_ERROR && st != PGRES_NONFATAL_ERROR) {
    return Status::Permanent(std::string("database: unexpected result ") + PQresStatus(st));
  }
  if (state != nullptr && std::strcmp(state, "25006") == 0) {
    // "cannot execute UPDATE in a read-only transaction": this server is a
    // standby now (or read-only for maintenance). Not the job's fault; drop
    // the connection so the next one looks for the primary again.
    std::string server = Server();
    conn_.reset();
    return Status::Unavailable("database: " + server + " is read-only (a standby?): " + msg);
  }
  if (PQstatus(conn_.get()) != CONNECTION_OK || TransientSqlState(state))
    return Status::Unavailable("database: " + msg);
  return Status::Permanent("database: " + msg);
}

namespace {
Reach g_last_reach = Reach::kUnknown;  // one thread per process uses PgClient
uint64_t g_reach_observations = 0;
}  // namespace

Reach PgClient::LastReach(uint64_t* observations) {
  if (observations) *observations = g_reach_observations;
  return g_last_reach;
}

Result<PgResultPtr> PgClient::Exec(const std::string& sql, const std::vector<Param>& params) {
  Result<PgResultPtr> r = ExecOrReconnect(sql, params);
  g_last_reach = r.ok() || !r.status().unavailable() ? Reach::kUp : Reach::kDown;
  g_reach_observations++;
  return r;
}

Result<PgResultPtr> PgClient::ExecOrReconnect(const std::string& sql,
                                              const std::vector<Param>& params) {
  bool fresh = false;
  if (!connected()) {
    if (conn_) LOG_WARN("database %s: connection lost; reconnecting", Server().c_str());
    if (Status st = Connect(); !st.ok()) return st;
    fresh = true;
  }
  std::string server = Server();
  Result<PgResultPtr> r = ExecOnce(sql, params);
  if (r.ok() || fresh || connected()) return r;
  // The connection died under us (a server restart since the last job, an
  // idle connection cut, a failover) or its server turned read-only: one
  // more try on a fresh one. The statement is idempotent by contract, so a
  // duplicate is harmless.
  std::string why = r.status().message();
  if (why.rfind("database: ", 0) == 0) why.erase(0, 10);
  if (why.rfind(server, 0) == 0)  // it names the server already
    LOG_WARN("database %s; reconnecting", why.c_str());
  else
    LOG_WARN("database %s: %s; reconnecting", server.c_str(), why.c_str());
  if (Status st = Connect(); !st.ok()) return st;
  return ExecOnce(sql, params);
}

Result<int64_t> PgClient::ExecCount(const std::string& sql, const std::vector<Param>& params) {
  Result<PgResultPtr> r = Exec(sql, params);
  if (!r.ok()) return r.status();
  const char* n = PQcmdTuples(r->get());
  if (n == nullptr || *n == '\0') return int64_t{0};
  return static_cast<int64_t>(std::strtoll(n, nullptr, 10));
}

}  // namespace djinn
