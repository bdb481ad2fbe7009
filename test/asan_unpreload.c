/*
 * asan_unpreload: a constructor that removes LD_PRELOAD from the
 * environment; `make check-asan` preloads it after the ASan and UBSan
 * runtimes.
 *
 * The runtimes must be preloaded into the interpreter (it is not built
 * with the sanitizers; the module is), but the processes the specs start
 * must not inherit them: under a preloaded libasan, curl, nvim, sleep and
 * anything else that calls setlocale() at start-up hang for good on
 * glibc's locale lock (Debian 12: glibc 2.36, gcc 12), and nginx is not
 * ours to check. The loader has read LD_PRELOAD before any constructor
 * runs, so removing it here changes only what children inherit. A child
 * that needs the runtimes, a spec's own Lua process, is started through
 * PERISKOPE_LUA, a wrapper script that sets them again.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

__attribute__((constructor)) static void unpreload(void) {
  unsetenv("LD_PRELOAD");
}
