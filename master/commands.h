// Operator commands, run instead of the daemon when the command line names
// one (master/options.h): status, queue, dead, retry, purge. See
// djinn-consumer(8) COMMANDS.
//
//   status  asks the running master through its control socket
//           (master/control.h); read-only.
//   queue, dead
//           read the queue's keys in Redis (CurlyQueue::Overview,
//           ListDead); read-only.
//   retry, purge
//           move dead jobs, one atomic Lua script per job
//           (CurlyQueue::RetryDead, PurgeDead). An ID that is not dead is
//           an error on standard error; the other IDs still go through.
//
// Output: a plain aligned table on standard output, or with -json one JSON
// document. Returns the exit code: 0 done, 1 an error (Redis unreachable,
// the master unreachable, any ID that failed).
#ifndef DJINN_MASTER_COMMANDS_H_
#define DJINN_MASTER_COMMANDS_H_

#include <cstdint>
#include <string>

#include "common/config.h"
#include "master/options.h"

namespace djinn {

int RunOperatorCommand(const Options& opts, const Config& config);

// "45s", "3m07s", "2h05m", "3d04h": a duration for a table.
std::string HumanDuration(int64_t seconds);

}  // namespace djinn

#endif  // DJINN_MASTER_COMMANDS_H_
