// PgClient: one PostgreSQL connection (libpq) per worker, for the job
// handlers that record their outcome in the Djinn database.
//
// Lazy: nothing happens until the first Exec(), so a worker whose database
// is down starts and runs the jobs that do not need it (ping). Connection
// attempts are spaced by a capped exponential backoff (250 ms doubling to
// 8 s): while it runs, Exec() fails at once with kUnavailable instead of
// waiting on a dead server again, and a failed attempt never crashes or
// blocks the worker for longer than connect_timeout.
//
// Statements are parameterised only (PQexecParams, text parameters, text
// results); callers never splice values into SQL. Exec() re-sends a
// statement once on a fresh connection when the old connection turned out
// to be dead (PostgreSQL restarted since the last job), so every statement
// given to it must be idempotent.
//
// Connection parameters (keyword/value, PQconnectdbParams; the password is
// never concatenated into a conninfo string):
//   host/port from database.addr: "host:port", "[v6]:port", "host" (5432),
//     or a unix socket directory "/run/postgresql" (optionally ":port");
//     or several of these, comma-separated (a primary and its standbys):
//     libpq's multi-host form host=a,b port=p1,p2 with
//     target_session_attrs=read-write, so libpq tries them in order and
//     keeps the first that accepts writes (a standby is skipped with
//     "session is read-only"). One host gets no target_session_attrs (as
//     before): a write to it when it is a standby fails with SQLSTATE
//     25006, which is kUnavailable like any outage;
//   dbname, user, password (when set);
//   with database.tls: sslmode=verify-full, sslrootcert=ca, and sslcert/
//     sslkey when given (client certificate authentication);
//   without: sslmode=disable, as the Go consumer connects. "prefer" would
//     encrypt without verifying anything, which looks safe and is not; an
//     operator who wants TLS configures database.tls and gets verify-full.
//   gssencmode=disable (no Kerberos round trip), connect_timeout,
//   statement_timeout (via options), TCP keepalives and tcp_user_timeout so
//   a vanished server is noticed, application_name=djinn-consumer.
//
// Errors: kUnavailable for anything connection-shaped (cannot connect,
// connection lost, server shutting down, too many connections, statement
// timeout, serialization failure, "cannot execute ... in a read-only
// transaction": the server is a standby now): the database is a dependency
// of ours, never a job's fault; kPermanent for other SQL errors (permission
// denied, undefined table, bad input). Messages are one line and start with
// "database: "; libpq's name the host and port that failed.
//
// Failover: a connection that died (the primary crashed or was stopped) or
// whose server turned read-only is dropped, and the statement is re-sent
// once on a fresh connection, which with several hosts lands on whichever
// accepts writes now. While none does (the standby not promoted yet), Exec
// is kUnavailable and the caller holds the job back. A connection attempt
// blocks up to connect_timeout per host listed (a host that silently drops
// packets costs that much on every attempt; one that refuses costs nothing).
//
// Not thread-safe. Never open one before fork() and use it on both sides.
#ifndef DJINN_COMMON_PG_H_
#define DJINN_COMMON_PG_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/c_handles.h"
#include "common/config.h"
#include "common/job_counters.h"
#include "common/status.h"

namespace djinn {

struct PgOptions {
  int connect_timeout_seconds = 10;
  int statement_timeout_ms = 30000;
  std::chrono::milliseconds backoff_min{250};
  std::chrono::milliseconds backoff_max{8000};
};

// Checks database.addr: one or more comma-separated items (spaces around
// the commas are ignored), each "host", "host:port", "[v6]" or "[v6]:port",
// a bare IPv6 address, or an absolute unix socket directory (optionally
// ":port"). "" when usable, else why not, naming the item:
// `item 2 "db:x": port "x" is not a number from 1 to 65535` (with one item,
// no "item 1").
std::string ValidateDatabaseAddr(const std::string& addr);

class PgClient {
 public:
  // nullopt is SQL NULL.
  using Param = std::optional<std::string>;

  explicit PgClient(DatabaseConfig config, PgOptions options = {});
  PgClient(const PgClient&) = delete;
  PgClient& operator=(const PgClient&) = delete;

  // Runs one statement (connecting first when needed) and returns its
  // result, whose status is PGRES_COMMAND_OK or PGRES_TUPLES_OK.
  Result<PgResultPtr> Exec(const std::string& sql, const std::vector<Param>& params);
  // Exec() for INSERT/UPDATE/DELETE: the number of rows affected.
  Result<int64_t> ExecCount(const std::string& sql, const std::vector<Param>& params);

  bool connected() const;
  // What the last Exec() of any PgClient in this process said about the
  // server: kUp when it answered (an SQL error is an answer), kDown when
  // it was unavailable, kUnknown before the first. The worker publishes
  // it for the master's metrics (dependency up/down). *observations (when
  // given) counts the Exec() calls so far, so a caller can tell a new
  // observation from an old one.
  static Reach LastReach(uint64_t* observations = nullptr);
  // Drops the connection (the next Exec connects again, backoff reset).
  void Close();

  // The keyword/value pairs handed to PQconnectdbParams (exposed for tests).
  static std::vector<std::pair<std::string, std::string>> ConnParams(const DatabaseConfig& config,
                                                                     const PgOptions& options);
  // "host:port/dbname" or "/socket/dir:port/dbname", for messages; with
  // several hosts "host1:port1,host2:port2/dbname".
  static std::string Describe(const DatabaseConfig& config);

 private:
  // The server of the current connection (the one of several hosts that
  // libpq picked), else Describe(config_).
  std::string Server() const;
  Status Connect();
  Result<PgResultPtr> ExecOrReconnect(const std::string& sql, const std::vector<Param>& params);
  Result<PgResultPtr> ExecOnce(const std::string& sql, const std::vector<Param>& params);

  DatabaseConfig config_;
  PgOptions options_;
  PgConnPtr conn_;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_{0};
  std::string last_error_;
  std::string last_server_;  // the server of the last successful connection
};

}  // namespace djinn

#endif  // DJINN_COMMON_PG_H_
