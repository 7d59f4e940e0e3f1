// FetchConfined: one download in a short-lived, confined child of the
// worker (one fork per download; the worker itself stays prefork).
//
// The worker keeps the queue, the database, the reserved .part file (made,
// locked and truncated by PartFile::Reserve) and the final fsync + rename.
// The child gets only what a transfer needs:
//   - file descriptors: the .part file, the log, stdio and a pipe to
//     report on; everything else (Redis, PostgreSQL, the master's life
//     pipe) is closed, and the worker's scoreboard mapping is unmapped
//     (ConfineOptions::in_child);
//   - memory: a fork is a copy of the worker, so before anything else
//     every copy of the configured secrets (database and Redis passwords,
//     crypto keys: ConfineOptions::secrets) is zeroed (ScrubSecrets);
//   - the download sandbox (common/sandbox.h ApplyDownloadSandbox): an
//     address-space limit; a Landlock layer with no write anywhere (the
//     child writes only through the .part descriptor it inherits, so it
//     can neither replace the .part file nor touch the user's other
//     images) and reads of only what TLS and name resolution need (with
//     ABI >= 4, TCP connects only to the source's port, 80/443 for
//     http(s), 53 for DNS over TCP and download.proxy's port); and a
//     seccomp allow-list; on top of the worker's own sandbox;
//   - PR_SET_PDEATHSIG SIGKILL: it dies with its worker.
//
// The child reports over the pipe, one line each: "C" once it is confined,
// "P<progress>" (the worker shows it in its process title), "N<bytes>"
// before a report that the store failed or has no room (what the image
// still needed), "V<validator>" before it writes a body (resuming:
// worker/part_resume.h EncodeValidatorReport), "L<bytes>" (the file's
// leading bytes that are the body) and "R<kind> <bytes> <message>" at the
// end. After a failure that is not permanent, on a try that is not the
// job's last, the worker keeps the .part with that validator for the next
// try (fetch.h "Resuming"); a child that died without "L" leaves its
// file's size as the length, unless it had rewound the file. The worker treats every byte
// after "C" as untrusted (a compromised child): lines are bounded, kinds
// checked, messages made printable; an "unavailable" outcome (which would
// give the job back without counting an attempt) is believed only when
// the worker's own look at the store (PartFile::CheckStore, and
// PartFile::ConfirmNoSpace with the "N" figure capped by the size limit)
// finds it failing or without room, else it counts as a transient
// failure; and the file is checked
// again (PartFile::Verify: the same inode, its header, its size) before it
// is committed.
//
// Outcomes besides the child's own report:
//   - the allow-list refused a system call: kPermanent "download process
//     stopped by the sandbox: forbidden system call <name>";
//   - the child died otherwise (a signal, out of memory, no report):
//     kTransient "download process died (<how>)";
//   - it ran past download.timeout + 30 s: killed, kTransient;
//   - fork failed (RLIMIT_NPROC, memory): kUnavailable, ours;
//   - the store already below store.images.min_free (the worker looks
//     before forking): kUnavailable, no child started.
//
// Secrets: the proxy's password (download.proxy) is the one configured
// secret the child keeps, and keeps out of its log (Log::AddSecret).
#ifndef DJINN_WORKER_FETCH_CHILD_H_
#define DJINN_WORKER_FETCH_CHILD_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "worker/fetch.h"

namespace djinn {

struct ConfineOptions {
  // Zeroed in the child's memory, wherever a copy is, before it touches
  // the network (ConfigSecrets(config)).
  std::vector<std::string> secrets;
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
