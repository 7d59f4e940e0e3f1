// djinn-consumer: the master process. Parses the command line, loads the
// configuration and runs the supervisor (master/supervisor.h), which forks
// the workers (worker/worker.h). Start reading there.
#include <cstdio>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "common/proctitle.h"
#include "master/commands.h"
#include "master/options.h"
#include "master/supervisor.h"

int main(int argc, char** argv) {
  using namespace djinn;  // NOLINT: main only
  std::vector<std::string> args(argv + 1, argv + argc);
  ProcTitleInit(argc, argv);
  Options opts;
  std::string error;
  if (!ParseOptions(args, &opts, &error)) {
    fprintf(stderr, "djinn-consumer: %s\n%s", error.c_str(), Usage().c_str());
    return kExitUsage;
  }
  if (opts.help) {
    fputs(Usage().c_str(), stdout);
    return kExitOk;
  }
  if (opts.version) {
    printf("%s\n", VersionString().c_str());
    return kExitOk;
  }
  auto config = LoadConfig(opts.config);
  if (!config.ok()) {
    fprintf(stderr, "djinn-consumer: %s\n", config.status().message().c_str());
    return kExitFailure;
  }
  if (!opts.command.empty()) return RunOperatorCommand(opts, *config);
  if (opts.test) {
    for (const auto& w : config->warnings) fprintf(stderr, "djinn-consumer: warning: %s\n", w.c_str());
    if (opts.print) fputs(FormatConfig(*config).c_str(), stdout);
    else printf("djinn-consumer: configuration %s is valid\n", opts.config.c_str());
    return kExitOk;
  }
  for (const std::string& secret : ConfigSecrets(*config)) Log::AddSecret(secret);
  Log::SetFormat(config->log_format);
  if (Status st = Log::Init(config->log_level, config->log_file, "master"); !st.ok()) {
    fprintf(stderr, "djinn-consumer: %s\n", st.message().c_str());
    return kExitFailure;
  }
  for (const auto& w : config->warnings) LOG_WARN("config: %s", w.c_str());
  Supervisor supervisor(std::move(*config));
  return supervisor.Run();
}
