#include "common/queue.h"

#include "common/config.h"
#include "common/curly_queue.h"
#include "common/redis_sentinel.h"

namespace djinn {

std::unique_ptr<Queue> OpenQueue(const Config& config, int timeout_ms, const std::string& name) {
  RedisOptions opts = RedisOptionsFor(config.redis, std::chrono::milliseconds(timeout_ms));
  return std::make_unique<CurlyQueue>(name.empty() ? config.queue : name, opts);
}

std::string WebhookQueueName(const Config& config) { return config.queue + "_webhooks"; }

}  // namespace djinn
