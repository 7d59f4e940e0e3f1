// download_job: fetch a user's QEMU image by URL into the image store and
// record the outcome in image_downloads (DESIGN §4).
//
//   1. UPDATE image_downloads SET started_at = now()
//        WHERE id = $1 AND finished_at IS NULL
//      0 rows: either the row does not exist (logged, acked: nothing to
//      record, nothing to retry) or an earlier delivery of this job already
//      finished it (acked untouched: at-least-once delivery must not undo
//      a recorded outcome or re-download a stored image).
//   2. SELECT user_id, driver, hash FROM images WHERE id = $1
//      no row, or a driver/hash that is not a plain path segment: the error
//      is recorded and the job acked.
//   3. Fetch to <store>/<user_id>/<driver>/<hash>: the worker reserves the
//      .part file, a confined child process does the transfer
//      (worker/fetch_child.h), the worker checks the header again and
//      commits. When another delivery is writing that file right now, wait
//      for it and stop if it finished our row (see Reserve below). A .part
//      kept by an earlier try of the same download (image id and URL) is
//      continued, and a retried failure that is not the last attempt keeps
//      this try's bytes for the next (worker/fetch.h "Resuming").
//   4. UPDATE image_downloads SET error = $2, finished_at = now() WHERE id = $1
//      (error NULL on success).
//   5. With webhooks on (a crypto block): for the image's namespace, each
//      active hook that wants `images` gets a delivery job on our queue
//      <queue>_webhooks, ID "webhook:<download>:<hook>:<finished_at>". The
//      push is HSETNX on that ID, so a repeated delivery of this job (also
//      one finding the row finished already) queues each event once; the
//      delivery workers send it (worker/jobs/webhook_job.cc).
//
// Fates: a failure of the download itself is recorded (4) and the job acked
// (kPermanent). A transient one (timeout, refused connection, HTTP 5xx) is
// returned as kTransient and retried with the row untouched but for
// started_at, except on the job's last attempt, when it is recorded and
// the job acked like a permanent one. Our own dependencies failing (the
// database unreachable, the store unwritable, download.ca unreadable) is
// kUnavailable: nothing is recorded, the job goes back with no attempt
// counted, and the worker holds back until the dependency answers
// (worker/worker.h). Other database errors (permission denied) are
// transient: retried, counted.
//
// Every statement is idempotent, so a PostgreSQL restart in the middle
// (PgClient re-sends once on a fresh connection) or a second delivery of
// the job leaves correct rows.
#include <time.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cinttypes>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/pg.h"
#include "common/queue.h"
#include "common/text.h"
#include "common/url.h"
#include "common/webhook.h"
#include "worker/fetch.h"
#include "worker/fetch_child.h"
#include "worker/job.h"

namespace djinn {
namespace {

// IDs are int64 in the job but serial (int4) in the tables: comparing as
// bigint makes an ID no row can have simply match nothing, instead of
// failing the statement ("out of range for type integer").
constexpr char kMarkStarted[] =
    "UPDATE image_downloads SET started_at = now() WHERE id = $1::bigint AND finished_at IS NULL";
constexpr char kDownloadExists[] = "SELECT 1 FROM image_downloads WHERE id = $1::bigint";
constexpr char kDownloadFinished[] =
    "SELECT finished_at IS NOT NULL FROM image_downloads WHERE id = $1::bigint";
constexpr char kSelectImage[] = "SELECT user_id, driver, hash FROM images WHERE id = $1::bigint";
constexpr char kMarkFinished[] =
    "UPDATE image_downloads SET error = $2, finished_at = now() WHERE id = $1::bigint";
// What the images event needs. created_at in the one text form the body's
// encoder reads, whatever the server's DateStyle.
constexpr char kFinishedAt[] =
    "SELECT finished_at::text FROM image_downloads WHERE id = $1::bigint AND finished_at IS NOT NULL";
constexpr char kImageForEvent[] =
    "SELECT id, user_id, author_id, namespace_id, driver, name, hash, "
    "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS.US') FROM images WHERE id = $1::bigint";
constexpr char kHooksForImages[] =
    "SELECT id FROM namespace_webhooks WHERE namespace_id = $1::bigint AND active "
    "AND (events & 512) <> 0 ORDER BY id";

// How much longer than download.timeout a delivery waits for another one
// writing the same image (its fsync, rename and row update).
constexpr int kBusySlackSeconds = 60;

bool AllDigits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

class DownloadJob : public JobHandler {
 public:
  DownloadJob(const Config& config, bool test_hooks)
      : config_(config), store_(config.store.path), db_(config.database),
        options_(LoadOptions(config)) {
    if (const char* probes = std::getenv("DJINN_CONSUMER_TEST_DOWNLOAD_PROBE");
        test_hooks && probes != nullptr)
      probes_ = probes;
    if (config.crypto.set) {
      hooks_queue_ = OpenQueue(config, 5000, WebhookQueueName(config));
      const char* env = std::getenv("DJINN_API_SERVER");
      api_server_ = !config.webhooks.api_server.empty() ? config.webhooks.api_server
                                                        : std::string(env ? env : "");
    }
    if (!options_.ok())
      LOG_ERROR("download_job: %s; downloads wait (held back, not failed) until this is fixed",
                options_.status().message().c_str());
  }

  Status Run(const DecodedJob& job, JobContext& ctx) override {
    const auto* args = std::get_if<DownloadArgs>(&job.args);
    if (args == nullptr) return Status::Poison("download_job without download arguments");
    const std::string prefix = "job " + ctx.envelope.id;
    const std::string id = std::to_string(args->id);

    // 1.
    Result<int64_t> started = db_.ExecCount(kMarkStarted, {id});
    if (!started.ok()) return DatabaseDown(started.status());
    if (*started == 0) {
      Result<PgResultPtr> exists = db_.Exec(kDownloadExists, {id});
      if (!exists.ok()) return DatabaseDown(exists.status());
      if (PQntuples(exists->get()) == 0)
        return Status::Permanent("image_downloads row " + id + " does not exist; nothing to do");
      LOG_INFO("%s: image download %s finished already (a repeated delivery); nothing to do",
               prefix.c_str(), id.c_str());
      // Its events may not be queued yet (a crash between 4 and 5).
      return QueueEvents(*args, prefix);
    }

    // 2.
    Result<PgResultPtr> image = db_.Exec(kSelectImage, {std::to_string(args->image_id)});
    if (!image.ok()) return DatabaseDown(image.status());
    PGresult* res = image->get();
    if (PQntuples(res) == 0)
      return Finish(
          id, ctx,
          Status::Permanent("image " + std::to_string(args->image_id) + " does not exist"));
    std::string user_id = PQgetvalue(res, 0, 0);
    std::string driver = PQgetvalue(res, 0, 1);
    std::string hash = PQgetvalue(res, 0, 2);
    if (!AllDigits(user_id))
      return Finish(id, ctx,
                    Status::Permanent("image has an unusable user_id \"" + Printable(user_id) + "\""));
    if (!IsSafePathSegment(driver))
      return Finish(
          id, ctx,
          Status::Permanent("image driver \"" + Printable(driver) + "\" is not a safe file name"));
    if (!IsSafePathSegment(hash))
      return Finish(
          id, ctx, Status::Permanent("image hash \"" + Printable(hash) + "\" is not a safe file name"));

    // 3. Options that failed to load (download.ca unreadable) are loaded
    // again: the operator may have fixed the file meanwhile.
    if (!options_.ok()) {
      options_ = LoadOptions(config_);
      if (options_.ok()) LOG_INFO("download_job: download options loaded");
    }
    Status outcome;
    if (!options_.ok()) {
      outcome = options_.status();
    } else {
      FetchTarget target{store_, {user_id, driver}, hash};
      PartFile file;
      // Another uid's .part is waited for as long as another delivery's
      // lock (Reserve below), then taken as abandoned.
      file.SetForeignStaleAfter(options_->timeout_seconds + kBusySlackSeconds / 2);
      bool done_elsewhere = false;
      // The same download (image and URL) continues bytes an earlier try
      // kept; this try keeps its own for the next, if there is one.
      const DownloadIdentity identity{args->image_id, args->source};
      outcome = Reserve(target, identity, id, prefix, ctx, &file, &done_elsewhere);
      if (done_elsewhere) return QueueEvents(*args, prefix);
      file.KeepOnFailure(!ctx.last_attempt);
      if (outcome.ok() && file.resume_from() > 0) {
        LOG_INFO("%s: resuming %s at byte %" PRIu64 " (%s)", prefix.c_str(), file.path().c_str(),
                 file.resume_from(), file.resume_validator().Describe().c_str());
      } else if (outcome.ok() && !file.resume_note().empty()) {
        LOG_INFO("%s: not resuming the partial %s (%s); downloading from byte 0", prefix.c_str(),
                 file.path().c_str(), file.resume_note().c_str());
      }
      if (outcome.ok()) {
        FetchHooks hooks;
        hooks.log_prefix = prefix;
        hooks.set_progress = ctx.set_progress;
        hooks.keep_alive = ctx.keep_alive;
        FetchOptions options = *options_;
        options.tcp_ports = DownloadPorts(args->source);
        ConfineOptions confine;
        confine.secrets = ConfigSecrets(config_);
        confine.in_child = ctx.in_child;
#if !defined(__SANITIZE_ADDRESS__)
        confine.address_space_headroom = kDownloadAddressHeadroom;
#endif
        confine.probe = ProbeFor(id);
        Result<FetchResult> got = FetchConfined(args->source, &file, options, hooks, confine);
        if (got.ok()) {
          // This try's own bytes: a resumed download counts the rest only.
          const uint64_t fetched = got->bytes - std::min(got->bytes, got->resumed_from);
          double mib_s =
              got->seconds > 0 ? static_cast<double>(fetched) / got->seconds / (1 << 20) : 0;
          std::string resumed;
          if (got->resumed_from > 0)
            resumed = ", resumed at byte " + std::to_string(got->resumed_from) + ": " +
                      std::to_string(fetched) + " bytes fetched";
          LOG_INFO("%s: image download %s: %" PRIu64 " bytes in %.1f s (%.1f MiB/s%s) to %s",
                   prefix.c_str(), id.c_str(), got->bytes, got->seconds, mib_s, resumed.c_str(),
                   got->path.c_str());
          if (ctx.count_bytes) ctx.count_bytes(fetched);
        }
        outcome = got.status();
      }
    }
    if (outcome.unavailable()) return outcome;  // ours: nothing to record
    if (outcome.transient() && !ctx.last_attempt) return outcome;
    // 4.
    Status finished = Finish(id, ctx, outcome);
    if (finished.unavailable()) return finished;
    // 5. An event not queued (Redis down) makes the job go back: its next
    // delivery finds the row finished and queues the events then.
    if (Status queued = QueueEvents(*args, prefix); !queued.ok()) return queued;
    return finished;
  }

 private:
  // Reserves the image's .part file. While another delivery of the same
  // image holds it (an orphan requeue while the first worker still runs),
  // waits for that one, looking at our row every second: when it got
  // finished there is nothing left to do (*done_elsewhere). When the other
  // one lets go without finishing our row (it failed, or served another
  // row), this delivery goes on and downloads itself. Waiting is bounded
  // by what the other transfer may take.
  Status Reserve(const FetchTarget& target, const DownloadIdentity& identity,
                 const std::string& id, const std::string& prefix,
                 JobContext& ctx, PartFile* file, bool* done_elsewhere) {
    using Clock = std::chrono::steady_clock;
    auto deadline =
        Clock::now() + std::chrono::seconds(options_->timeout_seconds + kBusySlackSeconds);
    bool busy = false;
    Status st = file->Reserve(target, &busy, &identity);
    if (busy) {
      LOG_INFO("%s: %s; waiting for it", prefix.c_str(), st.message().c_str());
      if (ctx.set_progress) ctx.set_progress("waiting");
    }
    while (busy) {
      if (Clock::now() >= deadline) return st.Wrap("still busy after waiting");
      struct timespec second = {1, 0};
      nanosleep(&second, nullptr);
      Result<PgResultPtr> row = db_.Exec(kDownloadFinished, {id});
      if (!row.ok()) return DatabaseDown(row.status());
      if (PQntuples(row->get()) > 0 && std::string(PQgetvalue(row->get(), 0, 0)) == "t") {
        LOG_INFO("%s: image download %s was finished by another delivery; nothing to do",
                 prefix.c_str(), id.c_str());
        *done_elsewhere = true;
        return Status::Ok();
      }
      st = file->Reserve(target, &busy, &identity);
    }
    return st;
  }

  // Records the outcome; returns what the worker should do with the job.
  Status Finish(const std::string& id, const JobContext& ctx, const Status& outcome) {
    PgClient::Param error;
    if (!outcome.ok()) error = outcome.message();
    Result<int64_t> n = db_.ExecCount(kMarkFinished, {id, error});
    if (!n.ok()) {
      if (!outcome.ok())
        LOG_WARN("job %s: could not record \"%s\"", ctx.envelope.id.c_str(),
                 outcome.message().c_str());
      return DatabaseDown(n.status());
    }
    if (outcome.ok()) return Status::Ok();
    // Transient on the last attempt: recorded, so the job is done.
    return Status::Permanent(outcome.message());
  }

  // 5. Queues one delivery job per matching hook. Ok when webhooks are off,
  // the image has no namespace, or the hooks cannot be read for another
  // reason than an outage (logged: downloads go on without events).
  Status QueueEvents(const DownloadArgs& args, const std::string& prefix) {
    if (!hooks_queue_) return Status::Ok();
    const std::string id = std::to_string(args.id);
    Result<PgResultPtr> fin = db_.Exec(kFinishedAt, {id});
    if (!fin.ok()) return DatabaseDown(fin.status());
    if (PQntuples(fin->get()) == 0) return Status::Ok();
    std::string finished_at = PQgetvalue(fin->get(), 0, 0);
    Result<PgResultPtr> img = db_.Exec(kImageForEvent, {std::to_string(args.image_id)});
    if (!img.ok()) return DatabaseDown(img.status());
    PGresult* r = img->get();
    if (PQntuples(r) == 0 || PQgetisnull(r, 0, 3)) return Status::Ok();  // no namespace: no hooks
    ImageRow image;
    image.id = std::strtoll(PQgetvalue(r, 0, 0), nullptr, 10);
    image.user_id = std::strtoll(PQgetvalue(r, 0, 1), nullptr, 10);
    image.author_id = std::strtoll(PQgetvalue(r, 0, 2), nullptr, 10);
    image.namespace_id = std::strtoll(PQgetvalue(r, 0, 3), nullptr, 10);
    image.driver = PQgetvalue(r, 0, 4);
    image.name = PQgetvalue(r, 0, 5);
    image.hash = PQgetvalue(r, 0, 6);
    image.created_at = PQgetvalue(r, 0, 7);
    Result<PgResultPtr> hooks = db_.Exec(kHooksForImages, {std::to_string(*image.namespace_id)});
    if (!hooks.ok()) {
      if (hooks.status().unavailable()) return hooks.status();
      LOG_ERROR("%s: webhooks: %s (the database role needs SELECT on namespace_webhooks, "
                "SELECT and INSERT on namespace_webhook_deliveries and USAGE on "
                "namespace_webhook_deliveries_id_seq); no images event sent",
                prefix.c_str(), hooks.status().message().c_str());
      return Status::Ok();
    }
    if (PQntuples(hooks->get()) == 0) return Status::Ok();
    Result<std::string> body = ImageEventBody(image, api_server_);
    if (!body.ok()) {
      LOG_ERROR("%s: webhooks: %s; no images event sent", prefix.c_str(),
                body.status().message().c_str());
      return Status::Ok();
    }
    std::string event_id = WebhookEventId(args.id, finished_at);
    for (int i = 0; i < PQntuples(hooks->get()); i++) {
      std::string hook = PQgetvalue(hooks->get(), i, 0);
      Envelope env;
      env.id = "webhook:" + id + ":" + hook + ":" + finished_at;
      env.data = nlohmann::json{{"job", "webhook"},
                                {"webhook_id", std::strtoll(hook.c_str(), nullptr, 10)},
                                {"event_id", event_id},
                                {"body", *body}}
                     .dump();
      if (Status st = hooks_queue_->Push(env); !st.ok())
        return Status::Unavailable("queueing the images event for webhook " + hook + ": " +
                                   st.message());
      LOG_DEBUG("%s: images event %s queued for webhook %s", prefix.c_str(), event_id.c_str(),
                hook.c_str());
    }
    return Status::Ok();
  }

  // The handler is made in the worker after fork and after the sandbox, so
  // curl (and OpenSSL under it) is initialised per worker process, and the
  // CA bundle is read once per worker.
  static Result<FetchOptions> LoadOptions(const Config& config) {
    if (Status st = InitFetch(); !st.ok()) return st;
    return FetchOptionsFromConfig(config);
  }

  // The test suite's probe for download `id`: "ID=probe;ID=probe..."
  std::string ProbeFor(const std::string& id) const {
    size_t at = 0;
    while (at < probes_.size()) {
      size_t end = probes_.find(';', at);
      if (end == std::string::npos) end = probes_.size();
      std::string item = probes_.substr(at, end - at);
      size_t eq = item.find('=');
      if (eq != std::string::npos && item.substr(0, eq) == id) return item.substr(eq + 1);
      at = end + 1;
    }
    return "";
  }

  static Status DatabaseDown(const Status& st) {
    // Never the user's fault, and nothing can be recorded: unreachable is
    // an outage (kUnavailable); another error (permission denied) retries.
    return st.unavailable() ? st : Status::Transient(st.message());
  }

  const Config& config_;
  std::unique_ptr<Queue> hooks_queue_;  // null: webhooks off
  std::string api_server_;
  std::string store_;
  PgClient db_;
  Result<FetchOptions> options_;
  std::string probes_;  // test hook; see ProbeFor
};

}  // namespace

std::unique_ptr<JobHandler> NewDownloadJob(const Config& config, bool test_hooks) {
  return std::make_unique<DownloadJob>(config, test_hooks);
}

}  // namespace djinn
