// libFuzzer target: a Redis hash value as a worker reads it, envelope then
// payload. Besides "no crash", it checks that DecodeEnvelopeView (the
// master's reader) says what DecodeEnvelope says, that what DecodeEnvelope
// accepts re-encodes to an envelope that decodes to the same fields, and
// that EncodeEnvelope is a fixed point from there on.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/envelope.h"
#include "common/payload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  djinn::Result<djinn::Envelope> env = djinn::DecodeEnvelope(bytes);
  djinn::Result<djinn::EnvelopeView> view = djinn::DecodeEnvelopeView(bytes);
  if (view.ok() != env.ok()) std::abort();
  if (!env.ok()) {
    if (view.status().message() != env.status().message()) std::abort();
    return 0;
  }
  if (view->id != env->id || view->data != env->data || view->data_nil != env->data_nil ||
      view->attempt != env->attempt ||
      djinn::EncodeEnvelope(*view) != djinn::EncodeEnvelope(*env)) {
    std::abort();
  }
  const std::string encoded = djinn::EncodeEnvelope(*env);
  djinn::Result<djinn::Envelope> again = djinn::DecodeEnvelope(encoded);
  if (!again.ok() || again->id != env->id || again->data != env->data ||
      again->data_nil != env->data_nil || again->attempt != env->attempt ||
      djinn::EncodeEnvelope(*again) != encoded) {
    std::abort();
  }
  (void)djinn::DecodePayload(env->data);
  return 0;
}
