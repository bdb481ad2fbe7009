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
enum {
  LPACE_OK = 0,
  LPACE_FAILED = -1,  /* err says why (never a secret) */
  LPACE_RESTING = -2, /* a recent failure: the store is not tried yet */
  LPACE_BUSY = -3,    /* io given: the dictionary's lock is held; ask
                         again shortly */
  LPACE_IO = -4       /* io given: a Redis operation for the host's sockets
                         to carry (lpace_io_*) */
};

/* An operation on a Redis limiter whose I/O the host's sockets do
   (nginx's cosockets): the limiter says where to connect, hands out the
   bytes to send and takes what comes back (psk_redis_x inside), with
   the operation's deadline. One per job; reused from one operation to
   the next. */
typedef struct lpace_io lpace_io;

/* Runs op on the budget stored under name in the limiter at index idx, in
   one atomic step of its store. LPACE_FAILED or LPACE_RESTING: the caller
   paces by itself. mono_now: psk_time_mono(), for the store's rest and
   its lock's deadline. io NULL: the operation ends here, blocking as long
   as the store's timeout (Redis) or the lock's wait (a dictionary)
   allows. io given, for a caller that must not block: a held dictionary
   lock is LPACE_BUSY, and a Redis operation is LPACE_IO, carried on by
   the host (below). A dictionary's methods run under lua_pcall (an error
   of theirs is the store failing); what indexes the user's dictionary
   (its __index) or the global ngx, and memory running out, may raise.
   [-0, +0, e] */
int lpace_run(lua_State *L, int idx, const char *name, psk_pace_op *op,
              double mono_now, lpace_io *io, char *err, size_t err_cap);

lpace_io *lpace_io_new(void); /* NULL when out of memory */
void lpace_io_free(lpace_io *io);
/* An operation waits for the host's sockets (connect, bytes). */
int lpace_io_busy(const lpace_io *io);
/* An operation ended: lpace_io_finish gives its outcome. */
int lpace_io_ready(const lpace_io *io);
/* Where to connect, and the name of the host's pool of connections
   there; strings that live as long as the limiter. */
void lpace_io_target(const lpace_io *io, const char **host, int *port,
                     const char **pool);
/* Seconds left before the operation's deadline (at least 1 ms). */
double lpace_io_left(const lpace_io *io);
/* The connection is up (fresh: it carried nothing yet, so the
   connection's setup goes first). LPACE_IO: bytes to send. */
int lpace_io_connected(lpace_io *io, int fresh);
/* The bytes to send now (*len 0: none; read next). */
void lpace_io_output(lpace_io *io, const char **bytes, size_t *len);
/* Bytes that came back: LPACE_IO (send what lpace_io_output gives, if
   anything, then read more), or the end (LPACE_OK, LPACE_FAILED). */
int lpace_io_feed(lpace_io *io, const char *bytes, size_t len);
/* The host's socket failed (what: "timeout", "closed", ...): the end,
   LPACE_FAILED, and the store rests. */
int lpace_io_fail(lpace_io *io, const char *what);
/* Whether the connection may be kept for the next operation. */
int lpace_io_reusable(const lpace_io *io);
/* The ended operation's outcome: LPACE_OK (its answer in op) or
   LPACE_FAILED (err); the io is idle again. */
int lpace_io_finish(lpace_io *io, psk_pace_op *op, char *err, size_t err_cap);

/* The limiter at i, or NULL. */
void *lpace_test(lua_State *L, int i);
/* The name a client's budget is stored under: the limiter's prefix and
   the SHA-256 of the API key. */
void lpace_name(void *lim, const char *api_key, char out[LPACE_NAME_MAX]);

/* Creates the limiter metatable and pushes the periskope.limiter table. */
void lpace_open(lua_State *L);

#endif
