#include "common/proctitle.h"

#include <unistd.h>

#include <cstdlib>
#include <algorithm>
#include <cstring>

extern char** environ;

namespace djinn {
namespace {
char* title_start = nullptr;
size_t title_space = 0;
}  // namespace

void ProcTitleInit(int argc, char** argv) {
  if (argc <= 0 || !argv || !argv[0]) return;
  // argv strings and then environ strings are contiguous in memory; find
  // the end of that region and copy the environment elsewhere.
  char* end = argv[0] + std::strlen(argv[0]) + 1;
  for (int i = 1; i < argc; i++)
    if (argv[i] == end) end = argv[i] + std::strlen(argv[i]) + 1;
  size_t n = 0;
  while (environ[n]) n++;
  char** new_env = static_cast<char**>(std::calloc(n + 1, sizeof(char*)));
  if (!new_env) return;
  for (size_t i = 0; i < n; i++) {
    if (environ[i] == end) end = environ[i] + std::strlen(environ[i]) + 1;
    new_env[i] = strdup(environ[i]);
  }
  environ = new_env;  // intentionally never freed: lives as long as the process
  // argv[1..] stay readable through copies the caller made already.
  title_start = argv[0];
  title_space = static_cast<size_t>(end - argv[0]);
  for (int i = 1; i < argc; i++) argv[i] = nullptr;
}

void SetProcTitle(std::string_view title) {
  if (!title_start || title_space < 2) return;
  size_t n = std::min(title.size(), title_space - 1);
  std::memcpy(title_start, title.data(), n);
  std::memset(title_start + n, 0, title_space - n);
}

}  // namespace djinn
