// The command line: djinn-consumer [-config FILE] [-t [-print]] [-version] [-h]
// Flags take one or two dashes, and "-config=FILE" as Go's flag package.
#ifndef DJINN_MASTER_OPTIONS_H_
#define DJINN_MASTER_OPTIONS_H_

#include <string>
#include <vector>

namespace djinn {

struct Options {
  std::string config = "djinn-consumer.conf";
  bool test = false;     // -t: validate the config and exit
  bool print = false;    // -t -print: also print it in libconfig syntax
  bool version = false;
  bool help = false;
};

// Returns false with *error set ("unknown flag -x") on bad usage.
bool ParseOptions(const std::vector<std::string>& args, Options* opts, std::string* error);
std::string Usage();
std::string VersionString();

}  // namespace djinn

#endif  // DJINN_MASTER_OPTIONS_H_
