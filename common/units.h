// Durations and sizes as Djinn writes them, for both config syntaxes.
//
// ParseGoDuration: a port of Go's time.ParseDuration,
// "[-+]?([0-9]*(\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+" or "0" ("90s", "1h30m",
// "1.5h", "250ms"), so a value the Go consumer accepted (sftp ?timeout=, a
// config duration) means the same here. Returns nanoseconds; kPermanent on
// syntax errors or overflow (beyond int64 nanoseconds, about 292 years).
// ParseSize: an unsigned integer and a unit B, KB, MB, GB or TB in powers
// of 1024, as andrewpillar/config (Djinn's config library) reads "50MB".
// Returns bytes, or kPermanent "invalid size ..." / "size ... out of range".
#ifndef DJINN_COMMON_UNITS_H_
#define DJINN_COMMON_UNITS_H_

#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace djinn {

Result<int64_t> ParseGoDuration(std::string_view text);
Result<int64_t> ParseSize(std::string_view text);

}  // namespace djinn

#endif  // DJINN_COMMON_UNITS_H_
