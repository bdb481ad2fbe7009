/*
 * lpsk_check.c: every check of what a caller hands the module, before
 * anything is sent or acquired, and the one wording of its errors.
 *
 * A table is walked once (lpsk_check_keys: a key that is not a string or
 * not listed raises, naming the accepted ones), then each field is read
 * by one typed reader that knows its name, default and range. They serve
 * periskope.new and configure (lpsk_read_options, with the circuit
 * option), pin's arguments, pin_many's and pin_job's options, perform's
 * request (lpsk_async.c) and the limiters (lpace.c). Whatever raises
 * says it the same way, naming the function (or the item) and the option
 * or field and what it accepts:
 *
 *   bad argument #1 to 'new' (option 'timeout' must be ..., got 0)
 *   bad argument #1 to 'pin_many' (item 3: unknown field 'x' (message_id, ...))
 *
 * Numbers and types are echoed (lpsk_got), never a string value: one may
 * be the API key. Read values land in C structs (psk_config, pin_args).
 * The one I/O here: ca_file is opened once, to refuse at once a file
 * that cannot be read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpsk.h"

/* ---------------------------------------------------------------- */
/* the wording of every error                                        */

/* The index of s in the NULL-terminated names, or -1. */
static int list_index(const char *s, const char *const names[]) {
  int i;
  for (i = 0; names[i]; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

/* Numbers as themselves, everything else by type, so no string value
   (it may be the key) is ever echoed. */
const char *lpsk_got(lua_State *L, int i) {
  if (lua_type(L, i) == LUA_TNUMBER) {
    char num[64];
    double v = (double)lua_tonumber(L, i);
    /* As short as shows the value: 7 + 2^-50 is not "7". */
    snprintf(num, sizeof num, "%.14g", v);
    if (strtod(num, NULL) != v) snprintf(num, sizeof num, "%.17g", v);
    return lua_pushfstring(L, "got %s", num);
  }
  return lua_pushfstring(L, "got %s", luaL_typename(L, i));
}

int lpsk_arg_error(lua_State *L, int arg, const char *fn, const char *msg) {
  if (arg <= 0) return luaL_error(L, "periskope: %s", msg);
  if (fn) return luaL_error(L, "bad argument #%d to '%s' (%s)", arg, fn, msg);
  return luaL_argerror(L, arg, msg);
}

/* lpsk_bad, saying only the value's type when secret. */
static int bad_(lua_State *L, const lpsk_tab *tb, const char *name,
                const char *rule, int vi, int secret) {
  const char *subject = "", *got = "";
  if (vi) vi = psk_absindex(L, vi);
  if (name)
    subject = tb->in ? lua_pushfstring(L, "%s '%s.%s' ", tb->what, tb->in, name)
                     : lua_pushfstring(L, "%s '%s' ", tb->what, name);
  if (vi)
    got = secret ? lua_pushfstring(L, ", got %s", luaL_typename(L, vi))
                 : lua_pushfstring(L, ", %s", lpsk_got(L, vi));
  return lpsk_arg_error(
      L, tb->arg, tb->fn,
      lua_pushfstring(L, "%s%s%s%s", tb->pfx, subject, rule, got));
}

int lpsk_bad(lua_State *L, const lpsk_tab *tb, const char *name,
             const char *rule, int vi) {
  return bad_(L, tb, name, rule, vi, 0);
}

/* Pushes the names joined with ", ". [-0, +1, m] */
static const char *push_names(lua_State *L, const char *const names[]) {
  luaL_Buffer b;
  int i;
  luaL_buffinit(L, &b);
  for (i = 0; names[i]; i++) {
    if (i) luaL_addlstring(&b, ", ", 2);
    luaL_addstring(&b, names[i]);
  }
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

/* Raises for key k of a table read with tb: not a string, or not one of
   names. */
static int bad_key(lua_State *L, const lpsk_tab *tb, int k,
                   const char *const names[]) {
  const char *in = tb->in ? tb->in : "", *dot = tb->in ? "." : "";
  k = psk_absindex(L, k);
  if (lua_type(L, k) != LUA_TSTRING)
    return lpsk_arg_error(
        L, tb->arg, tb->fn,
        lua_pushfstring(L, "%s%s names%s%s must be strings, %s", tb->pfx,
                        tb->what, tb->in ? " of " : "", in, lpsk_got(L, k)));
  return lpsk_arg_error(
      L, tb->arg, tb->fn,
      lua_pushfstring(L, "%sunknown %s '%s%s%s' (%s)", tb->pfx, tb->what, in,
                      dot, lua_tostring(L, k), push_names(L, names)));
}

/* ---------------------------------------------------------------- */
/* the getters                                                       */

void lpsk_check_keys(lua_State *L, const lpsk_tab *tb, int t,
                     const char *const names[], int *at) {
  int i, n = 0;
  t = psk_absindex(L, t);
  while (names[n]) n++;
  if (at) {
    for (i = 0; i < n; i++) at[i] = 0;
    luaL_checkstack(L, n + 3, "periskope: too many fields");
  }
  lua_pushnil(L);
  while (lua_next(L, t)) {
    /* Type first: lua_tostring would convert a number key in place, and
       lua_next would then lose its way. */
    i = lua_type(L, -2) == LUA_TSTRING ? list_index(lua_tostring(L, -2), names)
                                       : -1;
    if (i < 0) bad_key(L, tb, -2, names);
    if (at) {
      lua_pushvalue(L, -2);
      lua_remove(L, -3); /* the value stays, the key goes on */
      at[i] = lua_gettop(L) - 1;
    } else {
      lua_pop(L, 1);
    }
  }
}

/* Pushes t[name] (raw), or nil when t is 0. [-0, +1, -] */
int lpsk_get_field(lua_State *L, int t, const char *name) {
  if (!t) {
    lua_pushnil(L);
    return LUA_TNIL;
  }
  lua_pushstring(L, name);
  lua_rawget(L, t);
  return lua_type(L, -1);
}

double lpsk_opt_number(lua_State *L, const lpsk_tab *tb, int vi,
                       const char *name, double def, double lo, int lo_ok,
                       double hi, const char *rule) {
  double v;
  if (!vi) return def;
  if (lua_type(L, vi) != LUA_TNUMBER) lpsk_bad(L, tb, name, rule, vi);
  v = (double)lua_tonumber(L, vi);
  if (!(lo_ok ? v >= lo : v > lo) || !(v <= hi))
    lpsk_bad(L, tb, name, rule, vi);
  return v;
}

long long lpsk_opt_integer(lua_State *L, const lpsk_tab *tb, int vi,
                           const char *name, long long def, long long lo,
                           long long hi, const char *rule) {
  long long v = 0;
  if (!vi) return def;
  if (!psk_tointegral(L, vi, &v) || v < lo || v > hi)
    lpsk_bad(L, tb, name, rule, vi);
  return v;
}

int lpsk_opt_boolean(lua_State *L, const lpsk_tab *tb, int vi,
                     const char *name, int def) {
  if (!vi) return def;
  if (lua_type(L, vi) != LUA_TBOOLEAN)
    lpsk_bad(L, tb, name, "must be a boolean", vi);
  return lua_toboolean(L, vi);
}

const char *lpsk_opt_string(lua_State *L, const lpsk_tab *tb, int vi,
                            const char *name, size_t *len, int flags) {
  if (!vi) return NULL;
  if (lua_type(L, vi) != LUA_TSTRING)
    bad_(L, tb, name, "must be a string", vi, flags & LPSK_SECRET);
  return lua_tolstring(L, vi, len);
}

const char *lpsk_opt_text(lua_State *L, const lpsk_tab *tb, int vi,
                          const char *name, const char *def, size_t max,
                          int flags, const char *rule) {
  size_t n = 0;
  const char *s;
  if (!vi) return def;
  s = lua_type(L, vi) == LUA_TSTRING ? lua_tolstring(L, vi, &n) : NULL;
  if (!s || n == 0 || n > max || psk_has_ctl(s, n))
    bad_(L, tb, name, rule, vi, flags & LPSK_SECRET);
  return s;
}

int lpsk_opt_choice(lua_State *L, const lpsk_tab *tb, int vi,
                    const char *name, const char *const names[], int def,
                    const char *rule) {
  int i;
  if (!vi) return def;
  i = lua_type(L, vi) == LUA_TSTRING ? list_index(lua_tostring(L, vi), names)
                                     : -1;
  if (i < 0) lpsk_bad(L, tb, name, rule, vi);
  return i;
}

/* ---------------------------------------------------------------- */
/* new and configure                                                 */

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

enum {
  O_API_KEY, O_PHONE, O_BASE_URL, O_TIMEOUT, O_CONNECT_TIMEOUT, O_RETRIES,
  O_MAX_BODY, O_CA_FILE, O_USER_AGENT, O_MAX_RETRY_WAIT, O_ON_EVENT,
  O_LIMITER, O_CIRCUIT, O_N
};

static const char *const option_names[O_N + 1] = {
    "api_key",        "phone",    "base_url", "timeout",    "connect_timeout",
    "retries",        "max_body", "ca_file",  "user_agent", "max_retry_wait",
    "on_event",       "limiter",  "circuit",  NULL};

/* A string option at vi, else the environment variable env (empty counts
   as unset), else NULL. A value from the environment stays on the stack
   while the caller uses it; *from_env says where it came from.
   [-0, +(0|1), v] */
static const char *opt_env(lua_State *L, const lpsk_tab *tb, int vi,
                           const char *name, const char *env, size_t *len,
                           int *from_env, int flags) {
  const char *v;
  *from_env = 0;
  if (vi) return lpsk_opt_string(L, tb, vi, name, len, flags);
  v = env ? getenv(env) : NULL;
  if (!v || !*v) return NULL;
  *from_env = 1;
  lua_pushstring(L, v);
  return lua_tolstring(L, -1, len);
}

/* A rule broken by a value from the environment says so. [-0, +1, m] */
static const char *env_rule(lua_State *L, const char *rule, int from_env,
                            const char *env) {
  return from_env ? lua_pushfstring(L, "%s (from %s)", rule, env) : rule;
}

static const char *const circuit_fields[] = {"failures", "cooldown", NULL};

#define SECONDS_RULE "must be a number of seconds > 0 and <= 86400"
#define CIRCUIT_RULE                                                        \
  "must be false, or a table { failures = 1 to 1000, cooldown = seconds > " \
  "0 and <= 86400 }"

/* The circuit option at vi into c: absent or true, the defaults; false,
   none; a table, its fields over the defaults. [-0, +0, v] */
static void read_circuit(lua_State *L, Client *c, const lpsk_tab *tb,
                         int vi) {
  lpsk_tab sub = *tb;
  int at[2], top = lua_gettop(L);
  c->failures = 5;
  c->cooldown = 10;
  if (!vi || lua_type(L, vi) == LUA_TBOOLEAN) {
    if (vi && !lua_toboolean(L, vi)) c->failures = 0;
    return;
  }
  if (lua_type(L, vi) != LUA_TTABLE)
    lpsk_bad(L, tb, "circuit", CIRCUIT_RULE, vi);
  sub.in = "circuit";
  lpsk_check_keys(L, &sub, vi, circuit_fields, at);
  c->failures = (int)lpsk_opt_integer(L, &sub, at[0], "failures", 5, 1, 1000,
                                      "must be an integer from 1 to 1000");
  c->cooldown = lpsk_opt_number(L, &sub, at[1], "cooldown", 10, 0, 0, 86400,
                                SECONDS_RULE);
  lua_settop(L, top);
}

/* Reads every option of table t (0: none) into c->cfg, with environment
   fallbacks. need_key: a missing api_key raises (new), or is allowed
   (configure checks the rest). Strings are stored as soon as they pass, so
   a raise part-way leaves them to release. [-0, +0, v] */
void lpsk_read_options(lua_State *L, Client *c, int t, int arg,
                       int need_key) {
  lpsk_tab tb = {arg, NULL, "", "option", NULL};
  int at[O_N], env, st, top = lua_gettop(L), i;
  psk_err e;
  size_t n;
  const char *s;
  psk_buf url;

  for (i = 0; i < O_N; i++) at[i] = 0;
  if (t) lpsk_check_keys(L, &tb, t, option_names, at);

  s = opt_env(L, &tb, at[O_API_KEY], "api_key", "PERISKOPE_API_KEY", &n, &env,
              LPSK_SECRET);
  if (s) {
    if (psk_check_api_key(s, n, &e) != PSK_OK)
      lpsk_bad(L, &tb, "api_key", env_rule(L, e.msg, env, "PERISKOPE_API_KEY"),
               0);
    free(c->cfg.auth);
    c->cfg.auth = malloc(LPSK_BEARER_LEN + n + 1);
    if (!c->cfg.auth) luaL_error(L, "periskope: out of memory");
    memcpy(c->cfg.auth, LPSK_BEARER, LPSK_BEARER_LEN);
    memcpy(c->cfg.auth + LPSK_BEARER_LEN, s, n);
    c->cfg.auth[LPSK_BEARER_LEN + n] = '\0';
  } else if (need_key) {
    lpsk_bad(L, &tb, "api_key",
             "is required: pass it, or set PERISKOPE_API_KEY", 0);
  }

  s = opt_env(L, &tb, at[O_PHONE], "phone", "PERISKOPE_PHONE", &n, &env, 0);
  if (s) {
    char phone[PSK_PHONE_MAX + 1];
    if (psk_normalize_phone(s, n, phone, &e) != PSK_OK)
      lpsk_bad(L, &tb, "phone", env_rule(L, e.msg, env, "PERISKOPE_PHONE"), 0);
    set_owned(L, &c->cfg.phone, phone, strlen(phone));
  }

  s = opt_env(L, &tb, at[O_BASE_URL], "base_url", "PERISKOPE_BASE_URL", &n,
              &env, 0);
  if (!s) {
    s = PSK_DEFAULT_BASE_URL;
    n = strlen(s);
  }
  psk_buf_init(&url, PSK_BASE_URL_MAX);
  if ((st = psk_http_base_url(s, n, &url, &e)) != PSK_OK) {
    psk_buf_free(&url);
    if (st == PSK_NOMEM) luaL_error(L, "periskope: out of memory");
    lpsk_bad(L, &tb, "base_url", env_rule(L, e.msg, env, "PERISKOPE_BASE_URL"),
             0);
  }
  free(c->cfg.base_url);
  c->cfg.base_url = dup_n(psk_buf_cstr(&url), url.len);
  psk_buf_free(&url);
  if (!c->cfg.base_url) luaL_error(L, "periskope: out of memory");

  c->cfg.timeout = lpsk_opt_number(L, &tb, at[O_TIMEOUT], "timeout", 30, 0, 0,
                                   86400, SECONDS_RULE);
  c->cfg.connect_timeout =
      lpsk_opt_number(L, &tb, at[O_CONNECT_TIMEOUT], "connect_timeout", 10, 0,
                      0, 86400, SECONDS_RULE);
  c->cfg.retries = (int)lpsk_opt_integer(L, &tb, at[O_RETRIES], "retries", 2,
                                         0, 10,
                                         "must be an integer from 0 to 10");
  c->cfg.max_retry_wait =
      lpsk_opt_number(L, &tb, at[O_MAX_RETRY_WAIT], "max_retry_wait", 60, 0, 1,
                      86400, "must be a number of seconds >= 0 and <= 86400");
  c->cfg.max_body = (size_t)lpsk_opt_integer(
      L, &tb, at[O_MAX_BODY], "max_body", 1048576, 0, 1073741824,
      "must be an integer number of bytes from 0 to 1073741824");

  s = lpsk_opt_string(L, &tb, at[O_CA_FILE], "ca_file", &n, 0);
  if (s) {
    FILE *f = n && strlen(s) == n ? fopen(s, "r") : NULL;
    if (f)
      fclose(f);
    else
      lpsk_bad(L, &tb, "ca_file", "must name a readable PEM file", 0);
    set_owned(L, &c->cfg.ca_file, s, n);
  }

  s = lpsk_opt_string(L, &tb, at[O_USER_AGENT], "user_agent", &n, 0);
  if (s) {
    if (psk_check_user_agent(s, n, &e) != PSK_OK)
      lpsk_bad(L, &tb, "user_agent", e.msg, 0);
    set_owned(L, &c->cfg.user_agent, s, n);
  } else {
    char ua[256], *sp;
    snprintf(ua, sizeof ua, "periskope-lua/%s libcurl/%s %s", PSK_VERSION,
             psk_http_curl_version(), PSK_LUA_NAME);
    sp = strrchr(ua, ' '); /* "Lua 5.4" -> "Lua/5.4" */
    if (sp) *sp = '/';
    set_owned(L, &c->cfg.user_agent, ua, strlen(ua));
  }

  if (at[O_ON_EVENT] && lua_type(L, at[O_ON_EVENT]) != LUA_TFUNCTION)
    lpsk_bad(L, &tb, "on_event", "must be a function", at[O_ON_EVENT]);

  read_circuit(L, c, &tb, at[O_CIRCUIT]);

  if (at[O_LIMITER] && !lpace_test(L, at[O_LIMITER]))
    lpsk_bad(L, &tb, "limiter",
             "must be a limiter from periskope.limiter.shared_dict or "
             "periskope.limiter.redis",
             at[O_LIMITER]);
  lua_settop(L, top);
}

/* ---------------------------------------------------------------- */
/* pin's arguments and the drivers' options                          */

static const char *const pin_fields[] = {"message_id", "pin", "time", "phone",
                                         NULL};

#define TIME_RULE "must be 1, 7 or 30 (days)"

/* Checks the pin argument table at t (argument arg of the call; pfx is ""
   or "item N: " for pin_many) into a. Raises, naming the field, before
   anything is sent. Leaves message_id on the stack. [-0, +1, v] */
void lpsk_check_pin_args(lua_State *L, int t, int arg, const char *pfx,
                         pin_args *a) {
  lpsk_tab tb = {arg, NULL, pfx, "field", NULL};
  /* The fields' values by the index of their name in pin_fields, 0 when
     absent; found in one walk of the table, which keeps each value on
     the stack. */
  int at[4], base;
  psk_err e;
  size_t n;
  const char *s;
  t = psk_absindex(L, t);
  base = lua_gettop(L);
  if (!lua_istable(L, t)) {
    if (*pfx) lpsk_bad(L, &tb, NULL, "must be a table of pin fields", t);
    luaL_checktype(L, arg, LUA_TTABLE);
  }
  lpsk_check_keys(L, &tb, t, pin_fields, at);
  /* The rules in a fixed order, whatever the walk's order was. */
  a->pin = lpsk_opt_boolean(L, &tb, at[1], "pin", 1);
  a->time = (int)lpsk_opt_integer(L, &tb, at[2], "time", 0, 1, 30, TIME_RULE);
  if (at[2] && psk_check_time(a->time, &e) != PSK_OK)
    lpsk_bad(L, &tb, "time", TIME_RULE, at[2]);
  s = lpsk_opt_string(L, &tb, at[3], "phone", &n, 0);
  a->has_phone = s != NULL;
  if (s && psk_normalize_phone(s, n, a->phone, &e) != PSK_OK)
    lpsk_bad(L, &tb, "phone", e.msg, 0);
  if (!at[0] || lua_type(L, at[0]) != LUA_TSTRING)
    lpsk_bad(L, &tb, "message_id",
             !at[0] ? "is required (a string of 1 to 1024 bytes)"
                    : "must be a string of 1 to 1024 bytes",
             at[0]);
  a->id = lua_tolstring(L, at[0], &a->idlen);
  if (psk_check_message_id(a->id, a->idlen, &e) != PSK_OK)
    lpsk_bad(L, &tb, "message_id", e.msg, 0);
  /* message_id stays, on top. */
  lua_pushvalue(L, at[0]);
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
}

int lpsk_check_many_options(lua_State *L, int arg) {
  static const char *const names[] = {"concurrency", NULL};
  lpsk_tab tb = {arg, NULL, "", "option", NULL};
  int at[1], conc, top = lua_gettop(L);
  if (lua_isnoneornil(L, arg)) return 4;
  luaL_checktype(L, arg, LUA_TTABLE);
  lpsk_check_keys(L, &tb, arg, names, at);
  conc = (int)lpsk_opt_integer(L, &tb, at[0], "concurrency", 4, 1,
                               PSK_MAX_CONCURRENCY,
                               "must be an integer from 1 to 64");
  lua_settop(L, top);
  return conc;
}

int lpsk_check_job_options(lua_State *L, int arg) {
  static const char *const names[] = {"io", NULL};
  /* In the order of JOB_IO_*. */
  static const char *const io_names[] = {"send", "watch", "bytes", NULL};
  lpsk_tab tb = {arg, NULL, "", "option", NULL};
  int at[1], io, top = lua_gettop(L);
  if (lua_isnoneornil(L, arg)) return JOB_IO_SEND;
  luaL_checktype(L, arg, LUA_TTABLE);
  lpsk_check_keys(L, &tb, arg, names, at);
  io = lpsk_opt_choice(L, &tb, at[0], "io", io_names, JOB_IO_SEND,
                       "must be \"send\", \"watch\" or \"bytes\"");
  lua_settop(L, top);
  return io;
}
