// The curlyq job envelope: msgpack {"ID": str, "Data": bin, "Attempt": int}.
//
// DecodeEnvelope() accepts what vmihailenco/msgpack v4 accepts: keys in any
// order, any int width, Data as bin or str (or nil), and the 3-element array
// form. EncodeEnvelope() writes exactly what curlyq v0.4.0 writes: fixmap(3)
// ID (str), Data (bin, or nil c0), Attempt (int64 d3 + 8 bytes).
// Errors are kPoison with a one-line reason. Never throws (except
// std::bad_alloc).
//
// DecodeEnvelopeView() is the one reader: it allocates nothing but its error
// message, whatever the input (lengths and counts are checked against the
// bytes left, skipped values nest at most 32 deep). DecodeEnvelope() is it
// plus a copy of ID and Data. The master, which only rewrites Attempt, uses
// the view and never copies a payload.
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

// An envelope whose ID and Data are views into bytes owned elsewhere: the
// input of DecodeEnvelopeView, or an Envelope (converts implicitly, as a
// std::string does to a std::string_view; the Envelope must outlive it).
struct EnvelopeView {
  EnvelopeView() = default;
  EnvelopeView(const Envelope& env)  // NOLINT(google-explicit-constructor)
      : id(env.id), data(env.data), data_nil(env.data_nil), attempt(env.attempt) {}

  std::string_view id;
  std::string_view data;
  bool data_nil = false;
  int64_t attempt = 0;
};

// How many times the job failed before, for retry decisions: a negative
// Attempt (no curlyq writes one) counts as 0, so it cannot buy unlimited
// retries.
inline int64_t RunsSoFar(const EnvelopeView& env) { return env.attempt < 0 ? 0 : env.attempt; }
// The Attempt written back after a failure: RunsSoFar + 1, saturating at
// INT64_MAX (no signed overflow).
inline int64_t NextAttempt(const EnvelopeView& env) {
  int64_t a = RunsSoFar(env);
  return a == INT64_MAX ? a : a + 1;
}
// curlyq v0.4.0 retries while the Attempt as taken is < JobMaxAttempts
// (Djinn passes `attempts`): a job runs at most max_retries + 1 times.
inline bool RetriesExhausted(const EnvelopeView& env, int64_t max_retries) {
  return RunsSoFar(env) >= max_retries;
}

// The result's id and data point into `bytes`: keep them alive while it is
// used. Same acceptance, errors and messages as DecodeEnvelope.
Result<EnvelopeView> DecodeEnvelopeView(std::string_view bytes);
Result<Envelope> DecodeEnvelope(std::string_view bytes);
std::string EncodeEnvelope(const EnvelopeView& env);

}  // namespace djinn

#endif  // DJINN_COMMON_ENVELOPE_H_
