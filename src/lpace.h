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

/* One operation on a budget, the same for every store. */
typedef struct lpace_op {
  int settle;    /* 0: take a slot; 1: a request ended */
  double now;    /* take: server time */
  double lease;  /* take: seconds a slot counts as in flight at most */
  int force;     /* take: count it even past the budget */
  double probe;  /* take: psk_clock_probe of the taker's clock */
  const psk_budget *seed; /* what the taker knows, for a store that knows
                             nothing yet (new, flushed, restarted) */
  long long unsettled;    /* earlier slots of this process that ended
                             while the store could not be told */
  int answered;  /* settle: a response came, with these (-1: absent) */
  long long limit, remaining, reset;
  double delay;  /* take: the answer (see psk_budget_take) */
} lpace_op;

void lpace_apply(psk_budget *b, lpace_op *op);

/* Results of lpace_run. */
enum { LPACE_OK = 0, LPACE_FAILED = -1, LPACE_RESTING = -2 };

/* Runs op on the budget stored under name in the limiter at index idx, in
   one atomic step of its store. LPACE_FAILED: err says why (never a
   secret); LPACE_RESTING: a recent failure, the store is not tried yet.
   Either way the caller paces by itself. Never raises. */
int lpace_run(lua_State *L, int idx, const char *name, lpace_op *op,
              double local_now, char *err, size_t err_cap);

/* The limiter at i, or NULL. */
void *lpace_test(lua_State *L, int i);
/* The name a client's budget is stored under: the limiter's prefix and
   the SHA-256 of the API key. */
void lpace_name(void *lim, const char *api_key, char out[LPACE_NAME_MAX]);

/* Creates the limiter metatable and pushes the periskope.limiter table. */
void lpace_open(lua_State *L);

#endif
