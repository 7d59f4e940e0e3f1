// PostWebhook: the HTTP part of one `images` webhook delivery (DESIGN §4b):
// POSTs a prepared request with libcurl and reports what happened, in the
// shape of a namespace_webhook_deliveries row (error, response_code,
// response_headers, response_body, duration). Building the body, signature
// and request_headers text is common/webhook.h's job; recording the row and
// deciding on retries is the caller's.
//
// What goes on the wire:
//   - "POST <path> HTTP/1.1" (HTTP/1.1 also over TLS, no HTTP/2), "Host",
//     then request.headers in their order, byte for byte, and the body with
//     a Content-Length. Nothing else: libcurl's own Accept, Content-Type and
//     "Expect: 100-continue" are suppressed; Content-Length is added (after
//     the caller's headers) only when the caller gives none. As Go's client
//     does, userinfo in the URL is sent as "Authorization: Basic ..." (right
//     after Host) unless the caller gives an Authorization header.
//   - Differences from Go's consumer, on purpose: Go builds its request
//     without a ContentLength, so its client drops the Content-Length
//     header and sends the body chunked; we send Content-Length (what the
//     recorded request_headers say, and what every receiver understands).
//     Go asks for gzip (Accept-Encoding) and unpacks the answer silently; we
//     ask for no encoding, so the body is what the receiver sent.
//   - Only http and https; redirects are not followed (the 3xx is the
//     answer; Go would follow it as a GET). Proxies from the environment
//     are ignored.
//   - https: peer and host always verified, against the system CA store
//     plus request.ca_bundle (Go verifies too, whatever the hook's ssl
//     flag says).
//   - Server-side request forgery guard (not in Go): unless
//     request.allow_private, every address libcurl is about to connect to is
//     checked at connect time (CURLOPT_OPENSOCKETFUNCTION, ClassifySockaddr
//     from common/url.h, as worker/fetch.cc does) and refused unless it is
//     public. Checking the socket address defeats DNS rebinding; a refused
//     address gets no packet.
//
// Outcome (WebhookResponse):
//   - error Ok: an HTTP answer arrived, whatever its code (1xx interim
//     answers are skipped; a 3xx is final). A body cut short after the
//     headers (timeout, reset) still counts as the answer, with what
//     arrived, as in Go's consumer, which ignores the body read's error.
//   - error not Ok: no answer; code 0, headers and body empty. One line,
//     "POST <url without userinfo>: <cause>" (an unparsable URL is shown
//     with its password masked). Kinds:
//       kPermanent: malformed URL, a scheme other than http/https, an
//         invalid request header, a refused address ("destination not
//         allowed (localhost; set webhooks.allow_private to allow)": the
//         URL's host as written, never the address it resolved to).
//       kTransient: everything else: timeouts, refused or reset
//         connections, DNS failures, TLS failures (also an unverifiable
//         certificate), libcurl setup failures.
//   - duration_ns: from just before the request to the end of the response
//     or the error, > 0 (never clamped; the INT column is the caller's).
//
// Threads: PostWebhook may run on any thread, several at once. It shares
// only a copy of the system CA bundle (read once, on the first https request
// with a ca_bundle) and calls InitFetch() (worker/fetch.h) itself. As for
// Fetch(), libcurl runs with CURLOPT_NOSIGNAL: the process ignores SIGPIPE
// (the worker does).
#ifndef DJINN_WORKER_WEBHOOK_SEND_H_
#define DJINN_WORKER_WEBHOOK_SEND_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace djinn {

// At most this many bytes of a response body are kept; the rest is read
// and dropped (Go keeps it all; the column is TEXT and the receiver's
// answer is only informative).
inline constexpr size_t kMaxWebhookResponseBody = 64 * 1024;

struct WebhookRequest {
  std::string url;  // namespace_webhooks.payload_url
  // Sent in this order, exactly these, as "Name: value". A name must be
  // an HTTP token, a value free of CR, LF and NUL (kPermanent otherwise).
  // A Content-Length given here must be body's size (kPermanent otherwise);
  // without one, libcurl adds it after these.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The whole exchange (Go: one minute); below 1 counts as 1. Connecting
  // alone is also bounded by 30 s (Go's default dialer).
  int timeout_seconds = 60;
  bool allow_private = false;  // webhooks.allow_private: SSRF guard off
  // PEM text of extra CAs trusted besides the system store ("" = system
  // only; the system bundle is added here, so do not pass it in). A
  // malformed certificate in it fails every https delivery (kTransient,
  // "error importing CA certificate blob"); text without any certificate
  // adds nothing.
  std::string ca_bundle;
};

struct WebhookResponse {
  Status error;  // Ok when an HTTP answer arrived (any code); else why not
  int code = 0;  // HTTP status of the answer, 0 when none
  // The answer's headers as Go's http.Header.Write writes them: keys in
  // textproto.CanonicalMIMEHeaderKey form ("x-custom-thing" ->
  // "X-Custom-Thing"; a key with bytes outside the token set kept as is),
  // sorted byte-wise, one "Key: value\r\n" per value, the values of a key in
  // the order received, values trimmed of spaces and tabs, folded lines
  // joined with a space. As Go's client: no Transfer-Encoding, no
  // Content-Length beside a chunked body, a repeated identical
  // Content-Length once, no "Trailer" beside a chunked body, and trailers
  // not included. "" when none.
  std::string headers;
  std::string body;  // at most kMaxWebhookResponseBody bytes
  int64_t duration_ns = 0;
};

// Sends request and waits for the whole answer (bounded by
// request.timeout_seconds). Never throws; every failure is in error.
WebhookResponse PostWebhook(const WebhookRequest& request);

}  // namespace djinn

#endif  // DJINN_WORKER_WEBHOOK_SEND_H_
