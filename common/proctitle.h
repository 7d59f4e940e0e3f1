// Process titles as ps shows them ("djinn-consumer: worker 2 idle").
// ProcTitleInit() must be called once in main() with the original argv
// before anything reads argv or environ again: it moves the environment out
// of the way so the title may use that space (as nginx's ngx_setproctitle).
#ifndef DJINN_COMMON_PROCTITLE_H_
#define DJINN_COMMON_PROCTITLE_H_

#include <string_view>

namespace djinn {

void ProcTitleInit(int argc, char** argv);
// Sets the title; truncated to the space available. Cheap (no syscall
// unless the short name changes): fine to call per job.
void SetProcTitle(std::string_view title);

}  // namespace djinn

#endif  // DJINN_COMMON_PROCTITLE_H_
