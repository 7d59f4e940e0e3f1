// A tiny synchronous Redis client for tests (hiredis): what a producer
// such as Djinn's Go server writes, and inspection of the queue's keys.
#ifndef DJINN_TESTS_HARNESS_REDIS_CLIENT_H_
#define DJINN_TESTS_HARNESS_REDIS_CLIENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/c_handles.h"

namespace djinn::testing {

class RedisClient {
 public:
  explicit RedisClient(int port);
  // Runs one command; aborts the test on a connection error. Returns the
  // reply (may be an error reply: check type).
  RedisReplyPtr Cmd(const std::vector<std::string>& args);
  int64_t Int(const std::vector<std::string>& args);
  std::string Str(const std::vector<std::string>& args);  // "" for nil
  std::vector<std::string> List(const std::vector<std::string>& args);
  // Pushes a job exactly as curlyq's Go producer after v0.4.0 does:
  // HSETNX Q:data, RPUSH Q:active, DEL + LPUSH Q:signal.
  void PushLikeCurlyq(const std::string& queue, const std::string& id,
                      const std::string& envelope);
  // Pushes a job exactly as curlyq v0.4.0 (the Djinn server's) does:
  // HSETNX Q:data, RPUSH Q:active, nothing else.
  void PushLikeCurlyqV040(const std::string& queue, const std::string& id,
                          const std::string& envelope);
  // Pushes many jobs in one pipeline (same commands as above; signal false:
  // as v0.4.0, no Q:signal).
  void PushManyLikeCurlyq(const std::string& queue,
                          const std::vector<std::pair<std::string, std::string>>& jobs,
                          bool signal = true);

 private:
  int port_;
  RedisContextPtr ctx_;
};

// A curlyq envelope (common/envelope.h) around a JSON payload.
std::string JsonJobEnvelope(const std::string& id, const std::string& json, int64_t attempt = 0);

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_REDIS_CLIENT_H_
