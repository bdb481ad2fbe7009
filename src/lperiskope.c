/*
 * lperiskope.c: the module's registration, and nothing else: the module
 * table, every function and metatable (luaopen_periskope, the one
 * exported symbol). What the functions do lives below, in the files
 * lpsk.h lists; nothing there calls up into this file.
 *
 * Module state (the default client, configure's options, the cached JSON
 * decoder) is one table, upvalue 1 of every module function and method:
 * no C statics, since a process may hold several lua_States.
 */
#include "lpsk.h"

static const luaL_Reg client_methods[] = {{"pin", lpsk_client_pin},
                                          {"pin_many", lpsk_client_pin_many},
                                          {"build_pin", lpsk_build_pin},
                                          {"pin_job", lpsk_client_pin_job},
                                          {"close", lpsk_client_close},
                                          {NULL, NULL}};

static const luaL_Reg client_meta[] = {{"__gc", lpsk_client_gc},
                                       {"__close", lpsk_client_tbc},
                                       {"__tostring", lpsk_client_tostring},
                                       {NULL, NULL}};

static const luaL_Reg module_funcs[] = {{"new", lpsk_mod_new},
                                        {"configure", lpsk_mod_configure},
                                        {"pin", lpsk_mod_pin},
                                        {"read_response", lpsk_read_response},
                                        {"perform", lpsk_mod_perform},
                                        {"debug_line", lpsk_mod_debug_line},
                                        {NULL, NULL}};

/* A job, nested pin or batch that a raise left behind is released by the
   collector. */
static const luaL_Reg job_meta[] = {
    {"__gc", lpsk_job_gc}, {"__close", lpsk_job_gc}, {NULL, NULL}};
static const luaL_Reg pin_meta[] = {
    {"__gc", lpsk_pin_gc}, {"__close", lpsk_pin_gc}, {NULL, NULL}};
static const luaL_Reg batch_meta[] = {
    {"__gc", lpsk_batch_gc}, {"__close", lpsk_batch_gc}, {NULL, NULL}};

/* Creates the metatables; the module state table on top becomes upvalue 1
   of every method too (push_error_text caches the JSON decoder there). */
static void create_metatables(lua_State *L) {
  int state = lua_gettop(L);
  lpsk_pin_open(L, state);
  if (luaL_newmetatable(L, CLIENT_MT)) {
    lua_pushvalue(L, state);
    psk_setfuncs(L, client_meta, 1);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, state);
    psk_setfuncs(L, client_methods, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_rawseti(L, state, STATE_CLIENT_MT);
  if (luaL_newmetatable(L, HEADERS_MT)) {
    lua_pushcfunction(L, lpsk_headers_index);
    lua_setfield(L, -2, "__index");
  }
  lua_rawseti(L, state, STATE_HEADERS_MT);
  lpsk_result_keys(L, state);
  if (luaL_newmetatable(L, JOB_MT)) psk_setfuncs(L, job_meta, 0);
  lua_pop(L, 1);
  lpsk_async_open(L, state);
  if (luaL_newmetatable(L, BATCH_MT)) psk_setfuncs(L, batch_meta, 0);
  lua_pop(L, 1);
  if (luaL_newmetatable(L, PIN_MT)) psk_setfuncs(L, pin_meta, 0);
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
