/*
 * lpsk_async.c: the pin job driven from Lua, for hosts whose event loop
 * must not block (OpenResty, Neovim, anything with luv).
 *
 *   client:pin_job(args)   checks args as pin does and makes a job;
 *   job:step(...)          advances it: "send", request | "wait", seconds |
 *                          "done", <what pin returns>;
 *   periskope.perform(request)
 *                          the one exchange a "send" asks for, blocking,
 *                          in whatever Lua state calls it (a thread of
 *                          nginx's pool, of libuv's), through a transport
 *                          that state keeps: its results are what the
 *                          next job:step takes.
 *
 * Everything pin does -- pacing (shared stores too), events, retries and
 * the result -- happens in job:step, on the host's own thread, under the
 * same busy rule as pin (lpsk_pin.c): a hook may close the client, pin
 * again or raise, and a job whose step raised is over. Only the exchange
 * crosses to another thread, as plain strings and numbers.
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

/* client:pin_job(args): a job of this client, its arguments checked now
   (raises as pin does, before anything is acquired). The job keeps its
   client alive (its uservalue). */
int lpsk_client_pin_job(lua_State *L) {
  Client *c = lpsk_checkclient(L);
  pin_job *j = lpsk_job_new(L, c, 2);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "client");
  psk_setuvtable(L, -2);
  j->nested = c->busy > 0;
  return 1;
}

/* The reply to a "send", from the arguments of job:step at 2..5:
   status, head, body, elapsed -- or nil, kind, message, elapsed. The
   strings stay on the stack while rep points into them. [-0, +0, v] */
static void read_reply(lua_State *L, psk_reply *rep) {
  memset(rep, 0, sizeof *rep);
  rep->elapsed = luaL_optnumber(L, 5, 0);
  if (lua_isnil(L, 2)) {
    const char *kind = luaL_checkstring(L, 3);
    const char *msg = luaL_checkstring(L, 4);
    int k;
    for (k = PSK_KIND_NONE + 1; k <= PSK_KIND_TOO_LARGE; k++)
      if (strcmp(kind, psk_kind_names[k]) == 0) break;
    if (k > PSK_KIND_TOO_LARGE)
      luaL_argerror(L, 3,
                    "must be a kind of failure: timeout, connect, resolve, "
                    "tls, network or too_large");
    rep->kind = k;
    strncpy(rep->message, msg, sizeof rep->message - 1);
  } else {
    long long status = 0;
    size_t n;
    if (!psk_tointegral(L, 2, &status) || status < 100 || status > 599)
      luaL_argerror(L, 2,
                    lua_pushfstring(L,
                                    "must be the HTTP status (100 to 599), "
                                    "or nil when no answer came, %s",
                                    lpsk_got(L, 2)));
    rep->status = (long)status;
    /* Read-only views of the Lua strings: nothing appends to them. */
    rep->head.data = (char *)luaL_checklstring(L, 3, &n);
    rep->head.len = rep->head.cap = n;
    rep->head.size = n + 1;
    rep->body.data = (char *)luaL_optlstring(L, 4, "", &n);
    rep->body.len = rep->body.cap = n;
    rep->body.size = n + 1;
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

/* Under lpsk_run_busy: 1 the client, 2 the job (its reply in j->fed). */
static int step_body(lua_State *L) {
  pin_job *j = lua_touserdata(L, 2);
  double wait;
  switch (lpsk_job_step(L, j, 1, j->fed, &wait)) {
  case JOB_SEND:
    j->keep = 1;
    lua_pushliteral(L, "send");
    push_send(L, j);
    return 2;
  case JOB_WAIT:
    j->keep = 1;
    lua_pushliteral(L, "wait");
    lua_pushnumber(L, (lua_Number)wait);
    return 2;
  default:
    lua_pushliteral(L, "done");
    lua_insert(L, -(j->nout + 1));
    return j->nout + 1;
  }
}

/* After a step: a job that is done, or whose step raised, is over. */
static void step_release(lua_State *L, int obj) {
  pin_job *j = lua_touserdata(L, obj);
  if (!j->keep) {
    lpsk_job_release(L, j);
    j->c = NULL; /* over: a later step says so */
  }
  j->keep = 0;
  j->fed = NULL;
}

/* job:step([status, head, body, elapsed | nil, kind, message, elapsed]) */
static int job_step(lua_State *L) {
  pin_job *j = luaL_checkudata(L, 1, JOB_MT);
  psk_reply rep;
  if (!j->c)
    return luaL_error(L, "periskope: this pin job is over (it was done, "
                         "or a step raised)");
  if (j->c->closed) {
    lpsk_job_release(L, j);
    j->c = NULL;
    return luaL_error(L, "periskope: attempt to use a closed client");
  }
  if (lpsk_job_awaits_reply(j)) {
    if (lua_isnone(L, 2))
      return luaL_error(L, "periskope: job:step expects the answer to the "
                           "request it asked to send (status, head, body, "
                           "elapsed; or nil, kind, message)");
    lua_settop(L, 5);
    read_reply(L, &rep); /* points into the strings at 3 and 4 */
    j->fed = &rep;
  } else if (!lua_isnone(L, 2)) {
    return luaL_argerror(L, 2, "no answer is awaited: call job:step() "
                               "without arguments after a wait");
  }
  psk_getuvtable(L, 1);
  lua_getfield(L, -1, "client");
  return lpsk_run_busy(L, j->c, lua_gettop(L), 1, "step_body", step_release);
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

/* A number field of the request at 1 in (0, hi]; def when absent. */
static double req_number(lua_State *L, const char *name, double def,
                         double hi) {
  double v = def;
  lua_getfield(L, 1, name);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) > 0) ||
        lua_tonumber(L, -1) > hi)
      luaL_argerror(L, 1,
                    lua_pushfstring(L, "field '%s' must be a number > 0 and "
                                       "<= %f, %s",
                                    name, hi, lpsk_got(L, -1)));
    v = (double)lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* A string field of the request at 1 (NULL when absent and optional);
   stays alive in the request table. */
static const char *req_string(lua_State *L, const char *name, size_t *n,
                              int optional) {
  const char *s = NULL;
  lua_getfield(L, 1, name);
  if (lua_type(L, -1) == LUA_TSTRING)
    s = lua_tolstring(L, -1, n);
  else if (!(optional && lua_isnil(L, -1)))
    luaL_argerror(L, 1,
                  lua_pushfstring(L, "field '%s' must be a string, %s", name,
                                  lpsk_got(L, -1)));
  lua_pop(L, 1);
  return s;
}

/* The header lines of the request at 1 into r, split into names and
   values kept in a Lua-owned block pushed on the stack; *key gets the
   SHA-256 of every line but x-phone (with the options, what a transport
   is kept for), x-phone goes to r->phone. [-0, +1, v] */
static void req_headers(lua_State *L, psk_request *r, psk_buf *keytext) {
  size_t total = 0, used = 0;
  int i, n;
  char *block;
  lua_getfield(L, 1, "headers");
  if (!lua_istable(L, -1))
    luaL_argerror(L, 1, "field 'headers' must be an array of \"Name: value\" "
                        "strings");
  n = (int)psk_rawlen(L, -1);
  if (n > PSK_REQ_HEADERS)
    luaL_argerror(L, 1, "field 'headers' holds more lines than a pin sends");
  for (i = 1; i <= n; i++) {
    size_t len;
    lua_rawgeti(L, -1, i);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, 1, "field 'headers' must hold strings");
    lua_tolstring(L, -1, &len);
    total += len + 1;
    lua_pop(L, 1);
  }
  block = psk_newuserdata(L, total ? total : 1);
  lua_insert(L, -2); /* block below the headers table */
  r->nheaders = 0;
  for (i = 1; i <= n; i++) {
    size_t len, k;
    const char *line, *colon;
    char *copy = block + used;
    lua_rawgeti(L, -1, i);
    line = lua_tolstring(L, -1, &len);
    colon = memchr(line, ':', len);
    for (k = 0; k < len; k++)
      if ((unsigned char)line[k] < 0x20 || line[k] == 0x7f)
        luaL_argerror(L, 1, "field 'headers' must hold no control bytes");
    if (!colon || colon == line)
      luaL_argerror(L, 1, "field 'headers' must hold \"Name: value\" lines");
    memcpy(copy, line, len);
    copy[len] = '\0';
    copy[colon - line] = '\0';
    r->headers[r->nheaders].name = copy;
    k = (size_t)(colon - line) + 1;
    while (k < len && copy[k] == ' ') k++;
    r->headers[r->nheaders].value = copy + k;
    if (strcmp(copy, "x-phone") == 0) {
      snprintf(r->phone, sizeof r->phone, "%s", copy + k);
    } else if (psk_buf_append(keytext, line, len) != PSK_OK ||
               psk_buf_append(keytext, "\n", 1) != PSK_OK) {
      luaL_error(L, "periskope: out of memory");
    }
    r->nheaders++;
    used += len + 1;
    lua_pop(L, 1);
  }
  lua_pop(L, 1); /* the headers table; the block stays */
}

/* Raises for a buffer that refused an append: out of memory, or why. */
static void too_long(lua_State *L, int st, const char *why) {
  if (st == PSK_NOMEM) luaL_error(L, "periskope: out of memory");
  luaL_argerror(L, 1, why);
}

/* The request's URL at 1 into r->url (its path the request target) and
   its origin (scheme, host and port: what a transport is kept for) into
   origin: the origin by the rules of base_url (http only to loopback),
   the rest a path without a query, fragment, space, control or
   non-ASCII byte. [-0, +0, v] */
static void req_url(lua_State *L, psk_request *r, psk_buf *origin) {
  size_t n, i, path;
  int st;
  psk_err e;
  const char *url = req_string(L, "url", &n, 0);
  path = psk_url_path_offset(url); /* stops at a NUL, which the walk below refuses */
  if ((st = psk_normalize_base_url(url, path, origin, &e)) != PSK_OK)
    too_long(L, st == PSK_INVALID ? PSK_TOO_LARGE : st,
             lua_pushfstring(L, "field 'url' %s", e.msg));
  for (i = path; i < n; i++) {
    unsigned char c = (unsigned char)url[i];
    if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#' || c == '\\')
      luaL_argerror(L, 1, "field 'url' must have a plain path (no query, "
                          "fragment, space or control byte)");
  }
  if ((st = psk_buf_append(&r->url, url, n)) != PSK_OK)
    too_long(L, st, "field 'url' is longer than a pin's URL");
  r->target = path; /* sent as the request target, as build_pin's is */
}

/* The transport kept for key in this state's module state, or a new one
   for cfg (whose strings it takes). [-0, +1, v] */
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
                                | nil, kind, message, elapsed */
int lpsk_mod_perform(lua_State *L) {
  perform_state *p;
  transport *tr;
  const psk_reply *rep;
  const char *body, *ca;
  size_t blen = 0, calen = 0;
  double max_body;
  char key[65];
  int st;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  /* Created empty, metatable set, then filled: __gc always finds it
     consistent. */
  p = psk_newuserdata(L, sizeof *p);
  memset(p, 0, sizeof *p);
  psk_request_init(&p->req);
  psk_buf_init(&p->origin, PSK_BASE_URL_MAX);
  psk_buf_init(&p->key, 64 * 1024);
  psk_setmetatable(L, PERFORM_MT);

  req_url(L, &p->req, &p->origin);
  body = req_string(L, "body", &blen, 1);
  if (body && (st = psk_buf_append(&p->req.body, body, blen)) != PSK_OK)
    too_long(L, st, "field 'body' is longer than a pin's body");
  p->cfg.timeout = req_number(L, "timeout", 30, 86400);
  p->cfg.connect_timeout = req_number(L, "connect_timeout", 10, 86400);
  max_body = req_number(L, "max_body", 1048576, 1073741824.0);
  p->cfg.max_body = (size_t)max_body;
  ca = req_string(L, "ca_file", &calen, 1);
  req_headers(L, &p->req, &p->key); /* pushes the headers' block */
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
    lua_pushstring(L, psk_kind_names[rep->kind]);
    lua_pushstring(L, rep->message);
  }
  lua_pushnumber(L, (lua_Number)rep->elapsed);
  psk_http_give(tr->http, tr->held);
  tr->held = NULL;
  return 4;
}

/* ---------------------------------------------------------------- */
/* registration                                                      */

void lpsk_async_open(lua_State *L, int state) {
  static const luaL_Reg job_methods[] = {{"step", job_step}, {NULL, NULL}};
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
