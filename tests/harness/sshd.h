// A private OpenSSH server for sftp download tests: /usr/sbin/sshd -D -e on
// 127.0.0.1 with a generated config and host key, password login for one
// test user, chrooted into a temp dir so that sftp "/images/x" is
// root() + "/images/x". Needs root (sshd, useradd, chpasswd, chroot):
// check Available() and GTEST_SKIP otherwise.
#ifndef DJINN_TESTS_HARNESS_SSHD_H_
#define DJINN_TESTS_HARNESS_SSHD_H_

#include <gtest/gtest.h>

#include <string>

#include "tests/harness/harness.h"

namespace djinn::testing {

// Fixed port of the wire-compatibility e2e vector (../shared/vectors).
inline constexpr int kE2eSshPort = 18932;
inline constexpr char kSshUser[] = "djinn";
inline constexpr char kSshPassword[] = "s3cret";

class SshServer {
 public:
  SshServer();
  ~SshServer();  // stops sshd and its sessions, removes the directories
  SshServer(const SshServer&) = delete;
  SshServer& operator=(const SshServer&) = delete;

  // True when sshd can run here (root, binaries present, the test user is
  // ours or can be made); *why gets the reason when not.
  static bool Available(std::string* why = nullptr);

  // port 0: a free port; otherwise exactly that one ("port N is taken" when
  // it cannot be bound). The first Start creates the user djinn (password
  // s3cret, shell nologin, marked as a test user in GECOS; an existing
  // "djinn" that is not ours is never touched) and a fresh ed25519 host key.
  // Takes ~50 ms. Use as ASSERT_TRUE(sshd.Start()).
  [[nodiscard]] ::testing::AssertionResult Start(int port = 0);
  // SIGTERM to sshd, then SIGKILL to it and every session process it left.
  void Stop();

  int port() const { return port_; }
  pid_t pid() const { return proc_.pid(); }  // the listening sshd
  // The directory sftp "/" maps to (root-owned 0755; root() + "/images"
  // exists). Put files there mode 0644.
  const std::string& root() const { return root_; }
  // "sftp://djinn:s3cret@127.0.0.1:<port>/<path>".
  std::string url(const std::string& path) const;
  // A known_hosts line "[127.0.0.1]:<port> ssh-ed25519 AAAA...".
  std::string HostKeyLine() const;
  std::string log_path() const { return base_ + "/sshd.log"; }

 private:
  std::string base_;  // chroot-safe temp dir: every component root-owned, 0755
  std::string root_;  // base_/root
  int port_ = 0;
  Process proc_;
};

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_SSHD_H_
