/*
 * lpsk.h: what the files of the Lua binding share; nothing else includes
 * it. The binding is the only code that talks to Lua, laid out by job:
 *
 *   lperiskope.c   registration: the module table, every function and
 *                  metatable (and nothing else: nothing calls into it)
 *   lpsk_client.c  the Client's lifetime: new, configure and the default
 *                  client, the check every method starts with, close,
 *                  __gc, __close, the one release, and the busy rule that
 *                  defers it while a call runs (every driver calls down
 *                  into it; it calls none of them)
 *   lpsk_check.c   every check of what a caller hands the module, before
 *                  anything is sent: the getters of option tables (new,
 *                  configure, pin's fields, pin_many's and pin_job's
 *                  options, perform's request, the limiters) and the one
 *                  wording of what raises
 *   lpsk_result.c  requests and answers as Lua tables: build_pin's
 *                  request, the result table, read_response
 *   lpsk_head.c    response headers as a Lua table, and the cache of a
 *                  client's last head that makes it cheap (its structs
 *                  private; who may clear its busy flag: lpsk.h)
 *   lpsk_pace.c    every pacing decision (pin, pin_many, jobs; the
 *                  client's own budget or a shared store), the circuit
 *                  breaker and its events
 *   lpsk_job.c     the pin job: one pin as a state machine (pacing,
 *                  events, retries), whoever does its I/O
 *   lpsk_pin.c     the drivers: pin (blocking), pin_many (a batch)
 *   lpsk_async.c   the job driven from Lua (client:pin_job, job:step,
 *                  cancel, close) and periskope.perform, for hosts that
 *                  must not block
 *   lpsk_wire.c    a job's exchanges over the host's sockets (HTTP/1.1,
 *                  a Redis store's operations), one socket call a step
 *   lpace.c        periskope.limiter: the shared pacing stores (lpace.h)
 *
 * Functions shared between these files are named lpsk_* (lpace_* for the
 * limiters'); the rest are static. Only luaopen_periskope leaves the
 * shared object.
 */
#ifndef LPSK_H
#define LPSK_H

#include <stdint.h>

#include "compat.h"
#include "lpace.h"
#include "psk_core.h"
#include "psk_http.h"

/* The module state table (upvalue 1 of every module function, method and
   protected body) keeps these metatables at these integer keys too, for
   the checks and tables made on every pin. */
enum { STATE_CLIENT_MT = 1, STATE_HEADERS_MT = 2, STATE_KEYS = 3 };

/* The result table's field names (and the trace id header's), kept as Lua
   strings in the module state from STATE_KEYS on (lpsk_result.c): using
   them skips lua_setfield's lookup of the C string on every pin. */
enum {
  RK_OK, RK_STATUS, RK_HEADERS, RK_BODY, RK_RATE_LIMIT, RK_TRACE_ID,
  RK_ERROR, RK_ATTEMPTS, RK_LIMIT, RK_REMAINING, RK_RESET,
  RK_TRACE_HEADER, /* "x-periskope-trace-id", a key of the headers table */
  RK_N
};
void lpsk_result_keys(lua_State *L, int state);

/* What the Authorization header's value starts with (cfg.auth): the key
   follows it. */
#define LPSK_BEARER "Bearer "
#define LPSK_BEARER_LEN (sizeof LPSK_BEARER - 1)

#define CLIENT_MT "periskope.Client"
#define HEADERS_MT "periskope.headers"
#define JOB_MT "periskope.PinJob"
#define BATCH_MT "periskope.Batch"
#define PIN_MT "periskope.Pin" /* a pin nested in a hook: its job */

/* ---------------------------------------------------------------- */
/* the client (lpsk_client.c)                                        */

/* The cache of the head a client's last answer was made from
   (lpsk_head.c). */
typedef struct head_cache head_cache;

/* A client userdata. Its uservalue table holds on_event and limiter.
   Hooks may close it while a call runs: busy counts the calls that may
   call into Lua (pin, pin_many, job:step, nested ones included); close
   then only marks it closed, and the last call out releases it
   (lpsk_run_busy). */
typedef struct Client {
  psk_config cfg;      /* owned strings */
  psk_http *http;      /* NULL until opened and after release */
  psk_request req;     /* build_pin's */
  psk_request spare;   /* buffers a pin job borrows (lpsk_job.c) */
  struct pin_call *pin; /* the blocking pin's job and transfer, kept
                           between pins, with room for its message id
                           (lpsk_pin.c) */
  uint64_t rng;        /* backoff jitter */
  psk_shared own;      /* pacing and circuit in the client (and the
                          fallback of a shared store); its queue unused */
  psk_clock clock;     /* the server's clock, from Date */
  int failures;        /* circuit option: opens after this many requests
                          in a row got no answer; 0: no circuit */
  double cooldown;     /* ... for this many seconds */
  int circuit_open;    /* the circuit as the last event announced it */
  unsigned long fail_seq; /* requests that got no answer, ever: a waiter
                             that sees it move knows the answer it waited
                             for will not come (lpsk_pace.c) */
  int fail_kind;       /* the last of them: its kind and message */
  char fail_msg[512];
  int limited;         /* a shared limiter is set (in the uservalue table) */
  long long unsettled; /* shared slots whose end the store has not heard */
  char lim_name[LPACE_NAME_MAX]; /* the budget's name in its store */
  int closed;          /* new calls raise: until fully built, after close */
  int busy;            /* calls running on it that may call into Lua */
  int hook;            /* on_event is set (it lives in the uservalue table) */
  int debug;           /* PERISKOPE_DEBUG=1 and no on_event */
  head_cache *head;    /* the last answer's head, as its table was built:
                          made at the first answer (NULL: none) */
  char date_text[32];  /* the last Date parsed (Date changes once a second) */
  size_t date_len;     /* 0: none */
  long long date;      /* ... as epoch seconds */
} Client;

/* The client at argument 1, open; raises "attempt to use a closed
   client" otherwise. From a method (upvalue 1: the module state).
   [-0, +0, v] */
Client *lpsk_checkclient(lua_State *L);
/* Releases everything c holds, in reverse order; safe on a half-built,
   closed or released client; never raises. */
void lpsk_client_release(Client *c);
/* Pushes the default client, built from configure's options (or the
   environment) on first use and after configure. [-0, +1, v] */
Client *lpsk_default_client(lua_State *L);
int lpsk_mod_new(lua_State *L);          /* periskope.new */
int lpsk_mod_configure(lua_State *L);    /* periskope.configure */
int lpsk_client_close(lua_State *L);     /* Client:close */
int lpsk_client_tbc(lua_State *L);       /* Client __close */
int lpsk_client_gc(lua_State *L);        /* Client __gc */
int lpsk_client_tostring(lua_State *L);  /* Client __tostring */

/* Releases what the pin, batch or job at stack index obj holds. Never
   raises. */
typedef void (*lpsk_release_fn)(lua_State *L, int obj);
/* The busy rule, for every call that may run Lua (an on_event hook, a
   store): calls the body kept under name in the module state as
   body(client, obj) under lua_pcall with c busy; then, whatever happened,
   releases obj, and c too when it was closed meanwhile and no other call
   runs on it. Re-raises the error value unchanged, or returns body's
   results. [-0, +n, e] */
int lpsk_run_busy(lua_State *L, Client *c, int ud, int obj, const char *name,
                  lpsk_release_fn release);

/* ---------------------------------------------------------------- */
/* checks, and the one wording of their errors (lpsk_check.c)       */

/* What raises about a table (or an argument) says where it came from:
   every check of what a caller hands the module -- new's and configure's
   options, the circuit option, pin's arguments, pin_many's and pin_job's
   options, perform's request, the limiters -- words its errors through
   one of these. */
typedef struct lpsk_tab {
  int arg;          /* "bad argument #arg to 'fn' (...)"; 0: "periskope:
                       ..." (the default client, made inside another call) */
  const char *fn;   /* the function to name; NULL: the one Lua finds
                       (luaL_argerror), which another Lua state or a
                       method call may not know */
  const char *pfx;  /* starts the message: "" or "item 3: " */
  const char *what; /* "option" or "field" */
  const char *in;   /* the option a nested table is ("circuit"), or NULL */
} lpsk_tab;

/* "got <number>" (as short as shows it) or "got <type>": never a string
   value. [-0, +1, m] */
const char *lpsk_got(lua_State *L, int i);
/* A function that raises never returns (it longjmps). Said to the static
   analyzer (make check-static, as mk/analyzer_lua.h says it of Lua's),
   which cannot see it across files; not to the compiler, for which
   luaL_error returns. */
#ifdef __clang_analyzer__
#define LPSK_RAISES __attribute__((noreturn))
#else
#define LPSK_RAISES
#endif
/* Raises msg as "bad argument #arg to 'fn' (msg)" (fn NULL: the name Lua
   finds), or "periskope: msg" when arg is 0. [-0, +0, v] */
int lpsk_arg_error(lua_State *L, int arg, const char *fn,
                   const char *msg) LPSK_RAISES;
/* Raises "<pfx><what> '<name>' <rule>, got <value at vi>" (vi 0: no
   "got"; name NULL: the argument itself, "<pfx><rule>, got ..."). The
   one wording of a bad value. [-0, +0, v] */
int lpsk_bad(lua_State *L, const lpsk_tab *tb, const char *name,
             const char *rule, int vi) LPSK_RAISES;
/* Walks table t once, raising on a key that is not a string or not one
   of names ("unknown option 'x' (a, b, c)"). With at (as many as names):
   leaves the value of each listed key on the stack, at[i] its index (0:
   absent), for the readers below. [-0, +(0|k), v] */
void lpsk_check_keys(lua_State *L, const lpsk_tab *tb, int t,
                     const char *const names[], int *at);
/* The typed readers: the value at vi (0: absent, def) checked against
   rule, raising through lpsk_bad with the field's name. A number in
   (lo, hi], or [lo, hi] when lo_ok. [-0, +0, v] */
double lpsk_opt_number(lua_State *L, const lpsk_tab *tb, int vi,
                       const char *name, double def, double lo, int lo_ok,
                       double hi, const char *rule);
/* An integral number (psk_tointegral: 7.0 counts, 7.5 does not) in
   [lo, hi]. [-0, +0, v] */
long long lpsk_opt_integer(lua_State *L, const lpsk_tab *tb, int vi,
                           const char *name, long long def, long long lo,
                           long long hi, const char *rule);
/* A boolean. [-0, +0, v] */
int lpsk_opt_boolean(lua_State *L, const lpsk_tab *tb, int vi,
                     const char *name, int def);
/* Flags of the string readers: a value of the wrong type is said by its
   type only, even a number (it may be a key or a password). */
#define LPSK_SECRET 1
/* A string (NULL when absent), alive while the value at vi is.
   [-0, +0, v] */
const char *lpsk_opt_string(lua_State *L, const lpsk_tab *tb, int vi,
                            const char *name, size_t *len, int flags);
/* A string of 1 to max bytes without control bytes, or def. [-0, +0, v] */
const char *lpsk_opt_text(lua_State *L, const lpsk_tab *tb, int vi,
                          const char *name, const char *def, size_t max,
                          int flags, const char *rule);
/* One of names (its index), or def. [-0, +0, v] */
int lpsk_opt_choice(lua_State *L, const lpsk_tab *tb, int vi,
                    const char *name, const char *const names[], int def,
                    const char *rule);
/* Pushes t[name] (raw), or nil when t is 0. [-0, +1, -] */
int lpsk_get_field(lua_State *L, int t, const char *name);

/* The checked fields of one pin. id points into a Lua string that the
   caller keeps referenced while it uses them. */
typedef struct pin_args {
  const char *id;
  size_t idlen;
  int pin, time;
  int has_phone;
  char phone[PSK_PHONE_MAX + 1];
} pin_args;

/* Reads the options of table t (0: none) into c. [-0, +0, v] */
void lpsk_read_options(lua_State *L, Client *c, int t, int arg,
                       int need_key);
/* Checks the pin argument table at t into a; leaves message_id on the
   stack. [-0, +1, v] */
void lpsk_check_pin_args(lua_State *L, int t, int arg, const char *pfx,
                         pin_args *a);
/* pin_many's options table at arg (none or nil: defaults): the
   concurrency. [-0, +0, v] */
int lpsk_check_many_options(lua_State *L, int arg);
/* pin_job's options table at arg (none or nil: defaults): the io mode,
   a JOB_IO_*. [-0, +0, v] */
int lpsk_check_job_options(lua_State *L, int arg);

/* ---------------------------------------------------------------- */
/* headers (lpsk_head.c)                                             */

/* The headers a result and a retry decision read, as pointers into a
   response head or into strings of a headers table. */
enum { K_LIMIT, K_REMAINING, K_RESET, K_TRACE, K_RETRY_AFTER, K_DATE, K_N };
typedef struct known {
  const char *v[K_N]; /* NULL when absent */
  size_t n[K_N];
  long long num[K_RESET + 1]; /* X-RateLimit-*, parsed once: -1 when
                                 absent or not a whole number */
} known;

/* Pushes the headers table of a response head and fills k. *cache is the
   client's cache (made here at the first answer; NULL when out of
   memory, and the table is made without it), whose strings are in the
   table at index uv. The cache is busy while the table is built: the
   allocations may run a finalizer, which may pin on the same client, and
   that pin goes without it. A raise (out of memory) part-way leaves it
   busy. [-0, +1, m] */
void lpsk_push_head(lua_State *L, const psk_buf *head, known *k,
                    head_cache **cache, int uv);
/* Clears hc's busy flag (NULL is fine). Only the client's last call out
   may (lpsk_run_busy), when no call runs on the client, so no table can
   be under construction: a flag a raise left set is cleared there, and
   until then the client's pins go without the cache. */
void lpsk_head_idle(head_cache *hc);
/* Frees hc (NULL is fine): only the client's release, no call running. */
void lpsk_head_free(head_cache *hc);
/* Pushes the headers table of read_response's headers argument at arg
   (a table of name = value or { values }, or none). [-0, +1, v] */
int lpsk_push_given_headers(lua_State *L, int arg);
/* Fills k from the headers table at h (its strings live as long as the
   table). [-0, +0, -] */
void lpsk_known_from_table(lua_State *L, int h, known *k);
/* X-RateLimit-Limit, -Remaining or -Reset (K_LIMIT ... K_RESET) as a
   whole number, or -1. */
long long lpsk_known_int(const known *k, int i);
int lpsk_headers_index(lua_State *L); /* headers[k], any case of k */

/* ---------------------------------------------------------------- */
/* requests and results (lpsk_result.c)                              */

/* The result builder every path ends in. [-0, +1, m] */
void lpsk_push_result(lua_State *L, long status, int h, const known *k,
                      const char *body, size_t blen, int attempts);
/* { name = value } for a request's headers, the key as "Bearer ***" when
   redact. [-0, +1, m] */
void lpsk_push_request_headers(lua_State *L, const psk_request *r,
                               int redact);
/* Builds r for client c from checked arguments; raises when out of
   memory. [-0, +0, m] */
void lpsk_build_request(lua_State *L, Client *c, psk_request *r,
                        const pin_args *a);
int lpsk_read_response(lua_State *L); /* periskope.read_response */
int lpsk_build_pin(lua_State *L);     /* Client:build_pin */

/* ---------------------------------------------------------------- */
/* the pin job (lpsk_job.c)                                          */

/* How a PinJob's exchanges run (client:pin_job's io option). */
enum {
  JOB_IO_SEND,  /* "send": the request as plain values, for another thread
                   (periskope.perform) */
  JOB_IO_WATCH, /* "watch": libcurl here, its sockets behind one
                   descriptor the caller's event loop watches */
  JOB_IO_BYTES  /* "bytes": the host's sockets (nginx's cosockets) move
                   the bytes; the job frames and reads them (lpsk_wire.c) */
};

/* A job's exchange over the host's sockets (lpsk_wire.c). */
typedef struct lpsk_wire lpsk_wire;

/* What lpsk_job_step asks of its driver. */
enum {
  JOB_SEND, /* the job's request (req) is ready: send it, then step again
               with the reply */
  JOB_WAIT, /* wait the seconds given, then step again with NULL */
  JOB_DONE, /* the outcome is pushed: nout values (a result table; or nil,
               message, kind) */
  JOB_IO    /* a store operation waits for the host's sockets (the job's
               w.io, carried by lpsk_wire): step again once it ended */
};

/* Seconds a job waits before asking again for a shared dictionary whose
   lock is held (lpsk_pace.c). */
#define LPSK_LOCK_NAP 0.001


/* A waiter for a pacing slot: a job's next attempt, or a batch's next
   item (lpsk_pace.c). Zeroed when a wait begins. */
typedef struct pace_waiter {
  double since;       /* psk_time_mono() when this wait began; 0: none yet */
  double until;       /* the wait's seconds so far plus the wait last
                         announced (one event per wait) */
  long long ticket;   /* its place in the shared store's queue (0: none) */
  unsigned long fail_seen; /* the client's fail_seq when it began to wait
                              for an answer in flight */
  int awaiting;       /* it waits for an answer in flight */
  lpace_io *io;       /* a job whose host must not block: its store's
                         operations go through the host's sockets (and a
                         held dictionary lock is a short wait); NULL:
                         they block */
  int stage;          /* an operation is out: 1 its take, 2 its forced
                         take, 3 a settle (settling) */
  int skip_store;     /* the next take paces in the client (a lock stayed
                         held) */
  double busy;        /* seconds asked again after a held lock */
  psk_pace_op settling; /* stage 3: the settle that is out */
} pace_waiter;

/* One pin, from its checked arguments to its outcome: pacing, events,
   attempts and retries: what every driver shares. Whoever does the I/O
   (psk_http_perform for the blocking pin, a batch's multi handle for
   pin_many, job:step) steps it, and keeps what is its own -- a transfer,
   a batch item's schedule, a step's io mode -- in a struct of its own
   around it (lpsk_pin.c, lpsk_async.c). Owns its arguments (id copied)
   and its request; lpsk_job_release frees them. It borrows its client,
   which the driver keeps alive (and anchored) for as long as it steps
   the job. */
typedef struct pin_job {
  Client *c;
  int state;         /* private to lpsk_job.c */
  pin_args a;        /* a.id is the job's own copy */
  char *id;          /* that copy, malloc'd (NULL when it lives in the
                        block of the driver's struct: lpsk_job_new) */
  psk_request req;   /* the request, built on the first send */
  int built;         /* req is built */
  int attempt;       /* requests made so far */
  int tries;         /* outcomes so far: requests, and failures taken from
                        a request it waited for (the retries' budget) */
  int index;         /* pin_many item (1-based), 0 for pin */
  int paced;         /* its driver takes its slots (a batch): a step takes
                        none itself */
  int nested;        /* started while another call ran on the client */
  int slot;          /* holds a pacing slot whose end is not settled */
  int shared;        /* ... and it came from the shared store */
  int probe;         /* ... and it is the circuit's probe */
  pace_waiter w;     /* its wait for a slot (a batch's wait for its own);
                        w.io is set by a driver whose host must not block,
                        which owns it */
  int kept;          /* a registry reference to the outcome a retry waits
                        to better (0: none) */
  int kept_n;        /* ... and how many values it holds */
  int nout;          /* JOB_DONE: values pushed */
  psk_reply settled; /* J_SETTLE (private to lpsk_job.c): the outcome's
                        status, kind, message and elapsed (no head or
                        body: the kept result has them) */
  int settle_sent;   /* ... it was a request that had a slot */
  int settle_io;     /* ... the settle waits for the host's sockets */
} pin_job;

/* Makes j a fresh job of client c for arguments a (index: pin_many item,
   or 0), copying the message id into idbuf (a->idlen + 1 bytes), or into
   malloc'd memory when idbuf is NULL. -1 when out of memory (j then holds
   nothing). Never raises. */
int lpsk_job_init(pin_job *j, Client *c, const pin_args *a, int index,
                  char *idbuf);
/* Frees what j owns and ends a pacing slot it still holds (a raise came
   between the slot and its answer) as unanswered; drops the outcome it
   kept; idempotent, never raises. What its driver holds around it (a
   transfer, w.io), the driver releases. */
void lpsk_job_release(lua_State *L, pin_job *j);
/* Advances j. rep: the reply to its last JOB_SEND, else NULL. The client
   userdata is at stack index ud (its hook and limiter live there).
   Emits the events and runs the pacing of this step. [-0, +(0|nout), e] */
int lpsk_job_step(lua_State *L, pin_job *j, int ud, const psk_reply *rep,
                  double *wait);
/* Pushes a userdata of size bytes, with metatable mt: a driver's struct
   whose first member is the job, for the pin arguments at arg, checked
   (raises before anything is acquired when they are bad). The job is
   made (its id copied after the struct), the rest zeroed. [-0, +1, v] */
pin_job *lpsk_job_new(lua_State *L, Client *c, int arg, size_t size,
                      const char *mt);
/* Whether j's next step takes the reply to the request it sent. */
int lpsk_job_awaits_reply(const pin_job *j);

/* A job that was not sent: its waiter was refused (the rate limit spent
   past max_retry_wait, the circuit open; why says so) or the request it
   waited for got no answer (why holds that failure, which becomes its
   own). Emits the failure event; returns JOB_DONE (the outcome pushed:
   a refusal ends the call with the outcome a retry waited to better, if
   any) or JOB_WAIT (a retry, after *wait seconds). [-0, +(0|nout), e] */
int lpsk_job_unsent(lua_State *L, pin_job *j, int ud, int how,
                    const psk_reply *why, double *wait);

/* A wait event (index: pin_many item, or 0), when the client has a hook
   or debug output. [-0, +0, e] */
void lpsk_ev_wait(lua_State *L, Client *c, int ud, double seconds,
                  int reason, int index);
/* Hands the event table on top to on_event (or the debug line) and pops
   it. [-1, +0, e] */
void lpsk_emit(lua_State *L, Client *c, int ud);
/* Starts an event table of type `type` (index: pin_many item, or 0).
   [-0, +1, m] */
void lpsk_ev_begin(lua_State *L, const char *type, int index);
/* Whether the client has a hook or debug output. */
int lpsk_wants_events(const Client *c);
/* periskope.debug_line(event): the one formatter of PERISKOPE_DEBUG's
   lines, which the command's own hook writes too. */
int lpsk_mod_debug_line(lua_State *L);

/* ---------------------------------------------------------------- */
/* pacing (lpsk_pace.c)                                              */

/* What lpsk_pace_ask decides for a waiter. */
enum {
  PACE_GO,      /* a slot is taken: send now */
  PACE_WAIT,    /* nap the seconds given, then ask again */
  PACE_REFUSED, /* send nothing: the rate limit is spent past
                   max_retry_wait, or the circuit is open */
  PACE_SHARE,   /* the answer it waited for will not come: that request's
                   failure is its own */
  PACE_IO       /* a store operation waits for the host's sockets (the
                   waiter's io): step again once it has ended */
};

/* Where a slot came from. */
typedef struct pace_slot {
  int shared; /* the shared store gave it */
  int probe;  /* it is the circuit's probe */
} pace_slot;

/* The one pacing decision, for every waiter: a job (pin, job:step) or a
   batch (pin_many). lone: nothing of the waiter's own call is in flight,
   so nothing of its own will teach the budget (a batch with no transfer
   running); nested: it started in a hook of another call on the same
   client, whose answer cannot come before the hook returns. The rules,
   in order:
     - the circuit is open: PACE_REFUSED (kind "unavailable");
     - a slot is free: PACE_GO;
     - only an answer in flight can tell: PACE_SHARE if a request of this
       client got no answer since the waiter began waiting for one; else
       go anyway when nested, when lone on the client's own budget, or
       when waiting longer would pass max_retry_wait; else PACE_WAIT a
       short poll;
     - the budget is spent until its reset: PACE_REFUSED (kind
       "rate_limited", nothing sent) when this wait would pass
       max_retry_wait; else PACE_WAIT (one wait event per wait).
   PACE_REFUSED and PACE_SHARE fill why (status 0, kind, message).
   [-0, +0, e] */
int lpsk_pace_ask(lua_State *L, Client *c, int ud, pace_waiter *w, int lone,
                  int nested, int index, double *nap, pace_slot *slot,
                  psk_reply *why);
/* A call's outcome: with an answer (k: its headers, date its Date or
   -1) or without (k NULL, rep its failure). slot: it was a request that
   had a slot (shared: from the store; probe: the circuit's probe), which
   ends; else a failure taken from a request it waited for, which only
   the circuit counts. Teaches the budget and the circuit (its events),
   and records a request's failure for the waiters of lpsk_pace_ask.
   Returns 0 when done; with w->io, PACE_IO (the store's operation waits
   for the host's sockets) or PACE_WAIT (a held lock: LOCK_NAP), after
   which the same call, made again, carries on. [-0, +0, e] */
int lpsk_pace_settle(lua_State *L, Client *c, int ud, pace_waiter *w,
                     int slot, int shared, int probe, const known *k,
                     long long date, const psk_reply *rep);
/* A waiter that stops waiting gives its place in the store's queue back
   (a store that fails lets the ticket's lease end it), and is zeroed.
   [-0, +0, e] */
void lpsk_pace_leave(lua_State *L, Client *c, int ud, pace_waiter *w);

/* ---------------------------------------------------------------- */
/* the drivers (lpsk_pin.c)                                          */

/* Sleeps s seconds, letting the host act on a signal that wakes it (see
   lpsk_pin.c). [-0, +0, e] */
void lpsk_sleep(lua_State *L, double s);
int lpsk_client_pin(lua_State *L);      /* Client:pin */
int lpsk_client_pin_many(lua_State *L); /* Client:pin_many */
int lpsk_mod_pin(lua_State *L);         /* periskope.pin */
int lpsk_batch_gc(lua_State *L);        /* Batch __gc and __close */
int lpsk_pin_gc(lua_State *L); /* __gc and __close of a nested pin's job */
/* Keeps the protected bodies of pin and pin_many in the module state
   table at index state (made once, not per call). [-0, +0, m] */
void lpsk_pin_open(lua_State *L, int state);

/* ---------------------------------------------------------------- */
/* the exchange over the host's sockets (lpsk_wire.c)                */

lpsk_wire *lpsk_wire_new(void);   /* NULL when out of memory */
void lpsk_wire_free(lpsk_wire *w); /* NULL is fine */
/* Whether an exchange is under way (the job's next step takes what the
   host's socket call gave). */
int lpsk_wire_busy(const lpsk_wire *w);
/* Starts the exchange of j's request: pushes its first action
   ("connect", target). [-0, +2, v] */
int lpsk_wire_begin(lua_State *L, pin_job *j, lpsk_wire *w);
/* Takes what the host's socket call gave (the step's arguments at 2..)
   and pushes the next action, returning how many values; 0 when the
   exchange is over (lpsk_wire_outcome has it). [-0, +n, v] */
int lpsk_wire_step(lua_State *L, pin_job *j, lpsk_wire *w);
/* The exchange's outcome, once lpsk_wire_step said 0: an answer or a
   failure, valid until the next lpsk_wire_begin (NULL after a store
   operation: its outcome is io's). */
const psk_reply *lpsk_wire_outcome(lpsk_wire *w);
/* Starts carrying store operation io (its first action: "connect" to
   the store). [-0, +2, m] */
int lpsk_wire_store(lua_State *L, lpsk_wire *w, lpace_io *io);

/* ---------------------------------------------------------------- */
/* the pin job driven from Lua (lpsk_async.c)                        */

int lpsk_client_pin_job(lua_State *L); /* Client:pin_job */
int lpsk_job_gc(lua_State *L);         /* PinJob __gc and __close */
int lpsk_mod_perform(lua_State *L);    /* periskope.perform */
/* The job's methods (step) and the bodies and metatables of these, kept
   in the module state table at index state. [-0, +0, m] */
void lpsk_async_open(lua_State *L, int state);

#endif
