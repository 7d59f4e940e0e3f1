#include "common/redis_sentinel.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>

#include "common/config.h"
#include "common/log.h"
#include "common/redis.h"
#include "common/scoreboard.h"
#include "common/text.h"

namespace djinn {

namespace {

using std::chrono::milliseconds;

// The subscription: a PING when nothing arrived for this long, and a new
// connection when nothing (not even the PONG) arrived for kSilentMs.
constexpr int64_t kPingMs = 5000;
constexpr int64_t kSilentMs = 3 * kPingMs;
constexpr int64_t kWatchBackoffMinMs = 500;
constexpr int64_t kWatchBackoffMaxMs = 30000;
constexpr char kSwitchChannel[] = "+switch-master";

bool IsString(const redisReply* r) {
  return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

std::string_view Text(const redisReply* r) { return std::string_view(r->str, r->len); }

// One blocking command; the reply (error replies included) or why none came.
Result<RedisReplyPtr> Run(redisContext* c, std::initializer_list<std::string_view> argv,
                          milliseconds timeout) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (std::string_view a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  errno = 0;
  void* raw = redisCommandArgv(c, static_cast<int>(ptrs.size()), ptrs.data(), lens.data());
  int saved_errno = errno;
  if (raw == nullptr) return Status::Transient(RedisCommandError(c, saved_errno, timeout));
  return RedisReplyPtr(static_cast<redisReply*>(raw));
}

// A connection to one sentinel, authenticated when a password is set.
// Errors are the reason alone.
Result<RedisContextPtr> ConnectSentinel(const std::string& sentinel, const SentinelOptions& o) {
  RedisAddr addr;
  Status st = ParseRedisAddr(sentinel, &addr);
  if (!st.ok()) return Status::Transient(st.message());
  Result<RedisContextPtr> c = ConnectRedis(addr, o.timeout);
  if (!c.ok() || o.password.empty()) return c;
  Result<RedisReplyPtr> auth = Run(c->get(), {"AUTH", o.password}, o.timeout);
  if (!auth.ok()) return auth.status();
  if ((*auth)->type == REDIS_REPLY_ERROR) {
    return Status::Transient("AUTH refused: " + std::string(Text(auth->get())));
  }
  return c;
}

// The master's address from one sentinel; errors are the reason alone.
Result<std::string> AskOne(const std::string& sentinel, const SentinelOptions& o) {
  Result<RedisContextPtr> c = ConnectSentinel(sentinel, o);
  if (!c.ok()) return c.status();
  Result<RedisReplyPtr> r =
      Run(c->get(), {"SENTINEL", "get-master-addr-by-name", o.master}, o.timeout);
  if (!r.ok()) return r.status();
  return ParseMasterAddrReply(r->get(), o.master);
}

}  // namespace

RedisOptions RedisOptionsFor(const RedisConfig& config, milliseconds timeout) {
  RedisOptions o;
  o.addr = config.addr;
  o.password = config.password;
  o.connect_timeout = timeout;
  o.command_timeout = timeout;
  o.sentinel.sentinels = config.sentinels;
  o.sentinel.master = config.master;
  o.sentinel.password = config.sentinel_password;
  o.sentinel.timeout = std::min(o.sentinel.timeout, timeout);
  return o;
}

std::string DescribeRedis(const RedisConfig& config) {
  if (config.sentinels.empty()) return config.addr;
  std::string s = "master \"" + config.master + "\" via sentinels ";
  for (size_t i = 0; i < config.sentinels.size(); ++i) s += (i ? ", " : "") + config.sentinels[i];
  return s;
}

Result<std::string> ParseMasterAddrReply(const redisReply* r, const std::string& master) {
  if (r == nullptr) return Status::Transient("no reply");
  if (r->type == REDIS_REPLY_ERROR) return Status::Transient(std::string(Text(r)));
  if (r->type == REDIS_REPLY_NIL) return Status::Transient("does not know master \"" + master + "\"");
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !IsString(r->element[0]) ||
      !IsString(r->element[1])) {
    return Status::Transient("unexpected reply to SENTINEL get-master-addr-by-name (type " +
                             std::to_string(r->type) + ")");
  }
  std::string_view host = Text(r->element[0]), port = Text(r->element[1]);
  if (host.empty() || ParsePort(port) == 0) {
    return Status::Transient("unusable master address \"" + std::string(host) + "\" port \"" +
                             std::string(port) + "\"");
  }
  return JoinHostPort(host, port);
}

Result<std::string> ParseRoleReply(const redisReply* r) {
  if (r == nullptr) return Status::Transient("no reply");
  if (r->type == REDIS_REPLY_ERROR) return Status::Transient(std::string(Text(r)));
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !IsString(r->element[0])) {
    return Status::Transient("unexpected reply (type " + std::to_string(r->type) + ")");
  }
  return std::string(Text(r->element[0]));
}

std::optional<SwitchMaster> ParseSwitchMaster(std::string_view payload) {
  std::vector<std::string_view> f;
  size_t at = 0;
  while (at <= payload.size()) {
    size_t sp = payload.find(' ', at);
    if (sp == std::string_view::npos) sp = payload.size();
    f.push_back(payload.substr(at, sp - at));
    at = sp + 1;
  }
  if (f.size() != 5) return std::nullopt;
  for (std::string_view part : f)
    if (part.empty()) return std::nullopt;
  if (ParsePort(f[2]) == 0 || ParsePort(f[4]) == 0) return std::nullopt;
  return SwitchMaster{std::string(f[0]), JoinHostPort(f[1], f[2]), JoinHostPort(f[3], f[4])};
}

std::optional<std::string> SwitchMasterPayload(const redisReply* r) {
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 3) return std::nullopt;
  for (size_t i = 0; i < 3; ++i)
    if (!IsString(r->element[i])) return std::nullopt;
  if (Text(r->element[0]) != "message" || Text(r->element[1]) != kSwitchChannel) return std::nullopt;
  return std::string(Text(r->element[2]));
}

Result<std::string> AskSentinels(SentinelOptions* o) {
  std::string errors;
  for (size_t i = 0; i < o->sentinels.size(); ++i) {
    Result<std::string> found = AskOne(o->sentinels[i], *o);
    if (found.ok()) {
      // The guidelines: the sentinel that answered is asked first next time.
      std::rotate(o->sentinels.begin(), o->sentinels.begin() + static_cast<ptrdiff_t>(i),
                  o->sentinels.begin() + static_cast<ptrdiff_t>(i) + 1);
      return found;
    }
    errors += (i ? "; " : "") + o->sentinels[i] + ": " + found.status().message();
  }
  return Status::Transient("redis: no sentinel knows master \"" + o->master + "\" (asked " +
                           std::to_string(o->sentinels.size()) + ": " + errors + ")");
}

// ------------------------------------------------------------ SentinelWatch

SentinelWatch::SentinelWatch(SentinelOptions options) : options_(std::move(options)) {}

Status SentinelWatch::Subscribe(const std::string& sentinel) {
  auto fail = [&](const std::string& why) {
    return Status::Transient("redis sentinel " + sentinel + ": " + why);
  };
  Result<RedisContextPtr> c = ConnectSentinel(sentinel, options_);
  if (!c.ok()) return fail(c.status().message());
  Result<RedisReplyPtr> r = Run(c->get(), {"SUBSCRIBE", kSwitchChannel}, options_.timeout);
  if (!r.ok()) return fail(r.status().message());
  if ((*r)->type == REDIS_REPLY_ERROR) return fail("SUBSCRIBE refused: " + std::string(Text(r->get())));
  ctx_ = std::move(*c);
  current_ = sentinel;
  return Status::Ok();
}

void SentinelWatch::Drop(const std::string& why) {
  ctx_.reset();
  if (!failing_) {
    LOG_WARN("%s; failovers of master \"%s\" are noticed through errors only until a sentinel "
             "answers", why.c_str(), options_.master.c_str());
    failing_ = true;
  }
  backoff_ms_ = std::clamp(backoff_ms_ * 2, kWatchBackoffMinMs, kWatchBackoffMaxMs);
  next_attempt_ms_ = MonotonicMs() + backoff_ms_;
}

std::vector<SwitchMaster> SentinelWatch::Poll() {
  std::vector<SwitchMaster> seen;
  if (options_.sentinels.empty()) return seen;
  int64_t now = MonotonicMs();
  if (!ctx_) {
    if (now < next_attempt_ms_) return seen;
    std::string sentinel = options_.sentinels[next_ % options_.sentinels.size()];
    next_ = (next_ + 1) % options_.sentinels.size();
    Status st = Subscribe(sentinel);
    if (!st.ok()) {
      Drop(st.message());
      return seen;
    }
    if (failing_) {
      LOG_INFO("redis sentinel %s: watching master \"%s\" for failovers again", sentinel.c_str(),
               options_.master.c_str());
    } else {
      LOG_DEBUG("redis sentinel %s: watching master \"%s\" for failovers", sentinel.c_str(),
                options_.master.c_str());
    }
    failing_ = false;
    backoff_ms_ = 0;
    last_rx_ms_ = last_ping_ms_ = MonotonicMs();
    return seen;
  }
  pollfd p{ctx_->fd, POLLIN, 0};
  if (::poll(&p, 1, 0) > 0) {
    // Readable (or hung up): one read(2), which cannot block now.
    if (redisBufferRead(ctx_.get()) != REDIS_OK) {
      Drop("redis sentinel " + current_ + ": " + RedisCommandError(ctx_.get(), errno, options_.timeout));
      return seen;
    }
    last_rx_ms_ = now;
    for (;;) {
      void* raw = nullptr;
      if (redisGetReplyFromReader(ctx_.get(), &raw) != REDIS_OK) {
        Drop("redis sentinel " + current_ + ": protocol error");
        return seen;
      }
      if (raw == nullptr) break;
      RedisReplyPtr reply(static_cast<redisReply*>(raw));
      std::optional<std::string> payload = SwitchMasterPayload(reply.get());
      if (!payload) continue;  // a PONG, or a message of another channel
      std::optional<SwitchMaster> sw = ParseSwitchMaster(*payload);
      if (sw && sw->name == options_.master) seen.push_back(*sw);
    }
  }
  if (now - last_rx_ms_ >= kSilentMs) {
    Drop("redis sentinel " + current_ + ": silent for " + std::to_string(kSilentMs / 1000) +
         " s (no answer to PING)");
    return seen;
  }
  if (now - last_rx_ms_ >= kPingMs && now - last_ping_ms_ >= kPingMs) {
    last_ping_ms_ = now;
    int done = 0;
    if (redisAppendCommand(ctx_.get(), "PING") != REDIS_OK ||
        redisBufferWrite(ctx_.get(), &done) != REDIS_OK) {
      Drop("redis sentinel " + current_ + ": " + RedisCommandError(ctx_.get(), errno, options_.timeout));
    }
  }
  return seen;
}

}  // namespace djinn
