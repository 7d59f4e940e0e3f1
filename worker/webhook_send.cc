#include "worker/webhook_send.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <string_view>

#include "common/c_handles.h"
#include "common/log.h"
#include "common/text.h"
#include "common/unique_fd.h"
#include "common/url.h"
#include "worker/fetch.h"

namespace djinn {
namespace {

using Clock = std::chrono::steady_clock;

// A URL in a message is cut beyond this, as in fetch.cc.
constexpr size_t kMaxShownUrl = 1024;
// Go's http.DefaultTransport dials with a 30 s timeout.
constexpr long kConnectTimeoutMs = 30 * 1000;

// ---------------------------------------------------------------------------
// Small helpers

// Library text (libcurl's error buffer) going into a one-line message:
// printable ASCII only, bounded.
bool IsSpaceOrTab(char c) { return c == ' ' || c == '\t'; }

// textproto.TrimString: ASCII space, tab, CR and LF off both ends.
std::string_view TrimGo(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

bool EqualFold(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// RFC 7230 tchar, which is Go's validHeaderFieldByte.
bool IsTokenByte(unsigned char c) {
  if (c >= 0x80) return false;
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

// textproto.CanonicalMIMEHeaderKey.
std::string CanonicalHeaderKey(std::string_view key) {
  std::string out(key);
  for (unsigned char c : key) {
    if (!IsTokenByte(c)) return out;  // not a token: Go leaves it alone
  }
  bool upper = true;
  for (char& c : out) {
    if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (!upper && c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    upper = c == '-';
  }
  return out;
}

// The response headers as Go's client keeps them in http.Response.Header,
// written by Header.Write. lines: "Name: value" as received (CR LF gone),
// continuation lines starting with a space or tab.
std::string GoHeaderText(const std::vector<std::string>& lines, int code, bool http11) {
  // Header.Write sorts keys byte-wise; std::string's ordering is
  // unsigned-byte-wise too (char_traits<char>::compare).
  std::map<std::string, std::vector<std::string>> fields;
  std::vector<std::string>* last = nullptr;
  for (const std::string& line : lines) {
    if (!line.empty() && IsSpaceOrTab(line[0])) {
      // A folded line (obs-fold): textproto joins it with one space.
      if (last != nullptr && !last->empty()) {
        std::string& v = last->back();
        v = std::string(TrimGo(v)) + " " + std::string(TrimGo(line));
      }
      continue;
    }
    size_t colon = line.find(':');
    if (colon == 0 || colon == std::string::npos) {
      last = nullptr;  // Go refuses such a response; keep what makes sense
      continue;
    }
    last = &fields[CanonicalHeaderKey(std::string_view(line).substr(0, colon))];
    last->push_back(line.substr(colon + 1));
  }
  for (auto& [key, values] : fields) {
    for (std::string& v : values) v = std::string(TrimGo(v));
  }

  // What Go's transfer reader takes out of the header map.
  bool chunked = false;
  if (auto te = fields.find("Transfer-Encoding"); te != fields.end()) {
    chunked = http11 && te->second.size() == 1 && EqualFold(te->second[0], "chunked");
    fields.erase(te);
  }
  if (auto cl = fields.find("Content-Length"); cl != fields.end() && cl->second.size() > 1) {
    if (std::all_of(cl->second.begin(), cl->second.end(),
                    [&](const std::string& v) { return v == cl->second[0]; })) {
      cl->second.resize(1);
    }
  }
  bool has_body_rules = code / 100 != 1 && code != 204 && code != 304;
  if (chunked && has_body_rules) fields.erase("Content-Length");
  if (chunked) fields.erase("Trailer");

  std::string out;
  for (const auto& [key, values] : fields) {
    for (std::string v : values) {
      std::replace(v.begin(), v.end(), '\n', ' ');
      std::replace(v.begin(), v.end(), '\r', ' ');
      out += key + ": " + std::string(TrimGo(v)) + "\r\n";
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// One exchange: what libcurl's callbacks share.

struct Exchange {
  bool allow_private = false;
  bool refused = false;  // OnOpenSocket refused an address (SSRF guard)

  // The response being read; reset on each status line (1xx answers).
  int status = 0;
  bool http11 = true;
  std::vector<std::string> lines;
  bool answered = false;  // the final answer's headers are complete

  std::string body;
};

// Status line, header lines, the blank line, and after the body any
// trailers (ignored: Go keeps them out of Response.Header).
size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  size_t len = size * n;
  if (x->answered) return len;
  std::string_view line(data, len);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.substr(0, 5) == "HTTP/") {
    x->status = 0;
    x->lines.clear();
    x->http11 = line.substr(0, 8) != "HTTP/1.0";
    size_t sp = line.find(' ');
    if (sp != std::string_view::npos) {
      std::string_view rest = line.substr(sp + 1);
      int code = 0;
      for (size_t i = 0; i < rest.size() && i < 3 && rest[i] >= '0' && rest[i] <= '9'; ++i)
        code = code * 10 + (rest[i] - '0');
      x->status = code;
    }
    return len;
  }
  if (line.empty()) {
    // An interim 1xx answer is followed by the real one. (A status line
    // without a code does not get here: libcurl refuses it.)
    if (x->status >= 200) x->answered = true;
    return len;
  }
  x->lines.emplace_back(line);
  return len;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  size_t len = size * n;
  size_t room = kMaxWebhookResponseBody - std::min(kMaxWebhookResponseBody, x->body.size());
  x->body.append(data, std::min(len, room));
  return len;  // the rest is read and dropped
}

curl_socket_t OnOpenSocket(void* user, curlsocktype, struct curl_sockaddr* addr) {
  auto* x = static_cast<Exchange*>(user);
  if (!x->allow_private) {
    std::string text;
    AddressClass c = ClassifySockaddr(&addr->addr, addr->addrlen, &text);
    if (c != AddressClass::kPublic) {
      // The resolved address goes to the operators' log only: the recorded
      // error names the URL's host (DestinationNotAllowed).
      x->refused = true;
      LOG_DEBUG("webhook: refused to connect to %s (%s)", text.c_str(), AddressClassName(c));
      return CURL_SOCKET_BAD;
    }
  }
  int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  return fd < 0 ? CURL_SOCKET_BAD : fd;
}

// A libcurl failure before any answer arrived.
Status FromCurlCode(CURLcode rc, const Exchange& x, const Url& url, const char* errbuf) {
  if (rc == CURLE_COULDNT_CONNECT && x.refused)
    return Status::Permanent(DestinationNotAllowed(url, "webhooks.allow_private"));
  std::string msg = Printable(RedactUrl(errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc)), 300);
  while (!msg.empty() && msg.back() == ' ') msg.pop_back();
  switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return Status::Permanent(msg);
    default:
      // Timeouts, refused or reset connections, DNS failures, TLS trouble
      // (also an unverifiable certificate: the receiver may fix it), out of
      // memory: worth another try.
      return Status::Transient(msg);
  }
}

// The request's own header lines for CURLOPT_HTTPHEADER, libcurl's
// defaults switched off. kPermanent for a header that cannot be sent as is.
Status BuildHeaderList(const WebhookRequest& request, CurlSlistPtr* list) {
  bool has_accept = false, has_type = false, has_expect = false;
  auto add = [&](const std::string& line) {
    // Appending returns the head of the list (a new one only when it was
    // empty) or null, leaving the list as it was.
    curl_slist* head = curl_slist_append(list->get(), line.c_str());
    if (head == nullptr) return false;
    if (!*list) list->reset(head);
    return true;
  };
  for (const auto& [name, value] : request.headers) {
    if (name.empty() ||
        !std::all_of(name.begin(), name.end(), [](char c) { return IsTokenByte(c); }))
      return Status::Permanent("invalid header name \"" + Printable(name, 60) + "\"");
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      return Status::Permanent("header " + name + " has a CR, LF or NUL in its value");
    if (EqualFold(name, "Content-Length") && value != std::to_string(request.body.size()))
      return Status::Permanent("header Content-Length is \"" + Printable(value, 30) +
                               "\" but the body has " + std::to_string(request.body.size()) +
                               " bytes");
    has_accept = has_accept || EqualFold(name, "Accept");
    has_type = has_type || EqualFold(name, "Content-Type");
    has_expect = has_expect || EqualFold(name, "Expect");
    // "Name:" (or "Name:" and blanks) would tell libcurl to remove the
    // header; "Name;" sends "Name:", an empty value.
    bool blank = std::all_of(value.begin(), value.end(), [](char c) { return IsSpaceOrTab(c); });
    if (!add(blank ? name + ";" : name + ": " + value))
      return Status::Transient("curl_slist_append failed");
  }
  // "Name:" with nothing after it removes one of libcurl's own headers.
  if ((!has_accept && !add("Accept:")) || (!has_type && !add("Content-Type:")) ||
      (!has_expect && !add("Expect:")))
    return Status::Transient("curl_slist_append failed");
  return Status::Ok();
}

}  // namespace

WebhookResponse PostWebhook(const WebhookRequest& request) {
  WebhookResponse out;
  Clock::time_point start = Clock::now();
  auto finish = [&](Status error) {
    out.error = std::move(error);
    out.duration_ns = std::max<int64_t>(
        1, std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
    if (!out.error.ok()) {
      out.code = 0;
      out.headers.clear();
      out.body.clear();
    }
    return std::move(out);
  };

  Result<Url> parsed = ParseUrl(request.url);
  if (!parsed.ok()) {
    std::string shown = RedactUrl(request.url);
    if (shown.size() > kMaxShownUrl) shown = shown.substr(0, kMaxShownUrl) + "...";
    return finish(parsed.status().Wrap("POST " + Printable(shown, kMaxShownUrl + 3)));
  }
  const Url& url = *parsed;
  const std::string plain_url = url.WithoutUserinfo();
  std::string shown =
      plain_url.size() > kMaxShownUrl ? plain_url.substr(0, kMaxShownUrl) + "..." : plain_url;
  const std::string context = "POST " + Printable(shown, kMaxShownUrl + 3);

  if (url.scheme != "http" && url.scheme != "https")
    return finish(Status::Permanent("unsupported scheme \"" + Printable(url.scheme, 20) +
                                    "\" (only http and https)")
                      .Wrap(context));
  CurlSlistPtr headers;
  if (Status st = BuildHeaderList(request, &headers); !st.ok()) return finish(st.Wrap(context));
  if (Status st = InitFetch(); !st.ok()) return finish(st.Wrap(context));

  // CURLOPT_CAINFO_BLOB replaces the system store, so the blob carries it.
  std::string ca;
  if (!request.ca_bundle.empty() && url.scheme == "https")
    ca = SystemCaBundle() + "\n" + request.ca_bundle + "\n";

  CurlPtr curl(curl_easy_init());
  if (!curl) return finish(Status::Transient("curl_easy_init failed").Wrap(context));
  CURL* c = curl.get();
  Exchange x;
  x.allow_private = request.allow_private;
  char errbuf[CURL_ERROR_SIZE] = "";
  long timeout_ms = static_cast<long>(std::max(1, request.timeout_seconds)) * 1000;

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
  DJINN_SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
  DJINN_SETOPT(CURLOPT_NOSIGNAL, 1L);
  DJINN_SETOPT(CURLOPT_PROXY, "");  // ignore *_proxy from the environment
  DJINN_SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
  // HTTP/1.1 over TLS too: the headers go out with the case they were given.
  DJINN_SETOPT(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  DJINN_SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
  DJINN_SETOPT(CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, kConnectTimeoutMs));
  DJINN_SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
  DJINN_SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
  DJINN_SETOPT(CURLOPT_POST, 1L);
  DJINN_SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  DJINN_SETOPT(CURLOPT_POSTFIELDS, request.body.data());
  DJINN_SETOPT(CURLOPT_HTTPHEADER, headers.get());
  DJINN_SETOPT(CURLOPT_HEADERFUNCTION, OnHeader);
  DJINN_SETOPT(CURLOPT_HEADERDATA, &x);
  DJINN_SETOPT(CURLOPT_WRITEFUNCTION, OnBody);
  DJINN_SETOPT(CURLOPT_WRITEDATA, &x);
  DJINN_SETOPT(CURLOPT_OPENSOCKETFUNCTION, OnOpenSocket);
  DJINN_SETOPT(CURLOPT_OPENSOCKETDATA, &x);
  if (url.has_user) {
    // As Go's client: the URL's userinfo as Basic auth, unless the request
    // has its own Authorization header (libcurl then sends only that one).
    DJINN_SETOPT(CURLOPT_USERNAME, url.username.c_str());
    DJINN_SETOPT(CURLOPT_PASSWORD, url.password.c_str());
    DJINN_SETOPT(CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
  }
  curl_blob blob{ca.data(), ca.size(), CURL_BLOB_NOCOPY};
  if (!ca.empty()) DJINN_SETOPT(CURLOPT_CAINFO_BLOB, &blob);
#undef DJINN_SETOPT
  if (rc != CURLE_OK)
    return finish(Status::Transient(std::string("curl_easy_setopt(") + failed_opt +
                                    "): " + curl_easy_strerror(rc))
                      .Wrap(context));

  start = Clock::now();
  rc = curl_easy_perform(c);
  if (x.answered) {
    // Whatever happened to the body afterwards (rc may be a timeout or a
    // reset), the receiver answered: Go's consumer records that answer
    // with no error, and so do we.
    out.code = x.status;
    out.headers = GoHeaderText(x.lines, x.status, x.http11);
    out.body = std::move(x.body);
    return finish(Status::Ok());
  }
  if (rc == CURLE_OK) return finish(Status::Transient("no HTTP answer").Wrap(context));
  return finish(FromCurlCode(rc, x, url, errbuf).Wrap(context));
}

}  // namespace djinn
