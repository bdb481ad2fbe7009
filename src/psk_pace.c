/* psk_pace: see psk_pace.h. */
#include "psk_pace.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- */
/* the budget                                                        */

void psk_budget_init(psk_budget *b) {
  memset(b, 0, sizeof *b);
  b->limit = -1;
}

double psk_budget_take(psk_budget *b, double now, double lease, int force,
                       double probe) {
  /* Requests whose process never settled them stop counting. */
  if (b->inflight > 0 && now > b->lease) b->inflight = 0;
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
      if (b->inflight > 0) return -1; /* the first request goes alone */
    } else if (!b->unlimited && b->taken >= b->cap) {
      if (b->reset) return (double)b->reset - now;
      if (b->inflight > 0) return -1;
      /* Spent, with nothing in flight to say when it resets: one request
         finds out. */
    } else if (probe > 0 && b->reset && b->cap - b->taken == 1) {
      double at = (double)b->reset - 1 - probe;
      if (at > now && at - now <= PSK_PROBE_HOLD) return at - now;
    }
  }
  b->taken++;
  b->inflight++;
  if (now + lease > b->lease) b->lease = now + lease;
  return 0;
}

void psk_budget_settle(psk_budget *b, int answered, long long limit,
                       long long remaining, long long reset) {
  if (b->inflight > 0) b->inflight--;
  if (answered) psk_budget_learn(b, limit, remaining, reset);
}

void psk_budget_learn(psk_budget *b, long long limit, long long remaining,
                      long long reset) {
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
  /* An answer from an earlier window. */
  if (reset < b->reset || (!b->reset && reset <= b->prev)) return;
  if (reset > b->reset) {
    /* A new window. After a rollover seen here, taken already counts the
       requests started in it; a window that opened unseen (another
       clock ran ahead) counts what is still in flight. */
    if (b->reset) b->taken = b->inflight;
    b->reset = reset;
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

int psk_pace_fresh(long long date, long long *limit, long long *remaining,
                   long long *reset) {
  if (date < 0 || *reset < 0 || *reset >= date - PSK_RESET_STALE) return 1;
  *limit = *remaining = *reset = -1;
  return 0;
}

size_t psk_budget_encode(const psk_budget *b, char *out) {
  int n = snprintf(out, PSK_BUDGET_TEXT, "p1 %d %d %lld %lld %lld %lld %lld %lld %.3f",
                   b->learned, b->unlimited, b->prev, b->reset, b->limit, b->cap,
                   b->taken, b->inflight, b->lease);
  return n > 0 && n < PSK_BUDGET_TEXT ? (size_t)n : 0;
}

#define PSK_PACE_MAX 1000000000000000LL /* 1e15 */

/* " <integer>" at *p; advances past it. */
static int read_int(const char **p, long long *v) {
  char *end;
  if (**p != ' ') return -1;
  (*p)++;
  errno = 0;
  *v = strtoll(*p, &end, 10);
  if (end == *p || errno) return -1;
  *p = end;
  return 0;
}

int psk_budget_decode(psk_budget *b, const char *text, size_t len) {
  char buf[PSK_BUDGET_TEXT], *end;
  const char *p = buf + 2;
  long long learned, unlimited;
  psk_budget d;
  psk_budget_init(b);
  if (len < 2 || len >= sizeof buf || memcmp(text, "p1", 2) != 0) return -1;
  memcpy(buf, text, len);
  buf[len] = '\0';
  if (read_int(&p, &learned) || read_int(&p, &unlimited) ||
      read_int(&p, &d.prev) || read_int(&p, &d.reset) ||
      read_int(&p, &d.limit) || read_int(&p, &d.cap) ||
      read_int(&p, &d.taken) || read_int(&p, &d.inflight) || *p != ' ')
    return -1;
  errno = 0;
  d.lease = strtod(p + 1, &end);
  if (end == p + 1 || *end != '\0' || errno) return -1;
  /* Bounds far past any real budget, so that no count can overflow. */
  if ((learned != 0 && learned != 1) || (unlimited != 0 && unlimited != 1) ||
      d.prev < 0 || d.prev > PSK_PACE_MAX || d.reset < 0 ||
      d.reset > PSK_PACE_MAX || d.limit < -1 || d.limit > PSK_PACE_MAX ||
      d.cap < 0 || d.cap > PSK_PACE_MAX || d.taken < 0 ||
      d.taken > PSK_PACE_MAX || d.inflight < 0 || d.inflight > PSK_PACE_MAX ||
      !(d.lease >= 0 && d.lease < 1e12))
    return -1;
  d.learned = (int)learned;
  d.unlimited = (int)unlimited;
  *b = d;
  return 0;
}

/* ---------------------------------------------------------------- */
/* one operation, for every store                                    */

void psk_pace_apply(psk_budget *b, psk_pace_op *op) {
  /* A store that lost its budget (or never had one) starts from what this
     process has learned, rather than send a request to find out. */
  if (!b->learned && op->seed && op->seed->learned) {
    long long inflight = b->inflight;
    double lease = b->lease;
    *b = *op->seed;
    b->inflight = inflight;
    b->lease = lease;
  }
  b->inflight -= op->unsettled < b->inflight ? op->unsettled : b->inflight;
  if (op->settle)
    psk_budget_settle(b, op->answered, op->limit, op->remaining, op->reset);
  else
    op->delay = psk_budget_take(b, op->now, op->lease, op->force, op->probe);
}

void psk_pace_apply_text(const char *cur, size_t len, psk_pace_op *op,
                         char out[PSK_BUDGET_TEXT]) {
  psk_budget b;
  psk_budget_decode(&b, cur, len); /* unknown text: a fresh budget */
  psk_pace_apply(&b, op);
  if (!psk_budget_encode(&b, out)) out[0] = '\0';
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
