/*
 * lpsk_check.c: options and pin arguments, checked before anything is
 * sent. Misuse raises, naming the option or field and what it accepts and
 * echoing numbers and types, never strings (one may be the API key). Read
 * values land in C structs (psk_config, pin_args); nothing here does I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpsk.h"

/* The index of s in the NULL-terminated names, or -1. */
static int list_index(const char *s, const char *const names[]) {
  int i;
  for (i = 0; names[i]; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

/* Describes the value at i for an error message: numbers as themselves,
   everything else by type, so no string value (it may be the key) is ever
   echoed. [-0, +1, m] */
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

/* Raises for a bad option or field. arg > 0: "bad argument #arg to 'fn'
   (WHAT 'NAME' RULE, got X)"; arg == 0 (the default client, built inside
   another call): "periskope: WHAT 'NAME' RULE". vi: the offending value's
   index, or 0 to leave "got" out. [-0, +0, v] */
static int lpsk_bad(lua_State *L, int arg, const char *pfx,
                    const char *what, const char *name, const char *rule,
                    int vi) {
  const char *msg;
  if (vi) {
    vi = psk_absindex(L, vi);
    msg = lua_pushfstring(L, "%s%s '%s' %s, %s", pfx, what, name, rule,
                          lpsk_got(L, vi));
  } else {
    msg = lua_pushfstring(L, "%s%s '%s' %s", pfx, what, name, rule);
  }
  if (arg > 0) return luaL_argerror(L, arg, msg);
  return luaL_error(L, "periskope: %s", msg);
}

#define bad(L, arg, what, name, rule, vi) \
  lpsk_bad(L, arg, "", what, name, rule, vi)

/* Raises for key k (a string, or not) of a table at arg: a name that is
   not a string, or one not in the list of fields. [-0, +0, v] */
static void bad_key(lua_State *L, int k, int arg, const char *pfx,
                    const char *what) {
  const char *m =
      lua_type(L, k) != LUA_TSTRING
          ? lua_pushfstring(L, "%s%s names must be strings, %s", pfx, what,
                            lpsk_got(L, k))
          : lua_pushfstring(L, "%sunknown %s '%s'", pfx, what,
                            lua_tostring(L, k));
  if (arg > 0) luaL_argerror(L, arg, m);
  luaL_error(L, "periskope: %s", m);
}

/* Raises on a key of table t that is not a string or not in names; pfx
   ("" or "item 3: ") starts the message. */
static void check_keys(lua_State *L, int t, int arg, const char *pfx,
                       const char *what, const char *const names[]) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1); /* keep the key only */
    /* Type first: lua_tostring would convert a number key in place, and
       lua_next would then lose its way. */
    if (lua_type(L, -1) != LUA_TSTRING ||
        list_index(lua_tostring(L, -1), names) < 0)
      bad_key(L, -1, arg, pfx, what);
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

static const char *const option_names[] = {
    "api_key",        "phone",    "base_url", "timeout",    "connect_timeout",
    "retries",        "max_body", "ca_file",  "user_agent", "max_retry_wait",
    "on_event",       "limiter",  "circuit",  NULL};

/* A string option from t, else from the environment variable env (empty
   counts as unset). Leaves the value on the stack while the caller uses
   it. *from_env tells where it came from. [-0, +1, v] */
static const char *opt_string(lua_State *L, int t, int arg, const char *name,
                              const char *env, size_t *len, int *from_env) {
  int ty = lpsk_get_field(L, t, name);
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

/* A number option t[key] in (lo, hi] (or [lo, hi] when lo_ok); integral
   when integral is set; errors name it `name`. [-0, +0, v] */
static double opt_number_as(lua_State *L, int t, int arg, const char *key,
                            const char *name, double def, double lo,
                            int lo_ok, double hi, int integral,
                            const char *rule) {
  double v;
  int ty = lpsk_get_field(L, t, key);
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

#define opt_number(L, t, arg, name, ...) \
  opt_number_as(L, t, arg, name, name, __VA_ARGS__)

static const char *const circuit_fields[] = {"failures", "cooldown", NULL};

#define CIRCUIT_RULE                                                        \
  "must be false, or a table { failures = 1 to 1000, cooldown = seconds > " \
  "0 and <= 86400 }"

/* The circuit option of table t (0: none) into c: nil or true, the
   defaults; false, none; a table, its fields over the defaults.
   [-0, +0, v] */
static void read_circuit(lua_State *L, Client *c, int t, int arg) {
  int ty = lpsk_get_field(L, t, "circuit"), v = lua_gettop(L);
  c->failures = 5;
  c->cooldown = 10;
  if (ty == LUA_TBOOLEAN && !lua_toboolean(L, v)) c->failures = 0;
  if (ty == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, v)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING ||
          list_index(lua_tostring(L, -1), circuit_fields) < 0)
        lpsk_bad(L, arg, "", "option", "circuit",
                 lua_type(L, -1) == LUA_TSTRING
                     ? lua_pushfstring(L, "has an unknown field '%s' (%s)",
                                       lua_tostring(L, -1), CIRCUIT_RULE)
                     : CIRCUIT_RULE,
                 0);
    }
    c->failures =
        (int)opt_number_as(L, v, arg, "failures", "circuit.failures", 5, 1, 1,
                           1000, 1, "must be an integer from 1 to 1000");
    c->cooldown = opt_number_as(
        L, v, arg, "cooldown", "circuit.cooldown", 10, 0, 0, 86400, 0,
        "must be a number of seconds > 0 and <= 86400");
  } else if (ty != LUA_TNIL && ty != LUA_TBOOLEAN) {
    bad(L, arg, "option", "circuit", CIRCUIT_RULE, v);
  }
  lua_pop(L, 1);
}

/* Reads every option of table t (0: none) into c->cfg, with environment
   fallbacks. need_key: a missing api_key raises (new), or is allowed
   (configure checks the rest). Strings are stored as soon as they pass, so
   a raise part-way leaves them to release. [-0, +0, v] */
void lpsk_read_options(lua_State *L, Client *c, int t, int arg,
                       int need_key) {
  psk_err e;
  size_t n;
  int env, st;
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
  if ((st = psk_normalize_base_url(s, n, &url, &e)) != PSK_OK) {
    psk_buf_free(&url);
    if (st == PSK_NOMEM) luaL_error(L, "periskope: out of memory");
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
    if (f)
      fclose(f);
    else
      bad(L, arg, "option", "ca_file", "must name a readable PEM file", 0);
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

  if (lpsk_get_field(L, t, "on_event") != LUA_TNIL &&
      lua_type(L, -1) != LUA_TFUNCTION)
    bad(L, arg, "option", "on_event", "must be a function", -1);
  lua_pop(L, 1);

  read_circuit(L, c, t, arg);

  if (lpsk_get_field(L, t, "limiter") != LUA_TNIL && !lpace_test(L, -1))
    bad(L, arg, "option", "limiter",
        "must be a limiter from periskope.limiter.shared_dict or "
        "periskope.limiter.redis",
        -1);
  lua_pop(L, 1);
}

static const char *const pin_fields[] = {"message_id", "pin", "time", "phone",
                                         NULL};

/* Checks the pin argument table at t (argument arg of the call; pfx is ""
   or "item N: " for pin_many) into a. Raises, naming the field, before
   anything is sent. Leaves message_id on the stack. [-0, +1, v] */
void lpsk_check_pin_args(lua_State *L, int t, int arg, const char *pfx,
                         pin_args *a) {
  /* The fields' values by the index of their name in pin_fields, 0 when
     absent; found in one walk of the table, which keeps each value on
     the stack (below the key lua_next needs). */
  int at[4] = {0, 0, 0, 0}, base;
  psk_err e;
  t = psk_absindex(L, t);
  base = lua_gettop(L);
  a->pin = 1;
  a->time = 0;
  a->has_phone = 0;
  if (!lua_istable(L, t)) {
    if (*pfx)
      luaL_argerror(L, arg,
                    lua_pushfstring(L, "%smust be a table of pin fields, %s",
                                    pfx, lpsk_got(L, t)));
    luaL_checktype(L, arg, LUA_TTABLE);
  }
  lua_pushnil(L);
  while (lua_next(L, t)) {
    /* Type first, as check_keys does. */
    int i = lua_type(L, -2) == LUA_TSTRING
                ? list_index(lua_tostring(L, -2), pin_fields)
                : -1;
    if (i < 0) {
      bad_key(L, -2, arg, pfx, "field"); /* raises */
    } else {
      lua_pushvalue(L, -2);
      lua_remove(L, -3); /* the value stays, the key goes on */
      at[i] = lua_gettop(L) - 1;
    }
  }
  /* The rules in a fixed order, whatever the walk's order was. */
  if (at[1]) {
    if (lua_type(L, at[1]) != LUA_TBOOLEAN)
      lpsk_bad(L, arg, pfx, "field", "pin", "must be a boolean", at[1]);
    a->pin = lua_toboolean(L, at[1]);
  }
  if (at[2]) {
    long long days = 0;
    if (!psk_tointegral(L, at[2], &days) || psk_check_time(days, &e) != PSK_OK)
      lpsk_bad(L, arg, pfx, "field", "time", "must be 1, 7 or 30 (days)",
               at[2]);
    a->time = (int)days;
  }
  if (at[3]) {
    size_t n;
    const char *s;
    if (lua_type(L, at[3]) != LUA_TSTRING)
      lpsk_bad(L, arg, pfx, "field", "phone", "must be a string", at[3]);
    s = lua_tolstring(L, at[3], &n);
    if (psk_normalize_phone(s, n, a->phone, &e) != PSK_OK)
      lpsk_bad(L, arg, pfx, "field", "phone", e.msg, 0);
    a->has_phone = 1;
  }
  if (!at[0] || lua_type(L, at[0]) != LUA_TSTRING)
    lpsk_bad(L, arg, pfx, "field", "message_id",
             !at[0] ? "is required (a string of 1 to 1024 bytes)"
                    : "must be a string of 1 to 1024 bytes",
             at[0]);
  a->id = lua_tolstring(L, at[0], &a->idlen);
  if (psk_check_message_id(a->id, a->idlen, &e) != PSK_OK)
    lpsk_bad(L, arg, pfx, "field", "message_id", e.msg, 0);
  /* message_id stays, on top. */
  lua_pushvalue(L, at[0]);
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
}


static const char *const many_options[] = {"concurrency", NULL};

int lpsk_check_many_options(lua_State *L, int arg) {
  int conc = 4;
  if (!lua_isnoneornil(L, arg)) {
    long long v = 0;
    luaL_checktype(L, arg, LUA_TTABLE);
    check_keys(L, arg, arg, "", "option", many_options);
    if (lpsk_get_field(L, arg, "concurrency") != LUA_TNIL) {
      if (!psk_tointegral(L, -1, &v) || v < 1 || v > PSK_MAX_CONCURRENCY)
        lpsk_bad(L, arg, "", "option", "concurrency",
                 "must be an integer from 1 to 64", -1);
      conc = (int)v;
    }
    lua_pop(L, 1);
  }
  return conc;
}
