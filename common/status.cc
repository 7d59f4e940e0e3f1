#include "common/status.h"

#include <cstring>

namespace djinn {

Status Status::FromErrno(const std::string& what, int err, Kind kind) {
  return Status(kind, what + ": " + std::strerror(err));
}

Status Status::Wrap(const std::string& context) const {
  if (ok()) return *this;
  return Status(kind_, context + ": " + message_);
}

std::string Status::ToString() const {
  switch (kind_) {
    case Kind::kOk: return "ok";
    case Kind::kTransient: return "transient: " + message_;
    case Kind::kPermanent: return "permanent: " + message_;
    case Kind::kPoison: return "poison: " + message_;
    case Kind::kUnavailable: return "unavailable: " + message_;
  }
  return message_;
}

}  // namespace djinn
