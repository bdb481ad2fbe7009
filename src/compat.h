/*
 * compat.h: the one place that knows Lua versions differ.
 *
 * The binding is written to the Lua 5.4 API; this header backfills what
 * 5.1, 5.2, 5.3 and LuaJIT 2.1 lack. Every LUA_VERSION_NUM test of the
 * project is here. LuaJIT reports 501 but exports some 5.2 functions
 * (luaL_setfuncs, luaL_testudata, ...), so fallbacks carry psk_ names and
 * never clash with them.
 */
#ifndef PSK_COMPAT_H
#define PSK_COMPAT_H

#include <math.h>

#include "lauxlib.h"
#include "lua.h"

#ifndef LUA_OK
#define LUA_OK 0
#endif

#if LUA_VERSION_NUM < 502
/* 5.1 and LuaJIT */
#define psk_rawlen(L, i) lua_objlen(L, (i))
#define psk_absindex(L, i) \
  (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
static inline void psk_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
static inline void *psk_testudata(lua_State *L, int i, const char *tname) {
  void *p = lua_touserdata(L, i);
  if (p && lua_getmetatable(L, i)) {
    int same;
    luaL_getmetatable(L, tname);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (same) return p;
  }
  return NULL;
}
#define psk_newuserdata(L, sz) lua_newuserdata(L, (sz))
/* The uservalue is a table: 5.1 keeps it as the userdata's environment. */
#define psk_setuvtable(L, i) lua_setfenv(L, (i))
#define psk_getuvtable(L, i) lua_getfenv(L, (i))
#else
#define psk_rawlen(L, i) lua_rawlen(L, (i))
#define psk_absindex(L, i) lua_absindex(L, (i))
#define psk_setfuncs(L, l, n) luaL_setfuncs(L, (l), (n))
#define psk_testudata(L, i, t) luaL_testudata(L, (i), (t))
#if LUA_VERSION_NUM >= 504
#define psk_newuserdata(L, sz) lua_newuserdatauv(L, (sz), 1)
#define psk_setuvtable(L, i) lua_setiuservalue(L, (i), 1)
#define psk_getuvtable(L, i) ((void)lua_getiuservalue(L, (i), 1))
#else
#define psk_newuserdata(L, sz) lua_newuserdata(L, (sz))
#define psk_setuvtable(L, i) lua_setuservalue(L, (i))
#define psk_getuvtable(L, i) ((void)lua_getuservalue(L, (i)))
#endif
#endif

/* luaL_setmetatable is 5.2+; this works everywhere. [-0, +0, -] */
#define psk_setmetatable(L, tname) \
  (luaL_getmetatable(L, (tname)), lua_setmetatable(L, -2))

/* The runtime's name for the User-Agent: LuaJIT names itself. */
#if defined(__has_include)
#if __has_include("luajit.h")
#include "luajit.h"
#endif
#endif
#if defined(LUAJIT_VERSION)
#define PSK_LUA_NAME LUAJIT_VERSION
#else
#define PSK_LUA_NAME LUA_VERSION
#endif

/* An integral number in the range of long long: 1 and *out set; else 0
   (not a number, a fraction, NaN or out of range). Integer-valued floats
   such as 7.0 count, on every version. [-0, +0, -] */
static inline int psk_tointegral(lua_State *L, int i, long long *out) {
  lua_Number n;
  if (lua_type(L, i) != LUA_TNUMBER) return 0;
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, i)) {
    *out = (long long)lua_tointeger(L, i);
    return 1;
  }
#endif
  n = lua_tonumber(L, i);
  if (!(n >= -9.2e18 && n <= 9.2e18) || floor(n) != n) return 0;
  *out = (long long)n;
  return 1;
}

#endif
