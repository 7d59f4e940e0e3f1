// Tests for common/qcow2.h: hand-built headers for every refusal and every
// accepted variant, then images made by the real qemu-img (qemu-utils,
// installed by tests/deps.sh; without it those tests fail, they do not skip).
#include "common/qcow2.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/harness/harness.h"

namespace djinn {
namespace {

using testing::ReadFile;
using testing::RunCommand;
using testing::RunQemuImg;
using testing::TempDir;
using testing::WriteFile;

void Put32(std::string& h, size_t at, uint32_t v) {
  for (int i = 3; i >= 0; i--, v >>= 8) h[at + i] = static_cast<char>(v & 0xff);
}
void Put64(std::string& h, size_t at, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) h[at + i] = static_cast<char>(v & 0xff);
}

// The first kQcow2CheckBytes bytes of what `qemu-img create -f qcow2 x 1M`
// writes: 64 KiB clusters, refcount table at cluster 1, L1 table at
// cluster 3, header_length 112.
std::string V3() {
  std::string h(kQcow2CheckBytes, '\0');
  h.replace(0, 4, "QFI\xfb", 4);
  Put32(h, 4, 3);         // version
  Put32(h, 20, 16);       // cluster_bits
  Put64(h, 24, 1 << 20);  // size
  Put32(h, 36, 1);        // l1_size
  Put64(h, 40, 0x30000);  // l1_table_offset
  Put64(h, 48, 0x10000);  // refcount_table_offset
  Put32(h, 56, 1);        // refcount_table_clusters
  Put32(h, 96, 4);        // refcount_order
  Put32(h, 100, 112);     // header_length
  return h;
}

// The same with `-o compat=0.10`: the 72-byte header; what follows is the
// end of the (empty) header extension area.
std::string V2() {
  std::string h = V3();
  Put32(h, 4, 2);
  std::fill(h.begin() + 72, h.end(), '\0');
  return h;
}

std::string V3WithIncompatible(uint64_t bits) {
  std::string h = V3();
  Put64(h, 72, bits);
  return h;
}

// The message of a refusal, which must be permanent; "ok" when accepted.
std::string Check(std::string_view head) {
  Status st = CheckQcow2Header(head);
  if (st.ok()) return "ok";
  EXPECT_TRUE(st.permanent()) << st.ToString();
  return st.message();
}

// --- accepted ------------------------------------------------------------

TEST(Qcow2Header, AcceptsVersion3AsQemuImgWritesIt) { EXPECT_EQ(Check(V3()), "ok"); }

TEST(Qcow2Header, AcceptsVersion2AsQemuImgWritesIt) { EXPECT_EQ(Check(V2()), "ok"); }

TEST(Qcow2Header, Version2NeedsOnlyItsSeventyTwoByteHeader) {
  EXPECT_EQ(Check(V2().substr(0, 72)), "ok");
}

TEST(Qcow2Header, Version2BytesPastItsHeaderAreNotFeatureFields) {
  std::string h = V2();
  std::fill(h.begin() + 72, h.end(), '\xff');  // would be every incompatible bit in version 3
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, AcceptsVersion3HeaderOf104BytesWithoutCompressionType) {
  std::string h = V3();
  Put32(h, 100, 104);  // what QEMU before 5.1 wrote
  EXPECT_EQ(Check(h), "ok");
  EXPECT_EQ(Check(h.substr(0, 104)), "ok");
}

TEST(Qcow2Header, BytesPastTheCheckedOnesAreIgnored) {
  std::string h = V3() + std::string(1000, '\xff');
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, DataFileNameExtensionWithoutTheBitIsIgnoredAsQemuIgnoresIt) {
  // Header extension "External data file name" (0x44415441) right after
  // the header, as QEMU writes it, but incompatible bit 2 clear.
  std::string h = V3();
  std::string ext(8, '\0');
  Put32(ext, 0, 0x44415441);
  Put32(ext, 4, 11);
  h += ext + "/etc/shadow" + std::string(5, '\0') + std::string(8, '\0');
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, AcceptsDirtyBit) { EXPECT_EQ(Check(V3WithIncompatible(1 << 0)), "ok"); }

TEST(Qcow2Header, AcceptsCompressionTypeBitWithZstd) {
  std::string h = V3WithIncompatible(1 << 3);
  h[104] = 1;
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, AcceptsExtendedL2Bit) { EXPECT_EQ(Check(V3WithIncompatible(1 << 4)), "ok"); }

TEST(Qcow2Header, AcceptsAllKnownHarmlessBitsTogether) {
  std::string h = V3WithIncompatible(1 << 0 | 1 << 3 | 1 << 4);
  h[104] = 1;
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, CompatibleAndAutoclearFeatureBitsAreNotChecked) {
  std::string h = V3();
  Put64(h, 80, ~uint64_t{0});
  Put64(h, 88, ~uint64_t{0});
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, AcceptsClusterBitsLimits) {
  for (uint32_t bits : {9u, 21u}) {
    std::string h = V3();
    Put32(h, 20, bits);
    Put64(h, 40, uint64_t{3} << bits);
    Put64(h, 48, uint64_t{1} << bits);
    EXPECT_EQ(Check(h), "ok") << "cluster_bits " << bits;
  }
}

TEST(Qcow2Header, AcceptsHeaderLengthOfAWholeCluster) {
  std::string h = V3();
  Put32(h, 20, 9);
  Put64(h, 40, 3 * 512);
  Put64(h, 48, 512);
  Put32(h, 100, 512);
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, AcceptsVirtualSizeZero) {
  std::string h = V3();
  Put64(h, 24, 0);
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, AcceptsVirtualSizeOfTwoExbibytes) {
  std::string h = V3();
  Put64(h, 24, uint64_t{1} << 61);
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, AcceptsRefcountOrderSix) {
  std::string h = V3();
  Put32(h, 96, 6);
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, AcceptsSnapshotCountLimit) {
  std::string h = V3();
  Put32(h, 60, 65536);
  Put64(h, 64, 0x40000);
  EXPECT_EQ(Check(h), "ok");
}

// --- not qcow2, truncated, unknown version --------------------------------

TEST(Qcow2Header, RefusesEmptyImage) { EXPECT_EQ(Check(""), "not a qcow2 image (empty)"); }

TEST(Qcow2Header, RefusesImageShorterThanTheMagic) {
  EXPECT_EQ(Check("Q"), "not a qcow2 image (only 1 byte)");
  EXPECT_EQ(Check("QFI"), "not a qcow2 image (only 3 bytes)");
}

TEST(Qcow2Header, RefusesBadMagic) {
  EXPECT_EQ(Check("\x89PNG\r\n\x1a\n"), "not a qcow2 image (bad magic 89504e47)");
  EXPECT_EQ(Check(std::string(kQcow2CheckBytes, '\0')), "not a qcow2 image (bad magic 00000000)");
  EXPECT_EQ(Check("QFI\xfa"), "not a qcow2 image (bad magic 514649fa)");
}

TEST(Qcow2Header, RefusesMagicWithoutVersion) {
  EXPECT_EQ(Check("QFI\xfb"), "image header is truncated (only 4 of 72 bytes)");
  EXPECT_EQ(Check(V3().substr(0, 7)), "image header is truncated (only 7 of 72 bytes)");
}

TEST(Qcow2Header, RefusesTruncatedVersion2Header) {
  EXPECT_EQ(Check(V2().substr(0, 71)), "image header is truncated (only 71 of 72 bytes)");
}

TEST(Qcow2Header, RefusesTruncatedVersion3Header) {
  EXPECT_EQ(Check(V3().substr(0, 80)), "image header is truncated (only 80 of 104 bytes)");
  EXPECT_EQ(Check(V3().substr(0, 103)), "image header is truncated (only 103 of 104 bytes)");
}

TEST(Qcow2Header, RefusesVersion3HeaderCutBeforeItsCompressionType) {
  // header_length 112 says compression_type is there; the image ends first.
  EXPECT_EQ(Check(V3().substr(0, 104)), "image header is truncated (only 104 of 112 bytes)");
}

TEST(Qcow2Header, RefusesUnknownVersions) {
  for (uint32_t v : {0u, 1u, 4u, 0xffffffffu}) {
    std::string h = V3();
    Put32(h, 4, v);
    EXPECT_EQ(Check(h), "qcow2 version " + std::to_string(v) + " is not supported (only 2 and 3)");
  }
}

// --- other files and encryption --------------------------------------------

TEST(Qcow2Header, RefusesBackingFileInVersion3) {
  std::string h = V3();
  Put64(h, 8, 0x210);  // where qemu-img puts the name
  Put32(h, 16, 11);
  EXPECT_EQ(Check(h), "image refers to a backing file; upload a standalone image");
}

TEST(Qcow2Header, RefusesBackingFileInVersion2) {
  std::string h = V2();
  Put64(h, 8, 0x48);
  Put32(h, 16, 11);
  EXPECT_EQ(Check(h), "image refers to a backing file; upload a standalone image");
}

TEST(Qcow2Header, RefusesBackingFileOffsetWithoutSize) {
  std::string h = V3();
  Put64(h, 8, 0x210);
  EXPECT_EQ(Check(h), "image refers to a backing file; upload a standalone image");
}

TEST(Qcow2Header, RefusesBackingFileSizeWithoutOffset) {
  std::string h = V3();
  Put32(h, 16, 11);
  EXPECT_EQ(Check(h),
            "image header is damaged (backing_file_size 11 without a backing_file_offset)");
}

TEST(Qcow2Header, BackingFileIsReportedBeforeOtherFaults) {
  std::string h = V3WithIncompatible(~uint64_t{0});
  Put64(h, 8, 0x210);
  Put32(h, 20, 40);
  EXPECT_EQ(Check(h), "image refers to a backing file; upload a standalone image");
}

TEST(Qcow2Header, RefusesAesEncryption) {
  std::string h = V3();
  Put32(h, 32, 1);
  EXPECT_EQ(Check(h), "image is encrypted; upload an unencrypted image");
}

TEST(Qcow2Header, RefusesLuksEncryption) {
  std::string h = V3();
  Put32(h, 32, 2);
  EXPECT_EQ(Check(h), "image is encrypted; upload an unencrypted image");
}

TEST(Qcow2Header, RefusesEncryptionInVersion2) {
  std::string h = V2();
  Put32(h, 32, 1);
  EXPECT_EQ(Check(h), "image is encrypted; upload an unencrypted image");
}

TEST(Qcow2Header, RefusesUnknownCryptMethod) {
  std::string h = V3();
  Put32(h, 32, 3);
  EXPECT_EQ(Check(h),
            "image is encrypted with an unknown method (crypt_method 3); upload an unencrypted "
            "image");
}

TEST(Qcow2Header, RefusesExternalDataFileBit) {
  EXPECT_EQ(Check(V3WithIncompatible(1 << 2)),
            "image uses an external data file; upload a standalone image");
}

TEST(Qcow2Header, RefusesCorruptBit) {
  EXPECT_EQ(Check(V3WithIncompatible(1 << 1)),
            "image is marked corrupt; repair it (qemu-img check -r all) and upload it again");
}

TEST(Qcow2Header, RefusesEveryUnknownIncompatibleBit) {
  for (int bit = 5; bit < 64; bit++) {
    char mask[24];
    std::snprintf(mask, sizeof mask, "0x%llx", 1ull << bit);
    EXPECT_EQ(Check(V3WithIncompatible(uint64_t{1} << bit)),
              std::string("image uses qcow2 features that are not supported "
                          "(incompatible_features ") +
                  mask + ")")
        << "bit " << bit;
  }
}

TEST(Qcow2Header, UnknownBitsAreNamedWithoutTheKnownOnes) {
  EXPECT_EQ(Check(V3WithIncompatible(0x1f | uint64_t{1} << 63 | 1 << 5)),
            "image uses an external data file; upload a standalone image");
  EXPECT_EQ(Check(V3WithIncompatible(0x19 | uint64_t{1} << 63 | 1 << 5)),
            "image uses qcow2 features that are not supported "
            "(incompatible_features 0x8000000000000020)");
}

// --- damaged headers ---------------------------------------------------------

TEST(Qcow2Header, RefusesClusterBitsOutsideNineToTwentyOne) {
  for (uint32_t bits : {0u, 8u, 22u, 40u}) {
    std::string h = V3();
    Put32(h, 20, bits);
    EXPECT_EQ(Check(h),
              "image header is damaged (cluster_bits " + std::to_string(bits) + " outside 9-21)");
  }
}

TEST(Qcow2Header, RefusesClusterBitsOutsideLimitsInVersion2) {
  std::string h = V2();
  Put32(h, 20, 8);
  EXPECT_EQ(Check(h), "image header is damaged (cluster_bits 8 outside 9-21)");
}

TEST(Qcow2Header, RefusesHeaderLengthBelow104) {
  std::string h = V3();
  Put32(h, 100, 72);
  EXPECT_EQ(Check(h), "image header is damaged (header_length 72 is less than 104)");
}

TEST(Qcow2Header, RefusesHeaderLengthNotMultipleOfEight) {
  std::string h = V3();
  Put32(h, 100, 108);
  EXPECT_EQ(Check(h), "image header is damaged (header_length 108 is not a multiple of 8)");
}

TEST(Qcow2Header, RefusesHeaderLengthBeyondTheCluster) {
  std::string h = V3();
  Put32(h, 20, 9);
  Put64(h, 40, 3 * 512);
  Put64(h, 48, 512);
  Put32(h, 100, 520);
  EXPECT_EQ(Check(h), "image header is damaged (header_length 520 exceeds the 512-byte cluster)");
  Put32(h, 100, 0xfffffff8);
  EXPECT_EQ(Check(h),
            "image header is damaged (header_length 4294967288 exceeds the 512-byte cluster)");
}

TEST(Qcow2Header, RefusesRefcountOrderAboveSix) {
  std::string h = V3();
  Put32(h, 96, 7);
  EXPECT_EQ(Check(h), "image header is damaged (refcount_order 7 above 6)");
}

TEST(Qcow2Header, RefusesCompressionTypeBitWithZlib) {
  EXPECT_EQ(Check(V3WithIncompatible(1 << 3)),
            "image header is damaged (compression type bit set but compression_type is zlib)");
}

TEST(Qcow2Header, RefusesCompressionTypeBitWithoutCompressionTypeField) {
  std::string h = V3WithIncompatible(1 << 3);
  Put32(h, 100, 104);
  h[104] = 1;  // past header_length: padding, not the field
  EXPECT_EQ(Check(h),
            "image header is damaged (compression type bit set but compression_type is zlib)");
}

TEST(Qcow2Header, RefusesCompressionTypeWithoutTheBit) {
  std::string h = V3();
  h[104] = 1;
  EXPECT_EQ(Check(h),
            "image header is damaged (compression_type 1 without the compression type bit)");
}

TEST(Qcow2Header, RefusesUnknownCompressionType) {
  std::string h = V3WithIncompatible(1 << 3);
  h[104] = 2;
  EXPECT_EQ(Check(h), "image uses an unsupported compression type (compression_type 2)");
}

TEST(Qcow2Header, RefusesExtendedL2WithClustersBelow16KiB) {
  std::string h = V3WithIncompatible(1 << 4);
  Put32(h, 20, 13);
  Put64(h, 40, 3 << 13);
  Put64(h, 48, 1 << 13);
  EXPECT_EQ(Check(h),
            "image header is damaged (extended L2 entries need cluster_bits 14 or more, not 13)");
  Put32(h, 20, 14);
  Put64(h, 40, 3 << 14);
  Put64(h, 48, 1 << 14);
  EXPECT_EQ(Check(h), "ok");
}

TEST(Qcow2Header, RefusesVirtualSizeAboveTwoExbibytes) {
  std::string h = V3();
  Put64(h, 24, (uint64_t{1} << 61) + 1);
  EXPECT_EQ(Check(h),
            "image header is damaged (virtual size 2305843009213693953 bytes exceeds 2 EiB)");
  Put64(h, 24, ~uint64_t{0});
  EXPECT_EQ(Check(h),
            "image header is damaged (virtual size 18446744073709551615 bytes exceeds 2 EiB)");
}

TEST(Qcow2Header, RefusesTooManySnapshots) {
  std::string h = V3();
  Put32(h, 60, 65537);
  EXPECT_EQ(Check(h), "image header is damaged (nb_snapshots 65537 above 65536)");
}

TEST(Qcow2Header, RefusesUnalignedTableOffsets) {
  struct Case {
    size_t at;
    const char* field;
  } cases[] = {{40, "l1_table_offset"}, {48, "refcount_table_offset"}, {64, "snapshots_offset"}};
  for (const auto& c : cases) {
    std::string h = V3();
    Put64(h, c.at, 0x30200);
    EXPECT_EQ(Check(h), std::string("image header is damaged (") + c.field +
                            " 0x30200 is not a multiple of the 65536-byte cluster size)");
  }
}

TEST(Qcow2Header, RefusesTableOffsetsBeyondEightExbibytes) {
  struct Case {
    size_t at;
    const char* field;
  } cases[] = {{40, "l1_table_offset"}, {48, "refcount_table_offset"}, {64, "snapshots_offset"}};
  for (const auto& c : cases) {
    std::string h = V3();
    Put32(h, 36, 0x2000);  // a 64 KiB L1 table
    Put32(h, 60, 0x1000);  // a 160 KiB snapshot table
    Put64(h, c.at, uint64_t{1} << 63);
    EXPECT_EQ(Check(h), std::string("image header is damaged (") + c.field +
                            " 0x8000000000000000 is out of range)");
    // Aligned and below 2^63, but the table would end past it.
    Put64(h, c.at, (uint64_t{1} << 63) - 0x10000);
    EXPECT_EQ(Check(h), std::string("image header is damaged (") + c.field +
                            " 0x7fffffffffff0000 is out of range)");
  }
}

TEST(Qcow2Header, RefusesTablesAtUnalignedOffsetsInVersion2) {
  std::string h = V2();
  Put64(h, 40, 0x30001);
  EXPECT_EQ(Check(h),
            "image header is damaged (l1_table_offset 0x30001 is not a multiple of the "
            "65536-byte cluster size)");
}

// --- images made by qemu-img --------------------------------------------------

class QemuImgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string out;
    ASSERT_EQ(RunCommand({"sh", "-c", "command -v qemu-img"}, &out), 0)
        << "qemu-img is not on PATH: install qemu-utils (make deps, tests/deps.sh)";
  }

  // Runs qemu-img with args in the temp dir; fails the test when it fails.
  void QemuImg(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"sh", "-c", "cd \"$0\" && exec qemu-img \"$@\"", dir_.path()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string out;
    ASSERT_EQ(RunQemuImg(argv, &out), 0) << "qemu-img failed: " << out;
  }

  // The first kQcow2CheckBytes bytes of a file in the temp dir, as the
  // download hands them over.
  std::string Head(const std::string& name) {
    return ReadFile(dir_.Sub(name)).substr(0, kQcow2CheckBytes);
  }

  TempDir dir_{"djinn-qcow2"};
};

TEST_F(QemuImgTest, Version3ImageIsAccepted) {
  ASSERT_NO_FATAL_FAILURE(QemuImg({"create", "-q", "-f", "qcow2", "v3.qcow2", "1M"}));
  ASSERT_EQ(Head("v3.qcow2").substr(4, 4), std::string("\0\0\0\3", 4));
  EXPECT_EQ(Check(Head("v3.qcow2")), "ok");
}

TEST_F(QemuImgTest, Version2ImageIsAccepted) {
  ASSERT_NO_FATAL_FAILURE(
      QemuImg({"create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "1M"}));
  ASSERT_EQ(Head("v2.qcow2").substr(4, 4), std::string("\0\0\0\2", 4));
  EXPECT_EQ(Check(Head("v2.qcow2")), "ok");
}

TEST_F(QemuImgTest, ZstdAndExtendedL2ImagesAreAccepted) {
  ASSERT_NO_FATAL_FAILURE(
      QemuImg({"create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", "z.qcow2", "1M"}));
  EXPECT_EQ(Check(Head("z.qcow2")), "ok");
  ASSERT_NO_FATAL_FAILURE(
      QemuImg({"create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "x.qcow2", "1M"}));
  EXPECT_EQ(Check(Head("x.qcow2")), "ok");
}

TEST_F(QemuImgTest, SmallestAndLargestClustersAreAccepted) {
  for (const char* size : {"512", "2M"}) {
    std::string name = std::string("c") + size + ".qcow2";
    ASSERT_NO_FATAL_FAILURE(QemuImg(
        {"create", "-q", "-f", "qcow2", "-o", std::string("cluster_size=") + size, name, "1M"}));
    EXPECT_EQ(Check(Head(name)), "ok") << "cluster_size " << size;
  }
}

TEST_F(QemuImgTest, ImageWithBackingFileIsRefused) {
  ASSERT_NO_FATAL_FAILURE(QemuImg({"create", "-q", "-f", "qcow2", "base.qcow2", "1M"}));
  ASSERT_NO_FATAL_FAILURE(
      QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"}));
  EXPECT_EQ(Check(Head("top.qcow2")), "image refers to a backing file; upload a standalone image");
}

TEST_F(QemuImgTest, ImageWithBackingFileNamingAHostFileIsRefused) {
  // -u: qemu-img does not open the backing file; the name is stored as
  // given, as a crafted image would carry it.
  ASSERT_NO_FATAL_FAILURE(QemuImg(
      {"create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", "x.qcow2", "1M"}));
  EXPECT_EQ(Check(Head("x.qcow2")), "image refers to a backing file; upload a standalone image");
}

TEST_F(QemuImgTest, ConvertedStandaloneCopyOfABackedImageIsAccepted) {
  ASSERT_NO_FATAL_FAILURE(QemuImg({"create", "-q", "-f", "qcow2", "base.qcow2", "1M"}));
  ASSERT_NO_FATAL_FAILURE(
      QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"}));
  ASSERT_NO_FATAL_FAILURE(QemuImg({"convert", "-O", "qcow2", "top.qcow2", "flat.qcow2"}));
  EXPECT_EQ(Check(Head("flat.qcow2")), "ok");
}

TEST_F(QemuImgTest, LuksEncryptedImageIsRefused) {
  ASSERT_NO_FATAL_FAILURE(QemuImg(
      {"create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,data=hunter2", "-o",
       "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", "luks.qcow2", "1M"}));
  EXPECT_EQ(Check(Head("luks.qcow2")), "image is encrypted; upload an unencrypted image");
}

TEST_F(QemuImgTest, ImageWithExternalDataFileIsRefused) {
  ASSERT_NO_FATAL_FAILURE(
      QemuImg({"create", "-q", "-f", "qcow2", "-o", "data_file=data.raw", "ext.qcow2", "1M"}));
  EXPECT_EQ(Check(Head("ext.qcow2")),
            "image uses an external data file; upload a standalone image");
}

TEST_F(QemuImgTest, RawImageIsRefused) {
  ASSERT_NO_FATAL_FAILURE(QemuImg({"create", "-q", "-f", "raw", "disk.img", "1M"}));
  EXPECT_EQ(Check(Head("disk.img")), "not a qcow2 image (bad magic 00000000)");
}

TEST_F(QemuImgTest, PngIsRefused) {
  // Signature and IHDR chunk of a 1x1 grey PNG.
  WriteFile(dir_.Sub("x.png"),
            std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\1\0\0\0\1\x08\0\0\0\0:~\x9bU", 33));
  EXPECT_EQ(Check(Head("x.png")), "not a qcow2 image (bad magic 89504e47)");
}

}  // namespace
}  // namespace djinn
