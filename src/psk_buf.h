/*
 * psk_buf: a bounded, growable byte buffer.
 *
 * Plain C99: no Lua, no libcurl. Appending past the cap fails with
 * PSK_TOO_LARGE instead of growing, so a hostile server cannot make a
 * response eat the host's memory; allocation failure is PSK_NOMEM. Nothing
 * here aborts or raises.
 */
#ifndef PSK_BUF_H
#define PSK_BUF_H

#include <stddef.h>

enum {
  PSK_OK = 0,
  PSK_INVALID = 1,   /* input breaks a rule; see psk_err */
  PSK_TOO_LARGE = 2, /* a bound was reached */
  PSK_NOMEM = 3      /* malloc/realloc failed */
};

typedef struct psk_buf {
  char *data;  /* NULL until the first append, then NUL-terminated */
  size_t len;
  size_t size; /* bytes allocated */
  size_t cap;  /* most bytes it may hold */
} psk_buf;

void psk_buf_init(psk_buf *b, size_t cap);
/* Appends n bytes; PSK_OK, PSK_TOO_LARGE (nothing appended) or PSK_NOMEM. */
int psk_buf_append(psk_buf *b, const char *p, size_t n);
int psk_buf_addstr(psk_buf *b, const char *s);
/* Forgets the content, keeps the memory for the next use. */
void psk_buf_clear(psk_buf *b);
/* The content as a C string ("" when empty); never NULL. */
const char *psk_buf_cstr(const psk_buf *b);
/* Releases the memory; safe to call twice. */
void psk_buf_free(psk_buf *b);

#endif
