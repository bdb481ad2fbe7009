/*
 * lpsk_pace.c: every pacing decision of the binding, written once for
 * every caller -- pin, pin_many's batches and jobs stepped from Lua -- and
 * every budget: the client's own, or a shared store (an nginx dictionary,
 * Redis) with the client's own as its fallback. The budget arithmetic
 * itself is psk_pace's (no Lua); what lives here is the policy: when to
 * wait, when to go anyway, when to send nothing; the circuit breaker's
 * events; and the record of requests that got no answer, which lets the
 * waiters of such a request fail with it instead of one timeout each.
 */
#include <stdio.h>
#include <string.h>

#include "lpsk.h"
#include "psk_time.h"

/* Seconds between asks while only an answer in flight (ours or another
   process's) can open the budget. */
#define PACE_POLL 0.05

/* ---------------------------------------------------------------- */
/* the stores                                                        */

/* Seconds a waiter asks again after a dictionary's lock was held, and
   how long in all before the store counts as failed for this operation
   (the lock's holder may have died: its lock expires after 3 s). */
#define LOCK_NAP LPSK_LOCK_NAP
#define LOCK_WAIT 1.0

/* What a store operation came to. */
enum {
  STORE_DONE,  /* in the store: op holds the answer */
  STORE_LOCAL, /* pace in the client (no store, it failed or rests) */
  STORE_BUSY,  /* a dictionary's lock is held: ask again shortly */
  STORE_IO     /* the host's sockets carry it (io) */
};

/* The limiter event for a store that failed. [-0, +0, e] */
static void store_failed(lua_State *L, Client *c, int ud, const char *err) {
  if (!lpsk_wants_events(c)) return;
  lpsk_ev_begin(L, "limiter", 0);
  lua_pushstring(L, err);
  lua_setfield(L, -2, "error");
  lpsk_emit(L, c, ud);
}

/* An operation's outcome in the store (rc of lpace_run or
   lpace_io_finish). */
static int store_outcome(lua_State *L, Client *c, int ud, int rc,
                         const char *err) {
  if (rc == LPACE_OK) {
    c->unsettled = 0;
    return STORE_DONE;
  }
  if (rc == LPACE_BUSY) return STORE_BUSY;
  if (rc == LPACE_IO) return STORE_IO;
  if (rc == LPACE_FAILED) store_failed(L, c, ud, err);
  return STORE_LOCAL;
}

/* Runs op in the client's shared store, if it has one. io: NULL for a
   caller that may block (the operation ends here); else the caller's,
   for one that must not (a held lock answers STORE_BUSY, a Redis
   operation STORE_IO). An operation io carried to its end is taken
   instead of starting another. */
static int pace_store(lua_State *L, Client *c, int ud, psk_pace_op *op,
                      lpace_io *io) {
  char err[320];
  int rc;
  if (!c->limited) return STORE_LOCAL;
  if (lpace_io_ready(io)) {
    rc = lpace_io_finish(io, op, err, sizeof err);
    return store_outcome(L, c, ud, rc, err);
  }
  op->unsettled = c->unsettled;
  psk_getuvtable(L, ud);
  lua_getfield(L, -1, "limiter");
  rc = lpace_run(L, -1, c->lim_name, op, psk_time_mono(), io, err, sizeof err);
  lua_pop(L, 2);
  return store_outcome(L, c, ud, rc, err);
}

/* The circuit as op left it, announced when it differs from what the
   client last announced. [-0, +0, e] */
static void circuit_news(lua_State *L, Client *c, int ud,
                         const psk_pace_op *op) {
  if (!c->failures || op->open == c->circuit_open) return;
  c->circuit_open = op->open;
  if (!lpsk_wants_events(c)) return;
  lpsk_ev_begin(L, "circuit", 0);
  lua_pushstring(L, op->open ? "open" : "closed");
  lua_setfield(L, -2, "state");
  lua_pushinteger(L, (lua_Integer)op->fails);
  lua_setfield(L, -2, "failures");
  lpsk_emit(L, c, ud);
}

/* The fields every op of this client starts with. */
static void op_init(Client *c, psk_pace_op *op) {
  memset(op, 0, sizeof *op);
  /* The budget is on the server's clock: the epoch clock, offset. */
  op->now = psk_clock_server(&c->clock, psk_time_wall());
  op->lease = c->cfg.timeout + c->cfg.connect_timeout;
  op->failures = c->failures;
  op->cooldown = c->cooldown;
  op->seed = &c->own.budget;
}

/* Takes a slot for waiter w: fills op (delay, refused, is_probe); *shared
   says which budget answered. STORE_BUSY or STORE_IO: nothing was taken
   yet (see pace_store). Paced alone (the store failed, or rests), the
   ticket keeps the waiter's place for when the store answers again,
   unless the wait ends here. */
static int take(lua_State *L, Client *c, int ud, pace_waiter *w, int force,
                int *shared, psk_pace_op *op) {
  int st;
  op_init(c, op);
  op->force = force;
  op->probe = psk_clock_probe(&c->clock);
  op->ticket = w->ticket;
  if (w->skip_store) {
    w->skip_store = 0;
    st = STORE_LOCAL;
  } else {
    st = pace_store(L, c, ud, op, w->io);
  }
  if (st == STORE_BUSY || st == STORE_IO) return st;
  *shared = st == STORE_DONE;
  if (*shared) {
    w->ticket = op->ticket;
  } else {
    long long ticket = w->ticket;
    op_init(c, op);
    op->force = force;
    op->probe = psk_clock_probe(&c->clock);
    op->local = 1;
    psk_pace_apply(&c->own, op);
    w->ticket = op->delay == 0 && !op->refused ? 0 : ticket;
  }
  circuit_news(L, c, ud, op);
  return STORE_DONE;
}

/* How long to sleep before asking for a slot again, after an answer d of
   take. A shared budget may open before our clock says: a process with a
   better clock starts the new window. So from the earliest the reset can
   be (our clock's uncertainty before it), ask every PACE_POLL. */
static double nap_for(const Client *c, double d, int shared) {
  double unc;
  if (d < 0) return PACE_POLL;
  if (!shared) return d;
  unc = c->clock.known ? c->clock.upper - c->clock.offset : 1;
  if (unc > 1) unc = 1;
  if (d - unc > PACE_POLL) return d - unc;
  return d < PACE_POLL ? d : PACE_POLL;
}

void lpsk_pace_leave(lua_State *L, Client *c, int ud, pace_waiter *w) {
  lpace_io *io = w->io;
  /* A queue ticket goes back at once where the store answers at once; a
     store behind the host's sockets lets the ticket's lease end it. */
  if (w->ticket && c->limited && !c->closed && !io) {
    psk_pace_op op;
    char err[320];
    op_init(c, &op);
    op.leave = 1;
    op.ticket = w->ticket;
    psk_getuvtable(L, ud);
    lua_getfield(L, -1, "limiter");
    lpace_run(L, -1, c->lim_name, &op, psk_time_mono(), NULL, err,
              sizeof err);
    lua_pop(L, 2);
  }
  memset(w, 0, sizeof *w);
  w->io = io;
}

/* ---------------------------------------------------------------- */
/* the decision                                                      */

static void refuse(psk_reply *why, int kind, const char *fmt, double a,
                   double b) {
  memset(why, 0, sizeof *why);
  why->kind = kind;
  snprintf(why->message, sizeof why->message, fmt, a, b);
}

/* A store that cannot answer now: STORE_BUSY is a short wait (counted
   against LOCK_WAIT, past which the store counts as failed for this
   wait: the operation goes to the client's own budget), STORE_IO the
   host's turn; stage says which take of the decision is out. */
static int not_yet(lua_State *L, Client *c, int ud, pace_waiter *w, int st,
                   int stage, double *nap) {
  if (st == STORE_IO) {
    w->stage = stage;
    return PACE_IO;
  }
  w->busy += LOCK_NAP;
  if (w->busy > LOCK_WAIT) {
    char err[96];
    snprintf(err, sizeof err,
             "periskope: shared_dict: its lock stayed held for %.1f s",
             LOCK_WAIT);
    store_failed(L, c, ud, err);
    w->busy = 0;
    w->skip_store = 1; /* the next take paces in the client */
  }
  (void)stage;
  *nap = LOCK_NAP;
  if (!w->since) w->since = psk_time_mono();
  return PACE_WAIT;
}

int lpsk_pace_ask(lua_State *L, Client *c, int ud, pace_waiter *w, int lone,
                  int nested, int index, double *nap, pace_slot *slot,
                  psk_reply *why) {
  double max = c->cfg.max_retry_wait, d, waited;
  psk_pace_op op;
  int shared = 0, st;
  *nap = 0;
  /* How long this wait has lasted, on the clock: a driver may ask again
     before a nap is over (a batch looks every second). */
  if (!w->since) w->since = psk_time_mono();
  waited = psk_time_mono() - w->since;
  if (w->stage != 2) {
    if (w->stage == 0 && w->awaiting && w->fail_seen != c->fail_seq) {
      /* The answer it waited for will not come: that failure is its own,
         now, rather than a timeout of its own after it. */
      memset(why, 0, sizeof *why);
      why->kind = c->fail_kind;
      snprintf(why->message, sizeof why->message,
               "periskope: not sent: the request it waited for got no "
               "answer (%.400s)",
               strncmp(c->fail_msg, "periskope: ", 11) == 0
                   ? c->fail_msg + 11
                   : c->fail_msg);
      lpsk_pace_leave(L, c, ud, w);
      return PACE_SHARE;
    }
    st = take(L, c, ud, w, 0, &shared, &op);
    if (st != STORE_DONE) return not_yet(L, c, ud, w, st, 1, nap);
    w->stage = 0;
    d = op.delay;
    if (!op.refused && d < 0) {
      if (nested || (lone && !shared) || waited + PACE_POLL > max) {
        st = take(L, c, ud, w, 1, &shared, &op);
        if (st != STORE_DONE) return not_yet(L, c, ud, w, st, 2, nap);
        d = op.delay;
      } else if (!w->awaiting) {
        w->awaiting = 1;
        w->fail_seen = c->fail_seq;
      }
    }
  } else {
    /* Its forced take came back from the host's sockets. */
    st = take(L, c, ud, w, 1, &shared, &op);
    if (st != STORE_DONE) return not_yet(L, c, ud, w, st, 2, nap);
    d = op.delay;
  }
  w->stage = 0;
  w->busy = 0;
  if (op.refused) {
    refuse(why, PSK_KIND_UNAVAILABLE,
           "periskope: not sent: the circuit is open after %.0f requests in "
           "a row got no answer; the next may go in %.1f s",
           (double)op.fails, op.delay);
    lpsk_pace_leave(L, c, ud, w);
    return PACE_REFUSED;
  }
  if (d == 0) {
    lpace_io *io = w->io;
    slot->shared = shared;
    slot->probe = op.is_probe;
    memset(w, 0, sizeof *w); /* the ticket left the queue with the slot */
    w->io = io;
    return PACE_GO;
  }
  if (d > 0 && waited + d > max) {
    refuse(why, PSK_KIND_RATE_LIMITED,
           "periskope: not sent: the rate limit is spent until its window "
           "resets in %.1f s, later than max_retry_wait (%g s) allows",
           d, max);
    lpsk_pace_leave(L, c, ud, w);
    return PACE_REFUSED;
  }
  if (d > 0 && waited + d > w->until + 0.05) {
    w->until = waited + d;
    lpsk_ev_wait(L, c, ud, d, PSK_WAIT_RATE_LIMIT, index);
  }
  *nap = nap_for(c, d, shared);
  return PACE_WAIT;
}

/* ---------------------------------------------------------------- */
/* the end of a request                                              */

int lpsk_pace_settle(lua_State *L, Client *c, int ud, pace_waiter *w,
                     int slot, int shared, int probe, const known *k,
                     long long date, const psk_reply *rep) {
  psk_pace_op op;
  op_init(c, &op);
  op.seed = NULL;
  op.settle = 1;
  op.noslot = !slot;
  op.answered = k != NULL;
  op.was_probe = probe;
  op.limit = op.remaining = op.reset = op.date = -1;
  if (k) {
    /* Checked against the answer's Date, or the server's time now. */
    long long when = date >= 0 ? date : (long long)op.now;
    op.limit = lpsk_known_int(k, K_LIMIT);
    op.remaining = lpsk_known_int(k, K_REMAINING);
    op.reset = lpsk_known_int(k, K_RESET);
    op.date = when;
    psk_pace_plausible(when, &op.limit, &op.remaining, &op.reset);
  } else if (rep && rep->kind != PSK_KIND_TOO_LARGE && slot) {
    /* A request that got no answer counts against the circuit; a call
       that took its failure from one it waited for does not (one cut
       answer with many waiters is one failure, not an outage). */
    op.unanswered = psk_kind_unanswered(rep->kind);
  }
  if (w->stage == 3) {
    /* Its settle came back from the host's sockets (or a lock held
       before): the same operation again, or its answer. */
    op = w->settling;
    op.now = psk_clock_server(&c->clock, psk_time_wall());
  } else {
    if (slot && rep && !k && rep->kind != PSK_KIND_TOO_LARGE) {
      /* A request got no answer: its waiters (lpsk_pace_ask) learn it. */
      c->fail_seq++;
      c->fail_kind = rep->kind;
      snprintf(c->fail_msg, sizeof c->fail_msg, "%s", rep->message);
    }
    /* The client's own state always learns, so a fallback starts
       informed. */
    if (shared) psk_pace_learn(&c->own, &op);
  }
  if (!shared) {
    op.local = 1;
    psk_pace_apply(&c->own, &op);
  } else {
    psk_pace_op asked = op;
    int st = pace_store(L, c, ud, &op, w->io);
    if (st == STORE_BUSY || st == STORE_IO) {
      if (st == STORE_BUSY && (w->busy += LOCK_NAP) > LOCK_WAIT) {
        /* The lock stayed held: owed, as to a store that failed. */
        w->busy = 0;
        w->stage = 0;
        if (slot) c->unsettled++;
        op.open = c->own.circuit.open_until > 0;
        op.fails = c->own.circuit.fails;
        circuit_news(L, c, ud, &op);
        return 0;
      }
      w->settling = asked;
      w->stage = 3;
      return st == STORE_IO ? PACE_IO : PACE_WAIT;
    }
    if (st == STORE_LOCAL) {
      /* A shared settle that fails is owed: the next operation that
         reaches the store brings it. */
      if (slot) c->unsettled++;
      op.open = c->own.circuit.open_until > 0;
      op.fails = c->own.circuit.fails;
    }
  }
  w->stage = 0;
  w->busy = 0;
  circuit_news(L, c, ud, &op);
  return 0;
}
