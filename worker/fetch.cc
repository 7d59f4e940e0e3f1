#include "worker/fetch.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>

#include "common/c_handles.h"
#include "common/log.h"
#include "common/qcow2.h"
#include "common/text.h"
#include "common/unique_fd.h"
#include "common/units.h"
#include "common/url.h"

namespace djinn {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kQemuDisk[] = "application/x-qemu-disk";
// Written data is handed to the disk in windows of this size, waited for
// one window later, so neither dirty pages nor the final fsync grow with
// the image.
constexpr uint64_t kWritebackWindow = 8 << 20;
// A URL in a message or the error column is cut beyond this (a 70 kB
// signed URL helps nobody there).
constexpr size_t kMaxShownUrl = 1024;

// ---------------------------------------------------------------------------
// Small helpers

std::string ReadWholeFile(const std::string& path, Status* status) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    *status = Status::FromErrno(path, errno, Status::Kind::kUnavailable);
    return "";
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *status = Status::FromErrno(path, errno, Status::Kind::kUnavailable);
      return "";
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  *status = Status::Ok();
  return out;
}

// Server-supplied text (a reason phrase, a content type) going into a log
// line or the error column: printable ASCII only, bounded.
std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n'))
    --e;
  return std::string(s.substr(b, e - b));
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return s;
}

std::string HumanBytes(double n) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (n >= 1024 && u < 4) {
    n /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", n, kUnits[u]);
  return buf;
}

const char* DefaultReason(long code) {
  switch (code) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 410:
      return "Gone";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "";
  }
}

std::string ShownUrl(std::string url) {
  if (url.size() > kMaxShownUrl) url = url.substr(0, kMaxShownUrl) + "...";
  return url;
}

// ---------------------------------------------------------------------------
// One transfer: the state libcurl's callbacks share.

struct Transfer {
  const FetchOptions* options = nullptr;
  const FetchHooks* hooks = nullptr;
  PartFile* file = nullptr;
  CURL* curl = nullptr;
  bool http = false;

  // The first failure seen by a callback; it makes libcurl abort and is
  // what Fetch() reports.
  Status failure;
  std::string refused;        // SSRF refusal, set by OnOpenSocket
  std::string hostkey_error;  // set by OnSshKey

  // Current HTTP response (reset on each status line).
  long status = 0;
  std::string reason;
  std::optional<std::string> content_type;
  std::optional<uint64_t> content_length;
  std::string location;
  bool headers_ok = false;  // the final response passed CheckResponse
  long redirects = 0;

  // Body. The first kQcow2CheckBytes are held back until the header
  // passed CheckQcow2Header: nothing is written before.
  char head[kQcow2CheckBytes] = {};
  size_t head_have = 0;
  bool head_ok = false;
  uint64_t bytes = 0;

  // Progress.
  Clock::time_point start = Clock::now();
  Clock::time_point last_log = start;
  Clock::time_point last_title = start;
  uint64_t total = 0;  // expected size when known
  std::string title;

  void Fail(Status st) {
    if (failure.ok()) failure = std::move(st);
  }
  Status TooLarge() const {
    return Status::Permanent("image larger than the " + std::to_string(options->max_bytes) +
                             "-byte limit");
  }
  Status CheckResponse();
  bool CheckRedirect();
};

Status Transfer::CheckResponse() {
  if (status < 200 || status > 299) {
    std::string why = reason.empty() ? DefaultReason(status) : reason;
    std::string msg = "HTTP " + std::to_string(status) + (why.empty() ? "" : " " + why);
    if (status >= 500 || status == 408 || status == 429) return Status::Transient(msg);
    return Status::Permanent(msg);
  }
  if (!content_type) {
    return Status::Permanent(std::string("no content type (expected ") + kQemuDisk + ")");
  }
  std::string media = Lower(Trim(content_type->substr(0, content_type->find(';'))));
  if (media != kQemuDisk) {
    return Status::Permanent("content type \"" + Printable(*content_type) + "\" is not " +
                             kQemuDisk);
  }
  if (content_length) {
    if (options->max_bytes != 0 && *content_length > options->max_bytes) return TooLarge();
    total = *content_length;
  }
  return Status::Ok();
}

// A 3xx with a Location that libcurl is about to follow. False (and
// failure set) when it must not be.
bool Transfer::CheckRedirect() {
  ++redirects;
  std::string_view loc = location;
  size_t colon = loc.find(':');
  size_t stop = loc.find_first_of("/?#");
  if (colon != std::string_view::npos && (stop == std::string_view::npos || colon < stop)) {
    std::string scheme = Lower(std::string(loc.substr(0, colon)));
    if (scheme != "http" && scheme != "https") {
      Fail(Status::Permanent("redirect to a forbidden scheme \"" + Printable(scheme, 20) + "\" (" +
                             Printable(RedactUrl(location)) +
                             "); only http and https redirects are followed"));
      return false;
    }
  }
  if (redirects > options->max_redirects) {
    Fail(Status::Permanent("too many redirects (more than " +
                           std::to_string(options->max_redirects) + ")"));
    return false;
  }
  return true;
}

void UpdateProgress(Transfer* t, bool force_log) {
  if (t->hooks->keep_alive) t->hooks->keep_alive();
  Clock::time_point now = Clock::now();
  double secs = std::chrono::duration<double>(now - t->start).count();
  if (t->hooks->set_progress &&
      (now - t->last_title >= std::chrono::milliseconds(500) || force_log)) {
    std::string title =
        t->total > 0 ? std::to_string(std::min<uint64_t>(100, t->bytes * 100 / t->total)) + "%"
                     : HumanBytes(static_cast<double>(t->bytes));
    if (title != t->title) {
      t->title = title;
      t->hooks->set_progress(title);
    }
    t->last_title = now;
  }
  if (now - t->last_log >= std::chrono::seconds(t->options->progress_log_seconds)) {
    t->last_log = now;
    double rate = secs > 0 ? static_cast<double>(t->bytes) / secs : 0;
    if (t->total > 0) {
      LOG_INFO("%s: %s of %s (%" PRIu64 "%%) at %s/s", t->hooks->log_prefix.c_str(),
               HumanBytes(static_cast<double>(t->bytes)).c_str(),
               HumanBytes(static_cast<double>(t->total)).c_str(),
               std::min<uint64_t>(100, t->bytes * 100 / t->total), HumanBytes(rate).c_str());
    } else {
      LOG_INFO("%s: %s at %s/s", t->hooks->log_prefix.c_str(),
               HumanBytes(static_cast<double>(t->bytes)).c_str(), HumanBytes(rate).c_str());
    }
  }
}

// ---------------------------------------------------------------------------
// libcurl callbacks. Returning a short count (write/header), non-zero
// (progress) or CURL_SOCKET_BAD (open socket) aborts the transfer; the
// reason is kept in Transfer::failure or ::refused.

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  if (!t->failure.ok()) return 0;
  std::string_view line(data, len);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.substr(0, 5) == "HTTP/") {
    // A new response (after a 1xx, or a redirect): start over.
    t->status = 0;
    t->reason.clear();
    t->content_type.reset();
    t->content_length.reset();
    t->location.clear();
    size_t sp = line.find(' ');
    if (sp != std::string_view::npos) {
      std::string_view rest = line.substr(sp + 1);
      long code = 0;
      size_t i = 0;
      for (; i < rest.size() && i < 3 && rest[i] >= '0' && rest[i] <= '9'; ++i)
        code = code * 10 + (rest[i] - '0');
      t->status = code;
      if (i < rest.size()) t->reason = Printable(Trim(rest.substr(i)));
    }
    return len;
  }
  if (line.empty()) {  // end of one response's headers
    if (t->status >= 100 && t->status < 200) return len;
    if (t->status >= 300 && t->status < 400 && t->status != 304 && !t->location.empty()) {
      return t->CheckRedirect() ? len : 0;
    }
    Status st = t->CheckResponse();
    if (!st.ok()) {
      t->Fail(std::move(st));
      return 0;
    }
    t->headers_ok = true;
    return len;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return len;
  std::string name = Lower(Trim(line.substr(0, colon)));
  std::string value = Trim(line.substr(colon + 1));
  if (name == "content-type") {
    t->content_type = value;
  } else if (name == "content-length") {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(value.c_str(), &end, 10);
    if (errno == 0 && end != value.c_str() && *end == '\0') t->content_length = v;
  } else if (name == "location") {
    t->location = value;
  }
  return len;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  if (!t->failure.ok()) return 0;
  if (t->http && !t->headers_ok) {
    // Not reached with libcurl's header callbacks in place; kept so a body
    // can never be stored unchecked.
    t->Fail(Status::Transient("response body before its headers were checked"));
    return 0;
  }
  if (t->options->max_bytes != 0 && t->bytes + len > t->options->max_bytes) {
    t->Fail(t->TooLarge());
    return 0;
  }
  const char* p = data;
  size_t left = len;
  if (!t->head_ok) {
    size_t take = std::min(left, sizeof t->head - t->head_have);
    std::memcpy(t->head + t->head_have, p, take);
    t->head_have += take;
    p += take;
    left -= take;
    if (t->head_have < sizeof t->head) {
      t->bytes += len;
      return len;
    }
    if (Status st = CheckQcow2Header(std::string_view(t->head, t->head_have)); !st.ok()) {
      t->Fail(std::move(st));
      return 0;
    }
    t->head_ok = true;
    if (Status st = t->file->Write(t->head, t->head_have); !st.ok()) {
      t->Fail(std::move(st));
      return 0;
    }
  }
  if (left > 0) {
    if (Status st = t->file->Write(p, left); !st.ok()) {
      t->Fail(std::move(st));
      return 0;
    }
  }
  t->bytes += len;
  return len;
}

int OnProgress(void* user, curl_off_t dltotal, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->failure.ok()) return 1;
  if (!t->http && dltotal > 0) {
    // sftp: libcurl knows the file size from its stat before the first
    // byte. (For http the final response's Content-Length is checked in
    // OnHeader; dltotal may still belong to a redirect response here.)
    t->total = static_cast<uint64_t>(dltotal);
    if (t->options->max_bytes != 0 && t->total > t->options->max_bytes) {
      t->Fail(t->TooLarge());
      return 1;
    }
  }
  UpdateProgress(t, false);
  return 0;
}

// The host of the URL libcurl is connecting for (the first URL or a
// redirect's), as the user wrote it: what a refusal may name. The resolved
// address stays in our own log (the error column is shown to the user, and
// would let them map internal names).
std::string ConnectingHost(const Transfer& t) {
  char* effective = nullptr;
  if (curl_easy_getinfo(t.curl, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective) {
    Result<Url> u = ParseUrl(effective);
    if (u.ok()) return u->DisplayHost();
  }
  return "?";
}

uint16_t SockaddrPort(const struct sockaddr* sa) {
  if (sa->sa_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
  if (sa->sa_family == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port);
  return 0;
}

curl_socket_t OnOpenSocket(void* user, curlsocktype, struct curl_sockaddr* addr) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->options->allow_private) {
    std::string text;
    AddressClass c = ClassifySockaddr(&addr->addr, addr->addrlen, &text);
    if (c != AddressClass::kPublic) {
      if (t->refused.empty())
        t->refused = "destination not allowed (" + ConnectingHost(*t) +
                     "; set download.allow_private to allow)";
      LOG_DEBUG("%s: refused to connect to %s (%s)", t->hooks->log_prefix.c_str(), text.c_str(),
                AddressClassName(c));
      return CURL_SOCKET_BAD;
    }
  }
  if (!t->options->tcp_ports.empty()) {
    uint16_t port = SockaddrPort(&addr->addr);
    const auto& ports = t->options->tcp_ports;
    if (std::find(ports.begin(), ports.end(), port) == ports.end()) {
      if (t->refused.empty()) {
        std::string allowed;
        for (uint16_t p : ports) allowed += (allowed.empty() ? "" : ", ") + std::to_string(p);
        t->refused = "destination port " + std::to_string(port) + " not allowed (" +
                     ConnectingHost(*t) + "; a download connects only to ports " + allowed + ")";
      }
      return CURL_SOCKET_BAD;
    }
  }
  int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  return fd < 0 ? CURL_SOCKET_BAD : fd;
}

int OnSshKey(CURL*, const struct curl_khkey*, const struct curl_khkey*, enum curl_khmatch match,
             void* user) {
  auto* t = static_cast<Transfer*>(user);
  if (match == CURLKHMATCH_OK) return CURLKHSTAT_FINE;
  t->hostkey_error =
      std::string(match == CURLKHMATCH_MISMATCH ? "host key does not match the one in "
                                                : "host key is not listed in ") +
      t->options->known_hosts + " (download.known_hosts)";
  return CURLKHSTAT_REJECT;
}

// ---------------------------------------------------------------------------

// How a libcurl error that no callback explained is classified.
Status FromCurlCode(CURLcode rc, const Transfer& t, const char* errbuf) {
  if (rc == CURLE_COULDNT_CONNECT && !t.refused.empty()) return Status::Permanent(t.refused);
  if (rc == CURLE_PEER_FAILED_VERIFICATION && !t.hostkey_error.empty())
    return Status::Permanent(t.hostkey_error);
  std::string msg = errbuf[0] != '\0' ? Trim(errbuf) : curl_easy_strerror(rc);
  msg = Printable(RedactUrl(msg), 300);
  switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_REMOTE_FILE_NOT_FOUND:
    case CURLE_REMOTE_ACCESS_DENIED:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_RANGE_ERROR:
      return Status::Permanent(msg);
    case CURLE_LOGIN_DENIED:
      return Status::Permanent("authentication refused (" + msg + ")");
    default:
      // Timeouts, refused or reset connections, DNS failures, TLS and SSH
      // session trouble, out of memory: worth another try.
      return Status::Transient(msg);
  }
}

std::once_flag g_curl_once;
CURLcode g_curl_init = CURLE_FAILED_INIT;

}  // namespace

// ---------------------------------------------------------------------------
// PartFile

Status PartFile::Reserve(const FetchTarget& target, bool* busy) {
  *busy = false;
  Discard();
  for (const std::string& seg : target.dirs) {
    if (!IsSafePathSegment(seg))
      return Status::Permanent("unsafe directory name \"" + Printable(seg) + "\"");
  }
  if (!IsSafePathSegment(target.name))
    return Status::Permanent("unsafe file name \"" + Printable(target.name) + "\"");
  path_ = target.Path();
  name_ = target.name;
  part_ = "." + target.name + ".part";
  committed_ = false;
  UniqueFd dir(::open(target.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return Err("opening the image store " + target.root, errno);
  std::string where = target.root;
  for (const std::string& seg : target.dirs) {
    where += "/" + seg;
    bool made = mkdirat(dir.get(), seg.c_str(), 0750) == 0;
    if (!made && errno != EEXIST) return Err("mkdir " + where, errno);
    // O_NOFOLLOW: a symlink planted in the store does not lead us out.
    UniqueFd next(openat(dir.get(), seg.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) return Err("opening " + where, errno);
    if (made && fsync(dir.get()) != 0) return Err("fsync " + where + "/..", errno);
    dir = std::move(next);
  }
  dir_path_ = where;
  for (int tries = 0; tries < 5; ++tries) {
    // No O_TRUNC: the file may be another process's, still being written.
    UniqueFd fd(
        openat(dir.get(), part_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640));
    if (!fd.valid()) return Err("creating " + PartPath(), errno);
    if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) return Err("locking " + PartPath(), errno);
      *busy = true;
      return Status::Transient("another delivery is writing " + PartPath());
    }
    struct stat held {
    }, named{};
    if (fstat(fd.get(), &held) != 0) return Err("fstat " + PartPath(), errno);
    if (fstatat(dir.get(), part_.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 ||
        named.st_ino != held.st_ino || named.st_dev != held.st_dev) {
      continue;  // renamed or removed by the previous holder: open again
    }
    if (ftruncate(fd.get(), 0) != 0) return Err("truncating " + PartPath(), errno);
    dir_ = std::move(dir);
    fd_ = std::move(fd);
    written_ = 0;
    flushed_ = 0;
    return Status::Ok();
  }
  return Status::Transient("cannot get a stable " + PartPath());
}

Status PartFile::Write(const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(fd_.get(), data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Err("writing " + PartPath(), errno);
    data += n;
    len -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
  if (written_ - flushed_ >= kWritebackWindow) StartWriteback();
  return Status::Ok();
}

Result<uint64_t> PartFile::Verify(uint64_t max_bytes) const {
  struct stat st {}, named{};
  if (fstat(fd_.get(), &st) != 0) return Err("fstat " + PartPath(), errno);
  if (fstatat(dir_.get(), part_.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0)
    return Status::Transient(PartPath() + " disappeared during the download");
  if (!S_ISREG(named.st_mode) || named.st_ino != st.st_ino || named.st_dev != st.st_dev)
    return Status::Transient(PartPath() + " was replaced during the download");
  if (max_bytes > 0 && static_cast<uint64_t>(st.st_size) > max_bytes)
    return Status::Permanent("image larger than the " + std::to_string(max_bytes) +
                             "-byte limit");
  char head[kQcow2CheckBytes];
  size_t have = 0;
  while (have < sizeof head) {
    ssize_t n = pread(fd_.get(), head + have, sizeof head - have, static_cast<off_t>(have));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Err("reading " + PartPath(), errno);
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  if (Status check = CheckQcow2Header(std::string_view(head, have)); !check.ok()) return check;
  return static_cast<uint64_t>(st.st_size);
}

Status PartFile::CheckStore() const {
  struct statvfs vfs {};
  if (fstatvfs(fd_.get(), &vfs) != 0) return Err("statvfs " + dir_path_, errno);
  if (vfs.f_flag & ST_RDONLY) return Err("writing " + PartPath(), EROFS);
  if (fsync(fd_.get()) != 0) return Err("fsync " + PartPath(), errno);
  return Status::Ok();
}

Status PartFile::Commit() {
  if (fsync(fd_.get()) != 0) return Err("fsync " + PartPath(), errno);
  // Rename while still holding the lock: a waiting delivery then finds the
  // name gone and starts over on a fresh file.
  if (renameat(dir_.get(), part_.c_str(), dir_.get(), name_.c_str()) != 0)
    return Err("renaming " + PartPath() + " to " + path_, errno);
  committed_ = true;
  if (fsync(dir_.get()) != 0) return Err("fsync " + dir_path_, errno);
  if (Status st = fd_.Close(); !st.ok()) return st.Wrap(path_);
  dir_.Reset();
  return Status::Ok();
}

void PartFile::Discard() {
  if (fd_.valid() && !committed_) {
    // Unlink before unlocking (close): see Reserve's inode check.
    if (unlinkat(dir_.get(), part_.c_str(), 0) != 0 && errno != ENOENT)
      LOG_WARN("cannot remove %s: %s", PartPath().c_str(), std::strerror(errno));
  }
  fd_.Reset();
  dir_.Reset();
}

std::string PartFile::PartPath() const { return dir_path_ + "/" + part_; }

Status PartFile::Err(const std::string& what, int err) {
  // The store is our dependency, not the user's: the job waits for it
  // without an attempt counted. A full disk or quota may be this image's
  // own doing (too big for what is left), so that one counts.
  bool full = err == ENOSPC || err == EDQUOT;
  return Status::FromErrno(what, err, full ? Status::Kind::kTransient : Status::Kind::kUnavailable);
}

// Asks the kernel to start writing the newest window and waits for the one
// before (normally long done), so at most two windows are ever dirty and
// the final fsync is short: without this, a 1 GiB image left ~1 GiB of
// dirty pages for fsync to write after the last byte arrived (measured:
// 0.74 of curl's rate instead of 0.9+). The clean pages stay in the page
// cache (dropping them cost ~5% of the rate; the kernel reclaims them like
// any used-once data, and the image is often read again soon, to boot it).
// Failures only cost speed; the final fsync reports real errors.
void PartFile::StartWriteback() {
  off_t from = static_cast<off_t>(flushed_);
  off_t len = static_cast<off_t>(written_ - flushed_);
  sync_file_range(fd_.get(), from, len, SYNC_FILE_RANGE_WRITE);
  if (flushed_ >= kWritebackWindow) {
    off_t old = from - static_cast<off_t>(kWritebackWindow);
    sync_file_range(
        fd_.get(), old, static_cast<off_t>(kWritebackWindow),
        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
  }
  flushed_ = written_;
}

std::string FetchTarget::Path() const {
  std::string p = root;
  for (const std::string& d : dirs) p += "/" + d;
  return p + "/" + name;
}

Status InitFetch() {
  std::call_once(g_curl_once, [] { g_curl_init = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (g_curl_init != CURLE_OK)
    return Status::Unavailable(std::string("curl_global_init: ") + curl_easy_strerror(g_curl_init));
  return Status::Ok();
}

const std::string& SystemCaBundle() {
  static std::once_flag once;
  static std::string bundle;
  std::call_once(once, [] {
    std::string path = "/etc/ssl/certs/ca-certificates.crt";
#if LIBCURL_VERSION_NUM >= 0x075400  // CURLINFO_CAINFO: 7.84.0
    CurlPtr probe(curl_easy_init());
    char* where = nullptr;
    if (probe && curl_easy_getinfo(probe.get(), CURLINFO_CAINFO, &where) == CURLE_OK && where)
      path = where;
#endif
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      LOG_WARN("system CA bundle %s unreadable (%s); only the configured extra CAs are trusted",
               path.c_str(), std::strerror(errno));
      return;
    }
    char buf[65536];
    for (;;) {
      ssize_t n = read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        LOG_WARN("reading the system CA bundle %s: %s", path.c_str(), std::strerror(errno));
        bundle.clear();
        return;
      }
      if (n == 0) break;
      bundle.append(buf, static_cast<size_t>(n));
    }
  });
  return bundle;
}

Result<FetchOptions> FetchOptionsFromConfig(const Config& config) {
  FetchOptions o;
  o.timeout_seconds = config.download.timeout;
  o.connect_timeout_seconds = std::min(o.connect_timeout_seconds, o.timeout_seconds);
  uint64_t a = config.download.max_size, b = config.store.limit;
  o.max_bytes = a == 0 ? b : (b == 0 ? a : std::min(a, b));
  o.allow_private = config.download.allow_private;
  o.known_hosts = config.download.known_hosts;
  if (!config.download.ca.empty()) {
    Status st;
    std::string extra = ReadWholeFile(config.download.ca, &st);
    if (!st.ok()) return st.Wrap("download.ca");
    // CURLOPT_CAINFO_BLOB replaces the CA file rather than adding to it,
    // so the blob carries the system bundle too.
    o.ca_bundle = SystemCaBundle() + "\n" + extra + "\n";
  }
  return o;
}

std::string FetchContext(const std::string& url_text) {
  Result<Url> parsed = ParseUrl(url_text);
  return "GET " + ShownUrl(parsed.ok() ? parsed->Redacted() : RedactUrl(url_text));
}

std::vector<uint16_t> DownloadPorts(const std::string& url_text) {
  Result<Url> url = ParseUrl(url_text);
  if (!url.ok()) return {};
  uint16_t own = 0;
  if (url->port > 0 && url->port < 65536) own = static_cast<uint16_t>(url->port);
  else own = url->scheme == "https" ? 443 : url->scheme == "sftp" ? 22 : 80;
  std::vector<uint16_t> ports;
  if (own != 0) ports.push_back(own);
  if (url->scheme != "sftp") {
    for (uint16_t p : {80, 443})
      if (p != own) ports.push_back(p);
  }
  return ports;
}

Result<FetchResult> FetchBody(const std::string& url_text, PartFile* file,
                              const FetchOptions& options, const FetchHooks& hooks) {
  Result<Url> parsed = ParseUrl(url_text);
  if (!parsed.ok()) return parsed.status().Wrap("GET " + ShownUrl(RedactUrl(url_text)));
  const Url& url = *parsed;
  const std::string context = "GET " + ShownUrl(url.Redacted());
  auto fail = [&](const Status& st) -> Result<FetchResult> { return st.Wrap(context); };

  if (url.scheme != "http" && url.scheme != "https" && url.scheme != "sftp")
    return fail(Status::Permanent("unsupported scheme \"" + Printable(url.scheme, 20) +
                                  "\" (only http, https and sftp)"));
  if (!file->reserved()) return fail(Status::Transient("internal error: target not reserved"));
  if (Status st = InitFetch(); !st.ok()) return fail(st);

  CurlPtr curl(curl_easy_init());
  if (!curl) return fail(Status::Transient("curl_easy_init failed"));
  Transfer t;
  t.options = &options;
  t.hooks = &hooks;
  t.file = file;
  t.curl = curl.get();
  t.http = url.scheme != "sftp";
  char errbuf[CURL_ERROR_SIZE] = "";

  std::string plain_url = url.WithoutUserinfo();
  long connect_ms = static_cast<long>(options.connect_timeout_seconds) * 1000;
  if (!t.http) {
    connect_ms = static_cast<long>(options.sftp_default_timeout_ms);
    std::string timeout = url.QueryValue("timeout");
    if (!timeout.empty()) {
      Result<int64_t> ns = ParseGoDuration(timeout);
      if (ns.ok() && *ns > 0) {
        connect_ms =
            static_cast<long>(std::max<int64_t>(1, std::min<int64_t>(*ns / 1000000, INT32_MAX)));
      } else {
        LOG_WARN("%s: ignoring sftp timeout \"%s\" (%s); using %lld ms", hooks.log_prefix.c_str(),
                 Printable(timeout).c_str(),
                 ns.ok() ? "not positive" : ns.status().message().c_str(),
                 static_cast<long long>(options.sftp_default_timeout_ms));
      }
    }
    // sftp has no query string: keep it out of the remote path.
    Url bare = url;
    bare.raw_query.clear();
    plain_url = bare.WithoutUserinfo();
  }

  CURL* c = curl.get();
  CURLcode rc = CURLE_OK;
  const char* failed_opt = nullptr;
  auto set = [&](const char* name, CURLcode r) {
    if (r != CURLE_OK && rc == CURLE_OK) {
      rc = r;
      failed_opt = name;
    }
  };
#define DJINN_SETOPT(opt, val) set(#opt, curl_easy_setopt(c, opt, val))
  DJINN_SETOPT(CURLOPT_ERRORBUFFER, errbuf);
  DJINN_SETOPT(CURLOPT_URL, plain_url.c_str());
  DJINN_SETOPT(CURLOPT_PROTOCOLS_STR, "http,https,sftp");
  DJINN_SETOPT(CURLOPT_NOSIGNAL, 1L);
  DJINN_SETOPT(CURLOPT_PROXY, "");  // ignore *_proxy from the environment
  DJINN_SETOPT(CURLOPT_TIMEOUT, static_cast<long>(options.timeout_seconds));
  DJINN_SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
  DJINN_SETOPT(CURLOPT_LOW_SPEED_LIMIT, options.low_speed_bytes);
  DJINN_SETOPT(CURLOPT_LOW_SPEED_TIME, options.low_speed_seconds);
  DJINN_SETOPT(CURLOPT_BUFFERSIZE, options.buffer_size);
  DJINN_SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  DJINN_SETOPT(CURLOPT_WRITEFUNCTION, OnBody);
  DJINN_SETOPT(CURLOPT_WRITEDATA, &t);
  DJINN_SETOPT(CURLOPT_NOPROGRESS, 0L);
  DJINN_SETOPT(CURLOPT_XFERINFOFUNCTION, OnProgress);
  DJINN_SETOPT(CURLOPT_XFERINFODATA, &t);
  DJINN_SETOPT(CURLOPT_OPENSOCKETFUNCTION, OnOpenSocket);
  DJINN_SETOPT(CURLOPT_OPENSOCKETDATA, &t);
  if (url.has_user) {
    DJINN_SETOPT(CURLOPT_USERNAME, url.username.c_str());
    DJINN_SETOPT(CURLOPT_PASSWORD, url.password.c_str());
  }
  if (t.http) {
    DJINN_SETOPT(CURLOPT_HEADERFUNCTION, OnHeader);
    DJINN_SETOPT(CURLOPT_HEADERDATA, &t);
    DJINN_SETOPT(CURLOPT_FOLLOWLOCATION, 1L);
    DJINN_SETOPT(CURLOPT_MAXREDIRS, options.max_redirects);
    DJINN_SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    DJINN_SETOPT(CURLOPT_USERAGENT, "djinn-consumer/" DJINN_VERSION);
    if (url.has_user) DJINN_SETOPT(CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
  } else {
    DJINN_SETOPT(CURLOPT_SSH_AUTH_TYPES,
                 static_cast<long>(CURLSSH_AUTH_PASSWORD | CURLSSH_AUTH_KEYBOARD));
    if (!options.known_hosts.empty()) {
      DJINN_SETOPT(CURLOPT_SSH_KNOWNHOSTS, options.known_hosts.c_str());
      DJINN_SETOPT(CURLOPT_SSH_KEYFUNCTION, OnSshKey);
      DJINN_SETOPT(CURLOPT_SSH_KEYDATA, &t);
    }
  }
  // For http too: a redirect may lead to https.
  curl_blob ca{const_cast<char*>(options.ca_bundle.data()), options.ca_bundle.size(),
               CURL_BLOB_NOCOPY};
  if (!options.ca_bundle.empty() && t.http) DJINN_SETOPT(CURLOPT_CAINFO_BLOB, &ca);
#undef DJINN_SETOPT
  if (rc != CURLE_OK)
    return fail(Status::Transient(std::string("curl_easy_setopt(") + failed_opt +
                                  "): " + curl_easy_strerror(rc)));

  rc = curl_easy_perform(c);
  if (rc == CURLE_OK && t.failure.ok()) {
    if (!t.head_ok) {
      // Shorter than the header: the check explains what it lacks.
      Status st = CheckQcow2Header(std::string_view(t.head, t.head_have));
      if (st.ok() && t.head_have > 0) st = t.file->Write(t.head, t.head_have);
      if (st.ok()) t.head_ok = true;
      else t.Fail(st);
    }
    if (!t.failure.ok()) {
    } else if (t.http && !t.headers_ok) {
      // A 3xx libcurl chose not to follow (304, 305, ...): final, and wrong.
      std::string why = t.reason.empty() ? "" : " " + t.reason;
      t.Fail(
          Status::Permanent("HTTP " + std::to_string(t.status) + why + " (redirect not followed)"));
    }
  }
  Status outcome = t.failure;
  if (outcome.ok() && rc != CURLE_OK) outcome = FromCurlCode(rc, t, errbuf);
  if (!outcome.ok()) {
    char* effective = nullptr;
    std::string where = context;
    if (t.http && t.redirects > 0 &&
        curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective &&
        plain_url != effective) {
      where += " (redirected to " + ShownUrl(Printable(RedactUrl(effective), kMaxShownUrl)) + ")";
    }
    return outcome.Wrap(where);
  }
  UpdateProgress(&t, true);
  FetchResult r;
  r.bytes = t.bytes;
  r.seconds = std::chrono::duration<double>(Clock::now() - t.start).count();
  r.path = file->path();
  return r;
}

}  // namespace djinn
