/*
 * lpsk_pin.c: the drivers of pin jobs: pin, blocking, with
 * psk_http_perform and a sleep; pin_many, a batch of jobs over a multi
 * handle of its own, with its own scheduling (concurrency, pacing shared
 * by the batch).
 *
 * Both run under the busy rule (lpsk_run_busy, lpsk_client.c): whatever
 * happens in their body, a hook's error, a memory error, a close or a
 * configure from a hook, the job or batch gives back what it holds
 * (transfers out of the multi handle, into the pool) on the same way
 * out, and the error, if any, is raised again unchanged. A hook may pin
 * and pin_many on the same client: each call has its own job or batch,
 * transfers and multi handle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpsk.h"
#include "psk_time.h"

/* Does nothing: called only for the hooks a call runs. */
static int checkpoint(lua_State *L) {
  (void)L;
  return 0;
}

/* Sleeps s seconds. A signal that wakes it first gets a call into Lua
   at once, so that the host may act on it (lua.c's Ctrl-C handler sets a
   hook that raises "interrupted!" at the next call); then the rest of
   the sleep. s = 0: only that call. [-0, +0, e] */
void lpsk_sleep(lua_State *L, double s) {
  double end = psk_time_mono() + s;
  do {
    lua_pushcfunction(L, checkpoint);
    lua_call(L, 0, 0);
  } while (psk_time_nap(end - psk_time_mono()) != 0);
}

/* ---------------------------------------------------------------- */
/* pin                                                               */

/* A blocking pin: its job and the transfer it sends on, taken from the
   client's pool at its first send and given back when it ends. */
typedef struct pin_call {
  pin_job j; /* first: lpsk_job_new makes it */
  psk_transfer *t;
} pin_call;

/* Under lpsk_run_busy: 1 the client, 2 its call. Sends, waits and
   retries as the job's steps say. */
static int pin_body(lua_State *L) {
  Client *c = lua_touserdata(L, 1);
  pin_call *p = lua_touserdata(L, 2);
  const psk_reply *rep = NULL;
  for (;;) {
    double wait;
    switch (lpsk_job_step(L, &p->j, 1, rep, &wait)) {
    case JOB_SEND:
      if (!p->t && !(p->t = psk_http_take(c->http)))
        return luaL_error(L, "periskope: out of memory");
      rep = psk_http_perform(c->http, p->t, &p->j.req);
      break;
    case JOB_WAIT:
      lpsk_sleep(L, wait);
      rep = NULL;
      break;
    default:
      return p->j.nout;
    }
  }
}

/* Gives p's transfer back and releases its job; idempotent. A client is
   released only when no call runs on it, and a pin holds a transfer only
   while its call runs: the pool is still there. */
static void call_release(lua_State *L, pin_call *p) {
  if (p->t && p->j.c && p->j.c->http) psk_http_give(p->j.c->http, p->t);
  p->t = NULL;
  lpsk_job_release(L, &p->j);
}

static void pin_release(lua_State *L, int obj) {
  call_release(L, lua_touserdata(L, obj));
}

int lpsk_pin_gc(lua_State *L) {
  call_release(L, luaL_checkudata(L, 1, PIN_MT));
  return 0;
}

/* pin on client c (userdata at ud) with the arguments at arg. A pin on
   a client with no call running uses the client's own call, allocated
   once: made after the arguments are checked (the last raise before the
   protected call), it holds nothing until pin_body runs, and run_busy
   releases it whatever way that ends; its message_id stays on the Lua
   stack meanwhile. A pin nested in a hook of a call on the same client
   has a call of its own, a userdata: the client's is in use, and hooks
   that pin again and again nest as deep as Lua lets them, so the C stack
   holds no job. */
static int do_pin(lua_State *L, Client *c, int ud, int arg) {
  pin_args a;
  pin_call *p;
  if (c->busy) {
    p = (pin_call *)lpsk_job_new(L, c, arg, sizeof *p, PIN_MT);
    p->j.nested = 1;
    return lpsk_run_busy(L, c, ud, lua_gettop(L), "pin_body", pin_release);
  }
  lpsk_check_pin_args(L, arg, arg, "", &a);
  if (!c->pin && !(c->pin = malloc(sizeof *c->pin + PSK_MESSAGE_ID_MAX + 1)))
    return luaL_error(L, "periskope: out of memory");
  p = c->pin;
  lpsk_job_init(&p->j, c, &a, 0, (char *)(p + 1)); /* cannot fail */
  p->t = NULL;
  lua_pushlightuserdata(L, p);
  return lpsk_run_busy(L, c, ud, lua_gettop(L), "pin_body", pin_release);
}

int lpsk_client_pin(lua_State *L) {
  Client *c = lpsk_checkclient(L);
  return do_pin(L, c, 1, 2);
}

int lpsk_mod_pin(lua_State *L) {
  Client *c;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  c = lpsk_default_client(L);
  return do_pin(L, c, 2, 1);
}

/* ---------------------------------------------------------------- */
/* pin_many                                                          */

/* An item of a batch: its job and its place in the batch's schedule. */
typedef struct batch_item {
  pin_job j;
  double not_before; /* monotonic time its retry may start */
  int running;       /* its request is in flight */
} batch_item;

/* A running pin_many: its items, the slots they run in (a transfer each,
   taken from the client's pool on first use) and a multi handle of its
   own. A userdata: whatever way the call ends, its release runs
   (lpsk_run_busy, else __gc). */
typedef struct batch {
  Client *c;
  psk_batch *net;     /* the multi handle, made when the batch runs */
  int n;              /* items */
  int conc;           /* slots in use: at most this many in flight */
  int done;           /* items finished */
  int first;          /* items before it are all finished */
  int nested;         /* started while another call ran on the client */
  pace_waiter w;      /* its wait for a slot for its next request */
  psk_transfer *slot_t[PSK_MAX_CONCURRENCY];
  batch_item *slot_item[PSK_MAX_CONCURRENCY]; /* running there, or NULL */
  batch_item items[1]; /* n of them (at least one, for the array) */
} batch;

static void batch_release(lua_State *L, batch *b) {
  int i;
  psk_batch_free(b->net); /* its transfers out of the multi, then it */
  b->net = NULL;
  for (i = 0; i < PSK_MAX_CONCURRENCY; i++) {
    if (b->slot_t[i] && b->c->http) psk_http_give(b->c->http, b->slot_t[i]);
    b->slot_t[i] = NULL;
    b->slot_item[i] = NULL;
  }
  for (i = 0; i < b->n; i++) lpsk_job_release(L, &b->items[i].j);
}

int lpsk_batch_gc(lua_State *L) {
  batch_release(L, luaL_checkudata(L, 1, BATCH_MT));
  return 0;
}

static void many_release(lua_State *L, int obj) {
  batch_release(L, lua_touserdata(L, obj));
}

/* Pushes a batch for the list at arg, every item checked first (one bad
   item raises, naming it, before anything is sent); each job keeps its
   own copy of its message_id. [-0, +1, v] */
static batch *new_batch(lua_State *L, Client *c, int arg, int conc) {
  int i, n = (int)psk_rawlen(L, arg);
  size_t size =
      sizeof(batch) + sizeof(batch_item) * (size_t)(n > 1 ? n - 1 : 0);
  batch *b = psk_newuserdata(L, size);
  memset(b, 0, size);
  b->c = c;
  psk_setmetatable(L, BATCH_MT);
  for (i = 0; i < n; i++) {
    char pfx[32];
    pin_args a;
    snprintf(pfx, sizeof pfx, "item %d: ", i + 1);
    lua_rawgeti(L, arg, i + 1);
    lpsk_check_pin_args(L, -1, arg, pfx, &a);
    if (lpsk_job_init(&b->items[i].j, c, &a, i + 1, NULL) != 0)
      luaL_error(L, "periskope: out of memory");
    b->items[i].j.paced = 1;
    b->n = i + 1; /* released from here on */
    lua_pop(L, 2);
  }
  b->conc = conc < n ? conc : n;
  return b;
}

/* Raises when a hook closed the client: the batch stops as it would for
   the hook's own error. */
static void check_open(lua_State *L, const batch *b) {
  if (b->c->closed)
    luaL_error(L, "periskope: attempt to use a closed client (closed "
                  "during pin_many)");
}

/* The first item waiting to start whose retry wait is over, or NULL;
   *timeout shrinks to the time until the next one's wait ends. */
static batch_item *next_ready(batch *b, double now, double *timeout) {
  int k;
  while (b->first < b->n && b->items[b->first].j.nout) b->first++;
  for (k = b->first; k < b->n; k++) {
    batch_item *it = &b->items[k];
    if (it->j.nout || it->running) continue; /* done, or running */
    if (it->not_before <= now) return it;
    if (it->not_before - now < *timeout) *timeout = it->not_before - now;
  }
  return NULL;
}

/* Stores the outcome on top (a result table; or nil, message, kind,
   which becomes { ok = false, error, kind, attempts }) as job j's result
   in the table at res, and pops it. */
static void store_result(lua_State *L, const pin_job *j, int res) {
  if (j->nout == 3) {
    lua_createtable(L, 0, 4);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "ok");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "error");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, j->attempt);
    lua_setfield(L, -2, "attempts");
    lua_replace(L, -4);
    lua_pop(L, 2);
  }
  lua_rawseti(L, res, j->index);
}

/* Item it is done, its outcome on top: stored as its result. */
static void item_done(lua_State *L, batch *b, batch_item *it, int res) {
  store_result(L, &it->j, res);
  b->done++;
  lpsk_job_release(L, &it->j); /* its request and id: the result has
                                  what counts */
}

/* Item it was not sent (lpsk_pace_ask's PACE_REFUSED or PACE_SHARE, with
   why): a retry to start later, or its result. */
static void item_unsent(lua_State *L, batch *b, int ud, batch_item *it,
                        int how, const psk_reply *why, int res) {
  double wait;
  if (lpsk_job_unsent(L, &it->j, ud, how, why, &wait) == JOB_WAIT) {
    it->not_before = psk_time_mono() + wait;
    return;
  }
  item_done(L, b, it, res);
}

/* Takes the reply of finished transfer t for the item in its slot: a
   retry to start later, or the item's result. */
static void finish_item(lua_State *L, batch *b, int ud, psk_transfer *t,
                        int res) {
  int slot = psk_transfer_tag(t);
  batch_item *it = b->slot_item[slot];
  double wait;
  b->slot_item[slot] = NULL;
  it->running = 0;
  if (lpsk_job_step(L, &it->j, ud, psk_transfer_reply(t), &wait) ==
      JOB_WAIT) {
    it->not_before = psk_time_mono() + wait;
    return;
  }
  item_done(L, b, it, res);
}

/* Starts item it in a free slot: its request event, then the transfer. */
static void start_item(lua_State *L, batch *b, int ud, batch_item *it,
                       int res) {
  int slot = 0;
  double wait;
  psk_transfer *t;
  while (b->slot_item[slot]) slot++; /* fewer than conc are running */
  if (!b->slot_t[slot] && !(b->slot_t[slot] = psk_http_take(b->c->http)))
    luaL_error(L, "periskope: out of memory");
  t = b->slot_t[slot];
  lpsk_job_step(L, &it->j, ud, NULL, &wait); /* JOB_SEND: the batch paced it */
  check_open(L, b);
  psk_transfer_set_tag(t, slot);
  b->slot_item[slot] = it;
  it->running = 1;
  /* A transfer that cannot start has its failure in its reply. */
  if (psk_batch_start(b->net, t, &it->j.req) != 0)
    finish_item(L, b, ud, t, res);
}

/* The request the batch's ready items waited for got no answer: as many
   of them as would have started share its failure (why). */
static void share_failure(lua_State *L, batch *b, int ud, const psk_reply *why,
                          int res) {
  int n = b->conc - psk_batch_running(b->net);
  while (n-- > 0) {
    double ignored = 1;
    batch_item *it = next_ready(b, psk_time_mono(), &ignored);
    if (!it) break;
    item_unsent(L, b, ud, it, PACE_SHARE, why, res);
    check_open(L, b);
  }
}

/* Starts what may start: a free slot, a ready item, budget left. With
   nothing of its own running, nothing would teach the batch its budget,
   so it goes (lpsk_pace_ask's lone waiter). Returns how long to wait for
   answers before looking again. */
static double start_ready(lua_State *L, batch *b, int ud, int res) {
  double timeout = 1;
  while (psk_batch_running(b->net) < b->conc) {
    double nap;
    pace_slot slot;
    psk_reply why;
    batch_item *it = next_ready(b, psk_time_mono(), &timeout);
    if (!it) break;
    switch (lpsk_pace_ask(L, b->c, ud, &b->w, psk_batch_running(b->net) == 0,
                          b->nested, 0, &nap, &slot, &why)) {
    case PACE_WAIT:
      return nap < timeout ? nap : timeout;
    case PACE_REFUSED:
      item_unsent(L, b, ud, it, PACE_REFUSED, &why, res);
      break;
    case PACE_SHARE:
      share_failure(L, b, ud, &why, res);
      break;
    default:
      it->j.slot = 1; /* the job owns the slot from here: released, it ends */
      it->j.shared = slot.shared;
      it->j.probe = slot.probe;
      start_item(L, b, ud, it, res);
    }
    check_open(L, b);
  }
  return timeout;
}

/* Under lpsk_run_busy: 1 the client, 2 the batch. Results in input order. */
static int many_body(lua_State *L) {
  batch *b = lua_touserdata(L, 2);
  int res;
  lua_createtable(L, b->n, 0);
  res = lua_gettop(L);
  if (!(b->net = psk_batch_new(b->c->http)))
    return luaL_error(L, "periskope: out of memory");
  while (b->done < b->n) {
    psk_transfer *t;
    double timeout;
    check_open(L, b);
    timeout = start_ready(L, b, 1, res);
    if (b->done >= b->n) break;
    t = psk_batch_wait(b->net, timeout);
    if (!t) lpsk_sleep(L, 0); /* a signal meanwhile: the host may act */
    for (; t; t = psk_batch_wait(b->net, 0)) {
      finish_item(L, b, 1, t, res);
      if (b->done < b->n) check_open(L, b);
    }
  }
  lua_settop(L, res);
  return 1;
}

/* Client:pin_many(list, opts): every item checked first, then sent over
   a multi handle, at most opts.concurrency at once, paced by the
   rate-limit headers, retried as pin retries; results in input order. */
int lpsk_client_pin_many(lua_State *L) {
  Client *c = lpsk_checkclient(L);
  int conc;
  batch *b;
  luaL_checktype(L, 2, LUA_TTABLE);
  conc = lpsk_check_many_options(L, 3);
  lua_settop(L, 2);
  b = new_batch(L, c, 2, conc);
  b->nested = c->busy > 0;
  return lpsk_run_busy(L, c, 1, 3, "many_body", many_release);
}

void lpsk_pin_open(lua_State *L, int state) {
  lua_pushvalue(L, state);
  lua_pushcclosure(L, pin_body, 1);
  lua_setfield(L, state, "pin_body");
  lua_pushvalue(L, state);
  lua_pushcclosure(L, many_body, 1);
  lua_setfield(L, state, "many_body");
}
