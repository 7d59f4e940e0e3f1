#include "common/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

namespace djinn {

Result<ListenAddress> ParseListenAddress(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Status::Permanent("\"" + text + "\": " + why + " (expected \"127.0.0.1:9187\" or \"[::1]:9187\")");
  };
  std::string host, port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return bad("bad address");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) return bad("no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad("an IPv6 address goes in brackets");
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return bad("bad port");
  int p = std::stoi(port);
  if (p < 1 || p > 65535) return bad("port out of range");
  ListenAddress a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(p));
    a.len = sizeof(sockaddr_in);
    a.loopback = (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(p));
    a.len = sizeof(sockaddr_in6);
    a.loopback = IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
  } else {
    return bad("not a numeric IPv4 or IPv6 address");
  }
  return a;
}

}  // namespace djinn
