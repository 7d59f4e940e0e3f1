#include "common/pidfile.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "tests/harness/harness.h"

namespace djinn {
namespace {

// " (running as root)" when we are, as the messages say.
std::string AsRoot() { return geteuid() == 0 ? " (running as root)" : ""; }

class PidFileTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  const std::string path_ = dir_.Sub("consumer.pid");
  const std::string target_ = dir_.Sub("target");
};

TEST_F(PidFileTest, WritesOurPidHoldsTheLockAndRemoves) {
  auto pf = PidFile::Acquire(path_);
  ASSERT_TRUE(pf.ok()) << pf.status().message();
  EXPECT_EQ(testing::ReadFile(path_), std::to_string(getpid()) + "\n");
  auto second = PidFile::Acquire(path_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().message(), "another djinn-consumer is running (pid " +
                                           std::to_string(getpid()) + ", pidfile " + path_ + ")");
  pf->Remove();
  EXPECT_FALSE(testing::FileExists(path_));
}

// O_NOFOLLOW applies whoever we run as: the link's target is neither
// truncated nor written, nor created when the link dangles.
TEST_F(PidFileTest, SymlinkIsRefusedAndItsTargetLeftAlone) {
  testing::WriteFile(target_, "secret", 0600);
  ASSERT_EQ(symlink(target_.c_str(), path_.c_str()), 0);
  auto pf = PidFile::Acquire(path_);
  ASSERT_FALSE(pf.ok());
  EXPECT_EQ(pf.status().message(),
            "pidfile " + path_ + ": is a symbolic link; refusing to follow it" + AsRoot());
  EXPECT_EQ(testing::ReadFile(target_), "secret");

  ASSERT_EQ(unlink(target_.c_str()), 0);
  pf = PidFile::Acquire(path_);
  ASSERT_FALSE(pf.ok());
  EXPECT_FALSE(testing::FileExists(target_));
}

// The pidfile is truncated when acquired: as root a hard link (to
// /etc/shadow, say) is refused before that.
TEST_F(PidFileTest, HardLinkIsRefusedOnlyWhenRoot) {
  testing::WriteFile(target_, "secret", 0600);
  ASSERT_EQ(link(target_.c_str(), path_.c_str()), 0);
  auto pf = PidFile::Acquire(path_);
  if (geteuid() != 0) {
    EXPECT_TRUE(pf.ok()) << pf.status().message();
    return;
  }
  ASSERT_FALSE(pf.ok());
  EXPECT_EQ(pf.status().message(),
            "pidfile " + path_ + ": has 2 hard links; refusing to write to it (running as root)");
  EXPECT_EQ(testing::ReadFile(target_), "secret");
}

TEST_F(PidFileTest, NonRegularFileIsRefused) {
  ASSERT_EQ(mkfifo(path_.c_str(), 0600), 0);
  auto pf = PidFile::Acquire(path_);
  ASSERT_FALSE(pf.ok());
  EXPECT_EQ(pf.status().message(),
            "pidfile " + path_ + ": is a FIFO, not a regular file; refusing to write to it");
}

}  // namespace
}  // namespace djinn
