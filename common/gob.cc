// The gob reader follows the structure of Go's own decoder
// (encoding/gob/decoder.go, decode.go) so that it accepts what Go accepts,
// but it never trusts a length, count or type id from the wire: Go's decoder
// allocates a map of whatever size the stream claims (it dies on
// bad_gob_huge_map_count), this one first checks that the bytes are there.
//
// The stream is a sequence of length-prefixed messages. Values are read from
// the current message only; new messages are pulled in only while reading a
// type sequence (definitions, then a type id), which is how an interface
// value's name, its type definitions and its concrete value end up in
// different messages.
//
// Memory (the bound is GobMemoryBound in gob.h): names are views into the
// reader's one copy of the stream, never copied per value, because one
// struct type's name is shared by every value of that type: 2^17 values of a
// type with 16 MiB of names would otherwise ask for 2 TiB. Type definitions
// and their fields count against kMaxGobDefs for the same reason values
// count against kMaxGobValues: each takes one wire byte but tens in memory.
#include "common/gob.h"

#include <bit>
#include <limits>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace djinn {

namespace {

// Builtin type ids (encoding/gob/type.go); user types start at 64.
enum : int32_t {
  kIdBool = 1,
  kIdInt = 2,
  kIdUint = 3,
  kIdFloat = 4,
  kIdBytes = 5,
  kIdString = 6,
  kIdComplex = 7,
  kIdInterface = 8,
  kFirstUserId = 64,
};

bool IsBuiltin(int64_t id) { return id >= kIdBool && id <= kIdInterface; }

// GobMemoryBound's 640 bytes per value: 3 x sizeof(GobField), plus overhead.
static_assert(3 * sizeof(GobField) + 128 <= 640, "update GobMemoryBound");

// Names are views into the reader's copy of the stream.
struct FieldDef {
  std::string_view name;
  int32_t id = 0;
};

// A type definition received in the stream (a wireType).
struct TypeDef {
  GobKind kind = GobKind::kBool;  // kArray .. kTextMarshaler
  std::string_view name;
  int32_t elem = 0;              // array, slice, map
  int32_t key = 0;               // map
  int64_t len = 0;               // array
  std::vector<FieldDef> fields;  // struct
};

class GobReader {
 public:
  explicit GobReader(std::shared_ptr<const std::string> storage)
      : storage_(std::move(storage)), stream_(*storage_) {}

  Result<GobValue> Read() {
    GobValue value;
    int32_t id = 0;
    if (!ReadTypeSequence(false, &id) || !CheckDefined(id) || !ReadTopValue(id, 0, &value)) {
      return Status::Poison(error_);
    }
    return value;
  }

 private:
  // Every reader returns false after recording the first fault here, like
  // Go's sticky dec.err.
  bool Fail(const std::string& msg) {
    if (error_.empty()) error_ = "gob: " + msg;
    return false;
  }

  size_t BytesLeft() const { return msg_.left() + stream_.left(); }

  // The one varint reader: a byte < 0x80 is the value, otherwise the byte
  // is the negated count (1..8) of big-endian bytes that follow.
  bool ReadUint(ByteCursor& in, uint64_t* out) {
    uint8_t b = 0;
    if (!in.TakeByte(&b)) return Fail("unexpected end of message");
    if (b < 0x80) {
      *out = b;
      return true;
    }
    size_t n = static_cast<uint8_t>(-static_cast<int8_t>(b));
    if (n > 8) {
      return Fail("unsigned integer of " + std::to_string(n) + " bytes exceeds 8");
    }
    if (!in.TakeBigEndian(n, out)) {
      return Fail("unsigned integer of " + std::to_string(n) + " bytes, " +
                  std::to_string(in.left()) + " left");
    }
    return true;
  }

  // Ints are sign-folded: bit 0 set means ^(u >> 1).
  bool ReadInt(int64_t* out) {
    uint64_t u = 0;
    if (!ReadUint(msg_, &u)) return false;
    *out = static_cast<int64_t>(u & 1 ? ~(u >> 1) : u >> 1);
    return true;
  }

  // Floats are sent as uints with their bytes reversed, so that the
  // exponent ends up in the low bytes and small numbers stay short.
  bool ReadFloat(double* out) {
    uint64_t u = 0;
    if (!ReadUint(msg_, &u)) return false;
    *out = std::bit_cast<double>(__builtin_bswap64(u));
    return true;
  }

  // A count of items that take at least `min_bytes` each on the wire.
  bool ReadCount(std::string_view what, size_t min_bytes, uint64_t* n) {
    if (!ReadUint(msg_, n)) return false;
    if (*n > BytesLeft() / min_bytes) {
      return Fail(std::string(what) + " count " + std::to_string(*n) + " exceeds " +
                  std::to_string(BytesLeft()) + " bytes left");
    }
    return true;
  }

  // A length-prefixed byte string, as a view into the stream.
  bool ReadBytes(std::string_view what, std::string_view* out) {
    uint64_t n = 0;
    if (!ReadUint(msg_, &n)) return false;
    if (!msg_.Take(n, out)) {
      return Fail(std::string(what) + " length " + std::to_string(n) + " exceeds " +
                  std::to_string(msg_.left()) + " bytes left");
    }
    return true;
  }
  bool ReadBytes(std::string_view what, std::string* out) {
    std::string_view b;
    if (!ReadBytes(what, &b)) return false;
    out->assign(b);
    return true;
  }

  // Type definitions and struct fields share one budget.
  bool CountDefs(uint64_t n) {
    if (n > kMaxGobDefs - defs_) {
      return Fail("more than " + std::to_string(kMaxGobDefs) + " type definitions and fields");
    }
    defs_ += n;
    return true;
  }

  bool ReadTypeId(int32_t* id) {
    int64_t v = 0;
    if (!ReadInt(&v)) return false;
    if (v < 0 || v > std::numeric_limits<int32_t>::max()) {
      return Fail("type id " + std::to_string(v) + " out of range");
    }
    *id = static_cast<int32_t>(v);
    return true;
  }

  bool NextMessage() {
    if (stream_.empty()) return Fail("unexpected end of stream");
    uint64_t n = 0;
    std::string_view body;
    if (!ReadUint(stream_, &n)) return false;
    if (!stream_.Take(n, &body)) {
      return Fail("message length " + std::to_string(n) + " exceeds " +
                  std::to_string(stream_.left()) + " bytes left");
    }
    msg_ = ByteCursor(body);
    return true;
  }

  // Calls read_field(i) for each field present in a struct encoding: field
  // number deltas, ended by a 0 delta. Used for wire types and values alike.
  template <typename ReadField>
  bool ForEachField(size_t nfields, ReadField read_field) {
    size_t next = 0;  // lowest field number the next delta may reach
    for (;;) {
      uint64_t delta = 0;
      if (!ReadUint(msg_, &delta)) return false;
      if (delta == 0) return true;
      if (delta > nfields - next) {
        return Fail("field delta " + std::to_string(delta) + " past the last of " +
                    std::to_string(nfields) + " fields");
      }
      next += delta;
      if (!read_field(next - 1)) return false;
    }
  }

  // Definitions, then the id of the value that follows (decodeTypeSequence).
  bool ReadTypeSequence(bool in_interface, int32_t* id) {
    for (;;) {
      if (msg_.empty() && !NextMessage()) return false;
      int64_t v = 0;
      if (!ReadInt(&v)) return false;
      if (v >= 0) {
        if (v > std::numeric_limits<int32_t>::max()) {
          return Fail("type id " + std::to_string(v) + " out of range");
        }
        *id = static_cast<int32_t>(v);
        return true;
      }
      if (!ReadTypeDef(v)) return false;
      if (!msg_.empty()) {
        // Inside an interface value a definition may be followed by the
        // count of a delimited value in the same buffer; Go skips it.
        if (!in_interface) return Fail("extra data after a type definition");
        uint64_t ignored = 0;
        if (!ReadUint(msg_, &ignored)) return false;
      }
    }
  }

  // -id and a wireType{ArrayT, SliceT, StructT, MapT, GobEncoderT,
  // BinaryMarshalerT, TextMarshalerT}, exactly one of them set.
  bool ReadTypeDef(int64_t negative_id) {
    uint64_t id = static_cast<uint64_t>(-(negative_id + 1)) + 1;
    if (id < kFirstUserId || id > std::numeric_limits<int32_t>::max()) {
      return Fail("definition of type id " + std::to_string(id) + " out of range");
    }
    if (types_.count(static_cast<int32_t>(id)) != 0) {
      return Fail("duplicate definition of type id " + std::to_string(id));
    }
    if (!CountDefs(1)) return false;
    static constexpr GobKind kKinds[] = {
        GobKind::kArray,      GobKind::kSlice,           GobKind::kStruct,       GobKind::kMap,
        GobKind::kGobEncoder, GobKind::kBinaryMarshaler, GobKind::kTextMarshaler};
    // Fields of arrayType{CommonType, Elem, Len}, sliceType{CommonType,
    // Elem}, structType{CommonType, Field}, mapType{CommonType, Key, Elem},
    // gobEncoderType{CommonType}.
    static constexpr size_t kFieldCounts[] = {3, 2, 2, 3, 1, 1, 1};
    TypeDef def;
    bool seen = false;
    bool ok = ForEachField(7, [&](size_t k) {
      if (seen) return Fail("definition of type id " + std::to_string(id) + " has two kinds");
      seen = true;
      def.kind = kKinds[k];
      return ForEachField(kFieldCounts[k], [&](size_t f) {
        if (f == 0) return ReadCommonType(&def.name);
        if (def.kind == GobKind::kStruct) return ReadStructFields(&def);
        if (def.kind == GobKind::kArray && f == 2) {
          if (!ReadInt(&def.len)) return false;
          return def.len >= 0 || Fail("negative array length");
        }
        return ReadTypeId(def.kind == GobKind::kMap && f == 1 ? &def.key : &def.elem);
      });
    });
    if (!ok) return false;
    if (!seen) {
      return Fail("definition of type id " + std::to_string(id) + " has no kind");
    }
    types_.emplace(static_cast<int32_t>(id), std::move(def));
    return true;
  }

  // CommonType{Name, Id}. The Id is not compared with the definition's id:
  // Go writes a different one for types reached through pointers (url.URL)
  // and its decoder ignores it.
  bool ReadCommonType(std::string_view* name) {
    return ForEachField(2, [&](size_t f) {
      int64_t ignored = 0;
      return f == 0 ? ReadBytes("type name", name) : ReadInt(&ignored);
    });
  }

  // []fieldType{Name, Id}; each takes at least its 0 terminator.
  bool ReadStructFields(TypeDef* def) {
    uint64_t n = 0;
    if (!ReadCount("struct field", 1, &n) || !CountDefs(n)) return false;
    for (uint64_t i = 0; i < n; ++i) {
      FieldDef& field = def->fields.emplace_back();
      bool ok = ForEachField(2, [&](size_t f) {
        return f == 0 ? ReadBytes("field name", &field.name) : ReadTypeId(&field.id);
      });
      if (!ok) return false;
    }
    return true;
  }

  // Every type reachable from `root` must be defined by now, as Go's
  // decoder requires when it compiles the value's engine. Definitions may
  // come in any order, so this runs only when a value is about to be read.
  // A type is marked checked before its children are: a missing child fails
  // the whole decode, so the early mark is never relied on, and it stops
  // recursive types from looping.
  bool CheckDefined(int32_t root) {
    std::vector<int32_t> todo = {root};
    while (!todo.empty()) {
      int32_t id = todo.back();
      todo.pop_back();
      if (IsBuiltin(id) || checked_.count(id) != 0) continue;
      auto it = types_.find(id);
      if (it == types_.end()) {
        return Fail("unknown type id " + std::to_string(id));
      }
      checked_.insert(id);
      const TypeDef& t = it->second;
      switch (t.kind) {
        case GobKind::kMap:
          todo.push_back(t.key);
          [[fallthrough]];
        case GobKind::kArray:
        case GobKind::kSlice:
          todo.push_back(t.elem);
          break;
        case GobKind::kStruct:
          for (const FieldDef& field : t.fields) todo.push_back(field.id);
          break;
        default:
          break;
      }
    }
    return true;
  }

  bool IsStruct(int32_t id) const {
    auto it = types_.find(id);
    return it != types_.end() && it->second.kind == GobKind::kStruct;
  }

  // A value that is not inside a struct: a struct's fields come directly,
  // anything else is framed as a singleton field (delta 0).
  bool ReadTopValue(int32_t id, int depth, GobValue* out) {
    if (!IsStruct(id)) {
      uint64_t delta = 0;
      if (!ReadUint(msg_, &delta)) return false;
      if (delta != 0) {
        return Fail("non-zero field delta " + std::to_string(delta) + " for a single value");
      }
    }
    return ReadValue(id, depth, out);
  }

  // The registered name, the concrete type's definitions and id, a byte
  // count Go ignores (it is not the value's length when the value itself
  // carries nested definitions), then the value.
  bool ReadInterface(int depth, GobValue* out) {
    out->kind = GobKind::kInterface;
    uint64_t n = 0;
    std::string_view name;
    if (!ReadUint(msg_, &n)) return false;
    if (n > kMaxGobNameBytes) {
      return Fail("interface type name of " + std::to_string(n) + " bytes exceeds " +
                  std::to_string(kMaxGobNameBytes));
    }
    if (!msg_.Take(n, &name)) {
      return Fail("interface type name length " + std::to_string(n) + " exceeds " +
                  std::to_string(msg_.left()) + " bytes left");
    }
    out->name = name;
    if (name.empty()) return true;  // nil interface
    int32_t id = 0;
    uint64_t ignored = 0;
    if (!ReadTypeSequence(true, &id) || !CheckDefined(id) || !ReadUint(msg_, &ignored)) {
      return false;
    }
    return ReadTopValue(id, depth + 1, &out->elems.emplace_back());
  }

  bool ReadElems(int32_t elem, uint64_t n, int depth, GobValue* out) {
    for (uint64_t i = 0; i < n; ++i) {
      if (!ReadValue(elem, depth + 1, &out->elems.emplace_back())) return false;
    }
    return true;
  }

  bool ReadValue(int32_t id, int depth, GobValue* out) {
    if (depth > kMaxGobDepth) {
      return Fail("values nested deeper than " + std::to_string(kMaxGobDepth));
    }
    if (++values_ > kMaxGobValues) {
      return Fail("more than " + std::to_string(kMaxGobValues) + " values");
    }
    out->storage = storage_;
    uint64_t n = 0;
    switch (id) {
      case kIdBool:
        out->kind = GobKind::kBool;
        if (!ReadUint(msg_, &n)) return false;
        out->b = n != 0;
        return true;
      case kIdInt:
        out->kind = GobKind::kInt;
        return ReadInt(&out->i);
      case kIdUint:
        out->kind = GobKind::kUint;
        return ReadUint(msg_, &out->u);
      case kIdFloat:
        out->kind = GobKind::kFloat;
        return ReadFloat(&out->f);
      case kIdComplex:
        out->kind = GobKind::kComplex;
        return ReadFloat(&out->f) && ReadFloat(&out->imag);
      case kIdBytes:
        out->kind = GobKind::kBytes;
        return ReadBytes("bytes", &out->bytes);
      case kIdString:
        out->kind = GobKind::kString;
        return ReadBytes("string", &out->bytes);
      case kIdInterface:
        return ReadInterface(depth, out);
    }
    auto it = types_.find(id);
    if (it == types_.end()) return Fail("unknown type id " + std::to_string(id));
    const TypeDef& t = it->second;  // stable: map nodes never move
    out->kind = t.kind;
    out->name = t.name;  // a view, shared by every value of the type
    switch (t.kind) {
      case GobKind::kStruct:
        return ForEachField(t.fields.size(), [&](size_t f) {
          GobField& field = out->fields.emplace_back();
          field.name = t.fields[f].name;
          return ReadValue(t.fields[f].id, depth + 1, &field.value);
        });
      case GobKind::kSlice:
        return ReadCount("slice", 1, &n) && ReadElems(t.elem, n, depth, out);
      case GobKind::kArray:
        if (!ReadCount("array", 1, &n)) return false;
        if (n != static_cast<uint64_t>(t.len)) {
          return Fail("array of " + std::to_string(n) + " elements, its type has " +
                      std::to_string(t.len));
        }
        return ReadElems(t.elem, n, depth, out);
      case GobKind::kMap:
        if (!ReadCount("map", 2, &n)) return false;
        for (uint64_t i = 0; i < n; ++i) {
          if (!ReadValue(t.key, depth + 1, &out->elems.emplace_back()) ||
              !ReadValue(t.elem, depth + 1, &out->elems.emplace_back())) {
            return false;
          }
        }
        return true;
      default:  // the three marshalers: their own bytes
        return ReadBytes(GobKindName(t.kind), &out->bytes);
    }
  }

  // The stream; every value read shares it.
  std::shared_ptr<const std::string> storage_;
  ByteCursor stream_;  // messages not read yet
  ByteCursor msg_;     // the rest of the current message
  std::unordered_map<int32_t, TypeDef> types_;
  std::unordered_set<int32_t> checked_;
  size_t values_ = 0;
  size_t defs_ = 0;  // type definitions and struct fields
  std::string error_;
};

}  // namespace

std::string_view GobKindName(GobKind kind) {
  switch (kind) {
    case GobKind::kBool:
      return "bool";
    case GobKind::kInt:
      return "int";
    case GobKind::kUint:
      return "uint";
    case GobKind::kFloat:
      return "float";
    case GobKind::kComplex:
      return "complex";
    case GobKind::kBytes:
      return "bytes";
    case GobKind::kString:
      return "string";
    case GobKind::kInterface:
      return "interface";
    case GobKind::kArray:
      return "array";
    case GobKind::kSlice:
      return "slice";
    case GobKind::kStruct:
      return "struct";
    case GobKind::kMap:
      return "map";
    case GobKind::kGobEncoder:
      return "GobEncoder";
    case GobKind::kBinaryMarshaler:
      return "BinaryMarshaler";
    case GobKind::kTextMarshaler:
      return "TextMarshaler";
  }
  return "?";
}

const GobValue* GobValue::Field(std::string_view field_name) const {
  for (const GobField& field : fields) {
    if (field.name == field_name) return &field.value;
  }
  return nullptr;
}

Result<GobValue> DecodeGob(std::string_view stream) {
  // Checked before the copy, so an oversized stream costs nothing.
  if (stream.size() > kMaxPayloadBytes) {
    return Status::Poison("gob: stream of " + std::to_string(stream.size()) + " bytes exceeds " +
                          std::to_string(kMaxPayloadBytes));
  }
  return GobReader(std::make_shared<const std::string>(stream)).Read();
}

Result<GobInterfaceValue> DecodeGobInterface(std::string_view stream) {
  Result<GobValue> value = DecodeGob(stream);
  if (!value.ok()) return value.status();
  if (value->kind != GobKind::kInterface) {
    return Status::Poison("gob: stream holds a " + std::string(GobKindName(value->kind)) +
                          ", want an interface value");
  }
  if (value->elems.empty()) return Status::Poison("gob: nil interface value");
  return GobInterfaceValue{std::string(value->name), std::move(value->elems.front())};
}

Result<DownloadArgs> DownloadArgsFromGob(const GobInterfaceValue& job) {
  auto poison = [](const std::string& msg) { return Status::Poison("gob: DownloadJob" + msg); };
  auto kind_is = [](const GobValue& v) { return std::string(GobKindName(v.kind)); };
  if (job.name != kGobDownloadJobName) {
    return Status::Poison("gob: " + std::string(kGobDownloadJobName) +
                          " expected, got another type");
  }
  const GobValue& v = job.value;
  if (v.kind != GobKind::kStruct) {
    return poison(" is a " + kind_is(v) + ", want a struct");
  }
  DownloadArgs args;
  for (auto [name, out] : {std::pair{"ID", &args.id}, std::pair{"ImageID", &args.image_id}}) {
    const GobValue* f = v.Field(name);
    if (f == nullptr) continue;
    if (f->kind != GobKind::kInt) {
      return poison("." + std::string(name) + " is a " + kind_is(*f) + ", want an int");
    }
    *out = f->i;
  }
  const GobValue* source = v.Field("Source");
  if (source == nullptr) return poison(" has no Source");
  if (source->kind != GobKind::kGobEncoder) {
    return poison(".Source is a " + kind_is(*source) + ", want a GobEncoder");
  }
  // DownloadURL.GobEncode wrote a whole gob stream of its *url.URL, which
  // gob sent through url.URL.MarshalBinary: the URL string.
  Result<GobValue> url = DecodeGob(source->bytes);
  if (!url.ok()) return url.status().Wrap("DownloadJob.Source");
  if (url->kind != GobKind::kBinaryMarshaler) {
    return poison(".Source holds a " + kind_is(*url) + ", want a url.URL (BinaryMarshaler)");
  }
  if (url->bytes.empty()) return poison(".Source is an empty URL");
  args.source = std::move(url->bytes);
  return args;
}

}  // namespace djinn
