// RedisConn: one synchronous hiredis connection with lazy reconnect.
//
// Usage:
//   RedisConn conn(RedisOptions{.addr = "127.0.0.1:6379"});
//   Result<RedisReplyPtr> r = conn.Command({"LLEN", "jobs:active"});
//   if (!r.ok()) ... r.status() is kTransient when Redis is unreachable
//
// Connection: the first command connects. When a command finds the
// connection broken (refused, reset, timed out, EOF), the connection is
// dropped and that command returns kTransient ("redis 127.0.0.1:6379:
// connection refused"); the next command reconnects, but not before a
// capped exponential backoff (backoff_min doubling to backoff_max) has
// passed since the last failed attempt: a command within the backoff
// window fails at once, without touching the network, so a loop that
// retries on error cannot hammer a dead server. A command is never sent
// twice by RedisConn: after a failure the caller decides (a script whose
// reply was lost may or may not have run).
//
// Outages: SetStateCallback() is told down (with the first error) once
// when a working or never-working connection fails, and up once when a
// connection succeeds again after that; repeated failures during one
// outage are silent, so the caller logs once per outage. down() says
// whether the last attempt failed.
//
// Messages name the address, never the password.
//
// Ownership and process safety: owns its redisContext (RAII). Not
// thread-safe. The socket is close-on-exec. hiredis writes with write(2),
// so the process must ignore SIGPIPE (a write to a connection the server
// closed would otherwise kill it); the daemon and the tests do. A RedisConn must not be used
// by two processes: a child that inherited one (fork) calls Close() on it
// first thing, which closes the fd without talking to Redis.
#ifndef DJINN_COMMON_REDIS_H_
#define DJINN_COMMON_REDIS_H_

#include <chrono>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "common/c_handles.h"
#include "common/status.h"

namespace djinn {

// A parsed Redis address: "host:port", "[v6addr]:port", "host" (port
// 6379), or an absolute unix socket path ("/run/redis/redis.sock").
struct RedisAddr {
  std::string host;  // empty for a unix socket
  int port = 0;
  std::string unix_path;  // non-empty for a unix socket
  bool is_unix() const { return !unix_path.empty(); }
};

// kPermanent "invalid redis address ...: <why>" on a malformed address
// (config validation uses this too).
Status ParseRedisAddr(const std::string& addr, RedisAddr* out);

struct RedisOptions {
  std::string addr = "localhost:6379";
  std::string password;  // AUTH when non-empty
  std::chrono::milliseconds connect_timeout{2000};
  // Bound on one command's round trip (blocking commands add their block).
  std::chrono::milliseconds command_timeout{5000};
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{5000};
};

// A Lua script, loaded into Redis with SCRIPT LOAD once per connection and
// run with EVALSHA. Give it static storage duration (or make it outlive
// every RedisConn that ran it): connections cache its SHA1 by id().
class RedisScript {
 public:
  explicit RedisScript(std::string source);
  RedisScript(const RedisScript&) = delete;
  RedisScript& operator=(const RedisScript&) = delete;
  const std::string& source() const { return source_; }
  size_t id() const { return id_; }

 private:
  std::string source_;
  size_t id_;
};

class RedisConn {
 public:
  // on_state(up, message): up=false with the error that started an
  // outage, up=true when connected again after one.
  using StateCallback = std::function<void(bool up, const std::string& message)>;

  explicit RedisConn(RedisOptions options);
  ~RedisConn();
  RedisConn(const RedisConn&) = delete;
  RedisConn& operator=(const RedisConn&) = delete;

  // Connects now unless connected (honours the backoff window). Commands
  // call this themselves; calling it early only surfaces errors sooner.
  Status Connect();
  // Drops the connection (fd closed, nothing sent). Next command reconnects
  // without waiting for a backoff.
  void Close();
  bool connected() const { return ctx_ != nullptr; }
  // The last connection attempt or command found Redis unreachable.
  bool down() const { return down_; }
  // When the next reconnect attempt is allowed (steady clock).
  std::chrono::steady_clock::time_point next_attempt() const { return next_attempt_; }
  void SetStateCallback(StateCallback cb) { on_state_ = std::move(cb); }
  const std::string& addr() const { return options_.addr; }

  // Binary-safe command. An error reply becomes a Status (see
  // ErrorReplyStatus); a nil or any other reply is returned as is.
  Result<RedisReplyPtr> Command(std::initializer_list<std::string_view> argv);
  Result<RedisReplyPtr> Command(const std::vector<std::string_view>& argv);
  // A command that blocks in Redis up to `block` (BRPOPLPUSH...): the
  // socket timeout is raised to block + command_timeout for this call.
  Result<RedisReplyPtr> BlockingCommand(std::initializer_list<std::string_view> argv,
                                        std::chrono::milliseconds block);

  // EVALSHA, loading the script first on a new connection and once more
  // if Redis answers NOSCRIPT (script cache flushed, server restarted).
  Result<RedisReplyPtr> EvalSha(const RedisScript& script,
                                std::initializer_list<std::string_view> keys,
                                std::initializer_list<std::string_view> args);
  Result<RedisReplyPtr> EvalSha(const RedisScript& script,
                                const std::vector<std::string_view>& keys,
                                const std::vector<std::string_view>& args);

  // The Status for an error reply: kTransient for the server's "try
  // later" errors (LOADING, BUSY, MASTERDOWN, READONLY, OOM, TRYAGAIN,
  // CLUSTERDOWN, NOSCRIPT), kPermanent otherwise; message
  // "redis <addr>: <reply text>".
  Status ErrorReplyStatus(std::string_view reply_text) const;

 private:
  // Sends argv_/lens_ and returns any reply, error replies included.
  // connect=false requires connected() (it never reconnects).
  Result<RedisReplyPtr> RunRaw(std::chrono::milliseconds extra_timeout, bool connect);
  // RunRaw, then an error reply becomes a Status.
  Result<RedisReplyPtr> Run(std::chrono::milliseconds extra_timeout);
  Result<RedisReplyPtr> RunEvalSha(const RedisScript& script,
                                   const std::string_view* keys, size_t nkeys,
                                   const std::string_view* args, size_t nargs);
  void BuildEvalSha(const std::string& sha, const std::string_view* keys,
                    size_t nkeys, const std::string_view* args, size_t nargs);
  Status EnsureConnected();
  Status DoConnect();
  Status SetSocketTimeout(std::chrono::milliseconds t);
  // Drops the connection, starts or extends an outage, returns kTransient.
  Status Fail(const std::string& why);
  bool StaleIdleConnection() const;
  Status LoadScript(const RedisScript& script);

  RedisOptions options_;
  RedisAddr parsed_;
  Status parse_status_;
  RedisContextPtr ctx_;
  bool down_ = false;
  std::string last_error_;  // "redis <addr>: <why>" of the current outage
  std::chrono::milliseconds backoff_{0};
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::steady_clock::time_point last_used_{};
  StateCallback on_state_;
  std::vector<std::string> shas_;  // by RedisScript::id(); cleared on reconnect
  // Reused argv buffers: no allocation per command in the steady state.
  std::vector<const char*> argv_;
  std::vector<size_t> lens_;
  char numkeys_[24];
};

}  // namespace djinn

#endif  // DJINN_COMMON_REDIS_H_
