// The gob reader against Go's own output (tests/data/vectors) and against
// hand-built streams for the kinds and faults the vectors do not cover.
#include "common/gob.h"

#include <gtest/gtest.h>

#include "tests/harness/vectors.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace djinn {
namespace {

using Json = nlohmann::json;
using std::string_literals::operator""s;

using testing::ReadVector;
Json Cases() { return testing::VectorCases(); }

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) out += {kDigits[c >> 4], kDigits[c & 15]};
  return out;
}

// --- A minimal gob writer for hand-built streams ---------------------------

std::string U(uint64_t v) {
  if (v < 0x80) return std::string(1, static_cast<char>(v));
  std::string be;
  for (; v != 0; v >>= 8) be.insert(be.begin(), static_cast<char>(v & 0xff));
  return static_cast<char>(-static_cast<int>(be.size())) + be;
}
std::string I(int64_t v) {
  uint64_t u = static_cast<uint64_t>(v);
  return U(v < 0 ? (~u << 1) | 1 : u << 1);
}
std::string S(std::string_view s) { return U(s.size()) + std::string(s); }
std::string Msg(const std::string& body) { return U(body.size()) + body; }
const std::string kEnd(1, '\0');  // end of a struct

// Definition of type `id`: wireType field `kind_field` (0 array, 1 slice,
// 2 struct, 3 map, 4..6 marshalers) holding CommonType{Name} then `rest`
// (the kind's other fields, each with its delta).
std::string Def(int64_t id, int kind_field, std::string_view name, const std::string& rest = "") {
  return I(-id) + U(kind_field + 1) + "\x01" + "\x01" + S(name) + kEnd + rest + kEnd + kEnd;
}
std::string StructDef(int64_t id, std::string_view name,
                      const std::vector<std::pair<std::string, int64_t>>& fields) {
  std::string list = "\x01" + U(fields.size());
  for (const auto& [field, type] : fields) {
    list += "\x01" + S(field) + "\x01" + I(type) + kEnd;
  }
  return Def(id, 2, name, list);
}
// A top-level interface value as Go writes it: the name and the first
// definition in one message, the other definitions (whole messages), then
// the concrete type id, a byte count and the value.
std::string Iface(std::string_view name, const std::string& first_def,
                  const std::string& other_defs, int64_t id, const std::string& value) {
  return Msg(I(8) + kEnd + S(name) + first_def) + other_defs + Msg(I(id) + U(value.size()) + value);
}

// --- Vectors -----------------------------------------------------------------

TEST(GobVectors, DownloadJobsDecodeToTheRecordedFields) {
  int checked = 0;
  for (const Json& c : Cases()) {
    if (c["category"] != "download_job") continue;
    const Json& job = c["job"];
    SCOPED_TRACE(c["name"].get<std::string>());
    Result<GobInterfaceValue> v = DecodeGobInterface(ReadVector(c["files"]["gob"]));
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(v->name, job["gob_type_name"].get<std::string>());
    std::vector<std::string> on_wire;
    for (const GobField& f : v->value.fields) on_wire.emplace_back(f.name);
    EXPECT_EQ(on_wire, job["fields_on_wire"].get<std::vector<std::string>>());
    Result<DownloadArgs> args = DownloadArgsFromGob(*v);
    ASSERT_TRUE(args.ok()) << args.status().ToString();
    EXPECT_EQ(std::to_string(args->id), job["ID_string"].get<std::string>());
    EXPECT_EQ(std::to_string(args->image_id), job["ImageID_string"].get<std::string>());
    EXPECT_EQ(args->source, job["Source"].get<std::string>());
    EXPECT_EQ(v->value.Field("Source")->bytes.size(), job["Source_gob_payload_len"].get<size_t>());
    ++checked;
  }
  EXPECT_EQ(checked, 18);
}

// Compares a decoded *image.TestEvent with cases.json's "fields".
void ExpectTestEvent(const GobValue& ev, const Json& want) {
  ASSERT_EQ(ev.kind, GobKind::kStruct);
  EXPECT_EQ(ev.name, "TestEvent");
  auto field = [&](const char* name) { return ev.Field(name); };
  const GobValue* kind = field("Kind");
  EXPECT_EQ(kind ? kind->bytes : "", want["Kind"].get<std::string>());
  const GobValue* urgent = field("Urgent");
  EXPECT_EQ(urgent && urgent->b, want["Urgent"].get<bool>());
  std::vector<std::string> images;
  if (const GobValue* f = field("Images")) {
    EXPECT_EQ(f->kind, GobKind::kSlice);
    for (const GobValue& e : f->elems) images.push_back(e.bytes);
  }
  EXPECT_EQ(images, want["Images"].get<std::vector<std::string>>());
  const GobValue* labels = field("Labels");
  EXPECT_EQ(labels != nullptr, !want["Labels"].is_null());
  if (labels) {
    ASSERT_EQ(labels->kind, GobKind::kMap);
    Json got = Json::object();
    for (size_t i = 0; i + 1 < labels->elems.size(); i += 2) {
      got[labels->elems[i].bytes] = labels->elems[i + 1].bytes;
    }
    EXPECT_EQ(got, want["Labels"]);
  }
  const GobValue* meta = field("Meta");
  EXPECT_EQ(meta != nullptr, !want["Meta"].is_null());
  if (meta) {
    const GobValue* actor = meta->Field("Actor");
    const GobValue* attempts = meta->Field("Attempts");
    const GobValue* tags = meta->Field("Tags");
    EXPECT_EQ(actor ? actor->bytes : "", want["Meta"]["Actor"].get<std::string>());
    EXPECT_EQ(attempts ? attempts->i : 0, want["Meta"]["Attempts"].get<int64_t>());
    std::vector<std::string> got_tags;
    if (tags) {
      for (const GobValue& e : tags->elems) got_tags.push_back(e.bytes);
    }
    EXPECT_EQ(got_tags, want["Meta"]["Tags"].get<std::vector<std::string>>());
  }
  const GobValue* at = field("At");
  EXPECT_EQ(at != nullptr, !want["At"].is_null());
  if (at) {
    EXPECT_EQ(at->kind, GobKind::kGobEncoder);
    EXPECT_EQ(Hex(at->bytes), want["At"]["binary_hex"].get<std::string>());
  }
  const GobValue* score = field("Score");
  EXPECT_EQ(score ? score->f : 0.0, want["Score"].get<double>());
  const GobValue* size = field("Size");
  EXPECT_EQ(std::to_string(size ? size->u : 0), want["Size_string"].get<std::string>());
  const GobValue* checksum = field("Checksum");
  EXPECT_EQ(checksum ? Hex(checksum->bytes) : "", want["Checksum_hex"].get<std::string>());
}

TEST(GobVectors, OtherJobTypesAreParsedToTheEnd) {
  int checked = 0;
  for (const Json& c : Cases()) {
    if (c["category"] != "other_job_type") continue;
    SCOPED_TRACE(c["name"].get<std::string>());
    Result<GobInterfaceValue> v = DecodeGobInterface(ReadVector(c["files"]["gob"]));
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(v->name, "*image.TestEvent");
    ExpectTestEvent(v->value, c["job"]["fields"]);
    std::vector<std::string> on_wire;
    for (const GobField& f : v->value.fields) on_wire.emplace_back(f.name);
    EXPECT_EQ(on_wire, c["job"]["fields_on_wire"].get<std::vector<std::string>>());
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

TEST(GobVectors, MalformedStreamsAreRejected) {
  int checked = 0;
  for (const Json& c : Cases()) {
    if (!c.contains("reject") || !c["files"].contains("gob")) continue;
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    Result<GobInterfaceValue> v = DecodeGobInterface(ReadVector(c["files"]["gob"]));
    if (name == "bad_gob_unregistered_name") {
      // Well-formed; only the name is wrong, which the payload layer sees.
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      EXPECT_EQ(v->name, "*image.Downloadjob");
    } else {
      ASSERT_FALSE(v.ok());
      EXPECT_TRUE(v.status().poison());
      EXPECT_EQ(v.status().message().rfind("gob: ", 0), 0u) << v.status().message();
      EXPECT_EQ(v.status().message().find('\n'), std::string::npos);
    }
    ++checked;
  }
  EXPECT_EQ(checked, 9);
}

TEST(GobVectors, RejectsHugeMapCountWithoutAllocating) {
  auto start = std::chrono::steady_clock::now();
  Result<GobInterfaceValue> v = DecodeGobInterface(ReadVector("bad_gob_huge_map_count.gob"));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: map count 14586639876 exceeds 125 bytes left");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(GobVectors, NamesTheFaultOfEachMalformedStream) {
  struct Case {
    const char* file;
    const char* message;
  } cases[] = {
      {"bad_gob_truncated", "gob: message length 88 exceeds 81 bytes left"},
      {"bad_gob_wrong_type_id", "gob: unknown type id 127"},
      {"bad_gob_overlong_length", "gob: message length 9223372036854775807 exceeds 222 bytes left"},
      {"bad_gob_length_exceeds_data", "gob: message length 65535 exceeds 222 bytes left"},
      {"bad_gob_uint_too_wide", "gob: unsigned integer of 9 bytes exceeds 8"},
      {"bad_gob_concrete_not_interface", "gob: stream holds a struct, want an interface value"},
  };
  for (const Case& c : cases) {
    Result<GobInterfaceValue> v = DecodeGobInterface(ReadVector(std::string(c.file) + ".gob"));
    ASSERT_FALSE(v.ok()) << c.file;
    EXPECT_EQ(v.status().message(), c.message) << c.file;
  }
}

TEST(GobVectors, EveryProperPrefixIsRejected) {
  for (const char* name : {"dl_http_plain.gob", "ev_full.gob"}) {
    const std::string bytes = ReadVector(name);
    for (size_t n = 0; n < bytes.size(); ++n) {
      EXPECT_FALSE(DecodeGobInterface(std::string_view(bytes).substr(0, n)).ok())
          << name << " cut to " << n << " bytes";
    }
  }
}

TEST(GobVectors, SurvivesSingleByteMutations) {
  // Under ASan/UBSan this is the cheap, deterministic cousin of the fuzzer.
  for (const Json& c : Cases()) {
    if (!c["files"].contains("gob")) continue;
    std::string bytes = ReadVector(c["files"]["gob"]);
    if (bytes.size() > 4096) continue;
    for (size_t i = 0; i < bytes.size(); ++i) {
      const char saved = bytes[i];
      for (int b : {0x00, 0x01, 0x7f, 0x80, 0xf8, 0xff, saved ^ 0x01, saved + 1}) {
        bytes[i] = static_cast<char>(b);
        Result<GobInterfaceValue> v = DecodeGobInterface(bytes);
        if (v.ok() && v->name == kGobDownloadJobName) (void)DownloadArgsFromGob(*v);
      }
      bytes[i] = saved;
    }
  }
}

TEST(GobVectors, IgnoresBytesAfterTheValue) {
  std::string bytes = ReadVector("dl_http_plain.gob") + "\x05garbage";
  Result<GobInterfaceValue> v = DecodeGobInterface(bytes);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->name, "*image.DownloadJob");
}

// --- Hand-built streams -------------------------------------------------------

TEST(GobDecode, DecodesEveryWireKind) {
  // struct T {B bool; N int; U uint; F float64; C complex128; Y []byte;
  //   S string; A [2]int; M map[string]int; E, Nil interface{};
  //   G GobEncoder; BM BinaryMarshaler; TM TextMarshaler; L []string}
  std::string t_def = StructDef(65, "T",
                                {{"B", 1},
                                 {"N", 2},
                                 {"U", 3},
                                 {"F", 4},
                                 {"C", 7},
                                 {"Y", 5},
                                 {"S", 6},
                                 {"A", 66},
                                 {"M", 67},
                                 {"E", 8},
                                 {"Nil", 8},
                                 {"G", 68},
                                 {"BM", 69},
                                 {"TM", 70},
                                 {"L", 71}});
  std::string defs = Msg(Def(66, 0, "[2]int", "\x01" + I(2) + "\x01" + I(2))) +
                     Msg(Def(67, 3, "map[string]int", "\x01" + I(6) + "\x01" + I(2))) +
                     Msg(Def(68, 4, "G")) + Msg(Def(69, 5, "")) + Msg(Def(70, 6, "TM")) +
                     Msg(Def(71, 1, "[]string", "\x01" + I(6)));
  std::string value =
      "\x01\x01"  // B
      "\x01" +
      I(-3) +                                           // N
      "\x01" + U(1ull << 63) +                          // U
      "\x01" + U(0x182d4454fb210940) +                  // F: pi
      "\x01" + U(0xf03f) + U(0xc4bf) +                  // C: 1-0.15625i
      "\x01" + S("\x00\x01"s) +                         // Y
      "\x01" + S("hi") +                                // S
      "\x01" + U(2) + I(7) + I(-7) +                    // A
      "\x01" + U(1) + S("k") + I(9) +                   // M
      "\x01" + S("int") + I(2) + U(2) + kEnd + I(42) +  // E
      "\x01" + S("") +                                  // Nil
      "\x01" + S("g") + "\x01" + S("bm") + "\x01" + S("tm") + "\x01" + U(2) + S("x") + S("") +
      kEnd;  // L
  Result<GobInterfaceValue> v = DecodeGobInterface(Iface("main.T", t_def, defs, 65, value));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  const GobValue& t = v->value;
  EXPECT_EQ(v->name, "main.T");
  ASSERT_EQ(t.fields.size(), 15u);
  EXPECT_TRUE(t.Field("B")->b);
  EXPECT_EQ(t.Field("N")->i, -3);
  EXPECT_EQ(t.Field("U")->u, 1ull << 63);
  EXPECT_DOUBLE_EQ(t.Field("F")->f, 3.141592653589793);
  EXPECT_EQ(t.Field("C")->kind, GobKind::kComplex);
  EXPECT_EQ(t.Field("C")->f, 1.0);
  EXPECT_EQ(t.Field("C")->imag, -0.15625);
  EXPECT_EQ(t.Field("Y")->bytes, "\x00\x01"s);
  EXPECT_EQ(t.Field("S")->kind, GobKind::kString);
  EXPECT_EQ(t.Field("S")->bytes, "hi");
  ASSERT_EQ(t.Field("A")->elems.size(), 2u);
  EXPECT_EQ(t.Field("A")->kind, GobKind::kArray);
  EXPECT_EQ(t.Field("A")->elems[1].i, -7);
  ASSERT_EQ(t.Field("M")->elems.size(), 2u);
  EXPECT_EQ(t.Field("M")->elems[0].bytes, "k");
  EXPECT_EQ(t.Field("M")->elems[1].i, 9);
  const GobValue* e = t.Field("E");
  EXPECT_EQ(e->kind, GobKind::kInterface);
  EXPECT_EQ(e->name, "int");
  ASSERT_EQ(e->elems.size(), 1u);
  EXPECT_EQ(e->elems[0].i, 42);
  EXPECT_EQ(t.Field("Nil")->kind, GobKind::kInterface);
  EXPECT_TRUE(t.Field("Nil")->elems.empty());
  EXPECT_EQ(t.Field("G")->kind, GobKind::kGobEncoder);
  EXPECT_EQ(t.Field("G")->bytes, "g");
  EXPECT_EQ(t.Field("BM")->kind, GobKind::kBinaryMarshaler);
  EXPECT_EQ(t.Field("TM")->kind, GobKind::kTextMarshaler);
  EXPECT_EQ(t.Field("TM")->bytes, "tm");
  EXPECT_EQ(t.Field("L")->elems.size(), 2u);
  EXPECT_EQ(t.Field("L")->name, "[]string");
}

TEST(GobDecode, FoldsSignsOfExtremeInts) {
  for (int64_t n : {int64_t{0}, int64_t{-1}, int64_t{1} << 53 | 1,
                    std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()}) {
    std::string stream = Msg(I(2) + kEnd + I(n));
    Result<GobValue> v = DecodeGob(stream);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(v->i, n);
  }
  EXPECT_EQ(I(std::numeric_limits<int64_t>::min()), "\xf8\xff\xff\xff\xff\xff\xff\xff\xff");
}

TEST(GobDecode, ResolvesDefinitionsThatReferenceLaterTypes) {
  // Outer{In Inner} defined before Inner, in separate messages.
  std::string stream = Msg(StructDef(100, "Outer", {{"In", 101}})) +
                       Msg(StructDef(101, "Inner", {{"X", 2}})) +
                       Msg(I(100) + "\x01\x01" + I(5) + kEnd + kEnd);
  Result<GobValue> v = DecodeGob(stream);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->Field("In")->Field("X")->i, 5);
}

TEST(GobDecode, RejectsAValueWhoseTypeReferencesAnUndefinedType) {
  // The field is absent from the value, but Go compiles the whole type.
  std::string stream = Msg(StructDef(65, "T", {{"X", 99}})) + Msg(I(65) + kEnd);
  Result<GobValue> v = DecodeGob(stream);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: unknown type id 99");
}

TEST(GobDecode, RejectsDuplicateDefinitions) {
  std::string def = Msg(StructDef(65, "T", {}));
  Result<GobValue> v = DecodeGob(def + def + Msg(I(65) + kEnd));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: duplicate definition of type id 65");
}

TEST(GobDecode, RejectsDefinitionOfABuiltinId) {
  Result<GobValue> v = DecodeGob(Msg(StructDef(6, "T", {})) + Msg(I(6) + kEnd + S("x")));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: definition of type id 6 out of range");
}

TEST(GobDecode, RejectsDefinitionWithTwoKinds) {
  std::string def = I(-65) +
                    "\x03\x01\x00\x00"
                    "\x01\x01\x00\x01\x04\x00" +
                    kEnd;
  EXPECT_FALSE(DecodeGob(Msg(def) + Msg(I(65) + kEnd)).ok());
}

TEST(GobDecode, RejectsExtraDataAfterATopLevelDefinition) {
  Result<GobValue> v = DecodeGob(Msg(StructDef(65, "T", {}) + "\x01") + Msg(I(65) + kEnd));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: extra data after a type definition");
}

TEST(GobDecode, RejectsFieldDeltaPastTheLastField) {
  std::string stream = Msg(StructDef(65, "T", {{"X", 2}})) + Msg(I(65) + "\x02\x02" + kEnd);
  Result<GobValue> v = DecodeGob(stream);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: field delta 2 past the last of 1 fields");
}

TEST(GobDecode, RejectsArrayOfTheWrongLength) {
  std::string stream =
      Msg(Def(65, 0, "", "\x01" + I(2) + "\x01" + I(3))) + Msg(I(65) + kEnd + U(2) + I(1) + I(2));
  Result<GobValue> v = DecodeGob(stream);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: array of 2 elements, its type has 3");
}

TEST(GobDecode, RejectsSliceCountBeyondTheBytesLeft) {
  std::string stream = Msg(Def(65, 1, "", "\x01" + I(6))) + Msg(I(65) + kEnd + U(1000) + S("a"));
  Result<GobValue> v = DecodeGob(stream);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: slice count 1000 exceeds 2 bytes left");
}

TEST(GobDecode, RejectsStringLongerThanItsMessage) {
  Result<GobValue> v = DecodeGob(Msg(I(6) + kEnd + U(50) + "abc"));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: string length 50 exceeds 3 bytes left");
}

TEST(GobDecode, RejectsValuesNestedTooDeep) {
  // type N struct{ Next *N }, 40 levels deep.
  std::string value = I(65) + std::string(40, '\x01') + std::string(41, '\0');
  Result<GobValue> v = DecodeGob(Msg(StructDef(65, "N", {{"Next", 65}})) + Msg(value));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: values nested deeper than 32");
}

TEST(GobDecode, RejectsInterfacesNestedTooDeep) {
  // interface{} holding interface{} holding ... each via its own name.
  std::string value = I(8) + kEnd;
  for (int i = 0; i < 40; ++i) value += S("i") + I(8) + U(0) + kEnd;
  Result<GobValue> v = DecodeGob(Msg(value));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: values nested deeper than 32");
}

TEST(GobDecode, RejectsMoreValuesThanTheBudget) {
  const size_t n = kMaxGobValues + 10;
  std::string stream =
      Msg(Def(65, 1, "", "\x01" + I(1))) + Msg(I(65) + kEnd + U(n) + std::string(n, '\0'));
  Result<GobValue> v = DecodeGob(stream);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: more than 262144 values");
}

TEST(GobDecode, RejectsOverlongInterfaceName) {
  Result<GobValue> v = DecodeGob(Msg(I(8) + kEnd + S(std::string(1025, 'n'))));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: interface type name of 1025 bytes exceeds 1024");
}

TEST(GobDecode, RejectsUndefinedBuiltinRangeIds) {
  for (int64_t id : {0, 9, 16, 63}) {
    EXPECT_FALSE(DecodeGob(Msg(I(id) + kEnd + kEnd)).ok()) << id;
  }
}

TEST(GobDecode, RejectsEmptyStreamAndEmptyMessage) {
  EXPECT_EQ(DecodeGob("").status().message(), "gob: unexpected end of stream");
  EXPECT_FALSE(DecodeGob(Msg("")).ok());
}

TEST(GobDecode, RejectsNilInterfaceAtTopLevel) {
  Result<GobInterfaceValue> v = DecodeGobInterface(Msg(I(8) + kEnd + S("")));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: nil interface value");
}

TEST(GobDecode, RejectsNonZeroSingletonDelta) {
  Result<GobValue> v = DecodeGob(Msg(I(2) + "\x01" + I(1)));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: non-zero field delta 1 for a single value");
}

TEST(GobDecode, RejectsStreamsLargerThanThePayloadLimit) {
  EXPECT_FALSE(DecodeGob(std::string(kMaxPayloadBytes + 1, '\0')).ok());
}

// --- Memory bound ----------------------------------------------------------------

// Decodes `stream` with the address space capped at what the process maps
// now plus GobMemoryBound(stream.size()), and checks the value the memory
// test expects. Runs in a forked child; returns its exit status: 0 right,
// 1 std::bad_alloc (over the bound), 2 rejected, 3 a wrong value, 4 no limit.
int DecodeLongNamesWithinTheBound(const std::string& stream, size_t n, const std::string& type_name,
                                  const std::string& field_name) {
  size_t pages = 0;
  std::ifstream("/proc/self/statm") >> pages;
  const rlim_t limit =
      pages * static_cast<size_t>(sysconf(_SC_PAGESIZE)) + GobMemoryBound(stream.size());
  const rlimit as{limit, limit};
  if (pages == 0 || setrlimit(RLIMIT_AS, &as) != 0) return 4;
  try {
    Result<GobValue> v = DecodeGob(stream);
    if (!v.ok()) return 2;
    if (v->kind != GobKind::kSlice || v->elems.size() != n) return 3;
    const GobValue& first = v->elems.front();
    if (first.name != type_name || first.fields.size() != 1 || first.fields[0].name != field_name) {
      return 3;
    }
    for (const GobValue& e : v->elems) {
      // Every value's names are the same bytes, not equal copies.
      if (e.name.data() != first.name.data() || e.name.size() != first.name.size() ||
          e.fields.size() != 1 || e.fields[0].name.data() != first.fields[0].name.data() ||
          e.fields[0].name.size() != first.fields[0].name.size() || !e.fields[0].value.b) {
        return 3;
      }
    }
    return 0;
  } catch (const std::bad_alloc&) {
    return 1;
  }
}

// A slice of 2^17 structs{<field> bool} whose type and field names fill the
// rest of a 16 MiB stream. Copying the names per value, as the reader once
// did, asks for 2^17 x 16 MiB = 2 TiB; GobMemoryBound allows about 224 MiB.
TEST(GobDecode, LongNamesSharedByManyValuesStayWithinTheMemoryBound) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "RLIMIT_AS and AddressSanitizer's shadow memory do not mix";
#endif
  const size_t n = (kMaxGobValues - 1) / 2;  // the slice, n structs, n bools
  const size_t names = kMaxPayloadBytes - 3 * n - 64;
  const std::string type_name(names / 2, 'T');
  const std::string field_name(names - names / 2, 'F');
  std::string value = I(66) + kEnd + U(n);
  for (size_t i = 0; i < n; ++i) value += "\x01\x01" + kEnd;  // {field: true}
  const std::string stream = Msg(StructDef(65, type_name, {{field_name, 1}})) +
                             Msg(Def(66, 1, "", "\x01" + I(65))) + Msg(value);
  ASSERT_LE(stream.size(), kMaxPayloadBytes);
  ASSERT_GT(stream.size(), kMaxPayloadBytes - 64);

  const pid_t pid = fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) _exit(DecodeLongNamesWithinTheBound(stream, n, type_name, field_name));
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "1: std::bad_alloc (over the bound), 2: rejected, 3: wrong value, 4: no rlimit";
}

TEST(GobDecode, RejectsMoreTypeDefinitionsAndFieldsThanTheBudget) {
  // One struct type with kMaxGobDefs fields (and itself: one too many),
  // each field an empty fieldType (just its end byte).
  std::string fields = "\x01" + U(kMaxGobDefs) + std::string(kMaxGobDefs, '\0');
  Result<GobValue> v = DecodeGob(Msg(Def(65, 2, "T", fields)) + Msg(I(65) + kEnd));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "gob: more than 65536 type definitions and fields");
}

TEST(GobDecode, NamesOutliveTheStreamAndCopiesOfTheValue) {
  std::string stream = Msg(StructDef(65, "main.T", {{"X", 2}})) + Msg(I(65) + "\x01" + I(5) + kEnd);
  Result<GobValue> v = DecodeGob(stream);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  stream.assign(stream.size(), '?');  // the caller's bytes are not used
  GobField field = v->fields.at(0);
  GobValue copy = *v;
  v = Status::Poison("gone");
  EXPECT_EQ(copy.name, "main.T");
  EXPECT_EQ(copy.fields.at(0).name, "X");
  EXPECT_EQ(field.name, "X");
  EXPECT_EQ(field.value.i, 5);
}

// --- DownloadArgsFromGob -------------------------------------------------------

// A *image.DownloadJob whose Source is `source_stream` (ID 7, ImageID 8).
std::string DownloadJob(const std::string& source_stream) {
  std::string value = "\x01" + I(7) + "\x01" + I(8) + "\x01" + S(source_stream) + kEnd;
  return Iface("*image.DownloadJob",
               StructDef(65, "DownloadJob", {{"ID", 2}, {"ImageID", 2}, {"Source", 66}}),
               Msg(Def(66, 4, "DownloadURL")), 65, value);
}

std::string UrlStream(const std::string& url) {
  return Msg(Def(67, 5, "")) + Msg(I(67) + kEnd + S(url));
}

TEST(DownloadArgsFromGob, MapsIdImageIdAndSource) {
  Result<GobInterfaceValue> v = DecodeGobInterface(DownloadJob(UrlStream("https://x/y")));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  Result<DownloadArgs> args = DownloadArgsFromGob(*v);
  ASSERT_TRUE(args.ok()) << args.status().ToString();
  EXPECT_EQ(args->id, 7);
  EXPECT_EQ(args->image_id, 8);
  EXPECT_EQ(args->source, "https://x/y");
}

TEST(DownloadArgsFromGob, RejectsEmptyUrl) {
  Result<GobInterfaceValue> v = DecodeGobInterface(DownloadJob(UrlStream("")));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(DownloadArgsFromGob(*v).status().message(), "gob: DownloadJob.Source is an empty URL");
}

TEST(DownloadArgsFromGob, RejectsSourceThatIsNotAUrlStream) {
  Result<GobInterfaceValue> v = DecodeGobInterface(DownloadJob(Msg(I(6) + kEnd + S("u"))));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(DownloadArgsFromGob(*v).status().message(),
            "gob: DownloadJob.Source holds a string, want a url.URL (BinaryMarshaler)");
  v = DecodeGobInterface(DownloadJob("\x7f"));
  ASSERT_TRUE(v.ok());
  Result<DownloadArgs> args = DownloadArgsFromGob(*v);
  ASSERT_FALSE(args.ok());
  EXPECT_TRUE(args.status().poison());
  EXPECT_EQ(args.status().message(),
            "DownloadJob.Source: gob: message length 127 exceeds 0 bytes left");
}

TEST(DownloadArgsFromGob, RejectsMissingSourceAndWrongFieldKinds) {
  std::string no_source =
      Iface("*image.DownloadJob", StructDef(65, "DownloadJob", {{"ID", 3}, {"Source", 6}}), "", 65,
            "\x01" + U(4) + kEnd);
  Result<GobInterfaceValue> v = DecodeGobInterface(no_source);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(DownloadArgsFromGob(*v).status().message(),
            "gob: DownloadJob.ID is a uint, want an int");
  v->value.fields.clear();
  EXPECT_EQ(DownloadArgsFromGob(*v).status().message(), "gob: DownloadJob has no Source");
}

}  // namespace
}  // namespace djinn
