/*
 * lpace: the binding's side of shared pacing: periskope.limiter, its
 * limiter objects, and running a psk_budget operation in their stores.
 */
#ifndef LPACE_H
#define LPACE_H

#include "compat.h"
#include "psk_pace.h"

#define LIMITER_MT "periskope.Limiter"
/* prefix (at most LPACE_PREFIX_MAX bytes) + 64 hex digits + NUL */
#define LPACE_PREFIX_MAX 64
#define LPACE_NAME_MAX (LPACE_PREFIX_MAX + 65)

/* Results of lpace_run. */
enum { LPACE_OK = 0, LPACE_FAILED = -1, LPACE_RESTING = -2 };

/* Runs op on the budget stored under name in the limiter at index idx, in
   one atomic step of its store. LPACE_FAILED: err says why (never a
   secret); LPACE_RESTING: a recent failure, the store is not tried yet.
   Either way the caller paces by itself. mono_now: psk_time_mono(), for
   the store's rest and its lock's deadline. Never raises. */
int lpace_run(lua_State *L, int idx, const char *name, psk_pace_op *op,
              double mono_now, char *err, size_t err_cap);

/* The limiter at i, or NULL. */
void *lpace_test(lua_State *L, int i);
/* The name a client's budget is stored under: the limiter's prefix and
   the SHA-256 of the API key. */
void lpace_name(void *lim, const char *api_key, char out[LPACE_NAME_MAX]);

/* Creates the limiter metatable and pushes the periskope.limiter table. */
void lpace_open(lua_State *L);

#endif
