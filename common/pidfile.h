// The pidfile: created, locked with flock() for the master's whole life,
// removed on exit. A second instance finds it locked and refuses to start.
#ifndef DJINN_COMMON_PIDFILE_H_
#define DJINN_COMMON_PIDFILE_H_

#include <string>

#include "common/status.h"
#include "common/unique_fd.h"

namespace djinn {

class PidFile {
 public:
  PidFile() = default;
  ~PidFile();
  PidFile(PidFile&&) = default;
  PidFile& operator=(PidFile&&) = default;
  // Locks path and writes our pid. The file is opened with OpenOwnFile
  // (common/log.h): a symbolic link, anything but a regular file and, as
  // root, a file with several hard links are refused, one line naming the
  // path ("pidfile /run/x.pid: is a symbolic link; refusing to follow it
  // (running as root)"); a directory writable by everyone is logged as a
  // warning. Fails (permanent) when another process holds the lock:
  // "another djinn-consumer is running (pid N, pidfile <path>)".
  static Result<PidFile> Acquire(const std::string& path);
  // Unlinks and unlocks now (also done by the destructor).
  void Remove();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  UniqueFd fd_;
};

}  // namespace djinn

#endif  // DJINN_COMMON_PIDFILE_H_
