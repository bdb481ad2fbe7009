/*
 * lperiskope.c: the Lua binding. The only file that talks to Lua.
 *
 * It checks every argument before any I/O (misuse raises, naming the field
 * and what it accepts), turns options into a psk_config, runs pin as
 * build_pin + transport + retry plan, and builds result tables. pin and
 * read_response end in the same result builder (push_result). Module state
 * (the default client and configure's options) is one table, upvalue 1 of
 * every module function: no C statics, since a process may hold several
 * lua_States.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "lpace.h"
#include "psk_core.h"
#include "psk_http.h"

#define CLIENT_MT "periskope.Client"
#define HEADERS_MT "periskope.headers"

typedef struct Client {
  psk_config cfg;   /* owned strings */
  psk_http *http;   /* NULL until opened and after release */
  psk_request req;  /* reused by every call */
  uint64_t rng;     /* backoff jitter */
  psk_budget budget; /* pacing in the client (and the fallback) */
  psk_clock clock;   /* the server's clock, from Date */
  int limited;       /* a shared limiter is set (in the uservalue table) */
  long long unsettled; /* shared slots whose end the store has not heard */
  char lim_name[LPACE_NAME_MAX]; /* the budget's name in its store */
  int closed;       /* 1 until fully built, and after close */
  int in_many;      /* a pin_many is running (its hook may not start one) */
  unsigned pin_gen; /* counts builds into pin's transfer (nested pins) */
  int hook;         /* on_event is set (it lives in the uservalue table) */
  int debug;        /* PERISKOPE_DEBUG=1 and no on_event */
} Client;

/* ---------------------------------------------------------------- */
/* small helpers                                                     */

static int in_list(const char *s, const char *const names[]) {
  for (; *names; names++)
    if (strcmp(s, *names) == 0) return 1;
  return 0;
}

/* Describes the value at i for an error message: numbers as themselves,
   everything else by type, so no string value (it may be the key) is ever
   echoed. [-0, +1, m] */
static const char *got(lua_State *L, int i) {
  if (lua_type(L, i) == LUA_TNUMBER) {
    char num[64];
    snprintf(num, sizeof num, "%.14g", (double)lua_tonumber(L, i));
    return lua_pushfstring(L, "got %s", num);
  }
  return lua_pushfstring(L, "got %s", luaL_typename(L, i));
}

/* Raises for a bad option or field. arg > 0: "bad argument #arg to 'fn'
   (WHAT 'NAME' RULE, got X)"; arg == 0 (the default client, built inside
   another call): "periskope: WHAT 'NAME' RULE". vi: the offending value's
   index, or 0 to leave "got" out. [-0, +0, v] */
static int bad_p(lua_State *L, int arg, const char *pfx, const char *what,
                 const char *name, const char *rule, int vi) {
  const char *msg;
  if (vi) {
    vi = psk_absindex(L, vi);
    msg = lua_pushfstring(L, "%s%s '%s' %s, %s", pfx, what, name, rule,
                          got(L, vi));
  } else {
    msg = lua_pushfstring(L, "%s%s '%s' %s", pfx, what, name, rule);
  }
  if (arg > 0) return luaL_argerror(L, arg, msg);
  return luaL_error(L, "periskope: %s", msg);
}

#define bad(L, arg, what, name, rule, vi) \
  bad_p(L, arg, "", what, name, rule, vi)

/* Raises on a key of table t that is not a string or not in names; pfx
   ("" or "item 3: ") starts the message. */
static void check_keys(lua_State *L, int t, int arg, const char *pfx,
                       const char *what, const char *const names[]) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1); /* keep the key only */
    /* Type first: lua_tostring would convert a number key in place, and
       lua_next would then lose its way. */
    if (lua_type(L, -1) != LUA_TSTRING) {
      const char *m = lua_pushfstring(L, "%s%s names must be strings, %s",
                                      pfx, what, got(L, -1));
      if (arg > 0) luaL_argerror(L, arg, m);
      luaL_error(L, "periskope: %s", m);
    }
    if (!in_list(lua_tostring(L, -1), names)) {
      const char *m = lua_pushfstring(L, "%sunknown %s '%s'", pfx, what,
                                      lua_tostring(L, -1));
      if (arg > 0) luaL_argerror(L, arg, m);
      luaL_error(L, "periskope: %s", m);
    }
  }
}

/* Pushes t[name] (raw), or nil when t is 0. [-0, +1, -] */
static int get_field(lua_State *L, int t, const char *name) {
  if (!t) {
    lua_pushnil(L);
    return LUA_TNIL;
  }
  lua_pushstring(L, name);
  lua_rawget(L, t);
  return lua_type(L, -1);
}

static char *dup_n(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

/* Stores a malloc'd copy in *slot at once, so a later raise leaves it to
   the client's release instead of leaking it. */
static void set_owned(lua_State *L, char **slot, const char *s, size_t n) {
  free(*slot);
  *slot = dup_n(s, n);
  if (!*slot) luaL_error(L, "periskope: out of memory");
}

/* ---------------------------------------------------------------- */
/* client options                                                    */

static const char *const option_names[] = {
    "api_key",        "phone",    "base_url", "timeout",    "connect_timeout",
    "retries",        "max_body", "ca_file",  "user_agent", "max_retry_wait",
    "on_event",       "limiter",  NULL};

/* A string option from t, else from the environment variable env (empty
   counts as unset). Leaves the value on the stack while the caller uses
   it. *from_env tells where it came from. [-0, +1, v] */
static const char *opt_string(lua_State *L, int t, int arg, const char *name,
                              const char *env, size_t *len, int *from_env) {
  int ty = get_field(L, t, name);
  *from_env = 0;
  if (ty == LUA_TSTRING) return lua_tolstring(L, -1, len);
  if (ty != LUA_TNIL) /* a number given as the key is not echoed */
    bad(L, arg, "option", name,
        strcmp(name, "api_key") == 0
            ? lua_pushfstring(L, "must be a string, got %s", luaL_typename(L, -1))
            : "must be a string",
        strcmp(name, "api_key") == 0 ? 0 : -1);
  if (env) {
    const char *v = getenv(env);
    if (v && *v) {
      lua_pop(L, 1);
      lua_pushstring(L, v);
      *from_env = 1;
      return lua_tolstring(L, -1, len);
    }
  }
  return NULL;
}

/* A number option in (lo, hi] (or [lo, hi] when lo_ok); integral when
   integral is set. [-0, +0, v] */
static double opt_number(lua_State *L, int t, int arg, const char *name,
                         double def, double lo, int lo_ok, double hi,
                         int integral, const char *rule) {
  double v;
  int ty = get_field(L, t, name);
  if (ty == LUA_TNIL) {
    lua_pop(L, 1);
    return def;
  }
  if (integral) {
    long long iv = 0;
    if (!psk_tointegral(L, -1, &iv)) bad(L, arg, "option", name, rule, -1);
    v = (double)iv;
  } else {
    if (ty != LUA_TNUMBER) bad(L, arg, "option", name, rule, -1);
    v = (double)lua_tonumber(L, -1);
  }
  if (!(lo_ok ? v >= lo : v > lo) || !(v <= hi))
    bad(L, arg, "option", name, rule, -1);
  lua_pop(L, 1);
  return v;
}

/* Reads every option of table t (0: none) into c->cfg, with environment
   fallbacks. need_key: a missing api_key raises (new), or is allowed
   (configure checks the rest). Strings are stored as soon as they pass, so
   a raise part-way leaves them to release. [-0, +0, v] */
static void read_options(lua_State *L, Client *c, int t, int arg,
                         int need_key) {
  psk_err e;
  size_t n;
  int env;
  const char *s;
  psk_buf url;

  if (t) check_keys(L, t, arg, "", "option", option_names);

  s = opt_string(L, t, arg, "api_key", "PERISKOPE_API_KEY", &n, &env);
  if (s) {
    if (psk_check_api_key(s, n, &e) != PSK_OK)
      bad(L, arg, "option", "api_key",
          env ? lua_pushfstring(L, "%s (from PERISKOPE_API_KEY)", e.msg)
              : e.msg,
          0);
    free(c->cfg.auth);
    c->cfg.auth = malloc(n + 8);
    if (!c->cfg.auth) luaL_error(L, "periskope: out of memory");
    memcpy(c->cfg.auth, "Bearer ", 7);
    memcpy(c->cfg.auth + 7, s, n);
    c->cfg.auth[n + 7] = '\0';
  } else if (need_key) {
    bad(L, arg, "option", "api_key",
        "is required: pass it, or set PERISKOPE_API_KEY", 0);
  }
  lua_pop(L, 1);

  s = opt_string(L, t, arg, "phone", "PERISKOPE_PHONE", &n, &env);
  if (s) {
    char phone[PSK_PHONE_MAX + 1];
    if (psk_normalize_phone(s, n, phone, &e) != PSK_OK)
      bad(L, arg, "option", "phone",
          env ? lua_pushfstring(L, "%s (from PERISKOPE_PHONE)", e.msg) : e.msg,
          0);
    set_owned(L, &c->cfg.phone, phone, strlen(phone));
  }
  lua_pop(L, 1);

  s = opt_string(L, t, arg, "base_url", "PERISKOPE_BASE_URL", &n, &env);
  if (!s) {
    s = PSK_DEFAULT_BASE_URL;
    n = strlen(s);
  }
  psk_buf_init(&url, PSK_BASE_URL_MAX);
  if (psk_normalize_base_url(s, n, &url, &e) != PSK_OK) {
    psk_buf_free(&url);
    bad(L, arg, "option", "base_url",
        env ? lua_pushfstring(L, "%s (from PERISKOPE_BASE_URL)", e.msg)
            : e.msg,
        0);
  }
  free(c->cfg.base_url);
  c->cfg.base_url = dup_n(psk_buf_cstr(&url), url.len);
  psk_buf_free(&url);
  if (!c->cfg.base_url) luaL_error(L, "periskope: out of memory");
  lua_pop(L, 1);

  c->cfg.timeout = opt_number(L, t, arg, "timeout", 30, 0, 0, 86400, 0,
                              "must be a number of seconds > 0 and <= 86400");
  c->cfg.connect_timeout =
      opt_number(L, t, arg, "connect_timeout", 10, 0, 0, 86400, 0,
                 "must be a number of seconds > 0 and <= 86400");
  c->cfg.retries = (int)opt_number(L, t, arg, "retries", 2, 0, 1, 10, 1,
                                   "must be an integer from 0 to 10");
  c->cfg.max_retry_wait =
      opt_number(L, t, arg, "max_retry_wait", 60, 0, 1, 86400, 0,
                 "must be a number of seconds >= 0 and <= 86400");
  c->cfg.max_body = (size_t)opt_number(
      L, t, arg, "max_body", 1048576, 0, 1, 1073741824.0, 1,
      "must be an integer number of bytes from 0 to 1073741824");

  s = opt_string(L, t, arg, "ca_file", NULL, &n, &env);
  if (s) {
    FILE *f;
    if (n == 0 || strlen(s) != n) bad(L, arg, "option", "ca_file",
                                      "must name a readable PEM file", 0);
    f = fopen(s, "r");
    if (!f) bad(L, arg, "option", "ca_file", "must name a readable PEM file", 0);
    fclose(f);
    set_owned(L, &c->cfg.ca_file, s, n);
  }
  lua_pop(L, 1);

  s = opt_string(L, t, arg, "user_agent", NULL, &n, &env);
  if (s) {
    if (psk_check_user_agent(s, n, &e) != PSK_OK)
      bad(L, arg, "option", "user_agent", e.msg, 0);
    set_owned(L, &c->cfg.user_agent, s, n);
  } else {
    char ua[256], *sp;
    snprintf(ua, sizeof ua, "periskope-lua/%s libcurl/%s %s", PSK_VERSION,
             psk_http_curl_version(), PSK_LUA_NAME);
    sp = strrchr(ua, ' '); /* "Lua 5.4" -> "Lua/5.4" */
    if (sp) *sp = '/';
    set_owned(L, &c->cfg.user_agent, ua, strlen(ua));
  }
  lua_pop(L, 1);

  if (get_field(L, t, "on_event") != LUA_TNIL &&
      lua_type(L, -1) != LUA_TFUNCTION)
    bad(L, arg, "option", "on_event", "must be a function", -1);
  lua_pop(L, 1);

  if (get_field(L, t, "limiter") != LUA_TNIL && !lpace_test(L, -1))
    bad(L, arg, "option", "limiter",
        "must be a limiter from periskope.limiter.shared_dict or "
        "periskope.limiter.redis",
        -1);
  lua_pop(L, 1);
}

/* ---------------------------------------------------------------- */
/* client lifetime                                                   */

/* Releases everything the client holds, in reverse order of acquisition.
   Safe on a half-built, closed or released client; never raises. */
static void client_release(Client *c) {
  psk_http_free(c->http); /* before cfg: the transport borrows it */
  c->http = NULL;
  psk_request_free(&c->req);
  psk_config_free(&c->cfg);
  c->closed = 1;
}

static Client *checkclient(lua_State *L) {
  Client *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->closed) luaL_error(L, "periskope: attempt to use a closed client");
  return c;
}

/* Keeps option name of table t (0: none) in the client's uservalue table
   when it has type `type` (read_options checked it); returns whether it
   did. [-0, +0, m] */
static int keep_option(lua_State *L, int ud, int t, const char *name,
                       int type) {
  int kept = get_field(L, t, name) == type;
  if (kept) {
    psk_getuvtable(L, ud);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return kept;
}

/* Pushes a new client built from options table t (0: none). The userdata
   is created closed with its metatable set before anything is acquired,
   so a raise part-way leaves __gc a consistent object. [-0, +1, v] */
static Client *new_client(lua_State *L, int t, int arg) {
  Client *c = psk_newuserdata(L, sizeof *c);
  int ud = lua_gettop(L);
  char err[256];
  const char *dbg;
  memset(c, 0, sizeof *c);
  c->closed = 1;
  psk_request_init(&c->req);
  psk_setmetatable(L, CLIENT_MT);
  lua_createtable(L, 0, 2); /* uservalue: holds on_event and limiter */
  psk_setuvtable(L, ud);

  read_options(L, c, t, arg, 1);
  c->hook = keep_option(L, ud, t, "on_event", LUA_TFUNCTION);
  if (keep_option(L, ud, t, "limiter", LUA_TUSERDATA)) {
    psk_getuvtable(L, ud);
    lua_getfield(L, -1, "limiter");
    lpace_name(lpace_test(L, -1), c->cfg.auth + 7, c->lim_name);
    lua_pop(L, 2);
    c->limited = 1;
  }
  dbg = getenv("PERISKOPE_DEBUG");
  c->debug = !c->hook && dbg && strcmp(dbg, "1") == 0;
  psk_budget_init(&c->budget);
  c->rng = (uint64_t)(uintptr_t)c ^ ((uint64_t)(psk_http_now() * 1e6) << 1);
  if (!c->rng) c->rng = 0x9E3779B97F4A7C15ULL;

  c->http = psk_http_new(&c->cfg, err, sizeof err);
  if (!c->http) luaL_error(L, "%s", err);
  c->closed = 0;
  return c;
}

static int mod_new(lua_State *L) {
  int t = 0;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    t = 1;
  }
  new_client(L, t, 1);
  return 1;
}

static int client_close(lua_State *L) {
  Client *c = luaL_checkudata(L, 1, CLIENT_MT);
  client_release(c);
  lua_pushboolean(L, 1);
  return 1;
}

static int client_gc(lua_State *L) {
  client_release(luaL_checkudata(L, 1, CLIENT_MT));
  return 0;
}

static int client_tostring(lua_State *L) {
  Client *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->closed)
    lua_pushliteral(L, "periskope.Client (closed)");
  else
    lua_pushfstring(L, "periskope.Client (%s, %s%s)", c->cfg.base_url,
                    c->cfg.phone ? "phone " : "no phone",
                    c->cfg.phone ? c->cfg.phone : "");
  return 1;
}

/* ---------------------------------------------------------------- */
/* pin arguments and the request                                     */

static const char *const pin_fields[] = {"message_id", "pin", "time", "phone",
                                         NULL};

/* The checked fields of one pin. id points into a Lua string that the
   caller keeps referenced while it uses them. */
typedef struct pin_args {
  const char *id;
  size_t idlen;
  int pin, time;
  int has_phone;
  char phone[PSK_PHONE_MAX + 1];
} pin_args;

/* Checks the pin argument table at t (argument arg of the call; pfx is ""
   or "item N: " for pin_many) into a. Raises, naming the field, before
   anything is sent. Leaves message_id on the stack. [-0, +1, v] */
static void check_pin_args(lua_State *L, int t, int arg, const char *pfx,
                           pin_args *a) {
  psk_err e;
  t = psk_absindex(L, t);
  a->pin = 1;
  a->time = 0;
  a->has_phone = 0;
  if (!lua_istable(L, t)) {
    if (*pfx)
      luaL_argerror(L, arg,
                    lua_pushfstring(L, "%smust be a table of pin fields, %s",
                                    pfx, got(L, t)));
    luaL_checktype(L, arg, LUA_TTABLE);
  }
  check_keys(L, t, arg, pfx, "field", pin_fields);

  switch (get_field(L, t, "pin")) {
  case LUA_TNIL: break;
  case LUA_TBOOLEAN: a->pin = lua_toboolean(L, -1); break;
  default: bad_p(L, arg, pfx, "field", "pin", "must be a boolean", -1);
  }
  lua_pop(L, 1);

  if (get_field(L, t, "time") != LUA_TNIL) {
    long long days = 0;
    if (!psk_tointegral(L, -1, &days) || psk_check_time(days, &e) != PSK_OK)
      bad_p(L, arg, pfx, "field", "time", "must be 1, 7 or 30 (days)", -1);
    a->time = (int)days;
  }
  lua_pop(L, 1);

  switch (get_field(L, t, "phone")) {
  case LUA_TNIL: break;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (psk_normalize_phone(s, n, a->phone, &e) != PSK_OK)
      bad_p(L, arg, pfx, "field", "phone", e.msg, 0);
    a->has_phone = 1;
    break;
  }
  default: bad_p(L, arg, pfx, "field", "phone", "must be a string", -1);
  }
  lua_pop(L, 1);

  if (get_field(L, t, "message_id") != LUA_TSTRING)
    bad_p(L, arg, pfx, "field", "message_id",
          lua_type(L, -1) == LUA_TNIL
              ? "is required (a string of 1 to 1024 bytes)"
              : "must be a string of 1 to 1024 bytes",
          lua_type(L, -1) == LUA_TNIL ? 0 : -1);
  a->id = lua_tolstring(L, -1, &a->idlen);
  if (psk_check_message_id(a->id, a->idlen, &e) != PSK_OK)
    bad_p(L, arg, pfx, "field", "message_id", e.msg, 0);
}

/* Builds request r of client c from checked arguments. [-0, +0, v] */
static void build_into(lua_State *L, Client *c, psk_request *r,
                       const pin_args *a) {
  if (psk_request_build(r, &c->cfg, a->id, a->idlen, a->pin, a->time,
                        a->has_phone ? a->phone : NULL) != PSK_OK)
    luaL_error(L, "periskope: out of memory");
}

/* Checks the pin arguments at arg and builds r from them. [-0, +0, v] */
static void build_request(lua_State *L, Client *c, psk_request *r, int arg) {
  pin_args a;
  check_pin_args(L, arg, arg, "", &a);
  build_into(L, c, r, &a);
  lua_pop(L, 1); /* message_id: the request holds its own copy now */
}

/* Pushes { name = value } for the request's headers; redact replaces the
   key with "***" (events and logs). [-0, +1, m] */
static void push_request_headers(lua_State *L, const psk_request *r,
                                 int redact) {
  int i;
  lua_createtable(L, 0, r->nheaders);
  for (i = 0; i < r->nheaders; i++) {
    if (redact && strcmp(r->headers[i].name, "Authorization") == 0)
      lua_pushliteral(L, "Bearer ***");
    else
      lua_pushstring(L, r->headers[i].value);
    lua_setfield(L, -2, r->headers[i].name);
  }
}

static int client_build_pin(lua_State *L) {
  Client *c = checkclient(L);
  build_request(L, c, &c->req, 2);
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "POST");
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, psk_buf_cstr(&c->req.url), c->req.url.len);
  lua_setfield(L, -2, "url");
  push_request_headers(L, &c->req, 0);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, psk_buf_cstr(&c->req.body), c->req.body.len);
  lua_setfield(L, -2, "body");
  return 1;
}

/* ---------------------------------------------------------------- */
/* results                                                           */

/* Pushes s lower-cased. [-0, +1, m] */
static void push_lower(lua_State *L, const char *s, size_t n) {
  char small[128];
  if (n <= sizeof small) {
    size_t i;
    for (i = 0; i < n; i++)
      small[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
    lua_pushlstring(L, small, n);
  } else {
    luaL_Buffer b;
    size_t i;
    luaL_buffinit(L, &b);
    for (i = 0; i < n; i++)
      luaL_addchar(&b, (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i]);
    luaL_pushresult(&b);
  }
}

/* With a lower-cased name and a value on top of the stack, stores them in
   the headers table at t, joining repeated names with ", " as HTTP allows.
   [-2, +0, m] */
static void add_header(lua_State *L, int t) {
  lua_pushvalue(L, -2);
  lua_rawget(L, t);
  if (lua_type(L, -1) == LUA_TSTRING) {
    lua_insert(L, -2);        /* name, old, value */
    lua_pushliteral(L, ", ");
    lua_insert(L, -2);        /* name, old, ", ", value */
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
  }
  lua_rawset(L, t);
}

/* Pushes an empty headers table, sized for n names, with the
   case-insensitive metatable. */
static int new_headers(lua_State *L, int n) {
  lua_createtable(L, 0, n);
  psk_setmetatable(L, HEADERS_MT);
  return lua_gettop(L);
}

/* The headers a result and a retry decision read, as pointers into a
   response head or into strings of a headers table. */
enum { K_LIMIT, K_REMAINING, K_RESET, K_TRACE, K_RETRY_AFTER, K_DATE, K_N };
static const char *const known_names[K_N] = {
    "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
    "x-periskope-trace-id", "retry-after", "date"};
typedef struct known {
  const char *v[K_N]; /* NULL when absent */
  size_t n[K_N];
} known;

static void known_from_table(lua_State *L, int h, known *k);

static int ieq_n(const char *a, size_t n, const char *b, size_t m) {
  size_t i;
  if (n != m) return 0;
  for (i = 0; i < n; i++) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = (char)(x + 32);
    if (y >= 'A' && y <= 'Z') y = (char)(y + 32);
    if (x != y) return 0;
  }
  return 1;
}

#define HEAD_MAX_FIELDS 64

static const size_t known_lens[K_N] = {17, 21, 17, 20, 11, 4};

/* Pushes the headers table of a response head and fills k from it. One
   walk in C keeps up to HEAD_MAX_FIELDS fields, finds the known headers
   and repeated names, and sizes the table; only a repeated name pays for
   a Lua lookup. A head with more fields is walked again for the rest.
   [-0, +1, m] */
static void push_head(lua_State *L, const psk_buf *head, known *k) {
  const char *text = psk_buf_cstr(head);
  psk_header f[HEAD_MAX_FIELDS], h;
  char dup[HEAD_MAX_FIELDS];
  size_t pos = 0;
  int count = 0, kept, i, j, t, repeated_known = 0;
  memset(k, 0, sizeof *k);
  while (psk_header_next(text, head->len, &pos, &h)) {
    for (i = 0; i < K_N; i++)
      if (ieq_n(h.name, h.name_len, known_names[i], known_lens[i])) {
        if (k->v[i]) repeated_known = 1;
        k->v[i] = h.value;
        k->n[i] = h.value_len;
        break;
      }
    if (count < HEAD_MAX_FIELDS) {
      f[count] = h;
      dup[count] = 0;
      for (j = 0; j < count && !dup[count]; j++)
        dup[count] = (char)ieq_n(h.name, h.name_len, f[j].name, f[j].name_len);
    }
    count++;
  }
  t = new_headers(L, count);
  kept = count < HEAD_MAX_FIELDS ? count : HEAD_MAX_FIELDS;
  for (i = 0; i < kept; i++) {
    push_lower(L, f[i].name, f[i].name_len);
    lua_pushlstring(L, f[i].value, f[i].value_len);
    if (dup[i])
      add_header(L, t); /* joins with the earlier value */
    else
      lua_rawset(L, t);
  }
  if (count > HEAD_MAX_FIELDS) { /* an unusually long head: the rest by lookup */
    pos = 0;
    for (i = 0; psk_header_next(text, head->len, &pos, &h); i++) {
      if (i < kept) continue;
      push_lower(L, h.name, h.name_len);
      lua_pushlstring(L, h.value, h.value_len);
      add_header(L, t);
    }
  }
  /* A repeated known header counts as its joined value, as in the table. */
  if (repeated_known) known_from_table(L, t, k);
}

/* headers[k] for any case of k: the table's keys are lower-case. */
static int headers_index(lua_State *L) {
  size_t n;
  const char *k;
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  k = lua_tolstring(L, 2, &n);
  push_lower(L, k, n);
  lua_rawget(L, 1);
  return 1;
}

/* The string value of header name (lower-case) in headers table t, or
   NULL; it stays alive as long as the table. [-0, +0, -] */
static const char *header_str(lua_State *L, int t, const char *name,
                              size_t *len) {
  const char *s = NULL;
  lua_pushstring(L, name);
  lua_rawget(L, t);
  if (lua_type(L, -1) == LUA_TSTRING) s = lua_tolstring(L, -1, len);
  lua_pop(L, 1);
  return s;
}

/* Fills k from headers table h (lower-case keys). */
static void known_from_table(lua_State *L, int h, known *k) {
  int i;
  for (i = 0; i < K_N; i++) k->v[i] = header_str(L, h, known_names[i], &k->n[i]);
}

/* An integer known header, or -1. */
static long long known_int(const known *k, int i) {
  long long v;
  return k->v[i] && psk_parse_uint(k->v[i], k->n[i], &v) == PSK_OK ? v : -1;
}

/* Pushes the rate_limit table, or nothing when no X-RateLimit-* header
   holds an integer. Returns how many it pushed. */
static int push_rate_limit(lua_State *L, const known *k) {
  static const char *const keys[] = {"limit", "remaining", "reset"};
  int i, any = 0;
  for (i = 0; i < 3; i++) {
    long long v = known_int(k, K_LIMIT + i);
    if (v >= 0) {
      if (!any) lua_createtable(L, 0, 3);
      any = 1;
      lua_pushinteger(L, (lua_Integer)v);
      lua_setfield(L, -2, keys[i]);
    }
  }
  return any;
}

/* Pushes the error text of a non-2xx answer: the JSON body's "message" (or
   "error") field, decoded by lua-cjson under pcall, else "HTTP <status>".
   [-0, +1, m] */
static void push_error_text(lua_State *L, long status, const char *body,
                            size_t blen) {
  int top = lua_gettop(L);
  if (blen > 0) {
    lua_getfield(L, lua_upvalueindex(1), "cjson_decode");
    if (lua_isnil(L, -1)) {
      /* First use in this state: require "cjson" under pcall, cache the
         decoder, or false when lua-cjson is missing. */
      lua_pop(L, 1);
      lua_getglobal(L, "require");
      lua_pushliteral(L, "cjson");
      if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1))
        lua_getfield(L, -1, "decode");
      else
        lua_pushboolean(L, 0);
      if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
      }
      lua_pushvalue(L, -1);
      lua_setfield(L, lua_upvalueindex(1), "cjson_decode");
    }
    if (lua_isfunction(L, -1)) {
      lua_pushlstring(L, body, blen);
      if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
        int j = lua_gettop(L);
        static const char *const fields[] = {"message", "error"};
        int k;
        for (k = 0; k < 2; k++) {
          lua_getfield(L, j, fields[k]);
          if (lua_istable(L, -1)) { /* {"error": {"message": "..."}} */
            lua_getfield(L, -1, "message");
            lua_remove(L, -2);
          }
          if (lua_type(L, -1) == LUA_TSTRING) {
            lua_replace(L, top + 1);
            lua_settop(L, top + 1);
            return;
          }
          lua_pop(L, 1);
        }
      }
    }
    lua_settop(L, top);
  }
  lua_pushfstring(L, "HTTP %d", (int)status);
}

/* The result builder every path ends in: pushes the result table for an
   answer with headers table h, whose known headers are k. [-0, +1, m] */
static void push_result(lua_State *L, long status, int h, const known *k,
                        const char *body, size_t blen, int attempts) {
  int ok = status >= 200 && status < 300;
  lua_createtable(L, 0, 9);
  lua_pushboolean(L, ok);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, (lua_Integer)status);
  lua_setfield(L, -2, "status");
  lua_pushvalue(L, h);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, body, blen);
  lua_setfield(L, -2, "body");
  if (push_rate_limit(L, k)) lua_setfield(L, -2, "rate_limit");
  if (k->v[K_TRACE]) {
    lua_pushlstring(L, k->v[K_TRACE], k->n[K_TRACE]);
    lua_setfield(L, -2, "trace_id");
  }
  if (!ok) {
    push_error_text(L, status, body, blen);
    lua_setfield(L, -2, "error");
  }
  lua_pushinteger(L, attempts);
  lua_setfield(L, -2, "attempts");
}

/* periskope.read_response(status, headers, body) */
static int mod_read_response(lua_State *L) {
  known kh;
  long long status;
  size_t blen = 0;
  const char *body;
  int h;
  if (!psk_tointegral(L, 1, &status) || status < 100 || status > 599)
    return luaL_argerror(
        L, 1, lua_pushfstring(L, "status must be an integer from 100 to 599, %s",
                              got(L, 1)));
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  body = luaL_optlstring(L, 3, "", &blen);
  h = new_headers(L, 0);
  if (lua_istable(L, 2)) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      size_t n;
      const char *k;
      int v = lua_gettop(L);
      if (lua_type(L, -2) != LUA_TSTRING)
        return luaL_argerror(L, 2, "header names must be strings");
      k = lua_tolstring(L, -2, &n);
      if (lua_type(L, v) == LUA_TTABLE) { /* several values: one each */
        int i, len = (int)psk_rawlen(L, v);
        for (i = 1; i <= len; i++) {
          lua_rawgeti(L, v, i);
          if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            return luaL_argerror(
                L, 2, lua_pushfstring(L, "header '%s' values must be strings", k));
          push_lower(L, k, n);
          lua_insert(L, -2);
          lua_tostring(L, -1); /* a number becomes its string */
          add_header(L, h);
        }
      } else if (lua_type(L, v) == LUA_TSTRING ||
                 lua_type(L, v) == LUA_TNUMBER) {
        push_lower(L, k, n);
        lua_pushvalue(L, v);
        lua_tostring(L, -1);
        add_header(L, h);
      } else {
        return luaL_argerror(
            L, 2,
            lua_pushfstring(L,
                            "header '%s' must be a string or an array of "
                            "strings, %s",
                            k, got(L, v)));
      }
      lua_settop(L, v - 1); /* keep the key for lua_next */
    }
  }
  known_from_table(L, h, &kh);
  push_result(L, (long)status, h, &kh, body, blen, 1);
  return 1;
}

/* ---------------------------------------------------------------- */
/* events                                                            */

/* Writes one redacted line for the event table on top (PERISKOPE_DEBUG). */
static void debug_line(lua_State *L, int ev) {
  static const char *const keys[] = {"attempt", "method",   "url",     "status",
                                     "elapsed", "trace_id", "kind",    "seconds",
                                     "reason",  "error",    "message", "index",
                                     NULL};
  int i;
  lua_getfield(L, ev, "type");
  fprintf(stderr, "periskope: %s", lua_tostring(L, -1));
  lua_pop(L, 1);
  for (i = 0; keys[i]; i++) {
    lua_getfield(L, ev, keys[i]);
    if (lua_type(L, -1) == LUA_TNUMBER)
      fprintf(stderr, " %s=%.14g", keys[i], (double)lua_tonumber(L, -1));
    else if (lua_type(L, -1) == LUA_TSTRING)
      fprintf(stderr, " %s=%s", keys[i], lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  fputc('\n', stderr);
}

/* Hands the event table on top to on_event (or the debug line) and pops
   it. Runs between transfers only. An error raised by the hook of a
   pin_many (many) stops its running transfers first, then propagates: the
   client stays usable. pin has none running while it emits. [-1, +0, e] */
static void emit(lua_State *L, Client *c, int ud, int many) {
  int ev = lua_gettop(L);
  if (c->hook) {
    psk_getuvtable(L, ud);
    lua_getfield(L, -1, "on_event");
    lua_pushvalue(L, ev);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      if (many) {
        psk_http_stop_all(c->http);
        c->in_many = 0;
      }
      lua_error(L);
    }
  } else {
    debug_line(L, ev);
  }
  lua_settop(L, ev - 1);
}

static void ev_begin(lua_State *L, const char *type) {
  lua_createtable(L, 0, 6);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
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

/* index: the pin_many item (1-based), or 0 for pin. */
static void ev_request(lua_State *L, Client *c, int ud, const psk_request *r,
                       int attempt, int index, int many) {
  ev_begin(L, "request");
  if (index) ev_int(L, "index", index);
  ev_int(L, "attempt", attempt);
  ev_str(L, "method", "POST");
  lua_pushlstring(L, psk_buf_cstr(&r->url), r->url.len);
  lua_setfield(L, -2, "url");
  push_request_headers(L, r, 1);
  lua_setfield(L, -2, "headers");
  emit(L, c, ud, many);
}

static void ev_wait(lua_State *L, Client *c, int ud, double seconds,
                    int reason, int index, int many) {
  ev_begin(L, "wait");
  if (index) ev_int(L, "index", index);
  ev_num(L, "seconds", seconds);
  ev_str(L, "reason", psk_wait_reasons[reason]);
  emit(L, c, ud, many);
}

/* ---------------------------------------------------------------- */
/* pacing                                                            */

/* Seconds between asks while only another process's answer can open the
   shared budget. */
#define PACE_POLL 0.05

/* Runs op in the client's shared store, if it has one: 1 when done there;
   0 to pace in the client instead (the store failed: a limiter event; or
   it is resting after a recent failure). */
static int pace_shared(lua_State *L, Client *c, int ud, int many,
                       lpace_op *op) {
  char err[320];
  int rc;
  if (!c->limited) return 0;
  op->unsettled = c->unsettled;
  psk_getuvtable(L, ud);
  lua_getfield(L, -1, "limiter");
  rc = lpace_run(L, -1, c->lim_name, op, psk_http_now(), err, sizeof err);
  lua_pop(L, 2);
  if (rc == LPACE_OK) {
    c->unsettled = 0;
    return 1;
  }
  if (rc == LPACE_FAILED && (c->hook || c->debug)) {
    ev_begin(L, "limiter");
    ev_str(L, "error", err);
    emit(L, c, ud, many);
  }
  return 0;
}

/* A slot for one request: 0 it may start (it is counted), > 0 seconds
   until the window resets, < 0 ask again shortly. force: it starts anyway.
   *shared: the slot came from the shared store. */
static double pace_take(lua_State *L, Client *c, int ud, int many, int force,
                        int *shared) {
  lpace_op op;
  memset(&op, 0, sizeof op);
  op.now = psk_clock_server(&c->clock, psk_http_now());
  op.lease = c->cfg.timeout + c->cfg.connect_timeout;
  op.force = force;
  op.probe = psk_clock_probe(&c->clock);
  op.seed = &c->budget;
  *shared = pace_shared(L, c, ud, many, &op);
  if (*shared) return op.delay;
  return psk_budget_take(&c->budget, op.now, op.lease, force, op.probe);
}

/* A request ended (answered: with the rate-limit values of k). The
   client's own budget always learns, so a fallback starts informed; the
   budget that gave the slot settles it. A shared settle that fails is
   owed: the next operation that reaches the store brings it. */
static void pace_settle(lua_State *L, Client *c, int ud, int many, int shared,
                        int answered, long long limit, long long remaining,
                        long long reset) {
  if (!shared) {
    psk_budget_settle(&c->budget, answered, limit, remaining, reset);
  } else {
    if (answered) psk_budget_learn(&c->budget, limit, remaining, reset);
    lpace_op op;
    memset(&op, 0, sizeof op);
    op.settle = 1;
    op.answered = answered;
    op.limit = limit;
    op.remaining = remaining;
    op.reset = reset;
    if (!pace_shared(L, c, ud, many, &op)) c->unsettled++;
  }
}

/* How long to sleep before asking for a slot again, after an answer d of
   pace_take. A shared budget may open before our clock says: a process
   with a better clock starts the new window. So from the earliest the
   reset can be (our clock's uncertainty before it), ask every PACE_POLL. */
static double pace_nap(const Client *c, double d, int shared) {
  double unc;
  if (d < 0) return PACE_POLL;
  if (!shared) return d;
  unc = c->clock.known ? c->clock.upper - c->clock.offset : 1;
  if (unc > 1) unc = 1;
  if (d - unc > PACE_POLL) return d - unc;
  return d < PACE_POLL ? d : PACE_POLL;
}

/* pin: waits for a slot, as long as max_retry_wait allows in all; past
   that the request starts anyway (its answer then says how long). One
   wait event per wait. Returns whether the slot is a shared one. */
static int pace_wait(lua_State *L, Client *c, int ud) {
  double waited = 0, until = 0;
  int shared;
  for (;;) {
    double nap, d = pace_take(L, c, ud, 0, 0, &shared);
    if (d == 0) return shared;
    if (waited + (d > 0 ? d : PACE_POLL) > c->cfg.max_retry_wait) {
      pace_take(L, c, ud, 0, 1, &shared);
      return shared;
    }
    if (d > 0 && waited + d > until + 0.05) {
      until = waited + d;
      if (c->hook || c->debug) ev_wait(L, c, ud, d, PSK_WAIT_RATE_LIMIT, 0, 0);
    }
    nap = pace_nap(c, d, shared);
    psk_http_sleep(nap);
    waited += nap;
  }
}

/* ---------------------------------------------------------------- */
/* pin and pin_many                                                  */

/* What to do after an outcome. */
typedef struct next_step {
  int retry;      /* make another attempt */
  double wait;    /* after this many seconds */
  int reason;     /* PSK_WAIT_* */
} next_step;

/* The one path every finished request takes, in pin and pin_many: pushes
   the outcome (a result table: returns 1; or nil, message, kind: returns
   3), emits the response or failure event, teaches the pacer, and decides
   whether to retry. shared: the request's slot came from the shared
   limiter. */
static int take_reply(lua_State *L, Client *c, int ud, const psk_reply *rep,
                      int attempt, int index, int shared, next_step *next) {
  psk_outcome o;
  double now = psk_http_now();
  int pushed;
  memset(&o, 0, sizeof o);
  o.status = rep->status;
  o.kind = rep->kind;
  if (rep->status) {
    long long date = -1;
    known k;
    int h;
    push_head(L, &rep->head, &k);
    h = lua_gettop(L);
    push_result(L, rep->status, h, &k, psk_buf_cstr(&rep->body),
                rep->body.len, attempt);
    o.retry_after = k.v[K_RETRY_AFTER];
    o.retry_after_len = k.n[K_RETRY_AFTER];
    o.reset = k.v[K_RESET];
    o.reset_len = k.n[K_RESET];
    o.date = k.v[K_DATE];
    o.date_len = k.n[K_DATE];
    if (o.date && psk_parse_http_date(o.date, o.date_len, &date) != PSK_OK)
      date = -1;
    psk_clock_learn(&c->clock, (double)date, now - rep->elapsed, now);
    pace_settle(L, c, ud, index > 0, shared, 1, known_int(&k, K_LIMIT),
                known_int(&k, K_REMAINING), known_int(&k, K_RESET));
    next->retry = attempt <= c->cfg.retries &&
                  psk_retry_plan(&o, attempt, now, psk_random(&c->rng),
                                 &next->wait, &next->reason) &&
                  next->wait <= c->cfg.max_retry_wait;
    lua_replace(L, h); /* the result holds the headers table */
    pushed = 1;
    if (c->hook || c->debug) {
      ev_begin(L, "response");
      if (index) ev_int(L, "index", index);
      ev_int(L, "attempt", attempt);
      ev_int(L, "status", rep->status);
      ev_num(L, "elapsed", rep->elapsed);
      lua_getfield(L, -2, "trace_id");
      lua_setfield(L, -2, "trace_id");
      lua_getfield(L, -2, "rate_limit");
      lua_setfield(L, -2, "rate_limit");
      emit(L, c, ud, index > 0);
    }
  } else {
    pace_settle(L, c, ud, index > 0, shared, 0, -1, -1, -1);
    next->retry = attempt <= c->cfg.retries &&
                  psk_retry_plan(&o, attempt, now, psk_random(&c->rng),
                                 &next->wait, &next->reason) &&
                  next->wait <= c->cfg.max_retry_wait;
    lua_pushnil(L);
    lua_pushstring(L, rep->message);
    lua_pushstring(L, psk_kind_names[rep->kind]);
    pushed = 3;
    if (c->hook || c->debug) {
      ev_begin(L, "failure");
      if (index) ev_int(L, "index", index);
      ev_int(L, "attempt", attempt);
      ev_str(L, "kind", psk_kind_names[rep->kind]);
      ev_str(L, "message", rep->message);
      emit(L, c, ud, index > 0);
    }
  }
  return pushed;
}

/* pin on client c (userdata at ud) with arguments at arg: build, pace,
   send, retry by the plan; returns a result or nil, message, kind. */
static int do_pin(lua_State *L, Client *c, int ud, int arg) {
  /* Its own transfer, so an on_event hook may pin during a pin_many. */
  psk_transfer *t = psk_http_transfer(c->http, PSK_PIN_TRANSFER);
  psk_request *r;
  pin_args a;
  unsigned gen;
  int attempt = 0;
  if (!t) return luaL_error(L, "periskope: out of memory");
  r = psk_transfer_request(t);
  check_pin_args(L, arg, arg, "", &a); /* keeps message_id on the stack */
  build_into(L, c, r, &a);
  gen = ++c->pin_gen;
  for (;;) {
    next_step next = {0, 0, 0};
    int n, shared = pace_wait(L, c, ud);
    attempt++;
    if (c->hook || c->debug) ev_request(L, c, ud, r, attempt, 0, 0);
    /* A hook that pinned on this client reused the transfer: build ours
       again. */
    if (c->pin_gen != gen) {
      build_into(L, c, r, &a);
      gen = ++c->pin_gen;
    }
    n = take_reply(L, c, ud, psk_http_perform(c->http, t), attempt, 0, shared,
                   &next);
    if (!next.retry) return n;
    lua_pop(L, n);
    if (c->hook || c->debug) ev_wait(L, c, ud, next.wait, next.reason, 0, 0);
    psk_http_sleep(next.wait);
  }
}

static int client_pin(lua_State *L) {
  Client *c = checkclient(L);
  return do_pin(L, c, 1, 2);
}

/* One item of a pin_many batch. */
enum { ITEM_PENDING, ITEM_RUNNING, ITEM_DONE };
typedef struct item {
  pin_args a;        /* a.id is anchored in the batch's id table */
  int state;
  int attempts;
  int shared;        /* its slot came from the shared limiter */
  double not_before; /* local time a retry may start */
} item;

static const char *const many_options[] = {"concurrency", NULL};

/* Takes the reply of finished transfer t for its item: schedules a retry,
   or stores the item's result (a failure becomes { ok = false, error,
   kind, attempts }) in the results table at res. Returns 1 when the item
   is done. */
static int finish_item(lua_State *L, Client *c, item *items, int *slot_item,
                       psk_transfer *t, int res) {
  int slot = psk_transfer_tag(t), k = slot_item[slot], m;
  next_step next = {0, 0, 0};
  slot_item[slot] = -1;
  m = take_reply(L, c, 1, psk_transfer_reply(t), items[k].attempts, k + 1,
                 items[k].shared, &next);
  if (next.retry) {
    lua_pop(L, m);
    items[k].state = ITEM_PENDING;
    items[k].not_before = psk_http_now() + next.wait;
    if (c->hook || c->debug)
      ev_wait(L, c, 1, next.wait, next.reason, k + 1, 1);
    return 0;
  }
  if (m == 3) { /* nil, message, kind */
    lua_createtable(L, 0, 4);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "ok");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "error");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, items[k].attempts);
    lua_setfield(L, -2, "attempts");
    lua_replace(L, -4);
    lua_pop(L, 2);
  }
  lua_rawseti(L, res, k + 1);
  items[k].state = ITEM_DONE;
  return 1;
}

/* Client:pin_many(list, opts): every item checked first, then sent over
   the multi handle, at most opts.concurrency at once, paced by the
   rate-limit headers, retried as pin retries; results in input order. */
static int client_pin_many(lua_State *L) {
  Client *c = checkclient(L);
  int conc = 4, n, i, ids_i, res_i, done = 0, first = 0;
  int slot_item[PSK_MAX_CONCURRENCY];
  double paced_until = 0;
  item *items;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) {
    long long v = 0;
    luaL_checktype(L, 3, LUA_TTABLE);
    check_keys(L, 3, 3, "", "option", many_options);
    if (get_field(L, 3, "concurrency") != LUA_TNIL) {
      if (!psk_tointegral(L, -1, &v) || v < 1 || v > PSK_MAX_CONCURRENCY)
        bad_p(L, 3, "", "option", "concurrency",
              "must be an integer from 1 to 64", -1);
      conc = (int)v;
    }
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  n = (int)psk_rawlen(L, 2);
  /* Check every item before sending anything; the ids stay referenced
     from a table of our own, whatever the caller does to the list. */
  /* Lua-owned memory: a raise anywhere below frees it with the stack. */
  items = psk_newuserdata(L, sizeof(item) * (size_t)(n ? n : 1));
  lua_createtable(L, n, 0);
  ids_i = lua_gettop(L);
  for (i = 0; i < n; i++) {
    char pfx[32];
    snprintf(pfx, sizeof pfx, "item %d: ", i + 1);
    lua_rawgeti(L, 2, i + 1);
    check_pin_args(L, -1, 2, pfx, &items[i].a);
    lua_rawseti(L, ids_i, i + 1); /* anchors message_id */
    lua_pop(L, 1);
    items[i].state = ITEM_PENDING;
    items[i].attempts = 0;
    items[i].not_before = 0;
  }
  lua_createtable(L, n, 0);
  res_i = lua_gettop(L);
  if (c->in_many)
    return luaL_error(L, "periskope: pin_many called from its own on_event");
  c->in_many = 1;
  if (conc > n) conc = n;
  for (i = 0; i < PSK_MAX_CONCURRENCY; i++) slot_item[i] = -1;

  while (done < n) {
    double now = psk_http_now(), timeout = 1;
    psk_transfer *t;
    /* Start what may start: a free slot, a ready item, budget left. */
    while (psk_http_running(c->http) < conc) {
      int k, slot, pick = -1, shared, running = psk_http_running(c->http);
      double d;
      while (first < n && items[first].state == ITEM_DONE) first++;
      for (k = first; k < n; k++) {
        if (items[k].state != ITEM_PENDING) continue;
        if (items[k].not_before <= now) {
          pick = k;
          break;
        }
        if (items[k].not_before - now < timeout)
          timeout = items[k].not_before - now;
      }
      if (pick < 0) break;
      d = pace_take(L, c, 1, 1, 0, &shared);
      if (d < 0 && running == 0 && !shared) /* nothing would teach us */
        d = pace_take(L, c, 1, 1, 1, &shared);
      if (d != 0) {
        double nap = pace_nap(c, d, shared);
        if (nap < timeout) timeout = nap;
        /* One wait event per wait, not one per turn of the loop. */
        if (d > 0 && now + d > paced_until + 0.05) {
          paced_until = now + d;
          if (c->hook || c->debug)
            ev_wait(L, c, 1, d, PSK_WAIT_RATE_LIMIT, 0, 1);
        }
        break;
      }
      for (slot = 0; slot < conc && slot_item[slot] >= 0; slot++) {
      }
      t = psk_http_transfer(c->http, slot);
      if (!t) {
        psk_http_stop_all(c->http);
        c->in_many = 0;
        return luaL_error(L, "periskope: out of memory");
      }
      build_into(L, c, psk_transfer_request(t), &items[pick].a);
      psk_transfer_set_tag(t, slot);
      slot_item[slot] = pick;
      items[pick].state = ITEM_RUNNING;
      items[pick].attempts++;
      items[pick].shared = shared;
      if (c->hook || c->debug)
        ev_request(L, c, 1, psk_transfer_request(t), items[pick].attempts,
                   pick + 1, 1);
      /* A transfer that cannot start has its failure in its reply. */
      if (psk_http_start(c->http, t) != 0)
        done += finish_item(L, c, items, slot_item, t, res_i);
    }
    if (done >= n) break;
    for (t = psk_http_wait(c->http, timeout); t; t = psk_http_wait(c->http, 0))
      done += finish_item(L, c, items, slot_item, t, res_i);
  }
  c->in_many = 0;
  lua_pushvalue(L, res_i);
  return 1;
}

/* Pushes the default client, creating it from configure's options (or the
   environment) on first use, and again after close. [-0, +1, v] */
static Client *default_client(lua_State *L) {
  Client *c;
  lua_getfield(L, lua_upvalueindex(1), "default");
  c = psk_testudata(L, -1, CLIENT_MT);
  if (c && !c->closed) return c;
  lua_pop(L, 1);
  lua_getfield(L, lua_upvalueindex(1), "config");
  c = new_client(L, lua_istable(L, -1) ? lua_gettop(L) : 0, 0);
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, lua_upvalueindex(1), "default");
  return c;
}

static int mod_pin(lua_State *L) {
  Client *c;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  c = default_client(L);
  return do_pin(L, c, 2, 1);
}

/* periskope.configure(options): checks them all, then commits: a call
   that raises changes nothing. Opens no connection. */
static int mod_configure(lua_State *L) {
  Client *probe;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  /* Check with a throwaway client that never opens a connection. */
  probe = psk_newuserdata(L, sizeof *probe);
  memset(probe, 0, sizeof *probe);
  probe->closed = 1;
  psk_request_init(&probe->req);
  psk_setmetatable(L, CLIENT_MT);
  read_options(L, probe, 1, 1, 0);
  client_release(probe);
  lua_pop(L, 1);
  /* Keep a copy, so later changes to the caller's table do not leak in. */
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, 2);
  }
  lua_setfield(L, lua_upvalueindex(1), "config");
  /* The next call builds the default client from the new options. */
  lua_getfield(L, lua_upvalueindex(1), "default");
  probe = psk_testudata(L, -1, CLIENT_MT);
  if (probe) client_release(probe);
  lua_pushnil(L);
  lua_setfield(L, lua_upvalueindex(1), "default");
  return 0;
}

/* ---------------------------------------------------------------- */
/* registration                                                      */

static const luaL_Reg client_methods[] = {{"pin", client_pin},
                                          {"pin_many", client_pin_many},
                                          {"build_pin", client_build_pin},
                                          {"close", client_close},
                                          {NULL, NULL}};

static const luaL_Reg client_meta[] = {{"__gc", client_gc},
                                       {"__close", client_gc},
                                       {"__tostring", client_tostring},
                                       {NULL, NULL}};

static const luaL_Reg module_funcs[] = {{"new", mod_new},
                                        {"configure", mod_configure},
                                        {"pin", mod_pin},
                                        {"read_response", mod_read_response},
                                        {NULL, NULL}};

/* Creates the metatables; the module state table on top becomes upvalue 1
   of every method too (push_error_text caches the JSON decoder there). */
static void create_metatables(lua_State *L) {
  int state = lua_gettop(L);
  if (luaL_newmetatable(L, CLIENT_MT)) {
    lua_pushvalue(L, state);
    psk_setfuncs(L, client_meta, 1);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, state);
    psk_setfuncs(L, client_methods, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, HEADERS_MT)) {
    lua_pushcfunction(L, headers_index);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

__attribute__((visibility("default"))) int luaopen_periskope(lua_State *L);

int luaopen_periskope(lua_State *L) {
  lua_createtable(L, 0, 6); /* the module */
  lua_newtable(L);          /* module state: upvalue 1 of every function */
  create_metatables(L);
  psk_setfuncs(L, module_funcs, 1);
  lua_pushliteral(L, PSK_VERSION);
  lua_setfield(L, -2, "VERSION");
  lpace_open(L);
  lua_setfield(L, -2, "limiter");
  return 1;
}
