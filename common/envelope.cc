// A hand-written msgpack reader rather than msgpack-c: msgpack-c allocates
// an array or map of the size its header claims before reading a single
// element, so a 5-byte "map of 2^32 entries" costs gigabytes. This reader
// allocates nothing (ID, Data and map keys are views into the input; only
// DecodeEnvelope copies ID and Data, once), checks every length and count
// against the bytes left, and bounds the nesting of values it skips.
//
// The encoder is hand-written too, because the bytes must be exactly what
// vmihailenco/msgpack v4 writes for curlyq's Job (see vectors README §2):
// Go curlyq consumers read what we requeue.
#include "common/envelope.h"

#include <cstdio>

#include "common/gob.h"  // ByteCursor

namespace djinn {

namespace {

constexpr int kMaxSkipDepth = 32;

// What one msgpack header says. Reading it consumes the code and its
// length or value bytes (and an ext's type byte), not the payload.
struct Header {
  enum Type { kNil, kBool, kInt, kFloat, kStr, kBin, kExt, kArray, kMap };
  Type type = kNil;
  uint8_t code = 0;
  int64_t i = 0;     // kInt: the value, when it fits int64
  bool big = false;  // kInt: a uint64 above INT64_MAX
  uint64_t n = 0;    // kStr, kBin, kExt: payload bytes; kArray, kMap: count
};

const char* TypeName(Header::Type type) {
  static constexpr const char* kNames[] = {"nil", "bool", "int",   "float", "str",
                                           "bin", "ext",  "array", "map"};
  return kNames[type];
}

std::string Hex(uint8_t b) {
  char hex[3];
  std::snprintf(hex, sizeof(hex), "%02x", b);
  return hex;
}

class EnvelopeReader {
 public:
  explicit EnvelopeReader(std::string_view bytes) : in_(bytes) {}

  Result<EnvelopeView> Read() {
    EnvelopeView env;
    env.data_nil = true;  // until a Data key says otherwise
    if (!ReadEnvelope(&env)) return Status::Poison(error_);
    return env;
  }

 private:
  bool Fail(const std::string& msg) {
    if (error_.empty()) error_ = "msgpack: " + msg;
    return false;
  }
  bool Truncated() { return Fail("truncated at offset " + std::to_string(in_.offset())); }

  bool ReadHeader(Header* h) {
    *h = Header();
    if (!in_.TakeByte(&h->code)) return Truncated();
    const uint8_t c = h->code;
    // Reads the header's big-endian length (or count) of `width` bytes.
    auto sized = [&](Header::Type type, size_t width) {
      h->type = type;
      return in_.TakeBigEndian(width, &h->n) || Truncated();
    };
    auto skip = [&](size_t n) {
      std::string_view ignored;
      return in_.Take(n, &ignored) || Truncated();
    };
    auto fixed = [&](Header::Type type, uint64_t n) {
      h->type = type;
      h->n = n;
      return true;
    };
    if (c <= 0x7f || c >= 0xe0) {  // positive and negative fixint
      h->type = Header::kInt;
      h->i = static_cast<int8_t>(c);
      return true;
    }
    if (c <= 0x8f) return fixed(Header::kMap, c & 0x0f);
    if (c <= 0x9f) return fixed(Header::kArray, c & 0x0f);
    if (c <= 0xbf) return fixed(Header::kStr, c & 0x1f);
    switch (c) {
      case 0xc0:
        return fixed(Header::kNil, 0);
      case 0xc2:
      case 0xc3:
        return fixed(Header::kBool, 0);
      case 0xc4:
        return sized(Header::kBin, 1);
      case 0xc5:
        return sized(Header::kBin, 2);
      case 0xc6:
        return sized(Header::kBin, 4);
      case 0xc7:
        return sized(Header::kExt, 1) && skip(1);  // + type byte
      case 0xc8:
        return sized(Header::kExt, 2) && skip(1);
      case 0xc9:
        return sized(Header::kExt, 4) && skip(1);
      case 0xca:
        return fixed(Header::kFloat, 0) && skip(4);
      case 0xcb:
        return fixed(Header::kFloat, 0) && skip(8);
      case 0xcc:
      case 0xcd:
      case 0xce:
      case 0xcf: {  // uint 8..64
        uint64_t u = 0;
        if (!in_.TakeBigEndian(size_t{1} << (c - 0xcc), &u)) return Truncated();
        h->type = Header::kInt;
        h->big = u > static_cast<uint64_t>(INT64_MAX);
        h->i = static_cast<int64_t>(u);
        return true;
      }
      case 0xd0:
      case 0xd1:
      case 0xd2:
      case 0xd3: {  // int 8..64, sign-extended from its width
        uint64_t u = 0;
        const int width = 1 << (c - 0xd0);
        const int shift = 64 - 8 * width;
        if (!in_.TakeBigEndian(width, &u)) return Truncated();
        h->type = Header::kInt;
        h->i = static_cast<int64_t>(u << shift) >> shift;
        return true;
      }
      case 0xd4:
      case 0xd5:
      case 0xd6:
      case 0xd7:
      case 0xd8:  // fixext 1..16: a type byte, then the data
        return fixed(Header::kExt, uint64_t{1} << (c - 0xd4)) && skip(1);
      case 0xd9:
        return sized(Header::kStr, 1);
      case 0xda:
        return sized(Header::kStr, 2);
      case 0xdb:
        return sized(Header::kStr, 4);
      case 0xdc:
        return sized(Header::kArray, 2);
      case 0xdd:
        return sized(Header::kArray, 4);
      case 0xde:
        return sized(Header::kMap, 2);
      case 0xdf:
        return sized(Header::kMap, 4);
    }
    return Fail("invalid code " + Hex(c) + " at offset " + std::to_string(in_.offset() - 1));
  }

  // A count of `per_entry` values of at least one byte each.
  bool CheckCount(const Header& h, uint64_t per_entry) {
    if (h.n <= in_.left() / per_entry) return true;
    return Fail(std::string(TypeName(h.type)) + " of " + std::to_string(h.n) + " entries exceeds " +
                std::to_string(in_.left()) + " bytes left");
  }

  // str, bin (what v4 accepts for a string or []byte) or nil.
  bool ReadBytes(std::string_view what, std::string_view* out, bool* is_nil) {
    Header h;
    if (!ReadHeader(&h)) return false;
    *is_nil = h.type == Header::kNil;
    if (*is_nil) {
      *out = {};
      return true;
    }
    if (h.type != Header::kStr && h.type != Header::kBin) {
      return Fail(std::string(what) + " is " + TypeName(h.type) + " (code " + Hex(h.code) +
                  "), want str or bin");
    }
    if (!in_.Take(h.n, out)) {
      return Fail(std::string(what) + " length " + std::to_string(h.n) + " exceeds " +
                  std::to_string(in_.left()) + " bytes left");
    }
    return true;
  }

  bool ReadAttempt(int64_t* out) {
    Header h;
    if (!ReadHeader(&h)) return false;
    if (h.type == Header::kNil) {  // v4 reads nil as 0
      *out = 0;
      return true;
    }
    if (h.type != Header::kInt) {
      return Fail(std::string("Attempt is ") + TypeName(h.type) + " (code " + Hex(h.code) +
                  "), want int");
    }
    if (h.big) return Fail("Attempt exceeds int64");
    *out = h.i;
    return true;
  }

  bool Skip(int depth) {
    Header h;
    std::string_view ignored;
    if (depth > kMaxSkipDepth) {
      return Fail("values nested deeper than " + std::to_string(kMaxSkipDepth));
    }
    if (!ReadHeader(&h)) return false;
    switch (h.type) {
      case Header::kStr:
      case Header::kBin:
      case Header::kExt:
        return in_.Take(h.n, &ignored) || Truncated();
      case Header::kArray:
      case Header::kMap: {
        const uint64_t per_entry = h.type == Header::kMap ? 2 : 1;
        if (!CheckCount(h, per_entry)) return false;
        for (uint64_t i = 0; i < h.n * per_entry; ++i) {
          if (!Skip(depth + 1)) return false;
        }
        return true;
      }
      default:
        return true;
    }
  }

  bool ReadField(std::string_view key, EnvelopeView* env) {
    bool is_nil = false;
    if (key == "ID") return ReadBytes("ID", &env->id, &is_nil);
    if (key == "Data") return ReadBytes("Data", &env->data, &env->data_nil);
    if (key == "Attempt") return ReadAttempt(&env->attempt);
    return Skip(1);  // v4 skips fields it does not know
  }

  bool ReadEnvelope(EnvelopeView* env) {
    Header h;
    if (!ReadHeader(&h)) return false;
    if (h.type == Header::kArray) {  // v4 StructAsArray: [ID, Data, Attempt]
      if (h.n != 3) {
        return Fail("envelope array of " + std::to_string(h.n) + " elements, want 3");
      }
      for (const char* key : {"ID", "Data", "Attempt"}) {
        if (!ReadField(key, env)) return false;
      }
    } else if (h.type == Header::kMap) {
      if (!CheckCount(h, 2)) return false;
      for (uint64_t i = 0; i < h.n; ++i) {
        std::string_view key;
        bool is_nil = false;
        if (!ReadBytes("key", &key, &is_nil) || !ReadField(key, env)) {
          return false;
        }
      }
    } else {
      return Fail(std::string("envelope is ") + TypeName(h.type) + " (code " + Hex(h.code) +
                  "), want map or array");
    }
    // Trailing bytes are ignored, as v4's Unmarshal does.
    return !env->id.empty() || Fail("envelope has no ID");
  }

  ByteCursor in_;
  std::string error_;
};

void PutBigEndian(uint64_t v, int width, std::string* out) {
  for (int shift = 8 * (width - 1); shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>(v >> shift));
  }
}

// str or bin header: the short form when there is one, then 8/16/32-bit.
void PutLength(size_t n, uint8_t fix, uint8_t code8, std::string* out) {
  if (fix != 0 && n < 32) {
    out->push_back(static_cast<char>(fix | n));
  } else if (n < 256) {
    out->push_back(static_cast<char>(code8));
    PutBigEndian(n, 1, out);
  } else if (n < 65536) {
    out->push_back(static_cast<char>(code8 + 1));
    PutBigEndian(n, 2, out);
  } else {
    out->push_back(static_cast<char>(code8 + 2));
    PutBigEndian(n, 4, out);
  }
}

}  // namespace

Result<EnvelopeView> DecodeEnvelopeView(std::string_view bytes) {
  return EnvelopeReader(bytes).Read();
}

Result<Envelope> DecodeEnvelope(std::string_view bytes) {
  Result<EnvelopeView> view = DecodeEnvelopeView(bytes);
  if (!view.ok()) return view.status();
  Envelope env;
  env.id.assign(view->id);
  env.data.assign(view->data);
  env.data_nil = view->data_nil;
  env.attempt = view->attempt;
  return env;
}

std::string EncodeEnvelope(const EnvelopeView& env) {
  std::string out;
  out.reserve(32 + env.id.size() + env.data.size());
  out += "\x83\xa2ID";
  PutLength(env.id.size(), 0xa0, 0xd9, &out);
  out += env.id;
  out +=
      "\xa4"
      "Data";
  if (env.data_nil) {
    out.push_back('\xc0');
  } else {
    PutLength(env.data.size(), 0, 0xc4, &out);
    out += env.data;
  }
  out +=
      "\xa7"
      "Attempt\xd3";
  PutBigEndian(static_cast<uint64_t>(env.attempt), 8, &out);
  return out;
}

}  // namespace djinn
