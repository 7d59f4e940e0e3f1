#include "master/part_sweep.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>

#include "common/log.h"
#include "common/unique_fd.h"
#include "worker/part_resume.h"

namespace djinn {
namespace {

constexpr char kPartSuffix[] = ".part";
constexpr char kTmpSuffix[] = ".tmp";

struct CloseDir {
  void operator()(DIR* d) const { closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, CloseDir>;

// Opens name beneath dir as a directory, never through a link. Invalid
// (errno set) for anything else.
UniqueFd OpenSubdir(int dir, const std::string& name) {
  return UniqueFd(openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

// The entry names of the directory fd (which stays open), "." and ".." left out.
bool ListDir(int fd, std::vector<std::string>* names) {
  UniqueFd copy(fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!copy.valid()) return false;
  DirPtr dir(fdopendir(copy.get()));
  if (!dir) return false;
  copy.Release();  // the DIR owns it now
  rewinddir(dir.get());
  errno = 0;
  while (struct dirent* e = readdir(dir.get())) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names->push_back(name);
  }
  return errno == 0;
}

bool OldEnough(const struct stat& st, int64_t now, int64_t max_age) {
  return now - static_cast<int64_t>(st.st_mtim.tv_sec) > max_age;
}

void Unlink(int dir, const std::string& where, const std::string& name, PartSweepStats* stats) {
  if (unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT) {
    LOG_WARN("part sweep: cannot remove %s/%s: %s", where.c_str(), name.c_str(),
             std::strerror(errno));
    ++stats->errors;
  }
}

// One abandoned-looking .part: removed (with its sidecar) when its lock is
// free and it is still the file we looked at.
void SweepPart(int dir, const std::string& where, const std::string& name, int64_t now,
               int64_t max_age, PartSweepStats* stats) {
  UniqueFd fd(openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno != ENOENT) ++stats->errors;
    return;
  }
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      LOG_DEBUG("part sweep: %s/%s is being written; left alone", where.c_str(), name.c_str());
      ++stats->busy;
    } else {
      ++stats->errors;
    }
    return;
  }
  // Under the lock the name is stable (a download renames or removes its
  // .part only while holding it): check it still is this old regular file.
  struct stat held {
  }, named{};
  if (fstat(fd.get(), &held) != 0 || !S_ISREG(held.st_mode) || !OldEnough(held, now, max_age) ||
      fstatat(dir, name.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 || named.st_ino != held.st_ino ||
      named.st_dev != held.st_dev)
    return;
  const std::string meta = name + kPartMetaSuffix;
  Unlink(dir, where, meta, stats);
  Unlink(dir, where, meta + kTmpSuffix, stats);
  if (unlinkat(dir, name.c_str(), 0) != 0) {
    LOG_WARN("part sweep: cannot remove %s/%s: %s", where.c_str(), name.c_str(),
             std::strerror(errno));
    ++stats->errors;
    return;
  }
  ++stats->removed;
  LOG_INFO("part sweep: removed %s/%s (%lld bytes, last written %lld h ago)", where.c_str(),
           name.c_str(), static_cast<long long>(held.st_size),
           static_cast<long long>((now - held.st_mtim.tv_sec) / 3600));
}

// <store>/<user>/<driver>: our dot-files only.
void SweepDriverDir(int dir, const std::string& where, int64_t now, int64_t max_age,
                    PartSweepStats* stats) {
  std::vector<std::string> names;
  if (!ListDir(dir, &names)) {
    LOG_WARN("part sweep: cannot list %s: %s", where.c_str(), std::strerror(errno));
    ++stats->errors;
    return;
  }
  const std::string meta = std::string(kPartSuffix) + kPartMetaSuffix;
  const std::string meta_tmp = meta + kTmpSuffix;
  for (const std::string& name : names) {
    if (name.size() < 2 || name[0] != '.') continue;
    std::string part;
    if (name.ends_with(kPartSuffix)) {
      part = name;
    } else if (name.ends_with(meta)) {
      part = name.substr(0, name.size() - std::strlen(kPartMetaSuffix));
    } else if (name.ends_with(meta_tmp)) {
      part = name.substr(0, name.size() - std::strlen(kPartMetaSuffix) - std::strlen(kTmpSuffix));
    } else {
      continue;
    }
    struct stat st {};
    if (fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
        !OldEnough(st, now, max_age))
      continue;
    if (part == name) {
      SweepPart(dir, where, name, now, max_age, stats);
      continue;
    }
    // A sidecar: it goes with its .part (above), or alone when that is gone.
    struct stat ps {};
    if (fstatat(dir, part.c_str(), &ps, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) continue;
    if (unlinkat(dir, name.c_str(), 0) == 0) {
      ++stats->strays;
      LOG_INFO("part sweep: removed %s/%s (its .part is gone)", where.c_str(), name.c_str());
    } else if (errno != ENOENT) {
      ++stats->errors;
    }
  }
}

}  // namespace

void SweepUserDir(int store_fd, const std::string& store, const std::string& user, int64_t now,
                  int64_t max_age_seconds, PartSweepStats* stats) {
  UniqueFd udir = OpenSubdir(store_fd, user);
  if (!udir.valid()) return;  // a file, a link or gone: not ours to walk
  const std::string uwhere = store + "/" + user;
  std::vector<std::string> drivers;
  if (!ListDir(udir.get(), &drivers)) {
    LOG_WARN("part sweep: cannot list %s: %s", uwhere.c_str(), std::strerror(errno));
    ++stats->errors;
    return;
  }
  for (const std::string& driver : drivers) {
    UniqueFd ddir = OpenSubdir(udir.get(), driver);
    if (!ddir.valid()) continue;
    SweepDriverDir(ddir.get(), uwhere + "/" + driver, now, max_age_seconds, stats);
  }
}

PartSweeper::PartSweeper(int64_t period_ms) : period_ms_(period_ms) {}

void PartSweeper::Tick(const std::string& store, int64_t now_ms) {
  if (!in_pass() && now_ms >= next_pass_ms_) {  // next_pass_ms_ 0: the first tick
    next_pass_ms_ = now_ms + period_ms_;
    StartPass(store);
    if (!in_pass()) {
      FinishPass();
      return;
    }
  }
  if (!in_pass()) return;
  Step(kPartSweepDirsPerTick);
  if (!in_pass()) FinishPass();
}

PartSweepStats PartSweeper::SweepAll(const std::string& store) {
  StartPass(store);
  while (in_pass()) Step(kPartSweepDirsPerTick);
  PartSweepStats done = stats_;
  FinishPass();
  return done;
}

void PartSweeper::StartPass(const std::string& store) {
  store_ = store;
  stats_ = PartSweepStats{};
  pending_.clear();
  UniqueFd root(open(store.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid() || !ListDir(root.get(), &pending_)) {
    LOG_WARN("part sweep: cannot list the store %s: %s", store.c_str(), std::strerror(errno));
    pending_.clear();
    ++stats_.errors;
  }
}

void PartSweeper::Step(int max_dirs) {
  UniqueFd root(open(store_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) {
    LOG_WARN("part sweep: cannot open the store %s: %s", store_.c_str(), std::strerror(errno));
    ++stats_.errors;
    pending_.clear();
    return;
  }
  const int64_t now = static_cast<int64_t>(time(nullptr));
  for (int i = 0; i < max_dirs && !pending_.empty(); ++i) {
    std::string user = std::move(pending_.back());
    pending_.pop_back();
    SweepUserDir(root.get(), store_, user, now, kResumeMaxAgeSeconds, &stats_);
  }
}

void PartSweeper::FinishPass() {
  if (stats_.removed + stats_.strays + stats_.busy + stats_.errors > 0)
    LOG_INFO(
        "part sweep of %s: %d abandoned .part file(s) removed, %d stray sidecar(s), "
        "%d old one(s) still being written, %d error(s)",
        store_.c_str(), stats_.removed, stats_.strays, stats_.busy, stats_.errors);
  else
    LOG_DEBUG("part sweep of %s: nothing abandoned", store_.c_str());
  stats_ = PartSweepStats{};
}

PartSweeper& MasterPartSweeper() {
  static PartSweeper sweeper;
  return sweeper;
}

}  // namespace djinn
