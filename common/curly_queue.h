// CurlyQueue: the Queue of common/queue.h on Redis, key for key and script
// for script compatible with the Go library curlyq (github.com/mcmathja/
// curlyq), so Djinn's Go producers and curlyq consumers on other hosts
// share the queue with us (DESIGN §3). The Djinn server runs curlyq v0.4.0,
// whose push writes no Q:signal: idle consumers therefore wait on Q:active
// itself. Push still writes the signal, as later curlyq versions do, so
// their consumers wake on our pushes too.
//
// What each call does in Redis (Q = the queue name; all atomic Lua):
//   Push                HSETNX Q:data, RPUSH Q:active, DEL+LPUSH Q:signal
//                       (a duplicate ID is ignored, as curlyq does)
//   Register/Heartbeat  ZADD Q:consumers <now> <consumer key>...
//   AckAndTake          [SREM inflight, HDEL Q:data] then, if the consumer
//                       is in Q:consumers, LPOP Q:active -> SADD inflight
//                       -> HGET Q:data; nothing to take: DEL Q:signal,
//                       BLMOVE Q:active Q:active RIGHT RIGHT <block> (on
//                       Redis < 6.2 BRPOPLPUSH Q:active Q:active, as
//                       curlyq v0.4.0); woken: take again
//   Ack                 SREM inflight, HDEL Q:data
//   Retry               SREM inflight, ZADD Q:scheduled <retry at>, HSET
//   Kill                SREM inflight, ZADD Q:dead <now>, HSET Q:data
//   KillRaw             SREM inflight, ZADD Q:dead <now> (data untouched)
//   Release             SREM inflight, LPUSH Q:active, signal (data untouched)
//   Unregister          if SCARD inflight == 0: ZREM Q:consumers, DEL
//   EnqueueDueScheduled ZRANGEBYSCORE Q:scheduled 0 <now> -> RPUSH Q:active,
//                       ZREMRANGEBYRANK, signal
//   RequeueOrphans      consumers with a heartbeat <= now - timeout: SPOP
//                       their inflight sets -> RPUSH Q:active, ZREM them
//   FailInflight        per ID: Attempt+1, RPUSH Q:active (or ZADD Q:dead)
// Operator commands (djinn-consumer queue/dead/retry/purge, master/commands.h):
//   Overview            LLEN, ZCARD, the first Q:scheduled entry, every
//                       Q:consumers entry with SCARD of its inflight set
//   ListDead            ZREVRANGE Q:dead, HGET Q:data and Q:dead:why
//   RetryDead           if the ID is in Q:dead and its Q:data entry is the
//                       one read: ZREM Q:dead, HSET Q:data (Attempt 0),
//                       RPUSH Q:active, DEL+LPUSH Q:signal, HDEL Q:dead:why
//   PurgeDead           if ZREM Q:dead: HDEL Q:data, HDEL Q:dead:why
//   PruneDeadReasons    HDEL the Q:dead:why fields not in Q:dead
// Q:dead:why is ours (a hash: job ID -> one line, why it died), written by
// Kill, KillRaw and FailInflight in the same script that moves the job to
// Q:dead; curlyq never reads it. Jobs a Go consumer killed have no entry.
// Ack, Retry, Kill, KillRaw and Release act only when the ID is in the consumer's inflight
// set, as in curlyq: a job another process already requeued (orphan
// cleanup, FailInflight) is left alone and Ok is returned.
//
// Time: like curlyq, the client's clock (CLOCK_REALTIME), whole unix
// seconds, passed to the scripts: heartbeats and scheduled times of our
// hosts and of Go hosts compare directly. Hosts sharing a queue need NTP.
//
// Errors: kTransient when Redis is unreachable (see RedisConn: calls fail
// fast during the reconnect backoff) or answers "try later"; kTransient
// "consumer not registered" from AckAndTake; kPermanent for other error
// replies. Not thread-safe; one CurlyQueue per process (it owns its
// connection; a forked child calls conn().Close() on an inherited one).
#ifndef DJINN_COMMON_CURLY_QUEUE_H_
#define DJINN_COMMON_CURLY_QUEUE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/queue.h"
#include "common/redis.h"

namespace djinn {

// curlyq's defaults (consumer.go, ConsumerOpts.withDefaults).
// Consumers heartbeat this often (HeartbeatPollInterval: 1 min, min 15 s).
inline constexpr int64_t kCurlyHeartbeatIntervalSeconds = 60;
// Grace after a missed heartbeat (CustodianConsumerTimeout: 1 min, min 5 s).
inline constexpr int64_t kCurlyConsumerTimeoutSeconds = 60;
// A consumer is an orphan when its last heartbeat is older than this:
// curlyq expires consumers at now - HeartbeatPollInterval -
// CustodianConsumerTimeout. Pass it to RequeueOrphans().
inline constexpr int64_t kCurlyOrphanTimeoutSeconds =
    kCurlyHeartbeatIntervalSeconds + kCurlyConsumerTimeoutSeconds;
// Custodian (orphan requeue): every minute, at most 50 jobs a run (run
// again at once when a run hit the limit).
inline constexpr int64_t kCurlyCustodianPollIntervalSeconds = 60;
inline constexpr int64_t kCurlyCustodianMaxJobs = 50;
// Scheduler (due scheduled -> active): every 5 s, at most 50 jobs a run.
inline constexpr int64_t kCurlySchedulerPollIntervalSeconds = 5;
inline constexpr int64_t kCurlySchedulerMaxJobs = 50;
// How long an idle consumer blocks on Q:signal (PollerPollDuration).
inline constexpr int kCurlyPollDurationMs = 5000;
// Retry backoff cap (JobMaxBackoff: 168 h).
inline constexpr double kCurlyMaxBackoffSeconds = 7 * 24 * 3600;
// curlyq retries while the Attempt it took is < JobMaxAttempts (default
// 20), else kills. Djinn's consumer uses its own `attempts` (default 5).
inline constexpr int64_t kCurlyJobMaxAttempts = 20;

// Q:dead:why values are cut to this many bytes (one line).
inline constexpr size_t kMaxDeadReason = 300;
// "<queue>:dead:why".
std::string DeadReasonKey(const std::string& queue);
// The reason as stored: control characters become spaces, cut to
// kMaxDeadReason bytes (on a UTF-8 boundary), URL passwords redacted.
std::string DeadReason(const std::string& why);

// What `djinn-consumer queue` shows.
struct QueueOverview {
  int64_t active = 0, scheduled = 0, dead = 0;
  std::optional<int64_t> next_due;  // unix seconds of the first scheduled job
  struct Consumer {
    std::string key;          // Q:inflight:<uuid>
    int64_t heartbeat = 0;    // unix seconds
    int64_t inflight = 0;
  };
  std::vector<Consumer> consumers;  // oldest heartbeat first
};

// One entry of Q:dead, newest first.
struct DeadJob {
  std::string id;
  int64_t died_at = 0;      // unix seconds (the Q:dead score)
  bool has_data = false;    // Q:data holds an envelope for it
  std::string envelope;     // raw bytes
  std::string why;          // "" when unknown (killed by a Go consumer)
};

// What RetryDead / PurgeDead did with one ID.
enum class DeadMove { kDone, kNotDead, kNoEnvelope, kBadEnvelope };

class CurlyQueue : public Queue {
 public:
  // name: the queue name ("jobs"). Does not connect; the first call does.
  CurlyQueue(std::string name, RedisOptions options);

  const std::string& name() const { return name_; }
  // The connection: for its state callback, Close() after fork, tests.
  RedisConn& conn() { return conn_; }

  Status Push(const Envelope& env) override;
  Status Register(const std::string& consumer_key) override;
  // block_ms <= 0: never waits. Otherwise, when Q:active is empty, waits
  // up to block_ms for it to become non-empty and then takes. After a call
  // that found nothing, a call without an ack waits first (at once back
  // when a job is there): an idle consumer costs one command per block_ms.
  // The whole call takes at most about block_ms plus two round trips.
  Result<std::optional<RawJob>> AckAndTake(const std::string& consumer_key,
                                           const std::string& ack_id,
                                           int block_ms) override;
  Status Ack(const std::string& consumer_key, const std::string& id) override;
  Status Retry(const std::string& consumer_key, const Envelope& env,
               double delay_seconds) override;
  Status Kill(const std::string& consumer_key, const Envelope& env,
              const std::string& why) override;
  Status Release(const std::string& consumer_key, const std::string& id) override;
  // SREM inflight, ZADD Q:dead <now>; Q:data keeps the original bytes.
  Status KillRaw(const std::string& consumer_key, const std::string& id,
                 const std::string& why) override;
  // kPermanent "... still holds N jobs" (and nothing changed) when the
  // inflight set is not empty.
  Result<int64_t> RecoverInflight(const std::string& consumer_key,
                                  const std::string& keep_id) override;
  Status Unregister(const std::string& consumer_key) override;
  Status Heartbeat(const std::vector<std::string>& consumer_keys) override;
  Result<int64_t> EnqueueDueScheduled(int64_t max) override;
  Result<int64_t> RequeueOrphans(int64_t timeout_seconds, int64_t max) override;
  // Requeued jobs go to the tail of Q:active (RPUSH), like every requeue in
  // curlyq: a job that crashes its worker does not starve the queue, and
  // other jobs run between its attempts. The new envelope is written only
  // if the ID is still in that inflight set (checked atomically). A job
  // with no data or an undecodable envelope goes to Q:dead unchanged
  // (attempt reported as 0), whatever count_attempt says. The consumer is
  // forgotten (ZREM + DEL) only when its inflight set ends up empty;
  // otherwise RequeueOrphans picks up the rest once heartbeats stop.
  Result<std::vector<FailedJob>> FailInflight(const std::string& consumer_key,
                                              int max_attempts,
                                              bool count_attempt,
                                              const std::string& why) override;
  Result<QueueStats> Stats() override;
  Result<std::string> MaxmemoryPolicy() override;

  // --- operator commands (not part of Queue: they act on curlyq's keys) ---
  Result<QueueOverview> Overview();
  // limit <= 0: all of them.
  Result<std::vector<DeadJob>> ListDead(int64_t limit);
  // Every ID in Q:dead, oldest first (for -all).
  Result<std::vector<std::string>> DeadIds();
  // Dead -> tail of Q:active with Attempt 0, atomically; the waiting
  // consumers wake (Q:active non-empty, and Q:signal for later curlyq).
  // An envelope that cannot be decoded cannot have its Attempt reset: it
  // stays dead (kBadEnvelope), as does a job without one (kNoEnvelope).
  Result<DeadMove> RetryDead(const std::string& id);
  // Dead -> gone: Q:dead entry, Q:data envelope and reason.
  Result<DeadMove> PurgeDead(const std::string& id);
  // Removes reasons of jobs no longer dead (moved out by other tools).
  Result<int64_t> PruneDeadReasons();

 private:
  Result<std::optional<RawJob>> TakeOnce(const std::string& consumer_key,
                                         const std::string& ack_id);
  // Blocks until Q:active is not empty (or block_ms), then takes.
  Result<std::optional<RawJob>> WaitAndTake(const std::string& consumer_key, int block_ms);
  Status UnregisterIfEmpty(const std::string& consumer_key, int64_t* left);
  std::string BlockTimeoutArg(int block_ms) const;

  std::string name_;
  std::string active_, consumers_, data_, dead_, scheduled_, signal_, why_;
  RedisConn conn_;
  // The last AckAndTake found nothing: the next one without an ack waits
  // before it takes.
  bool idle_ = false;
  // Redis < 6.2 has no BLMOVE: wait with BRPOPLPUSH (rotates the list).
  bool wait_rotates_ = false;
  // Redis < 6 takes only whole seconds as a blocking timeout.
  bool whole_second_timeouts_ = false;
};

}  // namespace djinn

#endif  // DJINN_COMMON_CURLY_QUEUE_H_
