// The Go-produced job vectors (tests/data/vectors, a copy of the shared
// set; see its README). Found under $DJINN_TEST_DATA, else tests/data
// relative to the current directory (the tests run from the repo root).
#ifndef DJINN_TESTS_HARNESS_VECTORS_H_
#define DJINN_TESTS_HARNESS_VECTORS_H_

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace djinn::testing {

inline std::string ReadVector(const std::string& name) {
  const char* dir = std::getenv("DJINN_TEST_DATA");
  const std::string path = std::string(dir ? dir : "tests/data") + "/vectors/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// cases.json's "cases" array (empty, with a test failure, if unreadable).
inline nlohmann::json VectorCases() {
  nlohmann::json doc = nlohmann::json::parse(ReadVector("cases.json"), nullptr, false);
  EXPECT_TRUE(doc.is_object()) << "cases.json does not parse";
  return doc.is_object() ? doc["cases"] : nlohmann::json::array();
}

}  // namespace djinn::testing

#endif  // DJINN_TESTS_HARNESS_VECTORS_H_
