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
// Sentinel (options.sentinel.sentinels non-empty; common/redis_sentinel.h):
// addr is not used. Every connect first asks the sentinels for the master's
// address, then checks with ROLE that the server is a master; either
// failing is a failed connect (kTransient, backoff as above). Besides a
// broken connection, a READONLY, UNBLOCKED or MASTERDOWN error reply (the
// server was demoted: a failover happened) also drops the connection and
// counts as a failure, so the next command (after the backoff) asks the
// sentinels again; that command's Status is kTransient. ResolveAgainAll()
// makes every sentinel RedisConn of the process do the same before its
// next command, at once and without an outage (the master process calls it
// on +switch-master, a worker on SIGUSR2). Without sentinels none of this
// applies and error replies only become a Status (ErrorReplyStatus).
//
// Outages: SetStateCallback() is told down (with the first error) once
// when a working or never-working connection fails, and up once when a
// connection succeeds again after that; repeated failures during one
// outage are silent, so the caller logs once per outage. down() says
// whether the last attempt failed.
//
// Messages name the address actually used (with sentinels: the master they
// named, once known; "redis: no sentinel knows master ..." before), never
// the password.
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
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "common/c_handles.h"
#include "common/redis_sentinel.h"
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

// A blocking hiredis connection to addr, close-on-exec, with `timeout` for
// connecting and as its socket timeout (each reply). Errors are kTransient
// with the reason alone ("connection refused"): the caller names the
// address.
Result<RedisContextPtr> ConnectRedis(const RedisAddr& addr, std::chrono::milliseconds timeout);
// Why a blocking command on c failed (its reply was null), lower case:
// "no reply within <timeout> ms", "connection closed by server", or
// hiredis's text. saved_errno: errno right after the call.
std::string RedisCommandError(const redisContext* c, int saved_errno,
                              std::chrono::milliseconds timeout);

struct RedisOptions {
  std::string addr = "localhost:6379";  // not used with sentinels
  std::string password;  // AUTH when non-empty (to the master, with sentinels)
  // Non-empty sentinel.sentinels: the master is found through them (see top).
  SentinelOptions sentinel;
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
  // The address in use (with sentinels the last master they named, or
  // "master \"<name>\"" before any answer).
  const std::string& addr() const { return addr_; }
  bool uses_sentinels() const { return !options_.sentinel.sentinels.empty(); }

  // Every RedisConn of this process that uses sentinels drops its
  // connection before its next command and asks them again, without
  // waiting for a backoff. Async-signal-safe (it bumps a lock-free atomic),
  // though signal handlers should leave it to their loop.
  static void ResolveAgainAll();
  // How many times any RedisConn of this process that uses sentinels
  // connected again after it had been connected before (possibly to
  // another server: a failover). A worker compares it to find out that its
  // queue's server may have changed under it (common/queue.h
  // RecoverInflight).
  static uint64_t SentinelReconnects();

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
  // "redis <addr>: <reply text>". Classifies only (see ReplyError).
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
  // With sentinels: asks them, and points addr_/parsed_ at the answer.
  Status ResolveMaster();
  // With sentinels: ROLE must say master.
  Status CheckRole();
  Status SetSocketTimeout(std::chrono::milliseconds t);
  // Drops the connection, starts or extends an outage, returns kTransient
  // with "redis <addr>: <why>" (FailWith: the message as given).
  Status Fail(const std::string& why);
  Status FailWith(std::string message);
  // ErrorReplyStatus; with sentinels a demoted server's error (READONLY,
  // UNBLOCKED, MASTERDOWN) also drops the connection (Fail).
  Status ReplyError(std::string_view reply_text);
  bool StaleIdleConnection() const;
  Status LoadScript(const RedisScript& script);

  RedisOptions options_;
  std::string addr_;  // the address in use (see addr())
  RedisAddr parsed_;
  Status parse_status_;
  unsigned resolve_epoch_ = 0;  // ResolveAgainAll() count we last obeyed
  bool connected_before_ = false;
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
