/*
 * fuzz_retry: psk_parse_uint, psk_parse_http_date, psk_parse_retry_after,
 * psk_retry_plan, psk_backoff and psk_random on arbitrary bytes.
 *
 * Input: 8 bytes of local clock, then status, kind, attempt and jitter
 * bytes, a flags byte, then text. The text as a whole goes to each parser;
 * split at '\n' it gives the outcome's Retry-After, X-RateLimit-Reset and
 * Date header values (flags say which are present).
 *
 * Invariants: parse_uint matches a reference; a date that parses
 * round-trips through an IMF-fixdate formatter written here (epoch ->
 * text -> epoch), and its fields read back as written (for all three
 * forms); every plan is retryable exactly for 429/500/502/503/504 and
 * timeout/connect/network, with a wait >= 0 (finite, or HUGE_VAL for a
 * Retry-After too large to represent, which an oracle here confirms), a
 * valid reason, and the wait the README's order prescribes (Retry-After,
 * then the reset, then backoff).
 */
#include <math.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* psk_parse_uint's contract: optional SP/HTAB, decimal digits, optional
   SP/HTAB, value at most 2^53 - 1. */
static int uint_oracle(const char *s, size_t n, long long *out) {
  size_t i = 0, e = n, digits;
  unsigned long long v = 0;
  while (i < e && is_ows((unsigned char)s[i])) i++;
  while (e > i && is_ows((unsigned char)s[e - 1])) e--;
  if (i == e) return 0;
  for (size_t k = i; k < e; k++)
    if (!fz_is_digit((unsigned char)s[k])) return 0;
  while (i + 1 < e && s[i] == '0') i++;
  digits = e - i;
  if (digits > 16) return 0; /* 2^53 has 16 digits */
  for (; i < e; i++) v = v * 10 + (unsigned)(s[i] - '0');
  if (v > (unsigned long long)PSK_MAX_SAFE_INT) return 0;
  *out = (long long)v;
  return 1;
}

/* The contract of a Retry-After too large to represent: OWS, then digits
   whose value passes 2^53 - 1, or a decimal number with an exponent
   (digits [. digits] e|E [+|-] digits) whose value is at least 1e16, then
   OWS. Computed here with strtoull and strtold over a short copy, not by
   the core's digit counting. */
static int too_large_oracle(const char *s, size_t n) {
  size_t i = 0, e = n, k, j;
  int saw_exp = 0, saw_dot = 0;
  char buf[128];
  while (i < e && is_ows((unsigned char)s[i])) i++;
  while (e > i && is_ows((unsigned char)s[e - 1])) e--;
  if (i == e || !fz_is_digit((unsigned char)s[i])) return 0;
  for (k = i; k < e; k++) {
    unsigned char c = (unsigned char)s[k];
    if (fz_is_digit(c)) continue;
    if (c == '.' && !saw_dot && !saw_exp && k + 1 < e &&
        fz_is_digit((unsigned char)s[k + 1])) {
      saw_dot = 1;
      continue;
    }
    if ((c == 'e' || c == 'E') && !saw_exp) {
      saw_exp = 1;
      if (k + 1 < e && (s[k + 1] == '+' || s[k + 1] == '-')) k++;
      if (k + 1 >= e || !fz_is_digit((unsigned char)s[k + 1])) return 0;
      continue;
    }
    return 0;
  }
  if (!saw_exp) {
    if (saw_dot) return 0;
    /* digits only: past 2^53 - 1? (uint_oracle's digit count) */
    while (i + 1 < e && s[i] == '0') i++;
    if (e - i > 16) return 1;
    memcpy(buf, s + i, e - i);
    buf[e - i] = '\0';
    return strtoull(buf, NULL, 10) > (unsigned long long)PSK_MAX_SAFE_INT;
  }
  /* A short number for strtold: "0.<first 18 significant digits>e<E>".
     Cutting digits never takes a number at or past 1e16 below it (the
     threshold has one significant digit), and 18 digits keep every number
     below it apart from it in a long double. */
  {
    long ex = 0, shift = 0;
    int sig = 0, neg = 0, in_frac = 0;
    for (k = i; k < e && s[k] != 'e' && s[k] != 'E'; k++) {
      if (s[k] == '.') {
        in_frac = 1;
        continue;
      }
      if (!sig && s[k] == '0') {
        if (in_frac) shift--; /* 0.001: the point moves right */
        continue;
      }
      if (!in_frac) shift++;
      if (sig < 18) buf[2 + sig] = s[k];
      sig++;
    }
    if (!sig) return 0; /* zero */
    k++; /* past 'e' */
    if (s[k] == '+' || s[k] == '-') neg = s[k++] == '-';
    for (; k < e; k++)
      if (ex < 1000000) ex = ex * 10 + (s[k] - '0');
    if (neg) ex = -ex;
    buf[0] = '0';
    buf[1] = '.';
    j = 2 + (size_t)(sig < 18 ? sig : 18);
    snprintf(buf + j, sizeof buf - j, "e%ld", ex + shift);
    return strtold(buf, NULL) >= 1e16L;
  }
}

static const char MONTHS[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
static const char WDAYS[] = "SunMonTueWedThuFriSat";

/* Epoch days -> proleptic Gregorian civil date (H. Hinnant's algorithm,
   the inverse of the one psk_core.c uses, written independently). */
static void civil_from_days(long long z, long long *y, int *m, int *d) {
  long long era, doe, yoe, doy, mp;
  z += 719468;
  era = (z >= 0 ? z : z - 146096) / 146097;
  doe = z - era * 146097;
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

typedef struct tm_fields {
  long long year;
  int mon, day, hh, mm, ss, wday;
} tm_fields;

static void fields_of(long long t, tm_fields *f) {
  long long days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
  long long secs = t - days * 86400;
  civil_from_days(days, &f->year, &f->mon, &f->day);
  f->hh = (int)(secs / 3600);
  f->mm = (int)(secs / 60 % 60);
  f->ss = (int)(secs % 60);
  f->wday = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
}

/* IMF-fixdate (RFC 9110 5.6.7) for epoch t; 0 when the year has no four
   digits. out must hold 30 bytes. */
static int format_imf(long long t, char out[30]) {
  tm_fields f;
  fields_of(t, &f);
  if (f.year < 0 || f.year > 9999) return 0;
  snprintf(out, 30, "%.3s, %02d %.3s %04lld %02d:%02d:%02d GMT",
           WDAYS + 3 * f.wday, f.day, MONTHS + 3 * (f.mon - 1), f.year, f.hh,
           f.mm, f.ss);
  return 1;
}

/* A date that parsed: formats it, parses that, and checks the fields
   against the input text in whichever of the three forms it came. */
static void check_date(const char *s, size_t n, long long t) {
  char imf[30], want[40];
  long long back;
  size_t i = 0, k;
  tm_fields f;
  FUZZ_CHECK(format_imf(t, imf) ||
             /* only 9999-12-31 23:59:60 rolls past year 9999 */
             (t == 253402300800LL));
  if (t != 253402300800LL) {
    FUZZ_CHECK(strlen(imf) == 29);
    FUZZ_CHECK(psk_parse_http_date(imf, 29, &back) == PSK_OK);
    FUZZ_CHECK(back == t);
  }
  /* The input, trimmed as the parser trims it. */
  while (n && is_ows((unsigned char)s[n - 1])) n--;
  while (i < n && is_ows((unsigned char)s[i])) i++;
  s += i;
  n -= i;
  /* Second 60 (a leap second) reads as the next minute: fields differ. */
  for (k = 0; k + 2 < n; k++)
    if (s[k] == ':' && s[k + 1] == '6' && s[k + 2] == '0') return;
  fields_of(t, &f);
  for (k = 0; k < n && ((s[k] | 32) >= 'a' && (s[k] | 32) <= 'z'); k++) {
  }
  if (k < n && s[k] == ',') {
    if (n - k == 26 && s[k + 4] == ' ')
      snprintf(want, sizeof want, ", %02d %.3s %04lld %02d:%02d:%02d GMT",
               f.day, MONTHS + 3 * (f.mon - 1), f.year, f.hh, f.mm, f.ss);
    else
      snprintf(want, sizeof want, ", %02d-%.3s-%02lld %02d:%02d:%02d GMT",
               f.day, MONTHS + 3 * (f.mon - 1), f.year % 100, f.hh, f.mm,
               f.ss);
  } else {
    /* asctime pads the day with a space or, leniently, a zero. */
    int zero = n - k > 5 && s[k + 5] == '0';
    snprintf(want, sizeof want,
             zero ? " %.3s %02d %02d:%02d:%02d %04lld"
                  : " %.3s %2d %02d:%02d:%02d %04lld",
             MONTHS + 3 * (f.mon - 1), f.day, f.hh, f.mm, f.ss, f.year);
  }
  FUZZ_CHECK(n - k == strlen(want) && memcmp(s + k, want, n - k) == 0);
}

static void check_parsers(const char *s, size_t n, double server_now) {
  long long v = -1, want = -1, t = 0;
  double wait = -1;
  int uint_ok = psk_parse_uint(s, n, &v) == PSK_OK;
  int date_ok;
  FUZZ_CHECK(uint_ok == uint_oracle(s, n, &want));
  if (uint_ok) FUZZ_CHECK(v == want && v >= 0 && v <= PSK_MAX_SAFE_INT);

  date_ok = psk_parse_http_date(s, n, &t) == PSK_OK;
  if (date_ok) check_date(s, n, t);

  switch (psk_parse_retry_after(s, n, server_now, &wait)) {
  case PSK_OK:
    FUZZ_CHECK(uint_ok || date_ok);
    FUZZ_CHECK(isfinite(wait) && wait >= 0);
    if (uint_ok)
      FUZZ_CHECK(wait == (double)v);
    else
      FUZZ_CHECK(wait == ((double)t - server_now > 0 ? (double)t - server_now
                                                     : 0));
    break;
  case PSK_TOO_LARGE:
    /* A number past 2^53 - 1: never a date, never a small integer. */
    FUZZ_CHECK(!uint_ok && !date_ok);
    FUZZ_CHECK(wait == HUGE_VAL);
    FUZZ_CHECK(too_large_oracle(s, n));
    break;
  default:
    FUZZ_CHECK(!uint_ok && !date_ok);
    FUZZ_CHECK(!too_large_oracle(s, n));
  }
}

static int status_retryable(long s) {
  return s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

static void check_plan(const psk_outcome *o, int attempt, double now,
                       double jitter) {
  double wait = -1, server_now = now, ra = 0;
  int reason = -1, ret;
  long long v;
  ret = psk_retry_plan(o, attempt, now, jitter, &wait, &reason);
  FUZZ_CHECK(ret == 0 || ret == 1);
  FUZZ_CHECK(ret == (o->status ? status_retryable(o->status)
                               : (o->kind == PSK_KIND_TIMEOUT ||
                                  o->kind == PSK_KIND_CONNECT ||
                                  o->kind == PSK_KIND_NETWORK)));
  if (!ret) return;
  FUZZ_CHECK((isfinite(wait) || wait == HUGE_VAL) && wait >= 0);
  FUZZ_CHECK(reason >= PSK_WAIT_RETRY_AFTER && reason <= PSK_WAIT_BACKOFF);
  FUZZ_CHECK(psk_wait_reasons[reason] != NULL);
  /* The order the README gives: Retry-After, reset (within the horizon
     after the server's now), backoff; a Date that parses is the server's
     now. */
  if (o->date && psk_parse_http_date(o->date, o->date_len, &v) == PSK_OK)
    server_now = (double)v;
  if (o->retry_after && psk_parse_retry_after(o->retry_after,
                                              o->retry_after_len, server_now,
                                              &ra) != PSK_INVALID) {
    /* too large: HUGE_VAL, a wait no caller allows */
    FUZZ_CHECK(reason == PSK_WAIT_RETRY_AFTER && wait == ra);
  } else if (o->reset &&
             psk_parse_uint(o->reset, o->reset_len, &v) == PSK_OK &&
             (double)v > server_now &&
             (double)v <= server_now + PSK_RESET_HORIZON) {
    FUZZ_CHECK(reason == PSK_WAIT_RATE_LIMIT);
    FUZZ_CHECK(wait > 0 && wait == (double)v - server_now);
  } else {
    FUZZ_CHECK(reason == PSK_WAIT_BACKOFF);
    FUZZ_CHECK(wait >= 0.5 && wait < 30 * 1.25);
    FUZZ_CHECK(wait == psk_backoff(attempt, jitter));
  }
}

/* Splits s at the first '\n': the field before it, the rest after it. */
static const char *field(const char **s, size_t *n, size_t *flen) {
  const char *f = *s, *nl = memchr(*s, '\n', *n);
  *flen = nl ? (size_t)(nl - f) : *n;
  *s += nl ? *flen + 1 : *flen;
  *n -= nl ? *flen + 1 : *flen;
  return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const long statuses[] = {0,   0,   200, 204, 400, 401, 404, 429,
                                  500, 501, 502, 503, 504, 599, 100, 429};
  double now, jitter;
  int attempt, flags, k;
  uint64_t bits, state;
  char *text;
  const char *p;
  size_t n;
  psk_outcome o;

  if (size < 13) return 0;
  memcpy(&bits, data, 8);
  memcpy(&now, data, 8);
  flags = data[12];
  /* Mostly clocks near today, sometimes any finite double. */
  if (!(flags & 0x80) || !isfinite(now))
    now = 1.7e9 + (double)(int32_t)(uint32_t)bits + (double)(bits >> 54) / 1024;
  memset(&o, 0, sizeof o);
  o.status = statuses[data[8] & 15];
  if (data[8] & 0x10) o.status = 100 + data[8] * 2; /* others up to 609 */
  o.kind = data[9] % 8;                             /* 7: not a kind */
  attempt = (int8_t)data[10];
  if (flags & 0x40) attempt *= 1 << 20; /* far past the 30 s cap */
  jitter = data[11] / 256.0;

  text = fz_dup(data + 13, size - 13);
  n = size - 13;
  check_parsers(text, n, now);

  p = text;
  for (k = 0; k < 3; k++) {
    size_t flen;
    const char *f = field(&p, &n, &flen);
    if (!(flags & (1 << k))) continue;
    if (k == 0) o.retry_after = f, o.retry_after_len = flen;
    if (k == 1) o.reset = f, o.reset_len = flen;
    if (k == 2) o.date = f, o.date_len = flen;
    check_parsers(f, flen, now);
  }
  check_plan(&o, attempt, now, jitter);

  {
    double b = psk_backoff(attempt, jitter);
    FUZZ_CHECK(b >= 0.5 && b < 37.5);
  }
  state = bits ? bits : 1;
  for (k = 0; k < 4; k++) {
    double r = psk_random(&state);
    FUZZ_CHECK(r >= 0 && r < 1 && state != 0);
  }
  free(text);
  return 0;
}
