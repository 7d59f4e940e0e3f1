// A reader for Go encoding/gob streams, written for untrusted input.
//
// It decodes what gob.NewEncoder(w).Encode(v) writes, for any v: the type
// definitions of the stream, then one value, into a generic tree (GobValue)
// that names each struct field and keeps every value of every wire kind, so
// a caller can pick what it knows and any other job type is still parsed to
// the end. Interface values keep their registered name ("*image.DownloadJob":
// package name, not import path). GobEncoder / BinaryMarshaler /
// TextMarshaler values are kept as their raw bytes; a caller that knows one
// decodes them itself (DownloadArgsFromGob does for DownloadURL).
//
// The wire facts it relies on are in tests/data/vectors/README.md §3: type
// ids are per stream, an interface value spans several messages, a type's
// inner CommonType.Id is not checked, zero fields are omitted.
//
// Hostile input: every length and count is checked against the bytes left
// before anything is allocated; unsigned integers wider than 8 bytes, values
// nested deeper than kMaxGobDepth, more than kMaxGobValues values, more than
// kMaxGobDefs type definitions and struct fields, and streams over
// kMaxPayloadBytes are rejected. Errors are kPoison Statuses with a one-line
// reason starting with "gob: ". Nothing here throws (except std::bad_alloc)
// or keeps state between calls; all functions are thread-safe.
//
// Memory is linear in the input: DecodeGob(stream) of n bytes allocates at
// most GobMemoryBound(n), about 3 x n + 176 MiB: 224 MiB for a 16 MiB stream
// (measured: a 16 MiB stream of long type and field names shared by 2^17
// values grows the address space by 56 MiB; the reader that copied names
// per value needed 2 TiB for it). Names are never copied per value: the
// reader keeps one copy of the stream, shared by every value of the result
// (GobValue::storage), and names are views into it. The other terms: each
// wire byte is copied into at most one `bytes`; every value takes at least
// one wire byte, so there are at most min(n, kMaxGobValues) of them; every
// type definition and struct field takes at least one wire byte too, and
// there are at most kMaxGobDefs of them.
#ifndef DJINN_COMMON_GOB_H_
#define DJINN_COMMON_GOB_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/payload.h"
#include "common/status.h"

namespace djinn {

// A bounds-checked read cursor over untrusted bytes. Take* either consume
// exactly what was asked and return true, or consume nothing and return
// false. Shared by the gob reader and the msgpack envelope reader
// (common/envelope.cc). Does not own the bytes.
class ByteCursor {
 public:
  explicit ByteCursor(std::string_view bytes = {}) : bytes_(bytes) {}

  size_t left() const { return bytes_.size() - pos_; }
  size_t offset() const { return pos_; }
  bool empty() const { return pos_ == bytes_.size(); }

  bool TakeByte(uint8_t* out) {
    if (empty()) return false;
    *out = static_cast<uint8_t>(bytes_[pos_++]);
    return true;
  }
  bool Take(size_t n, std::string_view* out) {
    if (n > left()) return false;
    *out = bytes_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  // An unsigned big-endian integer of `width` (0..8) bytes.
  bool TakeBigEndian(size_t width, uint64_t* out) {
    std::string_view b;
    if (width > 8 || !Take(width, &b)) return false;
    uint64_t v = 0;
    for (char c : b) v = v << 8 | static_cast<uint8_t>(c);
    *out = v;
    return true;
  }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

inline constexpr int kMaxGobDepth = 32;           // nesting of values
inline constexpr size_t kMaxGobValues = 1 << 18;  // values in one stream
inline constexpr size_t kMaxGobDefs = 1 << 16;    // type definitions + fields
inline constexpr size_t kMaxGobNameBytes = 1024;  // registered names (Go's)

// The most DecodeGob allocates for a stream of `n` bytes (live bytes, not
// counting the caller's own copy of the stream): the shared copy of the
// stream (n), the `bytes` of values with their allocator overhead (2 x n),
// 640 bytes per value (a GobField and its share of a vector that may be
// reallocating: 3 x 168 bytes, plus allocator overhead) and 256 bytes per
// type definition or struct field (hash table nodes, buckets, FieldDefs),
// plus 64 KiB for the reader itself.
// DecodeGobInterface adds nothing; DownloadArgsFromGob adds the bound of
// Source's nested stream, which is shorter than the outer one.
constexpr size_t GobMemoryBound(size_t n) {
  auto at_most = [](size_t a, size_t b) { return a < b ? a : b; };
  return 3 * n + 640 * at_most(n, kMaxGobValues) + 256 * at_most(n, kMaxGobDefs) + (64 << 10);
}

enum class GobKind : uint8_t {
  kBool,
  kInt,
  kUint,
  kFloat,
  kComplex,
  kBytes,
  kString,
  kInterface,
  kArray,
  kSlice,
  kStruct,
  kMap,
  kGobEncoder,
  kBinaryMarshaler,
  kTextMarshaler,
};

// "int", "struct", "GobEncoder", ...
std::string_view GobKindName(GobKind kind);

struct GobField;

// One decoded value. Which members are set depends on `kind`:
//   kBool: b; kInt: i; kUint: u; kFloat: f; kComplex: f (real), imag;
//   kBytes, kString, k*Marshaler, kGobEncoder: bytes (raw, not validated);
//   kStruct: fields, the ones on the wire in wire order (Go omits zero
//     fields, so an absent field means the zero value);
//   kArray, kSlice: elems; kMap: elems as key, value, key, value, ...;
//   kInterface: name = the registered name, elems = {the concrete value},
//     or name empty and elems empty for a nil interface.
// `name` also holds the type's name from its definition for struct, map,
// slice, array and marshaler values (may be empty, e.g. url.URL's).
//
// Lifetime: `name` and the `name` of each of `fields` are views into
// `storage`, the decoder's copy of the stream, which every value decoded from
// that stream shares. Copies and moves of a value (or of a GobField) keep
// them valid; a GobValue built by hand may leave `storage` empty and point
// `name` at anything that outlives it.
struct GobValue {
  GobKind kind = GobKind::kBool;
  bool b = false;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  double imag = 0;
  std::string bytes;
  std::string_view name;
  std::shared_ptr<const std::string> storage;
  std::vector<GobField> fields;
  std::vector<GobValue> elems;

  // The struct field called `name`, or nullptr when it is absent (zero).
  const GobValue* Field(std::string_view field_name) const;
};

struct GobField {
  std::string_view name;  // into value.storage
  GobValue value;
};

// An interface value: what Encode(&iface) writes for an interface type.
struct GobInterfaceValue {
  std::string name;  // registered name, never empty (a copy: <= kMaxGobNameBytes)
  GobValue value;    // the concrete value
};

// Decodes the first value of a gob stream (type definitions, then the
// value). Like Go's Decoder.Decode it ignores whatever follows that value.
Result<GobValue> DecodeGob(std::string_view stream);

// The same, for a stream whose value is a non-nil interface value (the
// Djinn server's jobs). A bare concrete value or a nil interface is poison.
Result<GobInterfaceValue> DecodeGobInterface(std::string_view stream);

inline constexpr std::string_view kGobDownloadJobName = "*image.DownloadJob";

// Maps a decoded "*image.DownloadJob"{ID int64, ImageID int64, Source
// DownloadURL} to DownloadArgs. ID and ImageID default to 0 when absent;
// Source is required: its GobEncoder bytes are a complete gob stream of a
// url.URL, carried as BinaryMarshaler bytes (the URL string), which must not
// be empty. Fields of the wrong kind are poison, unknown fields are ignored
// (as Go does).
Result<DownloadArgs> DownloadArgsFromGob(const GobInterfaceValue& job);

}  // namespace djinn

#endif  // DJINN_COMMON_GOB_H_
