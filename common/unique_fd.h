// UniqueFd: owns one file descriptor. Move-only; the destructor closes
// silently, Close() reports the error (use it where a failed close matters,
// e.g. after writing a file).
#ifndef DJINN_COMMON_UNIQUE_FD_H_
#define DJINN_COMMON_UNIQUE_FD_H_

#include <unistd.h>

#include <cerrno>
#include <utility>

#include "common/status.h"

namespace djinn {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) Reset(o.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  Status Close() {
    int fd = Release();
    if (fd >= 0 && ::close(fd) != 0 && errno != EINTR)
      return Status::FromErrno("close", errno);
    return Status::Ok();
  }

 private:
  int fd_ = -1;
};

}  // namespace djinn

#endif  // DJINN_COMMON_UNIQUE_FD_H_
