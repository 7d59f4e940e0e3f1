// common/url.h: URL parsing and redaction, Go durations, safe path
// segments, and the address classes behind the SSRF guard.
#include "common/url.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <string>

namespace djinn {
namespace {

// ------------------------------------------------------------------ URLs

TEST(ParseUrl, SplitsEveryPart) {
  auto u = ParseUrl("HTTPS://user:pw@Example.com:8443/a/b%20c.qcow2?x=1&y=2#frag");
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_EQ(u->scheme, "https");
  EXPECT_TRUE(u->has_user);
  EXPECT_EQ(u->username, "user");
  EXPECT_TRUE(u->has_password);
  EXPECT_EQ(u->password, "pw");
  EXPECT_EQ(u->host, "Example.com");
  EXPECT_FALSE(u->ipv6);
  EXPECT_EQ(u->port, 8443);
  EXPECT_EQ(u->path, "/a/b%20c.qcow2");
  EXPECT_EQ(u->raw_query, "x=1&y=2");
  EXPECT_EQ(u->fragment, "frag");
  EXPECT_EQ(u->WithoutUserinfo(), "https://Example.com:8443/a/b%20c.qcow2?x=1&y=2");
}

TEST(ParseUrl, DecodesUserinfoAsGoWritesIt) {
  // dl_https_userinfo_escapes from the wire vectors.
  auto u = ParseUrl(
      "https://deploy+bot:p%40ss%3Aw0rd%21@images.example.org/team%20a/caf%C3%A9/"
      "disk%2Fpart%3F1.qcow2");
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_EQ(u->username, "deploy+bot");
  EXPECT_EQ(u->password, "p@ss:w0rd!");
  EXPECT_EQ(u->host, "images.example.org");
  EXPECT_EQ(u->path, "/team%20a/caf%C3%A9/disk%2Fpart%3F1.qcow2");
  EXPECT_EQ(u->WithoutUserinfo(),
            "https://images.example.org/team%20a/caf%C3%A9/disk%2Fpart%3F1.qcow2");
}

TEST(ParseUrl, PasswordWithAtSignSplitsAtLastAt) {
  auto u = ParseUrl("http://a:b@c@host/x");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->username, "a");
  EXPECT_EQ(u->password, "b@c");
  EXPECT_EQ(u->host, "host");
}

TEST(ParseUrl, UserWithoutPassword) {
  auto u = ParseUrl("sftp://djinn@h/x");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->has_user);
  EXPECT_FALSE(u->has_password);
  EXPECT_EQ(u->Redacted(), "sftp://djinn@h/x");
}

TEST(ParseUrl, Ipv6HostAndZone) {
  auto u = ParseUrl("http://[2001:db8::1]:8080/images/disk.qcow2");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->ipv6);
  EXPECT_EQ(u->host, "2001:db8::1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->WithoutUserinfo(), "http://[2001:db8::1]:8080/images/disk.qcow2");

  auto z = ParseUrl("http://[fe80::1%25eth0]:8080/disk.qcow2");
  ASSERT_TRUE(z.ok()) << z.status().message();
  EXPECT_EQ(z->host, "fe80::1%eth0");
  EXPECT_EQ(z->WithoutUserinfo(), "http://[fe80::1%25eth0]:8080/disk.qcow2");
}

TEST(ParseUrl, PercentEncodedUnicodeHostIsDecoded) {
  auto u = ParseUrl("https://b%C3%BCcher.example/images/disk.qcow2");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host,
            "b\xc3\xbc"
            "cher.example");
  EXPECT_EQ(u->Redacted(), "https://b%C3%BCcher.example/images/disk.qcow2");
}

TEST(ParseUrl, EmptyPathBecomesSlashForTheRequest) {
  auto u = ParseUrl("http://h");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->path, "");
  EXPECT_EQ(u->WithoutUserinfo(), "http://h/");
  auto q = ParseUrl("http://h?a=b");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->WithoutUserinfo(), "http://h/?a=b");
}

TEST(ParseUrl, RejectsMalformedWithoutEchoingThePassword) {
  for (const char* bad : {"", "no-scheme", "1http://h/", "http:/h/x", "http://",
                          "http://user:pw@/x", "http://h:99999/", "http://h:12a/", "http://[::1/",
                          "http://[zz::1]/", "http://h/a b", "http://h/\n", "http://us%zzer@h/",
                          "http://u:p%4@h/", "http://[fe80::1%eth0]/", "http://h%2Fevil/"}) {
    auto u = ParseUrl(bad);
    EXPECT_FALSE(u.ok()) << bad;
    if (!u.ok()) {
      EXPECT_TRUE(u.status().permanent()) << bad;
      EXPECT_EQ(u.status().message().rfind("malformed URL: ", 0), 0u) << u.status().message();
      EXPECT_EQ(u.status().message().find("pw"), std::string::npos) << u.status().message();
    }
  }
}

TEST(ParseUrl, PortBounds) {
  EXPECT_TRUE(ParseUrl("http://h:1/").ok());
  EXPECT_TRUE(ParseUrl("http://h:65535/").ok());
  EXPECT_FALSE(ParseUrl("http://h:0/").ok());
  EXPECT_FALSE(ParseUrl("http://h:65536/").ok());
  auto empty_port = ParseUrl("http://h:/x");  // Go accepts an empty port
  ASSERT_TRUE(empty_port.ok());
  EXPECT_EQ(empty_port->port, 0);
}

TEST(Redacted, HidesPasswordKeepsUser) {
  auto u = ParseUrl("https://user:secret@host:1/p?q=1#f");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->Redacted(), "https://user:****@host:1/p?q=1");
}

TEST(Redacted, EscapesDecodedControlCharacters) {
  auto u = ParseUrl("http://a%0Ab:pw@h/x");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->username, "a\nb");
  EXPECT_EQ(u->Redacted(), "http://a%0Ab:****@h/x");
}

TEST(RedactUrl, ReplacesEveryPasswordInText) {
  EXPECT_EQ(RedactUrl("see https://u:p@h/x and sftp://a:b%40c@host:22/y."),
            "see https://u:****@h/x and sftp://a:****@host:22/y.");
  EXPECT_EQ(RedactUrl("http://user@h/x"), "http://user@h/x");
  EXPECT_EQ(RedactUrl("http://h/x?next=http://u:p@evil/"), "http://h/x?next=http://u:****@evil/");
  EXPECT_EQ(RedactUrl("no url here"), "no url here");
  EXPECT_EQ(RedactUrl("ftp://"), "ftp://");
}

TEST(QueryValue, FirstValueDecoded) {
  auto u = ParseUrl("sftp://h/x?a=1&timeout=1m30s&timeout=5s&sp=a+b%21&flag");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->QueryValue("timeout"), "1m30s");
  EXPECT_EQ(u->QueryValue("sp"), "a b!");
  EXPECT_EQ(u->QueryValue("flag"), "");
  EXPECT_EQ(u->QueryValue("missing"), "");
}

TEST(PercentDecode, Basics) {
  std::string out;
  EXPECT_TRUE(PercentDecode("a%2fb+c", false, &out));
  EXPECT_EQ(out, "a/b+c");
  EXPECT_TRUE(PercentDecode("a%2Fb+c", true, &out));
  EXPECT_EQ(out, "a/b c");
  EXPECT_FALSE(PercentDecode("%", false, &out));
  EXPECT_FALSE(PercentDecode("%4", false, &out));
  EXPECT_FALSE(PercentDecode("%g0", false, &out));
}

// ------------------------------------------------------------- durations

constexpr int64_t kMs = 1000000;
constexpr int64_t kSec = 1000 * kMs;

// --------------------------------------------------------- path segments

TEST(IsSafePathSegment, AcceptsPlainNames) {
  for (const char* ok : {"qemu", "abc123", "a.b", "x-y_z", "0", "caf\xc3\xa9", "a..b"})
    EXPECT_TRUE(IsSafePathSegment(ok)) << ok;
  EXPECT_TRUE(IsSafePathSegment(std::string(255, 'a')));
}

TEST(IsSafePathSegment, RejectsTraversalAndOddities) {
  for (const char* bad :
       {"", ".", "..", ".hidden", ".x.part", "a/b", "/", "../x", "a\nb", "a\tb", "\x7f"})
    EXPECT_FALSE(IsSafePathSegment(bad)) << bad;
  EXPECT_FALSE(IsSafePathSegment(std::string("a\0b", 3)));
  EXPECT_FALSE(IsSafePathSegment(std::string(256, 'a')));
}

// ------------------------------------------------------ address classes

AddressClass Class(const std::string& literal) {
  auto c = ClassifyAddress(literal);
  EXPECT_TRUE(c.ok()) << literal;
  return c.ok() ? *c : AddressClass::kPublic;
}

TEST(ClassifyAddress, Ipv4Ranges) {
  struct Case {
    const char* addr;
    AddressClass want;
  } cases[] = {
      {"0.0.0.0", AddressClass::kUnspecified},
      {"0.1.2.3", AddressClass::kUnspecified},
      {"127.0.0.1", AddressClass::kLoopback},
      {"127.255.255.254", AddressClass::kLoopback},
      {"10.0.0.1", AddressClass::kPrivate},
      {"10.255.255.255", AddressClass::kPrivate},
      {"172.16.0.1", AddressClass::kPrivate},
      {"172.31.255.255", AddressClass::kPrivate},
      {"172.15.255.255", AddressClass::kPublic},
      {"172.32.0.0", AddressClass::kPublic},
      {"192.168.1.1", AddressClass::kPrivate},
      {"100.64.0.1", AddressClass::kPrivate},
      {"100.127.255.255", AddressClass::kPrivate},
      {"100.63.255.255", AddressClass::kPublic},
      {"100.128.0.0", AddressClass::kPublic},
      {"198.18.0.1", AddressClass::kPrivate},
      {"198.19.255.255", AddressClass::kPrivate},
      {"169.254.169.254", AddressClass::kLinkLocal},
      {"169.254.0.1", AddressClass::kLinkLocal},
      {"224.0.0.1", AddressClass::kMulticast},
      {"239.255.255.250", AddressClass::kMulticast},
      {"240.0.0.1", AddressClass::kReserved},
      {"255.255.255.255", AddressClass::kReserved},
      {"192.0.0.170", AddressClass::kReserved},
      {"192.0.2.1", AddressClass::kReserved},
      {"198.51.100.7", AddressClass::kReserved},
      {"203.0.113.9", AddressClass::kReserved},
      {"8.8.8.8", AddressClass::kPublic},
      {"1.1.1.1", AddressClass::kPublic},
      {"93.184.216.34", AddressClass::kPublic},
      {"126.255.255.255", AddressClass::kPublic},
      {"128.0.0.1", AddressClass::kPublic},
  };
  for (const auto& c : cases) EXPECT_EQ(Class(c.addr), c.want) << c.addr;
}

TEST(ClassifyAddress, Ipv6Ranges) {
  struct Case {
    const char* addr;
    AddressClass want;
  } cases[] = {
      {"::", AddressClass::kUnspecified},
      {"::1", AddressClass::kLoopback},
      {"fc00::1", AddressClass::kPrivate},
      {"fd12:3456::1", AddressClass::kPrivate},
      {"fec0::1", AddressClass::kPrivate},
      {"fe80::1", AddressClass::kLinkLocal},
      {"febf::1", AddressClass::kLinkLocal},
      {"ff02::1", AddressClass::kMulticast},
      {"2001:db8::1", AddressClass::kReserved},
      {"100::1", AddressClass::kReserved},
      {"64:ff9b:1::1", AddressClass::kPrivate},
      {"2606:4700:4700::1111", AddressClass::kPublic},
      {"2001:4860:4860::8888", AddressClass::kPublic},
  };
  for (const auto& c : cases) EXPECT_EQ(Class(c.addr), c.want) << c.addr;
}

TEST(ClassifyAddress, Ipv4EmbeddedInIpv6IsUnwrapped) {
  EXPECT_EQ(Class("::ffff:127.0.0.1"), AddressClass::kLoopback);
  EXPECT_EQ(Class("::ffff:7f00:1"), AddressClass::kLoopback);
  EXPECT_EQ(Class("::ffff:10.1.2.3"), AddressClass::kPrivate);
  EXPECT_EQ(Class("::ffff:169.254.169.254"), AddressClass::kLinkLocal);
  EXPECT_EQ(Class("::ffff:0.0.0.0"), AddressClass::kUnspecified);
  EXPECT_EQ(Class("::ffff:8.8.8.8"), AddressClass::kPublic);
  EXPECT_EQ(Class("::127.0.0.1"), AddressClass::kLoopback);       // IPv4-compatible
  EXPECT_EQ(Class("64:ff9b::10.0.0.1"), AddressClass::kPrivate);  // NAT64
  EXPECT_EQ(Class("64:ff9b::8.8.8.8"), AddressClass::kPublic);
  EXPECT_EQ(Class("2002:7f00:1::1"), AddressClass::kLoopback);  // 6to4
  EXPECT_EQ(Class("2002:c0a8:101::1"), AddressClass::kPrivate);
  EXPECT_EQ(Class("2002:808:808::1"), AddressClass::kPublic);
}

// Every form that carries an IPv4 address inside IPv6, each with a
// private, a loopback and a public IPv4 inside: the embedded address decides.
TEST(ClassifyAddress, EveryIpv4InIpv6FormIsUnwrapped) {
  struct Case {
    const char* addr;
    AddressClass want;
  } cases[] = {
      // IPv4-mapped, ::ffff:0:0/96.
      {"::ffff:192.168.1.1", AddressClass::kPrivate},
      {"::ffff:127.0.0.1", AddressClass::kLoopback},
      {"::ffff:8.8.8.8", AddressClass::kPublic},
      // SIIT IPv4-translated, ::ffff:0:0:0/96 (RFC 2765).
      {"::ffff:0:10.0.0.1", AddressClass::kPrivate},
      {"::ffff:0:127.0.0.1", AddressClass::kLoopback},
      {"::ffff:0:7f00:1", AddressClass::kLoopback},
      {"::ffff:0:169.254.169.254", AddressClass::kLinkLocal},
      {"::ffff:0:8.8.8.8", AddressClass::kPublic},
      // IPv4-compatible, ::/96 (deprecated).
      {"::172.16.0.1", AddressClass::kPrivate},
      {"::127.0.0.1", AddressClass::kLoopback},
      {"::8.8.8.8", AddressClass::kPublic},
      // NAT64 well-known prefix, 64:ff9b::/96 (RFC 6052).
      {"64:ff9b::192.168.0.1", AddressClass::kPrivate},
      {"64:ff9b::127.0.0.1", AddressClass::kLoopback},
      {"64:ff9b::8.8.8.8", AddressClass::kPublic},
      // NAT64 local-use prefix, 64:ff9b:1::/48 (RFC 8215): private whatever
      // it embeds, since its operator chooses where the IPv4 address sits.
      {"64:ff9b:1::10.0.0.1", AddressClass::kPrivate},
      {"64:ff9b:1::127.0.0.1", AddressClass::kPrivate},
      {"64:ff9b:1::8.8.8.8", AddressClass::kPrivate},
      {"64:ff9b:1:7f00:1::", AddressClass::kPrivate},
      // 6to4, 2002::/16 (RFC 3056).
      {"2002:a00:1::1", AddressClass::kPrivate},
      {"2002:7f00:1::1", AddressClass::kLoopback},
      {"2002:808:808::1", AddressClass::kPublic},
      // Teredo, 2001::/32 (RFC 4380): server 65.54.227.120 (public) in bits
      // 32..63, the client's address inverted in the last 32 bits.
      {"2001:0:4136:e378:8000:63bf:f5ff:fffe", AddressClass::kPrivate},      // client 10.0.0.1
      {"2001:0:4136:e378:8000:63bf:3f57:fefe", AddressClass::kPrivate},      // 192.168.1.1
      {"2001:0:4136:e378:8000:63bf:80ff:fffe", AddressClass::kLoopback},     // 127.0.0.1
      {"2001:0:4136:e378:8000:63bf:5601:5695", AddressClass::kLinkLocal},    // 169.254.169.106
      {"2001:0:4136:e378:8000:63bf:ffff:ffff", AddressClass::kUnspecified},  // 0.0.0.0
      {"2001:0:4136:e378:8000:63bf:f7f7:f7f7", AddressClass::kPublic},       // 8.8.8.8
      // RFC 4380's own example: client 192.0.2.45, a documentation address.
      {"2001:0:4136:e378:8000:63bf:3fff:fdd2", AddressClass::kReserved},
      // A public client behind a server that is not public.
      {"2001:0:a00:1:8000:63bf:f7f7:f7f7", AddressClass::kPrivate},    // server 10.0.0.1
      {"2001:0:7f00:1:8000:63bf:f7f7:f7f7", AddressClass::kLoopback},  // server 127.0.0.1
      // A private client wins over a loopback server.
      {"2001:0:7f00:1:8000:63bf:f5ff:fffe", AddressClass::kPrivate},
      // Next to Teredo, not Teredo.
      {"2001:1::f5ff:fffe", AddressClass::kPublic},
      {"2001:db8::f5ff:fffe", AddressClass::kReserved},
  };
  for (const auto& c : cases) EXPECT_EQ(Class(c.addr), c.want) << c.addr;
}

// The guard checks the socket address libcurl is about to connect to, so
// the forms count there too.
TEST(ClassifySockaddr, UnwrapsTeredoAndSiit) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  std::string text;
  inet_pton(AF_INET6, "2001:0:4136:e378:8000:63bf:80ff:fffe", &in6.sin6_addr);
  EXPECT_EQ(ClassifySockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof in6, &text),
            AddressClass::kLoopback);
  inet_pton(AF_INET6, "::ffff:0:192.168.0.1", &in6.sin6_addr);
  EXPECT_EQ(ClassifySockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof in6, &text),
            AddressClass::kPrivate);
}

TEST(DestinationNotAllowed, NamesTheHostAsTheUrlGivesIt) {
  auto u = ParseUrl("https://user:pw@hooks.example:8443/x?y=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(DestinationNotAllowed(*u, "webhooks.allow_private"),
            "destination not allowed (hooks.example; set webhooks.allow_private to allow)");
  u = ParseUrl("http://[fe80::1%25eth0]:80/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(DestinationNotAllowed(*u, "download.allow_private"),
            "destination not allowed ([fe80::1%25eth0]; set download.allow_private to allow)");
  // Bytes outside ASCII are shown escaped, as in Url::Redacted().
  u = ParseUrl("http://b%C3%BCcher.example/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->DisplayHost(), "b%C3%BCcher.example");
}

TEST(ClassifyAddress, NotALiteral) {
  EXPECT_FALSE(ClassifyAddress("localhost").ok());
  EXPECT_FALSE(ClassifyAddress("1.2.3").ok());
}

TEST(ClassifySockaddr, GivesTextForBothFamilies) {
  sockaddr_in in4{};
  in4.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &in4.sin_addr);
  std::string text;
  EXPECT_EQ(ClassifySockaddr(reinterpret_cast<sockaddr*>(&in4), sizeof in4, &text),
            AddressClass::kLoopback);
  EXPECT_EQ(text, "127.0.0.1");

  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:192.168.0.1", &in6.sin6_addr);
  EXPECT_EQ(ClassifySockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof in6, &text),
            AddressClass::kPrivate);
  EXPECT_EQ(text, "::ffff:192.168.0.1");

  // A truncated length is never read past.
  EXPECT_EQ(ClassifySockaddr(reinterpret_cast<sockaddr*>(&in6), 8, &text), AddressClass::kReserved);
  sockaddr un{};
  un.sa_family = AF_UNIX;
  EXPECT_EQ(ClassifySockaddr(&un, sizeof un, nullptr), AddressClass::kReserved);
}

TEST(AddressClassName, ReadsAsInTheErrorMessage) {
  EXPECT_STREQ(AddressClassName(AddressClass::kLoopback), "loopback address");
  EXPECT_STREQ(AddressClassName(AddressClass::kLinkLocal), "link-local address");
  EXPECT_STREQ(AddressClassName(AddressClass::kPrivate), "private address");
}

}  // namespace
}  // namespace djinn
