// Qcow2 header check: what a downloaded image must look like before it is
// stored, so that the QEMU driver of Djinn, which opens stored images on
// the build hosts, never opens anything but the image itself.
//
// Why: a qcow2 header can name other files that QEMU opens alongside the
// image, with the build host's privileges: a backing file (any path, or a
// "json:" description of any block device, e.g. /etc/shadow or another
// user's image) whose data the guest then reads, and an external data file
// that holds the guest's clusters. Either turns an uploaded image into a
// read of the build host's files. The magic alone says nothing about that.
//
// What is checked (docs/interop/qcow2.txt in QEMU; offsets in bytes, all
// numbers big-endian), in this order:
//   - magic (0) is "QFI\xfb".
//   - version (4) is 2 or 3: the only ones the format defines and QEMU opens.
//   - backing_file_offset (8) is 0: no backing file. backing_file_size (16)
//     must be 0 too; QEMU ignores it without an offset and writes 0, so a
//     non-zero value is a damaged or crafted header, refused rather than
//     left to whatever another reader makes of it.
//   - crypt_method (32) is 0: AES (1), LUKS (2) and any other value mean an
//     encrypted image, which the build host has no key for.
//   - incompatible_features (72, version 3): bit 2 (external data file) is
//     refused; bit 1 (corrupt) is refused: any structure in the image may be
//     inconsistent, and QEMU will not open it for writing; every bit QEMU
//     does not know (5-63) is refused, as the spec requires of a reader
//     that does not know it ("must fail to open").
//     Accepted: bit 0 (dirty: QEMU repairs the refcounts when it opens the
//     image), bit 3 (compression type) and bit 4 (extended L2 entries).
//     The external data file's name is a header extension, and so is the
//     backing file's format; QEMU uses the data file name only when bit 2
//     is set (and the format only with a backing_file_offset), so checking
//     the bit and the offset suffices and extensions are not parsed.
//   - The rest are the structural checks QEMU also makes when it opens an
//     image, so that a damaged file is refused at download with a message
//     the user can act on rather than failing later at boot:
//     cluster_bits (20) is 9-21 (512 bytes to 2 MiB, QEMU's limits);
//     header_length (100, version 3) is at least 104, a multiple of 8 and
//     at most one cluster (the header lives in the first cluster; that also
//     bounds it at 2 MiB, and fields past byte 112 that QEMU does not know
//     need an incompatible bit to matter, so none is looked at);
//     refcount_order (96, version 3) is at most 6;
//     compression_type (104, present when header_length > 104) is 0 (zlib)
//     or 1 (zstd), and non-zero exactly when incompatible bit 3 is set;
//     extended L2 entries (bit 4) need cluster_bits of at least 14;
//     size (24), the virtual disk size, is at most 2^61 bytes (2 EiB, the
//     most QEMU can address: 2 MiB clusters and its 32 MiB L1 table limit).
//     Size 0 is accepted, as QEMU creates and opens such images;
//     l1_table_offset (40), refcount_table_offset (48) and snapshots_offset
//     (64) are cluster-aligned and below 2^63 with their tables;
//     nb_snapshots (60) is at most 65536 (QEMU's limit).
//   - Version 2 has a 72-byte header: nothing past byte 72 is a header
//     field (it is where header extensions start), so the version 3 fields
//     are neither read nor checked.
// Not checked: l1_size, refcount_table_clusters, the tables themselves,
// header extensions and snapshots (beyond the first kQcow2CheckBytes bytes:
// none of them can make QEMU open another file), compatible_features and
// autoclear_features (a reader may ignore them by the spec).
//
// Pure, process- and thread-safe; allocates nothing when the header passes
// (a refusal allocates its message).
#ifndef DJINN_COMMON_QCOW2_H_
#define DJINN_COMMON_QCOW2_H_

#include <cstddef>
#include <string_view>

#include "common/status.h"

namespace djinn {

// How many leading bytes of an image CheckQcow2Header needs: the version 3
// header through compression_type (byte 104) padded to a multiple of 8,
// i.e. the 112-byte header_length QEMU writes since 5.1 (earlier versions
// write 104).
inline constexpr size_t kQcow2CheckBytes = 112;

// Checks the image whose first min(size, kQcow2CheckBytes) bytes are head
// (shorter only when the whole image is shorter; bytes past
// kQcow2CheckBytes are ignored). Ok when the image may be stored;
// otherwise kPermanent with one line for the user, e.g.
//   "not a qcow2 image (empty)", "not a qcow2 image (only 3 bytes)",
//   "not a qcow2 image (bad magic 89504e47)",
//   "image header is truncated (only 80 of 104 bytes)",
//   "qcow2 version 4 is not supported (only 2 and 3)",
//   "image refers to a backing file; upload a standalone image",
//   "image is encrypted; upload an unencrypted image",
//   "image uses an external data file; upload a standalone image",
//   "image is marked corrupt; repair it (qemu-img check -r all) and upload it again",
//   "image uses qcow2 features that are not supported (incompatible_features 0x20)",
//   "image header is damaged (cluster_bits 40 outside 9-21)".
Status CheckQcow2Header(std::string_view head);

}  // namespace djinn

#endif  // DJINN_COMMON_QCOW2_H_
