#include "common/url.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <limits>

namespace djinn {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsControlOrSpace(unsigned char c) { return c <= 0x20 || c == 0x7f; }

// Characters kept as they are when we print userinfo or a host: RFC 3986
// unreserved and sub-delims. Everything else (including bytes >= 0x80 and
// anything a decoded %-escape could smuggle in, like a newline) is escaped,
// so a redacted URL is always one clean line.
bool KeptInAuthority(unsigned char c) {
  return IsAlpha(static_cast<char>(c)) || IsDigit(static_cast<char>(c)) ||
         std::strchr("-._~!$&'()*+,;=", c) != nullptr;
}

std::string EscapeAuthority(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (c != 0 && KeptInAuthority(c)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string HostForUrl(const Url& u, bool escape_for_display) {
  if (u.ipv6) {
    size_t pct = u.host.find('%');
    if (pct == std::string::npos) return "[" + u.host + "]";
    return "[" + u.host.substr(0, pct) + "%25" + EscapeAuthority(u.host.substr(pct + 1)) + "]";
  }
  // libcurl takes a UTF-8 host name as is (and applies IDNA); for display
  // we escape, as Go's url.URL.String() does.
  return escape_for_display ? EscapeAuthority(u.host) : u.host;
}

Status Malformed(const std::string& why) { return Status::Permanent("malformed URL: " + why); }

// Which characters may appear in a registered host name once decoded.
// Anything that would change how the URL is re-parsed is refused.
bool BadHostChar(unsigned char c) {
  return IsControlOrSpace(c) || std::strchr("%/\\@?#[]<>\"^`{|}:", c) != nullptr;
}

}  // namespace

bool PercentDecode(std::string_view in, bool plus_is_space, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = HexValue(in[i + 1]), lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      *out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      *out += ' ';
    } else {
      *out += c;
    }
  }
  return true;
}

Result<Url> ParseUrl(std::string_view text) {
  for (unsigned char c : text) {
    if (IsControlOrSpace(c)) return Malformed("contains a space or control character");
  }
  Url u;
  size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0 || !IsAlpha(text[0]))
    return Malformed("no scheme");
  for (size_t i = 0; i < colon; ++i) {
    char c = text[i];
    if (!IsAlpha(c) && !IsDigit(c) && c != '+' && c != '-' && c != '.')
      return Malformed("bad scheme");
    u.scheme += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  std::string_view rest = text.substr(colon + 1);
  if (rest.substr(0, 2) != "//") return Malformed("no host (expected " + u.scheme + "://)");
  rest.remove_prefix(2);

  size_t auth_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, auth_end);
  std::string_view tail = auth_end == std::string_view::npos ? "" : rest.substr(auth_end);

  // Go splits userinfo at the last '@' and the password at the first ':'.
  size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    u.has_user = true;
    std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    size_t pc = userinfo.find(':');
    std::string_view user = userinfo.substr(0, pc);
    if (!PercentDecode(user, false, &u.username)) return Malformed("bad %-escape in user name");
    if (pc != std::string_view::npos) {
      u.has_password = true;
      if (!PercentDecode(userinfo.substr(pc + 1), false, &u.password))
        return Malformed("bad %-escape in password");
    }
  }

  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return Malformed("missing ']' in host");
    std::string_view literal = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return Malformed("unexpected text after ']'");
      port = after.substr(1);
    }
    std::string_view zone;
    size_t pct = literal.find('%');
    std::string_view addr = literal.substr(0, pct);
    if (pct != std::string_view::npos) {
      // RFC 6874: the zone separator is itself escaped ("%25").
      if (literal.substr(pct, 3) != "%25" || literal.size() == pct + 3)
        return Malformed("bad IPv6 zone");
      zone = literal.substr(pct + 3);
    }
    in6_addr a6;
    if (addr.empty() || inet_pton(AF_INET6, std::string(addr).c_str(), &a6) != 1)
      return Malformed("bad IPv6 address");
    std::string zone_decoded;
    if (!PercentDecode(zone, false, &zone_decoded)) return Malformed("bad %-escape in IPv6 zone");
    for (unsigned char c : zone_decoded) {
      if (BadHostChar(c)) return Malformed("bad IPv6 zone");
    }
    u.ipv6 = true;
    u.host = std::string(addr);
    if (!zone_decoded.empty()) u.host += "%" + zone_decoded;
  } else {
    size_t pc = authority.rfind(':');
    std::string_view host = authority.substr(0, pc);
    if (pc != std::string_view::npos) port = authority.substr(pc + 1);
    if (!PercentDecode(host, false, &u.host)) return Malformed("bad %-escape in host");
    for (unsigned char c : u.host) {
      if (BadHostChar(c)) return Malformed("bad character in host");
    }
  }
  if (u.host.empty()) return Malformed("no host");
  if (!port.empty()) {
    if (port.size() > 5) return Malformed("bad port");
    int p = 0;
    for (char c : port) {
      if (!IsDigit(c)) return Malformed("bad port");
      p = p * 10 + (c - '0');
    }
    if (p < 1 || p > 65535) return Malformed("bad port");
    u.port = p;
  }

  size_t hash = tail.find('#');
  if (hash != std::string_view::npos) {
    u.fragment = std::string(tail.substr(hash + 1));
    tail = tail.substr(0, hash);
  }
  size_t q = tail.find('?');
  if (q != std::string_view::npos) {
    u.raw_query = std::string(tail.substr(q + 1));
    tail = tail.substr(0, q);
  }
  u.path = std::string(tail);
  return u;
}

std::string Url::WithoutUserinfo() const {
  std::string out = scheme + "://" + HostForUrl(*this, false);
  if (port != 0) out += ":" + std::to_string(port);
  out += path.empty() ? "/" : path;
  if (!raw_query.empty()) out += "?" + raw_query;
  return out;
}

std::string Url::Redacted() const {
  std::string out = scheme + "://";
  if (has_user) {
    out += EscapeAuthority(username);
    if (has_password) out += ":****";
    out += "@";
  }
  out += DisplayHost();
  if (port != 0) out += ":" + std::to_string(port);
  out += path;
  if (!raw_query.empty()) out += "?" + raw_query;
  return out;
}

std::string Url::DisplayHost() const { return HostForUrl(*this, true); }

std::string DestinationNotAllowed(const Url& url, std::string_view setting) {
  return "destination not allowed (" + url.DisplayHost() + "; set " + std::string(setting) +
         " to allow)";
}

std::string Url::QueryValue(std::string_view key) const {
  std::string_view q = raw_query;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    size_t eq = pair.find('=');
    std::string k, v;
    if (!PercentDecode(pair.substr(0, eq), true, &k) || k != key) continue;
    if (eq == std::string_view::npos) return "";
    if (!PercentDecode(pair.substr(eq + 1), true, &v)) continue;
    return v;
  }
  return "";
}

std::string RedactUrl(std::string_view text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t sep = text.find("://", pos);
    if (sep == std::string_view::npos) break;
    size_t auth = sep + 3;
    size_t end = auth;
    while (end < text.size() && !IsControlOrSpace(static_cast<unsigned char>(text[end])) &&
           std::strchr("/?#\"'<>", text[end]) == nullptr)
      ++end;
    std::string_view authority = text.substr(auth, end - auth);
    size_t at = authority.rfind('@');
    size_t colon =
        at == std::string_view::npos ? std::string_view::npos : authority.substr(0, at).find(':');
    out.append(text.substr(pos, auth - pos));
    if (colon != std::string_view::npos) {
      out.append(authority.substr(0, colon + 1));
      out += "****";
      out.append(authority.substr(at));
    } else {
      out.append(authority);
    }
    pos = end;
  }
  out.append(text.substr(pos));
  return out;
}

bool IsSafePathSegment(std::string_view s) {
  if (s.empty() || s.size() > 255 || s[0] == '.') return false;
  for (unsigned char c : s) {
    if (c == '/' || c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

const char* AddressClassName(AddressClass c) {
  switch (c) {
    case AddressClass::kPublic:
      return "public address";
    case AddressClass::kLoopback:
      return "loopback address";
    case AddressClass::kPrivate:
      return "private address";
    case AddressClass::kLinkLocal:
      return "link-local address";
    case AddressClass::kMulticast:
      return "multicast address";
    case AddressClass::kUnspecified:
      return "unspecified address";
    case AddressClass::kReserved:
      return "reserved address";
  }
  return "reserved address";
}

AddressClass ClassifyIPv4(uint32_t a) {
  auto in = [a](uint32_t net, int bits) {
    uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
    return (a & mask) == net;
  };
  if (in(0x00000000, 8)) return AddressClass::kUnspecified;  // 0.0.0.0/8 "this network"
  if (in(0x7f000000, 8)) return AddressClass::kLoopback;
  if (in(0x0a000000, 8) || in(0xac100000, 12) || in(0xc0a80000, 16) || in(0x64400000, 10) ||
      in(0xc6120000, 15))
    return AddressClass::kPrivate;
  if (in(0xa9fe0000, 16)) return AddressClass::kLinkLocal;
  if (in(0xe0000000, 4)) return AddressClass::kMulticast;
  if (in(0xf0000000, 4) || in(0xc0000000, 24) || in(0xc0000200, 24) || in(0xc6336400, 24) ||
      in(0xcb007100, 24))
    return AddressClass::kReserved;
  return AddressClass::kPublic;
}

AddressClass ClassifyIPv6(const uint8_t b[16]) {
  auto zero = [&](int from, int to) {
    for (int i = from; i < to; ++i)
      if (b[i] != 0) return false;
    return true;
  };
  auto u32 = [&](int at) {
    return static_cast<uint32_t>(b[at]) << 24 | static_cast<uint32_t>(b[at + 1]) << 16 |
           static_cast<uint32_t>(b[at + 2]) << 8 | b[at + 3];
  };
  auto v4 = [&](int at) { return ClassifyIPv4(u32(at)); };
  if (zero(0, 16)) return AddressClass::kUnspecified;
  if (zero(0, 15) && b[15] == 1) return AddressClass::kLoopback;
  if (zero(0, 10) && b[10] == 0xff && b[11] == 0xff) return v4(12);  // ::ffff:a.b.c.d
  if (zero(0, 8) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0)
    return v4(12);                 // ::ffff:0:a.b.c.d SIIT
  if (zero(0, 12)) return v4(12);  // ::a.b.c.d (deprecated)
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) {
    if (zero(4, 12)) return v4(12);                                   // 64:ff9b::/96 NAT64
    if (b[4] == 0x00 && b[5] == 0x01) return AddressClass::kPrivate;  // 64:ff9b:1::/48
  }
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00) {
    // Teredo (RFC 4380 section 4). A packet to this address goes, in UDP
    // over IPv4, to the client's mapped address (inverted in the last 32
    // bits), and the Teredo machinery also talks to the server: both must
    // be public for the address to be.
    AddressClass client = ClassifyIPv4(~u32(12));
    return client != AddressClass::kPublic ? client : v4(4);
  }
  if (b[0] == 0x20 && b[1] == 0x02) return v4(2);                              // 2002::/16 6to4
  if ((b[0] & 0xfe) == 0xfc) return AddressClass::kPrivate;                    // fc00::/7
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return AddressClass::kLinkLocal;  // fe80::/10
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return AddressClass::kPrivate;    // fec0::/10
  if (b[0] == 0xff) return AddressClass::kMulticast;
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return AddressClass::kReserved;
  if (b[0] == 0x01 && zero(1, 8)) return AddressClass::kReserved;  // 100::/64 discard
  return AddressClass::kPublic;
}

AddressClass ClassifySockaddr(const struct sockaddr* sa, socklen_t len, std::string* text) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (sa != nullptr && sa->sa_family == AF_INET &&
      len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(sa);
    if (text) *text = inet_ntop(AF_INET, &in4->sin_addr, buf, sizeof buf) ? buf : "?";
    return ClassifyIPv4(ntohl(in4->sin_addr.s_addr));
  }
  if (sa != nullptr && sa->sa_family == AF_INET6 &&
      len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    if (text) *text = inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf) ? buf : "?";
    return ClassifyIPv6(in6->sin6_addr.s6_addr);
  }
  if (text) *text = "address of family " + std::to_string(sa ? sa->sa_family : -1);
  return AddressClass::kReserved;
}

Result<AddressClass> ClassifyAddress(const std::string& literal) {
  in_addr a4;
  if (inet_pton(AF_INET, literal.c_str(), &a4) == 1) return ClassifyIPv4(ntohl(a4.s_addr));
  in6_addr a6;
  if (inet_pton(AF_INET6, literal.c_str(), &a6) == 1) return ClassifyIPv6(a6.s6_addr);
  return Status::Permanent("not an IP address: \"" + literal + "\"");
}

}  // namespace djinn
