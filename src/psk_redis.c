/* psk_redis: see psk_redis.h. */
#define _POSIX_C_SOURCE 200809L
#include "psk_redis.h"

#include <stdio.h>

#ifdef PSK_HAVE_HIREDIS

#include "psk_fork.h"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Compare-and-set, run by Redis as one atomic step. KEYS[1]: the budget;
   ARGV: the value read (or ""), the value to store, its lifetime in ms.
   Returns {1} when the value was the one read (and is now the new one:
   unchanged values are not written again), else {0, the value now}. */
static const char CAS_SCRIPT[] =
    "local cur = redis.call('GET', KEYS[1]) or ''\n"
    "if cur ~= ARGV[1] then return {0, cur} end\n"
    "if ARGV[2] ~= cur then\n"
    "  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
    "end\n"
    "return {1}\n";

struct psk_redis {
  redisContext *ctx;
  psk_owner owner;    /* the process that opened ctx */
  char sha[41];       /* CAS_SCRIPT's SHA-1, as SCRIPT LOAD answered */
  char *host;
  char *password;
  int port;
  int db;
  double timeout;
};

psk_redis *psk_redis_new(const char *host, int port, const char *password,
                         int db, double timeout) {
  psk_redis *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->host = strdup(host);
  r->password = password ? strdup(password) : NULL;
  if (!r->host || (password && !r->password)) {
    psk_redis_free(r);
    return NULL;
  }
  r->port = port;
  r->db = db;
  r->timeout = timeout;
  return r;
}

/* Drops the connection. In a forked child the socket is the parent's too:
   closing our copy of the descriptor leaves the parent's open. */
static void disconnect(psk_redis *r) {
  if (r->ctx) redisFree(r->ctx);
  r->ctx = NULL;
}

void psk_redis_free(psk_redis *r) {
  if (!r) return;
  disconnect(r);
  if (r->password) {
    memset(r->password, 0, strlen(r->password));
    free(r->password);
  }
  free(r->host);
  free(r);
}

static struct timeval tv_of(double s) {
  struct timeval tv;
  tv.tv_sec = (time_t)s;
  tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
  if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1000;
  return tv;
}

/* Runs one command; the reply, or NULL with err set (and the connection
   dropped). A Redis error reply is returned as it is. */
static redisReply *command(psk_redis *r, int argc, const char **argv,
                           const size_t *lens, char *err, size_t err_cap) {
  redisReply *rep = redisCommandArgv(r->ctx, argc, argv, lens);
  if (!rep) {
    snprintf(err, err_cap, "redis %s:%d: %s", r->host, r->port,
             r->ctx->err ? r->ctx->errstr : "no reply");
    disconnect(r);
  }
  return rep;
}

/* A command whose reply must not be an error; 0 when it was not. */
static int command_ok(psk_redis *r, int argc, const char **argv,
                      const size_t *lens, const char *what, char *err,
                      size_t err_cap) {
  redisReply *rep = command(r, argc, argv, lens, err, err_cap);
  if (!rep) return -1;
  if (rep->type == REDIS_REPLY_ERROR) {
    /* A refused AUTH names no password; the reply is Redis's own. */
    snprintf(err, err_cap, "redis %s:%d: %s: %.120s", r->host, r->port, what,
             rep->str ? rep->str : "error");
    freeReplyObject(rep);
    disconnect(r);
    return -1;
  }
  freeReplyObject(rep);
  return 0;
}

/* SCRIPT LOAD: Redis answers the script's SHA-1, used by EVALSHA. */
static int load_script(psk_redis *r, char *err, size_t err_cap) {
  const char *argv[3] = {"SCRIPT", "LOAD", CAS_SCRIPT};
  size_t lens[3] = {6, 4, sizeof CAS_SCRIPT - 1};
  redisReply *rep = command(r, 3, argv, lens, err, err_cap);
  if (!rep) return -1;
  if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
    snprintf(err, err_cap, "redis %s:%d: SCRIPT LOAD: %.120s", r->host,
             r->port,
             rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str
                                                        : "unexpected reply");
    freeReplyObject(rep);
    disconnect(r);
    return -1;
  }
  memcpy(r->sha, rep->str, 41);
  freeReplyObject(rep);
  return 0;
}

static int connect_now(psk_redis *r, char *err, size_t err_cap) {
  r->ctx = redisConnectWithTimeout(r->host, r->port, tv_of(r->timeout));
  if (!r->ctx || r->ctx->err) {
    snprintf(err, err_cap, "redis %s:%d: %s", r->host, r->port,
             r->ctx ? r->ctx->errstr : "out of memory");
    disconnect(r);
    return -1;
  }
  psk_owner_set(&r->owner);
  if (redisSetTimeout(r->ctx, tv_of(r->timeout)) != REDIS_OK) {
    snprintf(err, err_cap, "redis %s:%d: cannot set the timeout", r->host,
             r->port);
    disconnect(r);
    return -1;
  }
  if (r->password) {
    const char *argv[2] = {"AUTH", r->password};
    size_t lens[2] = {4, strlen(r->password)};
    if (command_ok(r, 2, argv, lens, "AUTH", err, err_cap) != 0) return -1;
  }
  if (r->db) {
    char db[24];
    const char *argv[2] = {"SELECT", db};
    size_t lens[2] = {6, 0};
    lens[1] = (size_t)snprintf(db, sizeof db, "%d", r->db);
    if (command_ok(r, 2, argv, lens, "SELECT", err, err_cap) != 0) return -1;
  }
  return load_script(r, err, err_cap);
}

/* SIGPIPE is held back while we write to Redis: a server that went away
   must become an error, not kill the host process. One that arrives is
   taken off the pending set before the old mask comes back. */
typedef struct sigpipe_guard {
  sigset_t old;
  int was_pending;
} sigpipe_guard;

static void sigpipe_hold(sigpipe_guard *g) {
  sigset_t set, pending;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  sigemptyset(&pending);
  sigpending(&pending);
  g->was_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void sigpipe_release(sigpipe_guard *g) {
  sigset_t set, pending;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  sigemptyset(&pending);
  sigpending(&pending);
  if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
    struct timespec zero = {0, 0};
    sigtimedwait(&set, NULL, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static int cas(psk_redis *r, const char *name, const char *expected,
               const char *desired, long ttl_ms, char *cur, size_t cur_cap,
               size_t *cur_len, char *err, size_t err_cap) {
  char ttl[24];
  const char *argv[7];
  size_t lens[7];
  int tries, result = PSK_REDIS_FAILED;
  argv[0] = "EVALSHA";
  argv[2] = "1";
  argv[3] = name;
  argv[4] = expected;
  argv[5] = desired;
  argv[6] = ttl;
  lens[0] = 7;
  lens[2] = 1;
  lens[3] = strlen(name);
  lens[4] = strlen(expected);
  lens[5] = strlen(desired);
  lens[6] = (size_t)snprintf(ttl, sizeof ttl, "%ld", ttl_ms);
  for (tries = 0; tries < 2; tries++) {
    if (!r->ctx && connect_now(r, err, err_cap) != 0) return PSK_REDIS_FAILED;
    argv[1] = r->sha;
    lens[1] = strlen(r->sha);
    redisReply *rep = command(r, 7, argv, lens, err, err_cap);
    if (!rep) return PSK_REDIS_FAILED;
    if (rep->type == REDIS_REPLY_ERROR && rep->str &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0) {
      /* The script cache was flushed (SCRIPT FLUSH, a failover): load it
         again and retry once. */
      freeReplyObject(rep);
      if (load_script(r, err, err_cap) != 0) return PSK_REDIS_FAILED;
      continue;
    }
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER) {
      if (rep->element[0]->integer == 1) {
        result = PSK_REDIS_SET;
      } else if (rep->elements == 2 &&
                 rep->element[1]->type == REDIS_REPLY_STRING) {
        size_t n = (size_t)rep->element[1]->len;
        if (n < cur_cap) {
          memcpy(cur, rep->element[1]->str, n);
          cur[n] = '\0';
          *cur_len = n;
          result = PSK_REDIS_CHANGED;
        } else { /* no budget of ours is that long */
          snprintf(err, err_cap, "redis %s:%d: %s holds something else",
                   r->host, r->port, name);
          freeReplyObject(rep);
          return PSK_REDIS_FAILED; /* the connection itself is fine */
        }
      }
    }
    if (result == PSK_REDIS_FAILED) {
      snprintf(err, err_cap, "redis %s:%d: EVALSHA: %.120s", r->host, r->port,
               rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str
                                                          : "unexpected reply");
      disconnect(r);
    }
    freeReplyObject(rep);
    return result;
  }
  snprintf(err, err_cap, "redis %s:%d: the script keeps disappearing",
           r->host, r->port);
  disconnect(r);
  return PSK_REDIS_FAILED;
}

int psk_redis_cas(psk_redis *r, const char *name, const char *expected,
                  const char *desired, long ttl_ms, char *cur, size_t cur_cap,
                  size_t *cur_len, char *err, size_t err_cap) {
  sigpipe_guard g;
  int result;
  if (r->ctx && psk_owner_other(&r->owner)) disconnect(r); /* the parent's */
  sigpipe_hold(&g);
  result = cas(r, name, expected, desired, ttl_ms, cur, cur_cap, cur_len,
               err, err_cap);
  sigpipe_release(&g);
  return result;
}

int psk_redis_available(void) { return 1; }

#else /* built without hiredis: periskope.limiter.redis refuses, see lpace.c */

int psk_redis_available(void) { return 0; }

psk_redis *psk_redis_new(const char *host, int port, const char *password,
                         int db, double timeout) {
  (void)host, (void)port, (void)password, (void)db, (void)timeout;
  return NULL;
}

void psk_redis_free(psk_redis *r) { (void)r; }

int psk_redis_cas(psk_redis *r, const char *name, const char *expected,
                  const char *desired, long ttl_ms, char *cur, size_t cur_cap,
                  size_t *cur_len, char *err, size_t err_cap) {
  (void)r, (void)name, (void)expected, (void)desired, (void)ttl_ms;
  (void)cur, (void)cur_cap, (void)cur_len;
  snprintf(err, err_cap, "built without hiredis");
  return PSK_REDIS_FAILED;
}

#endif
