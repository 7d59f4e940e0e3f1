// The curlyq job envelope: msgpack {"ID": str, "Data": bin, "Attempt": int}.
//
// DecodeEnvelope() accepts what vmihailenco/msgpack v4 accepts: keys in any
// order, any int width, Data as bin or str (or nil), and the 3-element array
// form. EncodeEnvelope() writes exactly what curlyq v0.4.0 writes: fixmap(3)
// ID (str), Data (bin, or nil c0), Attempt (int64 d3 + 8 bytes).
// Errors are kPoison with a one-line reason. Never throws.
#ifndef DJINN_COMMON_ENVELOPE_H_
#define DJINN_COMMON_ENVELOPE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace djinn {

struct Envelope {
  std::string id;
  std::string data;       // the payload bytes
  bool data_nil = false;  // Data was msgpack nil or absent
  int64_t attempt = 0;
};

Result<Envelope> DecodeEnvelope(std::string_view bytes);
std::string EncodeEnvelope(const Envelope& env);

}  // namespace djinn

#endif  // DJINN_COMMON_ENVELOPE_H_
