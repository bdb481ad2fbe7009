/*
 * analyzer_lua.h: force-included (-include) by make check-static into
 * every file clang-tidy analyses; never by a build.
 *
 * The Lua functions that raise never return: they longjmp to the nearest
 * protected call. lua.h and lauxlib.h do not say so, so clang's analyzer
 * follows the impossible path past `if (!p) luaL_error(...)` and reports
 * the NULL it finds there. Declaring them noreturn (a GCC attribute may
 * come on any declaration) tells it what the manual says.
 *
 * No #include here: a system header pulled in before a source file's own
 * _POSIX_C_SOURCE would hide what that file asks for (clock_gettime). The
 * struct tag stands in for lua.h's lua_State typedef, which C99 forbids
 * repeating.
 */
#ifndef PSK_ANALYZER_LUA_H
#define PSK_ANALYZER_LUA_H

struct lua_State;
int lua_error(struct lua_State *L) __attribute__((noreturn));
int luaL_error(struct lua_State *L, const char *fmt, ...)
    __attribute__((noreturn));
int luaL_argerror(struct lua_State *L, int arg, const char *extramsg)
    __attribute__((noreturn));

#endif
