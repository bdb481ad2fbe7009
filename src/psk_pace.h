/*
 * psk_pace: rate-limit pacing, with neither Lua nor libcurl nor a store.
 *
 * A psk_budget is what the X-RateLimit-* headers say about the current
 * window, on the server's clock: when it ends, how many requests it allows
 * and how many were counted against it. The same few operations serve
 * every store: a client keeps its budget in memory; the shared stores
 * (an nginx shared dictionary, Redis) keep it as a text, with the queue
 * of the processes waiting for it (psk_shared), read it, run the same
 * operation and write it back in one atomic step.
 *
 * A psk_clock turns local time into the server's, from the Date headers.
 */
#ifndef PSK_PACE_H
#define PSK_PACE_H

#include <stddef.h>

#include "psk_core.h" /* PSK_RESET_HORIZON */

typedef struct psk_budget {
  int learned;        /* an answer has come: the rest means something */
  int unlimited;      /* the server sends no rate-limit headers */
  long long reset;    /* server epoch second the window ends; 0: unknown */
  long long prev;     /* the end of the window before (0: none seen) */
  long long limit;    /* X-RateLimit-Limit, or -1 */
  long long cap;      /* requests this window allows */
  long long taken;    /* requests counted against this window */
  long long inflight; /* requests started and not yet settled */
  double lease;       /* server time after which in-flight ones are void */
  long long reset_date; /* the Date of the answer that set reset (epoch
                           seconds on the server's clock); 0: unknown */
} psk_budget;

void psk_budget_init(psk_budget *b);

/* One more request wants to start at server time `now`. Returns 0 when it
   may (and counts it), > 0 the seconds until the window resets, < 0 when
   only an answer still in flight can tell (ask again shortly). The very
   first request goes alone, to learn the budget. `lease`: seconds after
   which a request that was never settled (its process died) stops
   counting as in flight. force: it starts anyway (its wait was longer
   than the caller may wait) and is counted; returns 0.
   probe: half the caller's clock uncertainty (psk_clock_probe), or 0. When
   > 0 and this would be the window's last slot, the slot is held until
   `probe` before the window's last whole second, if that comes within
   PSK_PROBE_HOLD s: its answer's Date then halves the uncertainty, and
   the window is no less used. A reset more than PSK_RESET_HORIZON after
   `now` (a store written by a process that believed it) is forgotten
   first: the budget then waits for no reset it cannot believe. */
#define PSK_PROBE_HOLD 1.5
double psk_budget_take(psk_budget *b, double now, double lease, int force,
                       double probe);

/* A request that took a slot has ended. answered: a response came, with
   its X-RateLimit-Limit, -Remaining and -Reset (each -1 when absent or not
   an integer) and its Date (epoch seconds, or -1). Answers may come out
   of order and from other processes: a reset earlier than the one held
   is an earlier window's, unless the answer's Date is no earlier than the
   Date that brought the held one and the reset is still ahead of it --
   then the held reset was wrong (a far one a server sent once), and the
   nearer one replaces it. */
void psk_budget_settle(psk_budget *b, int answered, long long limit,
                       long long remaining, long long reset, long long date);
/* An answer's rate-limit values, for a budget that did not count the
   request (a process's own budget while a shared store paces it). */
void psk_budget_learn(psk_budget *b, long long limit, long long remaining,
                      long long reset, long long date);

/* The processes waiting for a slot of a shared budget, in the order they
   began to wait. A waiter holds a ticket: a number the store gives in
   increasing order, kept in the queue with a lease (a process that dies
   waiting stops holding its place when the lease ends). Only as many
   waiters as there are free slots may take one, oldest first; one who
   has none yet waits behind all. At most PSK_QUEUE_MAX tickets: past
   that a waiter waits without one, behind the queue, until there is
   room (a race among those, as before the queue). */
#define PSK_QUEUE_MAX 128
#define PSK_TICKET_GRACE 3.0  /* s a ticket outlasts the wait its holder
                                 was told of (its next ask renews it) */
#define PSK_TICKET_MARGIN 1.0 /* s: a lease is written again only when it
                                 would end less than this after the
                                 holder's next ask, so that a waiter
                                 writes about every other window, not at
                                 each ask */
typedef struct psk_queue {
  long long last;                 /* the last ticket given; 0: none yet */
  int n;                          /* tickets waiting, lowest (oldest) first */
  long long id[PSK_QUEUE_MAX];
  long long until[PSK_QUEUE_MAX]; /* server time, in tenths of a second,
                                     after which the ticket is void */
} psk_queue;

/* The circuit breaker: requests that got no answer, one after another.
   After `failures` of them (the caller's setting) it opens: nothing is
   sent for `cooldown` seconds; then one request goes as a probe, and any
   answer closes it again, while no answer opens it for another cooldown.
   Times are on the server's clock, like the budget's. */
typedef struct psk_circuit {
  long long fails;    /* consecutive requests without an answer */
  double open_until;  /* when the cooldown ends; 0: closed */
  double probe_until; /* a probe is out until then (its lease); 0: none */
} psk_circuit;

/* What a store keeps: the budget, the queue of its waiters and the
   circuit. A client keeps one of its own too (no queue: see local). */
typedef struct psk_shared {
  psk_budget budget;
  psk_queue queue;
  psk_circuit circuit;
} psk_shared;

/* A fresh budget, no one waiting. */
void psk_shared_init(psk_shared *s);

/* The budget, its circuit and its queue as text for a shared store (at
   most PSK_BUDGET_TEXT bytes with the NUL: room for a full queue of the
   largest numbers decode accepts), and back. decode also reads the texts
   of earlier versions ("p1": no one waiting; "p2": no circuit); it
   returns 0 on success; on text it does not recognise it returns -1 and
   leaves a fresh budget. */
#define PSK_BUDGET_TEXT 4608
size_t psk_shared_encode(const psk_shared *s, char *out);
int psk_shared_decode(psk_shared *s, const char *text, size_t len);

/* The rate-limit values an answer gives to pacing, checked for
   plausibility against the answer's own Date (date: epoch seconds; when
   the answer had none, the caller's estimate of the server's time now).
   A reset more than PSK_RESET_STALE seconds before it names a window that
   had ended long before the answer was sent: a server, or a stand-in,
   that sends a fixed reset. A reset more than PSK_RESET_HORIZON after it
   is no window Periskope keeps (it sets the reset about 2 s after its
   Date): a reset in milliseconds, or a far value sent once. Either way
   the answer says nothing believable about the current window, so all
   three become -1 (an answer without a budget), and nothing is held back
   by it. The stale margin leaves room for a server whose Date and reset
   come from clocks that differ by up to that much. Returns 0 when the
   values were dropped, else 1. */
#define PSK_RESET_STALE 60
int psk_pace_plausible(long long date, long long *limit, long long *remaining,
                       long long *reset);

/* Server clock = local clock + offset. An answer's Date is the server's
   whole second, floored, taken between the request's sending and the
   answer's reading: offset >= Date - received and < Date + 1 - sent. The
   clock keeps the tightest bounds seen and runs on the lower one, so a
   wait for a reset is never cut short; answers at varied fractions of a
   second (see probe in psk_budget_take) narrow the gap. */
typedef struct psk_clock {
  int known;
  double offset; /* lower bound: the clock in use */
  double upper;  /* upper bound */
} psk_clock;

/* date: the answer's Date (epoch), or < 0; sent, received: local times. */
void psk_clock_learn(psk_clock *k, double date, double sent, double received);
double psk_clock_server(const psk_clock *k, double local_now);
/* Half the width of the offset's bounds when a probe would narrow it
   usefully, else 0. */
double psk_clock_probe(const psk_clock *k);

/* One operation on a shared budget, the same for every store: the text a
   shared store keeps (an nginx shared dictionary, Redis), read, changed
   and written back in one atomic step. The client's own budget runs
   psk_budget_take and _settle directly: it has one waiter at a time. */
typedef struct psk_pace_op {
  int settle;    /* 0: take a slot; 1: a request ended */
  int local;     /* the client's own state: no queue, no tickets */
  double now;    /* server time */
  double lease;  /* take: seconds a slot counts as in flight at most */
  int force;     /* take: count it even past the budget */
  double probe;  /* take: psk_clock_probe of the taker's clock */
  const psk_budget *seed; /* what the taker knows, for a store that knows
                             nothing yet (new, flushed, restarted) */
  long long unsettled;    /* earlier slots of this process that ended
                             while the store could not be told */
  int answered;  /* settle: a response came, with these (-1: absent) */
  long long limit, remaining, reset, date;
  int unanswered; /* settle: no answer, of a kind that counts against the
                     circuit (connect, timeout, network, resolve) */
  int was_probe;  /* settle: the request was the circuit's probe */
  int noslot;     /* settle: a call that had no slot (it took the failure
                     of a request it waited for): only the circuit learns */
  int failures;   /* the caller's circuit: opens after this many
                     unanswered requests in a row; 0: no circuit */
  double cooldown; /* ... and stays open this long (seconds) */
  double delay;  /* take: the answer (see psk_budget_take); when refused,
                    the seconds until the circuit may let a probe go */
  long long ticket; /* take: in, the taker's ticket from an earlier ask of
                       the same wait (0: none); out, its ticket while it
                       waits (0: it took a slot, or the queue is full) */
  int leave;     /* take: only give the ticket back (the waiter stops
                    waiting: refused, or its call ended) */
  int refused;   /* take, out: the circuit is open: send nothing */
  int is_probe;  /* take, out: the slot taken is the circuit's probe */
  int open;      /* out: the circuit is open (or probing) after the op */
  long long fails; /* out: unanswered requests in a row after the op */
} psk_pace_op;

/* Runs op on s: seeds a budget that has learned nothing from op->seed
   (its queue stays; the seed's current window counts as spent, since
   others' requests in flight are unknown), counts the unsettled slots
   out, then takes or settles. A take first passes the circuit (an open one refuses it; the
   first take after the cooldown is the probe, and the others are refused
   while it is out); then it is served in queue order (psk_queue): it may
   take a slot only if fewer tickets than free slots are ahead of it;
   otherwise it waits, with a ticket (given on its first ask, renewed on
   later ones). A forced take skips the budget, not the circuit, and
   leaves the queue. A local op (a client's own state) takes with no
   queue. A settle teaches the budget and the circuit. */
void psk_pace_apply(psk_shared *s, psk_pace_op *op);
/* A settle op's answer (or its absence) for state that did not give the
   request its slot (a client's own state, while a store paced it): the
   budget learns the answer's values and the circuit its outcome; nothing
   in flight changes. */
void psk_pace_learn(psk_shared *s, const psk_pace_op *op);
/* The same on a stored text budget cur (len bytes; "" or text it does
   not recognise: a fresh budget); the new text goes to out ("" when it
   cannot be encoded). */
void psk_pace_apply_text(const char *cur, size_t len, psk_pace_op *op,
                         char out[PSK_BUDGET_TEXT]);

/* SHA-256 of data, as 64 lower-case hex digits and a NUL. */
void psk_sha256_hex(const void *data, size_t len, char out[65]);

/* The name a budget is stored under for an API key: prefix followed by the
   hex SHA-256 of the key (the key itself is never stored). Returns the
   length written, or 0 when it does not fit in n bytes with its NUL. */
size_t psk_budget_name(const char *prefix, const char *api_key, char *out,
                       size_t n);

#endif
