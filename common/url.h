// Small, dependency-free helpers for the download job: URL parsing and
// redaction, Go duration strings, safe path segments and the address
// classification behind the server-side request forgery guard.
//
// Everything here is pure (no I/O, no global state) and thread-safe.
#ifndef DJINN_COMMON_URL_H_
#define DJINN_COMMON_URL_H_

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace djinn {

// A URL split the way Go's net/url does for the URLs the Djinn server
// stores (scheme://[user[:password]@]host[:port][/path][?query][#fragment]).
// The Djinn server writes url.URL.String(), so userinfo and host may carry
// %-escapes; they are decoded here. Path and query are kept as sent
// (escaped): they go on the wire that way.
struct Url {
  std::string scheme;     // lower case ("https")
  bool has_user = false;  // an '@' was present
  std::string username;   // decoded
  bool has_password = false;
  std::string password;   // decoded
  std::string host;       // decoded; IPv6 without brackets, zone after '%'
  bool ipv6 = false;      // host was a bracketed literal
  int port = 0;           // 0: the scheme's default
  std::string path;       // escaped, as given ("" when none)
  std::string raw_query;  // without '?'
  std::string fragment;   // without '#'; never sent

  // "scheme://host[:port]/path[?query]": no userinfo, no fragment, path
  // "/" when empty; an IPv6 host in brackets with its zone as "%25zone".
  // What is handed to libcurl (credentials go separately).
  std::string WithoutUserinfo() const;
  // The URL for logs, error messages and process titles: the password
  // replaced by "****" ("https://user:****@host/x"), no fragment.
  std::string Redacted() const;
  // The host as Redacted() shows it: no port, an IPv6 literal in brackets
  // with its zone as "%25zone", other bytes outside RFC 3986's unreserved
  // and sub-delims %-escaped (so always one clean line).
  std::string DisplayHost() const;
  // The first value of a query parameter (decoded; '+' is a space, as in
  // Go's url.ParseQuery); "" when absent.
  std::string QueryValue(std::string_view key) const;
};

// Parses an absolute URL with an authority ("scheme://..."). Errors are
// kPermanent, one line, and never echo a password: "malformed URL: ...".
Result<Url> ParseUrl(std::string_view text);

// Best effort for any text that may hold URLs with credentials (an effective
// URL after redirects, a library error message): every "scheme://user:pw@"
// becomes "scheme://user:****@". Text without credentials is unchanged.
std::string RedactUrl(std::string_view text);

// Decodes %XX escapes. With plus_is_space (query strings) '+' is ' '. False
// on a malformed escape (a '%' not followed by two hex digits).
bool PercentDecode(std::string_view in, bool plus_is_space, std::string* out);

// True when s may be used as one path component beneath the image store:
// not empty, at most 255 bytes, no '/', no NUL or other control character,
// and not starting with '.' (which also rules out "." and "..", and keeps
// clear of our ".<hash>.part" temporaries).
bool IsSafePathSegment(std::string_view s);

// What the server-side request forgery guard reports when it refuses to
// connect: "destination not allowed (<url.DisplayHost()>; set <setting> to
// allow)", e.g. "destination not allowed (hooks.example; set
// webhooks.allow_private to allow)". It names the host as the URL gives it,
// never the address it resolved to: the text is stored where the URL's
// owner reads it, and resolved addresses would map the internal network
// for them. (Log the resolved address at debug level, for operators.)
std::string DestinationNotAllowed(const Url& url, std::string_view setting);

// Where an address points, for the server-side request forgery guard.
enum class AddressClass {
  kPublic,
  kLoopback,     // 127/8, ::1
  kPrivate,      // 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT),
                 // 198.18/15 (benchmarking), fc00::/7, fec0::/10,
                 // 64:ff9b:1::/48
  kLinkLocal,    // 169.254/16 (cloud metadata), fe80::/10
  kMulticast,    // 224/4, ff00::/8
  kUnspecified,  // 0/8, ::
  kReserved,     // 240/4 (and broadcast), 192.0.0/24, documentation
                 // ranges (192.0.2/24, 198.51.100/24, 203.0.113/24,
                 // 2001:db8::/32), 100::/64 (discard)
};

// "loopback address", "private address", ...; "public address".
const char* AddressClassName(AddressClass c);

// IPv4 in host byte order.
AddressClass ClassifyIPv4(uint32_t addr);
// 16 bytes, network order. IPv4 embedded in IPv6 is unwrapped and
// classified as IPv4, so a private or loopback IPv4 cannot hide in IPv6:
//   - IPv4-mapped ::ffff:a.b.c.d (::ffff:0:0/96),
//   - SIIT IPv4-translated ::ffff:0:a.b.c.d (::ffff:0:0:0/96, RFC 2765),
//   - IPv4-compatible ::a.b.c.d (deprecated; :: and ::1 excepted),
//   - NAT64 well-known prefix 64:ff9b::a.b.c.d (64:ff9b::/96, RFC 6052),
//   - 6to4 2002:AABB:CCDD::/48 (RFC 3056),
//   - Teredo 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC (2001::/32, RFC 4380):
//     the client's address is the last 32 bits inverted, the server's
//     bits 32..63; the address is public only when both are, else it takes
//     the client's class (or, with a public client, the server's).
// The NAT64 local-use prefix 64:ff9b:1::/48 (RFC 8215) is private as a
// whole: its operator chooses where the IPv4 address sits (RFC 6052 allows
// /48 to /96), so it cannot be unwrapped reliably.
AddressClass ClassifyIPv6(const uint8_t addr[16]);
// AF_INET / AF_INET6 sockaddr; *text (if not null) gets the address in
// text form ("127.0.0.1", "::ffff:127.0.0.1"). Other families: kReserved.
AddressClass ClassifySockaddr(const struct sockaddr* sa, socklen_t len, std::string* text);
// A literal ("10.1.2.3", "fe80::1"); kPermanent when it is not one.
Result<AddressClass> ClassifyAddress(const std::string& literal);

}  // namespace djinn

#endif  // DJINN_COMMON_URL_H_
