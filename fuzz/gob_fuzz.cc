// libFuzzer target: a job payload as the Djinn server sends it (a gob
// interface value), decoded generically and, for *image.DownloadJob, mapped
// to DownloadArgs (which decodes Source's nested gob stream).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/gob.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  djinn::Result<djinn::GobInterfaceValue> job = djinn::DecodeGobInterface(bytes);
  if (!job.ok()) {
    if (!job.status().poison()) std::abort();  // undecodable is always poison
    return 0;
  }
  if (job->name.empty()) std::abort();
  if (job->name == djinn::kGobDownloadJobName) {
    djinn::Result<djinn::DownloadArgs> args = djinn::DownloadArgsFromGob(*job);
    if (args.ok() && args->source.empty()) std::abort();
  }
  return 0;
}
