// systemd readiness (master/notify.h): a unix datagram socket of the test
// stands in for systemd's NOTIFY_SOCKET. The master says READY=1 once its
// workers run, RELOADING=1 then READY=1 around SIGHUP (a reload that is
// refused too), STOPPING=1 on SIGTERM, WATCHDOG=1 when WATCHDOG_USEC asks
// for it; no other process ever sends (the kernel tells us the sender's
// pid: SO_PASSCRED). Run as systemd runs the unit (root, workers dropping
// to `user`) and as Djinn's own files run it (started unprivileged).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "tests/harness/daemon.h"
#include "tests/harness/harness.h"
#include "tests/harness/queue_fixture.h"

namespace djinn::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct Notification {
  pid_t pid = -1;    // the sender, as the kernel saw it
  std::string text;  // "READY=1\nSTATUS=..."
  bool Has(const std::string& assignment) const {
    return ("\n" + text + "\n").find("\n" + assignment + "\n") != std::string::npos;
  }
  std::string Field(const std::string& name) const {
    std::string t = "\n" + text + "\n";
    size_t at = t.find("\n" + name + "=");
    if (at == std::string::npos) return "";
    size_t start = at + name.size() + 2;
    return t.substr(start, t.find('\n', start) - start);
  }
};

// What systemd listens on: a datagram socket with SO_PASSCRED, writable by
// everyone (an unprivileged master must reach it too).
class NotifySocket {
 public:
  NotifySocket() : dir_("djinn-notify") {
    path_ = dir_.Sub("notify.sock");
    fd_.Reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    EXPECT_TRUE(fd_.valid());
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path_.c_str());
    EXPECT_EQ(bind(fd_.get(), reinterpret_cast<struct sockaddr*>(&sa), sizeof sa), 0);
    int on = 1;
    EXPECT_EQ(setsockopt(fd_.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
    EXPECT_EQ(chmod(path_.c_str(), 0666), 0);
  }
  std::string env() const { return "NOTIFY_SOCKET=" + path_; }

  // Receives until a message with `assignment` arrives after the first
  // `from` messages; returns its index, or -1 after timeout.
  int WaitFor(const std::string& assignment, size_t from = 0,
              milliseconds timeout = seconds(20)) {
    auto until = std::chrono::steady_clock::now() + timeout;
    for (size_t i = from;; i++) {
      while (i >= got_.size()) {
        auto left = std::chrono::duration_cast<milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !ReceiveOne(static_cast<int>(left.count()))) return -1;
      }
      if (got_[i].Has(assignment)) return static_cast<int>(i);
    }
  }
  const std::vector<Notification>& got() const { return got_; }
  std::string Dump() const {
    std::string s;
    for (const auto& n : got_) s += "[" + std::to_string(n.pid) + "] " + n.text + "\n---\n";
    return s;
  }

 private:
  bool ReceiveOne(int timeout_ms) {
    struct pollfd pfd = {fd_.get(), POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return false;
    char buf[4096];
    struct iovec iov = {buf, sizeof buf};
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(struct ucred))];
    struct msghdr mh {};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd_.get(), &mh, MSG_CMSG_CLOEXEC);
    if (n < 0) return false;
    Notification note;
    note.text.assign(buf, static_cast<size_t>(n));
    while (!note.text.empty() && note.text.back() == '\n') note.text.pop_back();
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        struct ucred cred;
        memcpy(&cred, CMSG_DATA(c), sizeof cred);
        note.pid = cred.pid;
      }
    }
    got_.push_back(std::move(note));
    return true;
  }

  TempDir dir_;
  std::string path_;
  UniqueFd fd_;
  std::vector<Notification> got_;
};

class SystemdTest : public QueueFixture {
 protected:
  // The whole life: start, reload, refused reload, stop; every message
  // from the master.
  void Lifecycle(DaemonOptions o) {
    NotifySocket sock;
    o.env.push_back(sock.env());
    Daemon d(o);
    ASSERT_TRUE(d.Start());
    const pid_t master = d.pid();  // -1 once it is reaped

    int ready = sock.WaitFor("READY=1");
    ASSERT_GE(ready, 0) << sock.Dump() << d.Log();
    // Sent once the master has both workers: it logged their start first.
    std::string log = d.Log();
    EXPECT_NE(log.find("worker 1 started"), std::string::npos) << log;
    EXPECT_NE(log.find("worker 2 started"), std::string::npos) << log;
    EXPECT_GE(ChildrenOf(d.pid()).size(), 2u);
    EXPECT_NE(sock.got()[ready].Field("STATUS").find("2 workers"), std::string::npos) << sock.Dump();
    ASSERT_TRUE(d.WaitForWorkers(2)) << d.Log();
    // The workers run jobs while the socket is in the master's environment.
    Push("sd-ping", R"({"job":"ping"})");
    ASSERT_TRUE(WaitFor([&] { return Gone("sd-ping"); })) << d.Log();

    // Reload: RELOADING=1 (with MONOTONIC_USEC), then READY=1 once the new
    // generation is up.
    size_t before = sock.got().size();
    ASSERT_TRUE(d.Signal(SIGHUP));
    int reloading = sock.WaitFor("RELOADING=1", before);
    ASSERT_GE(reloading, 0) << sock.Dump() << d.Log();
    EXPECT_NE(sock.got()[reloading].Field("MONOTONIC_USEC"), "") << sock.Dump();
    int ready_again = sock.WaitFor("READY=1", static_cast<size_t>(reloading) + 1);
    ASSERT_GE(ready_again, 0) << sock.Dump() << d.Log();
    EXPECT_TRUE(d.WaitForLog("reloaded: generation 2")) << d.Log();
    EXPECT_NE(sock.got()[ready_again].Field("STATUS").find("generation 2"), std::string::npos)
        << sock.Dump();

    // A refused reload: READY=1 at once, the old generation goes on.
    std::string good = ReadFile(d.config_path());
    d.WriteConfig(good + "workers = \"many\";\n");
    before = sock.got().size();
    ASSERT_TRUE(d.Signal(SIGHUP));
    reloading = sock.WaitFor("RELOADING=1", before);
    ASSERT_GE(reloading, 0) << sock.Dump() << d.Log();
    ASSERT_GE(sock.WaitFor("READY=1", static_cast<size_t>(reloading) + 1), 0) << sock.Dump();
    EXPECT_TRUE(d.WaitForLog("keeping the running configuration")) << d.Log();
    d.WriteConfig(good);

    before = sock.got().size();
    ASSERT_TRUE(d.Signal(SIGTERM));
    ASSERT_GE(sock.WaitFor("STOPPING=1", before), 0) << sock.Dump() << d.Log();
    int status = d.Wait(seconds(30));
    ASSERT_TRUE(WIFEXITED(status)) << status;
    EXPECT_EQ(WEXITSTATUS(status), 0);

    // Only the master ever sent; never a worker.
    for (const auto& n : sock.got()) EXPECT_EQ(n.pid, master) << sock.Dump();
  }
};

// As systemd runs dist/systemd/djinn-consumer.service: the master is root,
// the workers drop to `user`.
TEST_F(SystemdTest, NotifiesReadyReloadingAndStoppingAsRootWithUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (workers drop to `user`)";
  DaemonOptions o = Opts(2);
  o.user = UnprivilegedUser().name;
  Lifecycle(o);
}

// As Djinn's own unit runs the binary: started as an unprivileged user.
TEST_F(SystemdTest, NotifiesReadyReloadingAndStoppingStartedUnprivileged) {
  DaemonOptions o = Opts(2);
  if (geteuid() == 0) o.run_as = &UnprivilegedUser();
  Lifecycle(o);
}

// WatchdogSec= in the unit: systemd sets WATCHDOG_USEC (and WATCHDOG_PID,
// left out here: sd_watchdog_enabled(3) then trusts it). The master pings
// at half the interval, from its loop.
TEST_F(SystemdTest, PingsTheWatchdogAtHalfItsInterval) {
  NotifySocket sock;
  DaemonOptions o = Opts(1);
  o.env = {sock.env(), "WATCHDOG_USEC=1000000"};
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  int first = sock.WaitFor("WATCHDOG=1");
  ASSERT_GE(first, 0) << sock.Dump() << d.Log();
  auto t0 = std::chrono::steady_clock::now();
  // Three more within 3 s: one every ~0.5 s.
  int last = first;
  for (int i = 0; i < 3; i++) {
    last = sock.WaitFor("WATCHDOG=1", static_cast<size_t>(last) + 1, seconds(3));
    ASSERT_GE(last, 0) << sock.Dump();
  }
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(elapsed, milliseconds(1200));  // not every tick (200 ms)
  EXPECT_LE(elapsed, milliseconds(2900));
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  for (const auto& n : sock.got()) EXPECT_EQ(n.pid, d.pid()) << sock.Dump();
  EXPECT_EQ(d.Stop(), 0);
}

// A watchdog meant for another process (WATCHDOG_PID not ours): no pings,
// but readiness as usual. (Were it pinged, the first ping would come before
// READY=1: the loop pings first.)
TEST_F(SystemdTest, WatchdogForAnotherPidIsNotPinged) {
  NotifySocket sock;
  DaemonOptions o = Opts(1);
  o.env = {sock.env(), "WATCHDOG_USEC=200000", "WATCHDOG_PID=1"};
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_GE(sock.WaitFor("READY=1"), 0) << sock.Dump() << d.Log();
  size_t before = sock.got().size();
  ASSERT_TRUE(d.Signal(SIGTERM));
  ASSERT_GE(sock.WaitFor("STOPPING=1", before), 0) << sock.Dump();
  EXPECT_TRUE(WIFEXITED(d.Wait(seconds(30))));
  for (const auto& n : sock.got()) EXPECT_FALSE(n.Has("WATCHDOG=1")) << sock.Dump();
}

// `systemctl stop` right after READY=1: the workers were forked a moment
// ago, some maybe before they had their own signal handlers; SIGTERM still
// stops them at once (it used to wait for shutdown_timeout, then kill).
TEST_F(SystemdTest, StopRightAfterReadyIsPrompt) {
  NotifySocket sock;
  DaemonOptions o = Opts(4);
  o.shutdown_timeout = 30;
  o.env = {sock.env()};
  Daemon d(o);
  ASSERT_TRUE(d.Start());
  ASSERT_GE(sock.WaitFor("READY=1"), 0) << sock.Dump() << d.Log();
  ASSERT_TRUE(d.Signal(SIGTERM));
  int status = d.Wait(seconds(10));
  ASSERT_TRUE(WIFEXITED(status)) << d.Log();
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(d.Log().find("did not stop in time"), std::string::npos) << d.Log();
}

// Without NOTIFY_SOCKET (by hand, SysVinit) nothing is sent and nothing is
// logged about it.
TEST_F(SystemdTest, WithoutNotifySocketNothingIsSaidAboutIt) {
  Daemon d(Opts(1));
  ASSERT_TRUE(d.Start());
  ASSERT_TRUE(d.WaitForWorkers(1)) << d.Log();
  EXPECT_EQ(d.Stop(), 0);
  EXPECT_EQ(d.Log().find("sd_notify"), std::string::npos) << d.Log();
}

}  // namespace
}  // namespace djinn::testing
