// The images webhook's bytes, as Djinn's Go consumer writes them
// (namespace.WebhookStore.handleDelivery, image.Image.MarshalJSON and
// crypto.AESGCM in the Djinn server). Where the shared vectors do not reach
// (control characters, invalid UTF-8, extreme years and ids), the behaviour
// copied is that of go1.19.8, the toolchain the other Go vectors were made
// with; tests/unit/webhook_test.cc holds its output for those cases.
#include "common/webhook.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <climits>
#include <memory>

#include "common/c_handles.h"
#include "common/text.h"

namespace djinn {
namespace {

using EvpCipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CFree<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;

// libcrypto wants unsigned bytes and, for some calls, a non-null pointer
// even for zero bytes; an empty string_view may hold nullptr.
const unsigned char* Bytes(std::string_view s) {
  static const unsigned char kNothing[1] = {0};
  return s.empty() ? kNothing : reinterpret_cast<const unsigned char*>(s.data());
}

// The first queued libcrypto error as text. The queue is emptied so that no
// stale error misleads the next OpenSSL user on this thread (libcurl's TLS).
std::string TakeOpenSslError() {
  const unsigned long code = ERR_get_error();
  std::string text = "no error queued";
  if (code != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    text = buf;
  }
  ERR_clear_error();
  return text;
}

Status OpenSslFailure(const char* what) {
  return Status::Permanent(std::string(what) + ": " + TakeOpenSslError());
}

// ------------------------------------------------------------ Go's JSON

// The length of the well-formed UTF-8 sequence at the start of s, 0 when
// there is none. Same acceptance as Go's utf8.DecodeRuneInString: shortest
// form only, no surrogates, nothing above U+10FFFF.
size_t Utf8SequenceLength(std::string_view s) {
  auto at = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto continuation = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return i < s.size() && at(i) >= lo && at(i) <= hi;
  };
  const unsigned char b = at(0);
  if (b >= 0xC2 && b <= 0xDF) return continuation(1) ? 2 : 0;
  if (b >= 0xE0 && b <= 0xEF) {
    const unsigned char lo = b == 0xE0 ? 0xA0 : 0x80;  // overlong
    const unsigned char hi = b == 0xED ? 0x9F : 0xBF;  // surrogates
    return continuation(1, lo, hi) && continuation(2) ? 3 : 0;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    const unsigned char lo = b == 0xF0 ? 0x90 : 0x80;  // overlong
    const unsigned char hi = b == 0xF4 ? 0x8F : 0xBF;  // above U+10FFFF
    return continuation(1, lo, hi) && continuation(2) && continuation(3) ? 4 : 0;
  }
  return 0;
}

// Appends s as a JSON string exactly as go1.19's encoding/json writes it
// with HTML escaping on (json.Marshal, json.Encoder by default):
//   " and \ as \" and \\; \n \r \t as such; every other byte below 0x20 as
//   \u00XX with lowercase hex (so \b and \f are \u0008 and \u000c: the short
//   forms came only with Go 1.22); < > & as \u003c \u003e \u0026; DEL and
//   all other ASCII as is; U+2028 and U+2029 as \u2028 and \u2029; each byte
//   that does not start a well-formed UTF-8 sequence as \ufffd (one per byte,
//   as Go advances one byte on an error); other well-formed UTF-8 as is.
void AppendGoJsonString(std::string_view s, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (b == '"' || b == '\\') {
        out->push_back('\\');
        out->push_back(static_cast<char>(b));
      } else if (b == '\n') {
        *out += "\\n";
      } else if (b == '\r') {
        *out += "\\r";
      } else if (b == '\t') {
        *out += "\\t";
      } else if (b < 0x20 || b == '<' || b == '>' || b == '&') {
        *out += "\\u00";
        out->push_back(kHex[b >> 4]);
        out->push_back(kHex[b & 15]);
      } else {
        out->push_back(static_cast<char>(b));
      }
      ++i;
      continue;
    }
    const size_t n = Utf8SequenceLength(s.substr(i));
    if (n == 0) {
      *out += "\\ufffd";
      ++i;
      continue;
    }
    if (n == 3 && b == 0xE2 && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
        (static_cast<unsigned char>(s[i + 2]) == 0xA8 ||
         static_cast<unsigned char>(s[i + 2]) == 0xA9)) {
      *out += static_cast<unsigned char>(s[i + 2]) == 0xA8 ? "\\u2028" : "\\u2029";
    } else {
      out->append(s.substr(i, n));
    }
    i += n;
  }
  out->push_back('"');
}

// A value for an error message: one line, quoted, at most 64 bytes of it.
std::string Quoted(std::string_view s) {
  std::string out;
  AppendGoJsonString(s.substr(0, 64), &out);
  if (s.size() > 64) out.insert(out.size() - 1, "...");
  return out;
}

// ------------------------------------------------------------ timestamps

// Reads between min and max decimal digits at *pos; false otherwise.
bool ReadDigits(std::string_view s, size_t* pos, size_t min, size_t max, int* out) {
  size_t n = 0;
  int value = 0;
  while (*pos + n < s.size() && n < max && s[*pos + n] >= '0' && s[*pos + n] <= '9') {
    value = value * 10 + (s[*pos + n] - '0');
    ++n;
  }
  if (n < min || (*pos + n < s.size() && s[*pos + n] >= '0' && s[*pos + n] <= '9')) return false;
  *pos += n;
  *out = value;
  return true;
}

bool ReadChar(std::string_view s, size_t* pos, char c) {
  if (*pos >= s.size() || s[*pos] != c) return false;
  ++*pos;
  return true;
}

// Proleptic Gregorian, astronomical years (year 0 = 1 BC), as PostgreSQL
// and Go both count.
int DaysInMonth(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

// Appends value (not negative) in decimal, zero-padded to width digits.
void AppendPadded(int value, size_t width, std::string* out) {
  const std::string digits = std::to_string(value);
  if (digits.size() < width) out->append(width - digits.size(), '0');
  *out += digits;
}

// PostgreSQL's ISO text of a TIMESTAMP (no time zone; Go's pgx reads it as
// UTC) as Go's time.RFC3339Nano, which is also what time.Time.MarshalJSON
// writes: "2006-01-02T15:04:05.999999999Z07:00", trailing zeros of the
// fraction trimmed, the offset of UTC written "Z".
Result<std::string> GoTimeJson(std::string_view ts) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  size_t pos = 0;
  // PostgreSQL's TIMESTAMP ends at year 294276: at most 6 year digits.
  bool ok = ReadDigits(ts, &pos, 4, 6, &year) && ReadChar(ts, &pos, '-') &&
            ReadDigits(ts, &pos, 2, 2, &month) && ReadChar(ts, &pos, '-') &&
            ReadDigits(ts, &pos, 2, 2, &day) && ReadChar(ts, &pos, ' ') &&
            ReadDigits(ts, &pos, 2, 2, &hour) && ReadChar(ts, &pos, ':') &&
            ReadDigits(ts, &pos, 2, 2, &minute) && ReadChar(ts, &pos, ':') &&
            ReadDigits(ts, &pos, 2, 2, &second);
  std::string_view fraction;
  if (ok && pos < ts.size() && ts[pos] == '.') {
    const size_t start = ++pos;
    int unused = 0;
    ok = ReadDigits(ts, &pos, 1, 6, &unused);
    fraction = ts.substr(start, pos - start);
  }
  bool bc = false;
  if (ok && ts.substr(pos) == " BC") {
    bc = true;
    pos = ts.size();
  }
  // PostgreSQL has no year 0: "0001 BC" is year 0.
  const int go_year = bc ? 1 - year : year;
  ok = ok && pos == ts.size() && year >= 1 && month >= 1 && month <= 12 && day >= 1 &&
       day <= DaysInMonth(go_year, month) && hour <= 23 && minute <= 59 && second <= 59;
  if (!ok) {
    return Status::Permanent("created_at " + Quoted(ts) +
                             " is not a PostgreSQL TIMESTAMP (YYYY-MM-DD HH:MM:SS[.ffffff])");
  }
  if (go_year < 0 || go_year > 9999) {
    return Status::Permanent("created_at " + Quoted(ts) +
                             " is outside the years Go's JSON can write (0 to 9999)");
  }
  while (!fraction.empty() && fraction.back() == '0') fraction.remove_suffix(1);
  std::string out;
  AppendPadded(go_year, 4, &out);
  out += '-';
  AppendPadded(month, 2, &out);
  out += '-';
  AppendPadded(day, 2, &out);
  out += 'T';
  AppendPadded(hour, 2, &out);
  out += ':';
  AppendPadded(minute, 2, &out);
  out += ':';
  AppendPadded(second, 2, &out);
  if (!fraction.empty()) {
    out += '.';
    out += fraction;
  }
  out += 'Z';
  return out;
}

// Go's Header.Write on a value: CR and LF become spaces, then leading and
// trailing ASCII spaces and tabs go.
std::string GoHeaderValue(std::string_view v) {
  std::string out(v);
  for (char& c : out) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  const size_t first = out.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return out.substr(first, out.find_last_not_of(" \t") - first + 1);
}

}  // namespace

Result<std::string> DeriveWebhookKey(std::string_view block, std::string_view salt) {
  if (block.size() > INT_MAX || salt.size() > INT_MAX) {
    return Status::Permanent("crypto block or salt is too long");
  }
  std::string key(kWebhookKeySize, '\0');
  if (PKCS5_PBKDF2_HMAC(reinterpret_cast<const char*>(Bytes(block)), static_cast<int>(block.size()),
                        Bytes(salt), static_cast<int>(salt.size()), 4096, EVP_sha256(),
                        static_cast<int>(key.size()),
                        reinterpret_cast<unsigned char*>(key.data())) != 1) {
    return OpenSslFailure("deriving the webhook key (PBKDF2-HMAC-SHA256)");
  }
  return key;
}

Result<std::string> DecryptWebhookSecret(std::string_view key, std::string_view sealed) {
  if (key.size() != kWebhookKeySize) {
    return Status::Permanent("webhook key is " + std::to_string(key.size()) + " bytes, want " +
                             std::to_string(kWebhookKeySize));
  }
  if (sealed.size() < kWebhookNonceSize + kWebhookTagSize) {
    return Status::Permanent("webhook secret is too short: " + std::to_string(sealed.size()) +
                             " bytes, want at least " +
                             std::to_string(kWebhookNonceSize + kWebhookTagSize));
  }
  if (sealed.size() > INT_MAX) return Status::Permanent("webhook secret is too long");
  const std::string_view nonce = sealed.substr(0, kWebhookNonceSize);
  const std::string_view text =
      sealed.substr(kWebhookNonceSize, sealed.size() - kWebhookNonceSize - kWebhookTagSize);
  // EVP_CIPHER_CTX_ctrl takes a non-const pointer; it only copies the tag.
  unsigned char tag[kWebhookTagSize];
  sealed.copy(reinterpret_cast<char*>(tag), kWebhookTagSize, sealed.size() - kWebhookTagSize);

  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslFailure("EVP_CIPHER_CTX_new");
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kWebhookNonceSize),
                          nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, Bytes(key), Bytes(nonce)) != 1) {
    return OpenSslFailure("AES-256-GCM setup");
  }
  std::string plain(text.size(), '\0');
  auto* out = reinterpret_cast<unsigned char*>(plain.data());
  int len = 0;
  if (!text.empty() &&
      EVP_DecryptUpdate(ctx.get(), out, &len, Bytes(text), static_cast<int>(text.size())) != 1) {
    OPENSSL_cleanse(plain.data(), plain.size());
    return OpenSslFailure("AES-256-GCM decryption");
  }
  int final_len = 0;
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kWebhookTagSize),
                          tag) != 1) {
    OPENSSL_cleanse(plain.data(), plain.size());
    return OpenSslFailure("AES-256-GCM tag");
  }
  if (EVP_DecryptFinal_ex(ctx.get(), out + len, &final_len) != 1) {
    // Whatever Update wrote is unauthenticated: it must not outlive us.
    OPENSSL_cleanse(plain.data(), plain.size());
    ERR_clear_error();
    return Status::Permanent(
        "webhook secret does not verify (wrong crypto block or salt, or an altered value)");
  }
  plain.resize(static_cast<size_t>(len + final_len));
  return plain;
}

Result<std::string> ImageEventBody(const ImageRow& image, std::string_view api_server) {
  Result<std::string> created_at = GoTimeJson(image.created_at);
  if (!created_at.ok()) return created_at.status().Wrap("image " + std::to_string(image.id));

  // Keys in byte order, as Go writes a map; ids as strconv.FormatInt does.
  std::string body = R"({"action":"downloaded","image":{"author":null,"author_id":)";
  body += std::to_string(image.author_id);
  body += R"(,"created_at":")";
  body += *created_at;
  body += R"(","download":null,"driver":)";
  AppendGoJsonString(image.driver, &body);
  body += R"(,"id":)";
  body += std::to_string(image.id);
  body += R"(,"name":)";
  AppendGoJsonString(image.name, &body);
  body += R"(,"namespace":null,"namespace_id":)";
  body += image.namespace_id ? std::to_string(*image.namespace_id) : "null";
  body += R"(,"url":)";
  AppendGoJsonString(std::string(api_server) + "/images/" + std::to_string(image.id), &body);
  body += R"(,"user":null,"user_id":)";
  body += std::to_string(image.user_id);
  body += "}}\n";
  return body;
}

Result<std::string> WebhookSignature(std::string_view secret, std::string_view body) {
  if (secret.size() > INT_MAX) return Status::Permanent("webhook secret is too long");
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), Bytes(secret), static_cast<int>(secret.size()), Bytes(body), body.size(),
           mac, &mac_len) == nullptr) {
    return OpenSslFailure("HMAC-SHA256 of the webhook body");
  }
  return "sha256=" + HexLower(mac, mac_len);
}

std::string WebhookEventId(int64_t download_id, std::string_view finished_at) {
  // RFC 4122 section 4.3 with our own namespace UUID (random, fixed forever).
  static constexpr unsigned char kNamespace[16] = {0x6f, 0x1d, 0x3a, 0x52, 0x8e, 0x0b, 0x4c, 0x27,
                                                   0x9a, 0x41, 0x55, 0xd3, 0x0c, 0x7e, 0x92, 0xb8};
  std::string input(reinterpret_cast<const char*>(kNamespace), sizeof kNamespace);
  input += "images:downloaded:" + std::to_string(download_id) + ":";
  input.append(finished_at);
  unsigned char digest[EVP_MAX_MD_SIZE] = {};
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha1(), nullptr) != 1 || len < 16) {
    // SHA-1 does not fail in libcrypto; should it, stay deterministic.
    ERR_clear_error();
    for (size_t i = 0; i < input.size(); i++) digest[i % 16] ^= static_cast<unsigned char>(input[i]);
  }
  digest[6] = static_cast<unsigned char>((digest[6] & 0x0f) | 0x50);  // version 5
  digest[8] = static_cast<unsigned char>((digest[8] & 0x3f) | 0x80);  // RFC 4122 variant
  std::string hex = HexLower(digest, 16);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20, 12);
}

std::string WebhookRequestHeaders(size_t content_length, int64_t hook_id,
                                  std::string_view signature) {
  // Byte order of the keys, as Header.Write sorts them: "X-Djinn-CI-..."
  // (set as map literals, never canonicalized) sorts before
  // "X-Djinn-Ci-Signature" (set with Header.Set, which canonicalizes).
  std::string out =
      "Accept: */*\r\n"
      "Content-Length: " +
      std::to_string(content_length) +
      "\r\n"
      "Content-Type: application/json; charset=utf-8\r\n"
      "User-Agent: Djinn-CI-Hook\r\n"
      "X-Djinn-CI-Event: images\r\n"
      "X-Djinn-CI-Hook-ID: " +
      std::to_string(hook_id) + "\r\n";
  if (!signature.empty()) out += "X-Djinn-Ci-Signature: " + GoHeaderValue(signature) + "\r\n";
  return out;
}

}  // namespace djinn
