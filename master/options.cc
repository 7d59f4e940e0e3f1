#include "master/options.h"

#include <sys/utsname.h>

namespace djinn {

bool ParseOptions(const std::vector<std::string>& args, Options* opts, std::string* error) {
  for (size_t i = 0; i < args.size(); i++) {
    std::string a = args[i];
    if (a.size() < 2 || a[0] != '-') {
      *error = "unexpected argument \"" + a + "\"";
      return false;
    }
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
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
  return true;
}

std::string Usage() {
  return "usage: djinn-consumer [-config FILE] [-t [-print]] [-version] [-h]\n"
         "  -config FILE  configuration file (default djinn-consumer.conf), in\n"
         "                libconfig syntax or Djinn's own syntax\n"
         "  -t            check the configuration and exit (0 valid, 1 invalid)\n"
         "  -print        with -t: print the effective configuration in libconfig\n"
         "                syntax, secrets redacted\n"
         "  -version      print the version and exit\n"
         "  -h            print this help and exit\n";
}

std::string VersionString() {
  struct utsname u;
  std::string platform = uname(&u) == 0 ? std::string(u.sysname) + "/" + u.machine : "unknown";
  return std::string("djinn-consumer ") + DJINN_VERSION + " " + platform;
}

}  // namespace djinn
