/*
 * fuzz_pace: the pacing budget as a shared store hands it over (any
 * bytes), then any sequence of takes and settles, the clock, and SHA-256.
 *
 * Input: text up to the first '\n' is a stored budget for
 * psk_shared_decode; the rest drives operations, 12 bytes each: an opcode
 * byte (take, forced take, settle with an answer, settle without one,
 * clock sample), then bytes that make times, counts and header values,
 * including absent (-1) and absurd ones.
 *
 * A sixth opcode runs the shared stores' operation (psk_pace_apply_text)
 * on the budget's text, seeded with the budget itself, with a circuit; a seventh and
 * eighth take in queue order (psk_pace_apply) as one of four waiters,
 * each holding the ticket its last take gave it.
 *
 * Invariants: text that decodes re-encodes to text that decodes to the
 * same budget (text is what stores keep); counts never go negative; a
 * take that returns 0 counted exactly one request; a wait is finite, and
 * > 0 only with a known reset (at most the time to it, or the probe
 * hold); the budget always encodes within PSK_BUDGET_TEXT; the clock's
 * lower bound never passes its upper one; SHA-256 gives 64 hex digits,
 * the same for the same input. The queue: tickets strictly increasing,
 * none above the last given, at most PSK_QUEUE_MAX; a take that goes
 * leaves no ticket, one that waits holds one in the queue (unless it is
 * full); no unforced take goes while as many tickets as free slots are
 * ahead of it; a new ticket is the last given.
 */
#include <math.h>

#include "fuzz.h"
#include "psk_pace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const psk_shared *sa, const psk_shared *sb) {
  const psk_budget *a = &sa->budget, *b = &sb->budget;
  return a->learned == b->learned && a->unlimited == b->unlimited &&
         a->reset == b->reset && a->prev == b->prev && a->limit == b->limit &&
         a->cap == b->cap && a->taken == b->taken &&
         a->inflight == b->inflight && fabs(a->lease - b->lease) < 0.0006 &&
         a->reset_date == b->reset_date &&
         sa->circuit.fails == sb->circuit.fails &&
         fabs(sa->circuit.open_until - sb->circuit.open_until) < 0.0006 &&
         fabs(sa->circuit.probe_until - sb->circuit.probe_until) < 0.0006 &&
         sa->queue.last == sb->queue.last && sa->queue.n == sb->queue.n &&
         memcmp(sa->queue.id, sb->queue.id,
                (size_t)sa->queue.n * sizeof sa->queue.id[0]) == 0 &&
         memcmp(sa->queue.until, sb->queue.until,
                (size_t)sa->queue.n * sizeof sa->queue.until[0]) == 0;
}

static void check_queue(const psk_queue *q) {
  int i;
  FUZZ_CHECK(q->n >= 0 && q->n <= PSK_QUEUE_MAX && q->last >= 0);
  for (i = 0; i < q->n; i++) {
    FUZZ_CHECK(q->id[i] >= 1 && q->id[i] <= q->last && q->until[i] >= 0);
    if (i) FUZZ_CHECK(q->id[i] > q->id[i - 1]);
  }
}

static int holds(const psk_queue *q, long long t) {
  int i;
  for (i = 0; i < q->n; i++)
    if (q->id[i] == t) return 1;
  return 0;
}

/* Tickets in q lower than t (all of them for t = 0) whose lease has not
   ended at now. */
static long long ahead_of(const psk_queue *q, long long t, double now) {
  long long k = 0;
  int i;
  for (i = 0; i < q->n; i++)
    if ((t == 0 || q->id[i] < t) && (double)q->until[i] >= now * 10) k++;
  return k;
}

/* Text round trip: encode, decode, encode again gives the same text. */
static void round_trip(const psk_shared *b) {
  char t1[PSK_BUDGET_TEXT], t2[PSK_BUDGET_TEXT];
  static psk_shared d;
  size_t n = psk_shared_encode(b, t1);
  FUZZ_CHECK(n > 0 && n < PSK_BUDGET_TEXT && strlen(t1) == n);
  FUZZ_CHECK(psk_shared_decode(&d, t1, n) == 0);
  FUZZ_CHECK(same(b, &d));
  FUZZ_CHECK(psk_shared_encode(&d, t2) == n && memcmp(t1, t2, n) == 0);
}

/* A header value from two bytes: absent, small, or large. */
static long long header_value(uint8_t a, uint8_t b) {
  switch (a & 3) {
  case 0: return -1;
  case 1: return b % 16;
  case 2: return (long long)b * 1000;
  default: return 1800000000LL + b;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static psk_shared sh; /* static: a budget with its queue is large */
  psk_budget *b = &sh.budget;
  long long tickets[4] = {0, 0, 0, 0};
  psk_clock k = {0, 0, 0};
  const uint8_t *nl = memchr(data, '\n', size);
  size_t tlen = nl ? (size_t)(nl - data) : size, i;
  char hex[65], hex2[65];

  psk_sha256_hex(data, size, hex);
  psk_sha256_hex(data, size, hex2);
  FUZZ_CHECK(strlen(hex) == 64 && strcmp(hex, hex2) == 0);
  for (i = 0; i < 64; i++) FUZZ_CHECK(strchr("0123456789abcdef", hex[i]));

  if (psk_shared_decode(&sh, (const char *)data, tlen) == 0) {
    check_queue(&sh.queue);
    round_trip(&sh);
  } else {
    static psk_shared fresh;
    psk_shared_init(&fresh);
    FUZZ_CHECK(same(&sh, &fresh));
  }
  if (!nl) return 0;

  for (i = tlen + 1; i + 12 <= size; i += 12) {
    const uint8_t *p = data + i;
    /* Server time near 1.8e9 (or, rarely, near 0), with millisecond steps. */
    double now = (p[1] & 0x80 ? 1800000000.0 : 0.0) +
                 (double)((p[1] & 0x7f) << 8 | p[2]) / 16.0;
    double lease = (double)p[3] / 4.0, probe = (double)(p[4] % 64) / 100.0;
    long long taken = b->taken, inflight = b->inflight;
    switch (p[0] % 8) {
    case 0:
    case 1: {
      int force = p[0] % 8 == 1;
      double d = psk_budget_take(b, now, lease, force, probe);
      FUZZ_CHECK(isfinite(d));
      if (force) FUZZ_CHECK(d == 0);
      if (d == 0) {
        FUZZ_CHECK(b->inflight >= 1);
        FUZZ_CHECK(b->taken >= 1);
      } else {
        /* Nothing counted, whatever the rollover did. */
        FUZZ_CHECK(b->taken <= taken || b->taken <= inflight);
        if (d > 0) {
          FUZZ_CHECK(b->reset > 0);
          FUZZ_CHECK(d <= (double)b->reset - now + 1e-6 ||
                     d <= PSK_PROBE_HOLD + 1e-6);
        }
      }
      break;
    }
    case 2:
    case 3:
      psk_budget_settle(b, p[0] % 8 == 2, header_value(p[5], p[6]),
                        header_value(p[7], p[8]), header_value(p[9], p[10]), -1);
      FUZZ_CHECK(b->inflight == (inflight > 0 ? inflight - 1 : 0));
      break;
    case 6:
    case 7: {
      /* One of four waiters takes in queue order; now moves on a little
         from the last, as a clock does, or jumps. */
      long long *t = &tickets[p[5] % 4], given = *t, last = sh.queue.last;
      long long free_slots = b->cap - b->taken;
      psk_pace_op op;
      memset(&op, 0, sizeof op);
      op.now = now;
      op.lease = lease;
      op.force = p[0] % 8 == 7 && (p[5] & 0x80);
      op.probe = probe;
      op.ticket = p[5] & 0x40 ? (long long)p[6] : given;
      given = op.ticket;
      {
        /* Who is ahead, as the take will see it: after the rollover. */
        long long ahead = given > 0 && given <= last
                              ? ahead_of(&sh.queue, given, now)
                              : ahead_of(&sh.queue, 0, now);
        int rolls = b->learned && !b->unlimited && b->reset &&
                    now >= (double)b->reset;
        int learned = b->learned, unlimited = b->unlimited;
        long long reset = b->reset;
        psk_pace_apply(&sh, &op);
        /* Or the budget is spent with no reset known (or one past the
           horizon, which the take forgets) and nothing in flight: the
           queue's first finds out. */
        if (op.delay == 0 && !op.force && learned && !unlimited && !rolls)
          FUZZ_CHECK(free_slots - ahead >= 1 ||
                     (ahead == 0 && (reset == 0 || (double)reset - now >
                                                       PSK_RESET_HORIZON)));
      }
      *t = op.ticket;
      FUZZ_CHECK(isfinite(op.delay));
      if (op.force) FUZZ_CHECK(op.delay == 0);
      if (op.delay == 0) {
        FUZZ_CHECK(op.ticket == 0);
        if (given > 0) FUZZ_CHECK(!holds(&sh.queue, given));
      } else if (op.ticket) {
        FUZZ_CHECK(op.ticket <= sh.queue.last);
        FUZZ_CHECK(holds(&sh.queue, op.ticket) ||
                   sh.queue.n == PSK_QUEUE_MAX);
        if (given <= 0 || given > last)
          FUZZ_CHECK(op.ticket == sh.queue.last && op.ticket == last + 1);
      } else {
        FUZZ_CHECK(sh.queue.n == PSK_QUEUE_MAX || last >= 1000000000000000LL);
      }
      check_queue(&sh.queue);
      break;
    }
    case 5: {
      char text[PSK_BUDGET_TEXT], out[PSK_BUDGET_TEXT];
      size_t tn = psk_shared_encode(&sh, text);
      static psk_budget seed;
      seed = *b;
      psk_pace_op op;
      memset(&op, 0, sizeof op);
      op.settle = p[5] & 1;
      op.now = now;
      op.lease = lease;
      op.force = (p[5] >> 1) & 1;
      op.probe = probe;
      op.seed = p[5] & 4 ? &seed : NULL;
      op.unsettled = p[6] % 4;
      op.answered = (p[5] >> 3) & 1;
      op.limit = header_value(p[7], p[8]);
      op.remaining = header_value(p[9], p[10]);
      op.reset = header_value(p[11], p[6]);
      op.date = header_value(p[8], p[11]);
      op.ticket = tickets[p[6] % 4];
      /* The circuit: a threshold of 0 to 3, a cooldown of 0 to 15 s. */
      op.failures = p[9] % 4;
      op.cooldown = (double)(p[10] % 16);
      op.unanswered = !op.answered && (p[5] & 0x20);
      op.was_probe = (p[5] >> 6) & 1;
      psk_pace_apply_text(p[5] & 0x10 ? "" : text, p[5] & 0x10 ? 0 : tn, &op,
                          out);
      FUZZ_CHECK(strlen(out) < PSK_BUDGET_TEXT);
      FUZZ_CHECK(psk_shared_decode(&sh, out, strlen(out)) == 0);
      if (!op.settle) {
        FUZZ_CHECK(isfinite(op.delay));
        /* Refused by an open circuit (forced or not): a wait until its
           cooldown or its probe's lease ends; else a forced take goes. */
        if (op.refused)
          FUZZ_CHECK(op.open && op.failures > 0 && op.delay > 0 &&
                     !op.is_probe);
        else if (op.force)
          FUZZ_CHECK(op.delay == 0);
        if (op.is_probe) FUZZ_CHECK(op.delay == 0 && op.open);
      } else if (op.answered) {
        FUZZ_CHECK(!op.open && op.fails == 0); /* an answer closes it */
      }
      FUZZ_CHECK(sh.circuit.fails >= 0 && sh.circuit.open_until >= 0 &&
                 sh.circuit.probe_until >= 0);
      break;
    }
    default: {
      double date = header_value(p[5], p[6]);
      double sent = now - (double)p[7] / 10.0, received = now;
      psk_clock_learn(&k, date, sent, received);
      FUZZ_CHECK(!k.known || k.offset <= k.upper);
      FUZZ_CHECK(psk_clock_probe(&k) >= 0 && psk_clock_probe(&k) <= 0.5);
      break;
    }
    }
    FUZZ_CHECK(b->taken >= 0 && b->inflight >= 0 && b->cap >= 0);
    FUZZ_CHECK(b->learned == 0 || b->learned == 1);
    round_trip(&sh);
  }
  return 0;
}
