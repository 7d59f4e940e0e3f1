#include "common/qcow2.h"

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>

namespace djinn {
namespace {

// Sizes and limits from docs/interop/qcow2.txt and QEMU's block/qcow2.h.
constexpr std::string_view kMagic("QFI\xfb", 4);
constexpr size_t kV2HeaderBytes = 72;
constexpr size_t kV3HeaderBytes = 104;  // through header_length
constexpr size_t kCompressionTypeAt = 104;
constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;
constexpr uint32_t kMinClusterBitsExtendedL2 = 14;  // 32 subclusters of >= 512 bytes
constexpr uint32_t kMaxRefcountOrder = 6;
constexpr uint32_t kMaxSnapshots = 65536;
constexpr uint64_t kSnapshotEntryBytes = 40;  // QCowSnapshotHeader without extra data
constexpr uint64_t kL1EntryBytes = 8;
// 2 MiB clusters hold 2^18 L2 entries of 2 MiB each, and QEMU's L1 table
// (32 MiB) holds 2^22 L1 entries: 2^61 bytes is all QEMU can address.
constexpr uint64_t kMaxVirtualSize = uint64_t{1} << 61;
constexpr uint64_t kMaxFileOffset = INT64_MAX;  // QEMU's offsets are int64_t

constexpr uint64_t kIncompatDirty = 1 << 0;
constexpr uint64_t kIncompatCorrupt = 1 << 1;
constexpr uint64_t kIncompatDataFile = 1 << 2;
constexpr uint64_t kIncompatCompression = 1 << 3;
constexpr uint64_t kIncompatExtendedL2 = 1 << 4;
constexpr uint64_t kIncompatKnown = kIncompatDirty | kIncompatCorrupt | kIncompatDataFile |
                                    kIncompatCompression | kIncompatExtendedL2;

constexpr uint32_t kCryptAes = 1;
constexpr uint32_t kCryptLuks = 2;
constexpr uint8_t kCompressionZlib = 0;
constexpr uint8_t kCompressionZstd = 1;

uint64_t BigEndian(std::string_view b, size_t at, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; i++) v = v << 8 | static_cast<unsigned char>(b[at + i]);
  return v;
}
uint32_t Be32(std::string_view b, size_t at) { return static_cast<uint32_t>(BigEndian(b, at, 4)); }
uint64_t Be64(std::string_view b, size_t at) { return BigEndian(b, at, 8); }

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

Status Damaged(const std::string& what) {
  return Status::Permanent("image header is damaged (" + what + ")");
}

Status Truncated(size_t have, size_t need) {
  return Status::Permanent("image header is truncated (only " + std::to_string(have) + " of " +
                           std::to_string(need) + " bytes)");
}

// The fields this check reads; version 3 fields are zero for version 2.
struct Header {
  uint32_t version;
  uint64_t backing_file_offset;
  uint32_t backing_file_size;
  uint32_t cluster_bits;
  uint64_t size;
  uint32_t crypt_method;
  uint32_t l1_size;
  uint64_t l1_table_offset;
  uint64_t refcount_table_offset;
  uint32_t refcount_table_clusters;
  uint32_t nb_snapshots;
  uint64_t snapshots_offset;
  uint64_t incompatible_features;
  uint32_t refcount_order;
  uint32_t header_length;
  uint8_t compression_type;
};

// QEMU's validate_table_offset: a table starts on a cluster boundary and
// ends below 2^63. bytes is at most 2^53 here (fields are 32-bit counts).
Status CheckTable(const char* field, uint64_t offset, uint64_t bytes, uint32_t cluster_bits) {
  if (offset & ((uint64_t{1} << cluster_bits) - 1))
    return Damaged(std::string(field) + " " + Hex(offset) + " is not a multiple of the " +
                   std::to_string(uint64_t{1} << cluster_bits) + "-byte cluster size");
  if (offset > kMaxFileOffset - bytes)
    return Damaged(std::string(field) + " " + Hex(offset) + " is out of range");
  return Status::Ok();
}

// Incompatible feature bits and the version 3 fields they govern.
Status CheckFeatures(const Header& h) {
  if (h.incompatible_features & kIncompatDataFile)
    return Status::Permanent("image uses an external data file; upload a standalone image");
  if (h.incompatible_features & kIncompatCorrupt)
    return Status::Permanent(
        "image is marked corrupt; repair it (qemu-img check -r all) and upload it again");
  if (uint64_t unknown = h.incompatible_features & ~kIncompatKnown)
    return Status::Permanent(
        "image uses qcow2 features that are not supported (incompatible_features " + Hex(unknown) +
        ")");
  return Status::Ok();
}

Status CheckLayout(const Header& h) {
  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
    return Damaged("cluster_bits " + std::to_string(h.cluster_bits) + " outside " +
                   std::to_string(kMinClusterBits) + "-" + std::to_string(kMaxClusterBits));
  if (h.version >= 3) {
    if (h.header_length < kV3HeaderBytes)
      return Damaged("header_length " + std::to_string(h.header_length) + " is less than " +
                     std::to_string(kV3HeaderBytes));
    if (h.header_length % 8 != 0)
      return Damaged("header_length " + std::to_string(h.header_length) +
                     " is not a multiple of 8");
    if (h.header_length > (uint32_t{1} << h.cluster_bits))
      return Damaged("header_length " + std::to_string(h.header_length) + " exceeds the " +
                     std::to_string(uint32_t{1} << h.cluster_bits) + "-byte cluster");
    if (h.refcount_order > kMaxRefcountOrder)
      return Damaged("refcount_order " + std::to_string(h.refcount_order) + " above " +
                     std::to_string(kMaxRefcountOrder));
    bool bit = h.incompatible_features & kIncompatCompression;
    // An absent compression_type (header_length 104) reads as 0, zlib.
    if (h.compression_type != kCompressionZlib && h.compression_type != kCompressionZstd)
      return Status::Permanent("image uses an unsupported compression type (compression_type " +
                               std::to_string(h.compression_type) + ")");
    if (bit && h.compression_type == kCompressionZlib)
      return Damaged("compression type bit set but compression_type is zlib");
    if (!bit && h.compression_type != kCompressionZlib)
      return Damaged("compression_type " + std::to_string(h.compression_type) +
                     " without the compression type bit");
    if ((h.incompatible_features & kIncompatExtendedL2) &&
        h.cluster_bits < kMinClusterBitsExtendedL2)
      return Damaged("extended L2 entries need cluster_bits " +
                     std::to_string(kMinClusterBitsExtendedL2) + " or more, not " +
                     std::to_string(h.cluster_bits));
  }
  if (h.size > kMaxVirtualSize)
    return Damaged("virtual size " + std::to_string(h.size) + " bytes exceeds 2 EiB");
  if (h.nb_snapshots > kMaxSnapshots)
    return Damaged("nb_snapshots " + std::to_string(h.nb_snapshots) + " above " +
                   std::to_string(kMaxSnapshots));
  if (Status st = CheckTable("l1_table_offset", h.l1_table_offset, h.l1_size * kL1EntryBytes,
                             h.cluster_bits);
      !st.ok())
    return st;
  if (Status st = CheckTable("refcount_table_offset", h.refcount_table_offset,
                             uint64_t{h.refcount_table_clusters} << h.cluster_bits, h.cluster_bits);
      !st.ok())
    return st;
  return CheckTable("snapshots_offset", h.snapshots_offset, h.nb_snapshots * kSnapshotEntryBytes,
                    h.cluster_bits);
}

}  // namespace

Status CheckQcow2Header(std::string_view head) {
  head = head.substr(0, std::min(head.size(), kQcow2CheckBytes));
  if (head.empty()) return Status::Permanent("not a qcow2 image (empty)");
  if (head.size() < kMagic.size())
    return Status::Permanent("not a qcow2 image (only " + std::to_string(head.size()) +
                             (head.size() == 1 ? " byte)" : " bytes)"));
  if (head.substr(0, kMagic.size()) != kMagic) {
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08" PRIx32, Be32(head, 0));
    return Status::Permanent(std::string("not a qcow2 image (bad magic ") + hex + ")");
  }
  // The version says how long the header is; until it is known, assume the
  // shorter (version 2) one.
  if (head.size() < 8) return Truncated(head.size(), kV2HeaderBytes);
  Header h{};
  h.version = Be32(head, 4);
  if (h.version != 2 && h.version != 3)
    return Status::Permanent("qcow2 version " + std::to_string(h.version) +
                             " is not supported (only 2 and 3)");
  size_t need = h.version == 2 ? kV2HeaderBytes : kV3HeaderBytes;
  if (head.size() < need) return Truncated(head.size(), need);
  h.backing_file_offset = Be64(head, 8);
  h.backing_file_size = Be32(head, 16);
  h.cluster_bits = Be32(head, 20);
  h.size = Be64(head, 24);
  h.crypt_method = Be32(head, 32);
  h.l1_size = Be32(head, 36);
  h.l1_table_offset = Be64(head, 40);
  h.refcount_table_offset = Be64(head, 48);
  h.refcount_table_clusters = Be32(head, 56);
  h.nb_snapshots = Be32(head, 60);
  h.snapshots_offset = Be64(head, 64);
  if (h.version >= 3) {
    h.incompatible_features = Be64(head, 72);
    h.refcount_order = Be32(head, 96);
    h.header_length = Be32(head, 100);
    if (h.header_length > kCompressionTypeAt) {
      need = std::min<size_t>(h.header_length, kQcow2CheckBytes);
      if (head.size() < need) return Truncated(head.size(), need);
      h.compression_type = static_cast<uint8_t>(head[kCompressionTypeAt]);
    }
  }

  // What could make QEMU read another file, or data we cannot: first, so
  // that the user hears of it whatever else is wrong.
  if (h.backing_file_offset != 0)
    return Status::Permanent("image refers to a backing file; upload a standalone image");
  if (h.backing_file_size != 0)
    return Damaged("backing_file_size " + std::to_string(h.backing_file_size) +
                   " without a backing_file_offset");
  if (h.crypt_method == kCryptAes || h.crypt_method == kCryptLuks)
    return Status::Permanent("image is encrypted; upload an unencrypted image");
  if (h.crypt_method != 0)
    return Status::Permanent("image is encrypted with an unknown method (crypt_method " +
                             std::to_string(h.crypt_method) + "); upload an unencrypted image");
  if (Status st = CheckFeatures(h); !st.ok()) return st;
  return CheckLayout(h);
}

}  // namespace djinn
