#include "common/pidfile.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/log.h"

namespace djinn {

PidFile::~PidFile() { Remove(); }

Result<PidFile> PidFile::Acquire(const std::string& path) {
  // Not followed if a link, refused if not a regular file or, as root, if
  // hard-linked: we truncate it below, and a hard link to /etc/shadow would
  // be truncated too.
  auto opened = OpenOwnFile("pidfile", path, O_RDWR, 0644);
  if (!opened.ok()) return opened.status();
  UniqueFd ufd = std::move(*opened);
  int fd = ufd.get();
  if (std::string w = OwnFileDirectoryWarning("pidfile", path); !w.empty())
    LOG_WARN("%s", w.c_str());
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return Status::FromErrno("pidfile " + path + ": flock", errno);
    char buf[32] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, strnlen(buf, n)) : "?";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return Status::Permanent("another djinn-consumer is running (pid " + pid +
                             ", pidfile " + path + ")");
  }
  std::string text = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
    return Status::FromErrno("pidfile " + path + ": write", errno);
  PidFile pf;
  pf.path_ = path;
  pf.fd_ = std::move(ufd);
  return pf;
}

void PidFile::Remove() {
  if (!fd_.valid()) return;
  // Unlink while still holding the lock, so no second instance can lock
  // the old file and then see it vanish.
  ::unlink(path_.c_str());
  fd_.Reset();
}

}  // namespace djinn
