// Text for one-line messages.
#ifndef DJINN_COMMON_TEXT_H_
#define DJINN_COMMON_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace djinn {

// s made safe to show in a one-line message or a recorded error: every
// byte outside printable ASCII becomes '?', and past `max` bytes it is cut
// and "..." added. (Payload errors escape as \xNN instead: common/payload.cc.)
std::string Printable(std::string_view s, size_t max = 100);

// Lower-case hex of n bytes ("0a1b...").
std::string HexLower(const unsigned char* bytes, size_t n);

// A decimal number, digits only, that fits 64 bits; false otherwise.
bool ParseU64(std::string_view s, uint64_t* out);

// A TCP port in decimal, digits only, 1 to 65535; 0 when s is not one.
int ParsePort(std::string_view s);

// "host:port", or "[host]:port" for an IPv6 address (a host with a ':').
std::string JoinHostPort(std::string_view host, std::string_view port);

}  // namespace djinn

#endif  // DJINN_COMMON_TEXT_H_
