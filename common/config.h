// The daemon's configuration (libconfig syntax, DESIGN §2).
//
// LoadConfig() parses and validates a whole file. Every error is one line
// "<file>:<line>: <parameter>: <what is wrong>" and the first one found is
// returned as a permanent Status. Unknown parameters are errors, so typos
// never pass silently. Secrets given as password_file are read here, so the
// rest of the program only sees Config::*.password.
#ifndef DJINN_COMMON_CONFIG_H_
#define DJINN_COMMON_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/status.h"

namespace djinn {

struct TlsConfig {
  std::string ca;    // empty: TLS off
  std::string cert;  // optional client certificate
  std::string key;   // optional client key (with cert)
};

struct DatabaseConfig {
  std::string addr = "localhost:5432";  // host:port or a unix socket directory
  std::string name = "djinn";
  std::string username = "djinn_consumer";
  std::string password;                 // from password or password_file
  TlsConfig tls;
  bool tls_enabled = false;
};

struct RedisConfig {
  std::string addr = "localhost:6379";  // host:port or a unix socket path
  std::string password;                 // from password or password_file
};

struct StoreConfig {
  std::string path;        // required: root of the image file store
  uint64_t limit = 0;      // bytes per image file, 0 = no limit
};

struct DownloadConfig {
  int timeout = 600;           // seconds for one whole transfer
  uint64_t max_size = 0;       // bytes, 0 = no limit
  bool allow_private = false;  // allow loopback/private/link-local targets
  std::string ca;              // extra CA bundle for https (besides system)
  std::string known_hosts;     // sftp host key check; empty = accept any
};

struct Config {
  std::string path;  // the file it was read from
  std::string pidfile;
  LogLevel log_level = LogLevel::kInfo;
  std::string log_file;  // empty: stderr
  int workers = 0;       // 0 in the struct = not set; LoadConfig fills nproc
  std::string user;
  std::string group;
  std::string queue = "jobs";
  int attempts = 5;
  int job_timeout = 900;       // seconds
  int shutdown_timeout = 60;   // seconds
  DatabaseConfig database;
  RedisConfig redis;
  StoreConfig store;
  DownloadConfig download;
};

Result<Config> LoadConfig(const std::string& path);

// Every parameter the parser accepts, dotted ("database.tls.ca"); the man
// page test checks that each is documented.
const std::vector<std::string>& ConfigParameterNames();

}  // namespace djinn

#endif  // DJINN_COMMON_CONFIG_H_
