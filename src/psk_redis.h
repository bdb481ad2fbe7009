/*
 * psk_redis: the Redis store of shared pacing, over hiredis.
 *
 * It does one thing: compare-and-set a short value with a Lua script that
 * Redis runs atomically, so two processes (or two hosts) never both commit
 * a change made from the same old value. In two layers:
 *
 *   - psk_redis_x, one exchange, sans-I/O: it hands out the bytes to send
 *     and takes the bytes received, saying when it needs more. hiredis
 *     formats the commands (redisFormatCommandArgv) and parses the replies
 *     (redisReader); every byte is first shown to psk_resp, which refuses
 *     a reply larger than this protocol needs before hiredis allocates for
 *     it. Any host can move the bytes: a socket of ours (below), nginx's
 *     cosockets.
 *   - psk_redis_cas, the blocking driver: its own non-blocking socket and
 *     poll(), under one deadline for the whole call (connect included).
 *
 * No Lua here, no libcurl; error texts never hold the password.
 */
#ifndef PSK_REDIS_H
#define PSK_REDIS_H

#include <stddef.h>

typedef struct psk_redis psk_redis;

/* 1 when built with hiredis (PSK_HAVE_HIREDIS defined); 0 when not, and
   then the functions below are stubs: new returns NULL, cas fails. */
int psk_redis_available(void);

/* Where and how to reach the store: copies host and password (NULL:
   none). NULL when out of memory. timeout (seconds) bounds each
   psk_redis_cas call. */
psk_redis *psk_redis_new(const char *host, int port, const char *password,
                         int db, double timeout);
/* Closes the blocking driver's connection (if any) and frees r. */
void psk_redis_free(psk_redis *r);

enum {
  PSK_REDIS_MORE = 2,     /* an exchange needs more bytes (psk_redis_x) */
  PSK_REDIS_SET = 1,      /* the value was `expected`; now it is `desired` */
  PSK_REDIS_CHANGED = 0,  /* it was not: the stored value is in cur */
  PSK_REDIS_FAILED = -1   /* the store failed: err says how */
};

/* ---------------------------------------------------------------- */
/* One exchange, sans-I/O                                            */

/* One compare-and-set over one connection, which the caller owns:
 *
 *   x = psk_redis_x_new();                       once; reused
 *   rc = psk_redis_x_begin(x, r, fresh, name, expected, desired, ttl_ms);
 *   while (rc == PSK_REDIS_MORE) {
 *     psk_redis_x_output(x, &bytes, &len);       send all len bytes (0: none)
 *     ...read what has come (at least 1 byte)...
 *     rc = psk_redis_x_feed(x, got, n);
 *   }
 *   SET: done. CHANGED: psk_redis_x_value. FAILED: psk_redis_x_error; then
 *   close the connection unless psk_redis_x_reusable(x) says it may serve
 *   the next exchange.
 *
 * fresh is 1 on a connection that has carried nothing yet: the exchange
 * then sends the connection's setup first, pipelined with its command
 * (AUTH when r has a password, SELECT when its db is not 0, SCRIPT LOAD
 * of the compare-and-set script, EVALSHA), one round trip in all. On a
 * connection kept from an earlier exchange it sends EVALSHA alone. When
 * Redis has lost the script (NOSCRIPT: SCRIPT FLUSH, a failover), a feed
 * returns PSK_REDIS_MORE with SCRIPT LOAD and EVALSHA to send (once per
 * exchange), so output is asked again after every feed.
 *
 * The exchange never reads a clock: the driver bounds it (the whole of
 * it, connect included: psk_redis_cas's timeout), and on a timeout or an
 * I/O error calls psk_redis_x_fail, then closes the connection. A reply
 * larger than the protocol needs (an array of more than 2 elements, a
 * string longer than a stored budget can be, a line longer than 1 KB,
 * anything after the replies waited for) fails the exchange at its
 * header: "reply too large". Memory stays bounded by those limits,
 * whatever the server sends. */
typedef struct psk_redis_x psk_redis_x;

/* NULL when out of memory. */
psk_redis_x *psk_redis_x_new(void);
void psk_redis_x_free(psk_redis_x *x);

/* Starts an exchange on r (which must outlive it): if the value stored
   at name is `expected` ("" for none), store `desired`, kept ttl_ms;
   else say what is stored. The strings are copied (formatted) at once.
   Forgets whatever an earlier exchange left. PSK_REDIS_MORE, or
   PSK_REDIS_FAILED (out of memory). */
int psk_redis_x_begin(psk_redis_x *x, const psk_redis *r, int fresh,
                      const char *name, const char *expected,
                      const char *desired, long ttl_ms);
/* The bytes to send now, in order, before the next feed; *len is 0 when
   there are none. They count as handed out: the next call gives the
   bytes that follow, if any. The pointer stays valid until the next
   begin, feed or free. */
void psk_redis_x_output(psk_redis_x *x, const char **bytes, size_t *len);
/* Takes len bytes from the server (len > 0). PSK_REDIS_MORE (send any
   output, then read and feed more), PSK_REDIS_SET, PSK_REDIS_CHANGED or
   PSK_REDIS_FAILED. After a result, further feeds return it again. */
int psk_redis_x_feed(psk_redis_x *x, const char *bytes, size_t len);
/* The driver's own failure (what: "timed out", a strerror, "the server
   closed the connection"), written as the exchange's error; returns
   PSK_REDIS_FAILED. */
int psk_redis_x_fail(psk_redis_x *x, const char *what);
/* After CHANGED: the value stored now, NUL-terminated, *len its length
   (len may be NULL). */
const char *psk_redis_x_value(const psk_redis_x *x, size_t *len);
/* After FAILED: "redis host:port: what failed", never the password. */
const char *psk_redis_x_error(const psk_redis_x *x);
/* 1 when the connection is in step for another exchange: after SET and
   CHANGED, and after a FAILED that read its whole reply (the stored value
   is not a budget). 0 otherwise: close it. */
int psk_redis_x_reusable(const psk_redis_x *x);

/* ---------------------------------------------------------------- */
/* The blocking driver                                               */

/* psk_redis_x over a connection of r's own, opened on first use and kept
   while it stays in step: one call waits until `deadline` at most
   (psk_time_mono(); the caller's, so that several calls of one store
   operation share r's timeout), whatever the store sends, connect
   included (a non-blocking connect;
   a host name is resolved by getaddrinfo first, which the timeout does
   not bound: a numeric address, like the default 127.0.0.1, is not looked
   up). After a failure the connection is closed; the next call opens a
   new one, as does the first call in a child after fork(). SIGPIPE is
   never raised (MSG_NOSIGNAL).

   If the value stored at name is `expected` ("" for none), stores
   `desired` (kept ttl_ms) and returns PSK_REDIS_SET; else copies the
   stored value into cur (cur_cap bytes, NUL-terminated; *cur_len its
   length) and returns PSK_REDIS_CHANGED. */
int psk_redis_cas(psk_redis *r, double deadline, const char *name,
                  const char *expected,
                  const char *desired, long ttl_ms, char *cur, size_t cur_cap,
                  size_t *cur_len, char *err, size_t err_cap);

#endif
