/*
 * lpsk_async.c: the pin job driven from Lua, for hosts whose event loop
 * must not block (OpenResty, Neovim, anything with luv).
 *
 *   client:pin_job(args[, {io = ...}])
 *                          checks args as pin does and makes a job;
 *   job:step(...)          advances it: "send", request | "watch", fd,
 *                          "r", seconds | a socket call ("connect",
 *                          "handshake", "write", "read", "release":
 *                          lpsk_wire.c) | "wait", seconds | "done",
 *                          <what pin returns>;
 *   job:cancel(), job:close()
 *                          end it between steps, close its descriptor;
 *   periskope.perform(request)
 *                          the one exchange a "send" asks for, blocking,
 *                          in whatever Lua state calls it (a thread of
 *                          nginx's pool, of libuv's), through a transport
 *                          that state keeps: its results are what the
 *                          next job:step takes.
 *
 * Everything pin does -- pacing (shared stores too), events, retries and
 * the result -- happens in job:step, on the host's own thread, under the
 * same busy rule as pin (lpsk_client.c): a hook may close the client, pin
 * again or raise, and a job whose step raised is over. With io = "send"
 * only the exchange crosses to another thread, as plain strings and
 * numbers.
 */
#include <stdlib.h>
#include <string.h>

#include "lpsk.h"
#include "psk_pace.h"

#define TRANSPORT_MT "periskope.Transport"
/* Transports one Lua state keeps (one per destination, options and
   headers but x-phone); past this many, they are all dropped. */
#define TRANSPORTS_MAX 8

/* ---------------------------------------------------------------- */
/* client:pin_job and job:step                                       */

/* A PinJob: the job, and what driving it from Lua takes. */
typedef struct step_job {
  pin_job j;            /* first: lpsk_job_new makes it */
  int io;               /* how its exchanges run (JOB_IO_*) */
  psk_watch *watch;     /* JOB_IO_WATCH: the descriptor its loop watches */
  psk_transfer *t;      /* JOB_IO_WATCH: its transfer, from the client's
                           pool */
  lpsk_wire *wire;      /* JOB_IO_BYTES (and a watched job's store
                           operations): its exchange's state */
  const psk_reply *fed; /* the reply handed to the next step */
  int keep;             /* the step asked for more (send, wait, ...) */
  int stepping;         /* a step of it runs (a hook may not step it
                           again) */
  int cancelled;        /* job:cancel was called (during a step: it ends
                           when the step returns) */
} step_job;

/* Releases what sj holds but its watch, whose descriptor may still be in
   its loop's poll set (job:close and the collector close it): its
   transfer back to the pool, its exchange's and its store operation's
   state, and its job, which is over (a later step says so). Idempotent,
   never raises. */
static void step_job_release(lua_State *L, step_job *sj) {
  pin_job *j = &sj->j;
  /* A client is released only when no call runs on it: while it has its
     transport the pool is there (a released one freed the transfer). */
  if (sj->t && j->c && j->c->http) psk_http_give(j->c->http, sj->t);
  sj->t = NULL;
  lpsk_wire_free(sj->wire);
  sj->wire = NULL;
  lpsk_job_release(L, j);
  lpace_io_free(j->w.io);
  j->w.io = NULL;
  j->c = NULL;
}

int lpsk_job_gc(lua_State *L) {
  step_job *sj = luaL_checkudata(L, 1, JOB_MT);
  step_job_release(L, sj);
  psk_watch_free(sj->watch);
  sj->watch = NULL;
  return 0;
}

/* client:pin_job(args[, options]): a job of this client, its arguments
   checked now (raises as pin does, before anything is acquired). The job
   keeps its client alive (its uservalue). */
int lpsk_client_pin_job(lua_State *L) {
  Client *c = lpsk_checkclient(L);
  int io = lpsk_check_job_options(L, 3);
  step_job *sj;
  lua_settop(L, 2);
  sj = (step_job *)lpsk_job_new(L, c, 2, sizeof *sj, JOB_MT);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "client");
  psk_setuvtable(L, -2);
  sj->j.nested = c->busy > 0;
  sj->io = io;
  if (io == JOB_IO_WATCH && !(sj->watch = psk_watch_new()))
    return luaL_error(L, "periskope: pin_job: no watch could be made (out of "
                         "file descriptors or memory; io = \"watch\" needs "
                         "Linux's epoll)");
  /* A host that must not block has its store's operations go through
     its own sockets (and a held dictionary lock is a short wait). */
  if ((io == JOB_IO_BYTES || (io == JOB_IO_WATCH && c->limited)) &&
      !(sj->wire = lpsk_wire_new()))
    return luaL_error(L, "periskope: out of memory");
  if (io != JOB_IO_SEND && c->limited && !(sj->j.w.io = lpace_io_new()))
    return luaL_error(L, "periskope: out of memory");
  return 1;
}

/* Fills rep with a too_large failure for an answer fed past its caps. */
static void fed_too_large(psk_reply *rep, const pin_job *j, const char *what) {
  rep->status = 0;
  rep->kind = PSK_KIND_TOO_LARGE;
  snprintf(rep->message, sizeof rep->message,
           "periskope: POST %.200s: response too large (%s)",
           psk_buf_cstr(&j->req.url), what);
}

/* The reply to a "send", from the arguments of job:step at 2..5:
   status, head, body, elapsed -- or nil, message, kind, elapsed (the
   order pin returns a failure in). The strings stay on the stack while
   rep points into them. What a custom driver feeds is capped as the
   module's own transports cap what they read: a head over 256 KiB or a
   body over max_body is a too_large failure. [-0, +0, v] */
static void read_reply(lua_State *L, const pin_job *j, psk_reply *rep) {
  memset(rep, 0, sizeof *rep);
  if (!lua_isnoneornil(L, 5) && lua_type(L, 5) != LUA_TNUMBER)
    lpsk_arg_error(L, 5, "step",
              lua_pushfstring(L, "elapsed must be a number of seconds, %s",
                              lpsk_got(L, 5)));
  rep->elapsed = lua_isnoneornil(L, 5) ? 0 : (double)lua_tonumber(L, 5);
  if (lua_isnil(L, 2)) {
    const char *msg = lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : NULL;
    const char *kind = lua_type(L, 4) == LUA_TSTRING ? lua_tostring(L, 4) : "";
    int k;
    for (k = PSK_KIND_NONE + 1; k <= PSK_KIND_EXCHANGE_LAST; k++)
      if (strcmp(kind, psk_kind_names[k]) == 0) break;
    if (!msg)
      lpsk_arg_error(L, 3, "step",
                lua_pushfstring(L, "the failure's message must be a string, "
                                   "%s",
                                lpsk_got(L, 3)));
    if (k > PSK_KIND_EXCHANGE_LAST)
      lpsk_arg_error(L, 4, "step",
                "the failure's kind must be one of timeout, connect, "
                "resolve, tls, network or too_large");
    rep->kind = k;
    snprintf(rep->message, sizeof rep->message, "%s", msg);
  } else {
    long long status = 0;
    size_t n;
    if (!psk_tointegral(L, 2, &status) || status < 100 || status > 599)
      lpsk_arg_error(L, 2, "step",
                lua_pushfstring(L,
                                "must be the HTTP status (100 to 599), or nil "
                                "when no answer came, %s",
                                lpsk_got(L, 2)));
    if (lua_type(L, 3) != LUA_TSTRING)
      lpsk_arg_error(L, 3, "step",
                lua_pushfstring(L, "the head must be a string, %s",
                                lpsk_got(L, 3)));
    if (!lua_isnoneornil(L, 4) && lua_type(L, 4) != LUA_TSTRING)
      lpsk_arg_error(L, 4, "step",
                lua_pushfstring(L, "the body must be a string, %s",
                                lpsk_got(L, 4)));
    rep->status = (long)status;
    /* Read-only views of the Lua strings: nothing appends to them. */
    rep->head.data = (char *)lua_tolstring(L, 3, &n);
    rep->head.len = rep->head.cap = n;
    rep->head.size = n + 1;
    if (n > PSK_HEADERS_MAX) {
      fed_too_large(rep, j, "a head over 256 KiB");
      return;
    }
    rep->body.data = (char *)(lua_isnoneornil(L, 4) ? "" : lua_tolstring(L, 4, &n));
    if (lua_isnoneornil(L, 4)) n = 0;
    rep->body.len = rep->body.cap = n;
    rep->body.size = n + 1;
    if (n > j->c->cfg.max_body) {
      char what[64];
      snprintf(what, sizeof what, "a body over max_body, %lu bytes",
               (unsigned long)j->c->cfg.max_body);
      fed_too_large(rep, j, what);
    }
  }
}

/* Pushes the request of a "send" as plain values, for another Lua state:
   { method, url, headers = { "Name: value", ... }, body, timeout,
   connect_timeout, max_body, ca_file }. [-0, +1, m] */
static void push_send(lua_State *L, const pin_job *j) {
  const psk_config *cfg = &j->c->cfg;
  const psk_request *r = &j->req;
  int i;
  lua_createtable(L, 0, 8);
  lua_pushliteral(L, "POST");
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, psk_buf_cstr(&r->url), r->url.len);
  lua_setfield(L, -2, "url");
  lua_createtable(L, r->nheaders, 0);
  for (i = 0; i < r->nheaders; i++) {
    lua_pushfstring(L, "%s: %s", r->headers[i].name, r->headers[i].value);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, psk_buf_cstr(&r->body), r->body.len);
  lua_setfield(L, -2, "body");
  lua_pushnumber(L, (lua_Number)cfg->timeout);
  lua_setfield(L, -2, "timeout");
  lua_pushnumber(L, (lua_Number)cfg->connect_timeout);
  lua_setfield(L, -2, "connect_timeout");
  lua_pushinteger(L, (lua_Integer)cfg->max_body);
  lua_setfield(L, -2, "max_body");
  if (cfg->ca_file) {
    lua_pushstring(L, cfg->ca_file);
    lua_setfield(L, -2, "ca_file");
  }
}

/* Pushes "done", nil, message, "cancelled". [-0, +4, m] */
static int push_cancelled(lua_State *L) {
  lua_pushliteral(L, "done");
  lua_pushnil(L);
  lua_pushliteral(L, "periskope: cancelled: the pin job was cancelled");
  lua_pushstring(L, psk_kind_names[PSK_KIND_CANCELLED]);
  return 4;
}

/* Pushes "watch", fd, "r", seconds (nil: no time limit): what the loop
   watches before the next step. [-0, +4, m] */
static int push_watch(lua_State *L, step_job *sj) {
  double wait = psk_watch_wait(sj->watch);
  sj->keep = 1;
  lua_pushliteral(L, "watch");
  lua_pushinteger(L, psk_watch_fd(sj->watch));
  lua_pushliteral(L, "r");
  if (wait >= 0)
    lua_pushnumber(L, (lua_Number)wait);
  else
    lua_pushnil(L);
  return 4;
}

/* Under lpsk_run_busy: 1 the client, 2 the job (its reply in sj->fed).
   A job cancelled by a hook during this step ends here. A watched job
   acts on what is ready first; a request it starts that ends at once (it
   could not start) is answered in the same step. */
static int step_body(lua_State *L) {
  Client *c = lua_touserdata(L, 1);
  step_job *sj = lua_touserdata(L, 2);
  pin_job *j = &sj->j;
  const psk_reply *rep = sj->fed;
  double wait;
  int action;
  for (;;) {
    if (sj->io == JOB_IO_WATCH && lpsk_job_awaits_reply(j) && !rep &&
        !(rep = psk_http_watch_step(c->http, sj->t)))
      return push_watch(L, sj);
    action = lpsk_job_step(L, j, 1, rep, &wait);
    rep = NULL;
    if (!sj->cancelled && action == JOB_IO) {
      /* The store's operation, over the host's sockets. */
      sj->keep = 1;
      return lpsk_wire_store(L, sj->wire, j->w.io);
    }
    if (!sj->cancelled && action == JOB_SEND && sj->io == JOB_IO_BYTES) {
      if (c->closed)
        return luaL_error(L, "periskope: attempt to use a closed client");
      sj->keep = 1;
      return lpsk_wire_begin(L, j, sj->wire);
    }
    if (sj->cancelled || action != JOB_SEND || sj->io != JOB_IO_WATCH) break;
    if (c->closed)
      return luaL_error(L, "periskope: attempt to use a closed client");
    if (!sj->t && !(sj->t = psk_http_take(c->http)))
      return luaL_error(L, "periskope: out of memory");
    if (psk_http_watch_start(c->http, sj->t, sj->watch, &j->req) == 0)
      return push_watch(L, sj);
    rep = psk_transfer_reply(sj->t); /* its failure: the next answer */
  }
  if (sj->cancelled) {
    lua_settop(L, 2);
    return push_cancelled(L);
  }
  switch (action) {
  case JOB_SEND:
    sj->keep = 1;
    lua_pushliteral(L, "send");
    push_send(L, j);
    return 2;
  case JOB_WAIT:
    sj->keep = 1;
    lua_pushliteral(L, "wait");
    lua_pushnumber(L, (lua_Number)wait);
    return 2;
  default:
    lua_pushliteral(L, "done");
    lua_insert(L, -(j->nout + 1));
    return j->nout + 1;
  }
}

/* Ends job sj between steps: its place in a store's queue is given
   back, what it holds is released, and a later step says it is over. */
static void job_end(lua_State *L, step_job *sj, int ud) {
  pin_job *j = &sj->j;
  if (j->c && !j->c->closed) lpsk_pace_leave(L, j->c, ud, &j->w);
  step_job_release(L, sj);
}

/* After a step: a job that is done, cancelled, or whose step raised, is
   over. */
static void step_release(lua_State *L, int obj) {
  step_job *sj = lua_touserdata(L, obj);
  sj->stepping = 0;
  if (!sj->keep || sj->cancelled) step_job_release(L, sj);
  sj->keep = 0;
  sj->fed = NULL;
}

/* The PinJob at 1, for method fn. [-0, +0, v] */
static step_job *check_job(lua_State *L, const char *fn) {
  step_job *j = psk_testudata(L, 1, JOB_MT);
  if (!j)
    lpsk_arg_error(L, 1, fn,
              lua_pushfstring(L, "periskope.PinJob expected, got %s",
                              luaL_typename(L, 1)));
  return j;
}

/* job:step([status, head, body, elapsed | nil, message, kind, elapsed]) */
static int job_step(lua_State *L) {
  step_job *sj = check_job(L, "step");
  pin_job *j = &sj->j;
  psk_reply rep;
  if (sj->stepping)
    return luaL_error(L, "periskope: job:step: this job is running (a hook "
                         "of its own step may not step it again)");
  if (!j->c)
    return luaL_error(L, "periskope: this pin job is over (it was done, "
                         "cancelled, or a step raised)");
  if (j->c->closed) {
    step_job_release(L, sj);
    return luaL_error(L, "periskope: attempt to use a closed client");
  }
  if (sj->io == JOB_IO_WATCH && !lpsk_wire_busy(sj->wire)) {
    if (!lua_isnone(L, 2))
      return lpsk_arg_error(L, 2, "step", "a watched job takes no answer: "
                                          "call job:step() when its "
                                          "descriptor is ready or its time "
                                          "is up");
  } else if (sj->io != JOB_IO_SEND) {
    if (lpsk_wire_busy(sj->wire)) {
      /* A socket call's result: the exchange goes on, no hook runs. */
      int n = lpsk_wire_step(L, j, sj->wire);
      if (n > 0) return n;
      sj->fed = lpsk_wire_outcome(sj->wire);
    } else if (!lua_isnone(L, 2)) {
      return lpsk_arg_error(L, 2, "step", "no exchange is under way: call "
                                          "job:step() without arguments");
    }
  } else if (lpsk_job_awaits_reply(j)) {
    if (lua_isnone(L, 2))
      return luaL_error(L, "periskope: job:step expects the answer to the "
                           "request it asked to send (status, head, body, "
                           "elapsed; or nil, message, kind, elapsed)");
    lua_settop(L, 5);
    read_reply(L, j, &rep); /* points into the strings at 3 and 4 */
    sj->fed = &rep;
  } else if (!lua_isnone(L, 2)) {
    return lpsk_arg_error(L, 2, "step", "no answer is awaited: call "
                                        "job:step() without arguments after "
                                        "a wait");
  }
  psk_getuvtable(L, 1);
  lua_getfield(L, -1, "client");
  sj->stepping = 1; /* step_release clears it, whatever way the step ends */
  return lpsk_run_busy(L, j->c, lua_gettop(L), 1, "step_body", step_release);
}

/* job:cancel(): ends the job between steps -- its request in flight is
   dropped, its slot given back -- and closes it (job:close); returns
   true, and a later step raises. From a hook of its own step: that step
   returns "done", nil, message, "cancelled" (its descriptor then closes
   with job:close or the collector). A job that is over: it is closed. */
static int job_cancel(lua_State *L) {
  step_job *sj = check_job(L, "cancel");
  if (sj->stepping) {
    sj->cancelled = 1;
  } else {
    if (sj->j.c) {
      sj->cancelled = 1;
      psk_getuvtable(L, 1);
      lua_getfield(L, -1, "client");
      job_end(L, sj, lua_gettop(L));
    }
    psk_watch_free(sj->watch);
    sj->watch = NULL;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* job:close(): closes the descriptor a watched job kept for its loop
   (once the loop no longer watches it; the collector does it too), and
   ends the job as cancel does if it is not over. Returns true. */
static int job_close(lua_State *L) {
  step_job *sj = check_job(L, "close");
  if (sj->stepping)
    return luaL_error(L, "periskope: job:close: this job is running (a hook "
                         "of its own step may cancel it instead)");
  return job_cancel(L);
}

/* ---------------------------------------------------------------- */
/* periskope.perform                                                 */

/* The connections of one Lua state to one destination. */
typedef struct transport {
  psk_config cfg;    /* owned: base_url (the request's URL), ca_file */
  psk_http *http;    /* NULL once released */
  psk_transfer *held; /* taken and not yet given back (a raise came) */
} transport;

static int transport_gc(lua_State *L) {
  transport *tr = luaL_checkudata(L, 1, TRANSPORT_MT);
  if (tr->http && tr->held) psk_http_give(tr->http, tr->held);
  tr->held = NULL;
  psk_http_free(tr->http);
  tr->http = NULL;
  psk_config_free(&tr->cfg);
  return 0;
}

/* perform's errors name it: called from another Lua state (a thread of
   nginx's pool), Lua's own luaL_argerror may only find '?'. */
static const lpsk_tab request_tab = {1, "perform", "", "field", NULL};

enum {
  R_METHOD, R_URL, R_HEADERS, R_BODY, R_TIMEOUT, R_CONNECT_TIMEOUT,
  R_MAX_BODY, R_CA_FILE, R_N
};
static const char *const request_fields[R_N + 1] = {
    "method",  "url",     "headers",  "body", "timeout", "connect_timeout",
    "max_body", "ca_file", NULL};

/* Raises for field name of the request, with its value at vi (0: leave
   "got" out). [-0, +0, v] */
static int req_bad(lua_State *L, const char *name, const char *rule, int vi) {
  return lpsk_bad(L, &request_tab, name, rule, vi);
}

/* Whether a header name is x-phone, in any case. */
static int is_x_phone(const char *name) {
  static const char want[] = "x-phone";
  size_t i;
  for (i = 0; i < sizeof want; i++) {
    char c = name[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
    if (c != want[i]) return 0;
  }
  return 1;
}

/* The longest header line a pin sends: "Authorization: Bearer ", the
   longest key, and room to spare. */
#define REQ_LINE_MAX (PSK_API_KEY_MAX + 64)

/* The header lines at h (the request's headers field, or 0) into r,
   checked as build_pin makes them (a token, a colon, a value without
   control bytes; x-phone a phone as the phone option normalizes it; at
   most as many and as long as a pin's), split into names and values kept
   in a Lua-owned block pushed on the stack. Every line but x-phone goes
   to keytext (with the options, what a transport is kept for); x-phone
   goes to r->phone. [-0, +1, v] */
static void req_headers(lua_State *L, int h, psk_request *r,
                        psk_buf *keytext) {
  size_t total = 0, used = 0;
  int i, n;
  char *block;
  if (!h)
    req_bad(L, "headers", "is required (an array of \"Name: value\" "
                          "strings)", 0);
  if (!lua_istable(L, h))
    req_bad(L, "headers", "must be an array of \"Name: value\" strings", h);
  n = (int)psk_rawlen(L, h);
  if (n > PSK_REQ_HEADERS)
    req_bad(L, "headers", "holds more lines than a pin sends (5)", 0);
  for (i = 1; i <= n; i++) {
    size_t len;
    lua_rawgeti(L, h, i);
    if (lua_type(L, -1) != LUA_TSTRING)
      req_bad(L, "headers", "must hold strings", -1);
    lua_tolstring(L, -1, &len);
    if (len > REQ_LINE_MAX)
      req_bad(L, "headers", "holds a line longer than a pin's", 0);
    total += len + 1;
    lua_pop(L, 1);
  }
  block = psk_newuserdata(L, total ? total : 1);
  r->nheaders = 0;
  r->phone[0] = '\0';
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *line;
    char *copy = block + used;
    psk_header f;
    size_t pos = 0;
    lua_rawgeti(L, h, i);
    line = lua_tolstring(L, -1, &len);
    if (psk_has_ctl(line, len))
      req_bad(L, "headers", "must hold no control bytes", 0);
    /* A field as a response's head would read it: a token, a colon. */
    if (!psk_header_next(line, len, &pos, &f) || f.name != line)
      req_bad(L, "headers", "must hold \"Name: value\" lines", 0);
    memcpy(copy, line, len);
    copy[len] = '\0';
    copy[f.name_len] = '\0';
    r->headers[r->nheaders].name = copy;
    r->headers[r->nheaders].value = copy + (f.value - line);
    copy[(f.value - line) + f.value_len] = '\0';
    if (is_x_phone(copy)) {
      char phone[PSK_PHONE_MAX + 1];
      psk_err e;
      if (psk_normalize_phone(f.value, f.value_len, phone, &e) != PSK_OK ||
          strlen(phone) != f.value_len)
        req_bad(L, "headers",
                "x-phone must be a phone as the phone option sends it "
                "(7 to 15 digits, or phone-<letters and digits>)",
                0);
      memcpy(r->phone, phone, f.value_len + 1);
    } else if (psk_buf_append(keytext, line, len) != PSK_OK ||
               psk_buf_append(keytext, "\n", 1) != PSK_OK) {
      luaL_error(L, "periskope: out of memory");
    }
    r->nheaders++;
    used += len + 1;
    lua_pop(L, 1);
  }
}

/* Raises for a buffer that refused an append: out of memory, or why. */
static void too_long(lua_State *L, int st, const char *name,
                     const char *why) {
  if (st == PSK_NOMEM) luaL_error(L, "periskope: out of memory");
  req_bad(L, name, why, 0);
}

/* The request's URL at vi into r->url (its path the request target) and
   its origin (scheme, host and port: what a transport is kept for) into
   origin: the origin by the rules of base_url (http only to loopback),
   the rest a path without a query, fragment, space, control or
   non-ASCII byte. [-0, +0, v] */
static void req_url(lua_State *L, int vi, psk_request *r, psk_buf *origin) {
  size_t n = 0, i, path;
  int st;
  psk_err e;
  const char *url = lpsk_opt_string(L, &request_tab, vi, "url", &n, 0);
  if (!url) {
    req_bad(L, "url", "is required (an http or https URL)", 0);
    return; /* not reached (it raises): for the static checkers */
  }
  path = psk_url_path_offset(url); /* stops at a NUL, which the walk below refuses */
  if ((st = psk_http_base_url(url, path, origin, &e)) != PSK_OK)
    too_long(L, st == PSK_INVALID ? PSK_TOO_LARGE : st, "url", e.msg);
  for (i = path; i < n; i++) {
    unsigned char c = (unsigned char)url[i];
    if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#' || c == '\\')
      req_bad(L, "url", "must have a plain path (no query, fragment, space "
                        "or control byte)", 0);
  }
  if ((st = psk_buf_append(&r->url, url, n)) != PSK_OK)
    too_long(L, st, "url", "is longer than a pin's URL");
  r->target = path; /* sent as the request target, as build_pin's is */
}

/* The transport kept under key in this state's module state, or a new
   one for cfg (whose strings it takes). key: the hex SHA-256 the caller
   made of what a transport serves (its origin, options and header lines
   but x-phone). [-0, +1, v] */
static transport *get_transport(lua_State *L, const char *key,
                                psk_config *cfg) {
  transport *tr;
  char err[256];
  int n = 0;
  lua_getfield(L, lua_upvalueindex(1), "transports");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, lua_upvalueindex(1), "transports");
  }
  lua_getfield(L, -1, key);
  tr = psk_testudata(L, -1, TRANSPORT_MT);
  if (tr && tr->http) {
    lua_remove(L, -2);
    psk_config_free(cfg);
    return tr;
  }
  lua_pop(L, 1);
  /* Few destinations in practice: past TRANSPORTS_MAX, start afresh (the
     collector closes the old ones). */
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    n++;
  }
  if (n >= TRANSPORTS_MAX) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, lua_upvalueindex(1), "transports");
  }
  tr = psk_newuserdata(L, sizeof *tr);
  memset(tr, 0, sizeof *tr);
  psk_setmetatable(L, TRANSPORT_MT);
  tr->cfg = *cfg; /* the transport owns the strings from here on */
  memset(cfg, 0, sizeof *cfg);
  tr->http = psk_http_new(&tr->cfg, err, sizeof err);
  if (!tr->http) luaL_error(L, "%s", err);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, key);
  lua_remove(L, -2);
  return tr;
}

/* Owns the request and config of one perform while it is built: a raise
   part-way frees them with the collector. */
typedef struct perform_state {
  psk_request req;
  psk_config cfg;
  psk_buf origin;
  psk_buf key;
} perform_state;

#define PERFORM_MT "periskope.Perform"

static int perform_state_gc(lua_State *L) {
  perform_state *p = luaL_checkudata(L, 1, PERFORM_MT);
  psk_request_free(&p->req);
  psk_config_free(&p->cfg);
  psk_buf_free(&p->origin);
  psk_buf_free(&p->key);
  return 0;
}

/* periskope.perform(request) -> status, head, body, elapsed
                                | nil, message, kind, elapsed */
int lpsk_mod_perform(lua_State *L) {
  perform_state *p;
  transport *tr;
  const psk_reply *rep;
  const char *body, *ca;
  size_t blen = 0, calen = 0;
  double max_body;
  char key[65];
  int st, at[R_N];
  if (!lua_istable(L, 1))
    lpsk_arg_error(L, 1, "perform",
                   lua_pushfstring(L, "a request table expected, got %s",
                                   luaL_typename(L, 1)));
  lua_settop(L, 1);
  lpsk_check_keys(L, &request_tab, 1, request_fields, at);
  /* Created empty, metatable set, then filled: __gc always finds it
     consistent. */
  p = psk_newuserdata(L, sizeof *p);
  memset(p, 0, sizeof *p);
  psk_request_init(&p->req);
  psk_buf_init(&p->origin, PSK_BASE_URL_MAX);
  psk_buf_init(&p->key, 64 * 1024);
  psk_setmetatable(L, PERFORM_MT);

  if (at[R_METHOD] && !(lua_type(L, at[R_METHOD]) == LUA_TSTRING &&
                        strcmp(lua_tostring(L, at[R_METHOD]), "POST") == 0))
    req_bad(L, "method", "must be \"POST\"", 0);
  req_url(L, at[R_URL], &p->req, &p->origin);
  body = lpsk_opt_string(L, &request_tab, at[R_BODY], "body", &blen, 0);
  if (body && (st = psk_buf_append(&p->req.body, body, blen)) != PSK_OK)
    too_long(L, st, "body", "is longer than a pin's body");
  p->cfg.timeout = lpsk_opt_number(L, &request_tab, at[R_TIMEOUT], "timeout",
                                   30, 0, 0, 86400,
                                   "must be a number of seconds > 0 and <= "
                                   "86400");
  p->cfg.connect_timeout =
      lpsk_opt_number(L, &request_tab, at[R_CONNECT_TIMEOUT],
                      "connect_timeout", 10, 0, 0, 86400,
                      "must be a number of seconds > 0 and <= 86400");
  max_body = (double)lpsk_opt_integer(
      L, &request_tab, at[R_MAX_BODY], "max_body", 1048576, 0, 1073741824,
      "must be an integer number of bytes from 0 to 1073741824");
  p->cfg.max_body = (size_t)max_body;
  ca = lpsk_opt_string(L, &request_tab, at[R_CA_FILE], "ca_file", &calen, 0);
  req_headers(L, at[R_HEADERS], &p->req, &p->key); /* pushes the block */
  if (!(p->cfg.base_url = malloc(p->origin.len + 1)) ||
      (ca && !(p->cfg.ca_file = malloc(calen + 1))))
    return luaL_error(L, "periskope: out of memory");
  memcpy(p->cfg.base_url, psk_buf_cstr(&p->origin), p->origin.len + 1);
  if (ca) memcpy(p->cfg.ca_file, ca, calen + 1);
  /* One transport per destination, options and fixed headers: the
     transfers' header lists change only with x-phone. */
  lua_pushfstring(L, "%s\n%f %f %f\n%s\n", p->cfg.base_url, p->cfg.timeout,
                  p->cfg.connect_timeout, max_body, ca ? ca : "");
  if (psk_buf_addstr(&p->key, lua_tostring(L, -1)) != PSK_OK)
    return luaL_error(L, "periskope: out of memory");
  lua_pop(L, 1);
  psk_sha256_hex(psk_buf_cstr(&p->key), p->key.len, key);
  tr = get_transport(L, key, &p->cfg);

  /* A transfer a raise left held is given back first. */
  if (tr->held) psk_http_give(tr->http, tr->held);
  if (!(tr->held = psk_http_take(tr->http)))
    return luaL_error(L, "periskope: out of memory");
  rep = psk_http_perform(tr->http, tr->held, &p->req);
  if (rep->status) {
    lua_pushinteger(L, (lua_Integer)rep->status);
    lua_pushlstring(L, psk_buf_cstr(&rep->head), rep->head.len);
    lua_pushlstring(L, psk_buf_cstr(&rep->body), rep->body.len);
  } else {
    lua_pushnil(L);
    lua_pushstring(L, rep->message);
    lua_pushstring(L, psk_kind_names[rep->kind]);
  }
  lua_pushnumber(L, (lua_Number)rep->elapsed);
  psk_http_give(tr->http, tr->held);
  tr->held = NULL;
  return 4;
}

/* ---------------------------------------------------------------- */
/* registration                                                      */

void lpsk_async_open(lua_State *L, int state) {
  static const luaL_Reg job_methods[] = {
      {"step", job_step}, {"cancel", job_cancel}, {"close", job_close},
      {NULL, NULL}};
  lua_pushvalue(L, state);
  lua_pushcclosure(L, step_body, 1);
  lua_setfield(L, state, "step_body");
  if (luaL_newmetatable(L, PERFORM_MT)) {
    lua_pushcfunction(L, perform_state_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_getmetatable(L, JOB_MT);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, state); /* upvalue 1, as for the client's methods */
  psk_setfuncs(L, job_methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  if (luaL_newmetatable(L, TRANSPORT_MT)) {
    lua_pushcfunction(L, transport_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
