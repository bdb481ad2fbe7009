/*
 * lpsk_client.c: the client's lifetime, in one place every operation
 * calls down into (as liolib keeps newprefile, aux_close and f_gc):
 * how a Client is made (periskope.new, the default client, configure's
 * commit), checked at the start of every method (lpsk_checkclient),
 * closed (close, __close, __gc) and released (lpsk_client_release), and
 * the busy rule that keeps it whole while a call that may run Lua is on
 * it (lpsk_run_busy). It calls nothing above it: the drivers call it.
 *
 * A client may be closed while a call runs on it (from an on_event hook):
 * close then only marks it closed, and the last call out releases it,
 * as luv defers a handle's free to uv_close's callback. Until then its
 * memory stays whole for the calls that run.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lpsk.h"
#include "psk_time.h"

/* Releases everything the client holds, in reverse order of acquisition.
   Safe on a half-built, closed or released client; never raises. */
void lpsk_client_release(Client *c) {
  psk_http_free(c->http); /* before cfg: the transport borrows it */
  c->http = NULL;
  psk_request_free(&c->req);
  psk_request_free(&c->spare);
  free(c->pin); /* released by its call, which is over */
  c->pin = NULL;
  lpsk_head_free(c->head); /* no table is being built from it: no call runs */
  c->head = NULL;
  psk_config_free(&c->cfg);
  c->closed = 1;
}

Client *lpsk_checkclient(lua_State *L) {
  Client *c = lua_touserdata(L, 1);
  int same = 0;
  /* The metatable from the module state: no lookup by name per call. */
  if (c && lua_getmetatable(L, 1)) {
    lua_rawgeti(L, lua_upvalueindex(1), STATE_CLIENT_MT);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  if (!same) c = luaL_checkudata(L, 1, CLIENT_MT); /* raises, naming it */
  if (c->closed) luaL_error(L, "periskope: attempt to use a closed client");
  return c;
}

/* ---------------------------------------------------------------- */
/* made                                                              */

/* Keeps option name of table t (0: none) in the client's uservalue table
   when it has type `type` (read_options checked it); returns whether it
   did. [-0, +0, m] */
static int keep_option(lua_State *L, int ud, int t, const char *name,
                       int type) {
  int kept = lpsk_get_field(L, t, name) == type;
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
  psk_request_init(&c->spare);
  psk_setmetatable(L, CLIENT_MT);
  lua_createtable(L, 0, 2); /* uservalue: holds on_event and limiter */
  psk_setuvtable(L, ud);

  lpsk_read_options(L, c, t, arg, 1);
  c->hook = keep_option(L, ud, t, "on_event", LUA_TFUNCTION);
  if (keep_option(L, ud, t, "limiter", LUA_TUSERDATA)) {
    psk_getuvtable(L, ud);
    lua_getfield(L, -1, "limiter");
    /* Named after the key itself (hashed), without "Bearer ". */
    lpace_name(lpace_test(L, -1), c->cfg.auth + LPSK_BEARER_LEN, c->lim_name);
    lua_pop(L, 2);
    c->limited = 1;
  }
  dbg = getenv("PERISKOPE_DEBUG");
  c->debug = !c->hook && dbg && strcmp(dbg, "1") == 0;
  psk_shared_init(&c->own);
  c->rng = (uint64_t)(uintptr_t)c ^ ((uint64_t)(psk_time_wall() * 1e6) << 1);
  if (!c->rng) c->rng = 0x9E3779B97F4A7C15ULL;

  c->http = psk_http_new(&c->cfg, err, sizeof err);
  if (!c->http) luaL_error(L, "%s", err);
  c->closed = 0;
  return c;
}

int lpsk_mod_new(lua_State *L) {
  int t = 0;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    t = 1;
  }
  new_client(L, t, 1);
  return 1;
}

/* ---------------------------------------------------------------- */
/* closed                                                            */

/* Marks the client closed: every later use raises. A call running on it
   (close came from its hook) keeps it whole and releases it on its way
   out; else it is released now. */
static void client_close_(Client *c) {
  c->closed = 1;
  if (!c->busy) lpsk_client_release(c);
}

/* Client:close(): may be called twice. */
int lpsk_client_close(lua_State *L) {
  client_close_(luaL_checkudata(L, 1, CLIENT_MT));
  lua_pushboolean(L, 1);
  return 1;
}

/* __close (Lua 5.4's <close>): close, deferred while a call runs. */
int lpsk_client_tbc(lua_State *L) {
  client_close_(luaL_checkudata(L, 1, CLIENT_MT));
  return 0;
}

/* __gc: a client that is collected has no call running on it (a running
   call keeps it on its stack), except when the state itself is closed
   from inside a hook (os.exit(code, true)): that call never resumes. */
int lpsk_client_gc(lua_State *L) {
  lpsk_client_release(luaL_checkudata(L, 1, CLIENT_MT));
  return 0;
}

int lpsk_client_tostring(lua_State *L) {
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
/* the default client                                                */

Client *lpsk_default_client(lua_State *L) {
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

/* periskope.configure(options): checks them all, then commits: a call
   that raises changes nothing. Opens no connection. */
int lpsk_mod_configure(lua_State *L) {
  Client *probe;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  /* Check with a throwaway client that never opens a connection. */
  probe = psk_newuserdata(L, sizeof *probe);
  memset(probe, 0, sizeof *probe);
  probe->closed = 1;
  psk_request_init(&probe->req);
  psk_setmetatable(L, CLIENT_MT);
  lpsk_read_options(L, probe, 1, 1, 0);
  lpsk_client_release(probe);
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
  /* The next call builds the default client from the new options; the
     old one is closed (when a call runs on it, that call finishes with
     it and releases it). */
  lua_getfield(L, lua_upvalueindex(1), "default");
  probe = psk_testudata(L, -1, CLIENT_MT);
  if (probe) client_close_(probe);
  lua_pushnil(L);
  lua_setfield(L, lua_upvalueindex(1), "default");
  return 0;
}

/* ---------------------------------------------------------------- */
/* the busy rule                                                     */

/* The body kept under name in the module state is a closure with the
   state as its upvalue 1 (the result builder caches the JSON decoder
   there). See lpsk.h. */
int lpsk_run_busy(lua_State *L, Client *c, int ud, int obj, const char *name,
                  lpsk_release_fn release) {
  int base = lua_gettop(L), st;
  lua_getfield(L, lua_upvalueindex(1), name);
  lua_pushvalue(L, ud);
  lua_pushvalue(L, obj);
  c->busy++; /* from here on, every exit passes below */
  st = lua_pcall(L, 2, LUA_MULTRET, 0);
  c->busy--;
  if (!c->busy) lpsk_head_idle(c->head); /* no table is built now */
  release(L, obj);
  if (!c->busy && c->closed) lpsk_client_release(c);
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L) - base;
}
