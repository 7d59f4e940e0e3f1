#include "common/signals.h"

#include <string.h>

namespace djinn {

std::string SignalName(int signo) {
  const char* abbrev = sigabbrev_np(signo);
  if (abbrev) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(signo);
}

}  // namespace djinn
