// Tests for common/sandbox.h. Every sandbox step is irreversible, so each
// test applies it in a forked child and the parent (never sandboxed) checks
// the child's exit code. A child reports success with kChildOk (not 0), so a
// child that was wrongly allowed to exec /bin/true cannot pass for one that
// succeeded.
#include "common/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>

#include "tests/harness/harness.h"
#include <netdb.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace djinn {
namespace {

constexpr int kChildOk = 42;

// In the child: print what failed (with errno) and exit non-zero.
#define CHILD_CHECK(cond)                                                    \
  do {                                                                       \
    if (!(cond)) {                                                           \
      int child_check_errno = errno;                                         \
      std::fprintf(stderr, "%s:%d: child check failed: %s (errno %d: %s)\n", \
                   __FILE__, __LINE__, #cond, child_check_errno,             \
                   std::strerror(child_check_errno));                        \
      return 1;                                                              \
    }                                                                        \
  } while (0)

#define CHILD_CHECK_OK(status_expr)                                      \
  do {                                                                   \
    Status child_check_status = (status_expr);                           \
    if (!child_check_status.ok()) {                                      \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, \
                   #status_expr, child_check_status.ToString().c_str()); \
      return 1;                                                          \
    }                                                                    \
  } while (0)

// Expects `call` to fail with errno `err`.
#define CHILD_CHECK_ERRNO(call, err)                                         \
  do {                                                                       \
    errno = 0;                                                               \
    long child_check_rc = static_cast<long>(call);                           \
    int child_check_errno = errno;                                           \
    if (child_check_rc != -1 || child_check_errno != (err)) {                \
      std::fprintf(stderr, "%s:%d: %s: want -1/%s, got %ld/errno %d (%s)\n", \
                   __FILE__, __LINE__, #call, #err, child_check_rc,          \
                   child_check_errno, std::strerror(child_check_errno));     \
      return 1;                                                              \
    }                                                                        \
  } while (0)

// Runs `body` in a forked child and returns a description of how it ended:
// "ok" when it returned kChildOk, otherwise the exit code or signal.
std::string RunInChild(const std::function<int()>& body) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) return std::string("fork: ") + std::strerror(errno);
  if (pid == 0) {
    int code = body();
    std::fflush(nullptr);
    _exit(code);  // no atexit handlers, no LeakSanitizer (needs ptrace)
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return std::string("waitpid: ") + std::strerror(errno);
  }
  if (WIFEXITED(status)) {
    if (WEXITSTATUS(status) == kChildOk) return "ok";
    return "exit " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// Runs the lambda in a child and expects it to return kChildOk. A macro so the
// failure points at the test's line without printing the whole lambda.
#define EXPECT_CHILD_OK(...)                                  \
  do {                                                        \
    const std::string child_result = RunInChild(__VA_ARGS__); \
    EXPECT_EQ(child_result, "ok");                            \
  } while (0)

using testing::TempDir;  // removed (with its contents) by the parent

bool WriteFile(const std::string& path, const std::string& data, int flags) {
  int fd = open(path.c_str(), flags | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok =
      write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  int saved = errno;
  ok = (close(fd) == 0) && ok;
  errno = saved;
  return ok;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool ResolvesLocalhost() {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo("localhost", "80", &hints, &res);
  if (rc != 0) {
    std::fprintf(stderr, "getaddrinfo(localhost): %s\n", gai_strerror(rc));
    return false;
  }
  freeaddrinfo(res);
  return true;
}

bool ThreadRuns() {
  std::atomic<int> ran{0};
  std::thread t([&ran] { ran = 1; });
  t.join();
  return ran == 1;
}

int LandlockAbiOrZero() {
  Result<int> abi = LandlockAbi();
  return abi.ok() ? *abi : 0;
}

// ---------------------------------------------------------------------------
// Seccomp

TEST(SeccompTest, ExecveFailsWithEperm) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    char* const envp[] = {nullptr};
    CHILD_CHECK_ERRNO(execve("/bin/true", argv, envp), EPERM);
    return kChildOk;
  });
}

TEST(SeccompTest, PtraceFailsWithEperm) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    CHILD_CHECK_ERRNO(ptrace(PTRACE_TRACEME, 0, nullptr, nullptr), EPERM);
    return kChildOk;
  });
}

TEST(SeccompTest, UnshareNewUserFailsWithEperm) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    CHILD_CHECK_ERRNO(unshare(CLONE_NEWUSER), EPERM);
    return kChildOk;
  });
}

TEST(SeccompTest, MountFailsWithEperm) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    // A target that does not exist: without the filter this would
    // fail with ENOENT, never mount anything.
    CHILD_CHECK_ERRNO(
        mount("none", "/nonexistent-djinn-sandbox", "tmpfs", 0, nullptr),
        EPERM);
    return kChildOk;
  });
}

TEST(SeccompTest, CloneWithNamespaceFlagFailsWithEperm) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    // Raw clone: if it wrongly succeeds, the new child leaves at
    // once with a failing code and we report the failure.
    long rc = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (rc == 0) _exit(1);
    CHILD_CHECK(rc == -1 && errno == EPERM);
    return kChildOk;
  });
}

TEST(SeccompTest, Clone3FailsWithEnosys) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    CHILD_CHECK_ERRNO(syscall(SYS_clone3, nullptr, 0), ENOSYS);
    return kChildOk;
  });
}

TEST(SeccompTest, PersonalityQueryAllowedChangeDenied) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    CHILD_CHECK(personality(0xffffffff) != -1);
    CHILD_CHECK_ERRNO(personality(ADDR_NO_RANDOMIZE), EPERM);
    return kChildOk;
  });
}

TEST(SeccompTest, SetuidFamilyFailsWithEperm) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    // Raw syscalls: glibc's wrappers may short-cut or broadcast.
    CHILD_CHECK_ERRNO(syscall(SYS_setuid, getuid()), EPERM);
    CHILD_CHECK_ERRNO(syscall(SYS_setresgid, -1, -1, -1), EPERM);
    CHILD_CHECK_ERRNO(syscall(SYS_setgroups, 0, nullptr), EPERM);
    return kChildOk;
  });
}

TEST(SeccompTest, ThreadsStillWork) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    CHILD_CHECK(ThreadRuns());
    return kChildOk;
  });
}

TEST(SeccompTest, ForkStillWorks) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    pid_t pid = fork();
    if (pid == 0) _exit(7);
    CHILD_CHECK(pid > 0);
    int status = 0;
    CHILD_CHECK(waitpid(pid, &status, 0) == pid);
    CHILD_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);
    return kChildOk;
  });
}

TEST(SeccompTest, GetaddrinfoLocalhostStillWorks) {
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(InstallSeccompFilter());
    CHILD_CHECK(ResolvesLocalhost());
    return kChildOk;
  });
}

// ---------------------------------------------------------------------------
// Privilege drop

TEST(DropPrivilegesTest, DroppedToNobodyCannotRegainRoot) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(DropPrivileges("nobody", ""));
    CHILD_CHECK(getuid() != 0 && geteuid() != 0);
    CHILD_CHECK(setuid(0) == -1);
    CHILD_CHECK(seteuid(0) == -1);
    return kChildOk;
  });
}

TEST(DropPrivilegesTest, DroppedToNobodyCannotReadRoot) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  struct stat st {};
  if (stat("/root", &st) != 0 || (st.st_mode & S_IROTH) != 0) {
    GTEST_SKIP() << "/root is missing or world-readable here";
  }
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(DropPrivileges("nobody", ""));
    CHILD_CHECK(opendir("/root") == nullptr && errno == EACCES);
    return kChildOk;
  });
}

TEST(DropPrivilegesTest, SupplementaryGroupsAreOnlyTheTargetGroup) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  EXPECT_CHILD_OK([] {
    CHILD_CHECK_OK(DropPrivileges("nobody", ""));
    gid_t groups[16];
    int n = getgroups(16, groups);
    CHILD_CHECK(n == 1);
    CHILD_CHECK(groups[0] == getgid());
    passwd* pw = getpwnam("nobody");
    CHILD_CHECK(pw != nullptr && getgid() == pw->pw_gid);
    return kChildOk;
  });
}

TEST(DropPrivilegesTest, ExplicitGroupIsUsed) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  group* gr = getgrnam("nogroup");
  if (gr == nullptr) GTEST_SKIP() << "no group nogroup";
  gid_t want = gr->gr_gid;
  EXPECT_CHILD_OK([want] {
    CHILD_CHECK_OK(DropPrivileges("nobody", "nogroup"));
    CHILD_CHECK(getgid() == want && getegid() == want);
    return kChildOk;
  });
}

TEST(DropPrivilegesTest, UnknownUserIsPermanentError) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  EXPECT_CHILD_OK([] {
    Status s = DropPrivileges("no-such-user-djinn", "");
    CHILD_CHECK(s.permanent());
    CHILD_CHECK(s.message().find("no-such-user-djinn") != std::string::npos);
    CHILD_CHECK(geteuid() == 0);  // nothing changed
    return kChildOk;
  });
}

TEST(DropPrivilegesTest, UserWithUidZeroIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  EXPECT_CHILD_OK([] {
    Status s = DropPrivileges("root", "");
    CHILD_CHECK(s.permanent());
    return kChildOk;
  });
}

TEST(DropPrivilegesTest, WithoutRootIsPermanentError) {
  if (geteuid() == 0) GTEST_SKIP() << "needs a non-root euid";
  Status s = DropPrivileges("nobody", "");
  EXPECT_TRUE(s.permanent()) << s.ToString();
}

// ---------------------------------------------------------------------------
// Landlock

class LandlockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    abi_ = LandlockAbiOrZero();
    if (abi_ == 0) GTEST_SKIP() << "Landlock unavailable";
    ASSERT_FALSE(store_.path().empty());
    ASSERT_FALSE(other_.path().empty());
    ASSERT_FALSE(logdir_.path().empty());
    log_ = logdir_.Sub("consumer.log");
    ASSERT_TRUE(WriteFile(log_, "first\n", O_CREAT | O_TRUNC));
    ASSERT_TRUE(WriteFile(other_.Sub("existing"), "x", O_CREAT | O_TRUNC));
  }

  Status Apply() { return ApplyLandlock({store_.path()}, {log_}); }

  int abi_ = 0;
  TempDir store_, other_, logdir_;
  std::string log_;
};

TEST_F(LandlockTest, WriteUnderAllowedDirWorks) {
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK(WriteFile(store_.Sub("img.qcow2"), "data", O_CREAT));
    CHILD_CHECK(mkdir(store_.Sub("sub").c_str(), 0755) == 0);
    CHILD_CHECK(WriteFile(store_.Sub("sub/a"), "data", O_CREAT));
    CHILD_CHECK(unlink(store_.Sub("img.qcow2").c_str()) == 0);
    return kChildOk;
  });
}

TEST_F(LandlockTest, RenameAcrossDirsInsideStoreWorks) {
  if (abi_ < 2) GTEST_SKIP() << "REFER needs Landlock ABI 2";
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK(mkdir(store_.Sub("tmp").c_str(), 0755) == 0);
    CHILD_CHECK(mkdir(store_.Sub("final").c_str(), 0755) == 0);
    CHILD_CHECK(WriteFile(store_.Sub("tmp/x"), "data", O_CREAT));
    CHILD_CHECK(rename(store_.Sub("tmp/x").c_str(),
                       store_.Sub("final/x").c_str()) == 0);
    return kChildOk;
  });
}

TEST_F(LandlockTest, WriteToOtherDirFailsWithEacces) {
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK(!WriteFile(other_.Sub("new"), "x", O_CREAT));
    CHILD_CHECK(errno == EACCES);
    CHILD_CHECK(!WriteFile(other_.Sub("existing"), "x", O_APPEND));
    CHILD_CHECK(errno == EACCES);
    CHILD_CHECK_ERRNO(unlink(other_.Sub("existing").c_str()), EACCES);
    CHILD_CHECK_ERRNO(mkdir(other_.Sub("d").c_str(), 0755), EACCES);
    return kChildOk;
  });
}

TEST_F(LandlockTest, ReadsOutsideAllowedDirsStillWork) {
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK(ReadFile(other_.Sub("existing")) == "x");
    CHILD_CHECK(!ReadFile("/etc/passwd").empty());
    return kChildOk;
  });
}

TEST_F(LandlockTest, AppendToAllowedLogFileWorks) {
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK(WriteFile(log_, "second\n", O_APPEND));
    return kChildOk;
  });
  EXPECT_EQ(ReadFile(log_), "first\nsecond\n");
}

TEST_F(LandlockTest, CreateFileNextToLogFileFails) {
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK(!WriteFile(logdir_.Sub("consumer.log.1"), "x", O_CREAT));
    CHILD_CHECK(errno == EACCES);
    CHILD_CHECK_ERRNO(unlink(log_.c_str()), EACCES);
    return kChildOk;
  });
}

TEST_F(LandlockTest, DevNullStaysWritable) {
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK(WriteFile("/dev/null", "x", 0));
    return kChildOk;
  });
}

TEST_F(LandlockTest, MissingPathsAreSkippedWithNote) {
  EXPECT_CHILD_OK([this] {
    std::string notes;
    CHILD_CHECK_OK(ApplyLandlock({store_.Sub("missing-dir")},
                                 {store_.Sub("missing.log")}, &notes));
    CHILD_CHECK(notes.find("missing-dir") != std::string::npos);
    CHILD_CHECK(notes.find("missing.log") != std::string::npos);
    // Nothing was granted for the missing dir's parent either.
    CHILD_CHECK(!WriteFile(store_.Sub("f"), "x", O_CREAT));
    return kChildOk;
  });
}

TEST_F(LandlockTest, FileGivenAsDirIsError) {
  EXPECT_CHILD_OK([this] {
    Status s = ApplyLandlock({log_}, {});
    CHILD_CHECK(s.permanent());
    return kChildOk;
  });
}

// ---------------------------------------------------------------------------
// rlimits

TEST(SetRlimitsTest, CoreBecomesZero) {
  EXPECT_CHILD_OK([] {
    SandboxOptions opts;
    CHILD_CHECK_OK(SetRlimits(opts));
    rlimit core{};
    CHILD_CHECK(getrlimit(RLIMIT_CORE, &core) == 0);
    CHILD_CHECK(core.rlim_cur == 0 && core.rlim_max == 0);
    return kChildOk;
  });
}

TEST(SetRlimitsTest, CoreUntouchedWhenCoreDumpsWanted) {
  EXPECT_CHILD_OK([] {
    rlimit before{};
    CHILD_CHECK(getrlimit(RLIMIT_CORE, &before) == 0);
    SandboxOptions opts;
    opts.core_dumps = true;
    CHILD_CHECK_OK(SetRlimits(opts));
    rlimit after{};
    CHILD_CHECK(getrlimit(RLIMIT_CORE, &after) == 0);
    CHILD_CHECK(after.rlim_cur == before.rlim_cur &&
                after.rlim_max == before.rlim_max);
    return kChildOk;
  });
}

TEST(SetRlimitsTest, NofileSetAndCappedAtHardLimit) {
  EXPECT_CHILD_OK([] {
    SandboxOptions opts;
    opts.max_open_files = 100;
    CHILD_CHECK_OK(SetRlimits(opts));
    rlimit nofile{};
    CHILD_CHECK(getrlimit(RLIMIT_NOFILE, &nofile) == 0);
    CHILD_CHECK(nofile.rlim_cur == 100 && nofile.rlim_max == 100);
    // Above the (now lowered) hard limit: capped, not an error.
    opts.max_open_files = 1000000;
    CHILD_CHECK_OK(SetRlimits(opts));
    CHILD_CHECK(getrlimit(RLIMIT_NOFILE, &nofile) == 0);
    CHILD_CHECK(nofile.rlim_cur == 100);
    return kChildOk;
  });
}

TEST(SetRlimitsTest, ZeroOpenFilesIsRejected) {
  SandboxOptions opts;
  opts.max_open_files = 0;
  EXPECT_TRUE(SetRlimits(opts).permanent());  // rejected before any change
}

// ---------------------------------------------------------------------------
// Everything together

TEST(ApplySandboxTest, EndToEnd) {
  const bool root = geteuid() == 0;
  TempDir store, other, logdir;
  ASSERT_FALSE(store.path().empty());
  ASSERT_FALSE(other.path().empty());
  ASSERT_FALSE(logdir.path().empty());
  const std::string log = logdir.Sub("consumer.log");
  ASSERT_TRUE(WriteFile(log, "first\n", O_CREAT | O_TRUNC));
  uid_t nobody_uid = 0;
  if (root) {
    passwd* pw = getpwnam("nobody");
    ASSERT_NE(pw, nullptr);
    nobody_uid = pw->pw_uid;
    // The dropped user owns what it may write; the other dirs are open to
    // everyone so that only Landlock, not file modes, keeps it out.
    ASSERT_EQ(chown(store.path().c_str(), pw->pw_uid, pw->pw_gid), 0);
    ASSERT_EQ(chown(log.c_str(), pw->pw_uid, pw->pw_gid), 0);
    ASSERT_EQ(chmod(other.path().c_str(), 0777), 0);
    ASSERT_EQ(chmod(logdir.path().c_str(), 0777), 0);
  }
  const int abi = LandlockAbiOrZero();

  EXPECT_CHILD_OK([&] {
    SandboxOptions opts;
    if (root) opts.user = "nobody";
    opts.writable_dirs = {store.path()};
    opts.writable_files = {log};
    std::string notes;
    CHILD_CHECK_OK(ApplySandbox(opts, &notes));
    std::fprintf(stderr, "sandbox notes: %s\n", notes.c_str());

    // rlimits, dumpable, no_new_privs, seccomp mode 2.
    rlimit core{};
    CHILD_CHECK(getrlimit(RLIMIT_CORE, &core) == 0 && core.rlim_max == 0);
    CHILD_CHECK(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
    CHILD_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
    CHILD_CHECK(ReadFile("/proc/self/status").find("Seccomp:\t2") !=
                std::string::npos);

    // Privileges.
    if (root) {
      CHILD_CHECK(getuid() == nobody_uid && geteuid() == nobody_uid);
      CHILD_CHECK(setuid(0) == -1);
      CHILD_CHECK(opendir("/root") == nullptr);
      CHILD_CHECK(notes.find("dropped to nobody") != std::string::npos);
    }

    // Seccomp.
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    char* const envp[] = {nullptr};
    CHILD_CHECK_ERRNO(execve("/bin/true", argv, envp), EPERM);
    CHILD_CHECK_ERRNO(ptrace(PTRACE_TRACEME, 0, nullptr, nullptr), EPERM);
    CHILD_CHECK_ERRNO(unshare(CLONE_NEWUSER), EPERM);
    CHILD_CHECK(ThreadRuns());
    CHILD_CHECK(ResolvesLocalhost());

    // Landlock.
    if (abi > 0) {
      CHILD_CHECK(notes.find("landlock ABI " + std::to_string(abi)) !=
                  std::string::npos);
      CHILD_CHECK(WriteFile(store.Sub("img"), "data", O_CREAT));
      CHILD_CHECK(!WriteFile(other.Sub("img"), "data", O_CREAT));
      CHILD_CHECK(errno == EACCES);
      CHILD_CHECK(WriteFile(log, "second\n", O_APPEND));
      CHILD_CHECK(!WriteFile(logdir.Sub("new.log"), "x", O_CREAT));
      CHILD_CHECK(errno == EACCES);
    } else {
      CHILD_CHECK(notes.find("landlock unavailable") != std::string::npos);
    }
    return kChildOk;
  });
  if (abi > 0) {
    EXPECT_EQ(ReadFile(log), "first\nsecond\n");
  }
}

TEST(ApplySandboxTest, RootWithoutUserIsNotDroppedAndSaysSo) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  EXPECT_CHILD_OK([] {
    std::string notes;
    CHILD_CHECK_OK(ApplySandbox(SandboxOptions{}, &notes));
    CHILD_CHECK(geteuid() == 0);
    CHILD_CHECK(notes.find("not dropped") != std::string::npos);
    return kChildOk;
  });
}

TEST(ApplySandboxTest, RefusesWhenMultithreaded) {
  EXPECT_CHILD_OK([] {
    int pipe_fds[2];
    CHILD_CHECK(pipe(pipe_fds) == 0);
    std::thread waiter([&pipe_fds] {
      char c;
      (void)!read(pipe_fds[0], &c, 1);
    });
    std::string notes;
    Status s = ApplySandbox(SandboxOptions{}, &notes);
    (void)!write(pipe_fds[1], "x", 1);
    waiter.join();
    CHILD_CHECK(s.permanent());
    CHILD_CHECK(s.message().find("threads") != std::string::npos);
    return kChildOk;
  });
}

TEST(ApplySandboxTest, LandlockUnavailableIsSkippedWithNote) {
  EXPECT_CHILD_OK([] {
    // Pretend the kernel has no Landlock: landlock_create_ruleset
    // answers ENOSYS, as on a kernel built without it.
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    CHILD_CHECK(ctx != nullptr);
    CHILD_CHECK(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS),
                                 SCMP_SYS(landlock_create_ruleset), 0) == 0);
    CHILD_CHECK(seccomp_load(ctx) == 0);
    seccomp_release(ctx);
    Result<int> abi = LandlockAbi();
    CHILD_CHECK(abi.ok() && *abi == 0);
    std::string notes;
    CHILD_CHECK_OK(ApplySandbox(SandboxOptions{}, &notes));
    CHILD_CHECK(notes.find("landlock unavailable") != std::string::npos);
    return kChildOk;
  });
}

// ---------------------------------------------------------------------------
// The download process's confinement (ApplyDownloadSandbox)

class DownloadSandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    abi_ = LandlockAbiOrZero();
    ASSERT_FALSE(own_.path().empty());
    ASSERT_FALSE(other_.path().empty());
    ASSERT_TRUE(WriteFile(other_.Sub("their-image"), "secret", O_CREAT | O_TRUNC));
    allowed_ = Listen(&allowed_port_);
    refused_ = Listen(&refused_port_);
    ASSERT_GE(allowed_, 0);
    ASSERT_GE(refused_, 0);
  }
  void TearDown() override {
    if (allowed_ >= 0) close(allowed_);
    if (refused_ >= 0) close(refused_);
  }

  // A listening TCP socket on 127.0.0.1 and a free port.
  static int Listen(uint16_t* port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      close(fd);
      return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
  }

  // connect() to 127.0.0.1:port; 0 or the errno.
  static int Connect(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    int rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? 0 : errno;
    close(fd);
    return rc;
  }

  // What the worker does before it forks a download: no_new_privs (the
  // worker's own sandbox set it), then the download box in the child.
  Status Apply(uint64_t address_space = 0) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Status::Permanent("no_new_privs");
    DownloadSandbox box;
    box.rw_dirs = {own_.path()};
    box.ro_paths = DownloadReadPaths({});
    box.tcp_connect_ports = {allowed_port_};
    box.address_space = address_space;
    std::string notes;
    Status s = ApplyDownloadSandbox(box, &notes);
    std::fprintf(stderr, "download sandbox notes: %s\n", notes.c_str());
    return s;
  }

  int abi_ = 0;
  TempDir own_, other_;
  int allowed_ = -1, refused_ = -1;
  uint16_t allowed_port_ = 0, refused_port_ = 0;
};

// Controls: what an http, https or sftp transfer needs still works. (The
// rename into place is the worker's, not the download process's.)
TEST_F(DownloadSandboxTest, AllowsWhatATransferNeeds) {
  EXPECT_CHILD_OK([this] {
    InstallSigsysReporter(2);  // a refused call shows on stderr as "S<nr>"
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK(WriteFile(own_.Sub("img.part"), "QFI\xfb", O_CREAT));
    CHILD_CHECK(ReadFile(own_.Sub("img.part")) == "QFI\xfb");
    CHILD_CHECK(ResolvesLocalhost());
    CHILD_CHECK(ThreadRuns());  // libcurl's threaded resolver
    CHILD_CHECK(Connect(allowed_port_) == 0);
    if (access("/etc/ssl/certs/ca-certificates.crt", F_OK) == 0) {
      CHILD_CHECK(!ReadFile("/etc/ssl/certs/ca-certificates.crt").empty());
    }
    return kChildOk;
  });
}

TEST_F(DownloadSandboxTest, FilesOutsideItsDirectoryAreRefused) {
  if (abi_ == 0) GTEST_SKIP() << "Landlock unavailable";
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK_ERRNO(open(other_.Sub("their-image").c_str(), O_RDONLY | O_CLOEXEC), EACCES);
    CHILD_CHECK_ERRNO(open(other_.Sub("planted").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644),
                      EACCES);
    CHILD_CHECK_ERRNO(open("/etc/passwd", O_RDONLY | O_CLOEXEC), EACCES);
    CHILD_CHECK_ERRNO(opendir(other_.path().c_str()) == nullptr ? -1 : 0, EACCES);
    return kChildOk;
  });
  EXPECT_FALSE(std::filesystem::exists(other_.Sub("planted")));
}

TEST_F(DownloadSandboxTest, ConnectsOnlyToAllowedPorts) {
  if (abi_ < 4) GTEST_SKIP() << "Landlock ABI " << abi_ << " has no TCP rules (needs 4)";
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK(Connect(allowed_port_) == 0);
    CHILD_CHECK(Connect(refused_port_) == EACCES);
    return kChildOk;
  });
}

// A call outside the allow-list never runs: the reporter writes its number
// and the process exits kSigsysExit.
TEST_F(DownloadSandboxTest, ForbiddenCallIsReportedAndEndsTheProcess) {
  struct Case {
    long nr;
    std::function<void()> call;
  };
  std::vector<Case> cases = {
      {SYS_execve,
       [] {
         char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
         char* const envp[] = {nullptr};
         execve("/bin/true", argv, envp);
       }},
      {SYS_clone, [] { syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); }},  // fork
      {SYS_ptrace, [] { ptrace(PTRACE_TRACEME, 0, nullptr, nullptr); }},
      {SYS_socket, [] { socket(AF_PACKET, SOCK_RAW, 0); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("system call " + std::to_string(c.nr));
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    std::string result = RunInChild([&] {
      close(fds[0]);
      InstallSigsysReporter(fds[1]);
      CHILD_CHECK_OK(Apply());
      c.call();
      return kChildOk;  // the call ran: the allow-list let it through
    });
    close(fds[1]);
    char buf[64] = {};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    EXPECT_EQ(result, "exit " + std::to_string(kSigsysExit));
    EXPECT_EQ(std::string(buf, n > 0 ? n : 0), "S" + std::to_string(c.nr) + "\n");
  }
}

// Landlock does not govern connecting to a named unix socket (a local
// Redis or PostgreSQL), so the download process cannot make one at all;
// the call fails (glibc falls back) instead of ending the process.
TEST_F(DownloadSandboxTest, UnixSocketsAreRefused) {
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply());
    CHILD_CHECK_ERRNO(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), EACCES);
    int pair[2];
    CHILD_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);  // libcurl's wake-up
    return kChildOk;
  });
}

#if !defined(__SANITIZE_ADDRESS__)  // ASan reserves terabytes of address space
TEST_F(DownloadSandboxTest, AddressSpaceIsLimited) {
  EXPECT_CHILD_OK([this] {
    CHILD_CHECK_OK(Apply(uint64_t{1} << 30));
    rlimit as{};
    CHILD_CHECK(getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur == (rlim_t{1} << 30));
    void* big = std::malloc(size_t{2} << 30);
    CHILD_CHECK(big == nullptr);
    return kChildOk;
  });
}
#endif

// ---------------------------------------------------------------------------
// ScrubSecrets: a forked download process keeps no copy of a secret

TEST(ScrubSecretsTest, EveryCopyIsZeroedAndNothingElse) {
  EXPECT_CHILD_OK([] {
    const std::string secret = "pw-0123456789abcdef";  // as the config holds it
    std::string live = secret + " in a longer string";
    std::vector<char> big(3 << 20, 'x');  // a large allocation: its own mapping
    std::memcpy(big.data() + (1 << 20), secret.data(), secret.size());
    char on_stack[64] = {};
    std::memcpy(on_stack, secret.data(), secret.size());
    char* freed = static_cast<char*>(std::malloc(128));
    std::memcpy(freed, secret.data(), secret.size());
    std::free(freed);  // freed memory is still memory
    const std::string short_secret = "short";  // below kMinScrubbedSecret
    std::string keep = "unrelated " + short_secret;

    Result<size_t> n = ScrubSecrets({secret, short_secret});
    CHILD_CHECK(n.ok());
    std::fprintf(stderr, "zeroed %zu copies\n", *n);
    CHILD_CHECK(*n >= 4);  // the argument, live, big, on_stack (and freed)
    CHILD_CHECK(live.find("pw-0123") == std::string::npos);
    CHILD_CHECK(live.substr(secret.size()) == " in a longer string");
    CHILD_CHECK(big[(1 << 20) - 1] == 'x' && big[(1 << 20) + secret.size()] == 'x');
    CHILD_CHECK(std::string_view(big.data() + (1 << 20), 3) == std::string_view("\0\0\0", 3));
    CHILD_CHECK(on_stack[0] == 0 && on_stack[secret.size() - 1] == 0);
    CHILD_CHECK(keep == "unrelated short");
    // Nothing left to find, by the scan an attacker would run.
    char needle[] = "pw-0123456789abcdef";
    Result<size_t> left = ScanOwnMemory({std::string_view(needle)}, needle, sizeof needle, false);
    CHILD_CHECK(left.ok() && *left == 0);
    // And the scan does find a copy made now (its control).
    std::string planted = std::string("pw-") + "0123456789abcdef";
    left = ScanOwnMemory({std::string_view(needle)}, needle, sizeof needle, false);
    CHILD_CHECK(left.ok() && *left >= 1);
    CHILD_CHECK(planted.size() == secret.size());
    return kChildOk;
  });
}

// ---------------------------------------------------------------------------
// RLIMIT_NPROC for workers (LimitProcesses)

TEST(LimitProcessesTest, ForksStopAtTheHeadroom) {
  EXPECT_CHILD_OK([] {
    if (geteuid() == 0) {  // the kernel does not enforce RLIMIT_NPROC for root
      passwd* pw = getpwnam("nobody");
      CHILD_CHECK(pw != nullptr);
      CHILD_CHECK(setgroups(0, nullptr) == 0 && setgid(pw->pw_gid) == 0 &&
                  setuid(pw->pw_uid) == 0);
    }
    constexpr uint64_t kHeadroom = 3;
    std::string notes;
    CHILD_CHECK_OK(LimitProcesses(kHeadroom, &notes));
    CHILD_CHECK(notes.find("RLIMIT_NPROC") != std::string::npos);
    std::vector<pid_t> kids;
    int err = 0;
    for (int i = 0; i < 20; ++i) {
      pid_t pid = fork();
      if (pid == 0) {
        pause();
        _exit(0);
      }
      if (pid < 0) {
        err = errno;
        break;
      }
      kids.push_back(pid);
    }
    for (pid_t k : kids) kill(k, SIGKILL);
    for (pid_t k : kids) waitpid(k, nullptr, 0);
    std::fprintf(stderr, "%s; %zu forks before %s\n", notes.c_str(), kids.size(),
                 std::strerror(err));
    CHILD_CHECK(err == EAGAIN);
    CHILD_CHECK(kids.size() <= kHeadroom);
    return kChildOk;
  });
}

TEST(LimitProcessesTest, RootIsLeftAloneWithANote) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  EXPECT_CHILD_OK([] {
    rlimit before{}, after{};
    CHILD_CHECK(getrlimit(RLIMIT_NPROC, &before) == 0);
    std::string notes;
    CHILD_CHECK_OK(LimitProcesses(3, &notes));
    CHILD_CHECK(getrlimit(RLIMIT_NPROC, &after) == 0);
    CHILD_CHECK(before.rlim_cur == after.rlim_cur);
    CHILD_CHECK(notes.find("not enforced for root") != std::string::npos);
    return kChildOk;
  });
}

TEST(LandlockAbiTest, ReportsVersion) {
  Result<int> abi = LandlockAbi();
  ASSERT_TRUE(abi.ok()) << abi.status().ToString();
  EXPECT_GE(*abi, 0);
  RecordProperty("landlock_abi", *abi);
  std::printf("kernel Landlock ABI: %d\n", *abi);
}

}  // namespace
}  // namespace djinn
