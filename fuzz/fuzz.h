/*
 * fuzz.h: what the libFuzzer harnesses in fuzz/ share. Each harness feeds
 * the pure core (psk_core, psk_buf) only: no Lua, no libcurl, so a run
 * explores parsing and validation at millions of inputs a minute.
 *
 * An invariant that breaks prints what broke and aborts: libFuzzer takes
 * the abort as a crash and saves the input (make fuzz writes it under
 * build/fuzz/). ASan and UBSan, linked in by make fuzz, catch the rest.
 */
#ifndef PSK_FUZZ_H
#define PSK_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psk_buf.h"
#include "psk_core.h"

/* Not assert(): it must hold in every build, NDEBUG or not. */
#define FUZZ_CHECK(cond)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, \
              #cond);                                                     \
      abort();                                                            \
    }                                                                     \
  } while (0)

/* The core's own definition of a control byte (psk_core.c is_ctl). */
static inline int fz_is_ctl(unsigned char c) { return c < 0x20 || c == 0x7f; }

static inline int fz_has_ctl(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (fz_is_ctl((unsigned char)s[i])) return 1;
  return 0;
}

static inline int fz_is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static inline int fz_is_alnum(unsigned char c) {
  return fz_is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* An exact-length heap copy without a NUL: a read past n is an ASan
   report, not a silent read of libFuzzer's padding. Never NULL. */
static inline char *fz_dup(const uint8_t *p, size_t n) {
  char *d = malloc(n ? n : 1);
  if (!d) abort();
  if (n) memcpy(d, p, n);
  return d;
}

/* strdup is POSIX, not C99; never NULL. */
static inline char *fz_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (!d) abort();
  memcpy(d, s, n);
  return d;
}

#endif
