#include "common/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"

namespace djinn {
namespace {

// ---------------------------------------------------------------------------
// Helpers

void AddNote(std::string* notes, const std::string& note) {
  if (notes == nullptr) return;
  if (!notes->empty()) *notes += "; ";
  *notes += note;
}

Status StepErrno(const std::string& step, int err) {
  return Status::FromErrno("sandbox: " + step, err);
}

// Landlock and NO_NEW_PRIVS bind only the calling thread; a second thread
// would run unsandboxed. -1 when /proc is not readable.
int CountThreads() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) {
      return std::atoi(line.c_str() + std::strlen("Threads:"));
    }
  }
  return -1;
}

// ---------------------------------------------------------------------------
// Users and groups. The *_r functions return the error number instead of
// setting errno, and report "not found" as 0 with a null result (some NSS
// modules answer ENOENT or ESRCH instead); ERANGE means "grow the buffer".

size_t InitialBufferSize(int sysconf_name) {
  long n = sysconf(sysconf_name);
  return n > 0 ? static_cast<size_t>(n) : 16384;
}

constexpr size_t kMaxNssBuffer = 1 << 20;

bool IsNotFound(int rc) {
  return rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM;
}

struct UserIds {
  uid_t uid;
  gid_t gid;  // primary group
};

Result<UserIds> LookupUser(const std::string& user) {
  std::vector<char> buf(InitialBufferSize(_SC_GETPW_R_SIZE_MAX));
  for (;;) {
    passwd pw{};
    passwd* found = nullptr;
    int rc = getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < kMaxNssBuffer) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (found != nullptr) return UserIds{pw.pw_uid, pw.pw_gid};
    if (IsNotFound(rc)) {
      return Status::Permanent("sandbox: user \"" + user + "\" not found");
    }
    return StepErrno("getpwnam_r(\"" + user + "\")", rc);
  }
}

Result<gid_t> LookupGroup(const std::string& group) {
  std::vector<char> buf(InitialBufferSize(_SC_GETGR_R_SIZE_MAX));
  for (;;) {
    struct group gr {};
    struct group* found = nullptr;
    int rc = getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < kMaxNssBuffer) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (found != nullptr) return gr.gr_gid;
    if (IsNotFound(rc)) {
      return Status::Permanent("sandbox: group \"" + group + "\" not found");
    }
    return StepErrno("getgrnam_r(\"" + group + "\")", rc);
  }
}

// ---------------------------------------------------------------------------
// Landlock. Raw syscalls: glibc has no wrappers. The numbers are the same on
// every architecture (unified syscall table), so define them when the libc
// headers predate Landlock.

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_add_rule
#define SYS_landlock_add_rule 445
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif

// Access bits are kernel ABI and never change; spelled out here because the
// installed <linux/landlock.h> may be older than the running kernel (Debian
// 12's stops at ABI 2).
constexpr uint64_t kFsExecute = 1ULL << 0;
constexpr uint64_t kFsWriteFile = 1ULL << 1;
constexpr uint64_t kFsReadFile = 1ULL << 2;
constexpr uint64_t kFsReadDir = 1ULL << 3;
constexpr uint64_t kFsRemoveDir = 1ULL << 4;
constexpr uint64_t kFsRemoveFile = 1ULL << 5;
constexpr uint64_t kFsMakeChar = 1ULL << 6;
constexpr uint64_t kFsMakeDir = 1ULL << 7;
constexpr uint64_t kFsMakeReg = 1ULL << 8;
constexpr uint64_t kFsMakeSock = 1ULL << 9;
constexpr uint64_t kFsMakeFifo = 1ULL << 10;
constexpr uint64_t kFsMakeBlock = 1ULL << 11;
constexpr uint64_t kFsMakeSym = 1ULL << 12;
constexpr uint64_t kFsRefer = 1ULL << 13;     // ABI 2
constexpr uint64_t kFsTruncate = 1ULL << 14;  // ABI 3
constexpr uint64_t kFsIoctlDev = 1ULL << 15;  // ABI 5
constexpr uint64_t kNetBindTcp = 1ULL << 0;     // ABI 4
constexpr uint64_t kNetConnectTcp = 1ULL << 1;  // ABI 4
constexpr uint64_t kScopeAbstractUnix = 1ULL << 0;  // ABI 6
constexpr uint64_t kScopeSignal = 1ULL << 1;        // ABI 6
constexpr int kRuleNetPort = 2;                     // LANDLOCK_RULE_NET_PORT

// The newest ruleset attribute layout; the kernel takes a prefix of it
// (sizeof up to the last field it knows).
struct RulesetAttrV6 {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};
struct __attribute__((packed)) NetPortAttr {
  uint64_t allowed_access;
  uint64_t port;
};
static_assert(kFsWriteFile == LANDLOCK_ACCESS_FS_WRITE_FILE);
static_assert(kFsMakeSym == LANDLOCK_ACCESS_FS_MAKE_SYM);

// Every write-type right the given ABI knows. Asking for a right the kernel
// does not know makes landlock_create_ruleset fail with EINVAL.
uint64_t WriteRights(int abi) {
  uint64_t rights = kFsWriteFile | kFsRemoveDir | kFsRemoveFile | kFsMakeChar |
                    kFsMakeDir | kFsMakeReg | kFsMakeSock | kFsMakeFifo |
                    kFsMakeBlock | kFsMakeSym;
  if (abi >= 2) rights |= kFsRefer;
  if (abi >= 3) rights |= kFsTruncate;
  return rights;
}

// Rights that may be granted on a non-directory (others give EINVAL).
uint64_t FileWriteRights(int abi) {
  return kFsWriteFile | (abi >= 3 ? kFsTruncate : 0);
}

// Adds a path-beneath rule. Returns false (and no error) when the path does
// not exist, so the caller can note it.
Result<bool> AddPathRule(int ruleset_fd, const std::string& path, bool want_dir,
                         uint64_t allowed) {
  int flags = O_PATH | O_CLOEXEC | (want_dir ? O_DIRECTORY : 0);
  UniqueFd fd(open(path.c_str(), flags));
  if (!fd.valid()) {
    if (errno == ENOENT) return false;
    return StepErrno("landlock: open(" + path + ")", errno);
  }
  if (!want_dir) {
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) {
      return StepErrno("landlock: fstat(" + path + ")", errno);
    }
    if (S_ISDIR(st.st_mode)) {
      return Status::Permanent("sandbox: landlock: " + path +
                               " is a directory, expected a file");
    }
  }
  landlock_path_beneath_attr attr{};
  attr.allowed_access = allowed;
  attr.parent_fd = fd.get();
  if (syscall(SYS_landlock_add_rule, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH,
              &attr, 0) != 0) {
    return StepErrno("landlock: add rule for " + path, errno);
  }
  return true;
}

// ---------------------------------------------------------------------------
// Seccomp

struct SeccompRelease {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using SeccompPtr = std::unique_ptr<void, SeccompRelease>;

// Answered with EPERM. Why each is here: the worker downloads files over
// the network and writes them to the store; none of these serve that, and
// each is a classic step of an escape or of persistence after compromise.
constexpr const char* kDeniedSyscalls[] = {
    // Running other programs.
    "execve",
    "execveat",
    // Inspecting or stealing from other processes (same uid = the other
    // workers, who hold the same secrets but also the other jobs).
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    // Mounts and root changes, old and new mount API.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    // Kernel code and kernel attack surface.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "uselib",
    // Namespaces (clone's CLONE_NEW* flags are filtered below).
    "unshare",
    "setns",
    // Kernel keyrings.
    "keyctl",
    "add_key",
    "request_key",
    // System administration.
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "syslog",
    "vhangup",
    "nfsservctl",
    "open_by_handle_at",
    "name_to_handle_at",
    // Identity: the drop (if any) is done; nothing may change ids again.
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
};

// clone(2) flags that create namespaces. CLONE_NEWTIME (0x80) is left out:
// in clone() that bit belongs to the exit signal; only unshare and clone3
// accept it, and both are blocked. (On x86_64 and arm64 clone's flags are
// argument 0.)
constexpr uint64_t kCloneNewFlags[] = {
    CLONE_NEWNS,   CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
    CLONE_NEWUSER, CLONE_NEWPID,    CLONE_NEWNET,
};

Status SeccompErr(const std::string& what, int rc) {
  // libseccomp returns negative errno values.
  return StepErrno("seccomp: " + what, -rc);
}

Result<int> ResolveSyscall(const char* name) {
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) {
    return Status::Permanent(std::string("sandbox: seccomp: libseccomp does "
                                         "not know syscall ") +
                             name);
  }
  return nr;
}

}  // namespace

// ---------------------------------------------------------------------------

Status SetRlimits(const SandboxOptions& opts) {
  if (opts.max_open_files == 0) {
    return Status::Permanent("sandbox: max_open_files must be > 0");
  }
  if (!opts.core_dumps) {
    // Hard limit too: a compromised worker cannot turn cores back on.
    rlimit core{0, 0};
    if (setrlimit(RLIMIT_CORE, &core) != 0) {
      return StepErrno("setrlimit(RLIMIT_CORE, 0)", errno);
    }
  }
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) != 0) {
    return StepErrno("getrlimit(RLIMIT_NOFILE)", errno);
  }
  // Raising the hard limit needs CAP_SYS_RESOURCE and is not what anyone
  // asked for; cap at the current hard limit.
  rlim_t want = std::min<rlim_t>(opts.max_open_files, nofile.rlim_max);
  rlimit set{want, want};
  if (setrlimit(RLIMIT_NOFILE, &set) != 0) {
    return StepErrno("setrlimit(RLIMIT_NOFILE, " + std::to_string(want) + ")",
                     errno);
  }
  return Status::Ok();
}

Status DropPrivileges(const std::string& user, const std::string& group) {
  if (user.empty()) {
    return Status::Permanent("sandbox: privilege drop: no user given");
  }
  if (geteuid() != 0) {
    return Status::Permanent("sandbox: privilege drop to " + user +
                             " needs root, euid is " +
                             std::to_string(geteuid()));
  }
  Result<UserIds> ids = LookupUser(user);
  if (!ids.ok()) return ids.status();
  if (ids->uid == 0) {
    return Status::Permanent("sandbox: user " + user +
                             " has uid 0; refusing to run workers as root");
  }
  gid_t gid = ids->gid;
  if (!group.empty()) {
    Result<gid_t> g = LookupGroup(group);
    if (!g.ok()) return g.status();
    gid = *g;
  }
  const std::string who = user + " (uid " + std::to_string(ids->uid) + " gid " +
                          std::to_string(gid) + ")";

  // Order matters: groups and gid while we still may, uid last.
  if (setgroups(1, &gid) != 0) return StepErrno("setgroups for " + who, errno);
  if (setgid(gid) != 0) return StepErrno("setgid for " + who, errno);
  if (setuid(ids->uid) != 0) return StepErrno("setuid for " + who, errno);

  // Trust, but verify: a kernel or libc that kept a saved uid of 0 (or a
  // capability) would let a compromised worker take root back.
  if (setuid(0) == 0 || seteuid(0) == 0) {
    return Status::Permanent("sandbox: regained root after dropping to " + who);
  }
  if (getuid() == 0 || geteuid() == 0) {
    return Status::Permanent("sandbox: still uid 0 after dropping to " + who);
  }
  if (gid != 0 && (setgid(0) == 0 || setegid(0) == 0)) {
    return Status::Permanent("sandbox: regained gid 0 after dropping to " +
                             who);
  }
  if (getgid() != gid || getegid() != gid) {
    return Status::Permanent("sandbox: gid is not " + std::to_string(gid) +
                             " after dropping to " + who);
  }
  return Status::Ok();
}

Result<int> LandlockAbi() {
  long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0,
                     LANDLOCK_CREATE_RULESET_VERSION);
  if (abi >= 0) return static_cast<int>(abi);
  // ENOSYS: not built in. EOPNOTSUPP: built in but disabled at boot (not in
  // the lsm= list). Both just mean "no Landlock here".
  if (errno == ENOSYS || errno == EOPNOTSUPP) return 0;
  return StepErrno("landlock_create_ruleset(VERSION)", errno);
}

Status ApplyLandlock(const std::vector<std::string>& writable_dirs,
                     const std::vector<std::string>& writable_files,
                     std::string* notes) {
  Result<int> abi = LandlockAbi();
  if (!abi.ok()) return abi.status();
  if (*abi == 0) return Status::Ok();

  landlock_ruleset_attr attr{};
  attr.handled_access_fs = WriteRights(*abi);
  // Only handled_access_fs is set; the kernel accepts this smaller, older
  // struct size and treats network rights (ABI 4) as not handled.
  UniqueFd ruleset(static_cast<int>(
      syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0)));
  if (!ruleset.valid()) {
    return StepErrno("landlock_create_ruleset", errno);
  }

  for (const std::string& dir : writable_dirs) {
    Result<bool> added =
        AddPathRule(ruleset.get(), dir, /*want_dir=*/true, WriteRights(*abi));
    if (!added.ok()) return added.status();
    if (!*added)
      AddNote(notes, "landlock: writable dir " + dir + " missing, skipped");
  }
  for (const std::string& file : writable_files) {
    Result<bool> added = AddPathRule(ruleset.get(), file, /*want_dir=*/false,
                                     FileWriteRights(*abi));
    if (!added.ok()) return added.status();
    if (!*added)
      AddNote(notes, "landlock: writable file " + file + " missing, skipped");
    // Rules bind to inodes: after logrotate renames the log and the master
    // creates a new one, the new inode must be writable too. Grant
    // write-to-existing (not create, not remove) beneath its directory.
    std::string dir = file.substr(0, file.find_last_of('/') + 1);
    if (dir.empty()) dir = ".";
    Result<bool> dir_added = AddPathRule(ruleset.get(), dir, /*want_dir=*/true,
                                         FileWriteRights(*abi));
    if (!dir_added.ok()) return dir_added.status();
  }
  // /dev/null: writing there discards data, so allowing it costs nothing and
  // spares us failures in code that opens it for writing. Missing is fine.
  Result<bool> devnull = AddPathRule(ruleset.get(), "/dev/null",
                                     /*want_dir=*/false, FileWriteRights(*abi));
  if (!devnull.ok()) return devnull.status();

  // Without CAP_SYS_ADMIN restrict_self demands NO_NEW_PRIVS; setting it
  // here makes ApplyLandlock usable alone (idempotent in ApplySandbox).
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return StepErrno("prctl(PR_SET_NO_NEW_PRIVS)", errno);
  }
  if (syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0) {
    return StepErrno("landlock_restrict_self", errno);
  }
  return ruleset.Close().Wrap("sandbox: landlock ruleset");
}

Status InstallSeccompFilter() {
  SeccompPtr ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (ctx == nullptr) {
    return Status::Permanent("sandbox: seccomp: seccomp_init failed");
  }
  // Raw kernel errno from seccomp_load instead of a blanket ECANCELED.
  int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_API_SYSRAWRC, 1);
  if (rc != 0) return SeccompErr("attr SYSRAWRC", rc);
  // All threads, in case a library started one (Landlock cannot do this,
  // which is why ApplySandbox also insists on a single thread).
  rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_TSYNC, 1);
  if (rc != 0) return SeccompErr("attr TSYNC", rc);

  const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
  for (const char* name : kDeniedSyscalls) {
    Result<int> nr = ResolveSyscall(name);
    if (!nr.ok()) return nr.status();
    rc = seccomp_rule_add(ctx.get(), eperm, *nr, 0);
    if (rc != 0) return SeccompErr(std::string("deny ") + name, rc);
  }

  // Threads (libcurl's resolver) and fork use clone without CLONE_NEW*.
  // Each flag gets its own rule: a rule's comparisons are ANDed, and we
  // want "any of these bits set".
  for (uint64_t flag : kCloneNewFlags) {
    rc = seccomp_rule_add(ctx.get(), eperm, SCMP_SYS(clone), 1,
                          SCMP_A0_64(SCMP_CMP_MASKED_EQ, flag, flag));
    if (rc != 0) return SeccompErr("deny clone(CLONE_NEW*)", rc);
  }
  // clone3 passes its flags in a struct in memory, which BPF cannot read.
  // ENOSYS (not EPERM) makes glibc fall back to clone, filtered above.
  rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc != 0) return SeccompErr("deny clone3", rc);

  // personality(0xffffffff) only reads the persona; anything else changes
  // the address-space layout (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC).
  rc = seccomp_rule_add(ctx.get(), eperm, SCMP_SYS(personality), 1,
                        SCMP_A0_64(SCMP_CMP_NE, 0xffffffffULL));
  if (rc != 0) return SeccompErr("deny personality", rc);

  rc = seccomp_load(ctx.get());
  if (rc != 0) return SeccompErr("seccomp_load", rc);
  return Status::Ok();
}

Status ApplySandbox(const SandboxOptions& opts, std::string* notes) {
  if (notes != nullptr) notes->clear();

  int threads = CountThreads();
  if (threads > 1) {
    return Status::Permanent(
        "sandbox: process has " + std::to_string(threads) +
        " threads; apply the sandbox before starting any thread");
  }
  if (threads < 0) AddNote(notes, "thread count unknown (/proc unreadable)");

  if (Status s = SetRlimits(opts); !s.ok()) return s;

  if (geteuid() == 0) {
    if (opts.user.empty()) {
      AddNote(notes, "running as root: no user configured, not dropped");
    } else {
      if (Status s = DropPrivileges(opts.user, opts.group); !s.ok()) return s;
      AddNote(notes, "dropped to " + opts.user + " (uid " +
                         std::to_string(getuid()) + " gid " +
                         std::to_string(getgid()) + ")");
    }
  } else if (!opts.user.empty()) {
    AddNote(notes, "not root: user " + opts.user + " ignored, running as uid " +
                       std::to_string(getuid()));
  }

  if (prctl(PR_SET_DUMPABLE, opts.core_dumps ? 1 : 0, 0, 0, 0) != 0) {
    return StepErrno("prctl(PR_SET_DUMPABLE)", errno);
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return StepErrno("prctl(PR_SET_NO_NEW_PRIVS)", errno);
  }

  Result<int> abi = LandlockAbi();
  if (!abi.ok()) return abi.status();
  if (*abi == 0) {
    AddNote(notes, "landlock unavailable");
  } else {
    if (Status s =
            ApplyLandlock(opts.writable_dirs, opts.writable_files, notes);
        !s.ok()) {
      return s;
    }
    AddNote(notes, "landlock ABI " + std::to_string(*abi));
  }

  if (Status s = InstallSeccompFilter(); !s.ok()) return s;
  AddNote(notes, "seccomp filter installed");
  return Status::Ok();
}


// ---------------------------------------------------------------------------
// The download child

namespace {

uint64_t AllFsRights(int abi) {
  return WriteRights(abi) | kFsExecute | kFsReadFile | kFsReadDir | (abi >= 5 ? kFsIoctlDev : 0);
}

// Rights valid on a non-directory.
uint64_t FileRights(int abi) {
  return kFsExecute | kFsWriteFile | kFsReadFile | (abi >= 3 ? kFsTruncate : 0) |
         (abi >= 5 ? kFsIoctlDev : 0);
}

// A rule for a path that may be a file or a directory: `rights` masked to
// what the kind of inode takes. False when it does not exist.
Result<bool> AddAnyPathRule(int ruleset_fd, const std::string& path, uint64_t rights, int abi) {
  UniqueFd fd(open(path.c_str(), O_PATH | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT || errno == ENOTDIR || errno == EACCES) return false;
    return StepErrno("landlock: open(" + path + ")", errno);
  }
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return StepErrno("landlock: fstat(" + path + ")", errno);
  landlock_path_beneath_attr attr{};
  attr.allowed_access = S_ISDIR(st.st_mode) ? rights : rights & FileRights(abi);
  attr.parent_fd = fd.get();
  if (syscall(SYS_landlock_add_rule, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, &attr, 0) != 0)
    return StepErrno("landlock: add rule for " + path, errno);
  return true;
}

Status ApplyDownloadLandlock(const DownloadSandbox& box, int abi, std::string* notes) {
  RulesetAttrV6 attr{};
  attr.handled_access_fs = AllFsRights(abi);
  size_t size = sizeof(uint64_t);
  bool net = abi >= 4 && !box.tcp_connect_ports.empty();
  if (net) {
    attr.handled_access_net = kNetBindTcp | kNetConnectTcp;
    size = 2 * sizeof(uint64_t);
  }
  if (abi >= 6) {
    // Signals and abstract unix sockets only within the child's own
    // domain: it cannot signal its worker, the master or anyone else.
    attr.scoped = kScopeSignal | kScopeAbstractUnix;
    size = sizeof attr;
  }
  UniqueFd ruleset(static_cast<int>(syscall(SYS_landlock_create_ruleset, &attr, size, 0)));
  if (!ruleset.valid()) return StepErrno("landlock_create_ruleset (download)", errno);
  for (const std::string& dir : box.rw_dirs) {
    Result<bool> added = AddAnyPathRule(ruleset.get(), dir, AllFsRights(abi), abi);
    if (!added.ok()) return added.status();
    if (!*added) return Status::Permanent("sandbox: landlock: " + dir + " does not exist");
  }
  const uint64_t read = kFsExecute | kFsReadFile | kFsReadDir;
  for (const std::string& path : box.ro_paths) {
    Result<bool> added = AddAnyPathRule(ruleset.get(), path, read, abi);
    if (!added.ok()) return added.status();
  }
  Result<bool> devnull = AddAnyPathRule(ruleset.get(), "/dev/null", kFsReadFile | kFsWriteFile, abi);
  if (!devnull.ok()) return devnull.status();
  std::string ports;
  if (net) {
    for (uint16_t port : box.tcp_connect_ports) {
      NetPortAttr rule{kNetConnectTcp, port};
      if (syscall(SYS_landlock_add_rule, ruleset.get(), kRuleNetPort, &rule, 0) != 0)
        return StepErrno("landlock: tcp port rule " + std::to_string(port), errno);
      ports += " " + std::to_string(port);
    }
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return StepErrno("prctl(PR_SET_NO_NEW_PRIVS)", errno);
  if (syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0)
    return StepErrno("landlock_restrict_self (download)", errno);
  AddNote(notes, "landlock ABI " + std::to_string(abi) +
                     (net ? " (tcp connect to" + ports + " only)" : std::string(" (tcp not restricted)")));
  return ruleset.Close().Wrap("sandbox: landlock ruleset");
}

// What a transfer needs. Grouped by purpose; a name libseccomp does not
// know on this architecture (open on arm64, say) is skipped.
constexpr const char* kDownloadAllowed[] = {
    // Memory (mmap with PROT_EXEC: libraries loaded lazily, such as NSS
    // modules and OpenSSL providers).
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore",
    // Files: the image (already open), reading trust and resolver files.
    "read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "close", "close_range",
    "open", "openat", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "fcntl", "dup",
    "dup2", "dup3", "pipe", "pipe2", "fsync", "fdatasync", "sync_file_range", "getcwd",
    // Network (socket's domain and ioctl's request are filtered below).
    "socketpair", "connect", "bind", "getsockopt", "setsockopt", "getsockname", "getpeername",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "poll",
    "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
    "eventfd2",
    // Threads (libcurl's resolver; clone's flags are filtered below).
    "futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "sched_yield",
    "sched_getaffinity",
    // Signals: own handlers only (kill and tgkill are filtered below).
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    // Time, identity, randomness, limits: read-only facts.
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time",
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getresuid",
    "getresgid", "getgroups", "getrandom", "uname", "sysinfo", "getrusage", "getrlimit",
    "exit", "exit_group",
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer's runtime (sanitizer builds only; see the header).
    "prctl", "prlimit64", "setrlimit",
#endif
};

// The SIGSYS report: fd and nothing else is touched in the handler.
volatile int g_sigsys_fd = -1;

void OnSigsys(int, siginfo_t* info, void*) {
  char buf[24];
  int nr = info->si_syscall;
  // Format by hand: snprintf is not async-signal-safe.
  char digits[12];
  int n = 0;
  unsigned u = nr < 0 ? 0u : static_cast<unsigned>(nr);
  do {
    digits[n++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0 && n < 11);
  int len = 0;
  buf[len++] = 'S';
  while (n > 0) buf[len++] = digits[--n];
  buf[len++] = '\n';
  if (g_sigsys_fd >= 0) {
    ssize_t unused = write(g_sigsys_fd, buf, static_cast<size_t>(len));
    (void)unused;
  }
  _exit(kSigsysExit);
}

Status InstallAllowList() {
  SeccompPtr ctx(seccomp_init(SCMP_ACT_TRAP));
  if (ctx == nullptr) return Status::Permanent("sandbox: seccomp: seccomp_init failed");
  int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_API_SYSRAWRC, 1);
  if (rc != 0) return SeccompErr("attr SYSRAWRC", rc);
  for (const char* name : kDownloadAllowed) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;
    rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, nr, 0);
    if (rc != 0) return SeccompErr(std::string("allow ") + name, rc);
  }
  // Threads only: clone must carry CLONE_THREAD (no fork, no exec'able
  // copy of the child); clone3 answers ENOSYS so glibc uses clone.
  rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                        SCMP_A0_64(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
  if (rc != 0) return SeccompErr("allow clone(CLONE_THREAD)", rc);
  rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc != 0) return SeccompErr("clone3", rc);
  for (int domain : {AF_INET, AF_INET6, AF_NETLINK}) {
    rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                          SCMP_A0_32(SCMP_CMP_EQ, static_cast<uint32_t>(domain)));
    if (rc != 0) return SeccompErr("allow socket", rc);
  }
  // Unix sockets fail quietly: Landlock does not govern connecting to a
  // named one (a local Redis or PostgreSQL socket), and glibc's nscd and
  // nss lookups fall back when they cannot connect. socketpair (libcurl's
  // resolver wake-up) stays allowed above.
  rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1,
                        SCMP_A0_32(SCMP_CMP_EQ, static_cast<uint32_t>(AF_UNIX)));
  if (rc != 0) return SeccompErr("socket(AF_UNIX)", rc);
  for (unsigned long req : {static_cast<unsigned long>(FIONREAD),
                            static_cast<unsigned long>(FIONBIO),
                            static_cast<unsigned long>(TCGETS)}) {
    rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                          SCMP_A1_64(SCMP_CMP_EQ, req));
    if (rc != 0) return SeccompErr("allow ioctl", rc);
  }
  // Signals to itself only (abort() raises SIGABRT through tgkill).
  const auto self = static_cast<uint64_t>(getpid());
  rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                        SCMP_A0_64(SCMP_CMP_EQ, self));
  if (rc != 0) return SeccompErr("allow tgkill", rc);
  rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(kill), 1, SCMP_A0_64(SCMP_CMP_EQ, self));
  if (rc != 0) return SeccompErr("allow kill", rc);
  // Reading limits is fine (pid 0 = self, no new limit).
  rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 2,
                        SCMP_A0_64(SCMP_CMP_EQ, 0), SCMP_A2_64(SCMP_CMP_EQ, 0));
  if (rc != 0 && rc != -EEXIST) return SeccompErr("allow prlimit64", rc);
  rc = seccomp_load(ctx.get());
  if (rc != 0) return SeccompErr("seccomp_load (download)", rc);
  return Status::Ok();
}

}  // namespace

void InstallSigsysReporter(int report_fd) {
  g_sigsys_fd = report_fd;
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_sigaction = OnSigsys;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSYS, &sa, nullptr);
}

std::vector<std::string> DownloadReadPaths(const std::vector<std::string>& extra) {
  std::vector<std::string> paths = {
      // Libraries loaded after the fork (NSS modules, OpenSSL providers).
      "/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib",
      // TLS trust and OpenSSL's configuration.
      // Never /etc/ssl or /etc/pki whole: their private/ holds keys.
      "/etc/ssl/certs", "/etc/ssl/openssl.cnf", "/usr/lib/ssl/certs", "/usr/lib/ssl/openssl.cnf",
      "/usr/share/ca-certificates", "/usr/local/share/ca-certificates", "/etc/pki/tls/certs",
      "/etc/pki/ca-trust", "/etc/pki/tls/openssl.cnf", "/etc/ca-certificates",
      // Name resolution (resolv.conf's rule binds to where it points).
      "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf",
      "/etc/services", "/etc/ld.so.cache",
      // Randomness (OpenSSL's fallback), CPU facts, our own /proc entry.
      "/dev/urandom", "/sys/devices/system/cpu", "/proc/self"};
  for (const std::string& e : extra)
    if (!e.empty()) paths.push_back(e);
  std::vector<std::string> existing;
  for (const std::string& p : paths)
    if (access(p.c_str(), F_OK) == 0) existing.push_back(p);
  return existing;
}

Status ApplyDownloadSandbox(const DownloadSandbox& box, std::string* notes) {
  if (notes != nullptr) notes->clear();
  int threads = CountThreads();
  if (threads > 1)
    return Status::Permanent("sandbox: download process has " + std::to_string(threads) +
                             " threads; confine it before starting any thread");
  if (box.address_space > 0) {
    rlimit as{static_cast<rlim_t>(box.address_space), static_cast<rlim_t>(box.address_space)};
    if (setrlimit(RLIMIT_AS, &as) != 0)
      return StepErrno("setrlimit(RLIMIT_AS, " + std::to_string(box.address_space) + ")", errno);
    AddNote(notes, "address space " + std::to_string(box.address_space >> 20) + " MiB");
  }
  Result<int> abi = LandlockAbi();
  if (!abi.ok()) return abi.status();
  if (*abi == 0) {
    AddNote(notes, "landlock unavailable");
  } else if (Status s = ApplyDownloadLandlock(box, *abi, notes); !s.ok()) {
    return s;
  }
  if (Status s = InstallAllowList(); !s.ok()) return s;
  AddNote(notes, "seccomp allow-list");
  return Status::Ok();
}

namespace {

// Counts (zero: and zeroes) the copies of needle in [from, end).
#if defined(__SANITIZE_ADDRESS__)
// The scan reads freed memory and redzones on purpose, which the
// sanitizer's memmem interceptor would report: a plain loop, not
// instrumented.
__attribute__((no_sanitize("address"))) size_t ScanRange(char* from, char* end,
                                                         std::string_view needle, bool zero) {
  size_t found = 0;
  const size_t n = needle.size();
  for (char* p = from; p + n <= end; ++p) {
    size_t k = 0;
    while (k < n && p[k] == needle[k]) ++k;
    if (k < n) continue;
    if (zero) {
      volatile char* w = p;
      for (size_t j = 0; j < n; ++j) w[j] = 0;
    }
    ++found;
    p += n - 1;
  }
  return found;
}
#else
size_t ScanRange(char* from, char* end, std::string_view needle, bool zero) {
  size_t found = 0;
  while (from < end) {
    void* hit = memmem(from, static_cast<size_t>(end - from), needle.data(), needle.size());
    if (hit == nullptr) break;
    if (zero) explicit_bzero(hit, needle.size());
    ++found;
    from = static_cast<char*>(hit) + needle.size();
  }
  return found;
}
#endif

}  // namespace

Result<size_t> ScanOwnMemory(const std::vector<std::string_view>& needles, const void* skip,
                             size_t skip_len, bool zero) {
  std::string maps;
  {
    UniqueFd fd(open("/proc/self/maps", O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return StepErrno("open /proc/self/maps", errno);
    char buf[8192];
    for (;;) {
      ssize_t n = read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return StepErrno("read /proc/self/maps", errno);
      if (n == 0) break;
      maps.append(buf, static_cast<size_t>(n));
    }
  }
  constexpr uintptr_t kMaxScanned = uintptr_t{1} << 30;  // sanitizers' shadow is terabytes
  const auto skip_lo = reinterpret_cast<uintptr_t>(skip);
  const uintptr_t skip_hi = skip_lo + skip_len;
  size_t found = 0;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident;
  auto scan_run = [&](uintptr_t lo, uintptr_t hi) {
    for (std::string_view needle : needles) {
      if (!needle.empty())
        found += ScanRange(reinterpret_cast<char*>(lo), reinterpret_cast<char*>(hi), needle, zero);
    }
  };
  // Only pages in memory: reading the untouched rest of a mapping (thread
  // stacks, arenas) would fault in zero pages for nothing. A copy cannot
  // sit in an untouched page; a swapped-out one is missed.
  auto scan = [&](uintptr_t lo, uintptr_t hi) {
    const uintptr_t first = lo & ~(page - 1);
    resident.assign((hi - first + page - 1) / page, 0);
    if (mincore(reinterpret_cast<void*>(first), hi - first, resident.data()) != 0) {
      scan_run(lo, hi);
      return;
    }
    size_t i = 0;
    while (i < resident.size()) {
      if (!(resident[i] & 1)) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < resident.size() && (resident[j] & 1)) ++j;
      scan_run(std::max(lo, first + i * page), std::min(hi, first + j * page));
      i = j;
    }
  };
  size_t line_start = 0;
  while (line_start < maps.size()) {
    size_t line_end = maps.find('\n', line_start);
    if (line_end == std::string::npos) line_end = maps.size();
    const std::string line = maps.substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    // "start-end perms offset dev inode [path]"
    unsigned long long lo = 0, hi = 0, inode = 0;
    char perms[8] = {};
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %*s %*s %llu %n", &lo, &hi, perms, &inode,
                    &path_at) < 4)
      continue;
    std::string_view path = path_at > 0 ? std::string_view(line).substr(path_at) : "";
    bool anonymous = inode == 0 && (path.empty() || path == "[heap]" || path == "[stack]" ||
                                    path.rfind("[anon:", 0) == 0);
    if (!anonymous || perms[0] != 'r' || perms[3] != 'p') continue;
    if (zero && perms[1] != 'w') continue;
    if (hi <= lo || hi - lo > kMaxScanned) continue;
    // Adjacent anonymous mappings merge, so the skipped range may sit
    // inside a larger one: scan around it.
    if (skip_hi > lo && skip_lo < hi) {
      if (skip_lo > lo) scan(lo, skip_lo);
      if (skip_hi < hi) scan(skip_hi, hi);
    } else {
      scan(lo, hi);
    }
  }
  return found;
}

namespace {
// A secret worth looking for: long enough not to match by chance, and not
// one already zeroed (all NUL bytes would match every zero page).
bool Scrubbable(const std::string& secret) {
  return secret.size() >= kMinScrubbedSecret &&
         secret.find_first_not_of('\0') != std::string::npos;
}
}  // namespace

Result<size_t> ScrubSecrets(const std::vector<std::string>& secrets) {
  size_t total = 0;
  for (const std::string& secret : secrets)
    if (Scrubbable(secret)) total += secret.size();
  if (total == 0) return size_t{0};
  // The needles live in a mapping of their own, which the scan skips: the
  // originals (and every other copy) are zeroed as they are found.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t area_len = (total + page - 1) / page * page;
  void* mapped = mmap(nullptr, area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) return StepErrno("scrub: mmap", errno);
  char* area = static_cast<char*>(mapped);
  std::vector<std::string_view> needles;
  size_t at = 0;
  for (const std::string& secret : secrets) {
    if (!Scrubbable(secret)) continue;
    std::memcpy(area + at, secret.data(), secret.size());
    needles.emplace_back(area + at, secret.size());
    at += secret.size();
  }
  Result<size_t> zeroed = ScanOwnMemory(needles, area, area_len, true);
  explicit_bzero(area, area_len);
  munmap(area, area_len);
  return zeroed;
}

Status LimitProcesses(uint64_t headroom, std::string* notes) {
  uid_t uid = getuid();
  if (uid == 0) {
    AddNote(notes, "RLIMIT_NPROC not enforced for root");
    return Status::Ok();
  }
  // Tasks (threads count) of our real uid right now, from /proc.
  uint64_t tasks = 0;
  std::unique_ptr<DIR, int (*)(DIR*)> proc(opendir("/proc"), closedir);
  if (!proc) return StepErrno("opendir(/proc)", errno);
  while (dirent* e = readdir(proc.get())) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream status(std::string("/proc/") + e->d_name + "/status");
    std::string line;
    long real = -1, count = 0;
    while (std::getline(status, line)) {
      if (line.rfind("Uid:", 0) == 0) real = std::atol(line.c_str() + 4);
      else if (line.rfind("Threads:", 0) == 0) count = std::atol(line.c_str() + 8);
    }
    if (real == static_cast<long>(uid)) tasks += static_cast<uint64_t>(count);
  }
  rlim_t limit = static_cast<rlim_t>(tasks + headroom);
  rlimit cur{};
  if (getrlimit(RLIMIT_NPROC, &cur) != 0) return StepErrno("getrlimit(RLIMIT_NPROC)", errno);
  if (cur.rlim_max != RLIM_INFINITY && cur.rlim_max < limit) limit = cur.rlim_max;
  rlimit set{limit, limit};
  if (setrlimit(RLIMIT_NPROC, &set) != 0)
    return StepErrno("setrlimit(RLIMIT_NPROC, " + std::to_string(limit) + ")", errno);
  AddNote(notes, "RLIMIT_NPROC " + std::to_string(limit) + " (" + std::to_string(tasks) +
                     " tasks of uid " + std::to_string(uid) + " + " + std::to_string(headroom) + ")");
  return Status::Ok();
}

}  // namespace djinn
