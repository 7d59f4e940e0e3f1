// A private PostgreSQL server for integration tests: its own cluster in a temp
// dir (on /dev/shm when that is a roomy tmpfs: initdb and copies are 5-10x
// faster there), listening on 127.0.0.1:<free port> and on a unix socket in
// that dir, tuned for speed (fsync off, small buffers). PostgreSQL refuses
// to run as root, so under root it runs as UnprivilegedUser(). A second
// server can be made a streaming replica of a first (StartReplicaOf) and
// promoted (Promote), for failover tests.
#ifndef DJINN_TESTS_HARNESS_POSTGRES_H_
#define DJINN_TESTS_HARNESS_POSTGRES_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/harness/harness.h"

namespace djinn::testing {

inline constexpr char kDjinnDatabase[] = "djinn";
inline constexpr char kConsumerRole[] = "djinn_consumer";

class PgScratchDir;  // a TempDir on /dev/shm when possible (postgres.cc)

class PostgresServer {
 public:
  PostgresServer();
  ~PostgresServer();  // stops the server; the temp dir goes with it
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // Before the first Start: ssl=on with these files (copied into the
  // cluster; the CA also verifies client certificates when one is sent).
  void EnableTls(const std::string& ca_cert, const std::string& server_cert,
                 const std::string& server_key);

  // Before the first Start: listen on addr too (an address of a test's
  // private network namespace), and take the consumer role's password from
  // clients in clients_cidr ("198.18.0.0/24"). host() stays 127.0.0.1.
  void ListenAlso(const std::string& addr, const std::string& clients_cidr);

  // The first Start makes the cluster: a copy of a template cluster that
  // initdb builds once per test process (~0.6-1.2 s on tmpfs), then
  // ~0.1-0.25 s per server. Later Starts reuse port and data. port() is
  // final after the first successful Start (it may change once if the free
  // port was taken meanwhile). Use as ASSERT_TRUE(pg.Start()).
  [[nodiscard]] ::testing::AssertionResult Start();
  // Fast shutdown (SIGINT: sessions are cut, data kept), SIGKILL after 10 s.
  void Stop();
  // SIGKILL to the whole server (a crash); Start recovers from the WAL.
  void Kill();
  // Immediate shutdown (SIGQUIT, as pg_ctl stop -m immediate: sessions cut
  // at once, no checkpoint), SIGKILL after 10 s.
  void StopImmediate();

  // Instead of the first Start: makes this server a hot standby streaming
  // from `primary` (running): pg_basebackup -R -X stream over primary's
  // socket into this server's own temp dir, then starts it on its own port
  // and socket. It takes the primary's database and consumer role. With
  // `synchronous`, the primary then waits for this standby on every commit
  // (synchronous_standby_names = '*', synchronous_commit = on), so whatever
  // a client saw committed survives the primary's death. ~0.3-1 s.
  [[nodiscard]] ::testing::AssertionResult StartReplicaOf(PostgresServer& primary,
                                                          bool synchronous = true);
  // Ends recovery (SELECT pg_promote(), waiting for it): from then on it is
  // a primary that accepts writes.
  [[nodiscard]] ::testing::AssertionResult Promote();
  [[nodiscard]] ::testing::AssertionResult Restart();
  bool Running();

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1"; }
  std::string addr() const { return host() + ":" + std::to_string(port_); }
  const std::string& socket_dir() const;
  std::string log_path() const;

  // SQL as the superuser "postgres" over the unix socket, in database(): the
  // default "postgres" until CreateDjinnSchema, then "djinn". Several
  // statements may be given at once (one implicit transaction). On success
  // *out gets the last result as text, rows split by '\n', columns by '|',
  // NULL as empty; on failure the error message. Never fails the test.
  bool Exec(const std::string& sql, std::string* out = nullptr);
  bool ExecIn(const std::string& db, const std::string& sql, std::string* out = nullptr);
  // The same as the consumer role, over TCP with its password.
  bool ExecAsConsumer(const std::string& sql, std::string* out = nullptr);
  // The first column of the first row ("" when none); an error is a test
  // failure (ADD_FAILURE naming the SQL).
  std::string Query1(const std::string& sql);

  // After CreateDjinnSchema: table finish_log gets a row (download_id,
  // server_port, at) for every write of a finished image_downloads row,
  // whoever makes it (a trigger running as its owner). A row finished
  // twice, or on another server (a failover), shows there.
  bool CreateFinishAudit(std::string* out = nullptr);
  // From finish_log: "id xN, ..." for every row not finished exactly once
  // among those logged ("" when each was finished once).
  std::string FinishedMoreThanOnce();

  // Database "djinn" with the Djinn tables of DESIGN §4 and the login role
  // djinn_consumer (password consumer_password()) holding only CONNECT,
  // USAGE on public, SELECT on images, SELECT+UPDATE on image_downloads.
  [[nodiscard]] ::testing::AssertionResult CreateDjinnSchema();
  const std::string& database() const { return database_; }
  const std::string& consumer_user() const { return consumer_user_; }
  const std::string& consumer_password() const { return consumer_password_; }
  // libpq keyword/value string for the consumer role over TCP.
  std::string ConsumerConnInfo() const;

  // Rows for a test (in database()). id 0 = next serial value. Return the
  // row id, or 0 after an ADD_FAILURE.
  int AddImage(int user_id, const std::string& driver, const std::string& hash,
               const std::string& name = "image", int id = 0);
  int AddDownload(int image_id, const std::string& source, int id = 0);
  struct DownloadRow {
    bool exists = false;
    bool started = false;    // started_at set
    bool finished = false;   // finished_at set
    bool has_error = false;  // error not NULL
    std::string error;
  };
  DownloadRow Download(int id);

  // The bin dir of the newest /usr/lib/postgresql/<v>/bin ($DJINN_PG_BIN wins).
  static std::string BinDir();

 private:
  bool Query(const std::string& conninfo, const std::string& sql,
             const std::vector<std::string>& params, std::vector<std::vector<std::string>>* rows,
             std::vector<std::vector<bool>>* nulls, std::string* error);
  std::string SuperuserConnInfo(const std::string& db) const;
  ::testing::AssertionResult Initialize();

  int port_;
  std::unique_ptr<PgScratchDir> dir_;
  Process proc_;
  bool initialized_ = false;
  bool started_once_ = false;  // the port is fixed from then on
  std::string tls_ca_, tls_cert_, tls_key_;
  std::string listen_ = "127.0.0.1";  // listen_addresses
  std::string extra_hba_;             // pg_hba.conf lines of ListenAlso
  std::string database_ = "postgres";
  std::string consumer_user_ = kConsumerRole;
  std::string consumer_password_;
};

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_POSTGRES_H_
