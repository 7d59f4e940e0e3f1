// Fetch: downloads one QEMU image (http, https or sftp) into the image
// store with libcurl, for the download job (DESIGN §4).
//
// The transfer itself runs in a short-lived confined child of the worker
// (worker/fetch_child.h, FetchConfined); the worker reserves the file and
// commits it. What a successful FetchConfined() guarantees:
//   - the image's header passed CheckQcow2Header (common/qcow2.h): checked
//     in the child as soon as its first bytes arrive, before anything is
//     written, and again by the worker on the file before the rename;
//   - http(s): the final response was 2xx with Content-Type
//     application/x-qemu-disk (case-insensitive, parameters ignored);
//   - the body is at <root>/<dirs...>/<name>, written through
//     <root>/<dirs...>/.<name>.part, fsync'ed, renamed in the same
//     directory (Landlock ABI 1 forbids cross-directory renames) and the
//     directory fsync'ed. Directories are made 0750, the file 0640 (less
//     the umask). On any failure the .part file is removed.
//   - memory stays flat whatever the size: the body goes from libcurl's
//     buffer straight to the file, and written data is pushed to disk as
//     the transfer goes (at most 16 MiB dirty, so the final fsync is short).
//
// Policy (documented in the man page):
//   - Schemes: http, https, sftp. Redirects (http/https only, also from
//     https to http) are followed up to 5; a redirect to any other scheme
//     (file://, ftp://, sftp://) fails with a clear error.
//   - Credentials: http(s) Basic auth from the URL's userinfo (decoded),
//     sent to the URL's own host only, never to a redirect target on another
//     host. sftp: user and password from the URL (password or
//     keyboard-interactive authentication; never the daemon's own keys).
//   - sftp "?timeout=<Go duration>" bounds connecting (TCP and SSH
//     handshake); default 1m; an unparsable or non-positive value falls
//     back to the default (the Go consumer ignored such values too).
//   - sftp host keys: with download.known_hosts set, the server's key must
//     be listed there for its [host]:port (unknown or different keys are
//     refused); without it any host key is accepted, as the Go consumer
//     does (ssh.InsecureIgnoreHostKey).
//   - https trust: the system CA bundle (libcurl's default CAINFO) plus, when
//     download.ca is set, that file; both are concatenated once per worker
//     into one in-memory bundle (CURLOPT_CAINFO_BLOB replaces the CAINFO
//     file, so the system bundle must be part of it).
//   - Server-side request forgery: unless download.allow_private, every
//     address libcurl is about to connect to (the first request, each
//     redirect, each address of a name it tries) is checked in
//     CURLOPT_OPENSOCKETFUNCTION and refused when it is loopback, private,
//     CGNAT, link-local, multicast, unspecified or reserved (IPv4 embedded
//     in IPv6 unwrapped first; see common/url.h). Checking the socket
//     address, not the host name, also defeats DNS rebinding. The refusal
//     reads "destination not allowed (<host as in the URL>; set
//     download.allow_private to allow)": the resolved address goes to the
//     daemon's log at debug level only, never into the error column.
//   - Ports: a transfer connects only to FetchOptions::tcp_ports (the
//     source URL's port, and 80 and 443 for http and https: redirects);
//     another is refused with "destination port N not allowed". The
//     child's Landlock layer enforces the same list (ABI >= 4).
//   - Proxies from the environment (http_proxy, ...) are ignored, as in
//     the Go consumer.
//   - Bounds: download.timeout for the whole transfer; 30 s to connect
//     (http); a transfer slower than 1 KiB/s for 60 s is abandoned; the
//     smaller non-zero of download.max_size and store.limit aborts the
//     transfer (Content-Length or the sftp file size up front, the byte
//     count as data arrives).
//
// Errors are one line "GET <url with password redacted>: <cause>", e.g.
// "GET http://127.0.0.1:1234/x.qcow2: HTTP 404 Not Found". Kinds:
//   kPermanent: HTTP 4xx (but 408, 429), other non-2xx but 5xx, wrong
//     content type, a refused image header (common/qcow2.h), too large,
//     authentication refused, missing
//     remote file, redirect to a forbidden scheme or too many redirects,
//     refused address, bad certificate or host key, malformed URL.
//   kTransient: timeouts, connection refused or reset, DNS failure, HTTP 5xx,
//     408 and 429, a full disk or quota (the image may be what fills it).
//   kUnavailable: the store itself failing (permissions, read-only, I/O
//     errors): a dependency of ours, not the job's fault.
//
// Two deliveries of one download racing (an orphan requeue while the first
// worker still runs, a producer enqueuing twice): PartFile::Reserve()
// opens the .part file without O_TRUNC and locks it (flock, LOCK_EX |
// LOCK_NB) before truncating it, and reports "busy" when another process
// holds the lock; the caller waits and looks again (see download_job.cc).
// The holder renames or unlinks the .part before letting the lock go, and
// Reserve() checks after locking that the name still is the locked inode,
// so a waiter never truncates a finished image. A lock left by a killed
// worker dies with it: its stale .part is simply reused.
//
// Threads: FetchBody() may run libcurl's threaded resolver; nothing else.
// InitFetch() must run once per process before the first FetchBody() (the
// worker runs it before forking download processes).
#ifndef DJINN_WORKER_FETCH_H_
#define DJINN_WORKER_FETCH_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace djinn {

struct FetchOptions {
  int timeout_seconds = 600;  // the whole transfer
  uint64_t max_bytes = 0;     // 0: no limit
  bool allow_private = false;
  std::string ca_bundle;             // PEM; empty: libcurl's default trust
  std::string known_hosts;           // path; empty: accept any sftp host key
  int connect_timeout_seconds = 30;  // http(s); sftp takes ?timeout=
  int64_t sftp_default_timeout_ms = 60000;
  long low_speed_bytes = 1024;  // abandon below this many bytes/s ...
  long low_speed_seconds = 60;  // ... for this long
  long max_redirects = 5;
  int progress_log_seconds = 10;
  long buffer_size = 512 * 1024;  // libcurl's receive buffer
  std::vector<uint16_t> tcp_ports;  // connect only to these; empty: any
};

// Options from the configuration: timeout, the smaller non-zero of
// download.max_size and store.limit, allow_private, known_hosts, and the CA
// bundle (system bundle + download.ca, read now). kUnavailable when
// download.ca cannot be read (an operator problem: jobs wait for a fix).
Result<FetchOptions> FetchOptionsFromConfig(const Config& config);

// The system CA bundle's text (libcurl's CA file), read once per process;
// "" (and a warning) when it cannot be read. CURLOPT_CAINFO_BLOB replaces
// the CA file rather than adding to it, so a blob of extra CAs must carry
// this too. Thread-safe.
const std::string& SystemCaBundle();

// Where the file goes. Every segment must pass IsSafePathSegment().
struct FetchTarget {
  std::string root;               // an existing directory (the store)
  std::vector<std::string> dirs;  // made beneath root as needed (0750)
  std::string name;               // the final file name
  std::string Path() const;       // root/dirs.../name
};

struct FetchHooks {
  std::string log_prefix;  // starts progress log lines ("job 42")
  // Short progress for the process title ("42%", "12.0 MiB"); may be empty.
  std::function<void(const std::string&)> set_progress;
  // Called on every progress callback of the transfer (libcurl makes one
  // at least about once a second, stalled or not); may be empty.
  std::function<void()> keep_alive;
};

struct FetchResult {
  uint64_t bytes = 0;
  double seconds = 0;
  std::string path;
};

// The temporary file of one target: Reserve() it, then Fetch() into it.
// The destructor (or Discard) removes the .part unless it was committed.
// Errors are kUnavailable (the store failing), kTransient for a full disk
// or quota and "another delivery is writing", kPermanent for unsafe names.
class PartFile {
 public:
  PartFile() = default;
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;
  ~PartFile() { Discard(); }

  // Makes target's directories (0750) beneath its root, creates (0640),
  // locks and truncates "<dir>/.<name>.part". When another process holds
  // the lock, *busy is set and kTransient returned; nothing is changed.
  Status Reserve(const FetchTarget& target, bool* busy);
  bool reserved() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }  // for a child process to write to
  // After a transfer (in another process): the file's size, with its
  // header checked again (CheckQcow2Header), the size within max_bytes
  // (0: no limit) and the .part name still this file (a regular file, the
  // inode Reserve locked), so what is committed never depends on the
  // transfer process's word.
  Result<uint64_t> Verify(uint64_t max_bytes = 0) const;
  // The store as the worker sees it: fails (kUnavailable) when the file's
  // file system is read-only or the file cannot be flushed.
  Status CheckStore() const;
  const std::string& path() const { return path_; }  // the final path

  // For Fetch(): appends (pushing written data to disk as it goes); fsync,
  // rename to the final name and fsync the directory; remove the .part.
  Status Write(const char* data, size_t len);
  Status Commit();
  void Discard();

 private:
  std::string PartPath() const;
  static Status Err(const std::string& what, int err);
  void StartWriteback();

  UniqueFd dir_, fd_;
  std::string path_, name_, part_, dir_path_;
  bool committed_ = false;
  uint64_t written_ = 0, flushed_ = 0;
};

// curl_global_init, once per process. Safe to call again.
Status InitFetch();

// The transfer alone: downloads url into file, which must be reserved,
// and neither commits nor discards it (the caller does; in the download
// child, the worker does). result.path is empty.
Result<FetchResult> FetchBody(const std::string& url, PartFile* file, const FetchOptions& options,
                              const FetchHooks& hooks);

// "GET <url, password redacted>": what every fetch error starts with.
std::string FetchContext(const std::string& url);

// The TCP ports a download of url may connect to: the URL's own (or its
// scheme's default), and for http and https also 80 and 443 (redirects
// between the two). Empty when url does not parse.
std::vector<uint16_t> DownloadPorts(const std::string& url);

}  // namespace djinn

#endif  // DJINN_WORKER_FETCH_H_
