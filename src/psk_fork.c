/* psk_fork: fork detection without getpid() per call (see psk_fork.h). */
#define _POSIX_C_SOURCE 200809L
#include "psk_fork.h"

#include <pthread.h>
#include <unistd.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static volatile unsigned long fork_count; /* bumped in every child */
static int watched;                       /* the handler is in place */

static void count_fork(void) { fork_count++; }
static void watch(void) {
  watched = pthread_atfork(NULL, NULL, count_fork) == 0;
}

void psk_owner_set(psk_owner *o) {
  pthread_once(&once, watch);
  o->pid = getpid();
  o->forks = fork_count;
}

int psk_owner_other(psk_owner *o) {
  if (watched && o->forks == fork_count) return 0;
  if (o->pid != getpid()) return 1;
  o->forks = fork_count;
  return 0;
}
