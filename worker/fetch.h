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
//     the umask). On a failure the .part file is removed, unless it is
//     kept for the job's next try (see "Resuming" below).
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
//   - Proxies from the environment (http_proxy, no_proxy, ...) are
//     ignored, as in the Go consumer. download.proxy ("http://",
//     "https://", "socks5://", "socks5h://", "socks4://", "socks4a://",
//     optionally with "user:password@") routes every transfer through that
//     proxy, but for hosts matching download.no_proxy (libcurl's NO_PROXY
//     syntax). Its credentials go to libcurl apart from the URL
//     (CURLOPT_PROXYUSERNAME/PASSWORD); no message, log line or process
//     title carries them. An HTTP(S) proxy is always used as a CONNECT
//     tunnel, for http and sftp targets too (so the proxy must allow
//     CONNECT to the ports downloads use: 80, 443, the URLs' own); sftp
//     through a SOCKS proxy works natively. Redirects are then followed
//     by FetchBody itself, one transfer per hop, so that each hop's
//     destination is checked (and pinned, below) before it is connected
//     to. A proxy that cannot be resolved, reached or that refuses the
//     tunnel is a transient failure ("download.proxy: ...").
//   - Server-side request forgery through a proxy: the socket goes to the
//     proxy (chosen by the operator: allowed even on a private address,
//     on its port only), so the check moves to the final destination.
//     Before each hop the child resolves the target host itself
//     (getaddrinfo) and refuses, with the same message as above, when no
//     address is public; the port must be in tcp_ports. It then pins the
//     first public address with CURLOPT_CONNECT_TO, so the CONNECT
//     request (or the SOCKS request, also with socks5h/socks4a) names that
//     address, not the host name: the proxy does not resolve the name
//     again, which closes the DNS-rebinding gap. A no_proxy host is
//     connected to directly, at the same pinned address (and the socket
//     check applies). What this does not cover: where the proxy itself
//     goes (its own policy); names the worker cannot resolve (a transient
//     "cannot resolve" failure: with the guard on, the worker needs DNS
//     for download targets even when only the proxy could reach them);
//     and a proxy that filters CONNECT by host name sees addresses. With
//     download.allow_private nothing is resolved or pinned: the proxy
//     resolves names (socks5h, socks4a, HTTP CONNECT) and libcurl follows
//     redirects itself, as without a proxy.
//   - Bounds: download.timeout for the whole transfer; 30 s to connect
//     (http); a transfer slower than 1 KiB/s for 60 s is abandoned; the
//     smaller non-zero of download.max_size and store.limit aborts the
//     transfer (Content-Length or the sftp file size up front, the byte
//     count as data arrives).
//   - Free space (store.images.min_free, FetchOptions::store): the worker
//     looks before it starts the download process, the download process
//     every 2 MiB written (fstatvfs on the .part file): f_bavail less the
//     bytes still to come (Content-Length or the sftp size; when the size
//     is unknown, the next 2 MiB) must stay at or above the floor. Below
//     it the transfer stops and the job waits (kUnavailable, an outage:
//     "store /srv/images: 812.0 MiB free, below min_free 1.0 GiB;
//     downloads wait"). An image larger than the store could ever hold
//     beside the floor is kPermanent.
//
// Errors are one line "GET <url with password redacted>: <cause>", e.g.
// "GET http://127.0.0.1:1234/x.qcow2: HTTP 404 Not Found". Kinds:
//   kPermanent: HTTP 4xx (but 408, 429), other non-2xx but 5xx, wrong
//     content type, a refused image header (common/qcow2.h), too large,
//     authentication refused, missing
//     remote file, redirect to a forbidden scheme or too many redirects,
//     refused address, bad certificate or host key, malformed URL.
//   kTransient: timeouts, connection refused or reset, DNS failure, HTTP 5xx,
//     408 and 429, the proxy unreachable or refusing the tunnel.
//   kUnavailable: the store itself failing (permissions, read-only, I/O
//     errors) or full (ENOSPC, EDQUOT, below store.images.min_free): a
//     dependency of ours, not the job's fault. The job goes back with no
//     attempt counted and the worker holds back (worker/worker.h).
//
// Two deliveries of one download racing (an orphan requeue while the first
// worker still runs, a producer enqueuing twice): PartFile::Reserve()
// opens the .part file without O_TRUNC and locks it (flock, LOCK_EX |
// LOCK_NB) before truncating it, and reports "busy" when another process
// holds the lock; the caller waits and looks again (see download_job.cc).
// The holder renames or unlinks the .part before letting the lock go (or
// keeps it for a later try, sidecar written first: see "Resuming"), and
// Reserve() checks after locking that the name still is the locked inode,
// so a waiter never truncates a finished image. A lock left by a killed
// worker dies with it: its stale .part is simply reused.
//
// Resuming (worker/part_resume.h has the sidecar; issue 15): after a
// transient failure that is not the job's last attempt, FetchConfined
// keeps the .part (its first bytes of the body, at least the checked
// header) and writes the validator next to it, .<name>.part.meta: the
// final response's strong ETag and Last-Modified (http/https), or the
// remote size and mtime (sftp), with the images row id, a digest of the
// source URL and the time. Reserve() with a DownloadIdentity reads and
// removes that sidecar under the lock and keeps the bytes when the
// identity matches, the sidecar is at most kResumeMaxAgeSeconds (7 days)
// old, the .part has the length it says and its header passes
// CheckQcow2Header; otherwise it truncates as before. The transfer then
// continues at byte N:
//   - http(s): "Range: bytes=N-" (CURLOPT_RANGE) and "If-Range: <ETag, else
//     Last-Modified>" on every request. A 206 whose Content-Range starts at
//     N and runs to the end (Content-Length agreeing, ETag/Last-Modified
//     unchanged when sent) is appended. A 200 means the server ignored the
//     range or the content changed: the file is rewound and the body
//     written from byte 0 in the same transfer (CURLOPT_RESUME_FROM is not
//     used because libcurl fails a 200 answer to it). A 416 or a 206 that
//     does not fit starts over from byte 0 with a second request in the
//     same try.
//   - sftp: CURLOPT_RESUME_FROM_LARGE (libcurl seeks); before the first
//     byte is written the remote size (from libcurl's stat) and mtime
//     (CURLOPT_FILETIME) must equal the validator's, else (or when the
//     remote file is now shorter than N) the try starts over from byte 0.
//   - The size limit counts the whole image (N + the rest); the header is
//     checked from the kept bytes before anything is written; the result
//     is the same bytes a fresh download gives (Verify still checks it).
// The download process reports the validator of the body it writes before
// the first byte ("V" line) and how many leading bytes of the file are
// the body at its end ("L"); a file rewound to byte 0 is cut to that
// length. A .part kept this way no longer holds the lock: the next
// delivery (or a racing one) that reserves it continues it. The master
// removes .part files left longer than the bound (master/part_sweep.h).
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
#include "worker/part_resume.h"

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
  // download.proxy, split (see "Proxies" above); proxy "" = direct.
  std::string proxy;  // "scheme://host:port", never with credentials
  std::string proxy_host;  // as resolved (no brackets)
  uint16_t proxy_port = 0;
  bool proxy_has_user = false;
  std::string proxy_user, proxy_password;  // decoded
  std::string no_proxy;                    // download.no_proxy
  // The free-space floor (store.images.min_free) and the store it is
  // for; store.path "" = no floor check (ENOSPC still is an outage).
  StoreConfig store;
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
  // Told, before FetchBody fails for want of space (kUnavailable), how
  // many more bytes the image needed (0: unknown); may be empty.
  std::function<void(uint64_t)> space_short;
  // Resuming: the validator of the body about to be written, before its
  // first byte; restarted when the file was rewound to byte 0 (its old
  // bytes beyond what gets written are stale). May be empty.
  std::function<void(const PartValidator&, bool restarted)> validator;
};

struct FetchResult {
  uint64_t bytes = 0;
  double seconds = 0;
  std::string path;
  uint64_t resumed_from = 0;  // the kept bytes continued (0: from the start)
};

// The store's file system as fstatvfs sees it, against
// store.images.min_free (StoreConfig::MinFreeBytes of its size).
struct StoreSpace {
  uint64_t total = 0;  // f_blocks * f_frsize
  uint64_t avail = 0;  // f_bavail * f_frsize: what an unprivileged writer gets
  uint64_t floor = 0;  // the bytes to keep free
};
// kUnavailable when fstatvfs fails. floor is 0 when store.path is "".
Result<StoreSpace> GetStoreSpace(int fd, const StoreConfig& store);
// kUnavailable, an outage, when writing `needed` more bytes would leave
// less than the floor: "store <path>: 812.0 MiB free, below min_free
// 1.0 GiB; downloads wait" (needed 0), or "store <path>: 812.0 MiB free,
// 900.0 MiB more needed by an image, plus min_free 1.0 GiB; downloads
// wait". Ok otherwise.
Status CheckStoreSpace(const StoreSpace& space, uint64_t needed, const std::string& path);

// The temporary file of one target: Reserve() it, then Fetch() into it.
// The destructor (or Discard) removes the .part unless it was committed.
// Errors are kUnavailable (the store failing or full: ENOSPC, EDQUOT),
// kTransient for "another delivery is writing", kPermanent for unsafe
// names.
class PartFile {
 public:
  PartFile() = default;
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;
  ~PartFile() { Discard(); }

  // Makes target's directories (0750) beneath its root, creates (0640),
  // locks and truncates "<dir>/.<name>.part". When another process holds
  // the lock, *busy is set and kTransient returned; nothing is changed.
  // With `resume` (the download the caller is about to make), a .part
  // kept by an earlier try of it is kept instead (see "Resuming" above):
  // resume_from() is then its length and the file offset is there. The
  // sidecar is removed either way; resume_note() says why kept bytes were
  // dropped ("" when there were none or they are kept).
  //
  // A .part this process may not open (EACCES, EPERM) that belongs to
  // another uid (a host sharing the store under another user, or a run as
  // root before): while it was written less than foreign_stale_after()
  // seconds ago it may still be another delivery's, so *busy is set as
  // above; older, it is abandoned: removed with its sidecar (a warning),
  // and this try starts from byte 0.
  Status Reserve(const FetchTarget& target, bool* busy, const DownloadIdentity* resume = nullptr);
  void SetForeignStaleAfter(int64_t seconds) { foreign_stale_after_ = seconds; }
  bool reserved() const { return fd_.valid(); }
  uint64_t resume_from() const { return resume_from_; }
  const PartValidator& resume_validator() const { return resume_validator_; }
  const std::string& resume_note() const { return resume_note_; }
  // Whether FetchConfined keeps the .part after a transient failure (not
  // on a job's last attempt); needs Reserve with a DownloadIdentity.
  void KeepOnFailure(bool keep) { keep_on_failure_ = keep; }
  bool keep_on_failure() const { return keep_on_failure_ && has_identity_; }
  // Leaves the .part for the next try: cuts it to `length` bytes (which
  // must be at most its size), fsyncs it, writes the sidecar with v
  // atomically and lets the lock go (reserved() is false after). On
  // failure the caller discards.
  Status Keep(const PartValidator& v, uint64_t length);
  // The .part's size now.
  Result<uint64_t> Size() const;
  // Cuts the file to length when it is longer (a body rewritten from byte
  // 0 that came out shorter than what was there).
  Status TruncateTo(uint64_t length);
  // The header in the file's first bytes (CheckQcow2Header).
  Status CheckHead() const;
  // In the download process: back to byte 0, to write the body anew
  // (resume_from() becomes 0, rewound() true).
  Status Rewind();
  bool rewound() const { return rewound_; }
  // Leading bytes of the file that are the body: the kept bytes plus what
  // Write() appended since Reserve (or Rewind).
  uint64_t written() const { return written_; }
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
  // The worker's own look after the download process reported a store
  // without room (it needed `needed` more bytes, as it claims: capped by
  // the caller): kUnavailable when the store is below its floor plus
  // needed (1 MiB of slack), or when 1 MiB more cannot be allocated to
  // the file (an exhausted quota, which statvfs does not show); Ok when
  // there is room after all, or when needed is more than the file system
  // could ever hold beside its floor (waiting would not help: the job's
  // attempt is counted).
  Status ConfirmNoSpace(const StoreConfig& store, uint64_t needed) const;
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

  // The sidecar: read, judged and removed (Reserve); the bytes to keep.
  uint64_t LoadResume(const DownloadIdentity* id);

  UniqueFd dir_, fd_;
  std::string path_, name_, part_, dir_path_;
  bool committed_ = false;
  uint64_t written_ = 0, flushed_ = 0;
  // Resuming.
  DownloadIdentity identity_;
  bool has_identity_ = false, keep_on_failure_ = false, rewound_ = false;
  int64_t foreign_stale_after_ = 660;  // download.timeout's default + 60 s
  uint64_t resume_from_ = 0;
  PartValidator resume_validator_;
  std::string resume_note_;
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
