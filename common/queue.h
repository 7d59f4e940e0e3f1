// The job queue, behind one interface (DESIGN §3).
//
// CurlyQueue (common/curly_queue.h) implements it on Redis with the key
// layout and Lua-script semantics of the Go library curlyq, so Djinn's Go
// producers (and curlyq consumers on other hosts) share the queue with us.
// Another backend (Sentinel, a cluster) implements the same interface.
//
// Not thread-safe; one Queue per process (each worker owns one, the master
// owns one). Every call is bounded in time by the connection's timeouts and
// returns kTransient when Redis is unreachable; the caller reconnects by
// calling again (implementations reconnect lazily, with capped backoff).
#ifndef DJINN_COMMON_QUEUE_H_
#define DJINN_COMMON_QUEUE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/envelope.h"
#include "common/status.h"

namespace djinn {

// A job as taken from Q:data: its ID and its raw (still encoded) envelope.
struct RawJob {
  std::string id;
  std::string envelope;  // msgpack bytes; decode with DecodeEnvelope()
};

struct QueueStats {
  int64_t active = 0, scheduled = 0, dead = 0, data = 0, consumers = 0;
};

// "Q:inflight:<uuid v4>" for a new consumer.
std::string NewConsumerKey(const std::string& queue);

// Backoff before retry number `attempt` (curlyq: (1+rand)*2^attempt/2 s,
// capped at one week). curlyq passes the Attempt of the job as taken, i.e.
// before the +1 written back (first retry: 0.5-1 s). Fork-safe jitter.
double RetryBackoffSeconds(int64_t attempt);

struct Config;
class Queue;
// The queue the configuration names (today: CurlyQueue on config.redis),
// or the queue `name` on the same Redis when given. timeout_ms bounds
// connecting and each command (blocking waits add theirs).
std::unique_ptr<Queue> OpenQueue(const Config& config, int timeout_ms,
                                 const std::string& name = "");
// Our own queue of webhook deliveries, beside Djinn's: "<queue>_webhooks"
// (Go consumers on `jobs` never see a job type they do not know).
std::string WebhookQueueName(const Config& config);

class Queue {
 public:
  virtual ~Queue() = default;

  // --- producer side (tests, bench, demo; Djinn itself uses curlyq) ---
  // HSETNX data, RPUSH active, DEL+LPUSH signal.
  virtual Status Push(const Envelope& env) = 0;

  // --- consumer side (workers) ---
  // ZADD Q:consumers now consumer_key.
  virtual Status Register(const std::string& consumer_key) = 0;
  // Acks ack_id (if non-empty) and takes the next job in one round trip.
  // When the queue is empty it waits up to block_ms for a job to arrive
  // and tries once more; nullopt means still nothing. A consumer that is not
  // registered is refused (kTransient "consumer not registered").
  virtual Result<std::optional<RawJob>> AckAndTake(
      const std::string& consumer_key, const std::string& ack_id,
      int block_ms) = 0;
  virtual Status Ack(const std::string& consumer_key, const std::string& id) = 0;
  // env carries the new Attempt already; it is written back to Q:data and
  // the ID scheduled at now + delay_seconds.
  virtual Status Retry(const std::string& consumer_key, const Envelope& env,
                       double delay_seconds) = 0;
  // Into Q:dead (score now); env (new Attempt) written back to Q:data.
  // why: one line saying why it died, kept in Q:dead:why (our own hash;
  // see DeadReasonKey) for `djinn-consumer dead`; cut to kMaxDeadReason.
  virtual Status Kill(const std::string& consumer_key, const Envelope& env,
                      const std::string& why) = 0;
  // Gives a job back untouched (Attempt as it was) to the head of
  // Q:active: it did not fail, a dependency of ours did (Status
  // kUnavailable), so it should run first once things work again.
  virtual Status Release(const std::string& consumer_key, const std::string& id) = 0;
  // Into Q:dead leaving Q:data untouched: for an envelope that cannot be
  // decoded (its bytes are kept as they are for a human to look at).
  virtual Status KillRaw(const std::string& consumer_key, const std::string& id,
                         const std::string& why) = 0;
  // After a broken connection: a take Redis ran but whose reply was lost
  // left an ID in our inflight set that we do not know we hold. Every ID
  // there but keep_id goes back to the head of Q:active (attempt
  // unchanged: it never ran). Returns how many.
  virtual Result<int64_t> RecoverInflight(const std::string& consumer_key,
                                          const std::string& keep_id) = 0;
  // ZREM consumers + DEL inflight key, only when its inflight set is empty.
  virtual Status Unregister(const std::string& consumer_key) = 0;

  // --- supervisor side (master) ---
  virtual Status Heartbeat(const std::vector<std::string>& consumer_keys) = 0;
  // Moves due Q:scheduled entries to Q:active; returns how many.
  virtual Result<int64_t> EnqueueDueScheduled(int64_t max) = 0;
  // Requeues the in-flight jobs of consumers (any host) whose heartbeat is
  // older than timeout_seconds, and forgets those consumers. Returns the
  // number of jobs requeued.
  virtual Result<int64_t> RequeueOrphans(int64_t timeout_seconds,
                                         int64_t max) = 0;
  // A worker died or was killed while holding jobs: every ID in its
  // inflight set goes back to Q:active at once with Attempt+1, or to Q:dead
  // when its retries are exhausted (RetriesExhausted(env, max_attempts), as
  // a failure in the worker; an undecodable envelope goes to dead).
  // With count_attempt false (the job did not fail: shutdown killed its
  // worker) it goes back to Q:active with its envelope untouched.
  // Then the consumer is forgotten. Returns the IDs handled, with where
  // each went, for the log. why: the reason recorded for a job that goes
  // to Q:dead (as Kill's).
  struct FailedJob {
    std::string id;
    int64_t attempt = 0;  // the new attempt
    bool dead = false;
  };
  virtual Result<std::vector<FailedJob>> FailInflight(
      const std::string& consumer_key, int max_attempts,
      bool count_attempt, const std::string& why) = 0;

  virtual Result<QueueStats> Stats() = 0;
  // CONFIG GET maxmemory-policy ("" when CONFIG is refused).
  virtual Result<std::string> MaxmemoryPolicy() = 0;
};

}  // namespace djinn

#endif  // DJINN_COMMON_QUEUE_H_
