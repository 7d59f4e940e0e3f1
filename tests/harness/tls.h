// A throw-away certificate authority for TLS tests (HTTPS server, PostgreSQL
// with ssl=on, client certificates), made with the `openssl` command line.
#ifndef DJINN_TESTS_HARNESS_TLS_H_
#define DJINN_TESTS_HARNESS_TLS_H_

#include <string>

namespace djinn::testing {

// Paths of the PEM files GenerateTestCa wrote. Keys are unencrypted P-256
// keys (PKCS#8), mode 0600, owned by the caller.
struct TestCerts {
  std::string dir;
  std::string ca_cert;  // self-signed CA, CN "djinn test CA"
  std::string ca_key;
  std::string server_cert;  // CN localhost; SAN DNS:localhost, IP:127.0.0.1, IP:::1
  std::string server_key;
  std::string client_cert;  // CN = client_cn (a PostgreSQL role name works for cert auth)
  std::string client_key;
  std::string error;  // empty on success: what failed otherwise

  bool ok() const { return error.empty(); }
};

// Writes ca.pem, ca.key, server.pem, server.key, client.pem, client.key (and
// an openssl.cnf) into dir, which must exist. Two calls with different dirs
// give two unrelated CAs (for "wrong CA" tests). Takes ~50 ms. Never fails
// the test itself: check ok() / error.
TestCerts GenerateTestCa(const std::string& dir, const std::string& client_cn = "djinn_consumer");

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_TLS_H_
