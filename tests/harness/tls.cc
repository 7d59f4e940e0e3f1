#include "tests/harness/tls.h"

#include <sys/stat.h>

#include <cstdio>
#include <random>
#include <vector>

#include "tests/harness/harness.h"

namespace djinn::testing {

namespace {

// Our own config so the result does not depend on the system openssl.cnf
// (whose [v3_ca] would add extensions twice next to -addext).
constexpr char kOpensslCnf[] = R"([req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
)";

// A random positive 63-bit serial, so two test CAs never issue look-alikes.
std::string RandomSerial() {
  std::random_device rd;
  unsigned long long v = (static_cast<unsigned long long>(rd()) << 32) | rd();
  v &= 0x7fffffffffffffffULL;
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016llx", v);
  return buf;
}

// A new unencrypted P-256 key, for `openssl req`.
const std::vector<std::string> kNewKey = {"-newkey", "ec", "-pkeyopt",
                                          "ec_paramgen_curve:prime256v1", "-nodes"};

bool Openssl(const std::vector<std::string>& args, std::string* error,
             const std::vector<std::string>& more = {}) {
  std::vector<std::string> argv = {"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), more.begin(), more.end());
  std::string out;
  int rc = Run(argv, &out);
  if (rc == 0) return true;
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  *error = "`" + cmd + "` exited " + std::to_string(rc) + ": " + out;
  return false;
}

// Key + CSR with subject cn, then signed by the CA with the given section.
bool IssueCert(const TestCerts& c, const std::string& cnf, const std::string& name,
               const std::string& cn, const std::string& ext, std::string* error) {
  std::string key = c.dir + "/" + name + ".key";
  std::string csr = c.dir + "/" + name + ".csr";
  std::string pem = c.dir + "/" + name + ".pem";
  bool ok =
      Openssl({"req", "-new", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn, "-config", cnf},
              error, kNewKey) &&
      Openssl({"x509", "-req", "-in", csr, "-CA", c.ca_cert, "-CAkey", c.ca_key, "-set_serial",
               RandomSerial(), "-days", "3650", "-extfile", cnf, "-extensions", ext, "-out", pem},
              error);
  std::remove(csr.c_str());
  chmod(key.c_str(), 0600);
  return ok;
}

}  // namespace

TestCerts GenerateTestCa(const std::string& dir, const std::string& client_cn) {
  TestCerts c;
  c.dir = dir;
  c.ca_cert = dir + "/ca.pem";
  c.ca_key = dir + "/ca.key";
  c.server_cert = dir + "/server.pem";
  c.server_key = dir + "/server.key";
  c.client_cert = dir + "/client.pem";
  c.client_key = dir + "/client.key";
  std::string cnf = dir + "/openssl.cnf";
  WriteFile(cnf, kOpensslCnf);
  if (!FileExists(cnf)) {
    c.error = "cannot write " + cnf;
    return c;
  }
  if (!Openssl(
          {"req", "-x509", "-keyout", c.ca_key, "-out", c.ca_cert, "-subj", "/CN=djinn test CA",
           "-days", "3650", "-set_serial", RandomSerial(), "-config", cnf, "-extensions", "ca_ext"},
          &c.error, kNewKey)) {
    return c;
  }
  chmod(c.ca_key.c_str(), 0600);
  if (!IssueCert(c, cnf, "server", "localhost", "server_ext", &c.error)) return c;
  IssueCert(c, cnf, "client", client_cn, "client_ext", &c.error);
  return c;
}

}  // namespace djinn::testing
