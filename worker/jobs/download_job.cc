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
//   3. Fetch (worker/fetch.h) to <store>/<user_id>/<driver>/<hash>. When
//      another delivery is writing that file right now, wait for it and
//      stop if it finished our row (see Reserve below).
//   4. UPDATE image_downloads SET error = $2, finished_at = now() WHERE id = $1
//      (error NULL on success).
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

#include <cctype>
#include <chrono>
#include <cinttypes>
#include <optional>
#include <string>

#include "common/log.h"
#include "common/pg.h"
#include "common/url.h"
#include "worker/fetch.h"
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

// How much longer than download.timeout a delivery waits for another one
// writing the same image (its fsync, rename and row update).
constexpr int kBusySlackSeconds = 60;

bool AllDigits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// A value from the database shown in an error message: bounded, one line.
std::string Shown(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 100))
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  return out;
}

class DownloadJob : public JobHandler {
 public:
  explicit DownloadJob(const Config& config)
      : config_(config), store_(config.store.path), db_(config.database),
        options_(LoadOptions(config)) {
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
      return Status::Ok();
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
                    Status::Permanent("image has an unusable user_id \"" + Shown(user_id) + "\""));
    if (!IsSafePathSegment(driver))
      return Finish(
          id, ctx,
          Status::Permanent("image driver \"" + Shown(driver) + "\" is not a safe file name"));
    if (!IsSafePathSegment(hash))
      return Finish(
          id, ctx, Status::Permanent("image hash \"" + Shown(hash) + "\" is not a safe file name"));

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
      bool done_elsewhere = false;
      outcome = Reserve(target, id, prefix, ctx, &file, &done_elsewhere);
      if (done_elsewhere) return Status::Ok();
      if (outcome.ok()) {
        FetchHooks hooks{prefix, ctx.set_progress, ctx.keep_alive};
        Result<FetchResult> got = Fetch(args->source, &file, *options_, hooks);
        if (got.ok()) {
          double mib_s =
              got->seconds > 0 ? static_cast<double>(got->bytes) / got->seconds / (1 << 20) : 0;
          LOG_INFO("%s: image download %s: %" PRIu64 " bytes in %.1f s (%.1f MiB/s) to %s",
                   prefix.c_str(), id.c_str(), got->bytes, got->seconds, mib_s, got->path.c_str());
        }
        outcome = got.status();
      }
    }
    if (outcome.unavailable()) return outcome;  // ours: nothing to record
    if (outcome.transient() && !ctx.last_attempt) return outcome;
    // 4.
    return Finish(id, ctx, outcome);
  }

 private:
  // Reserves the image's .part file. While another delivery of the same
  // image holds it (an orphan requeue while the first worker still runs),
  // waits for that one, looking at our row every second: when it got
  // finished there is nothing left to do (*done_elsewhere). When the other
  // one lets go without finishing our row (it failed, or served another
  // row), this delivery goes on and downloads itself. Waiting is bounded
  // by what the other transfer may take.
  Status Reserve(const FetchTarget& target, const std::string& id, const std::string& prefix,
                 JobContext& ctx, PartFile* file, bool* done_elsewhere) {
    using Clock = std::chrono::steady_clock;
    auto deadline =
        Clock::now() + std::chrono::seconds(options_->timeout_seconds + kBusySlackSeconds);
    bool busy = false;
    Status st = file->Reserve(target, &busy);
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
      st = file->Reserve(target, &busy);
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

  // The handler is made in the worker after fork and after the sandbox, so
  // curl (and OpenSSL under it) is initialised per worker process, and the
  // CA bundle is read once per worker.
  static Result<FetchOptions> LoadOptions(const Config& config) {
    if (Status st = InitFetch(); !st.ok()) return st;
    return FetchOptionsFromConfig(config);
  }

  static Status DatabaseDown(const Status& st) {
    // Never the user's fault, and nothing can be recorded: unreachable is
    // an outage (kUnavailable); another error (permission denied) retries.
    return st.unavailable() ? st : Status::Transient(st.message());
  }

  const Config& config_;
  std::string store_;
  PgClient db_;
  Result<FetchOptions> options_;
};

}  // namespace

std::unique_ptr<JobHandler> NewDownloadJob(const Config& config) {
  return std::make_unique<DownloadJob>(config);
}

}  // namespace djinn
