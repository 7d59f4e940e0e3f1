// The daemon's configuration (DESIGN §2, §2b).
//
// LoadConfig() reads a file in either syntax, told apart per file: our
// libconfig syntax (`workers = 4;`) or Djinn's own nginx-like syntax
// (`parallelism 4`, common/djinn_conf.h), so an existing
// /etc/djinn/consumer.conf is read unchanged. Both become one ConfNode tree
// (common/conf_tree.h) that is validated here, so a parameter means the
// same in both: Djinn's names are mapped (parallelism = workers, `log LEVEL
// "FILE"`, `store images {}`, ssl = tls) and every one of ours is accepted
// in Djinn's syntax too. Durations and sizes may be written with units in
// either syntax ("15m", "50MB"); a bare integer is seconds or bytes.
//
// Every error is one line "<file>:<line>: <parameter>: <what is wrong>"
// (the included file, when it is in one) and the first one found is
// returned as a permanent Status. Unknown parameters are errors in libconfig
// syntax; in Djinn's syntax they are warnings (Config::warnings), because
// Djinn's Go consumer ignores them and a config it accepts must not be
// refused. Secrets given as password_file are read here, so the rest of the
// program only sees Config::*.password.
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
  std::string password_file;            // where it came from ("" if inline)
  TlsConfig tls;
  bool tls_enabled = false;
};

struct RedisConfig {
  std::string addr = "localhost:6379";  // host:port or a unix socket path
  std::string password;                 // from password or password_file
  std::string password_file;            // where it came from ("" if inline)
  // Redis Sentinel: when sentinels is non-empty the master named `master`
  // is found through them and addr is not used.
  std::vector<std::string> sentinels;   // "host:port" of each sentinel
  std::string master;                   // the monitored master's name
  std::string sentinel_password;        // AUTH to the sentinels, if any
  std::string sentinel_password_file;
};

// Djinn's `crypto` block: block and salt key the AES-GCM of webhook
// secrets (DESIGN §4b). Optional here; when given, block must be 16, 24 or
// 32 bytes and salt non-empty, as Djinn checks.
// The `images` webhook (DESIGN §4b); on when crypto is set.
struct WebhooksConfig {
  int timeout = 60;            // seconds for one delivery (Go: one minute)
  int attempts = 5;            // retries of a transport error or 5xx
  bool allow_private = false;  // allow loopback/private receivers
  std::string ca;              // extra CA bundle for https receivers
  std::string api_server;      // the image url's base; "" = $DJINN_API_SERVER
  int workers = 1;             // delivery workers (not taken from downloads)
};

// The master's metrics and health endpoint (master/metrics.h); off when
// listen is empty. A non-loopback address needs allow_remote.
struct MetricsConfig {
  std::string listen;          // "127.0.0.1:9187"; "" = off
  bool allow_remote = false;   // allow a listen address other than loopback
};

struct CryptoConfig {
  bool set = false;
  std::string auth, block, hash, salt;
};

struct StoreConfig {
  std::string path;        // required: root of the image file store
  uint64_t limit = 0;      // bytes per image file, 0 = no limit
  // store.images.min_free: free space a download must leave on the store's
  // filesystem. Each is a bound when >= 0; the smaller bound wins (default
  // 1 GiB or 5 %, whichever is smaller). "0" turns the check off.
  int64_t min_free_bytes = int64_t{1} << 30;
  double min_free_percent = 5;
  // The free bytes to keep on a filesystem of total_bytes.
  uint64_t MinFreeBytes(uint64_t total_bytes) const;
};

struct DownloadConfig {
  int timeout = 600;           // seconds for one whole transfer
  uint64_t max_size = 0;       // bytes, 0 = no limit
  bool allow_private = false;  // allow loopback/private/link-local targets
  std::string ca;              // extra CA bundle for https (besides system)
  std::string known_hosts;     // sftp host key check; empty = accept any
  std::string proxy;           // "http://host:port", "socks5h://..."; "" = direct
  std::string no_proxy;        // hosts that bypass proxy (libcurl NO_PROXY syntax)
};

struct Config {
  std::string path;  // the file it was read from
  bool djinn_syntax = false;  // read in Djinn's syntax (else libconfig)
  // "<file>:<line>: <parameter>: <what>" lines worth an operator's look
  // (unknown or deprecated parameters in Djinn's syntax); the master logs
  // them at start and reload, -t prints them.
  std::vector<std::string> warnings;
  std::string pidfile;
  // The master's status socket (master/control.h); "" = derived from
  // pidfile (ControlSocketPath), none without a pidfile.
  std::string control_socket;
  LogLevel log_level = LogLevel::kInfo;
  std::string log_file;  // empty: stderr
  LogFormat log_format = LogFormat::kText;  // log.format: text or json
  int workers = 0;       // 0 in the struct = not set; LoadConfig fills nproc
  std::string user;
  std::string group;
  std::string queue = "jobs";
  int attempts = 5;            // retries after the first try (curlyq JobMaxAttempts)
  int job_timeout = 900;       // seconds
  int shutdown_timeout = 60;   // seconds
  // A consumer (any host) whose heartbeat is older than this is dead and
  // its in-flight jobs are requeued. Keep it above Go curlyq's 60 s
  // heartbeat when Go consumers share the queue (a warning says so).
  int queue_consumer_timeout = 120;  // seconds
  DatabaseConfig database;
  RedisConfig redis;
  StoreConfig store;
  DownloadConfig download;
  CryptoConfig crypto;
  WebhooksConfig webhooks;
  MetricsConfig metrics;
};

Result<Config> LoadConfig(const std::string& path);

// The effective configuration in libconfig syntax, every parameter with
// its value (defaults included), for -t -print: an operator migrating from
// Djinn's syntax can save it as the new file. With redact, secrets
// (passwords, crypto keys) are printed as "<redacted>"; a password read
// from password_file is printed as that password_file.
std::string FormatConfig(const Config& config, bool redact = true);

// The values the log scrubs from every line (passwords, crypto keys).
std::vector<std::string> ConfigSecrets(const Config& config);

// Every parameter the parser accepts, dotted ("database.tls.ca"); the man
// page test checks that each is documented.
const std::vector<std::string>& ConfigParameterNames();

}  // namespace djinn

#endif  // DJINN_COMMON_CONFIG_H_
