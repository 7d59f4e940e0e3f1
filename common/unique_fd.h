// UniqueFd: owns one file descriptor. Move-only; the destructor closes
// silently, Close() reports the error (use it where a failed close matters,
// e.g. after writing a file).
#ifndef DJINN_COMMON_UNIQUE_FD_H_
#define DJINN_COMMON_UNIQUE_FD_H_

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>
#include <vector>

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

// Closes every descriptor from 3 up except those in keep (negative ones
// are ignored): what a freshly forked child does before it runs code that
// must not reach its parent's connections. close_range(2), Linux 5.9.
inline void CloseFdsExcept(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned from = 3;
  for (int k : keep) {
    if (k < static_cast<int>(from)) continue;
    if (k > static_cast<int>(from))
      syscall(SYS_close_range, from, static_cast<unsigned>(k - 1), 0u);
    from = static_cast<unsigned>(k) + 1;
  }
  syscall(SYS_close_range, from, ~0u, 0u);
}

}  // namespace djinn

#endif  // DJINN_COMMON_UNIQUE_FD_H_
