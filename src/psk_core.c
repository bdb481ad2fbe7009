/*
 * psk_core: validation, request building and response parsing for a pin.
 * Plain C99; must not include lua.h or curl.h (see psk_core.h).
 */
#include "psk_core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const psk_kind_names[] = {
    "none",      "timeout",      "connect",     "resolve",
    "tls",       "network",      "too_large",   "rate_limited",
    "unavailable", "closed",     "cancelled"};

const char *const psk_wait_reasons[] = {"retry-after", "rate-limit",
                                        "backoff"};

static int fail(psk_err *e, const char *msg) {
  if (e) snprintf(e->msg, sizeof e->msg, "%s", msg);
  return PSK_INVALID;
}

static int is_ctl(unsigned char c) { return c < 0x20 || c == 0x7f; }

int psk_has_ctl(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (is_ctl((unsigned char)s[i])) return 1;
  return 0;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int is_alpha(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alnum(unsigned char c) { return is_digit(c) || is_alpha(c); }

static unsigned char lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int ieq(const char *a, size_t n, const char *b) {
  size_t i;
  if (strlen(b) != n) return 0;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
  return 1;
}

/* ---- validation ---- */

int psk_check_api_key(const char *s, size_t n, psk_err *e) {
  if (n == 0 || n > PSK_API_KEY_MAX)
    return fail(e, "must be a string of 1 to 4096 bytes");
  if (psk_has_ctl(s, n)) return fail(e, "must not contain control bytes");
  return PSK_OK;
}

int psk_check_user_agent(const char *s, size_t n, psk_err *e) {
  if (n == 0 || n > PSK_USER_AGENT_MAX)
    return fail(e, "must be a string of 1 to 1024 bytes");
  if (psk_has_ctl(s, n)) return fail(e, "must not contain control bytes");
  return PSK_OK;
}

int psk_check_message_id(const char *s, size_t n, psk_err *e) {
  if (n == 0 || n > PSK_MESSAGE_ID_MAX)
    return fail(e, "must be a string of 1 to 1024 bytes");
  if (psk_has_ctl(s, n)) return fail(e, "must not contain control bytes");
  if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
    return fail(e, "must not be '.' or '..'");
  return PSK_OK;
}

#define PHONE_RULE                                                          \
  "must be 7 to 15 digits (spaces, '+', '-', '(', ')' and '.' are removed) " \
  "or a phone id 'phone-<letters and digits>'"

int psk_normalize_phone(const char *s, size_t n, char *out, psk_err *e) {
  size_t i, k = 0;
  if (n > 6 && memcmp(s, "phone-", 6) == 0) {
    if (n > PSK_PHONE_MAX) return fail(e, PHONE_RULE);
    for (i = 6; i < n; i++)
      if (!is_alnum((unsigned char)s[i])) return fail(e, PHONE_RULE);
    memcpy(out, s, n);
    out[n] = '\0';
    return PSK_OK;
  }
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == ' ' || c == '+' || c == '-' || c == '(' || c == ')' || c == '.')
      continue;
    if (!is_digit(c) || k == 15) return fail(e, PHONE_RULE);
    out[k++] = (char)c;
  }
  if (k < 7) return fail(e, PHONE_RULE);
  out[k] = '\0';
  return PSK_OK;
}

/* A dotted quad of decimal octets, as libcurl writes an IPv4 address
   (no leading zero: "09" is no octal number, and "127.0.0.09" a name),
   whose first octet is 127. */
static int is_loopback_v4(const char *h, size_t n) {
  int octets = 0, first = -1;
  size_t i = 0;
  while (i < n) {
    int v = 0, digits = 0;
    if (h[i] == '0' && i + 1 < n && is_digit((unsigned char)h[i + 1]))
      return 0;
    while (i < n && is_digit((unsigned char)h[i])) {
      v = v * 10 + (h[i] - '0');
      if (++digits > 3 || v > 255) return 0;
      i++;
    }
    if (!digits) return 0;
    if (octets == 0) first = v;
    octets++;
    if (i < n) {
      if (h[i] != '.' || i + 1 == n) return 0;
      i++;
    }
  }
  return octets == 4 && first == 127;
}

static int host_char(unsigned char c) {
  return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '%';
}

int psk_host_loopback(const char *h, size_t n) {
  return is_loopback_v4(h, n) || ieq(h, n, "localhost") || ieq(h, n, "[::1]");
}

#define URL_RULE                                                         \
  "must be an http or https URL with a host and no user, query or "      \
  "fragment (plain http only to 127.0.0.0/8, ::1 or localhost)"

int psk_normalize_base_url(const char *s, size_t n, psk_buf *out,
                           psk_err *e) {
  size_t i, hs, he, ps;
  psk_buf_clear(out);
  if (n == 0 || n > PSK_BASE_URL_MAX || psk_has_ctl(s, n)) return fail(e, URL_RULE);
  if (n > 8 && ieq(s, 8, "https://"))
    i = 8;
  else if (n > 7 && ieq(s, 7, "http://"))
    i = 7;
  else
    return fail(e, URL_RULE);
  hs = i;
  if (s[i] == '[') { /* IPv6 literal */
    while (i < n && s[i] != ']') {
      unsigned char c = (unsigned char)s[i];
      if (i > hs && !(is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'f') ||
                      c == ':' || c == '.'))
        return fail(e, URL_RULE);
      i++;
    }
    if (i == n || i == hs + 1) return fail(e, URL_RULE);
    i++; /* past ']' */
  } else {
    while (i < n && host_char((unsigned char)s[i])) i++;
  }
  he = i;
  if (he == hs) return fail(e, URL_RULE);
  if (i < n && s[i] == ':') {
    long port = 0;
    size_t d = ++i;
    while (i < n && is_digit((unsigned char)s[i])) {
      port = port * 10 + (s[i] - '0');
      if (port > 65535) return fail(e, URL_RULE);
      i++;
    }
    if (i == d || port == 0) return fail(e, URL_RULE);
  }
  ps = i;
  if (i < n && s[i] != '/') return fail(e, URL_RULE); /* '@', '?', ... */
  for (; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '?' || c == '#' || c == ' ' || c >= 0x80 || c == '\\')
      return fail(e, URL_RULE);
  }
  while (n > ps && s[n - 1] == '/') n--; /* a trailing '/' is fine */
  return psk_buf_append(out, s, n);
}

int psk_check_time(long long days, psk_err *e) {
  if (days == 1 || days == 7 || days == 30) return PSK_OK;
  return fail(e, "must be 1, 7 or 30");
}

/* ---- the request ---- */

int psk_percent_encode(psk_buf *out, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  size_t i = 0;
  while (i < n) {
    size_t run = i;
    int st;
    /* A run of bytes that stay as they are goes in one append. */
    while (run < n && (is_alnum((unsigned char)s[run]) || s[run] == '-' ||
                       s[run] == '.' || s[run] == '_' || s[run] == '~'))
      run++;
    if (run > i && (st = psk_buf_append(out, s + i, run - i)) != PSK_OK)
      return st;
    if (run < n) {
      unsigned char c = (unsigned char)s[run];
      char esc[3];
      esc[0] = '%';
      esc[1] = hex[c >> 4];
      esc[2] = hex[c & 15];
      if ((st = psk_buf_append(out, esc, 3)) != PSK_OK) return st;
      run++;
    }
    i = run;
  }
  return PSK_OK;
}

size_t psk_url_path_offset(const char *url) {
  const char *p = strstr(url, "://");
  const char *slash = p ? strchr(p + 3, '/') : NULL;
  return slash ? (size_t)(slash - url) : strlen(url);
}

void psk_config_free(psk_config *c) {
  free(c->auth);
  free(c->phone);
  free(c->base_url);
  free(c->user_agent);
  free(c->ca_file);
  c->auth = c->phone = c->base_url = c->user_agent = c->ca_file = NULL;
}

void psk_request_init(psk_request *r) {
  psk_buf_init(&r->url, PSK_BASE_URL_MAX + 3 * PSK_MESSAGE_ID_MAX + 64);
  psk_buf_init(&r->body, 64);
  r->target = 0;
  r->phone[0] = '\0';
  r->nheaders = 0;
}

void psk_request_free(psk_request *r) {
  psk_buf_free(&r->url);
  psk_buf_free(&r->body);
  r->nheaders = 0;
}

int psk_request_build(psk_request *r, const psk_config *c, const char *id,
                      size_t idlen, int pin, int time, const char *phone) {
  int st;
  psk_buf_clear(&r->url);
  psk_buf_clear(&r->body);
  if ((st = psk_buf_addstr(&r->url, c->base_url)) != PSK_OK ||
      (st = psk_buf_addstr(&r->url, "/message/")) != PSK_OK ||
      (st = psk_percent_encode(&r->url, id, idlen)) != PSK_OK ||
      (st = psk_buf_addstr(&r->url, "/pin")) != PSK_OK)
    return st;
  r->target = psk_url_path_offset(c->base_url);
  if (pin && time) {
    char body[32];
    snprintf(body, sizeof body, "{\"pin\":true,\"time\":%d}", time);
    st = psk_buf_addstr(&r->body, body);
  } else {
    st = psk_buf_addstr(&r->body, pin ? "{\"pin\":true}" : "{\"pin\":false}");
  }
  if (st != PSK_OK) return st;
  if (!phone) phone = c->phone;
  {
    /* Normalized phones fit; a longer one is cut, never overrun. */
    size_t pn = phone ? strlen(phone) : 0;
    if (pn >= sizeof r->phone) pn = sizeof r->phone - 1;
    memcpy(r->phone, phone ? phone : "", pn);
    r->phone[pn] = '\0';
  }
  r->nheaders = 0;
  r->headers[r->nheaders].name = "Authorization";
  r->headers[r->nheaders++].value = c->auth;
  if (r->phone[0]) {
    r->headers[r->nheaders].name = "x-phone";
    r->headers[r->nheaders++].value = r->phone;
  }
  r->headers[r->nheaders].name = "Content-Type";
  r->headers[r->nheaders++].value = "application/json";
  r->headers[r->nheaders].name = "Accept";
  r->headers[r->nheaders++].value = "application/json";
  r->headers[r->nheaders].name = "User-Agent";
  r->headers[r->nheaders++].value = c->user_agent;
  return PSK_OK;
}

/* ---- the response ---- */

static int is_tchar(unsigned char c) {
  return is_alnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

int psk_header_field(const char *line, size_t n, size_t name_len,
                     psk_header *h) {
  const char *v = line + name_len + 1, *ve = line + n;
  if (ve > v && ve[-1] == '\r') ve--;
  /* RFC 9110 5.5: a field with a CR (bare, or doubled before the LF) or
     a NUL in it is invalid; drop it rather than hand the byte on. */
  if (memchr(v, '\r', (size_t)(ve - v)) || memchr(v, '\0', (size_t)(ve - v)))
    return 0;
  while (v < ve && is_ows(*v)) v++;
  while (ve > v && is_ows(ve[-1])) ve--;
  h->name = line;
  h->name_len = name_len;
  h->value = v;
  h->value_len = (size_t)(ve - v);
  return 1;
}

int psk_header_next(const char *head, size_t len, size_t *pos, psk_header *h) {
  while (*pos < len) {
    const char *line = head + *pos, *eol, *colon;
    size_t n, i;
    eol = memchr(line, '\n', len - *pos);
    n = eol ? (size_t)(eol - line) : len - *pos;
    *pos += eol ? n + 1 : n;
    /* n is 0 for an empty line, which cppcheck rules out. */
    /* cppcheck-suppress knownConditionTrueFalse */
    if (n == 0 || is_ows(line[0])) continue; /* blank or obs-fold */
    colon = memchr(line, ':', n);
    if (!colon || colon == line) continue; /* status line or junk */
    for (i = 0; line + i < colon; i++)
      if (!is_tchar((unsigned char)line[i])) break;
    if (line + i != colon) continue;
    if (psk_header_field(line, n, i, h)) return 1;
  }
  return 0;
}

/* Whether s[a, e) holds no CR and no NUL. */
static int clean(const char *s, size_t a, size_t e) {
  return !memchr(s + a, '\r', e - a) && !memchr(s + a, '\0', e - a);
}

size_t psk_head_unfold(char *head, size_t len) {
  size_t r = 0, w = 0, line = 0;
  size_t prev_start = 0, prev_end = 0; /* the last line written */
  /* It may take a continuation: not the status line (a fold there is not
     part of any field), not the blank line that ends the head, and
     without a bare CR or a NUL, which make a field invalid (the walk
     drops it): joined, a CR before trimmed whitespace would turn into a
     line end, and the invalid field into a valid one. */
  int prev_field = 0;
  while (r < len) {
    const char *nl = memchr(head + r, '\n', len - r);
    size_t next = nl ? (size_t)(nl - head) + 1 : len;
    size_t end = nl ? next - 1 : len; /* content ends before the LF ... */
    if (nl && end > r && head[end - 1] == '\r') end--; /* ... and its CR */
    if (prev_field && end > r && is_ows(head[r])) {
      /* A fold: the previous line's end and the whitespace around it
         become one space (none when the continuation is empty). */
      size_t a = r;
      while (a < end && is_ows(head[a])) a++;
      prev_field = clean(head, a, end);
      w = prev_end;
      while (w > prev_start && is_ows(head[w - 1])) w--;
      if (a < end) {
        head[w++] = ' ';
        memmove(head + w, head + a, end - a);
        w += end - a;
      }
      prev_end = w;
      memmove(head + w, head + end, next - end); /* this line's end */
      w += next - end;
    } else {
      prev_field = line > 0 && end > r && clean(head, r, end);
      if (w != r) memmove(head + w, head + r, next - r);
      prev_start = w;
      prev_end = w + (end - r);
      w += next - r;
      line++;
    }
    r = next;
  }
  return w;
}

int psk_parse_uint(const char *s, size_t n, long long *out) {
  size_t i = 0;
  long long v = 0;
  int digits = 0;
  while (i < n && is_ows(s[i])) i++;
  while (i < n && is_digit((unsigned char)s[i])) {
    if (v > (PSK_MAX_SAFE_INT - (s[i] - '0')) / 10) return PSK_INVALID;
    v = v * 10 + (s[i] - '0');
    digits++;
    i++;
  }
  while (i < n && is_ows(s[i])) i++;
  if (!digits || i != n) return PSK_INVALID;
  *out = v;
  return PSK_OK;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static long long days_from_civil(long long y, int m, int d) {
  long long era, yoe, doy, doe;
  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = y - era * 400;
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

/* A fixed-width decimal field of exactly w digits. */
static int num(const char *s, size_t n, size_t *i, int w, int *out) {
  int v = 0, k;
  if (*i + (size_t)w > n) return 0;
  for (k = 0; k < w; k++) {
    unsigned char c = (unsigned char)s[*i + (size_t)k];
    if (!is_digit(c)) return 0;
    v = v * 10 + (c - '0');
  }
  *i += (size_t)w;
  *out = v;
  return 1;
}

static int lit(const char *s, size_t n, size_t *i, const char *l) {
  size_t k = strlen(l);
  if (*i + k > n || memcmp(s + *i, l, k) != 0) return 0;
  *i += k;
  return 1;
}

static int month(const char *s, size_t n, size_t *i, int *m) {
  static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  int k;
  if (*i + 3 > n) return 0;
  for (k = 0; k < 12; k++)
    if (memcmp(s + *i, names + 3 * k, 3) == 0) {
      *m = k + 1;
      *i += 3;
      return 1;
    }
  return 0;
}

/* "HH:MM:SS" */
static int clock_time(const char *s, size_t n, size_t *i, int *hh, int *mm,
                      int *ss) {
  return num(s, n, i, 2, hh) && lit(s, n, i, ":") && num(s, n, i, 2, mm) &&
         lit(s, n, i, ":") && num(s, n, i, 2, ss);
}

int psk_parse_http_date(const char *s, size_t n, long long *out) {
  size_t i = 0;
  int d = 0, m = 0, y = 0, hh = 0, mm = 0, ss = 0, ok = 0;
  while (n && is_ows(s[n - 1])) n--;
  while (i < n && is_ows(s[i])) i++;
  while (i < n && is_alpha((unsigned char)s[i])) i++; /* day name */
  if (i < n && s[i] == ',') {
    i++;
    if (lit(s, n, &i, " ") && num(s, n, &i, 2, &d)) {
      if (i < n && s[i] == ' ') { /* IMF-fixdate: 06 Nov 1994 08:49:37 GMT */
        ok = lit(s, n, &i, " ") && month(s, n, &i, &m) &&
             lit(s, n, &i, " ") && num(s, n, &i, 4, &y) &&
             lit(s, n, &i, " ") && clock_time(s, n, &i, &hh, &mm, &ss) &&
             lit(s, n, &i, " GMT");
      } else { /* RFC 850: 06-Nov-94 08:49:37 GMT */
        ok = lit(s, n, &i, "-") && month(s, n, &i, &m) &&
             lit(s, n, &i, "-") && num(s, n, &i, 2, &y) &&
             lit(s, n, &i, " ") && clock_time(s, n, &i, &hh, &mm, &ss) &&
             lit(s, n, &i, " GMT");
        y += y < 70 ? 2000 : 1900;
      }
    }
  } else { /* asctime: Nov  6 08:49:37 1994 */
    ok = lit(s, n, &i, " ") && month(s, n, &i, &m) && lit(s, n, &i, " ");
    if (ok) {
      if (i < n && s[i] == ' ') {
        i++;
        ok = num(s, n, &i, 1, &d);
      } else {
        ok = num(s, n, &i, 2, &d);
      }
      ok = ok && lit(s, n, &i, " ") && clock_time(s, n, &i, &hh, &mm, &ss) &&
           lit(s, n, &i, " ") && num(s, n, &i, 4, &y);
    }
  }
  if (!ok || i != n || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60)
    return PSK_INVALID;
  {
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[m - 1] || (m == 2 && d == 29 && !leap)) return PSK_INVALID;
  }
  *out = days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss;
  return PSK_OK;
}

/* Whether s is a number too large for a wait: OWS, then digits past 2^53
   - 1 (psk_parse_uint refused them), or a decimal number in exponent form
   (1e308, 2.5E+20) of at least 1e16, then OWS. Exponent forms below that
   are not delay-seconds and stay invalid. */
static int number_too_large(const char *s, size_t n) {
  size_t i = 0, j, k, lead = 0;
  long exp = 0, mag;
  int neg = 0, int_digits = 0;
  while (n && is_ows(s[n - 1])) n--;
  while (i < n && is_ows(s[i])) i++;
  for (j = i; j < n && is_digit((unsigned char)s[j]); j++) {
    if (int_digits == 0 && s[j] == '0') continue; /* leading zeros */
    int_digits++;
  }
  if (j == i) return 0;
  if (j == n) return 1; /* digits only, and too many for psk_parse_uint */
  if (s[j] != '.' && int_digits == 0) return 0; /* zero, whatever follows */
  if (s[j] == '.') {
    k = ++j;
    while (j < n && is_digit((unsigned char)s[j])) j++;
    if (j == k) return 0;
    if (int_digits == 0) /* 0.000123e20: count the zeros before the 1 */
      while (k + lead < j && s[k + lead] == '0') lead++;
    if (int_digits == 0 && k + lead == j) return 0; /* zero */
  }
  if (j == n || (s[j] != 'e' && s[j] != 'E')) return 0;
  j++;
  if (j < n && (s[j] == '+' || s[j] == '-')) neg = s[j++] == '-';
  k = j;
  for (; j < n && is_digit((unsigned char)s[j]); j++)
    if (exp < 100000) exp = exp * 10 + (s[j] - '0');
  if (j == k || j != n) return 0;
  if (neg) exp = -exp;
  /* The decimal exponent of the value's leading digit. */
  mag = int_digits ? (long)int_digits - 1 + exp : exp - (long)lead - 1;
  return mag >= 16;
}

int psk_parse_retry_after(const char *s, size_t n, double server_now,
                          double *wait) {
  long long v;
  if (psk_parse_uint(s, n, &v) == PSK_OK) {
    *wait = (double)v;
    return PSK_OK;
  }
  if (number_too_large(s, n)) {
    *wait = HUGE_VAL;
    return PSK_TOO_LARGE;
  }
  if (psk_parse_http_date(s, n, &v) == PSK_OK) {
    double w = (double)v - server_now;
    *wait = w > 0 ? w : 0;
    return PSK_OK;
  }
  return PSK_INVALID;
}

/* ---- retries ---- */

int psk_status_retryable(long status) {
  return status == 429 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

int psk_kind_retryable(int kind) {
  return kind == PSK_KIND_TIMEOUT || kind == PSK_KIND_CONNECT ||
         kind == PSK_KIND_NETWORK;
}

int psk_kind_unanswered(int kind) {
  return psk_kind_retryable(kind) || kind == PSK_KIND_RESOLVE;
}

double psk_backoff(int attempt, double jitter) {
  double base = 0.5;
  int k;
  for (k = 1; k < attempt && base < 30; k++) base *= 2;
  if (base > 30) base = 30;
  return base * (1 + jitter / 4);
}

int psk_retry_plan(const psk_outcome *o, int attempt, double local_now,
                   double jitter, double *wait, int *reason) {
  double server_now = local_now;
  long long v;
  if (o->status ? !psk_status_retryable(o->status)
                : !psk_kind_retryable(o->kind))
    return 0;
  /* X-RateLimit-Reset is on the server's clock: measure against Date. */
  if (o->date && psk_parse_http_date(o->date, o->date_len, &v) == PSK_OK)
    server_now = (double)v;
  if (o->retry_after) {
    int st = psk_parse_retry_after(o->retry_after, o->retry_after_len,
                                   server_now, wait);
    if (st == PSK_OK || st == PSK_TOO_LARGE) { /* too large: HUGE_VAL */
      *reason = PSK_WAIT_RETRY_AFTER;
      return 1;
    }
  }
  if (o->reset && psk_parse_uint(o->reset, o->reset_len, &v) == PSK_OK &&
      (double)v > server_now &&
      (double)v <= server_now + PSK_RESET_HORIZON) {
    *wait = (double)v - server_now;
    *reason = PSK_WAIT_RATE_LIMIT;
    return 1;
  }
  *wait = psk_backoff(attempt, jitter);
  *reason = PSK_WAIT_BACKOFF;
  return 1;
}


double psk_random(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}
