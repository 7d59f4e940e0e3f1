// Test images that pass the download's qcow2 header check
// (common/qcow2.h): a valid version 3 header, laid out as qemu-img lays
// out an empty image (64 KiB clusters, refcount table at cluster 1, L1
// table at cluster 3), followed by whatever bytes a test wants.
// tests/harness/httpd.py (qcow2_header) and tests/demo.sh write the same
// header.
#ifndef DJINN_TESTS_HARNESS_QCOW2_IMAGE_H_
#define DJINN_TESTS_HARNESS_QCOW2_IMAGE_H_

#include <cstdint>
#include <string>

namespace djinn::testing {

// The 104-byte header plus 8 zero bytes (the end-of-extensions marker).
inline std::string Qcow2Header(uint64_t virtual_size = 64ull << 20) {
  std::string h;
  auto be32 = [&h](uint32_t v) {
    for (int i = 3; i >= 0; --i) h.push_back(static_cast<char>(v >> (8 * i)));
  };
  auto be64 = [&h](uint64_t v) {
    for (int i = 7; i >= 0; --i) h.push_back(static_cast<char>(v >> (8 * i)));
  };
  constexpr uint64_t kCluster = 1 << 16;
  h = "QFI\xfb";
  be32(3);               // version
  be64(0);               // backing_file_offset
  be32(0);               // backing_file_size
  be32(16);              // cluster_bits
  be64(virtual_size);    // size
  be32(0);               // crypt_method
  be32(1);               // l1_size
  be64(3 * kCluster);    // l1_table_offset
  be64(1 * kCluster);    // refcount_table_offset
  be32(1);               // refcount_table_clusters
  be32(0);               // nb_snapshots
  be64(0);               // snapshots_offset
  be64(0);               // incompatible_features
  be64(0);               // compatible_features
  be64(0);               // autoclear_features
  be32(4);               // refcount_order
  be32(104);             // header_length
  h.append(8, '\0');     // end of header extensions
  return h;
}

// `body` with its first bytes replaced by a valid header (grown to the
// header's size when shorter).
inline std::string WithQcow2Header(std::string body) {
  std::string h = Qcow2Header();
  if (body.size() < h.size()) body.resize(h.size(), '\0');
  body.replace(0, h.size(), h);
  return body;
}

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_QCOW2_IMAGE_H_
