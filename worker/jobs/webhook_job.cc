// webhook: one delivery of the `images` event to one namespace webhook
// (DESIGN §4b), run by the delivery workers on our queue <queue>_webhooks
// (download_job.cc queues it when a download's row is final).
//
//   1. SELECT payload_url, secret FROM namespace_webhooks WHERE id = $1
//      no row (the hook was deleted): nothing to do.
//   2. An earlier delivery of this event to this hook succeeded (a 2xx row):
//      nothing to do. This keeps a repeated job (a crash after the POST,
//      before the ack) from delivering twice.
//   3. The secret, when not NULL, is decrypted with the key of the config's
//      crypto block; one that does not decrypt is recorded as the
//      delivery's error and no request is sent.
//   4. POST the body with Go's headers (and the signature), through the
//      server-side request forgery guard, TLS verified.
//   5. INSERT one namespace_webhook_deliveries row per attempt, redelivery
//      true after the first, duration in nanoseconds clamped to the INT.
//
// Fates: 2xx -> done; 4xx (any non-5xx answer) -> recorded, final; a
// transport error or 5xx -> recorded and retried with backoff, up to
// webhooks.attempts retries; the database unreachable -> held back (the
// worker's outage handling), nothing recorded yet.
#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "common/log.h"
#include "common/pg.h"
#include "common/webhook.h"
#include "worker/job.h"
#include "worker/webhook_send.h"

namespace djinn {
namespace {

constexpr char kSelectHook[] =
    "SELECT payload_url, secret FROM namespace_webhooks WHERE id = $1::bigint";
constexpr char kDeliveredBefore[] =
    "SELECT 1 FROM namespace_webhook_deliveries WHERE webhook_id = $1::bigint "
    "AND event_id = convert_to($2, 'UTF8') AND response_code BETWEEN 200 AND 299 LIMIT 1";
constexpr char kInsertDelivery[] =
    "INSERT INTO namespace_webhook_deliveries (webhook_id, event_id, event, redelivery, error, "
    "request_headers, request_body, response_code, response_headers, response_body, duration, "
    "created_at) VALUES ($1::bigint, convert_to($2, 'UTF8'), $3::int, $4::boolean, $5, $6, $7, "
    "$8::int, $9, $10, $11::int, now())";

// PostgreSQL text columns take no NUL bytes; a response body may have some.
std::string NoNul(std::string s) {
  std::replace(s.begin(), s.end(), '\0', '?');
  return s;
}

class WebhookJob : public JobHandler {
 public:
  explicit WebhookJob(const Config& config) : config_(config), db_(config.database) {}

  Status Run(const DecodedJob& job, JobContext& ctx) override {
    const auto* args = std::get_if<WebhookArgs>(&job.args);
    if (args == nullptr) return Status::Poison("webhook job without its arguments");
    const std::string hook = std::to_string(args->webhook_id);
    const std::string prefix = "job " + ctx.envelope.id;

    // 1.
    Result<PgResultPtr> row = db_.Exec(kSelectHook, {hook});
    if (!row.ok()) return DatabaseProblem(row.status());
    if (PQntuples(row->get()) == 0) {
      LOG_INFO("%s: webhook %s no longer exists; nothing to deliver", prefix.c_str(), hook.c_str());
      return Status::Ok();
    }
    std::string url = PQgetvalue(row->get(), 0, 0);
    bool has_secret = !PQgetisnull(row->get(), 0, 1);
    std::string sealed;
    if (has_secret) {
      size_t n = 0;
      unsigned char* raw = PQunescapeBytea(
          reinterpret_cast<const unsigned char*>(PQgetvalue(row->get(), 0, 1)), &n);
      if (raw == nullptr) return Status::Transient("webhook " + hook + ": cannot read its secret");
      sealed.assign(reinterpret_cast<const char*>(raw), n);
      PQfreemem(raw);
    }

    // 2.
    Result<PgResultPtr> before = db_.Exec(kDeliveredBefore, {hook, args->event_id});
    if (!before.ok()) return DatabaseProblem(before.status());
    if (PQntuples(before->get()) > 0) {
      LOG_INFO("%s: event %s was delivered to webhook %s already", prefix.c_str(),
               args->event_id.c_str(), hook.c_str());
      return Status::Ok();
    }

    bool redelivery = ctx.envelope.attempt > 0;
    // 3.
    std::string signature;
    if (has_secret) {
      Result<std::string> secret = Secret(sealed);
      Result<std::string> sig = secret.ok() ? WebhookSignature(*secret, args->body)
                                            : Result<std::string>(secret.status());
      if (!sig.ok()) {
        // Recorded as the delivery's error; no request is sent.
        WebhookResponse none;
        none.error = secret.ok() ? Status::Permanent("cannot sign the request: " +
                                                     sig.status().message())
                                 : secret.status();
        if (Status st = Record(*args, redelivery, "", none); !st.ok()) return st;
        return none.error;
      }
      signature = *sig;
    }

    // 4.
    WebhookRequest req;
    req.url = url;
    req.body = args->body;
    req.timeout_seconds = config_.webhooks.timeout;
    req.allow_private = config_.webhooks.allow_private;
    if (!config_.webhooks.ca.empty()) {
      if (ca_bundle_.empty()) {
        // Read once per worker; unreadable is an outage of ours (held back).
        std::ifstream in(config_.webhooks.ca, std::ios::binary);
        std::stringstream text;
        if (in) text << in.rdbuf();
        if (!in || text.str().empty())
          return Status::Unavailable("webhooks.ca: " + config_.webhooks.ca + ": cannot read it");
        ca_bundle_ = text.str();
      }
      req.ca_bundle = ca_bundle_;
    }
    std::string headers_text = WebhookRequestHeaders(args->body.size(), args->webhook_id, signature);
    req.headers = {{"Accept", "*/*"},
                   {"Content-Length", std::to_string(args->body.size())},
                   {"Content-Type", "application/json; charset=utf-8"},
                   {"User-Agent", "Djinn-CI-Hook"},
                   {"X-Djinn-CI-Event", "images"},
                   {"X-Djinn-CI-Hook-ID", hook}};
    if (!signature.empty()) req.headers.push_back({"X-Djinn-Ci-Signature", signature});
    if (ctx.keep_alive) ctx.keep_alive();
    WebhookResponse resp = PostWebhook(req);
    if (ctx.keep_alive) ctx.keep_alive();

    // 5.
    if (Status st = Record(*args, redelivery, headers_text, resp); !st.ok()) return st;
    if (!resp.error.ok()) {
      LOG_WARN("%s: webhook %s: %s", prefix.c_str(), hook.c_str(), resp.error.message().c_str());
      return resp.error;
    }
    if (resp.code >= 200 && resp.code < 300) {
      LOG_DEBUG("%s: event %s delivered to webhook %s (HTTP %d)", prefix.c_str(),
                args->event_id.c_str(), hook.c_str(), resp.code);
      return Status::Ok();
    }
    std::string why = "webhook " + hook + ": HTTP " + std::to_string(resp.code);
    if (resp.code >= 500) return Status::Transient(why);
    return Status::Permanent(why);
  }

 private:
  // The key is derived once per worker (PBKDF2 is slow on purpose).
  Result<std::string> Secret(const std::string& sealed) {
    if (key_.empty()) {
      auto key = DeriveWebhookKey(config_.crypto.block, config_.crypto.salt);
      if (!key.ok()) return key.status();
      key_ = std::move(*key);
    }
    auto secret = DecryptWebhookSecret(key_, sealed);
    if (!secret.ok()) return Status::Permanent("cannot decrypt the webhook secret: " + secret.status().message());
    return secret;
  }

  Status Record(const WebhookArgs& args, bool redelivery, const std::string& request_headers,
                const WebhookResponse& resp) {
    using Param = PgClient::Param;
    Param error, code, headers, body;
    if (!resp.error.ok()) error = resp.error.message();
    if (resp.code > 0) code = std::to_string(resp.code);
    if (!resp.headers.empty()) headers = NoNul(resp.headers);
    if (!resp.body.empty()) body = NoNul(resp.body);
    int64_t duration = std::clamp<int64_t>(resp.duration_ns, 0, INT32_MAX);
    Result<int64_t> n = db_.ExecCount(
        kInsertDelivery,
        {std::to_string(args.webhook_id), args.event_id, std::to_string(kImagesEvent),
         redelivery ? "true" : "false", error,
         request_headers.empty() ? Param() : Param(request_headers), Param(NoNul(args.body)), code,
         headers, body, std::to_string(duration)});
    if (!n.ok()) return DatabaseProblem(n.status());
    return Status::Ok();
  }

  // Unreachable: held back. Anything else (no table, no grant) names the
  // grants, and is retried (counted) rather than lost silently.
  static Status DatabaseProblem(const Status& st) {
    if (st.unavailable()) return st;
    return Status::Transient(st.message() +
                             " (the database role needs SELECT on namespace_webhooks, SELECT and "
                             "INSERT on namespace_webhook_deliveries and USAGE on "
                             "namespace_webhook_deliveries_id_seq)");
  }

  const Config& config_;
  PgClient db_;
  std::string key_;
  std::string ca_bundle_;
};

}  // namespace

std::unique_ptr<JobHandler> NewWebhookJob(const Config& config) {
  return std::make_unique<WebhookJob>(config);
}

}  // namespace djinn
