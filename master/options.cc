#include "master/options.h"

#include <sys/utsname.h>

#include <algorithm>
#include <charconv>

namespace djinn {
namespace {

// "-name", "--name", "-name=value": the name, and the value when given.
bool SplitFlag(const std::string& arg, std::string* name, std::string* value) {
  *name = arg.substr(arg[1] == '-' ? 2 : 1);
  value->clear();
  auto eq = name->find('=');
  if (eq == std::string::npos) return false;
  *value = name->substr(eq + 1);
  name->resize(eq);
  return true;
}

bool IsCommand(const std::string& name, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

// args[at] names the command; its flags and IDs follow. Go's flag style:
// "-n 5" or "-n=5", one or two dashes; "--" ends the flags.
bool ParseCommand(const std::vector<std::string>& args, size_t at, Options* opts,
                  std::string* error) {
  const std::string& cmd = args[at];
  if (std::find(kCommands.begin(), kCommands.end(), cmd) == kCommands.end()) {
    *error = "unknown command \"" + cmd + "\"";
    return false;
  }
  opts->command = cmd;
  bool takes_ids = IsCommand(cmd, {"retry", "purge"});
  bool flags_done = false;
  for (size_t i = at + 1; i < args.size(); i++) {
    const std::string& a = args[i];
    if (!flags_done && a == "--") {
      flags_done = true;
      continue;
    }
    if (flags_done || a.size() < 2 || a[0] != '-') {
      if (!takes_ids) {
        *error = cmd + ": unexpected argument \"" + a + "\"";
        return false;
      }
      opts->ids.push_back(a);
      continue;
    }
    std::string name, value;
    bool has_value = SplitFlag(a, &name, &value);
    if (name == "n" && cmd == "dead") {
      if (!has_value) {
        if (i + 1 >= args.size()) {
          *error = "dead: flag needs an argument: -n";
          return false;
        }
        value = args[++i];
      }
      int64_t n = -1;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size() || n < 0) {
        *error = "dead: -n: expected a number >= 0 (got \"" + value + "\")";
        return false;
      }
      opts->limit = n;
    } else if (has_value) {
      *error = cmd + ": flag -" + name + " takes no value";
      return false;
    } else if (name == "json" && IsCommand(cmd, {"status", "queue", "dead"})) {
      opts->json = true;
    } else if (name == "all" && takes_ids) {
      opts->all = true;
    } else {
      *error = cmd + ": unknown flag -" + name;
      return false;
    }
  }
  if (takes_ids && opts->all && !opts->ids.empty()) {
    *error = cmd + ": give job IDs or -all, not both";
    return false;
  }
  if (takes_ids && !opts->all && opts->ids.empty()) {
    *error = cmd + ": give job IDs or -all";
    return false;
  }
  return true;
}

}  // namespace

bool ParseOptions(const std::vector<std::string>& args, Options* opts, std::string* error) {
  for (size_t i = 0; i < args.size(); i++) {
    std::string a = args[i];
    if (a.size() < 2 || a[0] != '-') {
      if (!ParseCommand(args, i, opts, error)) return false;
      break;
    }
    std::string name, value;
    bool has_value = SplitFlag(a, &name, &value);
    if (name == "config") {
      if (!has_value) {
        if (i + 1 >= args.size()) {
          *error = "flag needs an argument: -config";
          return false;
        }
        value = args[++i];
      }
      if (value.empty()) {
        *error = "-config: empty file name";
        return false;
      }
      opts->config = value;
    } else if (has_value) {
      *error = "flag -" + name + " takes no value";
      return false;
    } else if (name == "t") {
      opts->test = true;
    } else if (name == "print") {
      opts->print = true;
    } else if (name == "version") {
      opts->version = true;
    } else if (name == "h" || name == "help") {
      opts->help = true;
    } else {
      *error = "unknown flag -" + name;
      return false;
    }
  }
  if (opts->print && !opts->test) {
    *error = "-print goes with -t";
    return false;
  }
  if (opts->test && !opts->command.empty()) {
    *error = "-t does not go with a command";
    return false;
  }
  return true;
}

std::string Usage() {
  return "usage: djinn-consumer [-config FILE] [-t [-print]] [-version] [-h]\n"
         "       djinn-consumer [-config FILE] COMMAND [ARGS]\n"
         "  -config FILE  configuration file (default djinn-consumer.conf), in\n"
         "                libconfig syntax or Djinn's own syntax\n"
         "  -t            check the configuration and exit (0 valid, 1 invalid)\n"
         "  -print        with -t: print the effective configuration in libconfig\n"
         "                syntax, secrets redacted\n"
         "  -version      print the version and exit\n"
         "  -h            print this help and exit\n"
         "commands (djinn-consumer [-config FILE] COMMAND ...), see djinn-consumer(8):\n"
         "  status [-json]         the running master and its workers\n"
         "  queue [-json]          queue counts and consumers\n"
         "  dead [-n N] [-json]    dead jobs, newest first (N = 0: all; default 20)\n"
         "  retry ID... | -all     dead jobs back to the queue, attempts reset\n"
         "  purge ID... | -all     dead jobs removed\n";
}

std::string VersionString() {
  struct utsname u;
  std::string platform = uname(&u) == 0 ? std::string(u.sysname) + "/" + u.machine : "unknown";
  return std::string("djinn-consumer ") + DJINN_VERSION + " " + platform;
}

}  // namespace djinn
