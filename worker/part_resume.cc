#include "worker/part_resume.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "common/text.h"
#include "common/url.h"

namespace djinn {
namespace {

constexpr char kMetaMagic[] = "djinn-consumer resume 1";
constexpr size_t kMaxValidatorText = 256;
// A sidecar saved this far in our future (clock stepped back) is not trusted.
constexpr int64_t kClockSkewSeconds = 300;


bool ParseI64(std::string_view s, int64_t* out) {
  uint64_t v = 0;
  if (!ParseU64(s, &v) || v > static_cast<uint64_t>(INT64_MAX)) return false;
  *out = static_cast<int64_t>(v);
  return true;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

}  // namespace

bool PartValidator::Usable() const {
  return !etag.empty() || !last_modified.empty() || (remote_size >= 0 && remote_mtime >= 0);
}

std::string PartValidator::IfRange() const { return !etag.empty() ? etag : last_modified; }

std::string PartValidator::Describe() const {
  std::string out;
  if (!etag.empty()) out = "ETag " + etag;
  if (!last_modified.empty()) out += (out.empty() ? "" : ", ") + ("Last-Modified " + last_modified);
  if (remote_size >= 0 || remote_mtime >= 0)
    out += (out.empty() ? "" : ", ") +
           ("sftp size " + std::to_string(remote_size) + " mtime " + std::to_string(remote_mtime));
  return out.empty() ? "no validator" : out;
}

std::string SourceDigest(const std::string& url) {
  Result<Url> parsed = ParseUrl(url);
  std::string shown = parsed.ok() ? parsed->Redacted() : RedactUrl(url);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(shown.data(), shown.size(), digest, &len, EVP_sha256(), nullptr) != 1) return "";
  return HexLower(digest, len);
}

std::string FormatPartMeta(const PartMeta& m) {
  std::string out = std::string(kMetaMagic) + "\n";
  out += "image " + std::to_string(m.image_id) + "\n";
  out += "source " + m.source_digest + "\n";
  out += "saved " + std::to_string(m.saved_at) + "\n";
  out += "length " + std::to_string(m.length) + "\n";
  if (!m.validator.etag.empty()) out += "etag " + m.validator.etag + "\n";
  if (!m.validator.last_modified.empty())
    out += "last-modified " + m.validator.last_modified + "\n";
  if (m.validator.remote_size >= 0) out += "size " + std::to_string(m.validator.remote_size) + "\n";
  if (m.validator.remote_mtime >= 0)
    out += "mtime " + std::to_string(m.validator.remote_mtime) + "\n";
  return out;
}

Result<PartMeta> ParsePartMeta(std::string_view text) {
  if (text.size() > 4096) return Status::Permanent("resume sidecar: longer than 4096 bytes");
  if (text.empty() || text.back() != '\n')
    return Status::Permanent("resume sidecar: incomplete (no final newline)");
  text.remove_suffix(1);
  std::vector<std::string_view> lines = Split(text, '\n');
  if (lines[0] != kMetaMagic) return Status::Permanent("resume sidecar: unknown format");
  PartMeta m;
  bool image = false, source = false, saved = false, length = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos)
      return Status::Permanent("resume sidecar: line " + std::to_string(i + 1) + " has no value");
    std::string_view key = line.substr(0, sp), value = line.substr(sp + 1);
    bool ok = true;
    if (key == "image") {
      ok = ParseI64(value, &m.image_id) && !image;
      image = true;
    } else if (key == "source") {
      ok = value.size() == 64 && value.find_first_not_of("0123456789abcdef") == value.npos &&
           !source;
      m.source_digest = value;
      source = true;
    } else if (key == "saved") {
      ok = ParseI64(value, &m.saved_at) && !saved;
      saved = true;
    } else if (key == "length") {
      ok = ParseU64(value, &m.length) && !length;
      length = true;
    } else if (key == "etag") {
      m.validator.etag = StrongEtag(value);
      ok = !m.validator.etag.empty() && m.validator.etag == value;
    } else if (key == "last-modified") {
      m.validator.last_modified = ValidatorText(value);
      ok = !m.validator.last_modified.empty() && m.validator.last_modified == value;
    } else if (key == "size") {
      ok = ParseI64(value, &m.validator.remote_size);
    } else if (key == "mtime") {
      ok = ParseI64(value, &m.validator.remote_mtime);
    } else {
      ok = false;
    }
    if (!ok)
      return Status::Permanent("resume sidecar: bad line " + std::to_string(i + 1) + " (" +
                               std::string(key.substr(0, 20)) + ")");
  }
  if (!image || !source || !saved || !length)
    return Status::Permanent("resume sidecar: image, source, saved or length missing");
  return m;
}

std::string ResumeRefusal(const PartMeta& meta, const DownloadIdentity& id, int64_t now,
                          uint64_t part_size, int64_t max_age_seconds) {
  if (meta.image_id != id.image_id) return "it belongs to image " + std::to_string(meta.image_id);
  if (meta.source_digest != SourceDigest(id.source)) return "it was downloaded from another URL";
  if (meta.saved_at > now + kClockSkewSeconds) return "it was saved in the future";
  if (now - meta.saved_at > max_age_seconds)
    return "it is older than " + std::to_string(max_age_seconds / 3600) + " h";
  if (!meta.validator.Usable()) return "the server gave no validator (ETag, Last-Modified)";
  if (meta.length != part_size)
    return "it has " + std::to_string(part_size) + " bytes, its sidecar says " +
           std::to_string(meta.length);
  if (meta.length == 0) return "it is empty";
  return "";
}

std::string ValidatorText(std::string_view value) {
  if (value.empty() || value.size() > kMaxValidatorText) return "";
  for (char c : value)
    if (c < 0x20 || c > 0x7e) return "";
  return std::string(value);
}

std::string StrongEtag(std::string_view value) {
  // entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc excludes DQUOTE.
  if (value.size() < 2 || value.front() != '"' || value.back() != '"') return "";
  if (value.substr(1, value.size() - 2).find('"') != std::string_view::npos) return "";
  return ValidatorText(value);
}

std::optional<ContentRange> ParseContentRange(std::string_view v) {
  if (v.substr(0, 6) != "bytes ") return std::nullopt;
  v.remove_prefix(6);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  size_t dash = v.find('-'), slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash)
    return std::nullopt;
  ContentRange r;
  if (!ParseU64(v.substr(0, dash), &r.first) ||
      !ParseU64(v.substr(dash + 1, slash - dash - 1), &r.last) || r.last < r.first)
    return std::nullopt;
  std::string_view total = v.substr(slash + 1);
  if (total != "*") {
    uint64_t t = 0;
    if (!ParseU64(total, &t) || t <= r.last) return std::nullopt;
    r.total = t;
  }
  return r;
}

std::string EncodeValidatorReport(const PartValidator& v, bool restarted) {
  return std::string(restarted ? "1" : "0") + "\t" + v.etag + "\t" + v.last_modified + "\t" +
         std::to_string(v.remote_size) + "\t" + std::to_string(v.remote_mtime);
}

std::optional<PartValidator> DecodeValidatorReport(std::string_view text, bool* restarted) {
  std::vector<std::string_view> f = Split(text, '\t');
  if (f.size() != 5 || (f[0] != "0" && f[0] != "1")) return std::nullopt;
  PartValidator v;
  if (!f[1].empty() && (v.etag = StrongEtag(f[1])).empty()) return std::nullopt;
  if (!f[2].empty() && (v.last_modified = ValidatorText(f[2])).empty()) return std::nullopt;
  for (int i : {3, 4}) {
    int64_t* out = i == 3 ? &v.remote_size : &v.remote_mtime;
    if (f[i] == "-1") continue;
    if (!ParseI64(f[i], out)) return std::nullopt;
  }
  *restarted = f[0] == "1";
  return v;
}

}  // namespace djinn
