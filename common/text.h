// Text for one-line messages.
#ifndef DJINN_COMMON_TEXT_H_
#define DJINN_COMMON_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace djinn {

// s made safe to show in a one-line message or a recorded error: every
// byte outside printable ASCII becomes '?', and past `max` bytes it is cut
// and "..." added. (Payload errors escape as \xNN instead: common/payload.cc.)
std::string Printable(std::string_view s, size_t max = 100);

}  // namespace djinn

#endif  // DJINN_COMMON_TEXT_H_
