// The command line: djinn-consumer [-config FILE] [-t [-print]] [-version] [-h]
//                   djinn-consumer [-config FILE] COMMAND [command flags] [IDs]
// Flags take one or two dashes, and "-config=FILE" as Go's flag package.
// The first argument that is not a flag names an operator command
// (master/commands.h); the command's own flags and IDs follow it.
#ifndef DJINN_MASTER_OPTIONS_H_
#define DJINN_MASTER_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace djinn {

struct Options {
  std::string config = "djinn-consumer.conf";
  bool test = false;     // -t: validate the config and exit
  bool print = false;    // -t -print: also print it in libconfig syntax
  bool version = false;
  bool help = false;
  // An operator command: "" runs the daemon; status, queue, dead, retry,
  // purge (kCommands).
  std::string command;
  bool json = false;              // status, queue, dead: -json
  int64_t limit = 20;             // dead: -n N (0: all)
  bool all = false;               // retry, purge: -all
  std::vector<std::string> ids;   // retry, purge: the job IDs
};

inline const std::vector<std::string> kCommands = {"status", "queue", "dead", "retry", "purge"};

// Returns false with *error set ("unknown flag -x") on bad usage.
bool ParseOptions(const std::vector<std::string>& args, Options* opts, std::string* error);
std::string Usage();
std::string VersionString();

}  // namespace djinn

#endif  // DJINN_MASTER_OPTIONS_H_
