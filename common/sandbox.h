// The worker sandbox (DESIGN §5): applied by a worker right after fork(),
// before it opens any network connection or starts any thread.
//
// ApplySandbox() runs these steps in this order; each step is also public so
// tests can exercise it alone:
//
//   1. rlimits (SetRlimits): RLIMIT_CORE soft and hard 0 unless core_dumps;
//      RLIMIT_NOFILE soft and hard = min(max_open_files, current hard).
//      Lowering the hard limits means the worker cannot raise them again.
//   2. privilege drop (DropPrivileges), only when euid == 0 and a user is
//      configured: getpwnam_r/getgrnam_r (group defaults to the user's
//      primary group), setgroups(1, {gid}), setgid, setuid; then verify that
//      setuid(0), seteuid(0) fail and getuid()/geteuid() are not 0. A user
//      that resolves to uid 0 is refused. When running as root with no user
//      configured nothing is dropped (the master warns; a note says so).
//      When not running as root the user setting is ignored (note).
//   3. PR_SET_DUMPABLE: 0, or 1 when core_dumps. A setuid() already clears
//      it; setting it explicitly also covers unprivileged deployments, so a
//      same-uid process (another worker) cannot ptrace us or read
//      /proc/<pid>/mem, and keeps cores possible when they are asked for.
//   4. PR_SET_NO_NEW_PRIVS (needed by Landlock and seccomp for non-root).
//   5. Landlock (ApplyLandlock), when LandlockAbi() >= 1; otherwise skipped
//      with the note "landlock unavailable". Only WRITE-type filesystem
//      rights are handled (write file, remove dir/file, make
//      char/dir/reg/sock/fifo/block/sym, refer from ABI 2, truncate from
//      ABI 3); reads and execute stay unrestricted (CA files, resolv.conf,
//      NSS modules). Allowed: every write right beneath each writable dir,
//      write_file (+truncate) on each writable file and on /dev/null
//      (harmless sink; libraries occasionally open it for writing). A path
//      that does not exist is skipped with a note: the caller creates the
//      store and the log file. Not handled on purpose: IOCTL_DEV (ABI 5,
//      not a write), network rights (ABI 4; downloads connect anywhere),
//      scopes (ABI 6; the worker may need to signal its master).
//      Rules are bound to inodes at apply time, so a writable file's
//      directory also gets write-to-existing-files (no create, no remove):
//      a log renamed by logrotate and recreated by the master (or by
//      logrotate's "create") can be reopened by a sandboxed worker.
//      With ABI 1 the kernel always denies rename/link across directories
//      (REFER), so write temporaries in the destination's directory.
//   6. seccomp (InstallSeccompFilter, libseccomp): default ALLOW, deny list
//      answering EPERM (see sandbox.cc for the full list): exec, ptrace and
//      cross-process memory access, mount family, chroot/pivot_root,
//      modules, kexec, bpf, perf, io_uring, userfaultfd, keyrings,
//      namespaces (unshare, setns, clone with any CLONE_NEW* flag), clock
//      and system administration calls, the setuid/setgid family, and
//      personality() other than the query personality(0xffffffff). clone3
//      answers ENOSYS (its flags live in memory a filter cannot read) so
//      glibc falls back to clone, whose flags are checked. Thread creation
//      (libcurl's threaded resolver) and fork stay allowed: nothing a
//      child could do would escape the filter, and without exec it can
//      only run our own code. Syscalls of a foreign architecture (i386
//      int 0x80, x32) kill the process (libseccomp's default bad-arch
//      action).
//
// Process safety: every step is irreversible for the calling process and
// inherited by its children. Landlock and NO_NEW_PRIVS apply to the calling
// thread only, so ApplySandbox() must run while the process has exactly one
// thread; it refuses otherwise. Never call it in the master or in a test
// process itself: fork first.
//
// Sanitizer builds: ASan and UBSan work inside the sandbox, and GCC's
// libasan symbolizes reports in-process. LeakSanitizer does not: it needs
// ptrace at exit, gets EPERM and turns a clean exit into "LeakSanitizer has
// encountered a fatal error", exit status 1. Run sandboxed sanitizer builds
// with ASAN_OPTIONS=detect_leaks=0 (or leave with _exit). An external
// symbolizer (llvm-symbolizer, clang builds) cannot be exec'd either.
//
// Errors: every failure is a permanent Status naming the step and errno,
// e.g. "sandbox: setuid for nobody (uid 65534 gid 65534): Operation not
// permitted". A worker that gets one must exit; it must not run jobs
// half-sandboxed.
#ifndef DJINN_COMMON_SANDBOX_H_
#define DJINN_COMMON_SANDBOX_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace djinn {

struct SandboxOptions {
  // Drop to these when started as root; empty user: no drop. Empty group:
  // the user's primary group.
  std::string user, group;
  // Landlock: every write right beneath these (the image store).
  std::vector<std::string> writable_dirs;
  // Landlock: open-for-write and truncate on these (the log file), and on
  // existing files beneath their directories (a rotated log recreated by
  // the master or logrotate); no create or remove there.
  std::vector<std::string> writable_files;
  // RLIMIT_CORE is set to 0 and the process made non-dumpable unless true.
  bool core_dumps = false;
  // RLIMIT_NOFILE (soft and hard), capped at the current hard limit. Must
  // be > 0.
  uint64_t max_open_files = 1024;
};

// Applies all steps above, in order. On success, *notes (if not null) holds
// human-readable "; "-separated notes for the log, e.g.
// "dropped to nobody (uid 65534 gid 65534); landlock ABI 7; seccomp filter
// installed".
// On failure the process is partly sandboxed and must exit.
Status ApplySandbox(const SandboxOptions& opts, std::string* notes);

// Step 1. Fails on max_open_files == 0 or a setrlimit/getrlimit error.
Status SetRlimits(const SandboxOptions& opts);

// Step 2, unconditionally: requires euid 0 (fails with a permanent Status
// otherwise). Fails when the user or group does not exist, the user is
// uid 0, any set*id call fails, or root can be regained afterwards. Glibc
// applies set*id to all threads, but call it single-threaded anyway.
Status DropPrivileges(const std::string& user, const std::string& group);

// Step 6 alone. Requires NO_NEW_PRIVS or CAP_SYS_ADMIN; libseccomp sets
// NO_NEW_PRIVS itself when loading. Applies to all threads (TSYNC).
Status InstallSeccompFilter();

// The kernel's Landlock ABI version; 0 when Landlock is not built in or is
// disabled at boot. Any other failure is an error.
Result<int> LandlockAbi();

// Step 5 alone (also sets NO_NEW_PRIVS, which landlock_restrict_self
// requires without CAP_SYS_ADMIN). Succeeds without doing anything when
// LandlockAbi() is 0. Paths that do not exist are skipped and named in
// *notes (if not null); any other failure to open a path is an error.
// Restricts the calling thread and the children it creates afterwards.
Status ApplyLandlock(const std::vector<std::string>& writable_dirs,
                     const std::vector<std::string>& writable_files,
                     std::string* notes = nullptr);

// ---------------------------------------------------------------------------
// The download child's confinement (worker/fetch_child.h), applied in a
// short-lived child of an already sandboxed worker, on top of the worker's
// sandbox (layers only ever narrow):
//
//   a. RLIMIT_AS (address space) when address_space > 0, RLIMIT_NPROC 0 is
//      NOT used (threads count against it); RLIMIT_FSIZE is left alone.
//   b. A second Landlock layer that handles every filesystem right the ABI
//      knows, reads included: the child may read and write only beneath
//      rw_dirs (the download process has none: it writes through a
//      descriptor opened before), and read (and map
//      executable, for lazily loaded libraries) only beneath ro_paths
//      (libraries, TLS trust, name resolution files; see DownloadReadPaths).
//      With ABI >= 4 also TCP: connect only to tcp_connect_ports, bind
//      nothing.
//   c. A seccomp allow-list (OpenSSH's sandbox model): only the system
//      calls a transfer with libcurl (http, https, sftp), OpenSSL, libssh2,
//      glibc's resolver and file writes need; clone only for threads;
//      socket only for AF_INET, AF_INET6 and AF_NETLINK (glibc's address
//      configuration query); AF_UNIX fails with EACCES (Landlock does not
//      govern connecting to a named unix socket, and glibc falls back
//      without nscd). Anything else raises SIGSYS before the
//      call runs; the handler installed by InstallSigsysReporter writes the
//      call's number to report_fd and exits with kSigsysExit.
//
// Like ApplySandbox, it must run while the process has one thread.
struct DownloadSandbox {
  std::vector<std::string> rw_dirs;
  std::vector<std::string> ro_paths;
  std::vector<uint16_t> tcp_connect_ports;  // empty: TCP not restricted
  uint64_t address_space = 0;               // bytes; 0: no limit
};

// The exit status of a child killed by the allow-list (after it reported).
inline constexpr int kSigsysExit = 97;

// Applies a, b and c. *notes as in ApplySandbox ("landlock ABI 7 (tcp
// ports 8080 53 80 443); seccomp allow-list").
Status ApplyDownloadSandbox(const DownloadSandbox& box, std::string* notes);

// The read-only paths a download needs, those that exist: shared library
// directories, the certificate directories and openssl.cnf (never all of
// /etc/ssl or /etc/pki, whose private/ holds keys), the resolver's files
// (/etc/hosts, resolv.conf and where it points, nsswitch.conf, gai.conf,
// host.conf, services), /dev/urandom, /proc/self and
// /sys/devices/system/cpu. `extra` (known_hosts) is appended. The CA
// bundle itself is read by the worker before the fork (CAINFO_BLOB).
std::vector<std::string> DownloadReadPaths(const std::vector<std::string>& extra);

// SIGSYS handler for the allow-list: on a refused call it writes
// "S<nr>\n" to report_fd (async-signal-safe) and _exits kSigsysExit.
void InstallSigsysReporter(int report_fd);

// Zeroes, in this process's private anonymous memory (heap, stacks,
// anonymous mappings of at most 1 GiB), every copy of each secret at least
// kMinScrubbedSecret bytes long, freed or live, and returns how many were
// zeroed. For a forked child that keeps running code which a hostile peer
// may exploit: it then holds no configured password or key in a form
// that can be read back. Shorter secrets are left alone: zeroing every
// match of a few bytes could corrupt unrelated data. Values derived from
// a secret (a TLS private key loaded by OpenSSL, libpq's SCRAM state) are
// not found. Must run while the process has one thread.
inline constexpr size_t kMinScrubbedSecret = 8;
Result<size_t> ScrubSecrets(const std::vector<std::string>& secrets);

// What ScrubSecrets scans with: counts (and with zero, zeroes) the copies
// of each needle in private anonymous memory (writable only, when
// zeroing), leaving out [skip, skip + skip_len), where the caller keeps
// the needles themselves.
Result<size_t> ScanOwnMemory(const std::vector<std::string_view>& needles, const void* skip,
                             size_t skip_len, bool zero);

// RLIMIT_NPROC for a worker: the tasks its real uid runs now plus
// headroom, so a compromised worker cannot fork without bound. Not
// enforced by the kernel for uid 0 (noted). *notes gets the limit.
Status LimitProcesses(uint64_t headroom, std::string* notes);

}  // namespace djinn

#endif  // DJINN_COMMON_SANDBOX_H_
