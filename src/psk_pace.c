/* psk_pace: see psk_pace.h. */
#include "psk_pace.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds on every number of a stored budget, far past any real one, so
   that no count can overflow and the text of a full queue has a bound. */
#define PSK_PACE_MAX 1000000000000000LL /* 1e15 */

/* ---------------------------------------------------------------- */
/* the budget                                                        */

void psk_budget_init(psk_budget *b) {
  memset(b, 0, sizeof *b);
  b->limit = -1;
}

void psk_shared_init(psk_shared *s) {
  psk_budget_init(&s->budget);
  s->queue.last = 0;
  s->queue.n = 0;
  memset(&s->circuit, 0, sizeof s->circuit);
}

/* psk_budget_take, for a taker with `ahead` queued waiters before it: as
   many of the free slots are theirs. */
static double budget_take(psk_budget *b, double now, double lease, int force,
                          double probe, long long ahead) {
  /* Requests whose process never settled them stop counting. */
  if (b->inflight > 0 && now > b->lease) b->inflight = 0;
  /* A reset beyond belief (a store written before the plausibility rule,
     or a clock stepped back an hour) is forgotten rather than waited for:
     with the window spent, one request then finds out. */
  if (b->reset && (double)b->reset - now > PSK_RESET_HORIZON) {
    b->reset = 0;
    b->reset_date = 0;
  }
  if (b->learned && !b->unlimited && b->reset && now >= (double)b->reset) {
    /* The window is over: a fresh one, which the requests still in flight
       may land in. Its end is learned from its first answer. */
    b->prev = b->reset;
    b->reset = 0;
    b->taken = b->inflight;
    if (b->limit < 0)
      b->learned = 0; /* no limit was ever shown: learn it again */
    else
      b->cap = b->limit;
  }
  if (!force) {
    if (!b->learned) {
      /* The first request goes alone: the queue's first. */
      if (b->inflight > 0 || ahead > 0) return -1;
    } else if (!b->unlimited && b->taken + ahead >= b->cap) {
      if (b->reset) return (double)b->reset - now;
      if (b->inflight > 0 || ahead > 0) return -1;
      /* Spent, with nothing in flight to say when it resets: one request
         finds out. */
    } else if (probe > 0 && b->reset && b->cap - b->taken - ahead == 1) {
      double at = (double)b->reset - 1 - probe;
      if (at > now && at - now <= PSK_PROBE_HOLD) return at - now;
    }
  }
  b->taken++;
  b->inflight++;
  if (now + lease > b->lease) b->lease = now + lease;
  return 0;
}

double psk_budget_take(psk_budget *b, double now, double lease, int force,
                       double probe) {
  return budget_take(b, now, lease, force, probe, 0);
}

void psk_budget_settle(psk_budget *b, int answered, long long limit,
                       long long remaining, long long reset, long long date) {
  if (b->inflight > 0) b->inflight--;
  if (answered) {
    psk_budget_learn(b, limit, remaining, reset, date);
  } else if (!b->learned) {
    /* The request that went alone to learn the budget got no answer: the
       next ones do not wait for one another's (an outage fails them
       together, in one timeout, not one each). The first answer teaches
       the budget as usual. */
    b->learned = 1;
    b->unlimited = 1;
  }
}

void psk_budget_learn(psk_budget *b, long long limit, long long remaining,
                      long long reset, long long date) {
  b->learned = 1;
  if (remaining < 0 || reset < 0) {
    /* No budget in this answer (a proxy's 502, say): unlimited only if
       none was ever shown. */
    if (!b->reset && limit < 0 && b->limit < 0) b->unlimited = 1;
    if (limit >= 0) b->limit = limit;
    return;
  }
  if (limit >= 0) b->limit = limit;
  b->unlimited = 0;
  if (b->reset && reset < b->reset && date >= 0 && date >= b->reset_date &&
      reset > date) {
    /* A nearer reset, still ahead, from an answer no older than the one
       that set the held reset: the held one was wrong (a far value sent
       once). The window ends at the nearer one; what it counted stays. */
    b->reset = reset;
    b->reset_date = date;
  }
  /* An answer from an earlier window. */
  if (reset < b->reset || (!b->reset && reset <= b->prev)) return;
  if (reset == b->reset && date > b->reset_date) b->reset_date = date;
  if (reset > b->reset) {
    /* A new window. After a rollover seen here, taken already counts the
       requests started in it; a window that opened unseen (another
       clock ran ahead) counts what is still in flight. */
    if (b->reset) b->taken = b->inflight;
    b->reset = reset;
    b->reset_date = date > 0 ? date : 0;
    b->cap = limit >= 0 ? limit : b->taken + remaining;
  }
  if (limit >= 0) {
    /* The server counted limit - remaining: requests outside this budget
       count too. */
    b->cap = limit;
    if (limit - remaining > b->taken) b->taken = limit - remaining;
  } else {
    /* No limit shown: what remains, less what is still in flight. */
    long long left = remaining - b->inflight;
    long long cap = b->taken + (left > 0 ? left : 0);
    if (cap < b->cap) b->cap = cap;
  }
}

int psk_pace_plausible(long long date, long long *limit,
                       long long *remaining, long long *reset) {
  if (date < 0 || *reset < 0 ||
      (*reset >= date - PSK_RESET_STALE && *reset <= date + PSK_RESET_HORIZON))
    return 1;
  *limit = *remaining = *reset = -1;
  return 0;
}

/* ---------------------------------------------------------------- */
/* the queue                                                         */

/* Tickets whose lease ended before now leave the queue. */
static void queue_expire(psk_queue *q, double now) {
  int i, k = 0;
  for (i = 0; i < q->n; i++) {
    if ((double)q->until[i] < now * 10) continue;
    q->id[k] = q->id[i];
    q->until[k] = q->until[i];
    k++;
  }
  q->n = k;
}

/* How many tickets are lower than t: where t is, or would go. */
static int queue_rank(const psk_queue *q, long long t) {
  int i = 0;
  while (i < q->n && q->id[i] < t) i++;
  return i;
}

/* Ticket t waits until `until`, having been told to ask again by
   `need` (both in tenths of a second): a lease that lasts to `need` is
   left as it is (so that most asks of a waiter change nothing in the
   store); a ticket that had left (its lease ran out while its holder
   still waited) goes back to its place. */
static void queue_hold(psk_queue *q, long long t, long long until,
                       long long need) {
  int i = queue_rank(q, t);
  if (i < q->n && q->id[i] == t) {
    if (q->until[i] < need) q->until[i] = until;
    return;
  }
  if (q->n == PSK_QUEUE_MAX) return;
  memmove(q->id + i + 1, q->id + i, (size_t)(q->n - i) * sizeof q->id[0]);
  memmove(q->until + i + 1, q->until + i,
          (size_t)(q->n - i) * sizeof q->until[0]);
  q->id[i] = t;
  q->until[i] = until;
  q->n++;
}

static void queue_leave(psk_queue *q, long long t) {
  int i = queue_rank(q, t);
  if (i == q->n || q->id[i] != t) return;
  memmove(q->id + i, q->id + i + 1, (size_t)(q->n - i - 1) * sizeof q->id[0]);
  memmove(q->until + i, q->until + i + 1,
          (size_t)(q->n - i - 1) * sizeof q->until[0]);
  q->n--;
}

/* A lease for a waiter told to wait `delay` at server time now: to the
   end of that wait and `grace` more, in tenths of a second. */
static long long ticket_until(double now, double delay, double grace) {
  double x = (now + (delay > 0 ? delay : 0) + grace) * 10;
  long long u;
  if (!(x >= 0)) return 0;
  if (x >= (double)PSK_PACE_MAX) return PSK_PACE_MAX;
  u = (long long)x;
  return (double)u < x ? u + 1 : u; /* rounded up */
}

/* A take in queue order (see psk_pace_apply). */
static void queue_take(psk_shared *s, psk_pace_op *op) {
  psk_queue *q = &s->queue;
  long long t = op->ticket;
  queue_expire(q, op->now);
  if (t <= 0 || t > q->last) t = 0; /* none, or another store's: a new wait */
  op->delay = budget_take(&s->budget, op->now, op->lease, op->force, op->probe,
                          t ? queue_rank(q, t) : q->n);
  if (op->delay == 0) {
    queue_leave(q, t);
    op->ticket = 0;
    return;
  }
  if (!t) {
    if (q->n == PSK_QUEUE_MAX || q->last >= PSK_PACE_MAX) {
      op->ticket = 0; /* full: behind the queue, without a place in it */
      return;
    }
    t = ++q->last;
  }
  queue_hold(q, t, ticket_until(op->now, op->delay, PSK_TICKET_GRACE),
             ticket_until(op->now, op->delay, PSK_TICKET_MARGIN));
  op->ticket = t;
}

/* ---------------------------------------------------------------- */
/* the text a store keeps                                            */

/* Appends one number, formatted, to out (PSK_BUDGET_TEXT bytes) at *len;
   0 when it does not fit. */
static int put(char *out, size_t *len, const char *fmt, long long v) {
  int n = snprintf(out + *len, PSK_BUDGET_TEXT - *len, fmt, v);
  if (n <= 0 || (size_t)n >= PSK_BUDGET_TEXT - *len) return 0;
  *len += (size_t)n;
  return 1;
}

/* "p3 <budget> <circuit> <last ticket> <n>", then when n > 0 the lowest lease
   (tenths of a second) and per ticket, lowest first, "<gap>:<lease less
   the lowest>": the first gap from the last ticket given, then from the
   ticket before. A queue of recent waiters is a few bytes a ticket. */
size_t psk_shared_encode(const psk_shared *s, char *out) {
  const psk_budget *b = &s->budget;
  const psk_queue *q = &s->queue;
  long long base = 0;
  size_t len;
  const psk_circuit *c = &s->circuit;
  int i, n = snprintf(out, PSK_BUDGET_TEXT,
                      "p3 %d %d %lld %lld %lld %lld %lld %lld %.3f %lld %lld "
                      "%.3f %.3f",
                      b->learned, b->unlimited, b->prev, b->reset, b->limit,
                      b->cap, b->taken, b->inflight, b->lease, b->reset_date,
                      c->fails, c->open_until, c->probe_until);
  if (n <= 0 || n >= PSK_BUDGET_TEXT) return 0;
  len = (size_t)n;
  if (!put(out, &len, " %lld", q->last) || !put(out, &len, " %lld", q->n))
    return 0;
  for (i = 0; i < q->n; i++)
    if (i == 0 || q->until[i] < base) base = q->until[i];
  if (q->n && !put(out, &len, " %lld", base)) return 0;
  for (i = 0; i < q->n; i++)
    if (!put(out, &len, " %lld",
             i ? q->id[i] - q->id[i - 1] : q->last - q->id[0]) ||
        !put(out, &len, ":%lld", q->until[i] - base))
      return 0;
  return len;
}

/* sep and an integer at *p; advances past them. */
static int read_num(const char **p, char sep, long long *v) {
  char *end;
  if (**p != sep) return -1;
  (*p)++;
  errno = 0;
  *v = strtoll(*p, &end, 10);
  if (end == *p || errno) return -1;
  *p = end;
  return 0;
}

/* " <integer>" at *p; advances past it. */
static int read_int(const char **p, long long *v) {
  return read_num(p, ' ', v);
}

static int in_range(long long v, long long lo, long long hi) {
  return v >= lo && v <= hi;
}

/* The queue part of the text at p (see psk_shared_encode). */
static int read_queue(const char *p, psk_queue *q) {
  long long n, base = 0, gap, off, id = 0;
  int i;
  if (read_int(&p, &q->last) || read_int(&p, &n) ||
      !in_range(q->last, 0, PSK_PACE_MAX) || !in_range(n, 0, PSK_QUEUE_MAX) ||
      (n > 0 && (read_int(&p, &base) || !in_range(base, 0, PSK_PACE_MAX))))
    return -1;
  for (i = 0; i < n; i++) {
    if (read_int(&p, &gap) || read_num(&p, ':', &off)) return -1;
    id = i ? id + gap : q->last - gap;
    if (!in_range(gap, i ? 1 : 0, PSK_PACE_MAX) || !in_range(id, 1, q->last) ||
        !in_range(off, 0, PSK_PACE_MAX - base))
      return -1;
    q->id[i] = id;
    q->until[i] = base + off;
  }
  q->n = (int)n;
  return *p == '\0' ? 0 : -1;
}

/* " <seconds>" (a time, as encode writes it) at *p; advances past it. */
static int read_time(const char **p, double *v) {
  char *end;
  if (**p != ' ') return -1;
  errno = 0;
  *v = strtod(*p + 1, &end);
  if (end == *p + 1 || errno || !(*v >= 0 && *v < 1e12)) return -1;
  *p = end;
  return 0;
}

int psk_shared_decode(psk_shared *s, const char *text, size_t len) {
  char buf[PSK_BUDGET_TEXT];
  const char *p = buf + 2;
  long long learned, unlimited;
  psk_budget *b = &s->budget;
  psk_circuit *c = &s->circuit;
  int version;
  psk_shared_init(s);
  if (len < 2 || len >= sizeof buf || text[0] != 'p' || text[1] < '1' ||
      text[1] > '3')
    return -1;
  version = text[1] - '0';
  memcpy(buf, text, len);
  buf[len] = '\0';
  if (read_int(&p, &learned) || read_int(&p, &unlimited) ||
      read_int(&p, &b->prev) || read_int(&p, &b->reset) ||
      read_int(&p, &b->limit) || read_int(&p, &b->cap) ||
      read_int(&p, &b->taken) || read_int(&p, &b->inflight) ||
      read_time(&p, &b->lease))
    goto bad;
  if ((learned != 0 && learned != 1) || (unlimited != 0 && unlimited != 1) ||
      !in_range(b->prev, 0, PSK_PACE_MAX) ||
      !in_range(b->reset, 0, PSK_PACE_MAX) ||
      !in_range(b->limit, -1, PSK_PACE_MAX) ||
      !in_range(b->cap, 0, PSK_PACE_MAX) ||
      !in_range(b->taken, 0, PSK_PACE_MAX) ||
      !in_range(b->inflight, 0, PSK_PACE_MAX))
    goto bad;
  /* "p3": the reset's Date and the circuit. */
  if (version == 3 &&
      (read_int(&p, &b->reset_date) || read_int(&p, &c->fails) ||
       read_time(&p, &c->open_until) || read_time(&p, &c->probe_until) ||
       !in_range(b->reset_date, 0, PSK_PACE_MAX) ||
       !in_range(c->fails, 0, PSK_PACE_MAX)))
    goto bad;
  /* "p1": the text of the version before the queue, no one waiting. */
  if (version == 1 ? *p != '\0' : read_queue(p, &s->queue) != 0) goto bad;
  b->learned = (int)learned;
  b->unlimited = (int)unlimited;
  return 0;
bad:
  psk_shared_init(s);
  return -1;
}

/* ---------------------------------------------------------------- */
/* the circuit                                                       */

/* Whether a take may go on to the budget: no while the circuit is open
   (op->delay: until its cooldown ends) or while its probe is out; the
   first take after the cooldown is the probe. A caller without a circuit
   of its own (failures 0) is not held by another's. */
static int circuit_pass(psk_circuit *c, psk_pace_op *op) {
  op->refused = 0;
  op->is_probe = 0;
  if (c->open_until <= 0 || op->failures <= 0) return 1;
  if (op->now < c->open_until) {
    op->refused = 1;
    op->delay = c->open_until - op->now;
    return 0;
  }
  if (c->probe_until > op->now) {
    op->refused = 1;
    op->delay = c->probe_until - op->now;
    return 0;
  }
  op->is_probe = 1;
  return 1;
}

/* A slot was taken (or not) by a take that passed: a probe's is held for
   its lease. */
static void circuit_taken(psk_circuit *c, psk_pace_op *op) {
  if (!op->is_probe) return;
  if (op->delay != 0) {
    op->is_probe = 0; /* it waits for the budget: not out yet */
    return;
  }
  c->probe_until = op->now + (op->lease > 0 ? op->lease : 1);
}

/* A request ended: no answer counts one more failure in a row (and opens
   the circuit at the caller's threshold, or again after a failed probe);
   an answer closes it. A failure that does not count (TLS, too large)
   leaves the count, and frees the probe's turn. */
static void circuit_settle(psk_circuit *c, const psk_pace_op *op) {
  if (op->unanswered) {
    if (c->fails < PSK_PACE_MAX) c->fails++;
    if (op->was_probe ||
        (op->failures > 0 && c->open_until <= 0 && c->fails >= op->failures))
      c->open_until = op->now + op->cooldown;
    if (op->was_probe) c->probe_until = 0;
  } else if (op->answered) {
    c->fails = 0;
    c->open_until = 0;
    c->probe_until = 0;
  } else if (op->was_probe) {
    c->probe_until = 0;
  }
}

/* ---------------------------------------------------------------- */
/* one operation, for every store                                    */

void psk_pace_apply(psk_shared *s, psk_pace_op *op) {
  psk_budget *b = &s->budget;
  /* A store that lost its budget (or never had one) starts from what this
     process has learned, rather than send a request to find out -- less
     what no one process knows: the other processes' requests in flight
     in the current window. So that window counts as spent (nothing more
     starts before its reset), and the next is paced as usual. */
  if (!b->learned && op->seed && op->seed->learned) {
    long long inflight = b->inflight;
    double lease = b->lease;
    *b = *op->seed;
    b->inflight = inflight;
    b->lease = lease;
    if (!b->unlimited && b->reset && op->now < (double)b->reset &&
        b->taken < b->cap)
      b->taken = b->cap;
  }
  b->inflight -= op->unsettled < b->inflight ? op->unsettled : b->inflight;
  if (op->leave) {
    queue_leave(&s->queue, op->ticket);
    op->ticket = 0;
  } else if (op->settle) {
    if (!op->noslot)
      psk_budget_settle(b, op->answered, op->limit, op->remaining, op->reset,
                        op->date);
    circuit_settle(&s->circuit, op);
  } else if (circuit_pass(&s->circuit, op)) {
    if (op->local) {
      op->delay = budget_take(b, op->now, op->lease, op->force, op->probe,
                              0);
      op->ticket = 0;
    } else {
      queue_take(s, op);
    }
    circuit_taken(&s->circuit, op);
  }
  op->open = s->circuit.open_until > 0;
  op->fails = s->circuit.fails;
}

void psk_pace_learn(psk_shared *s, const psk_pace_op *op) {
  if (op->answered)
    psk_budget_learn(&s->budget, op->limit, op->remaining, op->reset,
                     op->date);
  circuit_settle(&s->circuit, op);
}

void psk_pace_apply_text(const char *cur, size_t len, psk_pace_op *op,
                         char out[PSK_BUDGET_TEXT]) {
  psk_shared s;
  psk_shared_decode(&s, cur, len); /* unknown text: a fresh budget */
  psk_pace_apply(&s, op);
  if (!psk_shared_encode(&s, out)) out[0] = '\0';
}

/* ---------------------------------------------------------------- */
/* the clock                                                         */

void psk_clock_learn(psk_clock *k, double date, double sent,
                     double received) {
  double lower, upper;
  if (date < 0) return;
  lower = date - received;
  upper = date + 1 - sent;
  if (!k->known) {
    k->offset = lower;
    k->upper = upper;
    k->known = 1;
    return;
  }
  if (lower > k->offset) k->offset = lower;
  if (upper < k->upper) k->upper = upper;
  /* Bounds that cross: a clock was stepped. Start over from this answer. */
  if (k->upper < k->offset) {
    k->offset = lower;
    k->upper = upper;
  }
}

double psk_clock_probe(const psk_clock *k) {
  double half;
  if (!k->known) return 0;
  half = (k->upper - k->offset) / 2;
  return half > 0.02 && half <= 0.5 ? half : 0;
}

double psk_clock_server(const psk_clock *k, double local_now) {
  return k->known ? local_now + k->offset : local_now;
}

/* ---------------------------------------------------------------- */
/* SHA-256 (FIPS 180-4)                                              */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p) {
  uint32_t w[64], v[8];
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
  for (i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  memcpy(v, h, sizeof v);
  for (i = 0; i < 64; i++) {
    uint32_t t1 = v[7] + (ROR(v[4], 6) ^ ROR(v[4], 11) ^ ROR(v[4], 25)) +
                  ((v[4] & v[5]) ^ (~v[4] & v[6])) + K256[i] + w[i];
    uint32_t t2 = (ROR(v[0], 2) ^ ROR(v[0], 13) ^ ROR(v[0], 22)) +
                  ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
    memmove(v + 1, v, 7 * sizeof v[0]);
    v[4] += t1;
    v[0] = t1 + t2;
  }
  for (i = 0; i < 8; i++) h[i] += v[i];
}

void psk_sha256_hex(const void *data, size_t len, char out[65]) {
  static const char hex[] = "0123456789abcdef";
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const unsigned char *p = data;
  unsigned char last[128];
  size_t rest = len % 64, tail, i;
  uint64_t bits = (uint64_t)len * 8;
  for (i = 0; i + 64 <= len; i += 64) sha256_block(h, p + i);
  /* The rest, a 1 bit, zeros, and the length in bits: one or two blocks. */
  memset(last, 0, sizeof last);
  if (rest) memcpy(last, p + len - rest, rest);
  last[rest] = 0x80;
  tail = rest < 56 ? 64 : 128;
  for (i = 0; i < 8; i++) last[tail - 1 - i] = (unsigned char)(bits >> (8 * i));
  sha256_block(h, last);
  if (tail == 128) sha256_block(h, last + 64);
  for (i = 0; i < 32; i++) {
    unsigned char byte = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
    out[2 * i] = hex[byte >> 4];
    out[2 * i + 1] = hex[byte & 15];
  }
  out[64] = '\0';
}

size_t psk_budget_name(const char *prefix, const char *api_key, char *out,
                       size_t n) {
  char hex[65];
  size_t plen = strlen(prefix);
  if (plen + 64 + 1 > n) return 0;
  psk_sha256_hex(api_key, strlen(api_key), hex);
  snprintf(out, n, "%s%s", prefix, hex);
  return plen + 64;
}
