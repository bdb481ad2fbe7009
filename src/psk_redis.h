/*
 * psk_redis: the Redis store of shared pacing, over hiredis.
 *
 * One blocking connection, opened on first use, with a timeout on connect
 * and on every command. It does one thing: compare-and-set a short value
 * with a Lua script that Redis runs atomically, so two processes (or two
 * hosts) never both commit a change made from the same old value. After a
 * failure the connection is dropped; the next call opens a new one. After
 * fork() the child opens its own.
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

/* Copies host and password (NULL: none). NULL when out of memory. */
psk_redis *psk_redis_new(const char *host, int port, const char *password,
                         int db, double timeout);
void psk_redis_free(psk_redis *r);

enum {
  PSK_REDIS_SET = 1,      /* the value was `expected`; now it is `desired` */
  PSK_REDIS_CHANGED = 0,  /* it was not: the stored value is in cur */
  PSK_REDIS_FAILED = -1   /* the store failed: err says how */
};

/* If the value stored at name is `expected` ("" for none), stores
   `desired` (kept ttl_ms) and returns PSK_REDIS_SET; else copies the
   stored value into cur (cur_cap bytes, NUL-terminated; *cur_len its
   length) and returns PSK_REDIS_CHANGED. */
int psk_redis_cas(psk_redis *r, const char *name, const char *expected,
                  const char *desired, long ttl_ms, char *cur, size_t cur_cap,
                  size_t *cur_len, char *err, size_t err_cap);

#endif
