#include "common/queue.h"

#include "common/config.h"
#include "common/curly_queue.h"

namespace djinn {

std::unique_ptr<Queue> OpenQueue(const Config& config, int timeout_ms, const std::string& name) {
  RedisOptions opts;
  opts.addr = config.redis.addr;
  opts.password = config.redis.password;
  opts.connect_timeout = std::chrono::milliseconds(timeout_ms);
  opts.command_timeout = std::chrono::milliseconds(timeout_ms);
  return std::make_unique<CurlyQueue>(name.empty() ? config.queue : name, opts);
}

std::string WebhookQueueName(const Config& config) { return config.queue + "_webhooks"; }

}  // namespace djinn
