#include "tests/harness/postgres.h"

#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>

#include "common/c_handles.h"

namespace djinn::testing {

namespace fs = std::filesystem;

namespace {

// libpq keyword/value quoting: '...' with \ and ' escaped.
std::string Quote(const std::string& v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  return out + "'";
}

void ReplaceAll(std::string* s, const std::string& from, const std::string& to) {
  for (size_t at = s->find(from); at != std::string::npos; at = s->find(from, at + to.size())) {
    s->replace(at, from.size(), to);
  }
}

std::string RandomHex(size_t n) {
  std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) out += hex[rd() % 16];
  return out;
}

// Who runs initdb and postgres: UnprivilegedUser() under root, else nobody
// to switch to (nullptr: ourselves).
const TestUser* ServerUser() { return geteuid() == 0 ? &UnprivilegedUser() : nullptr; }

bool ChownTree(const std::string& path, const TestUser* user) {
  if (user == nullptr) return true;
  if (lchown(path.c_str(), user->uid, user->gid) != 0) return false;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(path, ec)) {
    if (lchown(e.path().c_str(), user->uid, user->gid) != 0) return false;
  }
  return !ec;
}

}  // namespace

// PostgreSQL's data lives on /dev/shm when that is a tmpfs with room
// (cluster set-up and copies are 5-10x faster there), else in $TMPDIR.
class PgScratchDir : public TempDir {
 public:
  explicit PgScratchDir(const std::string& prefix) : TempDir(prefix, Parent()) {}

 private:
  static std::string Parent() {
    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) == 0 && access("/dev/shm", W_OK) == 0 &&
        static_cast<unsigned long long>(vfs.f_bavail) * vfs.f_frsize > (1ULL << 30))
      return "/dev/shm";
    return "";
  }
};

namespace {

// initdb is the slow part (~0.5 s on tmpfs, 1.5-3 s on disk), so it runs
// once per test process into a template cluster; each server starts from a
// copy (cp -a, ~0.05 s on tmpfs).
struct Template {
  PgScratchDir dir{"djinn-pg-template"};
  std::string error;  // why initdb failed, if it did

  std::string data() const { return dir.Sub("data"); }

  Template() {
    const TestUser* user = ServerUser();
    if (!ChownTree(dir.path(), user)) {
      error = "cannot chown " + dir.path() + " to " + user->name;
      return;
    }
    std::string log = dir.Sub("initdb.log");
    Process p;
    // cwd of the child is ours; initdb as another user must not need it.
    if (!p.Start(
            {PostgresServer::BinDir() + "/initdb", "-D", data(), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions", "--wal-segsize=1"},
            log, {"LC_ALL=C", "LANG=C"}, user)) {
      error = "cannot fork initdb";
      return;
    }
    int st = p.Wait(std::chrono::minutes(2));
    if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      error = "initdb failed (status " + std::to_string(st) + "): " + ReadFile(log);
    }
  }
};

const Template& SharedTemplate() {
  static Template t;
  return t;
}

}  // namespace

std::string PostgresServer::BinDir() {
  const char* env = std::getenv("DJINN_PG_BIN");
  if (env && *env) return env;
  std::string best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    std::string name = e.path().filename().string();
    int v = std::atoi(name.c_str());
    if (v > best_version && fs::exists(e.path() / "bin" / "postgres", ec)) {
      best_version = v;
      best = (e.path() / "bin").string();
    }
  }
  return best.empty() ? "/usr/lib/postgresql/15/bin" : best;
}

PostgresServer::PostgresServer()
    : port_(FreePort()),
      dir_(std::make_unique<PgScratchDir>("djinn-pg")),
      consumer_password_("pw-" + RandomHex(16)) {}

PostgresServer::~PostgresServer() { Stop(); }

const std::string& PostgresServer::socket_dir() const { return dir_->path(); }

std::string PostgresServer::log_path() const { return dir_->Sub("postgres.log"); }

void PostgresServer::ListenAlso(const std::string& addr, const std::string& clients_cidr) {
  listen_ += "," + addr;
  extra_hba_ += "host all all " + clients_cidr + " scram-sha-256\n";
}

void PostgresServer::EnableTls(const std::string& ca_cert, const std::string& server_cert,
                               const std::string& server_key) {
  tls_ca_ = ca_cert;
  tls_cert_ = server_cert;
  tls_key_ = server_key;
}

::testing::AssertionResult PostgresServer::Initialize() {
  const Template& tmpl = SharedTemplate();
  if (!tmpl.error.empty()) return ::testing::AssertionFailure() << tmpl.error;
  std::string data = dir_->Sub("data");
  std::string out;
  if (Run({"cp", "-a", tmpl.data(), data}, &out) != 0) {
    return ::testing::AssertionFailure() << "cannot copy the template cluster: " << out;
  }
  std::ofstream conf(data + "/postgresql.conf", std::ios::app);
  conf << "\n# djinn test harness\n"
       << "listen_addresses = '" << listen_ << "'\n"
       << "unix_socket_directories = '" << dir_->path() << "'\n"
       << "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
       << "shared_buffers = 16MB\nmax_connections = 60\nautovacuum = off\n"
       << "password_encryption = 'scram-sha-256'\n"
       << "log_min_messages = warning\nlog_line_prefix = '%m [%p] '\n";
  if (!tls_cert_.empty()) {
    // The key must be owned by the server's user with mode 0600.
    for (const auto& [from, to] : {std::pair{tls_ca_, "ca.pem"}, std::pair{tls_cert_, "server.pem"},
                                   std::pair{tls_key_, "server.key"}}) {
      if (from.empty()) continue;
      WriteFile(data + "/" + to, ReadFile(from), 0600);
    }
    conf << "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n";
    if (!tls_ca_.empty()) conf << "ssl_ca_file = 'ca.pem'\n";
  }
  conf.close();
  WriteFile(data + "/pg_hba.conf",
            "# djinn test harness: superuser over the socket, passwords over TCP\n"
            "local all all trust\n"
            "local replication all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n" +
                extra_hba_,
            0600);
  if (!conf || !ChownTree(dir_->path(), ServerUser())) {
    return ::testing::AssertionFailure() << "cannot prepare " << dir_->path();
  }
  initialized_ = true;
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult PostgresServer::Start() {
  if (Running()) return ::testing::AssertionSuccess();
  if (!initialized_) {
    auto r = Initialize();
    if (!r) return r;
  }
  // A FreePort() can be taken by someone else before postgres binds it: on
  // the first start only (later ones must keep the port), try another.
  for (int attempt = 0;; ++attempt) {
    size_t log_start = ReadFile(log_path()).size();
    if (!proc_.Start({BinDir() + "/postgres", "-D", dir_->Sub("data"), "-p", std::to_string(port_)},
                     log_path(), {"LC_ALL=C", "LANG=C"}, ServerUser())) {
      return ::testing::AssertionFailure() << "cannot fork postgres";
    }
    std::string info = SuperuserConnInfo("postgres") + " connect_timeout=2";
    bool up = WaitFor([&] { return !proc_.Running() || PQping(info.c_str()) == PQPING_OK; },
                      std::chrono::seconds(30));
    if (up && proc_.Running()) break;
    proc_.Stop(std::chrono::milliseconds(0));
    std::string log = ReadFile(log_path()).substr(log_start);
    if (!started_once_ && attempt < 3 && log.find("Address already in use") != std::string::npos) {
      port_ = FreePort();
      continue;
    }
    return ::testing::AssertionFailure()
           << "postgres on port " << port_ << " did not start: " << log;
  }
  started_once_ = true;
  return ::testing::AssertionSuccess();
}

void PostgresServer::Stop() {
  if (proc_.Signal(SIGINT)) proc_.Wait(std::chrono::seconds(10));
  proc_.Stop(std::chrono::milliseconds(0));
}

void PostgresServer::Kill() { proc_.Stop(std::chrono::milliseconds(0)); }

void PostgresServer::StopImmediate() {
  if (proc_.Signal(SIGQUIT)) proc_.Wait(std::chrono::seconds(10));
  proc_.Stop(std::chrono::milliseconds(0));
}

::testing::AssertionResult PostgresServer::StartReplicaOf(PostgresServer& primary,
                                                          bool synchronous) {
  if (initialized_) return ::testing::AssertionFailure() << "StartReplicaOf after Start";
  if (!primary.Running()) return ::testing::AssertionFailure() << "the primary is not running";
  const TestUser* user = ServerUser();
  if (!ChownTree(dir_->path(), user))
    return ::testing::AssertionFailure() << "cannot chown " << dir_->path();
  std::string data = dir_->Sub("data");
  std::string log = dir_->Sub("basebackup.log");
  Process p;
  if (!p.Start({BinDir() + "/pg_basebackup", "-D", data, "-h", primary.socket_dir(), "-p",
                std::to_string(primary.port()), "-U", "postgres", "-X", "stream", "-R", "-c",
                "fast", "--no-sync"},
               log, {"LC_ALL=C", "LANG=C"}, user)) {
    return ::testing::AssertionFailure() << "cannot fork pg_basebackup";
  }
  int st = p.Wait(std::chrono::minutes(1));
  if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    return ::testing::AssertionFailure() << "pg_basebackup failed: " << ReadFile(log);
  // The copied configuration names the primary's socket directory.
  std::ofstream conf(data + "/postgresql.conf", std::ios::app);
  conf << "\n# djinn test harness: replica\n"
       << "unix_socket_directories = '" << dir_->path() << "'\n";
  conf.close();
  if (!conf || !ChownTree(dir_->path(), user))
    return ::testing::AssertionFailure() << "cannot prepare " << dir_->path();
  database_ = primary.database_;
  consumer_user_ = primary.consumer_user_;
  consumer_password_ = primary.consumer_password_;
  initialized_ = true;
  if (auto r = Start(); !r) return r;
  auto replication = [&](const std::string& column, const std::string& want) {
    return WaitFor(
        [&] {
          std::string out;
          return primary.ExecIn("postgres", "SELECT " + column + " FROM pg_stat_replication",
                                &out) &&
                 out == want;
        },
        std::chrono::seconds(30), std::chrono::milliseconds(20));
  };
  if (!replication("state", "streaming"))
    return ::testing::AssertionFailure() << "the replica on port " << port_
                                         << " does not stream: " << ReadFile(log_path());
  if (!synchronous) return ::testing::AssertionSuccess();
  // ALTER SYSTEM cannot share a statement string (an implicit transaction).
  std::string out;
  for (const char* sql : {"ALTER SYSTEM SET synchronous_standby_names = '*'",
                          "ALTER SYSTEM SET synchronous_commit = 'on'", "SELECT pg_reload_conf()"}) {
    if (!primary.ExecIn("postgres", sql, &out))
      return ::testing::AssertionFailure() << sql << ": " << out;
  }
  if (!replication("sync_state", "sync"))
    return ::testing::AssertionFailure() << "the replica on port " << port_
                                         << " did not become synchronous";
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult PostgresServer::Promote() {
  std::string out;
  if (!ExecIn("postgres", "SELECT pg_promote(true, 30)", &out) || out != "t")
    return ::testing::AssertionFailure() << "pg_promote on port " << port_ << ": " << out;
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult PostgresServer::Restart() {
  Stop();
  return Start();
}

bool PostgresServer::Running() { return proc_.Running(); }

std::string PostgresServer::SuperuserConnInfo(const std::string& db) const {
  return "host=" + Quote(dir_->path()) + " port=" + std::to_string(port_) +
         " user=postgres dbname=" + Quote(db);
}

std::string PostgresServer::ConsumerConnInfo() const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + Quote(kDjinnDatabase) +
         " user=" + Quote(consumer_user_) + " password=" + Quote(consumer_password_) +
         " connect_timeout=10";
}

bool PostgresServer::Query(const std::string& conninfo, const std::string& sql,
                           const std::vector<std::string>& params,
                           std::vector<std::vector<std::string>>* rows,
                           std::vector<std::vector<bool>>* nulls, std::string* error) {
  PgConnPtr conn(PQconnectdb((conninfo + " connect_timeout=10").c_str()));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    *error = conn ? PQerrorMessage(conn.get()) : "out of memory";
    return false;
  }
  PgResultPtr res;
  if (params.empty()) {
    res.reset(PQexec(conn.get(), sql.c_str()));
  } else {
    std::vector<const char*> values;
    for (const auto& p : params) values.push_back(p.c_str());
    res.reset(PQexecParams(conn.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                           values.data(), nullptr, nullptr, 0));
  }
  ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    *error = res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn.get());
    return false;
  }
  rows->clear();
  nulls->clear();
  for (int r = 0; r < PQntuples(res.get()); ++r) {
    rows->emplace_back();
    nulls->emplace_back();
    for (int c = 0; c < PQnfields(res.get()); ++c) {
      rows->back().push_back(PQgetvalue(res.get(), r, c));
      nulls->back().push_back(PQgetisnull(res.get(), r, c) != 0);
    }
  }
  return true;
}

namespace {

std::string Format(const std::vector<std::vector<std::string>>& rows) {
  std::string out;
  for (size_t r = 0; r < rows.size(); ++r) {
    if (r) out += '\n';
    for (size_t c = 0; c < rows[r].size(); ++c) {
      if (c) out += '|';
      out += rows[r][c];
    }
  }
  return out;
}

}  // namespace

bool PostgresServer::ExecIn(const std::string& db, const std::string& sql, std::string* out) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::vector<bool>> nulls;
  std::string error;
  bool ok = Query(SuperuserConnInfo(db), sql, {}, &rows, &nulls, &error);
  if (out) *out = ok ? Format(rows) : error;
  return ok;
}

bool PostgresServer::CreateFinishAudit(std::string* out) {
  return Exec(R"(
CREATE TABLE finish_log (
  download_id INT NOT NULL,
  server_port INT,
  at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION log_finish() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = public AS $$
BEGIN
  INSERT INTO finish_log (download_id, server_port) VALUES (NEW.id, inet_server_port());
  RETURN NEW;
END $$;
CREATE TRIGGER log_finish AFTER UPDATE OF finished_at ON image_downloads
  FOR EACH ROW WHEN (NEW.finished_at IS NOT NULL) EXECUTE FUNCTION log_finish();
)",
              out);
}

std::string PostgresServer::FinishedMoreThanOnce() {
  return Query1("SELECT string_agg(download_id || ' x' || n, ', ') FROM (SELECT download_id, "
                "count(*) AS n FROM finish_log GROUP BY 1 HAVING count(*) <> 1) t");
}

bool PostgresServer::Exec(const std::string& sql, std::string* out) {
  return ExecIn(database_, sql, out);
}

bool PostgresServer::ExecAsConsumer(const std::string& sql, std::string* out) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::vector<bool>> nulls;
  std::string error;
  bool ok = Query(ConsumerConnInfo(), sql, {}, &rows, &nulls, &error);
  if (out) *out = ok ? Format(rows) : error;
  return ok;
}

std::string PostgresServer::Query1(const std::string& sql) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::vector<bool>> nulls;
  std::string error;
  if (!Query(SuperuserConnInfo(database_), sql, {}, &rows, &nulls, &error)) {
    ADD_FAILURE() << "SQL failed: " << sql << ": " << error;
    return "";
  }
  return rows.empty() || rows[0].empty() ? "" : rows[0][0];
}

::testing::AssertionResult PostgresServer::CreateDjinnSchema() {
  std::string out;
  // CREATE DATABASE cannot share a multi-statement string.
  if (!ExecIn("postgres", std::string("CREATE DATABASE ") + kDjinnDatabase, &out)) {
    return ::testing::AssertionFailure() << "CREATE DATABASE: " << out;
  }
  // Least privilege: PUBLIC may connect to the other databases by default.
  if (!ExecIn("postgres",
              "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;"
              "REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC",
              &out)) {
    return ::testing::AssertionFailure() << "REVOKE CONNECT: " << out;
  }
  const char* data = std::getenv("DJINN_TEST_DATA");
  std::string schema_file = std::string(data && *data ? data : "tests/data") + "/djinn-schema.sql";
  std::string sql = ReadFile(schema_file);
  if (sql.empty()) return ::testing::AssertionFailure() << "cannot read " << schema_file;
  ReplaceAll(&sql, "@ROLE@", consumer_user_);
  ReplaceAll(&sql, "@PASSWORD@", consumer_password_);
  ReplaceAll(&sql, "@DB@", kDjinnDatabase);
  if (!ExecIn(kDjinnDatabase, sql, &out)) {
    return ::testing::AssertionFailure() << "creating the Djinn schema: " << out;
  }
  database_ = kDjinnDatabase;
  return ::testing::AssertionSuccess();
}

int PostgresServer::AddImage(int user_id, const std::string& driver, const std::string& hash,
                             const std::string& name, int id) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::vector<bool>> nulls;
  std::string error;
  std::vector<std::string> params = {std::to_string(user_id), driver, hash, name};
  std::string sql =
      "INSERT INTO images (user_id, author_id, driver, hash, name) "
      "VALUES ($1, $1, $2, $3, $4) RETURNING id";
  if (id != 0) {
    params.push_back(std::to_string(id));
    sql =
        "INSERT INTO images (id, user_id, author_id, driver, hash, name) "
        "VALUES ($5, $1, $1, $2, $3, $4) RETURNING id";
  }
  if (!Query(SuperuserConnInfo(database_), sql, params, &rows, &nulls, &error) || rows.empty()) {
    ADD_FAILURE() << "AddImage(" << user_id << ", " << driver << ", " << hash << "): " << error;
    return 0;
  }
  return std::atoi(rows[0][0].c_str());
}

int PostgresServer::AddDownload(int image_id, const std::string& source, int id) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::vector<bool>> nulls;
  std::string error;
  std::vector<std::string> params = {std::to_string(image_id), source};
  std::string sql = "INSERT INTO image_downloads (image_id, source) VALUES ($1, $2) RETURNING id";
  if (id != 0) {
    params.push_back(std::to_string(id));
    sql =
        "INSERT INTO image_downloads (id, image_id, source) VALUES ($3, $1, $2) "
        "RETURNING id";
  }
  if (!Query(SuperuserConnInfo(database_), sql, params, &rows, &nulls, &error) || rows.empty()) {
    ADD_FAILURE() << "AddDownload(" << image_id << ", " << source << "): " << error;
    return 0;
  }
  return std::atoi(rows[0][0].c_str());
}

PostgresServer::DownloadRow PostgresServer::Download(int id) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::vector<bool>> nulls;
  std::string error;
  DownloadRow row;
  if (!Query(SuperuserConnInfo(database_),
             "SELECT started_at IS NOT NULL, finished_at IS NOT NULL, error "
             "FROM image_downloads WHERE id = $1",
             {std::to_string(id)}, &rows, &nulls, &error)) {
    ADD_FAILURE() << "reading image_downloads row " << id << ": " << error;
    return row;
  }
  if (rows.empty()) return row;
  row.exists = true;
  row.started = rows[0][0] == "t";
  row.finished = rows[0][1] == "t";
  row.has_error = !nulls[0][2];
  row.error = rows[0][2];
  return row;
}

}  // namespace djinn::testing
