#include "common/curly_queue.h"

#include <fcntl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "common/url.h"

namespace djinn {

namespace {

// The scripts keep curlyq's key order and semantics (lua/*.lua of
// mcmathja/curlyq); where we combine steps, every key still means what
// curlyq means by it. They are kept short: AckAndTake runs once per job.

// curlyq push_job.lua.
const RedisScript kPush(R"lua(
if redis.call('hsetnx', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('rpush', KEYS[2], ARGV[1])
  redis.call('del', KEYS[3])
  redis.call('lpush', KEYS[3], 1)
  return 1
end
return 0
)lua");

// ack_job.lua + get_jobs.lua with a count of one. KEYS: consumers, active,
// inflight, data, signal. ARGV: consumer key, ID to ack ('' for none).
// Like get_jobs.lua it refuses an unregistered consumer (an orphaned one
// whose jobs were requeued must not take more) and clears the signal when
// it found fewer jobs than asked, so idle consumers block until a push.
const RedisScript kAckAndTake(R"lua(
if ARGV[2] ~= '' and redis.call('srem', KEYS[3], ARGV[2]) == 1 then
  redis.call('hdel', KEYS[4], ARGV[2])
end
if not redis.call('zscore', KEYS[1], ARGV[1]) then
  return redis.error_reply('consumer not registered')
end
local id = redis.call('lpop', KEYS[2])
if not id then
  redis.call('del', KEYS[5])
  return false
end
redis.call('sadd', KEYS[3], id)
return {id, redis.call('hget', KEYS[4], id)}
)lua");

// curlyq ack_job.lua. KEYS: inflight, data. ARGV: ID.
const RedisScript kAck(R"lua(
if redis.call('srem', KEYS[1], ARGV[1]) == 1 then
  redis.call('hdel', KEYS[2], ARGV[1])
  return 1
end
return 0
)lua");

// curlyq retry_job.lua. KEYS: inflight, scheduled, data. ARGV: ID, retry
// time, envelope.
const RedisScript kMoveToSet(R"lua(
if redis.call('srem', KEYS[1], ARGV[1]) == 1 then
  redis.call('zadd', KEYS[2], ARGV[2], ARGV[1])
  if ARGV[3] then redis.call('hset', KEYS[3], ARGV[1], ARGV[3]) end
  return 1
end
return 0
)lua");

// curlyq kill_job.lua, plus the reason in our own Q:dead:why. Without
// ARGV[4] (KillRaw) Q:data is left alone: undecodable bytes stay for a
// human. KEYS: inflight, dead, data, why. ARGV: ID, now, why, [envelope].
const RedisScript kKill(R"lua(
if redis.call('srem', KEYS[1], ARGV[1]) == 1 then
  redis.call('zadd', KEYS[2], ARGV[2], ARGV[1])
  if ARGV[4] then redis.call('hset', KEYS[3], ARGV[1], ARGV[4]) end
  if ARGV[3] ~= '' then
    redis.call('hset', KEYS[4], ARGV[1], ARGV[3])
  else
    redis.call('hdel', KEYS[4], ARGV[1])
  end
  return 1
end
return 0
)lua");

// curlyq's reenqueue_active_jobs.lua for one job, but to the head. KEYS: inflight,
// active, signal. ARGV: ID. Back to the head: it never failed.
const RedisScript kRelease(R"lua(
if redis.call('srem', KEYS[1], ARGV[1]) == 1 then
  redis.call('lpush', KEYS[2], ARGV[1])
  redis.call('del', KEYS[3])
  redis.call('lpush', KEYS[3], 1)
  return 1
end
return 0
)lua");

// curlyq enqueue_scheduled_jobs.lua. KEYS: scheduled, active, signal.
// ARGV: now, max.
const RedisScript kEnqueueScheduled(R"lua(
local ids = redis.call('zrangebyscore', KEYS[1], 0, ARGV[1], 'LIMIT', 0, ARGV[2])
local count = #ids
if count > 0 then
  redis.call('rpush', KEYS[2], unpack(ids))
  redis.call('zremrangebyrank', KEYS[1], 0, count - 1)
  redis.call('del', KEYS[3])
  redis.call('lpush', KEYS[3], 1)
end
return count
)lua");

// curlyq reenqueue_orphaned_jobs.lua. KEYS: consumers, active, signal.
// ARGV: expired-before time, max jobs.
const RedisScript kRequeueOrphans(R"lua(
local consumers = redis.call('zrangebyscore', KEYS[1], 0, ARGV[1], 'LIMIT', 0, ARGV[2])
local limit = tonumber(ARGV[2])
for _, consumer in ipairs(consumers) do
  local jobs = redis.call('spop', consumer, limit)
  local count = #jobs
  if count > 0 then
    redis.call('rpush', KEYS[2], unpack(jobs))
  end
  if count < limit then
    redis.call('zrem', KEYS[1], consumer)
  end
  limit = limit - count
  if limit <= 0 then
    break
  end
end
local processed = tonumber(ARGV[2]) - limit
if processed > 0 then
  redis.call('del', KEYS[3])
  redis.call('lpush', KEYS[3], 1)
end
return processed
)lua");

// Our own. KEYS: inflight, active, signal. ARGV: the ID the consumer
// knows it holds ('' for none). A take whose reply was lost (the
// connection broke after Redis ran it) leaves an ID in a live consumer's
// set that the consumer does not know about; heartbeats keep orphan
// requeue away, so it would be stuck. Put such IDs back at the head,
// where they were taken from.
const RedisScript kRecoverInflight(R"lua(
local n = 0
for _, id in ipairs(redis.call('smembers', KEYS[1])) do
  if id ~= ARGV[1] then
    redis.call('srem', KEYS[1], id)
    redis.call('lpush', KEYS[2], id)
    n = n + 1
  end
end
if n > 0 then
  redis.call('del', KEYS[3])
  redis.call('lpush', KEYS[3], 1)
end
return n
)lua");

// KEYS: consumers, inflight. ARGV: consumer key. Returns the jobs left.
const RedisScript kUnregisterIfEmpty(R"lua(
local n = redis.call('scard', KEYS[2])
if n == 0 then
  redis.call('zrem', KEYS[1], ARGV[1])
  redis.call('del', KEYS[2])
end
return n
)lua");

// KEYS: inflight, data. Returns {id1, envelope1 or nil, id2, ...}.
const RedisScript kReadInflight(R"lua(
local out = {}
for i, id in ipairs(redis.call('smembers', KEYS[1])) do
  out[2 * i - 1] = id
  out[2 * i] = redis.call('hget', KEYS[2], id)
end
return out
)lua");

// KEYS: inflight, active, dead, data, signal, why. ARGV: ID, now, '1' to
// kill or '0' to requeue, why (kept when killed), [new envelope]. Acts
// only if the ID is still in that inflight set, so a job is never moved
// twice.
const RedisScript kFailOne(R"lua(
if redis.call('srem', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[5] then
  redis.call('hset', KEYS[4], ARGV[1], ARGV[5])
end
if ARGV[3] == '1' then
  redis.call('zadd', KEYS[3], ARGV[2], ARGV[1])
  redis.call('hset', KEYS[6], ARGV[1], ARGV[4])
else
  redis.call('rpush', KEYS[2], ARGV[1])
  redis.call('del', KEYS[5])
  redis.call('lpush', KEYS[5], 1)
end
return 1
)lua");

// KEYS: active, scheduled, dead, data, consumers.
const RedisScript kStats(R"lua(
return {redis.call('llen', KEYS[1]), redis.call('zcard', KEYS[2]),
        redis.call('zcard', KEYS[3]), redis.call('hlen', KEYS[4]),
        redis.call('zcard', KEYS[5])}
)lua");

// --- operator commands ---

// KEYS: active, scheduled, dead, consumers. Returns {active, scheduled,
// dead, first due ('' when none), then key, heartbeat, inflight per
// consumer}. The inflight sets are named by Q:consumers, as curlyq's
// reenqueue_orphaned_jobs.lua names them.
const RedisScript kOverview(R"lua(
local out = {redis.call('llen', KEYS[1]), redis.call('zcard', KEYS[2]),
             redis.call('zcard', KEYS[3])}
local first = redis.call('zrange', KEYS[2], 0, 0, 'WITHSCORES')
out[4] = first[2] or ''
local cs = redis.call('zrange', KEYS[4], 0, -1, 'WITHSCORES')
for i = 1, #cs, 2 do
  out[#out + 1] = cs[i]
  out[#out + 1] = cs[i + 1]
  out[#out + 1] = redis.call('scard', cs[i])
end
return out
)lua");

// KEYS: dead, data, why. ARGV: last index (-1: all). Newest first:
// {id, died at, {envelope} or {}, why or '', ...}.
const RedisScript kListDead(R"lua(
local ids = redis.call('zrevrange', KEYS[1], 0, ARGV[1], 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local env = redis.call('hget', KEYS[2], ids[i])
  out[#out + 1] = ids[i]
  out[#out + 1] = ids[i + 1]
  if env then out[#out + 1] = {env} else out[#out + 1] = {} end
  out[#out + 1] = redis.call('hget', KEYS[3], ids[i]) or ''
end
return out
)lua");

// KEYS: dead, data, active, signal, why. ARGV: ID, the envelope as read,
// the envelope with Attempt 0. 0: not dead; -1: the envelope changed
// since it was read (read again); 1: moved, as curlyq's push_job.lua
// would have pushed it.
const RedisScript kRetryDead(R"lua(
if not redis.call('zscore', KEYS[1], ARGV[1]) then
  return 0
end
if redis.call('hget', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return -1
end
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('hset', KEYS[2], ARGV[1], ARGV[3])
redis.call('rpush', KEYS[3], ARGV[1])
redis.call('del', KEYS[4])
redis.call('lpush', KEYS[4], 1)
redis.call('hdel', KEYS[5], ARGV[1])
return 1
)lua");

// KEYS: dead, data, why. ARGV: ID.
const RedisScript kPurgeDead(R"lua(
if redis.call('zrem', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('hdel', KEYS[3], ARGV[1])
return 1
)lua");

// KEYS: dead, why.
const RedisScript kPruneReasons(R"lua(
local n = 0
for _, id in ipairs(redis.call('hkeys', KEYS[2])) do
  if not redis.call('zscore', KEYS[1], id) then
    redis.call('hdel', KEYS[2], id)
    n = n + 1
  end
end
return n
)lua");

// An integer formatted on the stack, for argv.
class IntArg {
 public:
  explicit IntArg(int64_t v) {
    auto [end, ec] = std::to_chars(buf_, buf_ + sizeof buf_, v);
    (void)ec;  // 24 bytes hold any int64
    len_ = static_cast<size_t>(end - buf_);
  }
  std::string_view view() const { return std::string_view(buf_, len_); }

 private:
  char buf_[24];
  size_t len_;
};

timespec RealNow() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

// Unix seconds, as curlyq's time.Now().Unix().
int64_t NowSeconds() { return RealNow().tv_sec; }

// time.Now().Add(delay).Unix(): whole seconds, rounded down.
int64_t SecondsFromNow(double delay) {
  timespec ts = RealNow();
  if (!(delay > 0)) delay = 0;  // also NaN
  delay = std::min(delay, kCurlyMaxBackoffSeconds);
  return static_cast<int64_t>(
      std::floor(static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9 + delay));
}

// Fills buf from the kernel's CSPRNG. Failure means a broken system (no
// getrandom and no /dev/urandom): abort, the master respawns or exits.
void RandomBytes(unsigned char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(buf + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  if (got == n) return;
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  while (fd >= 0 && got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r > 0) got += static_cast<size_t>(r);
    else if (r < 0 && errno == EINTR) continue;
    else break;
  }
  if (fd >= 0) ::close(fd);
  if (got != n) {
    std::fprintf(stderr, "djinn-consumer: no randomness (getrandom, /dev/urandom): %s\n",
                 std::strerror(errno));
    std::abort();
  }
}

std::string_view ReplyView(const redisReply* r) {
  return std::string_view(r->str, r->len);
}

Status Unexpected(const std::string& what, const redisReply* r) {
  return Status::Permanent(what + ": unexpected reply type " + std::to_string(r->type));
}

}  // namespace

std::string NewConsumerKey(const std::string& queue) {
  unsigned char b[16];
  RandomBytes(b, sizeof b);
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string uuid;
  uuid.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) uuid += '-';
    uuid += kHex[b[i] >> 4];
    uuid += kHex[b[i] & 15];
  }
  return queue + ":inflight:" + uuid;
}

double RetryBackoffSeconds(int64_t attempt) {
  // curlyq expBackoff(): (1 + rand) * 2^attempt / 2 seconds, capped. The
  // random draw comes from the kernel each time: retries are rare, and a
  // user-space generator seeded in the master would hand every forked
  // worker the same "jitter".
  uint64_t bits;
  RandomBytes(reinterpret_cast<unsigned char*>(&bits), sizeof bits);
  double u = static_cast<double>(bits >> 11) * 0x1.0p-53;  // [0, 1)
  int64_t a = std::clamp<int64_t>(attempt, 0, 64);
  double backoff = std::ldexp(1.0 + u, static_cast<int>(a) - 1);
  return std::min(backoff, kCurlyMaxBackoffSeconds);
}

CurlyQueue::CurlyQueue(std::string name, RedisOptions options)
    : name_(std::move(name)),
      active_(name_ + ":active"),
      consumers_(name_ + ":consumers"),
      data_(name_ + ":data"),
      dead_(name_ + ":dead"),
      scheduled_(name_ + ":scheduled"),
      signal_(name_ + ":signal"),
      why_(DeadReasonKey(name_)),
      conn_(std::move(options)) {}

Status CurlyQueue::Push(const Envelope& env) {
  std::string msg = EncodeEnvelope(env);
  auto r = conn_.EvalSha(kPush, {data_, active_, signal_}, {env.id, msg});
  return r.status();
}

Status CurlyQueue::Register(const std::string& consumer_key) {
  IntArg now(NowSeconds());
  return conn_.Command({"ZADD", consumers_, now.view(), consumer_key}).status();
}

Status CurlyQueue::Heartbeat(const std::vector<std::string>& consumer_keys) {
  if (consumer_keys.empty()) return Status::Ok();
  IntArg now(NowSeconds());
  std::vector<std::string_view> argv;
  argv.reserve(2 + 2 * consumer_keys.size());
  argv.push_back("ZADD");
  argv.push_back(consumers_);
  for (const std::string& k : consumer_keys) {
    argv.push_back(now.view());
    argv.push_back(k);
  }
  return conn_.Command(argv).status();
}

Result<std::optional<RawJob>> CurlyQueue::TakeOnce(const std::string& consumer_key,
                                                   const std::string& ack_id) {
  auto r = conn_.EvalSha(kAckAndTake, {consumers_, active_, consumer_key, data_, signal_},
                         {consumer_key, ack_id});
  if (!r.ok()) {
    const std::string& m = r.status().message();
    static constexpr std::string_view kRefused = ": consumer not registered";
    if (m.size() >= kRefused.size() &&
        m.compare(m.size() - kRefused.size(), kRefused.size(), kRefused) == 0) {
      return Status::Transient("consumer not registered: " + consumer_key +
                               " is not in " + consumers_);
    }
    return r.status();
  }
  const redisReply* rep = r->get();
  if (rep->type == REDIS_REPLY_NIL) return std::optional<RawJob>();
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
      rep->element[0]->type != REDIS_REPLY_STRING) {
    return Unexpected("take from " + active_, rep);
  }
  RawJob job;
  job.id.assign(ReplyView(rep->element[0]));
  // A job whose data is missing comes back with an empty envelope: the
  // caller's DecodeEnvelope() fails and it is dead-lettered by ID.
  if (rep->element[1]->type == REDIS_REPLY_STRING) {
    job.envelope.assign(ReplyView(rep->element[1]));
  }
  return std::optional<RawJob>(std::move(job));
}

std::string CurlyQueue::BlockTimeoutArg(int block_ms) const {
  if (whole_second_timeouts_ || block_ms % 1000 == 0) {
    return std::to_string((block_ms + 999) / 1000);
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d.%03d", block_ms / 1000, block_ms % 1000);
  return buf;
}

Result<std::optional<RawJob>> CurlyQueue::AckAndTake(const std::string& consumer_key,
                                                     const std::string& ack_id,
                                                     int block_ms) {
  // After a call that found nothing, an idle worker waits first: the wait
  // returns at once when Q:active is not empty, so this saves a take per
  // timed-out wait and per wake-up that another consumer won.
  if (!(ack_id.empty() && idle_ && block_ms > 0)) {
    auto first = TakeOnce(consumer_key, ack_id);
    idle_ = first.ok() && !first->has_value();
    if (!first.ok() || first->has_value() || block_ms <= 0) return first;
  }
  auto taken = WaitAndTake(consumer_key, block_ms);
  idle_ = taken.ok() && !taken->has_value();
  return taken;
}

Result<std::optional<RawJob>> CurlyQueue::WaitAndTake(const std::string& consumer_key,
                                                      int block_ms) {

  // Idle: block until Q:active is non-empty, so a job from any producer
  // wakes us within a round trip, curlyq v0.4.0's (HSETNX + RPUSH only, no
  // signal) included. BLMOVE active active RIGHT RIGHT takes the tail and
  // puts it back where it was: the list is not reordered. Redis serves
  // every client blocked on the key in turn (each BLMOVE re-pushes), so one
  // push wakes every idle consumer; all but one find nothing on the take
  // and block again (docs/performance.md counts this). A timeout means the
  // list stayed empty: no take is needed, the caller just calls again.
  for (;;) {
    auto w = wait_rotates_
                 ? conn_.BlockingCommand({"BRPOPLPUSH", active_, active_,
                                          BlockTimeoutArg(block_ms)},
                                         std::chrono::milliseconds(block_ms))
                 : conn_.BlockingCommand({"BLMOVE", active_, active_, "RIGHT", "RIGHT",
                                          BlockTimeoutArg(block_ms)},
                                         std::chrono::milliseconds(block_ms));
    if (w.ok()) {
      if ((*w)->type == REDIS_REPLY_NIL) return std::optional<RawJob>();
      return TakeOnce(consumer_key, std::string());
    }
    if (!w.status().permanent()) return w.status();
    if (!wait_rotates_) {
      // Redis < 6.2 has no BLMOVE. Wait as curlyq v0.4.0's own consumer
      // does: BRPOPLPUSH active active moves the newest job to the head.
      LOG_INFO("redis %s has no BLMOVE (%s); idle workers wait with BRPOPLPUSH, "
               "which moves a newly pushed job to the head of %s",
               conn_.addr().c_str(), w.status().message().c_str(), active_.c_str());
      wait_rotates_ = true;
      continue;
    }
    if (!whole_second_timeouts_ && block_ms % 1000 != 0) {
      whole_second_timeouts_ = true;  // Redis < 6: no fractional timeouts
      continue;
    }
    return w.status();
  }
}

Status CurlyQueue::Ack(const std::string& consumer_key, const std::string& id) {
  return conn_.EvalSha(kAck, {consumer_key, data_}, {id}).status();
}

Status CurlyQueue::Retry(const std::string& consumer_key, const Envelope& env,
                         double delay_seconds) {
  std::string msg = EncodeEnvelope(env);
  IntArg at(SecondsFromNow(delay_seconds));
  return conn_.EvalSha(kMoveToSet, {consumer_key, scheduled_, data_},
                       {env.id, at.view(), msg})
      .status();
}

Status CurlyQueue::Kill(const std::string& consumer_key, const Envelope& env,
                        const std::string& why) {
  std::string msg = EncodeEnvelope(env);
  IntArg now(NowSeconds());
  std::string reason = DeadReason(why);
  return conn_.EvalSha(kKill, {consumer_key, dead_, data_, why_}, {env.id, now.view(), reason, msg})
      .status();
}

Status CurlyQueue::Release(const std::string& consumer_key, const std::string& id) {
  return conn_.EvalSha(kRelease, {consumer_key, active_, signal_}, {id}).status();
}

Status CurlyQueue::KillRaw(const std::string& consumer_key, const std::string& id,
                           const std::string& why) {
  IntArg now(NowSeconds());
  std::string reason = DeadReason(why);
  return conn_.EvalSha(kKill, {consumer_key, dead_, data_, why_}, {id, now.view(), reason})
      .status();
}

Result<int64_t> CurlyQueue::RecoverInflight(const std::string& consumer_key,
                                            const std::string& keep_id) {
  auto r = conn_.EvalSha(kRecoverInflight, {consumer_key, active_, signal_}, {keep_id});
  if (!r.ok()) return r.status();
  if ((*r)->type != REDIS_REPLY_INTEGER) return Unexpected("recover inflight", r->get());
  return static_cast<int64_t>((*r)->integer);
}

Status CurlyQueue::UnregisterIfEmpty(const std::string& consumer_key, int64_t* left) {
  auto r = conn_.EvalSha(kUnregisterIfEmpty, {consumers_, consumer_key}, {consumer_key});
  if (!r.ok()) return r.status();
  if ((*r)->type != REDIS_REPLY_INTEGER) return Unexpected("unregister", r->get());
  *left = (*r)->integer;
  return Status::Ok();
}

Status CurlyQueue::Unregister(const std::string& consumer_key) {
  int64_t left = 0;
  Status st = UnregisterIfEmpty(consumer_key, &left);
  if (!st.ok()) return st;
  if (left > 0) {
    return Status::Permanent("consumer " + consumer_key + " still holds " +
                             std::to_string(left) + " job(s); not unregistered");
  }
  return Status::Ok();
}

Result<int64_t> CurlyQueue::EnqueueDueScheduled(int64_t max) {
  if (max <= 0) return int64_t{0};
  IntArg now(NowSeconds()), limit(max);
  auto r = conn_.EvalSha(kEnqueueScheduled, {scheduled_, active_, signal_},
                         {now.view(), limit.view()});
  if (!r.ok()) return r.status();
  if ((*r)->type != REDIS_REPLY_INTEGER) return Unexpected("enqueue scheduled", r->get());
  return static_cast<int64_t>((*r)->integer);
}

Result<int64_t> CurlyQueue::RequeueOrphans(int64_t timeout_seconds, int64_t max) {
  if (max <= 0) return int64_t{0};
  IntArg before(NowSeconds() - timeout_seconds), limit(max);
  auto r = conn_.EvalSha(kRequeueOrphans, {consumers_, active_, signal_},
                         {before.view(), limit.view()});
  if (!r.ok()) return r.status();
  if ((*r)->type != REDIS_REPLY_INTEGER) return Unexpected("requeue orphans", r->get());
  return static_cast<int64_t>((*r)->integer);
}

Result<std::vector<Queue::FailedJob>> CurlyQueue::FailInflight(
    const std::string& consumer_key, int max_attempts, bool count_attempt,
    const std::string& why) {
  std::string reason = DeadReason(why);
  auto read = conn_.EvalSha(kReadInflight, {consumer_key, data_}, {});
  if (!read.ok()) return read.status();
  const redisReply* rep = read->get();
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 2 != 0) {
    return Unexpected("read " + consumer_key, rep);
  }
  // `read` owns its reply until we return (each command gets a reply of its
  // own), so IDs and envelopes are read in place: the master never copies a
  // payload; it re-encodes one only to write back its Attempt.
  std::vector<FailedJob> handled;
  for (size_t i = 0; i + 1 < rep->elements; i += 2) {
    const redisReply* id = rep->element[i];
    const redisReply* raw = rep->element[i + 1];
    if (id->type != REDIS_REPLY_STRING) continue;
    FailedJob fj;
    fj.id.assign(ReplyView(id));
    fj.dead = true;  // no data or undecodable: dead, envelope unchanged
    std::string new_env;
    if (raw->type == REDIS_REPLY_STRING) {
      Result<EnvelopeView> env = DecodeEnvelopeView(ReplyView(raw));
      if (env.ok() && !count_attempt) {
        fj.attempt = env->attempt;  // requeued as it is
        fj.dead = false;
      } else if (env.ok()) {
        fj.dead = RetriesExhausted(*env, max_attempts);
        env->attempt = NextAttempt(*env);
        fj.attempt = env->attempt;
        new_env = EncodeEnvelope(*env);
      }
    }
    IntArg now(NowSeconds());
    std::vector<std::string_view> args = {fj.id, now.view(), fj.dead ? "1" : "0", reason};
    if (!new_env.empty()) args.push_back(new_env);
    auto r = conn_.EvalSha(kFailOne, {consumer_key, active_, dead_, data_, signal_, why_}, args);
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_INTEGER) return Unexpected("fail " + fj.id, r->get());
    if ((*r)->integer == 1) handled.push_back(std::move(fj));
  }

  int64_t left = 0;
  Status st = UnregisterIfEmpty(consumer_key, &left);
  if (!st.ok()) return st;
  return handled;
}

Result<QueueStats> CurlyQueue::Stats() {
  auto r = conn_.EvalSha(kStats, {active_, scheduled_, dead_, data_, consumers_}, {});
  if (!r.ok()) return r.status();
  const redisReply* rep = r->get();
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 5) return Unexpected("stats", rep);
  int64_t v[5];
  for (size_t i = 0; i < 5; ++i) {
    if (rep->element[i]->type != REDIS_REPLY_INTEGER) return Unexpected("stats", rep);
    v[i] = rep->element[i]->integer;
  }
  QueueStats s;
  s.active = v[0];
  s.scheduled = v[1];
  s.dead = v[2];
  s.data = v[3];
  s.consumers = v[4];
  return s;
}

Result<std::string> CurlyQueue::MaxmemoryPolicy() {
  auto r = conn_.Command({"CONFIG", "GET", "maxmemory-policy"});
  if (!r.ok()) {
    // CONFIG renamed away or denied by ACL: not knowing is not an error.
    if (r.status().permanent()) return std::string();
    return r.status();
  }
  const redisReply* rep = r->get();
  if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
      rep->element[1]->type == REDIS_REPLY_STRING) {
    return std::string(ReplyView(rep->element[1]));
  }
  return std::string();
}

// --- operator commands ---

std::string DeadReasonKey(const std::string& queue) { return queue + ":dead:why"; }

std::string DeadReason(const std::string& why) {
  std::string s = RedactUrl(Log::Scrub(why));
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  if (s.size() > kMaxDeadReason) {
    size_t cut = kMaxDeadReason;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) cut--;
    s.resize(cut);
  }
  return s;
}

namespace {

// A Redis score or integer reply as whole seconds.
int64_t ReplyInt(const redisReply* r) {
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  if (r->type == REDIS_REPLY_STRING) return static_cast<int64_t>(std::strtod(r->str, nullptr));
  return 0;
}

}  // namespace

Result<QueueOverview> CurlyQueue::Overview() {
  auto r = conn_.EvalSha(kOverview, {active_, scheduled_, dead_, consumers_}, {});
  if (!r.ok()) return r.status();
  const redisReply* rep = r->get();
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 4 || (rep->elements - 4) % 3 != 0)
    return Unexpected("overview", rep);
  QueueOverview o;
  o.active = ReplyInt(rep->element[0]);
  o.scheduled = ReplyInt(rep->element[1]);
  o.dead = ReplyInt(rep->element[2]);
  if (rep->element[3]->type == REDIS_REPLY_STRING && rep->element[3]->len > 0)
    o.next_due = ReplyInt(rep->element[3]);
  for (size_t i = 4; i + 2 < rep->elements; i += 3) {
    QueueOverview::Consumer c;
    c.key.assign(ReplyView(rep->element[i]));
    c.heartbeat = ReplyInt(rep->element[i + 1]);
    c.inflight = ReplyInt(rep->element[i + 2]);
    o.consumers.push_back(std::move(c));
  }
  return o;
}

Result<std::vector<DeadJob>> CurlyQueue::ListDead(int64_t limit) {
  IntArg last(limit <= 0 ? -1 : limit - 1);
  auto r = conn_.EvalSha(kListDead, {dead_, data_, why_}, {last.view()});
  if (!r.ok()) return r.status();
  const redisReply* rep = r->get();
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 4 != 0) return Unexpected("dead", rep);
  std::vector<DeadJob> out;
  for (size_t i = 0; i + 3 < rep->elements; i += 4) {
    DeadJob j;
    j.id.assign(ReplyView(rep->element[i]));
    j.died_at = ReplyInt(rep->element[i + 1]);
    const redisReply* env = rep->element[i + 2];
    if (env->type == REDIS_REPLY_ARRAY && env->elements == 1 &&
        env->element[0]->type == REDIS_REPLY_STRING) {
      j.has_data = true;
      j.envelope.assign(ReplyView(env->element[0]));
    }
    if (rep->element[i + 3]->type == REDIS_REPLY_STRING) j.why.assign(ReplyView(rep->element[i + 3]));
    out.push_back(std::move(j));
  }
  return out;
}

Result<std::vector<std::string>> CurlyQueue::DeadIds() {
  auto r = conn_.Command({"ZRANGE", dead_, "0", "-1"});
  if (!r.ok()) return r.status();
  const redisReply* rep = r->get();
  if (rep->type != REDIS_REPLY_ARRAY) return Unexpected("dead ids", rep);
  std::vector<std::string> ids;
  for (size_t i = 0; i < rep->elements; i++)
    if (rep->element[i]->type == REDIS_REPLY_STRING) ids.emplace_back(ReplyView(rep->element[i]));
  return ids;
}

Result<DeadMove> CurlyQueue::RetryDead(const std::string& id) {
  // Read, reset the Attempt here (msgpack stays ours, byte for byte as
  // EncodeEnvelope writes it), then move only if nothing changed meanwhile.
  for (int tries = 0; tries < 5; tries++) {
    auto score = conn_.Command({"ZSCORE", dead_, id});
    if (!score.ok()) return score.status();
    if ((*score)->type == REDIS_REPLY_NIL) return DeadMove::kNotDead;
    auto data = conn_.Command({"HGET", data_, id});
    if (!data.ok()) return data.status();
    if ((*data)->type != REDIS_REPLY_STRING) return DeadMove::kNoEnvelope;
    std::string old_env(ReplyView(data->get()));
    auto env = DecodeEnvelope(old_env);
    if (!env.ok()) return DeadMove::kBadEnvelope;
    env->attempt = 0;
    std::string new_env = EncodeEnvelope(*env);
    auto r = conn_.EvalSha(kRetryDead, {dead_, data_, active_, signal_, why_},
                           {id, old_env, new_env});
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_INTEGER) return Unexpected("retry " + id, r->get());
    if ((*r)->integer == 1) return DeadMove::kDone;
    if ((*r)->integer == 0) return DeadMove::kNotDead;
  }
  return Status::Transient("job " + id + ": its envelope keeps changing; try again");
}

Result<DeadMove> CurlyQueue::PurgeDead(const std::string& id) {
  auto r = conn_.EvalSha(kPurgeDead, {dead_, data_, why_}, {id});
  if (!r.ok()) return r.status();
  if ((*r)->type != REDIS_REPLY_INTEGER) return Unexpected("purge " + id, r->get());
  return (*r)->integer == 1 ? DeadMove::kDone : DeadMove::kNotDead;
}

Result<int64_t> CurlyQueue::PruneDeadReasons() {
  auto r = conn_.EvalSha(kPruneReasons, {dead_, why_}, {});
  if (!r.ok()) return r.status();
  if ((*r)->type != REDIS_REPLY_INTEGER) return Unexpected("prune reasons", r->get());
  return static_cast<int64_t>((*r)->integer);
}

}  // namespace djinn
