// make install / make uninstall (mk/install.mk) into a DESTDIR: the tree,
// the paths rewritten for PREFIX and SYSCONFDIR, an existing config kept,
// and uninstall removing all but the config. Runs from the repository root.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "tests/harness/harness.h"

namespace djinn::testing {
namespace {

// The files install puts under DESTDIR for PREFIX=/usr, SYSCONFDIR=/etc,
// and their modes. The config is not among them (it is only created).
struct Installed {
  const char* path;
  int mode;
};
constexpr Installed kFiles[] = {
    {"/usr/sbin/djinn-consumer", 0755},
    {"/usr/share/man/man8/djinn-consumer.8", 0644},
    {"/usr/share/man/man5/djinn-consumer.conf.5", 0644},
    {"/usr/share/doc/djinn-consumer/djinn-consumer.conf.sample", 0644},
    {"/usr/lib/systemd/system/djinn-consumer.service", 0644},
    {"/etc/init.d/djinn-consumer", 0755},
    {"/etc/logrotate.d/djinn-consumer", 0644},
};
constexpr char kConfig[] = "/etc/djinn/consumer.conf";

int Mode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
}

// Runs make with args from the repository root; a make that runs the tests
// (make test) must not hand its jobserver or flags down.
int Make(const std::vector<std::string>& args, std::string* out) {
  std::vector<std::string> argv = {"env"};
  for (const char* var : {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}) argv.insert(argv.end(), {"-u", var});
  argv.insert(argv.end(), {"make", "--no-print-directory"});
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, out);
}

class InstallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(FileExists("mk/install.mk")) << "run the tests from the repository root";
    ASSERT_TRUE(FileExists(ConsumerBinary())) << ConsumerBinary() << ": build it first";
  }
  // make install|uninstall DESTDIR=dest PREFIX=/usr, plus extra variables.
  void Run(const std::string& target, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {target, "DESTDIR=" + dest_.path(), "PREFIX=/usr",
                                     "INSTALL_BIN=" + ConsumerBinary()};
    args.insert(args.end(), extra.begin(), extra.end());
    ASSERT_EQ(Make(args, &out_), 0) << "make " << target << ":\n" << out_;
  }
  std::string At(const std::string& path) const { return dest_.path() + path; }

  TempDir dest_{"djinn-install"};
  std::string out_;
};

TEST_F(InstallTest, InstallPutsEveryFileInPlace) {
  Run("install");
  ASSERT_TRUE(FileExists(At("/usr/sbin/djinn-consumer")))
      << "make install installed nothing; is mk/install.mk included by the Makefile?\n"
      << out_;
  for (const auto& f : kFiles) {
    EXPECT_TRUE(FileExists(At(f.path))) << f.path;
    EXPECT_EQ(Mode(At(f.path)), f.mode) << f.path;
  }
  EXPECT_EQ(Sha256Hex(ReadFile(At("/usr/sbin/djinn-consumer"))),
            Sha256Hex(ReadFile(ConsumerBinary())));
  // Fresh config from the sample, not readable by others (it may hold a password).
  EXPECT_EQ(ReadFile(At(kConfig)), ReadFile("etc/djinn-consumer.conf"));
  EXPECT_EQ(Mode(At(kConfig)), 0640);
  EXPECT_EQ(ReadFile(At("/usr/share/doc/djinn-consumer/djinn-consumer.conf.sample")),
            ReadFile("etc/djinn-consumer.conf"));
  // PREFIX=/usr, SYSCONFDIR=/etc are the paths the shipped files name:
  // nothing to rewrite.
  EXPECT_EQ(ReadFile(At("/usr/share/man/man8/djinn-consumer.8")), ReadFile("man/djinn-consumer.8"));
  EXPECT_EQ(ReadFile(At("/usr/share/man/man5/djinn-consumer.conf.5")),
            ReadFile("man/djinn-consumer.conf.5"));
  EXPECT_EQ(ReadFile(At("/usr/lib/systemd/system/djinn-consumer.service")),
            ReadFile("dist/systemd/djinn-consumer.service"));
  EXPECT_EQ(ReadFile(At("/etc/init.d/djinn-consumer")), ReadFile("dist/sysvinit/djinn-consumer"));
  EXPECT_EQ(ReadFile(At("/etc/logrotate.d/djinn-consumer")),
            ReadFile("dist/logrotate/djinn-consumer"));
}

TEST_F(InstallTest, InstalledBinaryChecksTheInstalledConfig) {
  Run("install");
  std::string out;
  // The sample is valid as shipped (-t checks users; the sample sets none).
  EXPECT_EQ(RunCommand({At("/usr/sbin/djinn-consumer"), "-t", "-config", At(kConfig)}, &out), 0)
      << out;
}

TEST_F(InstallTest, InstallRewritesPathsForPrefixAndSysconfdir) {
  std::vector<std::string> vars = {"PREFIX=/opt/djinn", "SYSCONFDIR=/etc/opt/djinn"};
  Run("install", vars);
  std::string unit = ReadFile(At("/opt/djinn/lib/systemd/system/djinn-consumer.service"));
  EXPECT_NE(unit.find("\nExecStart=/opt/djinn/sbin/djinn-consumer -config "
                      "/etc/opt/djinn/djinn/consumer.conf\n"),
            std::string::npos)
      << unit;
  EXPECT_EQ(unit.find("/usr/sbin/"), std::string::npos) << unit;
  std::string init = ReadFile(At("/etc/opt/djinn/init.d/djinn-consumer"));
  EXPECT_NE(init.find("\nDAEMON=/opt/djinn/sbin/djinn-consumer\n"), std::string::npos) << init;
  EXPECT_NE(init.find("\nCONFIG=/etc/opt/djinn/djinn/consumer.conf\n"), std::string::npos) << init;
  EXPECT_NE(init.find("/etc/opt/djinn/default/djinn-consumer"), std::string::npos) << init;
  std::string man8 = ReadFile(At("/opt/djinn/share/man/man8/djinn-consumer.8"));
  EXPECT_NE(man8.find("\n.I /etc/opt/djinn/djinn/consumer.conf\n"), std::string::npos);
  EXPECT_NE(man8.find("\n.I /opt/djinn/lib/systemd/system/djinn-consumer.service\n"),
            std::string::npos);
  EXPECT_TRUE(FileExists(At("/etc/opt/djinn/djinn/consumer.conf")));
  EXPECT_TRUE(FileExists(At("/opt/djinn/share/doc/djinn-consumer/djinn-consumer.conf.sample")));
  EXPECT_TRUE(FileExists(At("/etc/opt/djinn/logrotate.d/djinn-consumer")));
}

TEST_F(InstallTest, InstallNeverOverwritesAnExistingConfig) {
  Run("install");
  const std::string mine = "# the operator's own configuration\n";
  WriteFile(At(kConfig), mine, 0600);
  Run("install");
  EXPECT_EQ(ReadFile(At(kConfig)), mine);
  EXPECT_EQ(Mode(At(kConfig)), 0600);
  EXPECT_NE(out_.find("keeping the existing"), std::string::npos) << out_;
  // The sample is refreshed all the same.
  EXPECT_EQ(ReadFile(At("/usr/share/doc/djinn-consumer/djinn-consumer.conf.sample")),
            ReadFile("etc/djinn-consumer.conf"));
}

TEST_F(InstallTest, UninstallRemovesAllButTheConfig) {
  Run("install");
  const std::string mine = "# edited\n";
  WriteFile(At(kConfig), mine, 0640);
  Run("uninstall");
  for (const auto& f : kFiles) EXPECT_FALSE(FileExists(At(f.path))) << f.path << " is still there";
  EXPECT_FALSE(FileExists(At("/usr/share/doc/djinn-consumer")))
      << "the doc directory is still there";
  EXPECT_EQ(ReadFile(At(kConfig)), mine);
}

TEST_F(InstallTest, UninstallOfNothingSucceeds) { Run("uninstall"); }

}  // namespace
}  // namespace djinn::testing
