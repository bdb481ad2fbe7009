/*
 * lpsk_result.c: requests and answers as Lua tables. build_pin's request
 * table; the result table that pin, pin_many, job:step and read_response
 * all end in (lpsk_push_result); and read_response, which turns an answer
 * the caller got itself into that same result. The headers table a
 * result holds is lpsk_head.c's.
 */
#include <stdio.h>
#include <string.h>

#include "lpsk.h"

void lpsk_build_request(lua_State *L, Client *c, psk_request *r,
                        const pin_args *a) {
  if (psk_request_build(r, &c->cfg, a->id, a->idlen, a->pin, a->time,
                        a->has_phone ? a->phone : NULL) != PSK_OK)
    luaL_error(L, "periskope: out of memory");
}

void lpsk_push_request_headers(lua_State *L, const psk_request *r,
                               int redact) {
  int i;
  lua_createtable(L, 0, r->nheaders);
  for (i = 0; i < r->nheaders; i++) {
    if (redact && strcmp(r->headers[i].name, "Authorization") == 0)
      lua_pushliteral(L, LPSK_BEARER "***");
    else
      lua_pushstring(L, r->headers[i].value);
    lua_setfield(L, -2, r->headers[i].name);
  }
}

/* Client:build_pin(args): the request pin would send, as a table. */
int lpsk_build_pin(lua_State *L) {
  Client *c = lpsk_checkclient(L);
  pin_args a;
  lpsk_check_pin_args(L, 2, 2, "", &a);
  lpsk_build_request(L, c, &c->req, &a);
  lua_pop(L, 1); /* message_id: the request holds its own copy now */
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "POST");
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, psk_buf_cstr(&c->req.url), c->req.url.len);
  lua_setfield(L, -2, "url");
  lpsk_push_request_headers(L, &c->req, 0);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, psk_buf_cstr(&c->req.body), c->req.body.len);
  lua_setfield(L, -2, "body");
  return 1;
}

static const char *const result_keys[RK_N] = {
    "ok", "status", "headers", "body", "rate_limit", "trace_id",
    "error", "attempts", "limit", "remaining", "reset",
    "x-periskope-trace-id"};

void lpsk_result_keys(lua_State *L, int state) {
  int i;
  for (i = 0; i < RK_N; i++) {
    lua_pushstring(L, result_keys[i]);
    lua_rawseti(L, state, STATE_KEYS + i);
  }
}

/* Pushes field name rk (the module state is upvalue 1); lua_rawset(L,
   -3) then sets it, once its value is pushed. [-0, +1, -] */
static void push_key(lua_State *L, int rk) {
  lua_rawgeti(L, lua_upvalueindex(1), STATE_KEYS + rk);
}

/* Whether an X-RateLimit-* header holds an integer: the result then has
   a rate_limit table. */
static int has_rate_limit(const known *k) {
  return k->num[K_LIMIT] >= 0 || k->num[K_REMAINING] >= 0 ||
         k->num[K_RESET] >= 0;
}

/* Pushes the rate_limit table of the X-RateLimit-* headers that hold an
   integer (has_rate_limit). [-0, +1, m] */
static void push_rate_limit(lua_State *L, const known *k) {
  int i;
  lua_createtable(L, 0, 3);
  for (i = K_LIMIT; i <= K_RESET; i++) {
    long long v = lpsk_known_int(k, i);
    if (v >= 0) {
      push_key(L, RK_LIMIT + (i - K_LIMIT));
      lua_pushinteger(L, (lua_Integer)v);
      lua_rawset(L, -3);
    }
  }
}

/* lua_pcall for one result, except that running out of memory is raised
   again: it says nothing about lua-cjson or the body, and a result built
   around it would be wrong (or, cached, wrong for good). [-(n+1), +1, m] */
static int pcall_keep_memory_errors(lua_State *L, int nargs) {
  int st = lua_pcall(L, nargs, 1, 0);
  if (st == LUA_ERRMEM) lua_error(L);
  return st;
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
      if (pcall_keep_memory_errors(L, 1) == LUA_OK && lua_istable(L, -1))
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
      if (pcall_keep_memory_errors(L, 1) == LUA_OK && lua_istable(L, -1)) {
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
void lpsk_push_result(lua_State *L, long status, int h, const known *k,
                      const char *body, size_t blen, int attempts) {
  int ok = status >= 200 && status < 300;
  /* Sized for its fields: ok, status, headers, body, attempts, and
     rate_limit, trace_id and error when present. */
  lua_createtable(L, 0, 5 + has_rate_limit(k) + (k->v[K_TRACE] != NULL) + !ok);
  push_key(L, RK_OK);
  lua_pushboolean(L, ok);
  lua_rawset(L, -3);
  push_key(L, RK_STATUS);
  lua_pushinteger(L, (lua_Integer)status);
  lua_rawset(L, -3);
  push_key(L, RK_HEADERS);
  lua_pushvalue(L, h);
  lua_rawset(L, -3);
  push_key(L, RK_BODY);
  lua_pushlstring(L, body, blen);
  lua_rawset(L, -3);
  if (has_rate_limit(k)) {
    push_key(L, RK_RATE_LIMIT);
    push_rate_limit(L, k);
    lua_rawset(L, -3);
  }
  if (k->v[K_TRACE]) { /* the string the headers table holds */
    push_key(L, RK_TRACE_ID);
    push_key(L, RK_TRACE_HEADER);
    lua_rawget(L, h);
    lua_rawset(L, -3);
  }
  if (!ok) {
    push_key(L, RK_ERROR);
    push_error_text(L, status, body, blen);
    lua_rawset(L, -3);
  }
  push_key(L, RK_ATTEMPTS);
  lua_pushinteger(L, attempts);
  lua_rawset(L, -3);
}

/* periskope.read_response(status, headers, body) */
int lpsk_read_response(lua_State *L) {
  known kh;
  long long status;
  size_t blen = 0;
  const char *body;
  int h;
  if (!psk_tointegral(L, 1, &status) || status < 100 || status > 599)
    return luaL_argerror(
        L, 1, lua_pushfstring(L, "status must be an integer from 100 to 599, %s",
                              lpsk_got(L, 1)));
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  body = luaL_optlstring(L, 3, "", &blen);
  h = lpsk_push_given_headers(L, 2);
  lpsk_known_from_table(L, h, &kh);
  lpsk_push_result(L, (long)status, h, &kh, body, blen, 1);
  return 1;
}

