// Resuming an interrupted download: what a kept .part file is, and how a
// later try decides whether it may continue it (worker/fetch.h,
// "Resuming"; man djinn-consumer.conf(5), "Resuming downloads").
//
// After a transient failure the worker keeps <dir>/.<name>.part and writes,
// next to it, the sidecar <dir>/.<name>.part.meta (atomically: a .tmp
// file, fsync, rename; mode 0640 less the umask), a few "key value" lines:
//
//   djinn-consumer resume 1
//   image 42                  the images row the .part belongs to
//   source <64 hex digits>    SHA-256 of the source URL, password redacted
//   saved 1700000000          when it was written (Unix seconds)
//   length 4194304            the .part's size: the body's first bytes
//   etag "abc"                http(s): the final response's strong ETag
//   last-modified <date>      http(s): its Last-Modified
//   size 8388608              sftp: the remote file's size ...
//   mtime 1699999999          ... and modification time (Unix seconds)
//
// A sidecar rather than an extended attribute: user.* xattrs are missing
// on some file systems an image store may live on (tmpfs before Linux 6.6,
// some NFS setups), a text file can be read by an operator, and it is
// swept like the .part (master/part_sweep.h).
//
// The sidecar describes the .part only while no try holds the .part's lock:
// the try that locks it reads the sidecar and removes it at once, and
// writes a new one only when it leaves the .part for a later try. A try
// that dies without a word (a killed worker) leaves a .part without a
// sidecar, which the next try starts over.
#ifndef DJINN_WORKER_PART_RESUME_H_
#define DJINN_WORKER_PART_RESUME_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace djinn {

// A kept .part older than this is not continued, and the master's sweep
// removes .part files older than this whose lock is free.
inline constexpr int64_t kResumeMaxAgeSeconds = 7 * 24 * 3600;
// The sidecar's name is the .part's plus this; its temporary one adds ".tmp".
inline constexpr char kPartMetaSuffix[] = ".meta";

// What makes two tries "the same download": the images row (its id; the
// .part's path already carries the user, driver and hash) and the source
// URL. A different URL for the same image starts over.
struct DownloadIdentity {
  int64_t image_id = 0;
  std::string source;
};

// What the bytes in a .part were checked against, so that a later try can
// ask for exactly the rest of the same content.
struct PartValidator {
  std::string etag;           // http(s): strong ETag as sent ("\"abc\""); "" none
  std::string last_modified;  // http(s): Last-Modified as sent; "" none
  int64_t remote_size = -1;   // sftp: remote file size; -1 unknown
  int64_t remote_mtime = -1;  // sftp: remote mtime (Unix seconds); -1 unknown

  // An ETag or a Last-Modified (http), or size and mtime (sftp).
  bool Usable() const;
  // The If-Range value: the ETag when there is one, else Last-Modified.
  std::string IfRange() const;
  // For log lines: "ETag \"abc\"", "sftp size 123 mtime 456", ...
  std::string Describe() const;
  bool operator==(const PartValidator&) const = default;
};

// The sidecar's content.
struct PartMeta {
  int64_t image_id = 0;
  std::string source_digest;  // SourceDigest(url)
  int64_t saved_at = 0;       // Unix seconds
  uint64_t length = 0;        // bytes in the .part
  PartValidator validator;
};

// Hex SHA-256 of the URL with its password redacted: the sidecar names the
// source without keeping anything secret.
std::string SourceDigest(const std::string& url);

std::string FormatPartMeta(const PartMeta& meta);
// kPermanent with what is wrong when text is not a sidecar of this version.
Result<PartMeta> ParsePartMeta(std::string_view text);

// Why a kept .part with this sidecar may not be continued by the download
// `id` at `now` (Unix seconds), the .part being part_size bytes long; ""
// when it may. (The image header in the kept bytes is checked apart.)
std::string ResumeRefusal(const PartMeta& meta, const DownloadIdentity& id, int64_t now,
                          uint64_t part_size, int64_t max_age_seconds = kResumeMaxAgeSeconds);

// A response header's ETag as a validator: the value when it is a strong
// entity tag ("..." without W/), else "" (If-Range must not carry a weak
// one, RFC 9110 13.1.5).
std::string StrongEtag(std::string_view value);
// A header value fit to keep and send back: printable ASCII, no tab,
// at most 256 bytes; else "".
std::string ValidatorText(std::string_view value);

// "Content-Range: bytes <first>-<last>/<total or *>".
struct ContentRange {
  uint64_t first = 0, last = 0;
  std::optional<uint64_t> total;
};
std::optional<ContentRange> ParseContentRange(std::string_view value);

// The download process's report of a validator (fetch_child.h "V" line):
// "<restarted 0|1>\t<etag>\t<last-modified>\t<size>\t<mtime>". Decoding
// treats the text as untrusted: nullopt when anything is off.
std::string EncodeValidatorReport(const PartValidator& v, bool restarted);
std::optional<PartValidator> DecodeValidatorReport(std::string_view text, bool* restarted);

}  // namespace djinn

#endif  // DJINN_WORKER_PART_RESUME_H_
