#include "common/queue.h"

#include "common/config.h"
#include "common/curly_queue.h"

namespace djinn {

std::unique_ptr<Queue> OpenQueue(const Config& config, int timeout_ms) {
  RedisOptions opts;
  opts.addr = config.redis.addr;
  opts.password = config.redis.password;
  opts.connect_timeout = std::chrono::milliseconds(timeout_ms);
  opts.command_timeout = std::chrono::milliseconds(timeout_ms);
  return std::make_unique<CurlyQueue>(config.queue, opts);
}

}  // namespace djinn
