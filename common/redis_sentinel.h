// Redis Sentinel: finding the current master through the sentinels, and
// hearing about failovers.
//
// AskSentinels follows the Redis client guidelines for Sentinel: the
// sentinels are asked in order `SENTINEL get-master-addr-by-name <master>`
// (after AUTH when a sentinel password is set), each with a short timeout;
// the first that answers with an address wins and moves to the front of
// the list, so the next resolution asks it first. RedisConn (common/redis.h)
// calls it on every (re)connect when RedisOptions::sentinels is set, then
// checks with ROLE that the server it reached is a master.
//
// SentinelWatch is the master process's subscription to `+switch-master`
// on one sentinel: it only makes a failover noticed sooner; the errors of a
// demoted or dead master (connection errors, READONLY, UNBLOCKED) already
// make every RedisConn ask the sentinels again.
//
// Messages: "redis sentinel 127.0.0.1:26379: connection refused", and when
// none answered "redis: no sentinel knows master \"mymaster\" (asked 3:
// <each one's error>; ...)". Never a password.
#ifndef DJINN_COMMON_REDIS_SENTINEL_H_
#define DJINN_COMMON_REDIS_SENTINEL_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/c_handles.h"
#include "common/status.h"
#include "common/text.h"  // JoinHostPort

namespace djinn {

struct RedisConfig;
struct RedisOptions;  // common/redis.h (which includes this header)

struct SentinelOptions {
  std::vector<std::string> sentinels;  // "host:port", asked in this order
  std::string master;                  // the monitored master's name
  std::string password;                // AUTH to each sentinel when non-empty
  // Connecting to one sentinel, and each command to it.
  std::chrono::milliseconds timeout{500};
};

// RedisOptions for config.redis: addr and password, or with sentinels the
// sentinel settings (addr unused). timeout bounds connecting and each
// command on the data connection.
RedisOptions RedisOptionsFor(const RedisConfig& config, std::chrono::milliseconds timeout);
// For logs and status: the address, or "master \"mymaster\" via sentinels
// 127.0.0.1:26379, 127.0.0.1:26380".
std::string DescribeRedis(const RedisConfig& config);


// The reply to SENTINEL get-master-addr-by-name: a two-element array
// [ip, port] becomes "ip:port". A nil (the sentinel does not monitor that
// name), an error reply or anything else is kTransient with the reason
// ("does not know master \"x\"", "-ERR ...").
Result<std::string> ParseMasterAddrReply(const redisReply* reply, const std::string& master);
// The first element of a ROLE reply ("master", "slave", "sentinel").
Result<std::string> ParseRoleReply(const redisReply* reply);

// A +switch-master message: "<name> <old-ip> <old-port> <new-ip> <new-port>".
struct SwitchMaster {
  std::string name;
  std::string from;  // "ip:port"
  std::string to;
};
std::optional<SwitchMaster> ParseSwitchMaster(std::string_view payload);
// A pub/sub push ["message", "+switch-master", payload]: the payload.
std::optional<std::string> SwitchMasterPayload(const redisReply* reply);

// Asks options->sentinels in order for options->master's address; the
// first good answer wins ("host:port") and its sentinel moves to the front
// of options->sentinels. kTransient when none answered (the message lists
// each sentinel's error). Blocks up to timeout per sentinel (connect) plus
// timeout per command.
Result<std::string> AskSentinels(SentinelOptions* options);

// The master process's subscription to +switch-master (see top). Not
// thread-safe; owns its connection (close-on-exec).
class SentinelWatch {
 public:
  explicit SentinelWatch(SentinelOptions options);
  SentinelWatch(const SentinelWatch&) = delete;
  SentinelWatch& operator=(const SentinelWatch&) = delete;

  // The subscribed connection's fd for poll(POLLIN); -1 while none.
  int fd() const { return ctx_ ? ctx_->fd : -1; }
  // Call on every turn of the loop (it never blocks when fd() is not
  // readable, but for one connection attempt when one is due: up to the
  // timeout twice). Reads what arrived, reconnects when due (one sentinel
  // per attempt, the next one each time, capped exponential backoff), pings
  // an idle subscription. Returns the failovers of our master seen now.
  // Logs itself: once per outage, and when subscribed again after one.
  std::vector<SwitchMaster> Poll();
  const SentinelOptions& options() const { return options_; }

 private:
  Status Subscribe(const std::string& sentinel);
  void Drop(const std::string& why);

  SentinelOptions options_;
  RedisContextPtr ctx_;
  std::string current_;  // the sentinel subscribed to
  size_t next_ = 0;      // the sentinel to try next
  bool failing_ = false;
  int64_t backoff_ms_ = 0;
  int64_t next_attempt_ms_ = 0;
  int64_t last_rx_ms_ = 0, last_ping_ms_ = 0;
};

}  // namespace djinn

#endif  // DJINN_COMMON_REDIS_SENTINEL_H_
