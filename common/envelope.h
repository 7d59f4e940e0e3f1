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
  int64_t attempt = 0;    // as written by the producer; see RunsSoFar
};

// How many times the job failed before, for retry decisions: a negative
// Attempt (no curlyq writes one) counts as 0, so it cannot buy unlimited
// retries.
inline int64_t RunsSoFar(const Envelope& env) { return env.attempt < 0 ? 0 : env.attempt; }
// The Attempt written back after a failure: RunsSoFar + 1, saturating at
// INT64_MAX (no signed overflow).
inline int64_t NextAttempt(const Envelope& env) {
  int64_t a = RunsSoFar(env);
  return a == INT64_MAX ? a : a + 1;
}
// curlyq v0.4.0 retries while the Attempt as taken is < JobMaxAttempts
// (Djinn passes `attempts`): a job runs at most max_retries + 1 times.
inline bool RetriesExhausted(const Envelope& env, int64_t max_retries) {
  return RunsSoFar(env) >= max_retries;
}

Result<Envelope> DecodeEnvelope(std::string_view bytes);
std::string EncodeEnvelope(const Envelope& env);

}  // namespace djinn

#endif  // DJINN_COMMON_ENVELOPE_H_
