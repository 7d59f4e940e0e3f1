#include "common/redis.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "common/text.h"

namespace djinn {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// An idle connection older than this is checked for a pending EOF before
// use, so a server restart or an idle-timeout disconnect costs a silent
// reconnect instead of a failed command. Busy connections skip the check
// (it is one poll() syscall).
constexpr milliseconds kIdleCheckAfter{1000};

std::atomic<size_t> next_script_id{0};
// ResolveAgainAll() may run in a signal handler: lock-free atomics only.
std::atomic<unsigned> resolve_epoch{0};
static_assert(std::atomic<unsigned>::is_always_lock_free);
std::atomic<uint64_t> sentinel_reconnects{0};

// Error replies of a server that is no master (any more): with sentinels
// they mean a failover happened and the sentinels must be asked again.
constexpr std::string_view kDemoted[] = {"READONLY", "UNBLOCKED", "MASTERDOWN"};

timeval ToTimeval(milliseconds ms) {
  timeval tv;
  tv.tv_sec = ms.count() / 1000;
  tv.tv_usec = (ms.count() % 1000) * 1000;
  return tv;
}

// hiredis reports strerror() text ("Connection refused"); our messages are
// lower case after the colon.
std::string LowerFirst(std::string s) {
  if (s.size() > 1 && std::isupper(static_cast<unsigned char>(s[0])) &&
      std::islower(static_cast<unsigned char>(s[1]))) {
    s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  }
  return s;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

}  // namespace

Status ParseRedisAddr(const std::string& addr, RedisAddr* out) {
  auto bad = [&](const std::string& why) {
    return Status::Permanent("invalid redis address \"" + addr + "\": " + why);
  };
  *out = RedisAddr();
  if (addr.empty()) return bad("empty");
  if (addr[0] == '/') {
    out->unix_path = addr;
    return Status::Ok();
  }
  std::string host, port;
  if (addr[0] == '[') {
    size_t close = addr.find(']');
    if (close == std::string::npos) return bad("missing ']'");
    host = addr.substr(1, close - 1);
    if (close + 1 < addr.size()) {
      if (addr[close + 1] != ':') return bad("expected ':' after ']'");
      port = addr.substr(close + 2);
    }
  } else {
    size_t colon = addr.rfind(':');
    if (colon != std::string::npos && addr.find(':') != colon) {
      return bad("an IPv6 address needs brackets: [::1]:6379");
    }
    host = addr.substr(0, colon);
    if (colon != std::string::npos) port = addr.substr(colon + 1);
    else port = "6379";
  }
  if (host.empty()) return bad("no host");
  if (port.empty()) return bad("no port");
  int p = ParsePort(port);
  if (p == 0) {
    return bad("port must be 1-65535");
  }
  out->host = host;
  out->port = p;
  return Status::Ok();
}

Result<RedisContextPtr> ConnectRedis(const RedisAddr& addr, milliseconds timeout) {
  timeval tv = ToTimeval(timeout);
  RedisContextPtr c(addr.is_unix() ? redisConnectUnixWithTimeout(addr.unix_path.c_str(), tv)
                                   : redisConnectWithTimeout(addr.host.c_str(), addr.port, tv));
  if (c == nullptr) return Status::Transient("cannot allocate a hiredis context");
  if (c->err) return Status::Transient(LowerFirst(c->errstr));
  // hiredis 0.14 has no SOCK_CLOEXEC option; a worker must never inherit
  // the master's Redis socket through exec either.
  int flags = ::fcntl(c->fd, F_GETFD);
  if (flags < 0 || ::fcntl(c->fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
    return Status::Transient(std::string("fcntl(FD_CLOEXEC): ") + std::strerror(errno));
  }
  if (redisSetTimeout(c.get(), tv) != REDIS_OK) {
    return Status::Transient("cannot set socket timeout: " + LowerFirst(c->errstr));
  }
  return c;
}

std::string RedisCommandError(const redisContext* c, int saved_errno, milliseconds timeout) {
  if (c->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK)) {
    return "no reply within " + std::to_string(timeout.count()) + " ms";
  }
  if (c->err == REDIS_ERR_EOF) return "connection closed by server";
  return LowerFirst(c->errstr);
}

RedisScript::RedisScript(std::string source)
    : source_(std::move(source)), id_(next_script_id.fetch_add(1)) {}

RedisConn::RedisConn(RedisOptions options) : options_(std::move(options)) {
  resolve_epoch_ = resolve_epoch.load(std::memory_order_relaxed);
  if (uses_sentinels()) {
    addr_ = "master \"" + options_.sentinel.master + "\"";  // until the sentinels name it
  } else {
    addr_ = options_.addr;
    parse_status_ = ParseRedisAddr(options_.addr, &parsed_);
  }
}

void RedisConn::ResolveAgainAll() { resolve_epoch.fetch_add(1, std::memory_order_relaxed); }

uint64_t RedisConn::SentinelReconnects() { return sentinel_reconnects.load(); }

RedisConn::~RedisConn() = default;

void RedisConn::Close() {
  ctx_.reset();
  shas_.clear();
  next_attempt_ = {};
}

Status RedisConn::Connect() { return EnsureConnected(); }

bool RedisConn::StaleIdleConnection() const {
  if (Clock::now() - last_used_ < kIdleCheckAfter) return false;
  // Nothing is expected from an idle connection: readable means EOF (the
  // server closed it) or garbage; either way it is unusable.
  pollfd p{ctx_->fd, POLLIN, 0};
  int n = ::poll(&p, 1, 0);
  return n != 0;  // error or readable
}

Status RedisConn::EnsureConnected() {
  if (!parse_status_.ok()) return parse_status_;
  if (uses_sentinels()) {
    unsigned epoch = resolve_epoch.load(std::memory_order_relaxed);
    if (epoch != resolve_epoch_) {
      // Told that the master moved: ask again now, no backoff, no outage.
      resolve_epoch_ = epoch;
      ctx_.reset();
      shas_.clear();
      next_attempt_ = {};
    }
  }
  if (ctx_ && StaleIdleConnection()) {
    ctx_.reset();  // silently: the reconnect below decides if it is an outage
    shas_.clear();
  }
  if (ctx_) return Status::Ok();
  if (down_ && Clock::now() < next_attempt_) return Status::Transient(last_error_);
  return DoConnect();
}

Status RedisConn::DoConnect() {
  shas_.clear();
  if (uses_sentinels()) {
    Status st = ResolveMaster();
    if (!st.ok()) return st;
  }
  Result<RedisContextPtr> made = ConnectRedis(parsed_, options_.connect_timeout);
  if (!made.ok()) return Fail(made.status().message());
  ctx_ = std::move(*made);
  redisContext* c = ctx_.get();
  Status st = SetSocketTimeout(options_.command_timeout);
  if (!st.ok()) return st;
  if (!options_.password.empty()) {
    const char* argv[2] = {"AUTH", options_.password.data()};
    size_t lens[2] = {4, options_.password.size()};
    RedisReplyPtr r(static_cast<redisReply*>(redisCommandArgv(c, 2, argv, lens)));
    if (!r) return Fail(LowerFirst(c->errstr));
    if (r->type == REDIS_REPLY_ERROR) {
      // The reply ("WRONGPASS invalid username-password pair") never
      // contains the password.
      return Fail("AUTH refused: " + std::string(r->str, r->len));
    }
  }
  if (uses_sentinels()) {
    st = CheckRole();
    if (!st.ok()) return st;
    if (connected_before_) sentinel_reconnects.fetch_add(1);
    connected_before_ = true;
  }
  last_used_ = Clock::now();
  if (down_) {
    down_ = false;
    if (on_state_) on_state_(true, "redis " + addr_ + ": connected");
  }
  backoff_ = milliseconds(0);
  last_error_.clear();
  return Status::Ok();
}

Status RedisConn::ResolveMaster() {
  Result<std::string> found = AskSentinels(&options_.sentinel);
  if (!found.ok()) return FailWith(found.status().message());
  RedisAddr parsed;
  Status st = ParseRedisAddr(*found, &parsed);
  if (!st.ok()) {
    return FailWith("redis: the sentinels name master \"" + options_.sentinel.master +
                    "\" at an address we cannot use: " + st.message());
  }
  addr_ = *found;
  parsed_ = parsed;
  return Status::Ok();
}

Status RedisConn::CheckRole() {
  const char* argv[1] = {"ROLE"};
  size_t lens[1] = {4};
  RedisReplyPtr r(static_cast<redisReply*>(redisCommandArgv(ctx_.get(), 1, argv, lens)));
  if (!r) return Fail("ROLE: " + LowerFirst(ctx_->errstr));
  Result<std::string> role = ParseRoleReply(r.get());
  if (!role.ok()) return Fail("ROLE: " + role.status().message());
  if (*role != "master") {
    return Fail("the sentinels name it master \"" + options_.sentinel.master +
                "\" but it says it is a " + *role + " (failover in progress?)");
  }
  return Status::Ok();
}

Status RedisConn::SetSocketTimeout(milliseconds t) {
  if (redisSetTimeout(ctx_.get(), ToTimeval(t)) != REDIS_OK) {
    return Fail("cannot set socket timeout: " + LowerFirst(ctx_->errstr));
  }
  return Status::Ok();
}

Status RedisConn::Fail(const std::string& why) { return FailWith("redis " + addr_ + ": " + why); }

Status RedisConn::FailWith(std::string message) {
  ctx_.reset();
  shas_.clear();
  last_error_ = std::move(message);
  if (!down_) {
    down_ = true;
    backoff_ = options_.backoff_min;
    if (on_state_) on_state_(false, last_error_);
  } else {
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
  }
  if (backoff_ < options_.backoff_min) backoff_ = options_.backoff_min;
  next_attempt_ = Clock::now() + backoff_;
  return Status::Transient(last_error_);
}

Result<RedisReplyPtr> RedisConn::RunRaw(milliseconds extra_timeout, bool connect) {
  // connect=false: the caller connected and built argv_ from state that a
  // reconnect would clear (script SHAs), so none may happen in between.
  Status st = connect ? EnsureConnected() : Status::Ok();
  if (!st.ok()) return st;
  if (!ctx_) return Status::Transient("redis " + addr_ + ": not connected");
  bool raised = extra_timeout.count() > 0;
  if (raised) {
    st = SetSocketTimeout(options_.command_timeout + extra_timeout);
    if (!st.ok()) return st;
  }
  errno = 0;
  void* raw = redisCommandArgv(ctx_.get(), static_cast<int>(argv_.size()),
                               argv_.data(), lens_.data());
  int saved_errno = errno;
  if (raw == nullptr) {
    return Fail(RedisCommandError(ctx_.get(), saved_errno, options_.command_timeout + extra_timeout));
  }
  RedisReplyPtr reply(static_cast<redisReply*>(raw));
  last_used_ = Clock::now();
  if (raised) {
    st = SetSocketTimeout(options_.command_timeout);
    if (!st.ok()) return st;
  }
  return reply;
}

Result<RedisReplyPtr> RedisConn::Run(milliseconds extra_timeout) {
  Result<RedisReplyPtr> r = RunRaw(extra_timeout, /*connect=*/true);
  if (r.ok() && (*r)->type == REDIS_REPLY_ERROR) {
    return ReplyError(std::string_view((*r)->str, (*r)->len));
  }
  return r;
}

Status RedisConn::ReplyError(std::string_view text) {
  if (uses_sentinels()) {
    std::string_view code = text.substr(0, text.find(' '));
    for (std::string_view d : kDemoted) {
      if (code == d) return Fail(std::string(text) + " (not the master now; asking the sentinels again)");
    }
  }
  return ErrorReplyStatus(text);
}

Status RedisConn::ErrorReplyStatus(std::string_view text) const {
  static constexpr std::string_view kTryLater[] = {
      "LOADING", "BUSY", "MASTERDOWN", "READONLY", "OOM",
      "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT"};
  std::string_view code = text.substr(0, text.find(' '));
  std::string msg = "redis " + addr_ + ": " + std::string(text);
  for (std::string_view t : kTryLater) {
    if (code == t) return Status::Transient(std::move(msg));
  }
  return Status::Permanent(std::move(msg));
}

namespace {
// hiredis takes parallel arrays of pointers and lengths.
template <typename Range>
void FillArgv(const Range& argv, std::vector<const char*>* ptrs, std::vector<size_t>* lens) {
  ptrs->clear();
  lens->clear();
  for (std::string_view a : argv) {
    ptrs->push_back(a.data());
    lens->push_back(a.size());
  }
}
}  // namespace

Result<RedisReplyPtr> RedisConn::Command(std::initializer_list<std::string_view> argv) {
  FillArgv(argv, &argv_, &lens_);
  return Run(milliseconds(0));
}

Result<RedisReplyPtr> RedisConn::Command(const std::vector<std::string_view>& argv) {
  FillArgv(argv, &argv_, &lens_);
  return Run(milliseconds(0));
}

Result<RedisReplyPtr> RedisConn::BlockingCommand(
    std::initializer_list<std::string_view> argv, milliseconds block) {
  argv_.clear();
  lens_.clear();
  for (std::string_view a : argv) {
    argv_.push_back(a.data());
    lens_.push_back(a.size());
  }
  return Run(std::max(block, milliseconds(1)));
}

Status RedisConn::LoadScript(const RedisScript& script) {
  argv_.assign({"SCRIPT", "LOAD", script.source().data()});
  lens_.assign({6, 4, script.source().size()});
  Result<RedisReplyPtr> r = Run(milliseconds(0));
  if (!r.ok()) return r.status();
  if ((*r)->type != REDIS_REPLY_STRING) {
    return Status::Permanent("redis " + addr_ +
                             ": SCRIPT LOAD: unexpected reply type " +
                             std::to_string((*r)->type));
  }
  if (shas_.size() <= script.id()) shas_.resize(script.id() + 1);
  shas_[script.id()].assign((*r)->str, (*r)->len);
  return Status::Ok();
}

void RedisConn::BuildEvalSha(const std::string& sha, const std::string_view* keys,
                             size_t nkeys, const std::string_view* args,
                             size_t nargs) {
  argv_.clear();
  lens_.clear();
  auto [end, ec] = std::to_chars(numkeys_, numkeys_ + sizeof numkeys_, nkeys);
  (void)ec;  // 24 bytes hold any size_t
  argv_.push_back("EVALSHA");
  lens_.push_back(7);
  argv_.push_back(sha.data());
  lens_.push_back(sha.size());
  argv_.push_back(numkeys_);
  lens_.push_back(static_cast<size_t>(end - numkeys_));
  for (size_t i = 0; i < nkeys; ++i) {
    argv_.push_back(keys[i].data());
    lens_.push_back(keys[i].size());
  }
  for (size_t i = 0; i < nargs; ++i) {
    argv_.push_back(args[i].data());
    lens_.push_back(args[i].size());
  }
}

Result<RedisReplyPtr> RedisConn::RunEvalSha(const RedisScript& script,
                                            const std::string_view* keys,
                                            size_t nkeys,
                                            const std::string_view* args,
                                            size_t nargs) {
  // Connect first so a reconnect (which forgets loaded scripts) cannot
  // happen between the check below and the EVALSHA.
  Status st = EnsureConnected();
  if (!st.ok()) return st;
  if (shas_.size() <= script.id() || shas_[script.id()].empty()) {
    st = LoadScript(script);
    if (!st.ok()) return st;
  }
  BuildEvalSha(shas_[script.id()], keys, nkeys, args, nargs);
  Result<RedisReplyPtr> r = RunRaw(milliseconds(0), /*connect=*/false);
  if (r.ok() && (*r)->type == REDIS_REPLY_ERROR &&
      StartsWith(std::string_view((*r)->str, (*r)->len), "NOSCRIPT")) {
    // SCRIPT FLUSH or a server restart behind a proxy: load and retry once.
    // NOSCRIPT means it did not run, so the retry cannot run it twice.
    st = LoadScript(script);
    if (!st.ok()) return st;
    BuildEvalSha(shas_[script.id()], keys, nkeys, args, nargs);
    r = RunRaw(milliseconds(0), /*connect=*/false);
  }
  if (r.ok() && (*r)->type == REDIS_REPLY_ERROR) {
    return ReplyError(std::string_view((*r)->str, (*r)->len));
  }
  return r;
}

Result<RedisReplyPtr> RedisConn::EvalSha(const RedisScript& script,
                                         std::initializer_list<std::string_view> keys,
                                         std::initializer_list<std::string_view> args) {
  return RunEvalSha(script, keys.begin(), keys.size(), args.begin(), args.size());
}

Result<RedisReplyPtr> RedisConn::EvalSha(const RedisScript& script,
                                         const std::vector<std::string_view>& keys,
                                         const std::vector<std::string_view>& args) {
  return RunEvalSha(script, keys.data(), keys.size(), args.data(), args.size());
}

}  // namespace djinn
