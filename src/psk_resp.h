/*
 * psk_resp: the size of Redis's replies (RESP2), checked on the bytes as
 * they arrive, before any parser allocates for them.
 *
 * Plain C99: no Lua, no libcurl, no hiredis. hiredis's reader (0.14, as
 * Debian has it) allocates an array of whatever `*N` says and buffers a
 * bulk string of whatever `$N` says; the Redis store (psk_redis) shows
 * every byte to this scanner first and hands the reader only bytes it
 * accepted. The scanner walks the reply's structure without keeping any
 * of it: each header (`*N`, `$N`) is refused as soon as its digits pass
 * the limit, before its line ends; a simple line (`+`, `-`, `:`) longer
 * than the limit is refused as it grows; and bytes past the replies the
 * caller waits for are refused too (a server answers what it was asked).
 * Its state is a few counters, whatever the input.
 */
#ifndef PSK_RESP_H
#define PSK_RESP_H

#include <stddef.h>

/* Arrays nested deeper than this are refused, whatever the limits say. */
#define PSK_RESP_DEPTH 4

typedef struct psk_resp_limits {
  size_t max_bulk;     /* longest bulk string ($N), in bytes */
  long max_elements;   /* longest array (*N) */
  int max_depth;       /* arrays inside arrays: 1 = arrays of scalars
                          only; at most PSK_RESP_DEPTH */
  size_t max_line;     /* longest line after the type byte, CRLF not
                          counted: a status, an error, an integer, or a
                          header's number */
} psk_resp_limits;

enum {
  PSK_RESP_OK = 0,        /* every byte accepted */
  PSK_RESP_TOO_LARGE = 1, /* a reply larger than the limits allow */
  PSK_RESP_BAD = 2,       /* not RESP2 */
  PSK_RESP_EXTRA = 3      /* bytes after the last reply waited for */
};

typedef struct psk_resp_scan {
  psk_resp_limits lim;
  int state;                     /* where in a reply the next byte falls */
  char type;                     /* the current line's type byte */
  size_t line;                   /* bytes of the current line so far */
  long long num;                 /* a header's number so far */
  int neg;                       /* it began with '-' */
  size_t bulk_left;              /* bytes of a bulk string still to come */
  long left[PSK_RESP_DEPTH];     /* elements still to come, per open array */
  int depth;                     /* open arrays */
  unsigned long waited;          /* replies the caller waits for */
  unsigned long done;            /* whole replies seen */
  int status;                    /* PSK_RESP_OK, or the error it stays in */
  const char *why;               /* after an error: what was wrong (static
                                    text, e.g. "an array of more than 2
                                    elements") */
} psk_resp_scan;

/* A scanner at the start of a reply, waiting for none (psk_resp_wait). */
void psk_resp_init(psk_resp_scan *s, const psk_resp_limits *lim);
/* n more replies will be waited for: commands were sent. */
void psk_resp_wait(psk_resp_scan *s, unsigned long n);
/* Checks len more bytes; PSK_RESP_OK, or the first error (then s->why
   says what; the scanner stays in error: every later call returns it). */
int psk_resp_feed(psk_resp_scan *s, const char *p, size_t len);

#endif
