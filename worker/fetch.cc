#include "worker/fetch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
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
// The download process looks at the store's free space each time this
// much more was written (fstatvfs: no I/O); with the size unknown, this
// much is what the next stretch needs.
constexpr uint64_t kSpaceCheckEvery = 2 << 20;
// What the worker allows for when it checks a "no room" report.
constexpr uint64_t kSpaceSlack = 1 << 20;

using AddrInfoPtr = std::unique_ptr<addrinfo, CFree<addrinfo, freeaddrinfo>>;

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

  // download.proxy in use: redirects are followed hop by hop by FetchBody
  // (follow_pending: the response at hand is a redirect to follow), each
  // hop's destination pinned (pin, CURLOPT_CONNECT_TO).
  bool proxied = false;
  bool follow_pending = false;
  CurlSlistPtr pin;
  std::vector<sockaddr_storage> proxy_addrs;  // the proxy's, port included
  bool proxy_socket = false;                  // the last socket went to it

  // Free space: checked again once this many bytes arrived since.
  uint64_t unchecked = kSpaceCheckEvery;
  uint64_t space_needed = 0;  // what the last check asked for

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

  // Resuming (fetch.h "Resuming"): the kept bytes [0, resume_from) and the
  // validator they were saved with; the current response's headers that
  // resuming needs; whether the sftp validator was looked at; and why the
  // kept bytes cannot be continued (FetchBody then starts over).
  uint64_t resume_from = 0;
  PartValidator saved;
  std::string etag, last_modified;
  std::optional<std::string> content_range;
  uint64_t range_total = 0;
  bool sftp_checked = false;
  std::string start_over;

  void Fail(Status st) {
    if (failure.ok()) failure = std::move(st);
  }
  Status TooLarge() const {
    return Status::Permanent("image larger than the " + std::to_string(options->max_bytes) +
                             "-byte limit");
  }
  Status CheckResponse();
  bool CheckRedirect();
  Status CheckSpace();
  bool AcceptResumed();
  bool RestartFromZero(const std::string& why);
  void ReportHttpValidator();
  bool CheckSftpValidator();
};

// A final response to a request for the rest (Range: bytes=N-, If-Range).
// False (start_over or failure set) when the transfer must stop.
bool Transfer::AcceptResumed() {
  if (status == 200) return RestartFromZero("the server sent the whole image");
  if (status == 416) {
    start_over = "the server refused the range (HTTP 416)";
    return false;
  }
  if (status != 206) return true;  // an error: CheckResponse says which
  ContentRange cr;
  std::optional<ContentRange> parsed;
  if (content_range) parsed = ParseContentRange(*content_range);
  if (parsed) cr = *parsed;
  if (!parsed) start_over = "a 206 answer without a usable Content-Range";
  else if (cr.first != resume_from)
    start_over = "a 206 answer from byte " + std::to_string(cr.first);
  else if (cr.total && cr.last + 1 != *cr.total)
    start_over = "a 206 answer that stops before the end";
  else if (content_length && *content_length != cr.last - cr.first + 1)
    start_over = "a 206 answer whose Content-Length does not match its Content-Range";
  else if (!etag.empty() && !saved.etag.empty() && etag != saved.etag)
    start_over = "the ETag changed";
  else if (!last_modified.empty() && !saved.last_modified.empty() &&
           last_modified != saved.last_modified)
    start_over = "Last-Modified changed";
  if (!start_over.empty()) return false;
  range_total = cr.last + 1;
  return true;
}

// The body at hand is the whole image: written from byte 0 again.
bool Transfer::RestartFromZero(const std::string& why) {
  if (Status st = file->Rewind(); !st.ok()) {
    Fail(std::move(st));
    return false;
  }
  LOG_INFO("%s: not resuming at byte %" PRIu64 ": %s; writing from byte 0",
           hooks->log_prefix.c_str(), resume_from, why.c_str());
  resume_from = 0;
  bytes = 0;
  head_have = 0;
  head_ok = false;
  return true;
}

// http(s): the final response's validator, told before its body is written.
void Transfer::ReportHttpValidator() {
  PartValidator v;
  v.etag = StrongEtag(etag);
  v.last_modified = ValidatorText(last_modified);
  if (resume_from > 0) {  // a 206: what the server left out stays as saved
    if (v.etag.empty()) v.etag = saved.etag;
    if (v.last_modified.empty()) v.last_modified = saved.last_modified;
  }
  if (hooks->validator) hooks->validator(v, file->rewound());
}

// sftp: the remote file's size (libcurl's stat: what is left after the
// seek) and mtime (CURLOPT_FILETIME), before the first byte is written.
// False (start_over set) when it is not the file the kept bytes came from.
bool Transfer::CheckSftpValidator() {
  if (sftp_checked) return true;
  sftp_checked = true;
  curl_off_t mtime = -1, left = -1;
  if (curl_easy_getinfo(curl, CURLINFO_FILETIME_T, &mtime) != CURLE_OK) mtime = -1;
  if (curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &left) != CURLE_OK) left = -1;
  PartValidator v;
  if (left >= 0) v.remote_size = static_cast<int64_t>(resume_from) + left;
  if (mtime >= 0) v.remote_mtime = mtime;
  if (resume_from > 0 &&
      (v.remote_size != saved.remote_size || v.remote_mtime != saved.remote_mtime)) {
    start_over = "the remote file changed (" + saved.Describe() + ", now " + v.Describe() + ")";
    return false;
  }
  if (hooks->validator) hooks->validator(v, file->rewound());
  return true;
}

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

// The store's free space against its floor, before the next stretch is
// written (see "Free space" in fetch.h).
Status Transfer::CheckSpace() {
  unchecked = 0;
  const StoreConfig& store = options->store;
  if (store.path.empty()) return Status::Ok();
  Result<StoreSpace> space = GetStoreSpace(file->fd(), store);
  if (!space.ok()) return space.status();
  const bool known = total > 0;
  if (known && total > space->total - std::min(space->total, space->floor)) {
    return Status::Permanent("image of " + HumanBytes(static_cast<double>(total)) +
                             " larger than the image store can hold (" +
                             HumanBytes(static_cast<double>(space->total)) + ", of which min_free " +
                             HumanBytes(static_cast<double>(space->floor)) + " stays free)");
  }
  space_needed = known ? (total > bytes ? total - bytes : 0) : kSpaceCheckEvery;
  return CheckStoreSpace(*space, space_needed, store.path);
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
    t->follow_pending = false;
    t->etag.clear();
    t->last_modified.clear();
    t->content_range.reset();
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
      if (!t->CheckRedirect()) return 0;
      t->follow_pending = t->proxied;  // FetchBody follows it
      return len;
    }
    if (t->resume_from > 0 && !t->AcceptResumed()) return 0;
    Status st = t->CheckResponse();
    if (st.ok() && t->resume_from > 0) {  // a 206: the limit is for the whole image
      t->total = t->range_total;
      if (t->options->max_bytes != 0 && t->total > t->options->max_bytes) st = t->TooLarge();
    }
    if (!st.ok()) {
      t->Fail(std::move(st));
      return 0;
    }
    t->headers_ok = true;
    t->ReportHttpValidator();
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
  } else if (name == "etag") {
    t->etag = value;
  } else if (name == "last-modified") {
    t->last_modified = value;
  } else if (name == "content-range") {
    t->content_range = value;
  }
  return len;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  if (!t->failure.ok()) return 0;
  if (t->follow_pending) return len;  // a redirect's body: not ours
  if (!t->http && !t->CheckSftpValidator()) return 0;
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
  if (t->unchecked >= kSpaceCheckEvery) {
    if (Status st = t->CheckSpace(); !st.ok()) {
      t->Fail(std::move(st));
      return 0;
    }
  }
  t->unchecked += len;
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
    t->total = t->resume_from + static_cast<uint64_t>(dltotal);  // dltotal: after the seek
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

std::string PortNotAllowed(uint16_t port, const std::string& host,
                           const std::vector<uint16_t>& ports) {
  std::string allowed;
  for (uint16_t p : ports) allowed += (allowed.empty() ? "" : ", ") + std::to_string(p);
  return "destination port " + std::to_string(port) + " not allowed (" + host +
         "; a download connects only to ports " + allowed + ")";
}

uint16_t UrlPort(const Url& url) {
  if (url.port > 0 && url.port < 65536) return static_cast<uint16_t>(url.port);
  return url.scheme == "https" ? 443 : url.scheme == "sftp" ? 22 : 80;
}

// Whether sa is one of the proxy's addresses, on its port.
bool IsProxyAddress(const Transfer& t, const struct sockaddr* sa) {
  for (const sockaddr_storage& p : t.proxy_addrs) {
    if (p.ss_family != sa->sa_family) continue;
    if (sa->sa_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(sa);
      const auto* b = reinterpret_cast<const sockaddr_in*>(&p);
      if (a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr) return true;
    } else if (sa->sa_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(sa);
      const auto* b = reinterpret_cast<const sockaddr_in6*>(&p);
      if (a->sin6_port == b->sin6_port &&
          std::memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0)
        return true;
    }
  }
  return false;
}

curl_socket_t OnOpenSocket(void* user, curlsocktype, struct curl_sockaddr* addr) {
  auto* t = static_cast<Transfer*>(user);
  // The operator's proxy: allowed wherever it is. Its destination was
  // checked (and pinned) before the transfer (PinDestination).
  t->proxy_socket = t->proxied && IsProxyAddress(*t, &addr->addr);
  if (t->proxy_socket) {
    int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    return fd < 0 ? CURL_SOCKET_BAD : fd;
  }
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
      if (t->refused.empty()) t->refused = PortNotAllowed(port, ConnectingHost(*t), ports);
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
// Proxies

// The addresses of download.proxy, for OnOpenSocket to tell its sockets
// from direct ones (no_proxy).
Status ResolveProxy(Transfer* t) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(t->options->proxy_port);
  int rc = getaddrinfo(t->options->proxy_host.c_str(), port.c_str(), &hints, &res);
  AddrInfoPtr hold(res);
  if (rc != 0)
    return Status::Transient(std::string("download.proxy: cannot resolve the proxy (") +
                             gai_strerror(rc) + ")");
  for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
    if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
    t->proxy_addrs.push_back(ss);
  }
  return Status::Ok();
}

// Before each hop through the proxy: the hop's port must be allowed, and
// unless download.allow_private its host must resolve (here, not at the
// proxy) to a public address, which is then pinned (CURLOPT_CONNECT_TO,
// any host and port of this hop to that address): the proxy is asked for
// the address we checked, never for the name.
Status PinDestination(Transfer* t, const std::string& hop) {
  Result<Url> url = ParseUrl(hop);
  if (!url.ok()) return url.status();
  const uint16_t port = UrlPort(*url);
  const auto& ports = t->options->tcp_ports;
  if (!ports.empty() && std::find(ports.begin(), ports.end(), port) == ports.end())
    return Status::Permanent(PortNotAllowed(port, url->DisplayHost(), ports));
  t->pin.reset();
  curl_easy_setopt(t->curl, CURLOPT_CONNECT_TO, nullptr);
  if (t->options->allow_private) return Status::Ok();
  const std::string& prefix = t->hooks->log_prefix;
  if (Result<AddressClass> literal = ClassifyAddress(url->host); literal.ok()) {
    if (*literal == AddressClass::kPublic) return Status::Ok();  // nothing to resolve
    LOG_DEBUG("%s: refused %s through the proxy (%s)", prefix.c_str(), url->DisplayHost().c_str(),
              AddressClassName(*literal));
    return Status::Permanent(DestinationNotAllowed(*url, "download.allow_private"));
  }
  for (char ch : url->host) {
    if (static_cast<unsigned char>(ch) >= 0x80)
      return Status::Permanent("host " + url->DisplayHost() +
                               " is not plain ASCII and cannot be checked before it goes to "
                               "download.proxy (set download.allow_private to allow)");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(url->host.c_str(), nullptr, &hints, &res);
  AddrInfoPtr hold(res);
  if (rc != 0)
    return Status::Transient("cannot resolve " + url->DisplayHost() + " (" + gai_strerror(rc) +
                             "; the destination is checked before it goes to download.proxy)");
  for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
    std::string text;
    AddressClass c = ClassifySockaddr(a->ai_addr, a->ai_addrlen, &text);
    if (c != AddressClass::kPublic) {
      LOG_DEBUG("%s: %s: not pinning %s (%s)", prefix.c_str(), url->DisplayHost().c_str(),
                text.c_str(), AddressClassName(c));
      continue;
    }
    std::string entry = "::" + (a->ai_family == AF_INET6 ? "[" + text + "]" : text) + ":";
    t->pin.reset(curl_slist_append(nullptr, entry.c_str()));
    if (!t->pin) return Status::Transient("out of memory pinning the destination");
    if (CURLcode set = curl_easy_setopt(t->curl, CURLOPT_CONNECT_TO, t->pin.get()); set != CURLE_OK)
      return Status::Transient(std::string("curl_easy_setopt(CURLOPT_CONNECT_TO): ") +
                               curl_easy_strerror(set));
    LOG_DEBUG("%s: %s pinned to %s through the proxy", prefix.c_str(),
              url->DisplayHost().c_str(), text.c_str());
    return Status::Ok();
  }
  return Status::Permanent(DestinationNotAllowed(*url, "download.allow_private"));
}

bool SameOrigin(const Url& a, const Url& b) {
  return a.scheme == b.scheme && Lower(a.host) == Lower(b.host) && UrlPort(a) == UrlPort(b);
}

// ---------------------------------------------------------------------------

// How a libcurl error that no callback explained is classified.
Status FromCurlCode(CURLcode rc, const Transfer& t, const char* errbuf) {
  if (rc == CURLE_COULDNT_CONNECT && !t.refused.empty()) return Status::Permanent(t.refused);
  if (rc == CURLE_PEER_FAILED_VERIFICATION && !t.hostkey_error.empty())
    return Status::Permanent(t.hostkey_error);
  std::string msg = errbuf[0] != '\0' ? Trim(errbuf) : curl_easy_strerror(rc);
  msg = Printable(RedactUrl(msg), 300);
  if (t.proxied) {
    // The proxy's own trouble: transient, and worded without its address
    // (the error column is the user's; the details go to our log).
    const char* what = nullptr;
    if (rc == CURLE_COULDNT_RESOLVE_PROXY) what = "cannot resolve the proxy";
    else if (rc == CURLE_COULDNT_CONNECT && t.proxy_socket) what = "cannot connect to the proxy";
    else if (msg.find("CONNECT tunnel failed") != std::string::npos) what = "the proxy refused the tunnel";
#if LIBCURL_VERSION_NUM >= 0x074900  // CURLE_PROXY: 7.73.0
    else if (rc == CURLE_PROXY) what = "the proxy failed";
#endif
    if (what != nullptr) {
      LOG_WARN("%s: download.proxy: %s", t.hooks->log_prefix.c_str(), msg.c_str());
      size_t response = msg.find("response ");
      std::string code = response == std::string::npos ? "" : " (" + msg.substr(response) + ")";
      return Status::Transient(std::string("download.proxy: ") + what + code);
    }
  }
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

Status PartFile::Reserve(const FetchTarget& target, bool* busy, const DownloadIdentity* resume) {
  *busy = false;
  Discard();
  has_identity_ = resume != nullptr;
  identity_ = resume != nullptr ? *resume : DownloadIdentity{};
  resume_from_ = 0;
  resume_validator_ = PartValidator{};
  resume_note_.clear();
  rewound_ = false;
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
    if (!fd.valid()) {
      const int err = errno;
      struct stat other {};
      if ((err == EACCES || err == EPERM) &&
          fstatat(dir.get(), part_.c_str(), &other, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISREG(other.st_mode) && other.st_uid != geteuid()) {
        const int64_t age = static_cast<int64_t>(time(nullptr)) - other.st_mtime;
        if (age < foreign_stale_after_) {
          *busy = true;
          return Status::Transient(PartPath() + " belongs to uid " + std::to_string(other.st_uid) +
                                   " (another host or user) and was written " +
                                   std::to_string(age) + "s ago");
        }
        if (unlinkat(dir.get(), part_.c_str(), 0) != 0 && errno != ENOENT)
          return Err("removing the abandoned " + PartPath(), errno);
        for (const char* sidecar : {".meta", ".meta.tmp"})
          unlinkat(dir.get(), (part_ + sidecar).c_str(), 0);
        LOG_WARN("removed %s: abandoned (uid %u, last written %llds ago); every host sharing a "
                 "store should run its workers as the same user",
                 PartPath().c_str(), static_cast<unsigned>(other.st_uid),
                 static_cast<long long>(age));
        continue;
      }
      return Err("creating " + PartPath(), err);
    }
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
    dir_ = std::move(dir);
    fd_ = std::move(fd);
    // The bytes an earlier try of this download kept, or none (truncated).
    const uint64_t keep = LoadResume(resume);
    Status positioned = Status::Ok();
    if (keep == 0 && ftruncate(fd_.get(), 0) != 0) positioned = Err("truncating " + PartPath(), errno);
    if (keep > 0 && lseek(fd_.get(), static_cast<off_t>(keep), SEEK_SET) < 0)
      positioned = Err("seeking in " + PartPath(), errno);
    if (!positioned.ok()) {
      fd_.Reset();  // not unlinked: as before the lock was ours
      dir_.Reset();
      return positioned;
    }
    written_ = keep;
    flushed_ = keep;
    resume_from_ = keep;
    return Status::Ok();
  }
  return Status::Transient("cannot get a stable " + PartPath());
}

// The sidecar describes the .part only while no try holds its lock: it is
// removed as soon as it is read, and written again only by Keep().
uint64_t PartFile::LoadResume(const DownloadIdentity* id) {
  const std::string meta = part_ + kPartMetaSuffix;
  std::string text;
  UniqueFd in(openat(dir_.get(), meta.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  const bool found = in.valid();
  if (found) {
    char buf[4097];  // a sidecar is at most 4096 bytes; more is refused
    size_t have = 0;
    while (have < sizeof buf) {
      ssize_t n = read(in.get(), buf + have, sizeof buf - have);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      have += static_cast<size_t>(n);
    }
    text.assign(buf, have);
    in.Reset();
  }
  for (const std::string& name : {meta, meta + ".tmp"}) {
    if (unlinkat(dir_.get(), name.c_str(), 0) != 0 && errno != ENOENT)
      LOG_WARN("cannot remove %s/%s: %s", dir_path_.c_str(), name.c_str(), std::strerror(errno));
  }
  struct stat st {};
  if (id == nullptr || fstat(fd_.get(), &st) != 0 || st.st_size == 0) return 0;
  if (!found) {
    resume_note_ = "no validator was kept with it";
    return 0;
  }
  Result<PartMeta> saved = ParsePartMeta(text);
  if (!saved.ok()) {
    resume_note_ = saved.status().message();
    return 0;
  }
  std::string why = ResumeRefusal(*saved, *id, static_cast<int64_t>(time(nullptr)),
                                  static_cast<uint64_t>(st.st_size));
  if (why.empty()) {
    if (Status head = CheckHead(); !head.ok()) why = "its header: " + head.message();
  }
  if (!why.empty()) {
    resume_note_ = why;
    return 0;
  }
  resume_validator_ = saved->validator;
  return saved->length;
}

Status PartFile::Keep(const PartValidator& v, uint64_t length) {
  if (!fd_.valid() || committed_ || !has_identity_)
    return Status::Transient("internal error: no .part to keep for a download");
  Result<uint64_t> size = Size();
  if (!size.ok()) return size.status();
  if (length > *size)
    return Status::Transient(PartPath() + ": " + std::to_string(length) +
                             " bytes reported written, " + std::to_string(*size) + " there");
  if (Status st = TruncateTo(length); !st.ok()) return st;
  if (fsync(fd_.get()) != 0) return Err("fsync " + PartPath(), errno);
  PartMeta m;
  m.image_id = identity_.image_id;
  m.source_digest = SourceDigest(identity_.source);
  m.saved_at = static_cast<int64_t>(time(nullptr));
  m.length = length;
  m.validator = v;
  const std::string text = FormatPartMeta(m);
  const std::string meta = part_ + kPartMetaSuffix, tmp = meta + ".tmp";
  UniqueFd out(
      openat(dir_.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640));
  if (!out.valid()) return Err("creating " + dir_path_ + "/" + tmp, errno);
  Status st = Status::Ok();
  for (size_t off = 0; off < text.size() && st.ok();) {
    ssize_t n = ::write(out.get(), text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) st = Err("writing " + dir_path_ + "/" + tmp, errno);
    else off += static_cast<size_t>(n);
  }
  if (st.ok() && fsync(out.get()) != 0) st = Err("fsync " + dir_path_ + "/" + tmp, errno);
  if (st.ok()) st = out.Close().Wrap(dir_path_ + "/" + tmp);
  if (st.ok() && renameat(dir_.get(), tmp.c_str(), dir_.get(), meta.c_str()) != 0)
    st = Err("renaming " + dir_path_ + "/" + tmp, errno);
  if (!st.ok()) {
    unlinkat(dir_.get(), tmp.c_str(), 0);
    return st;
  }
  if (fsync(dir_.get()) != 0) LOG_WARN("fsync %s: %s", dir_path_.c_str(), std::strerror(errno));
  // The lock goes with the descriptor; the .part and its sidecar stay.
  fd_.Reset();
  dir_.Reset();
  return Status::Ok();
}

Result<uint64_t> PartFile::Size() const {
  struct stat st {};
  if (fstat(fd_.get(), &st) != 0) return Err("fstat " + PartPath(), errno);
  return static_cast<uint64_t>(st.st_size);
}

Status PartFile::TruncateTo(uint64_t length) {
  Result<uint64_t> size = Size();
  if (!size.ok()) return size.status();
  if (*size > length && ftruncate(fd_.get(), static_cast<off_t>(length)) != 0)
    return Err("truncating " + PartPath(), errno);
  return Status::Ok();
}

Status PartFile::CheckHead() const {
  char head[kQcow2CheckBytes];
  size_t have = 0;
  while (have < sizeof head) {
    ssize_t n = pread(fd_.get(), head + have, sizeof head - have, static_cast<off_t>(have));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Err("reading " + PartPath(), errno);
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  return CheckQcow2Header(std::string_view(head, have));
}

Status PartFile::Rewind() {
  if (lseek(fd_.get(), 0, SEEK_SET) < 0) return Err("seeking in " + PartPath(), errno);
  written_ = 0;
  flushed_ = 0;
  resume_from_ = 0;
  rewound_ = true;
  return Status::Ok();
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
  if (Status check = CheckHead(); !check.ok()) return check;
  return static_cast<uint64_t>(st.st_size);
}

Status PartFile::CheckStore() const {
  struct statvfs vfs {};
  if (fstatvfs(fd_.get(), &vfs) != 0) return Err("statvfs " + dir_path_, errno);
  if (vfs.f_flag & ST_RDONLY) return Err("writing " + PartPath(), EROFS);
  if (fsync(fd_.get()) != 0) return Err("fsync " + PartPath(), errno);
  return Status::Ok();
}

Status PartFile::ConfirmNoSpace(const StoreConfig& store, uint64_t needed) const {
  Result<StoreSpace> space = GetStoreSpace(fd_.get(), store);
  if (!space.ok()) return space.status();
  const std::string& where = store.path.empty() ? dir_path_ : store.path;
  // More than the file system could ever hold beside its floor: no wait
  // would help (an honest download process refuses such an image itself),
  // so this is not the store's outage; a hostile child claiming it cannot
  // hold its job back forever.
  if (space->total <= space->floor || needed > space->total - space->floor) return Status::Ok();
  if (Status st = CheckStoreSpace(*space, needed + kSpaceSlack, where); !st.ok()) {
    // Said with what the download still had to write, not the slack.
    Status plain = CheckStoreSpace(*space, needed, where);
    return plain.ok() ? st : plain;
  }
  // An exhausted quota does not show in statvfs: try to allocate.
  struct stat st {};
  if (fstat(fd_.get(), &st) != 0) return Err("fstat " + PartPath(), errno);
  int rc = fallocate(fd_.get(), 0, st.st_size, static_cast<off_t>(kSpaceSlack));
  if (rc != 0 && (errno == ENOSPC || errno == EDQUOT))
    return Status::Unavailable("store " + where + ": " + std::strerror(errno) +
                               " (allocating 1 MiB); downloads wait");
  if (rc == 0 && ftruncate(fd_.get(), st.st_size) != 0) return Err("truncating " + PartPath(), errno);
  return Status::Ok();
}

Result<StoreSpace> GetStoreSpace(int fd, const StoreConfig& store) {
  struct statvfs vfs {};
  if (fstatvfs(fd, &vfs) != 0)
    return Status::FromErrno("statvfs " + store.path, errno, Status::Kind::kUnavailable);
  StoreSpace s;
  s.total = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
  s.avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  s.floor = store.path.empty() ? 0 : store.MinFreeBytes(s.total);  // no store: no floor
  return s;
}

Status CheckStoreSpace(const StoreSpace& space, uint64_t needed, const std::string& path) {
  if (space.avail >= space.floor && space.avail - space.floor >= needed) return Status::Ok();
  std::string free = HumanBytes(static_cast<double>(space.avail)) + " free, ";
  std::string floor = "min_free " + HumanBytes(static_cast<double>(space.floor));
  if (needed == 0) return Status::Unavailable("store " + path + ": " + free + "below " + floor + "; downloads wait");
  return Status::Unavailable("store " + path + ": " + free +
                             HumanBytes(static_cast<double>(needed)) +
                             " more needed by an image, plus " + floor + "; downloads wait");
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
  // without an attempt counted, a full disk or quota included (an image
  // too large for the store as a whole is refused before: CheckSpace).
  return Status::FromErrno(what, err, Status::Kind::kUnavailable);
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
  o.store = config.store;
  if (!config.download.proxy.empty()) {
    // Validated when the configuration was read; the message never
    // carries the password.
    Result<Url> proxy = ParseUrl(config.download.proxy);
    if (!proxy.ok()) return proxy.status().Wrap("download.proxy");
    const Url& p = *proxy;
    // libcurl's defaults: 443 for an https proxy, 1080 for the others.
    o.proxy_port = p.port > 0 && p.port < 65536 ? static_cast<uint16_t>(p.port)
                                                : (p.scheme == "https" ? 443 : 1080);
    o.proxy_host = p.host;
    o.proxy = p.scheme + "://" + (p.ipv6 ? "[" + p.host + "]" : p.host) + ":" +
              std::to_string(o.proxy_port);
    o.proxy_has_user = p.has_user;
    o.proxy_user = p.username;
    o.proxy_password = p.password;
    o.no_proxy = config.download.no_proxy;
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
  uint16_t own = UrlPort(*url);
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
  t.proxied = !options.proxy.empty();
  if (t.proxied) {
    if (Status st = ResolveProxy(&t); !st.ok()) return fail(st);
  }
  if (file->resume_from() > 0) {
    // Continuing kept bytes: their header is checked before anything more
    // is written, as a fresh body's is.
    if (Status head = file->CheckHead(); head.ok()) {
      t.resume_from = t.bytes = file->resume_from();
      t.saved = file->resume_validator();
      t.head_ok = true;
    } else if (Status st = file->Rewind(); !st.ok()) {
      return fail(st);
    }
  }
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
  // download.proxy or none; never *_proxy from the environment.
  DJINN_SETOPT(CURLOPT_PROXY, options.proxy.c_str());
  if (t.proxied) {
    DJINN_SETOPT(CURLOPT_NOPROXY, options.no_proxy.c_str());  // "" also ignores no_proxy
    // Every scheme through a CONNECT tunnel (HTTP proxies; SOCKS ones
    // tunnel anyway): the proxy is asked for the pinned address.
    DJINN_SETOPT(CURLOPT_HTTPPROXYTUNNEL, 1L);
    DJINN_SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);  // not the image's headers
    if (options.proxy_has_user) {
      DJINN_SETOPT(CURLOPT_PROXYUSERNAME, options.proxy_user.c_str());
      DJINN_SETOPT(CURLOPT_PROXYPASSWORD, options.proxy_password.c_str());
    }
  }
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
    DJINN_SETOPT(CURLOPT_FOLLOWLOCATION, t.proxied ? 0L : 1L);  // proxied: hop by hop, below
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
  if (!options.ca_bundle.empty() && t.proxied) DJINN_SETOPT(CURLOPT_PROXY_CAINFO_BLOB, &ca);
  // Resuming: the rest of the kept bytes' content. http: CURLOPT_RANGE,
  // not CURLOPT_RESUME_FROM_LARGE, which makes libcurl fail a 200 answer
  // (CURLE_RANGE_ERROR) where we take it and write from byte 0.
  std::string range = std::to_string(t.resume_from) + "-";
  CurlSlistPtr if_range;
  if (t.resume_from > 0 && t.http) {
    if_range.reset(curl_slist_append(nullptr, ("If-Range: " + t.saved.IfRange()).c_str()));
    if (!if_range) return fail(Status::Transient("out of memory (If-Range)"));
    DJINN_SETOPT(CURLOPT_RANGE, range.c_str());
    DJINN_SETOPT(CURLOPT_HTTPHEADER, if_range.get());
  }
  if (!t.http) {
    DJINN_SETOPT(CURLOPT_FILETIME, 1L);  // the remote mtime: half the sftp validator
    if (t.resume_from > 0)
      DJINN_SETOPT(CURLOPT_RESUME_FROM_LARGE, static_cast<curl_off_t>(t.resume_from));
  }
#undef DJINN_SETOPT
  if (rc != CURLE_OK)
    return fail(Status::Transient(std::string("curl_easy_setopt(") + failed_opt +
                                  "): " + curl_easy_strerror(rc)));

  // Through a proxy, redirects are followed here: each hop's destination
  // is checked and pinned before it is connected to (PinDestination).
  std::string hop_url = plain_url;
  bool own_credentials = url.has_user;
  for (;;) {
    if (t.proxied) {
      if (Status st = PinDestination(&t, hop_url); !st.ok()) {
        t.Fail(st);
        break;
      }
    }
    t.follow_pending = false;
    rc = curl_easy_perform(c);
    if (!t.proxied || rc != CURLE_OK || !t.failure.ok() || !t.follow_pending) break;
    char* next = nullptr;
    if (curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &next) != CURLE_OK || next == nullptr) {
      t.follow_pending = false;  // reported below as a redirect not followed
      break;
    }
    Result<Url> hop = ParseUrl(next);
    if (!hop.ok()) {
      t.Fail(Status::Permanent("redirect to a malformed URL (" + hop.status().message() + ")"));
      break;
    }
    hop_url = hop->WithoutUserinfo();
    // The URL's credentials go to its own scheme, host and port only.
    if (own_credentials && !SameOrigin(url, *hop)) {
      own_credentials = false;
      curl_easy_setopt(c, CURLOPT_USERNAME, nullptr);
      curl_easy_setopt(c, CURLOPT_PASSWORD, nullptr);
    }
    if (CURLcode r = curl_easy_setopt(c, CURLOPT_URL, hop_url.c_str()); r != CURLE_OK) {
      t.Fail(Status::Transient(std::string("curl_easy_setopt(CURLOPT_URL): ") +
                               curl_easy_strerror(r)));
      break;
    }
  }
  // Resuming: an sftp file with nothing left to send is checked here; kept
  // bytes that cannot be continued are written anew, once, in this try.
  if (!t.http && rc == CURLE_OK && t.failure.ok()) t.CheckSftpValidator();
  if (t.resume_from > 0 && t.failure.ok() &&
      (!t.start_over.empty() || rc == CURLE_BAD_DOWNLOAD_RESUME)) {
    LOG_INFO("%s: not resuming at byte %" PRIu64 ": %s; starting over from byte 0",
             hooks.log_prefix.c_str(), t.resume_from,
             t.start_over.empty() ? "the remote file is shorter now" : t.start_over.c_str());
    curl.reset();
    if (Status st = file->Rewind(); !st.ok()) return fail(st);
    return FetchBody(url_text, file, options, hooks);
  }
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
    if (outcome.unavailable() && hooks.space_short) {
      // The store (full, or failing): what this image still needed.
      hooks.space_short(t.total > t.bytes ? t.total - t.bytes : t.space_needed);
    }
    char* effective = nullptr;
    std::string where = context;
    if (t.proxied) {
      if (hop_url != plain_url)
        where += " (redirected to " + ShownUrl(Printable(RedactUrl(hop_url), kMaxShownUrl)) + ")";
    } else if (t.http && t.redirects > 0 &&
               curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective &&
               plain_url != effective) {
      where += " (redirected to " + ShownUrl(Printable(RedactUrl(effective), kMaxShownUrl)) + ")";
    }
    return outcome.Wrap(where);
  }
  UpdateProgress(&t, true);
  FetchResult r;
  r.bytes = t.bytes;
  r.resumed_from = t.resume_from;
  r.seconds = std::chrono::duration<double>(Clock::now() - t.start).count();
  r.path = file->path();
  return r;
}

}  // namespace djinn
