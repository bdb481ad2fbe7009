/*
 * fuzz_request: the validators (message_id, phone, api_key, user_agent,
 * base_url), psk_percent_encode and psk_request_build on arbitrary bytes.
 *
 * Input: flags byte, two length bytes, then part A (base_url candidate),
 * part C (phone candidate) and part B (the rest: message_id, key, user
 * agent, bytes to encode). Length prefixes rather than separators, so a
 * mutation of one part leaves the others in place.
 *
 * The simple validators are checked against exact oracles written from
 * the contract (shared/API.md), not from psk_core.c; base_url, whose
 * grammar is larger, against properties: a prefix of the input, no
 * trailing '/', idempotent, and its host judged loopback by
 * psk_host_loopback exactly when the oracle below says so (which hosts
 * plain http may go to is decided on libcurl's reading of the host, by
 * the transport; the core's rule is the one it feeds that host to).
 */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_unreserved(unsigned char c) {
  return fz_is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static int is_upper_hex(unsigned char c) {
  return fz_is_digit(c) || (c >= 'A' && c <= 'F');
}

static int hexval(unsigned char c) {
  return fz_is_digit(c) ? c - '0' : c - 'A' + 10;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int ieq_prefix(const char *s, size_t n, const char *p) {
  size_t i, k = strlen(p);
  if (n < k) return 0;
  for (i = 0; i < k; i++)
    if (lower((unsigned char)s[i]) != p[i]) return 0;
  return 1;
}

/* A failed check fills a NUL-terminated "must ..." message (what is
   accepted, never the value). */
static void check_err(const psk_err *e) {
  FUZZ_CHECK(memchr(e->msg, '\0', sizeof e->msg) != NULL);
  FUZZ_CHECK(strncmp(e->msg, "must", 4) == 0);
}

static void check_simple(const char *s, size_t n) {
  psk_err e;
  int ctl = fz_has_ctl(s, n);
  int dots = (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
  int want;

  want = n >= 1 && n <= PSK_MESSAGE_ID_MAX && !ctl && !dots;
  e.msg[0] = 'x';
  FUZZ_CHECK((psk_check_message_id(s, n, &e) == PSK_OK) == want);
  if (!want) check_err(&e);

  want = n >= 1 && n <= PSK_API_KEY_MAX && !ctl;
  FUZZ_CHECK((psk_check_api_key(s, n, &e) == PSK_OK) == want);
  if (!want) check_err(&e);

  want = n >= 1 && n <= PSK_USER_AGENT_MAX && !ctl;
  FUZZ_CHECK((psk_check_user_agent(s, n, &e) == PSK_OK) == want);
  if (!want) check_err(&e);
}

/* The phone rule of the contract, written out: "phone-" + letters and
   digits, as is (at most PSK_PHONE_MAX bytes); else spaces, '+', '-', '(',
   ')' and '.' removed, then 7 to 15 digits. */
static int phone_oracle(const char *s, size_t n, char *want) {
  size_t i, k = 0;
  if (n > 6 && memcmp(s, "phone-", 6) == 0) {
    if (n > PSK_PHONE_MAX) return 0;
    for (i = 6; i < n; i++)
      if (!fz_is_alnum((unsigned char)s[i])) return 0;
    memcpy(want, s, n);
    want[n] = '\0';
    return 1;
  }
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (strchr(" +-().", c) && c) continue;
    if (!fz_is_digit(c) || k == 15) return 0;
    want[k++] = (char)c;
  }
  want[k] = '\0';
  return k >= 7;
}

/* Normalizes the phone into an exact-size heap buffer (an overflow is an
   ASan report) and checks it against the oracle. Returns 1 and fills out
   when accepted. */
static int check_phone(const char *s, size_t n, char out[PSK_PHONE_MAX + 1]) {
  psk_err e;
  char want[PSK_PHONE_MAX + 1];
  char *got = malloc(PSK_PHONE_MAX + 1);
  int ok, oracle = phone_oracle(s, n, want);
  size_t i, len;
  if (!got) abort();
  ok = psk_normalize_phone(s, n, got, &e) == PSK_OK;
  FUZZ_CHECK(ok == oracle);
  if (ok) {
    len = strlen(got);
    FUZZ_CHECK(strcmp(got, want) == 0);
    if (len >= 6 && memcmp(got, "phone-", 6) == 0) {
      FUZZ_CHECK(len > 6 && len <= PSK_PHONE_MAX);
      for (i = 6; i < len; i++) FUZZ_CHECK(fz_is_alnum((unsigned char)got[i]));
    } else {
      FUZZ_CHECK(len >= 7 && len <= 15);
      for (i = 0; i < len; i++) FUZZ_CHECK(fz_is_digit((unsigned char)got[i]));
    }
    memcpy(out, got, len + 1);
  } else {
    check_err(&e);
  }
  free(got);
  return ok;
}

/* Whether host h is a loopback host that plain http may go to, written
   as libcurl writes one: 127.x.y.z in decimal without leading zeros,
   localhost or [::1]. */
static int loopback_host(const char *h, size_t n) {
  int octet = 0, first = -1, v = 0, digits = 0;
  size_t i;
  if (n == 9 && ieq_prefix(h, n, "localhost")) return 1;
  if (n == 5 && ieq_prefix(h, n, "[::1]")) return 1;
  for (i = 0; i <= n; i++) {
    if (i == n || h[i] == '.') {
      if (!digits || v > 255) return 0;
      if (octet == 0) first = v;
      octet++;
      v = digits = 0;
    } else if (fz_is_digit((unsigned char)h[i])) {
      if (digits == 1 && v == 0) return 0; /* a leading zero */
      v = v * 10 + (h[i] - '0');
      if (++digits > 3) return 0;
    } else {
      return 0;
    }
  }
  return octet == 4 && first == 127;
}

/* Checks psk_normalize_base_url on s; returns 1 and leaves the result in
   out when accepted. */
static int check_base_url(const char *s, size_t n, psk_buf *out) {
  psk_err e;
  psk_buf again;
  const char *u, *host, *he;
  size_t len, i, skip;
  int https;
  if (psk_normalize_base_url(s, n, out, &e) != PSK_OK) {
    FUZZ_CHECK(out->len == 0); /* cleared, nothing half-written */
    check_err(&e);
    return 0;
  }
  u = psk_buf_cstr(out);
  len = out->len;
  FUZZ_CHECK(len <= n && len <= PSK_BASE_URL_MAX);
  FUZZ_CHECK(memcmp(u, s, len) == 0); /* only a trailing '/' goes */
  for (i = len; i < n; i++) FUZZ_CHECK(s[i] == '/');
  FUZZ_CHECK(u[len - 1] != '/');
  https = ieq_prefix(u, len, "https://");
  FUZZ_CHECK(https || ieq_prefix(u, len, "http://"));
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)u[i];
    FUZZ_CHECK(!fz_is_ctl(c) && c < 0x80);
    FUZZ_CHECK(c != '?' && c != '#' && c != ' ' && c != '\\');
  }
  /* The authority: no user info, and a host the core's loopback rule
     judges as the oracle does. */
  skip = https ? 8 : 7;
  host = u + skip;
  he = memchr(host, '/', len - skip);
  if (!he) he = u + len;
  FUZZ_CHECK(memchr(host, '@', (size_t)(he - host)) == NULL);
  if (host[0] == '[') {
    const char *rb = memchr(host, ']', (size_t)(he - host));
    FUZZ_CHECK(rb != NULL);
    he = rb + 1;
  } else {
    const char *colon = memchr(host, ':', (size_t)(he - host));
    if (colon) he = colon;
  }
  FUZZ_CHECK(he > host);
  FUZZ_CHECK(psk_host_loopback(host, (size_t)(he - host)) ==
             loopback_host(host, (size_t)(he - host)));
  /* Idempotent: the normalized URL is accepted and left as it is. */
  psk_buf_init(&again, PSK_BASE_URL_MAX);
  FUZZ_CHECK(psk_normalize_base_url(u, len, &again, &e) == PSK_OK);
  FUZZ_CHECK(again.len == len && memcmp(psk_buf_cstr(&again), u, len) == 0);
  psk_buf_free(&again);
  return 1;
}

/* Encodes s; checks the alphabet and that decoding gives s back. */
static void check_encode(const char *s, size_t n) {
  psk_buf b;
  const char *o;
  size_t i, j = 0, special = 0;
  psk_buf_init(&b, 3 * n + 16);
  FUZZ_CHECK(psk_percent_encode(&b, s, n) == PSK_OK);
  for (i = 0; i < n; i++) special += !is_unreserved((unsigned char)s[i]);
  FUZZ_CHECK(b.len == n + 2 * special);
  o = psk_buf_cstr(&b);
  for (i = 0; i < b.len; j++) {
    unsigned char c = (unsigned char)o[i];
    FUZZ_CHECK(j < n);
    if (c == '%') {
      FUZZ_CHECK(i + 2 < b.len);
      FUZZ_CHECK(is_upper_hex((unsigned char)o[i + 1]));
      FUZZ_CHECK(is_upper_hex((unsigned char)o[i + 2]));
      FUZZ_CHECK((unsigned char)s[j] ==
                 hexval((unsigned char)o[i + 1]) * 16 +
                     hexval((unsigned char)o[i + 2]));
      /* Unreserved bytes are never escaped (RFC 3986 2.3). */
      FUZZ_CHECK(!is_unreserved((unsigned char)s[j]));
      i += 3;
    } else {
      FUZZ_CHECK(is_unreserved(c));
      FUZZ_CHECK((unsigned char)s[j] == c);
      i++;
    }
  }
  FUZZ_CHECK(j == n);
  psk_buf_free(&b);
}

static int no_crlf_ctl(const char *s) {
  for (; *s; s++)
    if (fz_is_ctl((unsigned char)*s)) return 0;
  return 1;
}

/* Builds the request the binding would and checks every part of it. */
static void check_request(int flags, const char *base, const char *id,
                          size_t idlen, const char *key, size_t keylen,
                          const char *cfg_phone, const char *call_phone) {
  static const int times[] = {0, 1, 7, 30};
  psk_config c;
  psk_request r;
  psk_buf want;
  int pin = flags & 1, time = times[(flags >> 1) & 3], i, seen_phone = 0;
  const char *phone = call_phone ? call_phone : cfg_phone;
  char body[40];

  memset(&c, 0, sizeof c);
  c.auth = malloc(keylen + 8);
  if (!c.auth) abort();
  memcpy(c.auth, "Bearer ", 7);
  memcpy(c.auth + 7, key, keylen);
  c.auth[keylen + 7] = '\0';
  c.base_url = fz_strdup(base);
  c.user_agent = fz_strdup("periskope-lua/fuzz");
  c.phone = cfg_phone ? fz_strdup(cfg_phone) : NULL;

  psk_request_init(&r);
  FUZZ_CHECK(psk_request_build(&r, &c, id, idlen, pin, time, call_phone) ==
             PSK_OK);

  /* URL: base + "/message/" + encoded id + "/pin", nothing else. */
  psk_buf_init(&want, (size_t)-1);
  if (psk_buf_addstr(&want, base) || psk_buf_addstr(&want, "/message/") ||
      psk_percent_encode(&want, id, idlen) || psk_buf_addstr(&want, "/pin"))
    abort();
  FUZZ_CHECK(r.url.len == want.len &&
             memcmp(psk_buf_cstr(&r.url), psk_buf_cstr(&want), want.len) == 0);
  FUZZ_CHECK(strlen(psk_buf_cstr(&r.url)) == r.url.len);
  FUZZ_CHECK(no_crlf_ctl(psk_buf_cstr(&r.url)));
  psk_buf_free(&want);

  if (pin && time)
    snprintf(body, sizeof body, "{\"pin\":true,\"time\":%d}", time);
  else
    snprintf(body, sizeof body, "%s", pin ? "{\"pin\":true}" : "{\"pin\":false}");
  FUZZ_CHECK(strcmp(psk_buf_cstr(&r.body), body) == 0);

  FUZZ_CHECK(r.nheaders == (phone ? 5 : 4));
  for (i = 0; i < r.nheaders; i++) {
    const psk_hdr *h = &r.headers[i];
    FUZZ_CHECK(h->name && h->value);
    FUZZ_CHECK(no_crlf_ctl(h->name) && no_crlf_ctl(h->value));
    if (strcmp(h->name, "Authorization") == 0) {
      FUZZ_CHECK(strcmp(h->value, c.auth) == 0);
    } else if (strcmp(h->name, "x-phone") == 0) {
      seen_phone = 1;
      FUZZ_CHECK(phone && strcmp(h->value, phone) == 0);
    } else if (strcmp(h->name, "User-Agent") == 0) {
      FUZZ_CHECK(strcmp(h->value, c.user_agent) == 0);
    } else {
      FUZZ_CHECK(strcmp(h->name, "Content-Type") == 0 ||
                 strcmp(h->name, "Accept") == 0);
      FUZZ_CHECK(strcmp(h->value, "application/json") == 0);
    }
  }
  FUZZ_CHECK(seen_phone == (phone != NULL));

  psk_request_free(&r);
  psk_request_free(&r); /* release is idempotent */
  psk_config_free(&c);
  psk_config_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t la, lc, lb;
  char *a, *b, *c;
  char phone[PSK_PHONE_MAX + 1], scratch[PSK_PHONE_MAX + 1];
  psk_buf url;
  int flags, have_phone, have_url;
  if (size < 3) return 0;
  flags = data[0];
  la = data[1];
  lc = data[2];
  data += 3;
  size -= 3;
  /* The two length bytes reach 255; base_url and phone rarely need more,
     and flags bit 7 multiplies A's length by 16 to reach the 2 KiB cap. */
  if (flags & 0x80) la *= 16;
  if (la > size) la = size;
  if (lc > size - la) lc = size - la;
  lb = size - la - lc;
  a = fz_dup(data, la);
  c = fz_dup(data + la, lc);
  b = fz_dup(data + la + lc, lb);

  check_simple(a, la);
  check_simple(b, lb);
  check_simple(c, lc);
  check_encode(b, lb);
  check_encode(a, la);

  have_phone = check_phone(c, lc, phone);
  (void)check_phone(b, lb, scratch);
  psk_buf_init(&url, PSK_BASE_URL_MAX);
  have_url = check_base_url(a, la, &url);
  {
    psk_buf other;
    psk_buf_init(&other, PSK_BASE_URL_MAX);
    (void)check_base_url(b, lb, &other);
    psk_buf_free(&other);
  }

  if (psk_check_message_id(b, lb, NULL) == PSK_OK) {
    const char *base = have_url ? psk_buf_cstr(&url) : PSK_DEFAULT_BASE_URL;
    /* The key: part A when it is a valid one, else a fixed one. */
    int key_ok = psk_check_api_key(a, la, NULL) == PSK_OK;
    check_request(flags, base, b, lb, key_ok ? a : "k", key_ok ? la : 1,
                  have_phone && (flags & 8) ? phone : NULL,
                  have_phone && (flags & 16) ? phone : NULL);
  }

  psk_buf_free(&url);
  free(a);
  free(b);
  free(c);
  return 0;
}
