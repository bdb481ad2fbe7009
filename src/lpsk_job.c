/*
 * lpsk_job.c: the pin job. One pin, from its checked arguments to its
 * outcome, as a state machine that does no I/O of its own: its driver
 * sends the request when a step says JOB_SEND, waits when it says
 * JOB_WAIT, and hands the reply back to the next step. The blocking pin
 * drives it with psk_http_perform and a sleep; pin_many drives many over
 * a multi handle; job:step drives it from Lua, its exchange in another
 * thread (a psk_reply filled from what periskope.perform returned), on
 * the caller's loop or over the host's sockets. Pacing, events (and the
 * one formatter of PERISKOPE_DEBUG's lines), retries and the outcome are
 * the same whoever drives.
 *
 * Every step may call the client's on_event hook, which may do anything
 * (close the client, pin again, raise): nothing the job needs lives
 * where a hook can free it, and the reply is read in full before the
 * first event of a step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpsk.h"
#include "psk_time.h"

enum {
  J_PACE,   /* wants a slot for its next attempt */
  J_SENT,   /* its request is out: the next step takes the reply */
  J_SETTLE, /* its outcome waits in the registry for the pacer's settle,
               which waits for the host's sockets (or a held lock) */
  J_RETRY,  /* a retry waits: the next step asks for a slot again */
  J_DONE    /* the outcome was pushed */
};

/* ---------------------------------------------------------------- */
/* events                                                            */

/* The fields of an event's PERISKOPE_DEBUG line after its type, in this
   order, when present: never the request's headers. */
static const char *const debug_keys[] = {
    "attempt", "method", "url",   "status",  "elapsed", "trace_id", "kind",
    "seconds", "reason", "error", "message", "index",   NULL};

/* Adds field k of the event table at ev to b when it is a number (as
   %.14g) or a string: its value alone, or " k=value" when named. Read
   raw, popped before the buffer grows: the string stays anchored in the
   table, and the buffer may be on top of the stack. */
static void add_field(lua_State *L, luaL_Buffer *b, int ev, const char *k,
                      int named) {
  const char *v = NULL;
  size_t n = 0;
  char num[64];
  lua_pushstring(L, k);
  lua_rawget(L, ev);
  if (lua_type(L, -1) == LUA_TNUMBER) {
    snprintf(num, sizeof num, "%.14g", (double)lua_tonumber(L, -1));
    v = num;
    n = strlen(num);
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    v = lua_tolstring(L, -1, &n);
  }
  lua_pop(L, 1);
  if (!v) return;
  if (named) {
    luaL_addchar(b, ' ');
    luaL_addstring(b, k);
    luaL_addchar(b, '=');
  }
  luaL_addlstring(b, v, n);
}

/* Pushes the PERISKOPE_DEBUG line of the event table at ev, without its
   newline: "periskope: <type>", then key=value for each of debug_keys
   present. [-0, +1, m] */
static void push_debug_line(lua_State *L, int ev) {
  luaL_Buffer b;
  int i;
  ev = psk_absindex(L, ev);
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "periskope: ");
  add_field(L, &b, ev, "type", 0);
  for (i = 0; debug_keys[i]; i++) add_field(L, &b, ev, debug_keys[i], 1);
  luaL_pushresult(&b);
}

/* periskope.debug_line(event): the line PERISKOPE_DEBUG writes for an
   event table, without its newline. */
int lpsk_mod_debug_line(lua_State *L) {
  static const lpsk_tab tb = {1, NULL, "", "field", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushliteral(L, "type");
  lua_rawget(L, 1);
  if (lua_type(L, 2) != LUA_TSTRING)
    lpsk_bad(L, &tb, "type", "must be a string (the event's type)", 2);
  lua_pop(L, 1);
  push_debug_line(L, 1);
  return 1;
}

/* Whether the error value on top is Lua refusing a yield: the hook runs
   under lua_pcall, inside a C function, where no coroutine may yield. */
static int is_yield_error(lua_State *L) {
  const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
  return strstr(m, "attempt to yield across") != NULL ||
         strstr(m, "attempt to yield from outside a coroutine") != NULL;
}

/* Hands the event table on top to on_event (or the debug line) and pops
   it. Runs between transfers only. An error raised by the hook propagates
   unchanged (the driver cleans up on its way out), except a refused yield,
   which says what was refused. [-1, +0, e] */
void lpsk_emit(lua_State *L, Client *c, int ud) {
  int ev = lua_gettop(L);
  if (c->hook) {
    psk_getuvtable(L, ud);
    lua_getfield(L, -1, "on_event");
    lua_pushvalue(L, ev);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      if (is_yield_error(L))
        luaL_error(L,
                   "periskope: on_event may not yield: pin, pin_many and "
                   "job:step call it through lua_pcall (%s)",
                   lua_tostring(L, -1));
      lua_error(L);
    }
  } else {
    size_t n;
    const char *line;
    push_debug_line(L, ev);
    lua_pushliteral(L, "\n");
    lua_concat(L, 2);
    line = lua_tolstring(L, -1, &n);
    fwrite(line, 1, n, stderr); /* stderr is unbuffered: the line whole */
  }
  lua_settop(L, ev - 1);
}

void lpsk_ev_begin(lua_State *L, const char *type, int index) {
  lua_createtable(L, 0, 6);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  if (index) {
    lua_pushinteger(L, index);
    lua_setfield(L, -2, "index");
  }
}

static void ev_int(lua_State *L, const char *k, long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static void ev_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, (lua_Number)v);
  lua_setfield(L, -2, k);
}

static void ev_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

int lpsk_wants_events(const Client *c) { return c->hook || c->debug; }

static void ev_request(lua_State *L, const pin_job *j, int ud) {
  const psk_request *r = &j->req;
  lpsk_ev_begin(L, "request", j->index);
  ev_int(L, "attempt", j->attempt);
  ev_str(L, "method", "POST");
  lua_pushlstring(L, psk_buf_cstr(&r->url), r->url.len);
  lua_setfield(L, -2, "url");
  lpsk_push_request_headers(L, r, 1);
  lua_setfield(L, -2, "headers");
  lpsk_emit(L, j->c, ud);
}

/* With the result table on top. */
static void ev_response(lua_State *L, const pin_job *j, int ud,
                        const psk_reply *rep) {
  lpsk_ev_begin(L, "response", j->index);
  ev_int(L, "attempt", j->attempt);
  ev_int(L, "status", rep->status);
  ev_num(L, "elapsed", rep->elapsed);
  lua_getfield(L, -2, "trace_id");
  lua_setfield(L, -2, "trace_id");
  lua_getfield(L, -2, "rate_limit");
  lua_setfield(L, -2, "rate_limit");
  lpsk_emit(L, j->c, ud);
}

static void ev_failure(lua_State *L, const pin_job *j, int ud,
                       const psk_reply *rep) {
  lpsk_ev_begin(L, "failure", j->index);
  ev_int(L, "attempt", j->attempt);
  ev_str(L, "kind", psk_kind_names[rep->kind]);
  ev_str(L, "message", rep->message);
  lpsk_emit(L, j->c, ud);
}

void lpsk_ev_wait(lua_State *L, Client *c, int ud, double seconds,
                  int reason, int index) {
  if (!lpsk_wants_events(c)) return;
  lpsk_ev_begin(L, "wait", index);
  ev_num(L, "seconds", seconds);
  ev_str(L, "reason", psk_wait_reasons[reason]);
  lpsk_emit(L, c, ud);
}

/* ---------------------------------------------------------------- */
/* a reply                                                           */

static void keep_outcome(lua_State *L, pin_job *j, int n);

/* What to do after an outcome. */
typedef struct next_step {
  int retry;      /* make another attempt */
  double wait;    /* after this many seconds */
  int reason;     /* PSK_WAIT_* */
} next_step;

/* Pushes the result table of an answer and fills k from its head (k's
   pointers stay valid while the result is on the stack or the reply is
   unchanged). [-0, +1, m] */
static void push_answer(lua_State *L, const pin_job *j, int ud,
                        const psk_reply *rep, known *k) {
  int h;
  psk_getuvtable(L, ud); /* the head cache's strings */
  lpsk_push_head(L, &rep->head, k, &j->c->head, lua_gettop(L));
  lua_remove(L, -2);
  h = lua_gettop(L);
  lpsk_push_result(L, rep->status, h, k, psk_buf_cstr(&rep->body),
                   rep->body.len, j->attempt);
  lua_replace(L, h); /* the result holds the headers table */
}

/* Pushes nil, message, kind for a failure. [-0, +3, m] */
static void push_failure(lua_State *L, const psk_reply *rep) {
  lua_pushnil(L);
  lua_pushstring(L, rep->message);
  lua_pushstring(L, psk_kind_names[rep->kind]);
}

/* Whether to retry after this outcome (k: an answer's headers, or NULL
   for a failure), and after how long: the retry plan, within the
   client's retries and max_retry_wait. No retry while the circuit is
   open: it would not be sent. */
static void plan_retry(const pin_job *j, const psk_reply *rep, const known *k,
                       next_step *next) {
  Client *c = j->c;
  psk_outcome o;
  memset(&o, 0, sizeof o);
  o.status = rep->status;
  o.kind = rep->kind;
  if (k) {
    o.retry_after = k->v[K_RETRY_AFTER];
    o.retry_after_len = k->n[K_RETRY_AFTER];
    o.reset = k->v[K_RESET];
    o.reset_len = k->n[K_RESET];
    o.date = k->v[K_DATE];
    o.date_len = k->n[K_DATE];
  }
  next->retry = j->tries <= c->cfg.retries && !c->circuit_open &&
                psk_retry_plan(&o, j->tries, psk_time_wall(),
                               psk_random(&c->rng), &next->wait,
                               &next->reason) &&
                next->wait <= c->cfg.max_retry_wait;
}

/* The server's clock learns from an answer's Date: it was read between
   the request's sending and now. Returns that Date, or -1. */
static long long learn_clock(Client *c, const psk_reply *rep, const known *k) {
  long long date = -1;
  double now = psk_time_wall();
  const char *d = k->v[K_DATE];
  size_t n = k->n[K_DATE];
  if (d && c->date_len && n == c->date_len && memcmp(d, c->date_text, n) == 0)
    date = c->date; /* the same second as the last answer's */
  else if (d && psk_parse_http_date(d, n, &date) == PSK_OK) {
    c->date_len = n < sizeof c->date_text ? n : 0;
    memcpy(c->date_text, d, c->date_len);
    c->date = date;
  } else
    date = -1;
  psk_clock_learn(&c->clock, (double)date, now - rep->elapsed, now);
  return date;
}

/* The rest of an outcome's path, once the pacer has settled it (its n
   values on top; k: an answer's headers, or NULL): the retry plan and
   the response or failure event. */
static void after_settle(lua_State *L, pin_job *j, int ud, int n,
                         const psk_reply *rep, const known *k,
                         next_step *next) {
  j->slot = 0; /* after the settle: a raise in its limiter event leaves it
                  owed */
  plan_retry(j, rep, k, next);
  if (!lpsk_wants_events(j->c)) return;
  if (n == 1)
    ev_response(L, j, ud, rep);
  else
    ev_failure(L, j, ud, rep);
}

/* The one path every outcome takes, in pin, pin_many and job:step:
   pushes it (returns how many values), teaches the clock and the pacer
   (sent: the request had a slot) -- the pacer first: the circuit it may
   open takes the retry away -- then decides whether to retry and emits
   the response or failure event. Everything read from rep is read before
   the first call into Lua that may run a hook. A settle that waits for
   the host's sockets (or a held lock) leaves the job in J_SETTLE, the
   outcome kept, and the rest to settle_resume. */
static int take_reply(lua_State *L, pin_job *j, int ud, const psk_reply *rep,
                      int sent, next_step *next) {
  known k;
  int n, st;
  j->tries++;
  if (rep->status) {
    push_answer(L, j, ud, rep, &k);
    n = 1;
    st = lpsk_pace_settle(L, j->c, ud, &j->w, 1, j->shared, j->probe, &k,
                          learn_clock(j->c, rep, &k), rep);
  } else {
    push_failure(L, rep);
    n = 3;
    st = lpsk_pace_settle(L, j->c, ud, &j->w, sent,
                          sent ? j->shared : j->c->limited, sent && j->probe,
                          NULL, -1, rep);
  }
  if (st) {
    /* The outcome and what its rest needs wait for the settle. */
    j->settled = *rep;
    memset(&j->settled.head, 0, sizeof j->settled.head);
    memset(&j->settled.body, 0, sizeof j->settled.body);
    j->settle_sent = sent;
    j->settle_io = st == PACE_IO;
    keep_outcome(L, j, n);
    j->state = J_SETTLE;
    return 0;
  }
  after_settle(L, j, ud, n, rep, rep->status ? &k : NULL, next);
  return n;
}

/* Drops the outcome j kept while a retry waited. */
static void drop_kept(lua_State *L, pin_job *j) {
  if (j->kept > 0) luaL_unref(L, LUA_REGISTRYINDEX, j->kept);
  j->kept = 0;
  j->kept_n = 0;
}

/* Keeps the n values on top (an outcome) in the registry, popping them:
   a retry that is then refused ends the call with them. [-n, +0, m] */
static void keep_outcome(lua_State *L, pin_job *j, int n) {
  int i;
  drop_kept(L, j);
  lua_createtable(L, n, 0);
  for (i = n; i >= 1; i--) {
    lua_insert(L, -2); /* the table under the value */
    lua_rawseti(L, -2, i);
  }
  j->kept = luaL_ref(L, LUA_REGISTRYINDEX);
  j->kept_n = n;
}

/* Pushes the kept outcome; returns how many values. [-0, +n, m] */
static int push_kept(lua_State *L, pin_job *j) {
  int i, n = j->kept_n;
  lua_rawgeti(L, LUA_REGISTRYINDEX, j->kept);
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -(n + 1));
  drop_kept(L, j);
  return n;
}

/* After an outcome (its n values on top): a retry to wait for, or done.
   A client closed by a hook meanwhile makes no retry: the outcome in
   hand is the call's. */
static int job_next(lua_State *L, pin_job *j, int ud, int n,
                    const next_step *next, double *wait) {
  drop_kept(L, j);
  if (next->retry && !j->c->closed) {
    lpsk_ev_wait(L, j->c, ud, next->wait, next->reason, j->index);
    if (!j->c->closed) {
      keep_outcome(L, j, n);
      j->state = J_RETRY;
      *wait = next->wait;
      return JOB_WAIT;
    }
  }
  j->state = J_DONE;
  j->nout = n;
  return JOB_DONE;
}

/* What a job whose settle is out asks of its driver. */
static int settle_pending(pin_job *j, double *wait) {
  if (j->settle_io) return JOB_IO;
  *wait = LPSK_LOCK_NAP;
  return JOB_WAIT;
}

/* The step after a send: the answer or failure it got. */
static int job_answer(lua_State *L, pin_job *j, int ud, const psk_reply *rep,
                      double *wait) {
  next_step next = {0, 0, 0};
  int n = take_reply(L, j, ud, rep, 1, &next);
  if (j->state == J_SETTLE) return settle_pending(j, wait);
  return job_next(L, j, ud, n, &next, wait);
}

/* J_SETTLE: the settle again (it carries on from where it waited); once
   done, the kept outcome comes back and goes on its way. */
static int settle_resume(lua_State *L, pin_job *j, int ud, double *wait) {
  next_step next = {0, 0, 0};
  known k;
  int n, st = lpsk_pace_settle(L, j->c, ud, &j->w, j->settle_sent,
                               j->settle_sent ? j->shared : j->c->limited,
                               j->settle_sent && j->probe, NULL, -1, NULL);
  if (st) {
    j->settle_io = st == PACE_IO;
    return settle_pending(j, wait);
  }
  n = push_kept(L, j);
  if (n == 1) {
    /* The answer's headers, from its table: they live on the stack. */
    lua_getfield(L, -1, "headers");
    lpsk_known_from_table(L, lua_gettop(L), &k);
    lua_insert(L, -2);
  }
  after_settle(L, j, ud, n, &j->settled, n == 1 ? &k : NULL, &next);
  if (n == 1) {
    int v = lua_gettop(L);
    lua_remove(L, v - 1); /* the headers table: the result holds it */
  }
  return job_next(L, j, ud, n, &next, wait);
}

int lpsk_job_unsent(lua_State *L, pin_job *j, int ud, int how,
                    const psk_reply *why, double *wait) {
  *wait = 0;
  if (how == PACE_SHARE) {
    next_step next = {0, 0, 0};
    int n = take_reply(L, j, ud, why, 0, &next);
    if (j->state == J_SETTLE) return settle_pending(j, wait);
    return job_next(L, j, ud, n, &next, wait);
  }
  /* Refused: nothing sent. The call ends with the outcome a retry waited
     to better, or with the refusal when it had none. */
  if (lpsk_wants_events(j->c)) ev_failure(L, j, ud, why);
  j->state = J_DONE;
  if (j->kept > 0) {
    j->nout = push_kept(L, j);
  } else {
    push_failure(L, why);
    j->nout = 3;
  }
  return JOB_DONE;
}

/* ---------------------------------------------------------------- */
/* the job                                                           */

/* The buffers of a job's request: a client keeps one set between its
   pins, which a job borrows to build its request and gives back when it
   is released, so that a pin allocates none. A job started while they
   are lent (a batch's, a nested pin's) has its own. */
static void swap_buffers(psk_request *a, psk_request *b) {
  psk_buf url = a->url, body = a->body;
  a->url = b->url;
  a->body = b->body;
  b->url = url;
  b->body = body;
}

int lpsk_job_step(lua_State *L, pin_job *j, int ud, const psk_reply *rep,
                  double *wait) {
  *wait = 0;
  switch (j->state) {
  case J_SENT:
    return job_answer(L, j, ud, rep, wait);
  case J_SETTLE:
    return settle_resume(L, j, ud, wait);
  case J_RETRY: {
    lpace_io *io = j->w.io;
    j->state = J_PACE;
    memset(&j->w, 0, sizeof j->w);
    j->w.io = io;
    break;
  }
  case J_PACE:
    break;
  default:
    return luaL_error(L, "periskope: a finished pin job was stepped");
  }
  if (!j->paced) {
    pace_slot slot;
    psk_reply why;
    switch (lpsk_pace_ask(L, j->c, ud, &j->w, 0, j->nested, j->index, wait,
                          &slot, &why)) {
    case PACE_WAIT:
      return JOB_WAIT;
    case PACE_IO:
      return JOB_IO;
    case PACE_REFUSED:
      return lpsk_job_unsent(L, j, ud, PACE_REFUSED, &why, wait);
    case PACE_SHARE:
      return lpsk_job_unsent(L, j, ud, PACE_SHARE, &why, wait);
    default:
      j->slot = 1;
      j->shared = slot.shared;
      j->probe = slot.probe;
    }
  }
  if (!j->built) {
    if (j->c->spare.url.data && !j->req.url.data)
      swap_buffers(&j->req, &j->c->spare);
    lpsk_build_request(L, j->c, &j->req, &j->a);
    j->built = 1;
  }
  j->attempt++;
  j->state = J_SENT;
  if (lpsk_wants_events(j->c)) ev_request(L, j, ud);
  return JOB_SEND;
}

int lpsk_job_init(pin_job *j, Client *c, const pin_args *a, int index,
                  char *idbuf) {
  char *id = idbuf;
  memset(j, 0, sizeof *j);
  psk_request_init(&j->req);
  if (!id && !(id = j->id = malloc(a->idlen + 1))) return -1;
  memcpy(id, a->id, a->idlen);
  id[a->idlen] = '\0';
  j->a = *a;
  j->a.id = id;
  j->c = c;
  j->index = index;
  j->state = J_PACE;
  return 0;
}

void lpsk_job_release(lua_State *L, pin_job *j) {
  /* A slot taken for a request that never got its answer to the pacer
     (a hook raised at its request event, the batch stopped): unanswered,
     and no verdict for the circuit. A shared one is owed to the store,
     which the next operation that reaches it settles; the store is not
     called from here. */
  if (j->slot && j->c) {
    if (j->shared) {
      j->c->unsettled++;
    } else {
      psk_budget_settle(&j->c->own.budget, 0, -1, -1, -1, -1);
      if (j->probe) j->c->own.circuit.probe_until = 0;
    }
  }
  j->slot = 0;
  drop_kept(L, j);
  /* Buffers go back to an open client with none (a closed one is, or
     will be, released: they are freed here). */
  if (j->c && !j->c->closed && !j->c->spare.url.data && j->req.url.data)
    swap_buffers(&j->req, &j->c->spare);
  psk_request_free(&j->req);
  j->built = 0;
  free(j->id);
  j->id = NULL;
  j->a.id = NULL;
}

pin_job *lpsk_job_new(lua_State *L, Client *c, int arg, size_t size,
                      const char *mt) {
  pin_args a;
  pin_job *j;
  lpsk_check_pin_args(L, arg, arg, "", &a); /* message_id on the stack */
  /* Created empty, metatable set, then filled (it cannot fail: the id's
     copy lives in the same block), so __gc always finds a job. */
  j = psk_newuserdata(L, size + a.idlen + 1);
  memset(j, 0, size); /* what __gc may see before lpsk_job_init */
  psk_setmetatable(L, mt);
  lpsk_job_init(j, c, &a, 0, (char *)j + size);
  lua_remove(L, -2); /* message_id: the job has its own copy */
  return j;
}

int lpsk_job_awaits_reply(const pin_job *j) { return j->state == J_SENT; }
