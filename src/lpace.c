/*
 * lpace: periskope.limiter.shared_dict and periskope.limiter.redis.
 *
 * A limiter holds no pacing logic of its own: every operation decodes the
 * stored budget, runs psk_pace_apply (psk_budget_take or _settle, the same
 * code the in-client pacing runs) and stores the result, as one atomic
 * step of the store:
 *   - an nginx shared dictionary: under a lock taken with the dictionary's
 *     own `add` (which fails while the key exists) and an expiry, so a
 *     worker that dies holding it cannot wedge the others;
 *   - Redis: a compare-and-set script (psk_redis), retried with the value
 *     it returns when another process changed the budget first.
 * The text holds the queue of waiters too (psk_queue), so a take is
 * served in the order the waiters began to wait with no more than this:
 * the stores carry a longer text, never a second key or a second step.
 */
#define _POSIX_C_SOURCE 200809L
#include "lpace.h"
#include "lpsk.h" /* the option getters and their wording */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psk_fork.h"
#include "psk_redis.h"
#include "psk_time.h"

enum { LIM_DICT = 1, LIM_REDIS = 2 };

#define STATE_TTL 3600      /* seconds an idle budget is kept */
#define LOCK_TTL 3.0        /* seconds: a dead holder's lock expires */
#define LOCK_WAIT 1.0       /* seconds to wait for the lock */
#define REST 1.0            /* seconds a store that failed is left alone */

typedef struct psk_limiter {
  int kind;
  psk_redis *redis;                  /* LIM_REDIS */
  double timeout;                    /* LIM_REDIS: seconds per operation */
  char where[96];                    /* for messages: "redis host:port" */
  char host[256];                    /* LIM_REDIS: for the host's sockets */
  int port;
  char pool[300];                    /* ... and the pool they keep */
  char prefix[LPACE_PREFIX_MAX + 1];
  char cache_name[LPACE_NAME_MAX];   /* the last budget seen in Redis */
  char cache_val[PSK_BUDGET_TEXT];
  unsigned long seq;                 /* shared_dict: lock tokens made */
  psk_owner me;                      /* ... and the process making them */
  double resting_until;              /* after a failure: try again then */
} psk_limiter;

/* ---------------------------------------------------------------- */
/* ngx.shared dictionary                                             */

/* dict:method(key[, value, exptime]), protected; leaves two results.
   LPACE_OK, or LPACE_FAILED with err. */
static int dict_call(lua_State *L, int dict, const char *method,
                     const char *key, const char *value, double exptime,
                     char *err, size_t err_cap) {
  int nargs = 2;
  lua_getfield(L, dict, method);
  lua_pushvalue(L, dict);
  lua_pushstring(L, key);
  if (value) {
    lua_pushstring(L, value);
    lua_pushnumber(L, (lua_Number)exptime);
    nargs = 4;
  }
  if (lua_pcall(L, nargs, 2, 0) != LUA_OK) {
    snprintf(err, err_cap, "shared_dict %s: %s", method,
             lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error");
    lua_pop(L, 1);
    return LPACE_FAILED;
  }
  return LPACE_OK;
}

/* The error text of a dictionary call that returned false, err. */
static void dict_refused(lua_State *L, int res, const char *method, char *err,
                         size_t err_cap) {
  snprintf(err, err_cap, "shared_dict %s: %s", method,
           lua_type(L, res + 1) == LUA_TSTRING ? lua_tostring(L, res + 1)
                                               : "failed");
}

/* The dictionary measures expiry on nginx's cached clock, which stands
   still while a worker is blocked (in a pin, or a wait): brought up to
   date, an expired lock is taken over when it should be, and not before.
   Outside nginx there is nothing to update. */
static void update_nginx_time(lua_State *L) {
  lua_getglobal(L, "ngx");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "update_time");
    if (!lua_isfunction(L, -1) || lua_pcall(L, 0, 0, 0) != LUA_OK)
      lua_pop(L, 1); /* not a function, or its error */
  }
  lua_pop(L, 1);
}

/* Whether the lock still holds our token. */
static int lock_is_ours(lua_State *L, int dict, const char *lock,
                        const char *token) {
  char ignored[8];
  int ours = 0;
  if (dict_call(L, dict, "get", lock, NULL, 0, ignored, sizeof ignored) == 0) {
    ours = lua_type(L, -2) == LUA_TSTRING &&
           strcmp(lua_tostring(L, -2), token) == 0;
    lua_pop(L, 2);
  }
  return ours;
}

/* One operation under the dictionary's lock. wait: a lock held by
   another is waited for, in short sleeps, up to LOCK_WAIT (a caller that
   blocks anyway); else LPACE_BUSY at once, and the caller asks again
   after a wait of its own (ngx.sleep: never a spin on the worker). */
static int dict_run(lua_State *L, psk_limiter *self, int lim,
                    const char *name, psk_pace_op *op, double mono_now,
                    int wait, char *err, size_t err_cap) {
  char lock[LPACE_NAME_MAX + 8], token[64];
  double deadline = mono_now + LOCK_WAIT;
  int dict, base, rc = LPACE_OK;
  psk_getuvtable(L, lim);
  lua_getfield(L, -1, "dict");
  dict = lua_gettop(L);
  base = dict;
  snprintf(lock, sizeof lock, "%s:lock", name);
  /* Ours alone: a holder whose lock expired under it finds it taken. */
  /* The limiter's own counter (no C static: Lua states of several threads
     may use the module at once), its address for states that share a
     process, and the process (asked of the kernel only after a fork). */
  if (!self->me.pid || psk_owner_other(&self->me)) psk_owner_set(&self->me);
  snprintf(token, sizeof token, "%ld:%p:%lu", (long)self->me.pid,
           (void *)self, ++self->seq);
  for (;;) { /* the lock: add fails while another holder has it */
    update_nginx_time(L);
    if (dict_call(L, dict, "add", lock, token, LOCK_TTL, err, err_cap) != 0) {
      lua_settop(L, base - 2);
      return LPACE_FAILED;
    }
    if (lua_toboolean(L, base + 1)) break;
    if (!(lua_type(L, base + 2) == LUA_TSTRING &&
          strcmp(lua_tostring(L, base + 2), "exists") == 0)) {
      dict_refused(L, base + 1, "add", err, err_cap);
      lua_settop(L, base - 2);
      return LPACE_FAILED;
    }
    lua_settop(L, base);
    if (!wait) {
      lua_settop(L, base - 2);
      return LPACE_BUSY;
    }
    if (psk_time_mono() > deadline) {
      snprintf(err, err_cap,
               "shared_dict: its lock stayed held for %.1f s",
               LOCK_WAIT);
      lua_settop(L, base - 2);
      return LPACE_FAILED;
    }
    psk_time_sleep(0.0002);
  }
  lua_settop(L, base);
  /* Locked: read, apply, write back, unlock. */
  if (dict_call(L, dict, "get", name, NULL, 0, err, err_cap) != 0) {
    rc = LPACE_FAILED;
  } else {
    char out[PSK_BUDGET_TEXT];
    size_t len = 0;
    const char *cur = lua_type(L, base + 1) == LUA_TSTRING
                          ? lua_tolstring(L, base + 1, &len)
                          : "";
    psk_pace_apply_text(cur, len, op, out);
    if (strlen(out) != len || memcmp(out, cur, len) != 0) {
      lua_settop(L, base);
      if (!lock_is_ours(L, dict, lock, token)) {
        snprintf(err, err_cap,
                 "shared_dict: its lock expired during an update");
        rc = LPACE_FAILED;
      } else if (dict_call(L, dict, "set", name, out, STATE_TTL, err,
                           err_cap) != 0)
        rc = LPACE_FAILED;
      else if (!lua_toboolean(L, base + 1)) {
        dict_refused(L, base + 1, "set", err, err_cap);
        rc = LPACE_FAILED;
      }
    }
  }
  lua_settop(L, base);
  if (lock_is_ours(L, dict, lock, token)) {
    char ignored[8];
    dict_call(L, dict, "delete", lock, NULL, 0, ignored, sizeof ignored);
  }
  lua_settop(L, base - 2);
  return rc;
}

/* ---------------------------------------------------------------- */
/* Redis                                                             */

/* One operation's compare-and-set rounds. Many processes asking at once
   (a window opening to a queue of them) change the budget many times a
   second: a change must win a round against them, and one that keeps
   losing (its process is slow to be scheduled) keeps trying for as long
   as the store's timeout allows: one deadline for every round of the
   operation. An ask that changes nothing needs no round of its own: the
   value a lost round returns is the store's, read atomically, and what
   the operation made of it stands. */
typedef struct cas_rounds {
  psk_pace_op op;      /* the operation asked */
  psk_pace_op attempt; /* ... as run on expected: the answer, once done */
  char name[LPACE_NAME_MAX];
  char expected[PSK_BUDGET_TEXT], desired[PSK_BUDGET_TEXT];
  int tries;
  double started, deadline;
} cas_rounds;

/* Starts from the budget last seen: if nobody changed it, one round. */
static void rounds_start(psk_limiter *lim, cas_rounds *r, const char *name,
                         const psk_pace_op *op, double mono_now) {
  r->op = *op;
  r->tries = 0;
  r->started = mono_now;
  r->deadline = mono_now + lim->timeout;
  snprintf(r->name, sizeof r->name, "%s", name);
  if (strcmp(lim->cache_name, name) == 0)
    memcpy(r->expected, lim->cache_val, sizeof r->expected);
  else
    r->expected[0] = '\0';
}

/* The next round on expected: 1 when it changes nothing (the answer is
   r->attempt, on the store's value), 0 when desired must be set. */
static int rounds_next(cas_rounds *r) {
  r->tries++;
  r->attempt = r->op;
  psk_pace_apply_text(r->expected, strlen(r->expected), &r->attempt,
                      r->desired);
  return r->tries > 1 && strcmp(r->desired, r->expected) == 0;
}

/* The operation is done, the store holding value: its answer into op, and
   the value remembered for the next operation's first round. */
static int rounds_done(psk_limiter *lim, cas_rounds *r, psk_pace_op *op,
                       const char *value) {
  *op = r->attempt;
  snprintf(lim->cache_name, sizeof lim->cache_name, "%s", r->name);
  snprintf(lim->cache_val, sizeof lim->cache_val, "%s", value);
  return LPACE_OK;
}

static int rounds_failed(psk_limiter *lim, cas_rounds *r, char *err,
                         size_t err_cap) {
  if (err && !*err)
    snprintf(err, err_cap, "%s: budget kept changing (%d tries in %.1f s)",
             lim->where, r->tries, psk_time_mono() - r->started);
  lim->cache_name[0] = '\0';
  return LPACE_FAILED;
}

/* The blocking driver's rounds (psk_redis_cas). */
static int redis_run(psk_limiter *lim, const char *name, psk_pace_op *op,
                     double mono_now, char *err, size_t err_cap) {
  static const long ttl = (long)STATE_TTL * 1000;
  cas_rounds r;
  err[0] = '\0';
  rounds_start(lim, &r, name, op, mono_now);
  for (;;) {
    size_t len = 0;
    int rc;
    if (rounds_next(&r)) return rounds_done(lim, &r, op, r.expected);
    rc = psk_redis_cas(lim->redis, r.deadline, name, r.expected, r.desired,
                       ttl, r.expected, sizeof r.expected, &len, err,
                       err_cap);
    if (rc == PSK_REDIS_SET) return rounds_done(lim, &r, op, r.desired);
    if (rc != PSK_REDIS_CHANGED) return rounds_failed(lim, &r, err, err_cap);
    /* Another process went first: expected now holds its value. */
    if (psk_time_mono() > r.deadline) break;
  }
  return rounds_failed(lim, &r, err, err_cap);
}

/* ---------------------------------------------------------------- */
/* Redis through the host's sockets                                  */

enum { IO_IDLE, IO_CONNECT, IO_EXCHANGE, IO_DONE };

struct lpace_io {
  psk_limiter *lim; /* borrowed: the client's uservalue keeps it */
  cas_rounds r;
  psk_redis_x *x;
  int state;
  int rc;           /* IO_DONE: LPACE_OK or LPACE_FAILED */
  int reusable;     /* the connection may serve the next operation */
  int set;          /* IO_DONE, LPACE_OK: the store holds desired (else
                       expected: the last round changed nothing) */
  char err[300];
};

/* The exchange only where a Redis store can be: built without hiredis,
   a client's store is in-process or a shared dictionary, and the stub's
   NULL is no failure. */
lpace_io *lpace_io_new(void) {
  lpace_io *io = calloc(1, sizeof *io);
  if (io && psk_redis_available() && !(io->x = psk_redis_x_new())) {
    free(io);
    io = NULL;
  }
  return io;
}

void lpace_io_free(lpace_io *io) {
  if (!io) return;
  psk_redis_x_free(io->x);
  free(io);
}

int lpace_io_busy(const lpace_io *io) {
  return io && (io->state == IO_CONNECT || io->state == IO_EXCHANGE);
}

int lpace_io_ready(const lpace_io *io) { return io && io->state == IO_DONE; }

void lpace_io_target(const lpace_io *io, const char **host, int *port,
                     const char **pool) {
  *host = io->lim->host;
  *port = io->lim->port;
  *pool = io->lim->pool;
}

double lpace_io_left(const lpace_io *io) {
  double left = io->r.deadline - psk_time_mono();
  return left > 0.001 ? left : 0.001;
}

/* Ends the operation: failed (why) or done. */
static int io_end(lpace_io *io, int rc, const char *why) {
  io->state = IO_DONE;
  io->rc = rc;
  if (rc != LPACE_OK) {
    snprintf(io->err, sizeof io->err, "%s", why);
    io->lim->cache_name[0] = '\0';
    io->lim->resting_until = psk_time_mono() + REST;
  }
  return rc;
}

/* The next round of the operation, on the connection as it is: LPACE_IO
   (bytes to send: lpace_io_output) or the end. */
static int io_round(lpace_io *io, int fresh) {
  static const long ttl = (long)STATE_TTL * 1000;
  if (rounds_next(&io->r)) {
    io->state = IO_DONE;
    io->rc = LPACE_OK;
    io->set = 0;
    return LPACE_OK;
  }
  if (psk_redis_x_begin(io->x, io->lim->redis, fresh, io->r.name,
                        io->r.expected, io->r.desired, ttl) != PSK_REDIS_MORE)
    return io_end(io, LPACE_FAILED, psk_redis_x_error(io->x));
  io->state = IO_EXCHANGE;
  return LPACE_IO;
}

int lpace_io_connected(lpace_io *io, int fresh) {
  if (io->state != IO_CONNECT) return LPACE_FAILED;
  return io_round(io, fresh);
}

void lpace_io_output(lpace_io *io, const char **bytes, size_t *len) {
  *len = 0;
  if (io->state == IO_EXCHANGE) psk_redis_x_output(io->x, bytes, len);
}

int lpace_io_feed(lpace_io *io, const char *bytes, size_t len) {
  int rc;
  if (io->state != IO_EXCHANGE) return io->state == IO_DONE ? io->rc : LPACE_FAILED;
  rc = psk_redis_x_feed(io->x, bytes, len);
  io->reusable = psk_redis_x_reusable(io->x);
  if (rc == PSK_REDIS_MORE) return LPACE_IO;
  if (rc == PSK_REDIS_SET) {
    io->state = IO_DONE;
    io->rc = LPACE_OK;
    io->set = 1;
    return LPACE_OK;
  }
  if (rc == PSK_REDIS_CHANGED) {
    /* Another process went first: its value, and another round. */
    snprintf(io->r.expected, sizeof io->r.expected, "%s",
             psk_redis_x_value(io->x, NULL));
    if (psk_time_mono() > io->r.deadline) {
      char why[160];
      snprintf(why, sizeof why, "%s: budget kept changing (%d tries in %.1f s)",
               io->lim->where, io->r.tries, psk_time_mono() - io->r.started);
      return io_end(io, LPACE_FAILED, why);
    }
    return io_round(io, 0);
  }
  return io_end(io, LPACE_FAILED, psk_redis_x_error(io->x));
}

int lpace_io_fail(lpace_io *io, const char *what) {
  char why[300];
  if (io->state == IO_DONE) return io->rc;
  io->reusable = 0;
  snprintf(why, sizeof why, "%s: %s", io->lim->where, what);
  return io_end(io, LPACE_FAILED, why);
}

int lpace_io_reusable(const lpace_io *io) { return io->reusable; }

int lpace_io_finish(lpace_io *io, psk_pace_op *op, char *err, size_t err_cap) {
  int rc = io->rc;
  io->state = IO_IDLE;
  if (rc == LPACE_OK)
    return rounds_done(io->lim, &io->r, op,
                       io->set ? io->r.desired : io->r.expected);
  snprintf(err, err_cap, "periskope: %s", io->err);
  return LPACE_FAILED;
}

int lpace_run(lua_State *L, int idx, const char *name, psk_pace_op *op,
              double mono_now, lpace_io *io, char *err, size_t err_cap) {
  psk_limiter *lim = lpace_test(L, idx);
  char why[256];
  int rc;
  /* After a failure the store rests, so that a store that is down costs
     one timeout a second, not one per request. */
  if (!lim || mono_now < lim->resting_until) return LPACE_RESTING;
  if (lim->kind == LIM_REDIS && io) {
    /* The host's sockets do the I/O: the operation's first round waits
       for a connection (lpace_io_connected). */
    io->lim = lim;
    io->err[0] = '\0';
    io->reusable = 0;
    rounds_start(lim, &io->r, name, op, mono_now);
    io->state = IO_CONNECT;
    return LPACE_IO;
  }
  rc = lim->kind == LIM_REDIS
           ? redis_run(lim, name, op, mono_now, why, sizeof why)
           : dict_run(L, lim, psk_absindex(L, idx), name, op, mono_now,
                      io == NULL, why, sizeof why);
  if (rc == LPACE_OK || rc == LPACE_BUSY) return rc;
  snprintf(err, err_cap, "periskope: %s", why);
  /* From the failure's end: an operation may have taken its timeout. */
  lim->resting_until = psk_time_mono() + REST;
  return LPACE_FAILED;
}

/* ---------------------------------------------------------------- */
/* the limiter objects                                               */

void *lpace_test(lua_State *L, int i) {
  return psk_testudata(L, i, LIMITER_MT);
}

void lpace_name(void *l, const char *api_key, char out[LPACE_NAME_MAX]) {
  psk_limiter *lim = l;
  if (!psk_budget_name(lim->prefix, api_key, out, LPACE_NAME_MAX))
    out[0] = '\0';
}

static psk_limiter *new_limiter(lua_State *L, int kind) {
  psk_limiter *lim = psk_newuserdata(L, sizeof *lim);
  memset(lim, 0, sizeof *lim);
  lim->kind = kind;
  psk_setmetatable(L, LIMITER_MT);
  lua_createtable(L, 0, 1);
  psk_setuvtable(L, -2);
  return lim;
}

/* periskope.limiter.shared_dict(ngx.shared.NAME) */
static int lim_shared_dict(lua_State *L) {
  static const char *const methods[] = {"get", "set", "add", "delete", NULL};
  static const lpsk_tab arg1 = {1, NULL, "", "argument", NULL};
  psk_limiter *lim;
  int i, t = lua_type(L, 1);
  if (t != LUA_TTABLE && t != LUA_TUSERDATA)
    return lpsk_bad(L, &arg1, NULL,
                    "must be an nginx shared dictionary (ngx.shared.NAME)", 1);
  for (i = 0; methods[i]; i++) {
    lua_getfield(L, 1, methods[i]);
    if (!lua_isfunction(L, -1))
      return lpsk_bad(L, &arg1, NULL,
                      lua_pushfstring(L, "must be an nginx shared dictionary "
                                         "(ngx.shared.NAME): it has no '%s' "
                                         "method",
                                      methods[i]),
                      0);
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  lim = new_limiter(L, LIM_DICT);
  strcpy(lim->prefix, "periskope:");
  strcpy(lim->where, "shared_dict");
  psk_getuvtable(L, -1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "dict");
  lua_pop(L, 1);
  return 1;
}

enum { RO_HOST, RO_PORT, RO_PASSWORD, RO_DB, RO_PREFIX, RO_TIMEOUT, RO_N };
static const char *const redis_fields[RO_N + 1] = {
    "host", "port", "password", "db", "prefix", "timeout", NULL};

/* periskope.limiter.redis{ host, port, password, db, prefix, timeout } */
static int lim_redis(lua_State *L) {
  static const lpsk_tab tb = {1, NULL, "", "option", NULL};
  const char *host, *password, *prefix;
  long long port, db;
  double timeout;
  int at[RO_N];
  psk_limiter *lim;
  if (!psk_redis_available())
    return luaL_error(L, "periskope.limiter.redis: this build of periskope "
                         "has no Redis support: it was built without hiredis "
                         "(HIREDIS=no, or libhiredis-dev missing); install "
                         "libhiredis-dev and rebuild (make, or luarocks make "
                         "HIREDIS=yes)");
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lpsk_check_keys(L, &tb, 1, redis_fields, at);
  host = lpsk_opt_text(L, &tb, at[RO_HOST], "host", "127.0.0.1", 255, 0,
                       "must be a host name or address");
  port = lpsk_opt_integer(L, &tb, at[RO_PORT], "port", 6379, 1, 65535,
                          "must be an integer from 1 to 65535");
  password = lpsk_opt_text(L, &tb, at[RO_PASSWORD], "password", NULL, 512,
                           LPSK_SECRET,
                           "must be a non-empty string without control bytes");
  db = lpsk_opt_integer(L, &tb, at[RO_DB], "db", 0, 0, 1 << 20,
                        "must be an integer >= 0");
  prefix = lpsk_opt_text(L, &tb, at[RO_PREFIX], "prefix", "periskope:",
                         LPACE_PREFIX_MAX, 0,
                         "must be a string of 1 to 64 bytes without control "
                         "bytes");
  timeout = lpsk_opt_number(L, &tb, at[RO_TIMEOUT], "timeout", 1, 0, 0, 60,
                            "must be a number of seconds > 0 and <= 60");
  lim = new_limiter(L, LIM_REDIS);
  snprintf(lim->prefix, sizeof lim->prefix, "%s", prefix);
  snprintf(lim->where, sizeof lim->where, "redis %.64s:%d", host, (int)port);
  snprintf(lim->host, sizeof lim->host, "%s", host);
  lim->port = (int)port;
  snprintf(lim->pool, sizeof lim->pool, "periskope-redis:%s:%d:%d", host,
           (int)port, (int)db);
  lim->timeout = timeout;
  lim->redis = psk_redis_new(host, (int)port, password, (int)db, timeout);
  if (!lim->redis) return luaL_error(L, "periskope: out of memory");
  return 1;
}

static int lim_gc(lua_State *L) {
  psk_limiter *lim = luaL_checkudata(L, 1, LIMITER_MT);
  psk_redis_free(lim->redis);
  lim->redis = NULL;
  return 0;
}

static int lim_tostring(lua_State *L) {
  psk_limiter *lim = luaL_checkudata(L, 1, LIMITER_MT);
  lua_pushfstring(L, "periskope.limiter (%s)", lim->where);
  return 1;
}

void lpace_open(lua_State *L) {
  static const luaL_Reg meta[] = {
      {"__gc", lim_gc}, {"__tostring", lim_tostring}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"shared_dict", lim_shared_dict},
                                   {"redis", lim_redis},
                                   {NULL, NULL}};
  if (luaL_newmetatable(L, LIMITER_MT)) {
    psk_setfuncs(L, meta, 0);
    lua_pushliteral(L, "periskope.limiter");
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 2);
  psk_setfuncs(L, funcs, 0);
}
