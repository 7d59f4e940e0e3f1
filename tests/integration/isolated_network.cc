// The integration tests run in a network namespace of their own (when
// started as root, as CI does): only a loopback interface exists there, so
// nothing a test does, and no URL of the Go vectors (example.com, IPv6
// documentation addresses, DNS through the host's resolver), can ever
// reach anything but 127.0.0.1 / ::1. Every server the tests start is a
// child of this process and lives in the same namespace.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace {

bool BringUpLoopback() {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  ok = ok && ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
  close(fd);
  return ok;
}

class IsolatedNetwork : public ::testing::Environment {
 public:
  void SetUp() override {
    if (geteuid() != 0) {
      fprintf(stderr, "note: not root; integration tests share the host's network namespace\n");
      return;
    }
    if (unshare(CLONE_NEWNET) != 0 || !BringUpLoopback()) {
      fprintf(stderr, "note: cannot isolate the network (%s); using the host's namespace\n",
              strerror(errno));
      return;
    }
    fprintf(stderr, "note: integration tests run in a private network namespace (loopback only)\n");
  }
};

const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new IsolatedNetwork);

}  // namespace
