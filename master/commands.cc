#include "master/commands.h"

#include <signal.h>
#include <time.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/curly_queue.h"
#include "common/envelope.h"
#include "common/exit_codes.h"
#include "common/payload.h"
#include "common/url.h"
#include "master/control.h"

namespace djinn {
namespace {

using nlohmann::json;

constexpr int kCommandTimeoutMs = 5000;

int64_t Now() { return static_cast<int64_t>(time(nullptr)); }

void Error(const std::string& msg) { fprintf(stderr, "djinn-consumer: %s\n", msg.c_str()); }

std::string Dump(const json& j) {
  // Job IDs and payloads come from producers: a stray byte is replaced,
  // never thrown on.
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

// Columns separated by two spaces, each as wide as its widest cell; the
// last one is not padded.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Format() const {
    std::vector<size_t> width;
    for (const auto& r : rows_)
      for (size_t i = 0; i < r.size(); i++) {
        if (width.size() <= i) width.push_back(0);
        width[i] = std::max(width[i], r[i].size());
      }
    std::string out;
    for (const auto& r : rows_) {
      std::string line;
      for (size_t i = 0; i < r.size(); i++) {
        line += r[i];
        if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
      }
      out += line + "\n";
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string Printable(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

std::string LocalTime(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  char buf[32];
  if (!localtime_r(&t, &tm) || strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm) == 0) return "?";
  return buf;
}

std::string UtcTime(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  char buf[32];
  if (!gmtime_r(&t, &tm) || strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) return "";
  return buf;
}

CurlyQueue OpenCommandQueue(const Config& config) {
  return CurlyQueue(config.queue,
                    RedisOptionsFor(config.redis, std::chrono::milliseconds(kCommandTimeoutMs)));
}

// ------------------------------------------------------------------ status

int StatusCommand(const Options& opts, const Config& config) {
  std::string path = ControlSocketPath(config);
  if (path.empty()) {
    Error("status: the master cannot be reached: " + config.path +
          " sets neither control_socket nor pidfile (the socket's path is derived from the "
          "pidfile); set one and restart the daemon");
    return kExitFailure;
  }
  auto doc = ReadControlSocket(path, kCommandTimeoutMs);
  if (!doc.ok()) {
    Error("status: " + doc.status().message());
    return kExitFailure;
  }
  json j = json::parse(*doc, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    Error("status: the master at " + path + " sent an unreadable answer");
    return kExitFailure;
  }
  if (opts.json) {
    fputs(Dump(j).c_str(), stdout);
    return kExitOk;
  }
  try {
    std::string out;
    out += "master      pid " + std::to_string(j.at("pid").get<int64_t>()) + ", up " +
           HumanDuration(j.at("uptime_seconds").get<int64_t>()) + ", generation " +
           std::to_string(j.at("generation").get<int64_t>()) + ", djinn-consumer " +
           j.at("version").get<std::string>() +
           (j.at("stopping").get<bool>() ? ", stopping" : "") + "\n";
    out += "queue       " + Printable(j.at("queue").get<std::string>()) + "\n";
    int64_t downloads = 0, hooks = 0;
    for (const json& w : j.at("workers")) (w.at("kind") == "webhooks" ? hooks : downloads)++;
    out += "workers     " + std::to_string(downloads) + " running, " +
           std::to_string(j.at("desired_workers").get<int64_t>()) + " wanted";
    if (j.value("desired_webhook_workers", 0) > 0 || hooks > 0)
      out += "; webhooks " + std::to_string(hooks) + " running, " +
             std::to_string(j.value("desired_webhook_workers", 0)) + " wanted";
    out += "\n";
    const json& c = j.at("counters");
    out += "since start " + std::to_string(c.at("jobs_done").get<uint64_t>()) + " jobs done, " +
           std::to_string(c.at("workers_started").get<uint64_t>()) + " workers started, " +
           std::to_string(c.at("worker_restarts").get<uint64_t>()) + " died unasked\n\n";
    Table t({"WORKER", "PID", "GEN", "STATE", "JOB", "TYPE", "RUNNING", "DONE", "UP"});
    for (const json& w : j.at("workers")) {
      bool has_job = !w.at("job_id").is_null();
      t.Row({w.at("kind").get<std::string>() + " " + std::to_string(w.at("number").get<int64_t>()),
             std::to_string(w.at("pid").get<int64_t>()),
             std::to_string(w.at("generation").get<int64_t>()), w.at("state").get<std::string>(),
             has_job ? Printable(w.at("job_id").get<std::string>()) : "-",
             has_job ? Printable(w.at("job_type").get<std::string>()) : "-",
             has_job ? HumanDuration(w.at("running_seconds").get<int64_t>()) : "-",
             std::to_string(w.at("jobs_done").get<uint64_t>()),
             HumanDuration(w.at("uptime_seconds").get<int64_t>())});
    }
    fputs((out + t.Format()).c_str(), stdout);
  } catch (const json::exception& e) {
    Error("status: the master at " + path + " sent an unexpected answer: " + e.what());
    return kExitFailure;
  }
  return kExitOk;
}

// ------------------------------------------------------------------- queue

int QueueCommand(const Options& opts, const Config& config) {
  CurlyQueue queue = OpenCommandQueue(config);
  auto o = queue.Overview();
  if (!o.ok()) {
    Error("queue: " + o.status().message());
    return kExitFailure;
  }
  int64_t now = Now();
  auto live = [&](const QueueOverview::Consumer& c) {
    return c.heartbeat > now - config.queue_consumer_timeout;
  };
  if (opts.json) {
    json consumers = json::array();
    for (const auto& c : o->consumers)
      consumers.push_back({{"key", c.key},
                           {"heartbeat", c.heartbeat},
                           {"heartbeat_age_seconds", now - c.heartbeat},
                           {"inflight", c.inflight},
                           {"state", live(c) ? "live" : "orphaned"}});
    json j = {{"queue", config.queue},
              {"redis", config.redis.addr},
              {"active", o->active},
              {"scheduled", o->scheduled},
              {"next_due", o->next_due ? json(*o->next_due) : json(nullptr)},
              {"dead", o->dead},
              {"consumer_timeout_seconds", config.queue_consumer_timeout},
              {"consumers", consumers}};
    fputs(Dump(j).c_str(), stdout);
    return kExitOk;
  }
  std::string out;
  out += "queue       " + Printable(config.queue) + " (redis " + config.redis.addr + ")\n";
  out += "active      " + std::to_string(o->active) + "\n";
  out += "scheduled   " + std::to_string(o->scheduled);
  if (o->next_due) {
    int64_t in = *o->next_due - now;
    out += in > 0 ? " (next due in " + HumanDuration(in) + ")" : " (next due now)";
  }
  out += "\n";
  int64_t inflight = 0;
  for (const auto& c : o->consumers) inflight += c.inflight;
  out += "in flight   " + std::to_string(inflight) + " (" + std::to_string(o->consumers.size()) +
         " consumers)\n";
  out += "dead        " + std::to_string(o->dead) + "\n";
  if (!o->consumers.empty()) {
    Table t({"CONSUMER", "HEARTBEAT", "IN FLIGHT", "STATE"});
    for (const auto& c : o->consumers)
      t.Row({Printable(c.key), HumanDuration(now - c.heartbeat) + " ago", std::to_string(c.inflight),
             live(c) ? "live" : "orphaned"});
    out += "\n" + t.Format();
  }
  fputs(out.c_str(), stdout);
  return kExitOk;
}

// -------------------------------------------------------------------- dead

struct DeadSummary {
  std::optional<int64_t> attempts;
  std::string type = "?";
  std::string summary;
};

DeadSummary Summarize(const DeadJob& d) {
  DeadSummary s;
  if (!d.has_data) {
    s.summary = "no envelope in Q:data";
    return s;
  }
  auto env = DecodeEnvelope(d.envelope);
  if (!env.ok()) {
    s.summary = "undecodable envelope (" + std::to_string(d.envelope.size()) + " bytes)";
    return s;
  }
  s.attempts = env->attempt;
  auto job = DecodePayload(env->data);
  if (!job.ok()) {
    s.summary = "undecodable payload (" + std::to_string(env->data.size()) + " bytes)";
    return s;
  }
  s.type = job->name;
  if (const auto* dl = std::get_if<DownloadArgs>(&job->args)) {
    auto url = ParseUrl(dl->source);
    s.summary = "download " + std::to_string(dl->id) + ", image " + std::to_string(dl->image_id) +
                ", " + (url.ok() ? url->Redacted() : RedactUrl(dl->source));
  } else if (const auto* wh = std::get_if<WebhookArgs>(&job->args)) {
    s.summary = "webhook " + std::to_string(wh->webhook_id) + ", event " + wh->event_id;
  }
  s.summary = Printable(s.summary);
  return s;
}

int DeadCommand(const Options& opts, const Config& config) {
  CurlyQueue queue = OpenCommandQueue(config);
  auto jobs = queue.ListDead(opts.limit);
  if (!jobs.ok()) {
    Error("dead: " + jobs.status().message());
    return kExitFailure;
  }
  auto stats = queue.Stats();
  int64_t total = stats.ok() ? stats->dead : static_cast<int64_t>(jobs->size());
  if (opts.json) {
    json list = json::array();
    for (const auto& d : *jobs) {
      DeadSummary s = Summarize(d);
      list.push_back({{"id", d.id},
                      {"died_at", d.died_at},
                      {"died_at_utc", UtcTime(d.died_at)},
                      {"attempts", s.attempts ? json(*s.attempts) : json(nullptr)},
                      {"type", s.type},
                      {"summary", s.summary},
                      {"why", d.why.empty() ? json(nullptr) : json(d.why)}});
    }
    fputs(Dump({{"queue", config.queue}, {"dead", total}, {"jobs", list}}).c_str(), stdout);
    return kExitOk;
  }
  Table t({"ID", "DIED", "ATTEMPTS", "TYPE", "SUMMARY", "WHY"});
  for (const auto& d : *jobs) {
    DeadSummary s = Summarize(d);
    t.Row({Printable(d.id), LocalTime(d.died_at), s.attempts ? std::to_string(*s.attempts) : "-",
           Printable(s.type), s.summary.empty() ? "-" : s.summary,
           d.why.empty() ? "-" : Printable(d.why)});
  }
  std::string out = t.Format();
  if (static_cast<int64_t>(jobs->size()) < total)
    out += "(" + std::to_string(jobs->size()) + " newest of " + std::to_string(total) +
           " dead jobs; -n 0 lists all)\n";
  fputs(out.c_str(), stdout);
  return kExitOk;
}

// ------------------------------------------------------------ retry, purge

int MoveCommand(const Options& opts, const Config& config, bool retry) {
  const char* verb = retry ? "retry" : "purge";
  CurlyQueue queue = OpenCommandQueue(config);
  std::vector<std::string> ids = opts.ids;
  if (opts.all) {
    auto all = queue.DeadIds();
    if (!all.ok()) {
      Error(std::string(verb) + ": " + all.status().message());
      return kExitFailure;
    }
    ids = std::move(*all);
  }
  size_t done = 0, failed = 0;
  for (const std::string& id : ids) {
    auto r = retry ? queue.RetryDead(id) : queue.PurgeDead(id);
    std::string why;
    if (!r.ok()) why = r.status().message();
    else if (*r == DeadMove::kNotDead) why = "not in the dead set";
    else if (*r == DeadMove::kNoEnvelope) why = "no envelope in Q:data (purge it)";
    else if (*r == DeadMove::kBadEnvelope) why = "its envelope cannot be decoded (purge it)";
    if (why.empty()) {
      done++;
      printf("%s %s\n", retry ? "retried" : "purged", Printable(id).c_str());
    } else {
      failed++;
      Error(std::string(verb) + " " + Printable(id) + ": " + why);
      // Redis gone: the rest would fail the same way.
      if (!r.ok() && r.status().transient()) break;
    }
  }
  // -all also drops reasons left by jobs that other tools took out.
  if (opts.all) (void)queue.PruneDeadReasons();
  printf("%s %zu of %zu job(s)\n", retry ? "retried" : "purged", done, ids.size());
  return failed == 0 ? kExitOk : kExitFailure;
}

}  // namespace

std::string HumanDuration(int64_t s) {
  if (s < 0) s = 0;
  char buf[32];
  if (s < 60) snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600) snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else if (s < 86400) snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
  else snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(s / 86400), static_cast<long long>(s % 86400 / 3600));
  return buf;
}

int RunOperatorCommand(const Options& opts, const Config& config) {
  // hiredis writes with write(2): a server that closed must not kill us.
  signal(SIGPIPE, SIG_IGN);
  if (opts.command == "status") return StatusCommand(opts, config);
  if (opts.command == "queue") return QueueCommand(opts, config);
  if (opts.command == "dead") return DeadCommand(opts, config);
  if (opts.command == "retry") return MoveCommand(opts, config, true);
  if (opts.command == "purge") return MoveCommand(opts, config, false);
  Error("unknown command \"" + opts.command + "\"");
  return kExitUsage;
}

}  // namespace djinn
