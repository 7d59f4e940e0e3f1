// FetchConfined: one download in a short-lived, confined child of the
// worker (one fork per download; the worker itself stays prefork).
//
// The worker keeps the queue, the database, the reserved .part file (made,
// locked and truncated by PartFile::Reserve) and the final fsync + rename.
// The child gets only what a transfer needs:
//   - file descriptors: the .part file, the log, and a pipe to report on;
//     everything else (Redis, PostgreSQL, the master's life pipe) is
//     closed, and the worker's scoreboard mapping is unmapped
//     (ConfineOptions::in_child);
//   - the download sandbox (common/sandbox.h ApplyDownloadSandbox): an
//     address-space limit, a Landlock layer allowing reads and writes
//     beneath <store>/<user_id>/<driver>/ only and reads of what TLS and
//     name resolution need (with ABI >= 4, TCP connects only to the
//     source's port, 80/443 for http(s), and 53 for DNS over TCP), and a
//     seccomp allow-list; on top of the worker's own sandbox;
//   - PR_SET_PDEATHSIG SIGKILL: it dies with its worker.
//
// The child reports over the pipe, one line each: "P<progress>" (the
// worker shows it in its process title) and "R<kind> <bytes> <message>"
// at the end. The worker treats every byte it reads as untrusted (a
// compromised child): lines are bounded, kinds checked, messages made
// printable, and the file is checked again (PartFile::Verify) before it
// is committed.
//
// Outcomes besides the child's own report:
//   - the allow-list refused a system call: kPermanent "download process
//     stopped by the sandbox: forbidden system call <name>";
//   - the child died otherwise (a signal, out of memory, no report):
//     kTransient "download process died (<how>)";
//   - it ran past download.timeout + 30 s: killed, kTransient;
//   - fork failed (RLIMIT_NPROC, memory): kUnavailable, ours.
#ifndef DJINN_WORKER_FETCH_CHILD_H_
#define DJINN_WORKER_FETCH_CHILD_H_

#include <cstdint>
#include <functional>
#include <string>

#include "worker/fetch.h"

namespace djinn {

struct ConfineOptions {
  // <store>/<user_id>/<driver>: the only directory the child may read or
  // write (PartFile::Reserve made it).
  std::string image_dir;
  // Runs in the child first: drops what it must not keep (the worker's
  // scoreboard mapping). May be empty.
  std::function<void()> in_child;
  // RLIMIT_AS for the child: its address space at the fork plus this.
  // 0: no limit (sanitizer builds, whose shadow memory needs terabytes).
  uint64_t address_space_headroom = 0;
  // Test hook (DJINN_CONSUMER_TEST_JOBS=1 only): after confinement, before
  // the transfer, the child tries this and reports the result as the
  // job's outcome: "read:PATH", "write:PATH", "connect:PORT", "exec",
  // "fork".
  std::string probe;
};

// The default headroom: threads reserve 8 MiB stacks and 64 MiB malloc
// arenas; libcurl's buffers and OpenSSL need far less.
inline constexpr uint64_t kDownloadAddressHeadroom = 512ull << 20;

// Downloads url into file (reserved) in a confined child; on success the
// file is committed (fsync, rename) and FetchResult::path set; on failure
// it is discarded. Errors start with "GET <url>: " like FetchBody's.
Result<FetchResult> FetchConfined(const std::string& url, PartFile* file,
                                  const FetchOptions& options, const FetchHooks& hooks,
                                  const ConfineOptions& confine);

}  // namespace djinn

#endif  // DJINN_WORKER_FETCH_CHILD_H_
