// The pure part of the `images` webhook the Djinn server's Go consumer sends
// after every download job (DESIGN §4b): the key of the config's crypto
// block, the decryption of namespace_webhooks.secret, the exact request body,
// its signature and the request_headers text recorded with each delivery.
// Every function reproduces the bytes Go writes (checked against
// tests/data/webhooks/cases.json, made with Go's own encoders).
//
// No I/O, no global state: every function is thread-safe. Secrets and keys
// never appear in an error message.
#ifndef DJINN_COMMON_WEBHOOK_H_
#define DJINN_COMMON_WEBHOOK_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace djinn {

// Bit 512 of namespace_webhooks.events: the hook wants `images` events.
inline constexpr int64_t kImagesEvent = int64_t{1} << 9;

inline constexpr size_t kWebhookKeySize = 32;    // AES-256
inline constexpr size_t kWebhookNonceSize = 12;  // GCM's standard nonce
inline constexpr size_t kWebhookTagSize = 16;    // GCM's full tag

// The key of Djinn's crypto block (Go's crypto.NewAESGCM):
// PBKDF2-HMAC-SHA256(password = block, salt, 4096 iterations, 32 bytes),
// returned as 32 raw bytes. Any block and salt are accepted (the config
// reader checks that block is 16, 24 or 32 bytes). Fails, kPermanent, only
// when libcrypto does (or an input is over 2 GiB).
Result<std::string> DeriveWebhookKey(std::string_view block, std::string_view salt);

// The plaintext secret of a namespace_webhooks.secret value: sealed is
// nonce(12) || AES-256-GCM ciphertext || tag(16), no additional data, key
// from DeriveWebhookKey. The plaintext may be any bytes, also empty.
// kPermanent, with a one-line message naming no secret material, when key is
// not 32 bytes, sealed is shorter than 28 bytes, or the tag does not verify
// (wrong block or salt, or an altered value); no unverified plaintext is
// ever returned. (Go's consumer then skips the delivery and records nothing.)
Result<std::string> DecryptWebhookSecret(std::string_view key, std::string_view sealed);

// What the body needs of an `images` row.
struct ImageRow {
  int64_t id = 0;
  int64_t user_id = 0;
  int64_t author_id = 0;
  std::optional<int64_t> namespace_id;  // NULL: no namespace
  std::string driver;                   // the driver_type enum's label
  std::string hash;                     // not in the body
  std::string name;
  // As PostgreSQL prints a TIMESTAMP with DateStyle ISO:
  // "2026-11-30 21:04:05.123456" (fraction optional, 1 to 6 digits),
  // " BC" after the time for years before 1.
  std::string created_at;
};

// The exact body Go's consumer posts: json.Encoder.Encode of
// {"action":"downloaded","image":image}, i.e. one line ending in "\n", keys
// sorted, strings escaped as Go's encoding/json does (see webhook.cc),
// created_at as time.RFC3339Nano in UTC ("2026-11-30T21:04:05.123456Z",
// trailing zeros of the fraction trimmed, no fraction when it is zero),
// url = api_server + "/images/<id>" (concatenated as is), the relations
// author, user, namespace and download null, namespace_id null when absent.
// The image's hash is not part of the body.
//
// kPermanent when created_at is not a TIMESTAMP as described above, or its
// year is outside Go's JSON range [0, 9999] (1 BC is year 0; "infinity"
// is refused). For such a year Go's consumer ignores the encoder's error and
// posts an empty body; the caller decides whether to copy that.
Result<std::string> ImageEventBody(const ImageRow& image, std::string_view api_server);

// The X-Djinn-Ci-Signature value: "sha256=" + lowercase hex of
// HMAC-SHA256(key = secret, message = body). Any secret, also empty.
// kPermanent only when libcrypto fails (it does not for SHA-256 in practice;
// a Result rather than an abort because the caller can record it and go on).
Result<std::string> WebhookSignature(std::string_view secret, std::string_view body);

// The request_headers text recorded with a delivery: Go's http.Header.Write
// of the request's headers, one "Key: value\r\n" each, keys in byte order:
//   Accept: */*
//   Content-Length: <content_length>
//   Content-Type: application/json; charset=utf-8
//   User-Agent: Djinn-CI-Hook
//   X-Djinn-CI-Event: images
//   X-Djinn-CI-Hook-ID: <hook_id>
//   X-Djinn-Ci-Signature: <signature>     (only when signature is not "")
// As Header.Write does, CR and LF in signature become spaces and surrounding
// spaces and tabs are trimmed.
std::string WebhookRequestHeaders(size_t content_length, int64_t hook_id,
                                  std::string_view signature);

// The event's UUID (namespace_webhook_deliveries.event_id) for the end of
// one download: a name-based UUID (version 5, SHA-1) of the download's id
// and finished_at, so a repeated delivery of the download job names the
// same event (Go draws a random one per event; nothing reads it as random).
std::string WebhookEventId(int64_t download_id, std::string_view finished_at);

}  // namespace djinn

#endif  // DJINN_COMMON_WEBHOOK_H_
