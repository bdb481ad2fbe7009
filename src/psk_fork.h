/*
 * psk_fork: whether handles belong to this process or were inherited
 * through fork(), in plain C (POSIX), with neither Lua nor libcurl.
 *
 * A pthread_atfork child handler counts forks, so an owner that matches
 * the count is ours without asking getpid(), a system call that a check
 * on every pin would pay (bench/README.md measures both). getpid() is
 * asked only after a fork, or always if the handler could not be set.
 * glibc unregisters the handler when this shared object is unloaded.
 */
#ifndef PSK_FORK_H
#define PSK_FORK_H

#include <sys/types.h>

typedef struct psk_owner {
  pid_t pid;           /* the process that opened the handles */
  unsigned long forks; /* the fork count when pid was last found ours */
} psk_owner;

/* The handles are this process's, from now on. */
void psk_owner_set(psk_owner *o);
/* 1 when they belong to another process (we are a child of fork). */
int psk_owner_other(psk_owner *o);

#endif
