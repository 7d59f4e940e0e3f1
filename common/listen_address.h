// A numeric listen address, "127.0.0.1:9187" or "[::1]:9187" (the
// metrics endpoint's metrics.listen). No name is resolved: a daemon that
// starts at boot must not depend on DNS to know where it listens.
#ifndef DJINN_COMMON_LISTEN_ADDRESS_H_
#define DJINN_COMMON_LISTEN_ADDRESS_H_

#include <sys/socket.h>

#include <string>

#include "common/status.h"

namespace djinn {

struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  bool loopback = false;  // 127.0.0.0/8 or ::1
};

// Port 1 to 65535; errors are permanent and quote the text.
Result<ListenAddress> ParseListenAddress(const std::string& text);

}  // namespace djinn

#endif  // DJINN_COMMON_LISTEN_ADDRESS_H_
