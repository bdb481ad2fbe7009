/*
 * check_core: tests of the pure C parts of periskope, without Lua or
 * libcurl: the core (psk_core: validation, the request, header, date and
 * Retry-After parsing, the retry plan), the HTTP/1.1 request framer and
 * response reader (psk_h1), the bounded buffer (psk_buf), the
 * pacing budget, its store operation and the server clock (psk_pace), and
 * the clocks (psk_time) and the size checks on Redis's replies
 * (psk_resp). Run under ASan/UBSan by `make check-core`.
 * Expectations come from shared/API.md (the contract) and the header
 * comments, not from the implementation.
 *
 * Inputs are passed to the functions under test as exact-length heap
 * copies without a terminating NUL (xdup), so that any read past the
 * given length is caught by AddressSanitizer.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psk_buf.h"
#include "psk_core.h"
#include "psk_h1.h"
#include "psk_pace.h"
#include "psk_resp.h"
#include "psk_time.h"

#include "h1_res.h"

/* ---- the checker ---- */

static int g_pass, g_fail;

static void check_(int ok, const char *file, int line, const char *expr,
                   long long idx) {
  if (ok) {
    g_pass++;
    return;
  }
  g_fail++;
  if (idx >= 0)
    fprintf(stderr, "%s:%d: FAIL: %s  [i=%lld]\n", file, line, expr, idx);
  else
    fprintf(stderr, "%s:%d: FAIL: %s\n", file, line, expr);
}

/* CHECK(cond); CHECKI(cond, i) also names the loop index on failure. */
#define CHECK(cond) check_((cond) ? 1 : 0, __FILE__, __LINE__, #cond, -1)
#define CHECKI(cond, i) \
  check_((cond) ? 1 : 0, __FILE__, __LINE__, #cond, (long long)(i))

static void check_str_(const char *got, const char *want, const char *file,
                       int line, const char *expr) {
  int ok = got && want && strcmp(got, want) == 0;
  check_(ok, file, line, expr, -1);
  if (!ok)
    fprintf(stderr, "    got:  \"%s\"\n    want: \"%s\"\n",
            got ? got : "(null)", want ? want : "(null)");
}

/* CHECK_STR(got, want): string equality, printing both on failure. */
#define CHECK_STR(got, want) \
  check_str_((got), (want), __FILE__, __LINE__, #got " == " #want)

/* A string literal as (pointer, length), embedded NULs included. */
#define S(lit) lit, (sizeof(lit) - 1)

/* An exact-length heap copy, not NUL-terminated. */
static char *xdup(const char *s, size_t n) {
  char *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "check_core: out of memory\n");
    exit(2);
  }
  if (n) memcpy(p, s, n);
  return p;
}

static char *filled(char c, size_t n) {
  char *p = malloc(n + 1);
  if (!p) {
    fprintf(stderr, "check_core: out of memory\n");
    exit(2);
  }
  memset(p, c, n);
  p[n] = '\0';
  return p;
}

/* A failed check's message says what is accepted and never the value. */
static int msg_ok(const psk_err *e) {
  return strncmp(e->msg, "must", 4) == 0 && strstr(e->msg, "SENTINEL") == NULL;
}

/* ---- psk_buf ---- */

static void test_buf(void) {
  psk_buf b;
  char *saved;
  size_t saved_size;
  int i;

  /* fresh buffer */
  psk_buf_init(&b, 10);
  CHECK(b.len == 0);
  CHECK(b.cap == 10);
  CHECK(psk_buf_cstr(&b) != NULL);
  CHECK_STR(psk_buf_cstr(&b), "");

  /* append within cap */
  CHECK(psk_buf_append(&b, "abc", 3) == PSK_OK);
  CHECK(b.len == 3);
  CHECK_STR(psk_buf_cstr(&b), "abc");
  CHECK(psk_buf_addstr(&b, "defg") == PSK_OK);
  CHECK(b.len == 7);
  CHECK_STR(psk_buf_cstr(&b), "abcdefg");
  CHECK(psk_buf_append(&b, "", 0) == PSK_OK);
  CHECK(b.len == 7);
  CHECK(psk_buf_append(&b, "hij", 3) == PSK_OK); /* exactly at cap */
  CHECK(b.len == 10);
  CHECK_STR(psk_buf_cstr(&b), "abcdefghij");
  CHECK(b.size > b.len); /* room for the NUL */

  /* cap + 1: TOO_LARGE, nothing appended */
  CHECK(psk_buf_append(&b, "k", 1) == PSK_TOO_LARGE);
  CHECK(b.len == 10);
  CHECK_STR(psk_buf_cstr(&b), "abcdefghij");
  CHECK(psk_buf_addstr(&b, "xyz") == PSK_TOO_LARGE);
  CHECK(b.len == 10);
  CHECK_STR(psk_buf_cstr(&b), "abcdefghij");
  CHECK(psk_buf_append(&b, "", 0) == PSK_OK); /* zero bytes still fit */
  CHECK(b.len == 10);
  CHECK(psk_buf_append(&b, "x", (size_t)-1) == PSK_TOO_LARGE);
  CHECK(b.len == 10);
  CHECK_STR(psk_buf_cstr(&b), "abcdefghij");

  /* clear keeps the memory */
  saved = b.data;
  saved_size = b.size;
  psk_buf_clear(&b);
  CHECK(b.len == 0);
  CHECK(b.data == saved);
  CHECK(b.size == saved_size);
  CHECK_STR(psk_buf_cstr(&b), "");
  CHECK(psk_buf_append(&b, "0123456789", 10) == PSK_OK);
  CHECK(b.data == saved); /* reused, not reallocated */
  CHECK_STR(psk_buf_cstr(&b), "0123456789");
  CHECK(psk_buf_append(&b, "!", 1) == PSK_TOO_LARGE);
  CHECK_STR(psk_buf_cstr(&b), "0123456789");

  /* free twice is safe; the buffer is usable again */
  psk_buf_free(&b);
  CHECK(b.data == NULL);
  CHECK(b.len == 0);
  CHECK_STR(psk_buf_cstr(&b), "");
  psk_buf_free(&b);
  CHECK(b.data == NULL);
  CHECK(psk_buf_append(&b, "again", 5) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&b), "again");
  psk_buf_free(&b);
  psk_buf_free(&b);

  /* TOO_LARGE on the very first append: content stays empty */
  psk_buf_init(&b, 4);
  CHECK(psk_buf_append(&b, "12345", 5) == PSK_TOO_LARGE);
  CHECK(b.len == 0);
  CHECK_STR(psk_buf_cstr(&b), "");
  CHECK(psk_buf_append(&b, "1234", 4) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&b), "1234");
  psk_buf_free(&b);

  /* cap 0 */
  psk_buf_init(&b, 0);
  CHECK(psk_buf_append(&b, "a", 1) == PSK_TOO_LARGE);
  CHECK(b.len == 0);
  CHECK_STR(psk_buf_cstr(&b), "");
  CHECK(psk_buf_append(&b, "", 0) == PSK_OK);
  CHECK(psk_buf_addstr(&b, "") == PSK_OK);
  CHECK(b.len == 0);
  CHECK_STR(psk_buf_cstr(&b), "");
  CHECK(psk_buf_addstr(&b, "b") == PSK_TOO_LARGE);
  CHECK(b.len == 0);
  psk_buf_clear(&b);
  CHECK_STR(psk_buf_cstr(&b), "");
  psk_buf_free(&b);
  psk_buf_free(&b);

  /* clear on a never-used buffer */
  psk_buf_init(&b, 8);
  psk_buf_clear(&b);
  CHECK(b.len == 0);
  CHECK_STR(psk_buf_cstr(&b), "");
  psk_buf_free(&b);

  /* growth across many reallocations, byte by byte, binary content */
  psk_buf_init(&b, 5000);
  for (i = 0; i < 5000; i++) {
    char c = (char)(i % 256);
    if (psk_buf_append(&b, &c, 1) != PSK_OK) break;
  }
  CHECK(i == 5000);
  CHECK(b.len == 5000);
  for (i = 0; i < 5000; i++)
    if ((unsigned char)b.data[i] != (unsigned char)(i % 256)) break;
  CHECK(i == 5000);
  CHECK(b.data[5000] == '\0');
  CHECK(psk_buf_append(&b, "x", 1) == PSK_TOO_LARGE);
  CHECK(b.len == 5000);
  psk_buf_free(&b);

  /* one big append exactly at cap, then one byte more */
  {
    char *big = filled('z', 100000);
    psk_buf_init(&b, 100000);
    CHECK(psk_buf_append(&b, big, 100000) == PSK_OK);
    CHECK(b.len == 100000);
    CHECK(memcmp(b.data, big, 100000) == 0);
    CHECK(b.data[100000] == '\0');
    CHECK(psk_buf_append(&b, "z", 1) == PSK_TOO_LARGE);
    CHECK(b.len == 100000);
    psk_buf_free(&b);
    psk_buf_init(&b, 99999);
    CHECK(psk_buf_append(&b, big, 100000) == PSK_TOO_LARGE);
    CHECK(b.len == 0);
    psk_buf_free(&b);
    free(big);
  }
}

/* ---- validation of strings: api_key, user_agent, message_id ---- */

typedef int (*check_fn)(const char *s, size_t n, psk_err *e);

static int run_check(check_fn f, const char *s, size_t n, psk_err *e) {
  char *p = xdup(s, n);
  int st;
  memset(e, 0, sizeof *e);
  st = f(p, n, e);
  free(p);
  return st;
}

/* The rules the three share: 1..max bytes, no control bytes. */
static void check_string_rule(check_fn f, size_t max) {
  psk_err e;
  char *s = filled('k', max + 1);
  char buf[64];
  int c;
  size_t pos;

  /* empty */
  CHECK(run_check(f, "", 0, &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  /* ordinary values */
  CHECK(run_check(f, S("a"), &e) == PSK_OK);
  CHECK(run_check(f, S("abc-DEF_123~!@#$%^&*()"), &e) == PSK_OK);
  CHECK(run_check(f, S("with inner spaces"), &e) == PSK_OK);
  CHECK(run_check(f, S("caf\xc3\xa9 \xe2\x82\xac"), &e) == PSK_OK); /* UTF-8 */
  CHECK(run_check(f, S("\x80\xff"), &e) == PSK_OK); /* not control bytes */
  CHECK(run_check(f, S("~"), &e) == PSK_OK);
  /* max ok, max + 1 refused */
  CHECK(run_check(f, s, max, &e) == PSK_OK);
  CHECK(run_check(f, s, max - 1, &e) == PSK_OK);
  CHECK(run_check(f, s, max + 1, &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  /* max + 1 that carries a sentinel: not echoed */
  memcpy(s, "SENTINEL-KEY", 12);
  CHECK(run_check(f, s, max + 1, &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  CHECK(run_check(f, s, max, &e) == PSK_OK);
  /* a control byte at the very end of a max-length value */
  s[max - 1] = '\n';
  CHECK(run_check(f, s, max, &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  free(s);

  /* every control byte, at the start, in the middle and at the end */
  for (c = 0; c <= 0x7f; c++) {
    if (!(c < 0x20 || c == 0x7f)) continue;
    for (pos = 0; pos <= 12; pos += 6) {
      /* "SENTINEL-KEY" with c inserted at 0, 6 or 12 */
      memcpy(buf, "SENTINEL-KEY", pos);
      buf[pos] = (char)c;
      memcpy(buf + pos + 1, "SENTINEL-KEY" + pos, 12 - pos);
      CHECKI(run_check(f, buf, 13, &e) == PSK_INVALID, c);
      CHECKI(msg_ok(&e), c);
    }
    /* the control byte alone */
    buf[0] = (char)c;
    CHECKI(run_check(f, buf, 1, &e) == PSK_INVALID, c);
    CHECKI(msg_ok(&e), c);
  }
  /* embedded NUL in the middle of an otherwise fine value */
  CHECK(run_check(f, S("SENTINEL\0KEY"), &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  /* CR LF header injection */
  CHECK(run_check(f, S("SENTINEL\r\nX-Evil: 1"), &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  /* bytes right next to the control range are fine */
  CHECK(run_check(f, S(" "), &e) == PSK_OK);
  CHECK(run_check(f, S("\x7e"), &e) == PSK_OK);
  CHECK(run_check(f, S("\x80"), &e) == PSK_OK);
}

static void test_check_strings(void) {
  psk_err e;

  check_string_rule(psk_check_api_key, PSK_API_KEY_MAX);
  check_string_rule(psk_check_user_agent, PSK_USER_AGENT_MAX);
  check_string_rule(psk_check_message_id, PSK_MESSAGE_ID_MAX);
  CHECK(PSK_API_KEY_MAX == 4096);
  CHECK(PSK_USER_AGENT_MAX == 1024);
  CHECK(PSK_MESSAGE_ID_MAX == 1024); /* the contract: 1-1024 bytes */

  /* message_id: "." and ".." refused, anything else with dots is fine */
  CHECK(run_check(psk_check_message_id, S("."), &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  CHECK(run_check(psk_check_message_id, S(".."), &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  CHECK(run_check(psk_check_message_id, S("..."), &e) == PSK_OK);
  CHECK(run_check(psk_check_message_id, S("...."), &e) == PSK_OK);
  CHECK(run_check(psk_check_message_id, S(".a"), &e) == PSK_OK);
  CHECK(run_check(psk_check_message_id, S("a."), &e) == PSK_OK);
  CHECK(run_check(psk_check_message_id, S("..a"), &e) == PSK_OK);
  CHECK(run_check(psk_check_message_id, S("a.."), &e) == PSK_OK);
  CHECK(run_check(psk_check_message_id, S("./"), &e) == PSK_OK);
  CHECK(run_check(psk_check_message_id, S("/"), &e) == PSK_OK);
  CHECK(run_check(psk_check_message_id, S("a/b"), &e) == PSK_OK);
  CHECK(run_check(psk_check_message_id, S(".\0"), &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  CHECK(run_check(psk_check_message_id, S("..\n"), &e) == PSK_INVALID);
  CHECK(msg_ok(&e));
  CHECK(run_check(psk_check_message_id,
                  S("true_919487126251@c.us_3EB0F754E67BDF3178E76C680224FF711"
                    "4E2CB95"),
                  &e) == PSK_OK);
  /* "." and ".." are only a message_id rule */
  CHECK(run_check(psk_check_api_key, S("."), &e) == PSK_OK);
  CHECK(run_check(psk_check_api_key, S(".."), &e) == PSK_OK);
  CHECK(run_check(psk_check_user_agent, S("."), &e) == PSK_OK);

  /* the one control-byte test the validators and the binding share */
  CHECK(psk_has_ctl("", 0) == 0);
  CHECK(psk_has_ctl("a b~\x80\xff", 6) == 0);
  CHECK(psk_has_ctl("a\tb", 3) == 1);
  CHECK(psk_has_ctl("ab\x7f", 3) == 1);
  CHECK(psk_has_ctl("a\0", 2) == 1);
  CHECK(psk_has_ctl("\x1f", 1) == 1);
  CHECK(psk_has_ctl("ab\n", 2) == 0); /* only the n bytes given */

  /* a NULL psk_err is allowed (nothing to fill) */
  CHECK(psk_check_api_key("", 0, NULL) == PSK_INVALID);
  CHECK(psk_check_message_id(".", 1, NULL) == PSK_INVALID);
  CHECK(psk_check_user_agent("\n", 1, NULL) == PSK_INVALID);
}

/* ---- phone ---- */

static int phone(const char *s, size_t n, char **out, psk_err *e) {
  char *p = xdup(s, n);
  int st;
  /* exactly PSK_PHONE_MAX + 1 bytes, on the heap: ASan sees an overflow */
  *out = malloc(PSK_PHONE_MAX + 1);
  if (!*out) exit(2);
  memset(*out, 'Q', PSK_PHONE_MAX + 1);
  memset(e, 0, sizeof *e);
  st = psk_normalize_phone(p, n, *out, e);
  free(p);
  return st;
}

static void phone_ok(const char *s, const char *want, int line) {
  char *out;
  psk_err e;
  int st = phone(s, strlen(s), &out, &e);
  check_(st == PSK_OK, __FILE__, line, "phone accepted", -1);
  if (st == PSK_OK) check_str_(out, want, __FILE__, line, "normalized phone");
  else fprintf(stderr, "    input: \"%s\"\n", s);
  free(out);
}

static void phone_bad_n(const char *s, size_t n, int line) {
  char *out;
  psk_err e;
  int st = phone(s, n, &out, &e);
  check_(st == PSK_INVALID, __FILE__, line, "phone refused", -1);
  if (st != PSK_INVALID) fprintf(stderr, "    input: \"%s\"\n", s);
  check_(msg_ok(&e), __FILE__, line, "phone message", -1);
  free(out);
}

#define PHONE_OK(s, want) phone_ok((s), (want), __LINE__)
#define PHONE_BAD(s) phone_bad_n((s), strlen(s), __LINE__)
#define PHONE_BAD_N(lit) phone_bad_n(S(lit), __LINE__)

static void test_phone(void) {
  char id[PSK_PHONE_MAX + 2];
  int c;

  PHONE_OK("+91 98745 32456", "919874532456");
  PHONE_OK("919874532456", "919874532456");
  PHONE_OK("(555) 123-4567", "5551234567");
  PHONE_OK("+1 (555) 123-4567", "15551234567");
  PHONE_OK("555.123.4567", "5551234567");
  PHONE_OK("+44-20-7946-0958", "442079460958");
  PHONE_OK("  +91  98745  32456  ", "919874532456");
  PHONE_OK("1234567", "1234567");               /* 7 digits */
  PHONE_OK("123-4567", "1234567");              /* 7 after removal */
  PHONE_OK("123456789012345", "123456789012345"); /* 15 digits */
  PHONE_OK("+123 456 789 012 345", "123456789012345");
  PHONE_OK("0000000", "0000000");
  PHONE_OK("phone-abc123", "phone-abc123");
  PHONE_OK("phone-ABC", "phone-ABC");
  PHONE_OK("phone-1", "phone-1");
  PHONE_OK("phone-x", "phone-x");

  PHONE_BAD("");
  PHONE_BAD("123456");                 /* 6 digits */
  PHONE_BAD("+1 (23) 45-6");           /* 6 after removal */
  PHONE_BAD("1234567890123456");       /* 16 digits */
  PHONE_BAD("+1 234 567 890 123 456"); /* 16 after removal */
  PHONE_BAD("123456789012345678901234567890");
  PHONE_BAD("555-CALL-NOW");
  PHONE_BAD("12345a7");
  PHONE_BAD("abcdefghij");
  PHONE_BAD("1234567x");
  PHONE_BAD("x1234567");
  PHONE_BAD("+");
  PHONE_BAD("   ");
  PHONE_BAD("+()-. ");
  PHONE_BAD("123/4567");
  PHONE_BAD("123_4567");
  PHONE_BAD("123\t4567"); /* only spaces are removed, not tabs */
  PHONE_BAD("phone-");
  PHONE_BAD("phone-a_b");
  PHONE_BAD("phone-a b");
  PHONE_BAD("phone-a-b");
  PHONE_BAD("phone-a.b");
  PHONE_BAD("phone-abc\n");
  PHONE_BAD("phone-\xc3\xa9");
  PHONE_BAD("phone");
  PHONE_BAD("phone-SENTINEL!");
  PHONE_BAD("SENTINEL");
  PHONE_BAD_N("1234567\0");
  PHONE_BAD_N("12345\00067");
  PHONE_BAD_N("phone-abc\0");
  PHONE_BAD_N("phone-ab\0c");
  for (c = 0; c < 0x20; c++) {
    char s[16];
    memcpy(s, "98765", 5);
    s[5] = (char)c;
    memcpy(s + 6, "43210", 5);
    phone_bad_n(s, 11, __LINE__);
    memcpy(s, "phone-ab", 8);
    s[8] = (char)c;
    phone_bad_n(s, 9, __LINE__);
  }
  phone_bad_n("98765\x7f" "43210", 11, __LINE__);

  /* a phone id fills out[PSK_PHONE_MAX + 1] at most */
  memcpy(id, "phone-", 6);
  memset(id + 6, 'a', PSK_PHONE_MAX - 6);
  id[PSK_PHONE_MAX] = '\0';
  PHONE_OK(id, id);
  id[PSK_PHONE_MAX] = 'a';
  id[PSK_PHONE_MAX + 1] = '\0';
  PHONE_BAD(id);
}

/* ---- base_url ---- */

static int base_url(const char *s, size_t n, psk_buf *out, psk_err *e) {
  char *p = xdup(s, n);
  int st;
  memset(e, 0, sizeof *e);
  st = psk_normalize_base_url(p, n, out, e);
  free(p);
  return st;
}

static void url_ok(const char *s, const char *want, int line) {
  psk_buf out;
  psk_err e;
  int st;
  psk_buf_init(&out, PSK_BASE_URL_MAX);
  psk_buf_addstr(&out, "previous content");
  st = base_url(s, strlen(s), &out, &e);
  check_(st == PSK_OK, __FILE__, line, "base_url accepted", -1);
  if (st != PSK_OK)
    fprintf(stderr, "    input: \"%s\" (%s)\n", s, e.msg);
  else if (want)
    check_str_(psk_buf_cstr(&out), want, __FILE__, line, "normalized base_url");
  psk_buf_free(&out);
}

static void url_bad_n(const char *s, size_t n, int line) {
  psk_buf out;
  psk_err e;
  int st;
  psk_buf_init(&out, PSK_BASE_URL_MAX);
  psk_buf_addstr(&out, "previous content");
  st = base_url(s, n, &out, &e);
  check_(st == PSK_INVALID, __FILE__, line, "base_url refused", -1);
  if (st != PSK_INVALID)
    fprintf(stderr, "    input: \"%s\" gave \"%s\"\n", s, psk_buf_cstr(&out));
  check_(msg_ok(&e), __FILE__, line, "base_url message", -1);
  check_(out.len == 0, __FILE__, line, "base_url out cleared", -1);
  psk_buf_free(&out);
}

#define URL_OK(s, want) url_ok((s), (want), __LINE__)
#define URL_BAD(s) url_bad_n((s), strlen(s), __LINE__)
#define URL_BAD_N(lit) url_bad_n(S(lit), __LINE__)

static void test_base_url(void) {
  char *long_url;

  /* https: any host */
  URL_OK("https://api.periskope.app/v1", "https://api.periskope.app/v1");
  URL_OK(PSK_DEFAULT_BASE_URL, PSK_DEFAULT_BASE_URL);
  URL_OK("https://example.com", "https://example.com");
  URL_OK("https://10.0.0.1/x", "https://10.0.0.1/x");
  URL_OK("https://h", "https://h");
  URL_OK("https://h:8443/a/b", "https://h:8443/a/b");
  URL_OK("https://h:1", "https://h:1");
  URL_OK("https://h:65535/v1", "https://h:65535/v1");
  URL_OK("https://my-host.example_x.com/a-b/c.d/e~f",
         "https://my-host.example_x.com/a-b/c.d/e~f");
  URL_OK("https://[2001:db8::1]/v1", "https://[2001:db8::1]/v1");
  URL_OK("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443");
  URL_OK("HTTPS://api.periskope.app/v1", NULL); /* scheme is caseless */

  /* trailing slashes removed, path kept */
  URL_OK("https://h/v1/", "https://h/v1");
  URL_OK("https://h/", "https://h");
  URL_OK("https://h//", "https://h");
  URL_OK("https://h/v1///", "https://h/v1");
  URL_OK("https://h:8443/", "https://h:8443");
  URL_OK("https://h/a/b/c/", "https://h/a/b/c");
  URL_OK("https://h/a//b", "https://h/a//b");

  /* plain http: the form only; which host it names is libcurl's to read,
     and the transport judges that (psk_http_base_url, the specs) */
  URL_OK("http://127.0.0.1", "http://127.0.0.1");
  URL_OK("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1");
  URL_OK("http://127.1.2.3/v1", "http://127.1.2.3/v1");
  URL_OK("http://localhost:3000/v1", "http://localhost:3000/v1");
  URL_OK("http://LocalHost/", "http://LocalHost");
  URL_OK("http://[::1]:8080/v1/", "http://[::1]:8080/v1");
  URL_OK("http://example.com", "http://example.com");
  URL_OK("http://127.0.0.1.evil.com/v1", "http://127.0.0.1.evil.com/v1");
  URL_OK("http://127.1", "http://127.1");
  URL_BAD("http://[::1]x");
  URL_BAD("http://127.0.0.1@evil.com");
  URL_BAD("http://evil.com@127.0.0.1");
  URL_BAD("http://127.0.0.1\\@evil.com");

  /* other schemes, malformed */
  URL_BAD("ftp://example.com");
  URL_BAD("ftp://127.0.0.1");
  URL_BAD("file:///etc/passwd");
  URL_BAD("ws://localhost");
  URL_BAD("gopher://localhost");
  URL_BAD("SENTINEL://h");
  URL_BAD("");
  URL_BAD("h");
  URL_BAD("//h");
  URL_BAD("https:");
  URL_BAD("https:/h");
  URL_BAD("https//h");
  URL_BAD("https://");
  URL_BAD("http://");
  URL_BAD("https:///v1");
  URL_BAD("https://:443");
  URL_BAD("https://[]");
  URL_BAD("https://[::1");
  URL_BAD("https://[::1]x");
  URL_BAD(" https://h");
  URL_BAD("https://h /v1");
  URL_BAD("https://h/a b");
  URL_BAD("https://h\\@evil.com");

  /* userinfo */
  URL_BAD("http://u:p@127.0.0.1");
  URL_BAD("http://u@127.0.0.1");
  URL_BAD("http://u:p@localhost/v1");
  URL_BAD("https://u@h");
  URL_BAD("https://u:p@h/v1");
  URL_BAD("https://u:123@h");
  URL_BAD("https://SENTINEL:SENTINEL@h");
  URL_BAD("http://127.0.0.1@evil.com");
  URL_BAD("http://127.0.0.1:80@evil.com");
  URL_BAD("http://localhost@evil.com");
  URL_BAD("https://@h");

  /* query and fragment */
  URL_BAD("https://h?x=1");
  URL_BAD("https://h/v1?x=1");
  URL_BAD("https://h/?");
  URL_BAD("https://h#f");
  URL_BAD("https://h/v1#f");
  URL_BAD("https://h/v1/#");
  URL_BAD("https://h:80?x");
  URL_BAD("http://127.0.0.1/?SENTINEL");

  /* ports */
  URL_BAD("https://h:0");
  URL_BAD("https://h:0/v1");
  URL_BAD("https://h:00");
  URL_BAD("https://h:65536");
  URL_BAD("https://h:65536/v1");
  URL_BAD("https://h:99999");
  URL_BAD("https://h:99999999999999999999999");
  URL_BAD("https://h:");
  URL_BAD("https://h:/v1");
  URL_BAD("https://h:abc");
  URL_BAD("https://h:-1");
  URL_BAD("https://h:+80");
  URL_BAD("https://h:80:80");
  URL_BAD("http://127.0.0.1:0");
  URL_BAD("http://127.0.0.1:65536");

  /* control bytes */
  URL_BAD("https://h\n");
  URL_BAD("https://h/v1\r\nX-Evil: 1");
  URL_BAD("https://h/\t");
  URL_BAD("https://h/\x7f");
  URL_BAD_N("https://h/\0x");
  URL_BAD_N("https://h\0");
  URL_BAD_N("http://127.0.0.1\0.evil.com");

  /* length: PSK_BASE_URL_MAX ok, one more refused */
  long_url = filled('a', PSK_BASE_URL_MAX + 1);
  memcpy(long_url, "https://h/", 10);
  long_url[PSK_BASE_URL_MAX] = '\0';
  URL_OK(long_url, long_url);
  long_url[PSK_BASE_URL_MAX] = 'a';
  URL_BAD(long_url);
  free(long_url);

  /* NULL psk_err */
  {
    psk_buf out;
    psk_buf_init(&out, PSK_BASE_URL_MAX);
    CHECK(psk_normalize_base_url("ftp://h", 7, &out, NULL) == PSK_INVALID);
    CHECK(out.len == 0);
    psk_buf_free(&out);
  }
}

/* ---- time ---- */

/* psk_host_loopback on a copy of exactly n bytes. */
static int loopback(const char *h) {
  size_t n = strlen(h);
  char *p = xdup(h, n);
  int r = psk_host_loopback(p, n);
  free(p);
  return r;
}

/* Hosts as libcurl reads them in a URL (CURLUPART_HOST). */
static void test_loopback(void) {
  CHECK(loopback("127.0.0.1") == 1);
  CHECK(loopback("127.1.2.3") == 1);
  CHECK(loopback("127.255.255.254") == 1);
  CHECK(loopback("127.0.0.0") == 1);
  CHECK(loopback("localhost") == 1);
  CHECK(loopback("LOCALHOST") == 1);
  CHECK(loopback("LocalHost") == 1);
  CHECK(loopback("[::1]") == 1);

  CHECK(loopback("") == 0);
  CHECK(loopback("10.0.0.1") == 0);
  CHECK(loopback("example.com") == 0);
  CHECK(loopback("api.periskope.app") == 0);
  CHECK(loopback("127.0.0.1.evil.com") == 0);
  CHECK(loopback("localhost.evil") == 0);
  CHECK(loopback("localhost.") == 0);
  CHECK(loopback("evil-localhost") == 0);
  CHECK(loopback("xlocalhost") == 0);
  CHECK(loopback("128.0.0.1") == 0);
  CHECK(loopback("126.0.0.1") == 0);
  CHECK(loopback("1127.0.0.1") == 0);
  CHECK(loopback("127.0.0.256") == 0);
  CHECK(loopback("127.0.0") == 0);
  CHECK(loopback("127.0.0.1.") == 0);
  CHECK(loopback("127.0.0.1.2") == 0);
  CHECK(loopback(".127.0.0.1") == 0);
  CHECK(loopback("127..0.1") == 0);
  CHECK(loopback("192.168.1.1") == 0);
  CHECK(loopback("0.0.0.0") == 0);
  CHECK(loopback("[::2]") == 0);
  CHECK(loopback("[2001:db8::1]") == 0);
  CHECK(loopback("[::1]x") == 0);
  CHECK(loopback("::1") == 0);
  CHECK(loopback("[::ffff:127.0.0.1]") == 0);
  /* Forms libcurl writes as 127.0.0.1 before this is asked, or reads as
     names: as they stand, none is an address. */
  CHECK(loopback("127.1") == 0);
  CHECK(loopback("0x7f000001") == 0);
  CHECK(loopback("2130706433") == 0);
  CHECK(loopback("0177.0.0.1") == 0);
  CHECK(loopback("127.0.0.09") == 0); /* a name: 09 is no octal number */
  CHECK(loopback("127.0.0.01") == 0);
  CHECK(loopback("127.000.000.001") == 0);
  /* only the n bytes given */
  CHECK(psk_host_loopback("127.0.0.1x", 9) == 1);
  CHECK(psk_host_loopback("localhost", 5) == 0);
}

/* Where the request target starts: the path, sent as it is. */
static void test_path_offset(void) {
  CHECK(psk_url_path_offset("https://api.periskope.app/v1") == 25);
  CHECK(psk_url_path_offset("http://127.0.0.1:9/v1/message/a%40b/pin") == 18);
  CHECK(psk_url_path_offset("http://[::1]:9/v1") == 14);
  CHECK(psk_url_path_offset("https://localhost") == 17); /* no path */
  CHECK(psk_url_path_offset("http://h/") == 8);
}

static void test_time(void) {
  psk_err e;
  static const long long bad[] = {0,  2,   3,   6,  8,  29, 31, 365, -1, -7,
                                  -30, 100, 1000, LLONG_MAX, LLONG_MIN};
  size_t i;
  CHECK(psk_check_time(1, &e) == PSK_OK);
  CHECK(psk_check_time(7, &e) == PSK_OK);
  CHECK(psk_check_time(30, &e) == PSK_OK);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    memset(&e, 0, sizeof e);
    CHECKI(psk_check_time(bad[i], &e) == PSK_INVALID, i);
    CHECKI(msg_ok(&e), i);
    CHECKI(strstr(e.msg, "1") && strstr(e.msg, "7") && strstr(e.msg, "30"), i);
  }
  CHECK(psk_check_time(0, NULL) == PSK_INVALID);
}

/* ---- percent-encoding ---- */

static int encode(psk_buf *out, const char *s, size_t n) {
  char *p = xdup(s, n);
  int st = psk_percent_encode(out, p, n);
  free(p);
  return st;
}

static void enc_is(const char *s, size_t n, const char *want, int line) {
  psk_buf out;
  psk_buf_init(&out, 1 << 16);
  check_(encode(&out, s, n) == PSK_OK, __FILE__, line, "encode ok", -1);
  check_str_(psk_buf_cstr(&out), want, __FILE__, line, "encoded");
  psk_buf_free(&out);
}

#define ENC(lit, want) enc_is(S(lit), (want), __LINE__)

static int upper_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static void test_percent_encode(void) {
  psk_buf out;
  int c;
  static const char unreserved[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

  ENC("", "");
  enc_is(unreserved, strlen(unreserved), unreserved, __LINE__);
  ENC("a@b", "a%40b");
  ENC("/", "%2F");
  ENC("a/b", "a%2Fb");
  ENC(" ", "%20");
  ENC("a b", "a%20b");
  ENC("%", "%25");
  ENC("%40", "%2540");
  ENC("+", "%2B");
  ENC("..", "..");
  ENC("...", "...");
  ENC("?#[]", "%3F%23%5B%5D");
  ENC("!*'();:@&=+$,", "%21%2A%27%28%29%3B%3A%40%26%3D%2B%24%2C");
  ENC("\"<>\\^`{|}", "%22%3C%3E%5C%5E%60%7B%7C%7D");
  ENC("\0", "%00");
  ENC("a\0b", "a%00b");
  ENC("\r\n", "%0D%0A");
  ENC("\x7f", "%7F");
  ENC("\x80", "%80");
  ENC("\xff", "%FF");
  ENC("\xab\xcd\xef", "%AB%CD%EF");
  ENC("caf\xc3\xa9", "caf%C3%A9");
  ENC("true_919487126251@c.us_3EB0F754E67BDF3178E76C680224FF7114E2CB95",
      "true_919487126251%40c.us_3EB0F754E67BDF3178E76C680224FF7114E2CB95");
  ENC("false_120363041234567890@g.us_ABCDEF0123456789_919876543210@c.us",
      "false_120363041234567890%40g.us_ABCDEF0123456789_919876543210%40c.us");

  /* every byte on its own */
  for (c = 0; c < 256; c++) {
    char in = (char)c, want[4];
    int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
               (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
               c == '~';
    if (keep) {
      want[0] = (char)c;
      want[1] = '\0';
    } else {
      snprintf(want, sizeof want, "%%%02X", (unsigned)c);
    }
    psk_buf_init(&out, 16);
    CHECKI(encode(&out, &in, 1) == PSK_OK, c);
    CHECKI(strcmp(psk_buf_cstr(&out), want) == 0, c);
    CHECKI(out.len == (keep ? 1u : 3u), c);
    psk_buf_free(&out);
  }

  /* all 256 bytes in one go: appends, uppercase hex only */
  {
    char all[256];
    size_t i;
    for (c = 0; c < 256; c++) all[c] = (char)c;
    psk_buf_init(&out, 4096);
    CHECK(psk_buf_addstr(&out, "prefix/") == PSK_OK);
    CHECK(encode(&out, all, 256) == PSK_OK);
    CHECK(strncmp(psk_buf_cstr(&out), "prefix/", 7) == 0); /* appended */
    CHECK(out.len == 7 + 66 + 3 * (256 - 66));
    /* every '%' starts an escape of two uppercase hex digits */
    for (i = 7; i < out.len; i++)
      if (out.data[i] == '%' &&
          !(i + 2 < out.len && upper_hex(out.data[i + 1]) &&
            upper_hex(out.data[i + 2])))
        break;
    CHECK(i == out.len);
    psk_buf_free(&out);
  }

  /* the bound of the buffer is reported */
  psk_buf_init(&out, 5);
  CHECK(encode(&out, S("@@")) == PSK_TOO_LARGE);
  CHECK(out.len <= 5);
  psk_buf_free(&out);
  psk_buf_init(&out, 6);
  CHECK(encode(&out, S("@@")) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&out), "%40%40");
  psk_buf_free(&out);
  psk_buf_init(&out, 0);
  CHECK(encode(&out, S("a")) == PSK_TOO_LARGE);
  CHECK(encode(&out, "", 0) == PSK_OK);
  psk_buf_free(&out);
}

/* ---- the request ---- */

static int find_header(const psk_request *r, const char *name) {
  int i;
  for (i = 0; i < r->nheaders; i++)
    if (strcmp(r->headers[i].name, name) == 0) return i;
  return -1;
}

static void test_request(void) {
  psk_config c;
  psk_request r;
  const char *id = "true_919487126251@c.us_3EB0F754E67BDF3178E76C680224FF7114E2CB95";
  char *pid;

  memset(&c, 0, sizeof c);
  c.auth = (char *)"Bearer test-key";
  c.phone = (char *)"919874532456";
  c.base_url = (char *)"https://api.periskope.app/v1";
  c.user_agent = (char *)"periskope-lua/0.1.0 test";
  c.timeout = 30;
  c.connect_timeout = 10;
  c.max_retry_wait = 60;
  c.retries = 2;
  c.max_body = 1048576;

  psk_request_init(&r);
  CHECK(r.nheaders == 0);
  CHECK_STR(r.phone, "");

  /* pin with no time */
  pid = xdup(id, strlen(id));
  CHECK(psk_request_build(&r, &c, pid, strlen(id), 1, 0, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.url),
            "https://api.periskope.app/v1/message/"
            "true_919487126251%40c.us_3EB0F754E67BDF3178E76C680224FF7114E2CB95"
            "/pin");
  CHECK_STR(psk_buf_cstr(&r.url) + r.target,
            "/v1/message/"
            "true_919487126251%40c.us_3EB0F754E67BDF3178E76C680224FF7114E2CB95"
            "/pin");
  CHECK_STR(psk_buf_cstr(&r.body), "{\"pin\":true}");
  CHECK(r.body.len == strlen("{\"pin\":true}"));
  CHECK(r.nheaders == 5);
  if (r.nheaders == 5) {
    CHECK_STR(r.headers[0].name, "Authorization");
    CHECK_STR(r.headers[0].value, "Bearer test-key");
    CHECK_STR(r.headers[1].name, "x-phone");
    CHECK_STR(r.headers[1].value, "919874532456");
    CHECK_STR(r.headers[2].name, "Content-Type");
    CHECK_STR(r.headers[2].value, "application/json");
    CHECK_STR(r.headers[3].name, "Accept");
    CHECK_STR(r.headers[3].value, "application/json");
    CHECK_STR(r.headers[4].name, "User-Agent");
    CHECK_STR(r.headers[4].value, "periskope-lua/0.1.0 test");
  }
  CHECK_STR(r.phone, "919874532456");
  free(pid);

  /* pin with each time */
  CHECK(psk_request_build(&r, &c, S("abc"), 1, 7, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.body), "{\"pin\":true,\"time\":7}");
  CHECK_STR(psk_buf_cstr(&r.url),
            "https://api.periskope.app/v1/message/abc/pin"); /* rebuilt */
  CHECK(psk_request_build(&r, &c, S("abc"), 1, 1, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.body), "{\"pin\":true,\"time\":1}");
  CHECK(psk_request_build(&r, &c, S("abc"), 1, 30, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.body), "{\"pin\":true,\"time\":30}");

  /* unpin: time is ignored */
  CHECK(psk_request_build(&r, &c, S("abc"), 0, 0, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.body), "{\"pin\":false}");
  CHECK(psk_request_build(&r, &c, S("abc"), 0, 7, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.body), "{\"pin\":false}");
  CHECK(psk_request_build(&r, &c, S("abc"), 0, 30, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.body), "{\"pin\":false}");
  CHECK(r.nheaders == 5);

  /* the per-call phone overrides the client's */
  CHECK(psk_request_build(&r, &c, S("abc"), 1, 0, "phone-abc123") == PSK_OK);
  CHECK(r.nheaders == 5);
  CHECK(find_header(&r, "x-phone") == 1);
  if (find_header(&r, "x-phone") == 1)
    CHECK_STR(r.headers[1].value, "phone-abc123");
  CHECK_STR(r.phone, "phone-abc123");
  CHECK(psk_request_build(&r, &c, S("abc"), 1, 0, "15551234567") == PSK_OK);
  if (r.nheaders == 5) CHECK_STR(r.headers[1].value, "15551234567");
  /* and the client's comes back when the call has none */
  CHECK(psk_request_build(&r, &c, S("abc"), 1, 0, NULL) == PSK_OK);
  if (r.nheaders == 5) CHECK_STR(r.headers[1].value, "919874532456");

  /* no phone at all: no x-phone, the order of the rest is kept */
  c.phone = NULL;
  CHECK(psk_request_build(&r, &c, S("abc"), 1, 7, NULL) == PSK_OK);
  CHECK(r.nheaders == 4);
  CHECK(find_header(&r, "x-phone") == -1);
  CHECK_STR(r.phone, "");
  if (r.nheaders == 4) {
    CHECK_STR(r.headers[0].name, "Authorization");
    CHECK_STR(r.headers[0].value, "Bearer test-key");
    CHECK_STR(r.headers[1].name, "Content-Type");
    CHECK_STR(r.headers[1].value, "application/json");
    CHECK_STR(r.headers[2].name, "Accept");
    CHECK_STR(r.headers[2].value, "application/json");
    CHECK_STR(r.headers[3].name, "User-Agent");
    CHECK_STR(r.headers[3].value, "periskope-lua/0.1.0 test");
  }
  /* a per-call phone without a client phone */
  CHECK(psk_request_build(&r, &c, S("abc"), 1, 7, "phone-x") == PSK_OK);
  CHECK(r.nheaders == 5);
  CHECK(find_header(&r, "x-phone") == 1);
  if (r.nheaders == 5) {
    CHECK_STR(r.headers[1].value, "phone-x");
    CHECK_STR(r.headers[4].name, "User-Agent");
  }

  /* the id is percent-encoded, with its exact length (NUL included) */
  CHECK(psk_request_build(&r, &c, S("a/b c"), 1, 0, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.url),
            "https://api.periskope.app/v1/message/a%2Fb%20c/pin");
  CHECK(psk_request_build(&r, &c, S("..."), 1, 0, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.url), "https://api.periskope.app/v1/message/.../pin");
  CHECK(psk_request_build(&r, &c, S("x\xc3\xa9"), 1, 0, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.url),
            "https://api.periskope.app/v1/message/x%C3%A9/pin");
  CHECK(psk_request_build(&r, &c, "abcdef", 3, 1, 0, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.url), "https://api.periskope.app/v1/message/abc/pin");

  /* another base_url */
  c.base_url = (char *)"http://127.0.0.1:8080";
  CHECK(psk_request_build(&r, &c, S("m1"), 1, 0, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.url), "http://127.0.0.1:8080/message/m1/pin");

  /* the largest request: longest base_url and id of only escaped bytes */
  {
    char *big_base = filled('b', PSK_BASE_URL_MAX);
    char *big_id = filled('@', PSK_MESSAGE_ID_MAX);
    size_t want = PSK_BASE_URL_MAX + strlen("/message/") +
                  3 * PSK_MESSAGE_ID_MAX + strlen("/pin");
    memcpy(big_base, "https://h/", 10);
    c.base_url = big_base;
    CHECK(psk_request_build(&r, &c, big_id, PSK_MESSAGE_ID_MAX, 1, 30,
                            "phone-abc") == PSK_OK);
    CHECK(r.url.len == want);
    CHECK(strncmp(psk_buf_cstr(&r.url), big_base, PSK_BASE_URL_MAX) == 0);
    CHECK(r.url.len >= 4 &&
          strcmp(psk_buf_cstr(&r.url) + r.url.len - 4, "/pin") == 0);
    CHECK_STR(psk_buf_cstr(&r.body), "{\"pin\":true,\"time\":30}");
    free(big_base);
    free(big_id);
  }

  psk_request_free(&r);
  psk_request_free(&r); /* twice is safe */
  CHECK(r.nheaders == 0);

  /* a freed request can be built again */
  psk_request_init(&r);
  c.base_url = (char *)"https://h";
  CHECK(psk_request_build(&r, &c, S("z"), 1, 0, NULL) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&r.url), "https://h/message/z/pin");
  psk_request_free(&r);

  /* psk_config_free on a zeroed config is safe */
  memset(&c, 0, sizeof c);
  psk_config_free(&c);
  psk_config_free(&c);
  CHECK(c.auth == NULL && c.phone == NULL && c.base_url == NULL);
}

/* ---- response headers ---- */

/* Walks head (an exact-length copy) and returns "name=value|..." */
static char *walk(const char *head, size_t len, size_t *npos) {
  char *h = xdup(head, len);
  psk_buf out;
  psk_header hd;
  size_t pos = 0;
  int guard = 0;
  char *res;
  psk_buf_init(&out, 1 << 20);
  while (psk_header_next(h, len, &pos, &hd)) {
    psk_buf_append(&out, hd.name, hd.name_len);
    psk_buf_addstr(&out, "=");
    psk_buf_append(&out, hd.value, hd.value_len);
    psk_buf_addstr(&out, "|");
    if (++guard > 100000) break;
  }
  /* once at the end, it stays at the end */
  if (psk_header_next(h, len, &pos, &hd)) psk_buf_addstr(&out, "!AGAIN!");
  if (npos) *npos = pos;
  free(h);
  res = malloc(out.len + 1);
  if (!res) exit(2);
  memcpy(res, psk_buf_cstr(&out), out.len + 1);
  psk_buf_free(&out);
  return res;
}

static void walk_is(const char *head, size_t len, const char *want, int line) {
  size_t pos;
  char *got = walk(head, len, &pos);
  check_str_(got, want, __FILE__, line, "headers");
  check_(pos == len, __FILE__, line, "pos at end", -1);
  free(got);
}

#define HEADERS(lit, want) walk_is(S(lit), (want), __LINE__)

static void test_headers(void) {
  /* status line skipped, CRLF */
  HEADERS("HTTP/1.1 200 OK\r\n"
          "Content-Type: application/json\r\n"
          "X-RateLimit-Limit: 10\r\n"
          "\r\n",
          "Content-Type=application/json|X-RateLimit-Limit=10|");
  /* LF only */
  HEADERS("HTTP/1.1 200 OK\n"
          "Content-Type: application/json\n"
          "X-RateLimit-Limit: 10\n"
          "\n",
          "Content-Type=application/json|X-RateLimit-Limit=10|");
  /* mixed line ends */
  HEADERS("HTTP/1.1 429 Too Many Requests\r\nA: 1\nB: 2\r\n\n",
          "A=1|B=2|");
  HEADERS("HTTP/2 200\r\nA: 1\r\n\r\n", "A=1|");
  /* OWS trimmed, both sides, spaces and tabs */
  HEADERS("A:   v  \t\r\n", "A=v|");
  HEADERS("A:v\r\n", "A=v|");
  HEADERS("A:\t\tv\t\r\n", "A=v|");
  HEADERS("Retry-After:  5 \r\n", "Retry-After=5|");
  /* inner spaces kept */
  HEADERS("Date: Wed, 22 Jan 2025 10:36:19 GMT\r\n",
          "Date=Wed, 22 Jan 2025 10:36:19 GMT|");
  HEADERS("X-Msg:  a  b \t c  \r\n", "X-Msg=a  b \t c|");
  /* a colon in the value */
  HEADERS("Location: http://x:80/a:b\r\n", "Location=http://x:80/a:b|");
  HEADERS("A:: x\r\n", "A=: x|");
  /* empty values */
  HEADERS("X-Empty:\r\nX-Empty2:   \r\nX-E3:\t\r\n",
          "X-Empty=|X-Empty2=|X-E3=|");
  /* lines without ':' skipped */
  HEADERS("HTTP/1.1 200 OK\r\njunk line\r\nA: 1\r\nnocolon\r\nB: 2\r\n",
          "A=1|B=2|");
  /* empty name skipped */
  HEADERS(": x\r\nA: 1\r\n", "A=1|");
  /* names that are not tokens skipped */
  HEADERS("Bad Name: x\r\nBad : y\r\nGood: w\r\n", "Good=w|");
  HEADERS("X(y): 1\r\nNa\"me: 2\r\nA/B: 3\r\nA@B: 4\r\nA,B: 5\r\nA;B: 6\r\n"
          "A=B: 7\r\nA[B]: 8\r\nA{B}: 9\r\nA\\B: 10\r\nA?B: 11\r\nOk: 12\r\n",
          "Ok=12|");
  HEADERS("A\0B: 1\r\nA\x7f: 2\r\nA\x80: 3\r\nA\x01: 4\r\nOk: 5\r\n", "Ok=5|");
  HEADERS("X-Weird!#$%&'*+-.^_`|~: v\r\n", "X-Weird!#$%&'*+-.^_`|~=v|");
  HEADERS("x-periskope-trace-id: abc\r\n", "x-periskope-trace-id=abc|");
  /* obs-fold continuation lines skipped */
  HEADERS("A: 1\r\n  continued\r\n\tmore: x\r\n Good: z\r\nB: 2\r\n",
          "A=1|B=2|");
  HEADERS("HTTP/1.1 200 OK\r\n folded: 1\r\n", "");
  /* last line without a newline */
  HEADERS("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2", "A=1|B=2|");
  HEADERS("A: 1", "A=1|");
  HEADERS("A: 1\r", "A=1|");
  HEADERS("A:", "A=|");
  HEADERS("A", "");
  /* nothing */
  HEADERS("", "");
  HEADERS("\r\n", "");
  HEADERS("\r\n\r\n\n\n", "");
  HEADERS("HTTP/1.1 204 No Content\r\n\r\n", "");
  /* an interim response before the final one */
  HEADERS("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nA: 1\r\n\r\n",
          "A=1|");
  /* duplicates are all reported, in order */
  HEADERS("Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
          "Set-Cookie=a=1|Set-Cookie=b=2|");
  /* a field with a bare CR (or a NUL) in it is dropped, the fields
     around it stay (RFC 9110 5.5: a recipient must refuse or replace it;
     only the line's final CR belongs to the line end) */
  HEADERS("A: x\ry\r\nB: z\r\n", "B=z|");
  HEADERS("A: x\r\r\nB: z\r\n", "B=z|");
  HEADERS("A: 1\r\nB: x\0y\r\nC: 3\r\n", "A=1|C=3|");

  /* many headers */
  {
    psk_buf head, want;
    char line[64];
    int i;
    psk_buf_init(&head, 1 << 20);
    psk_buf_init(&want, 1 << 20);
    psk_buf_addstr(&head, "HTTP/1.1 200 OK\r\n");
    for (i = 0; i < 2000; i++) {
      snprintf(line, sizeof line, "X-H%d: value %d\r\n", i, i);
      psk_buf_addstr(&head, line);
      snprintf(line, sizeof line, "X-H%d=value %d|", i, i);
      psk_buf_addstr(&want, line);
    }
    psk_buf_addstr(&head, "\r\n");
    walk_is(psk_buf_cstr(&head), head.len, psk_buf_cstr(&want), __LINE__);
    psk_buf_free(&head);
    psk_buf_free(&want);
  }

  /* the fields point into the head, with the right lengths */
  {
    static const char head[] = "HTTP/1.1 200 OK\r\nX-A:  one two  \r\n";
    char *h = xdup(head, sizeof head - 1);
    psk_header hd;
    size_t pos = 0;
    CHECK(psk_header_next(h, sizeof head - 1, &pos, &hd) == 1);
    CHECK(hd.name == h + 17);
    CHECK(hd.name_len == 3);
    CHECK(hd.value == h + 23);
    CHECK(hd.value_len == 7);
    CHECK(memcmp(hd.value, "one two", 7) == 0);
    CHECK(psk_header_next(h, sizeof head - 1, &pos, &hd) == 0);
    CHECK(pos == sizeof head - 1);
    free(h);
  }
}

/* psk_head_unfold on an exact-length copy, then the walk. */
static void unfold_is(const char *head, size_t len, const char *want_head,
                      const char *want_fields, int line) {
  char *h = xdup(head, len);
  size_t n = psk_head_unfold(h, len), pos = 0;
  char *got;
  check_(n <= len, __FILE__, line, "unfold never grows", -1);
  check_(n == strlen(want_head) && memcmp(h, want_head, n) == 0, __FILE__,
         line, "unfolded head", -1);
  got = walk(h, n, &pos);
  check_str_(got, want_fields, __FILE__, line, "unfolded fields");
  free(got);
  free(h);
}

#define UNFOLD(lit, head, fields) unfold_is(S(lit), (head), (fields), __LINE__)

static void test_unfold(void) {
  /* the issue's case: the value is "10 20", not a whole number */
  UNFOLD("HTTP/1.1 204 No Content\r\nX-RateLimit-Limit: 10\r\n 20\r\n\r\n",
         "HTTP/1.1 204 No Content\r\nX-RateLimit-Limit: 10 20\r\n\r\n",
         "X-RateLimit-Limit=10 20|");
  /* several folds, tabs, whitespace around the fold: one space each */
  UNFOLD("S\r\nA: 1  \r\n \t 2\r\n\t3 \r\nB: x\r\n",
         "S\r\nA: 1 2 3 \r\nB: x\r\n", "A=1 2 3|B=x|");
  /* LF-only line ends */
  UNFOLD("S\nA: a\n b\nB: c\n", "S\nA: a b\nB: c\n", "A=a b|B=c|");
  /* an empty value continued, and an empty continuation */
  UNFOLD("S\r\nA:\r\n v\r\n", "S\r\nA: v\r\n", "A=v|");
  UNFOLD("S\r\nA: v\r\n   \r\nB: w\r\n", "S\r\nA: v\r\nB: w\r\n",
         "A=v|B=w|");
  /* no fold: unchanged */
  UNFOLD("HTTP/1.1 200 OK\r\nA: 1\r\n\r\n", "HTTP/1.1 200 OK\r\nA: 1\r\n\r\n",
         "A=1|");
  /* a fold right after the status line, or after the blank line, stays
     a continuation line, which the walk skips */
  UNFOLD("HTTP/1.1 200 OK\r\n folded: 1\r\nA: 2\r\n",
         "HTTP/1.1 200 OK\r\n folded: 1\r\nA: 2\r\n", "A=2|");
  UNFOLD("S\r\nA: 1\r\n\r\n x\r\n", "S\r\nA: 1\r\n\r\n x\r\n", "A=1|");
  /* a fold of junk stays junk; a fold at the very end, without its LF */
  UNFOLD("S\r\njunk\r\n more\r\nA: 1\r\n", "S\r\njunk more\r\nA: 1\r\n",
         "A=1|");
  UNFOLD("S\r\nA: 1\r\n 2", "S\r\nA: 1 2", "A=1 2|");
  /* a field with a bare CR stays dropped, folded or not */
  UNFOLD("S\r\nA: x\r\r\n y\r\nB: z\r\n", "S\r\nA: x\r\r\n y\r\nB: z\r\n",
         "B=z|");
  UNFOLD("S\r\nA: x\r\n y\rz\r\nB: z\r\n", "S\r\nA: x y\rz\r\nB: z\r\n",
         "B=z|");
  /* a line with a bare CR takes no continuation: trimmed, its CR would
     end the line, and the invalid field would become a valid one */
  UNFOLD("S\r\nA: x\r \n \nB: y\r\n", "S\r\nA: x\r \n \nB: y\r\n", "B=y|");
  UNFOLD("S\r\nA: v\r\n x\r \n \nB: y\r\n", "S\r\nA: v x\r \n \nB: y\r\n",
         "B=y|");
  /* nothing */
  UNFOLD("", "", "");
  UNFOLD(" x", " x", "");
}

/* ---- numbers and dates ---- */

static int parse_uint(const char *s, size_t n, long long *v) {
  char *p = xdup(s, n);
  int st = psk_parse_uint(p, n, v);
  free(p);
  return st;
}

static int parse_date(const char *s, size_t n, long long *v) {
  char *p = xdup(s, n);
  int st = psk_parse_http_date(p, n, v);
  free(p);
  return st;
}

static int retry_after(const char *s, size_t n, double now, double *w) {
  char *p = xdup(s, n);
  int st = psk_parse_retry_after(p, n, now, w);
  free(p);
  return st;
}

#define UINT_OK(lit, want)                                  \
  do {                                                      \
    long long v_ = -12345;                                  \
    CHECK(parse_uint(S(lit), &v_) == PSK_OK && v_ == (want)); \
  } while (0)
#define UINT_BAD(lit)                                  \
  do {                                                 \
    long long v_ = -12345;                             \
    CHECK(parse_uint(S(lit), &v_) == PSK_INVALID);     \
  } while (0)

static void test_parse_uint(void) {
  UINT_OK("10", 10);
  UINT_OK(" 10 ", 10);
  UINT_OK("\t10\t", 10);
  UINT_OK("  10", 10);
  UINT_OK("10  ", 10);
  UINT_OK("0", 0);
  UINT_OK("00", 0);
  UINT_OK("007", 7);
  UINT_OK("1737542181", 1737542181LL);
  UINT_OK("9007199254740991", 9007199254740991LL);
  UINT_OK("0009007199254740991", 9007199254740991LL);
  UINT_OK("9007199254740990", 9007199254740990LL);
  UINT_OK("900719925474099", 900719925474099LL);
  UINT_BAD("9007199254740992");
  UINT_BAD("9007199254740999");
  UINT_BAD("9999999999999999");
  UINT_BAD("18446744073709551616");
  UINT_BAD("99999999999999999999999999999");
  UINT_BAD("-1");
  UINT_BAD("-0");
  UINT_BAD("+1");
  UINT_BAD("1.5");
  UINT_BAD("1.");
  UINT_BAD("");
  UINT_BAD(" ");
  UINT_BAD("\t \t");
  UINT_BAD("abc");
  UINT_BAD("10x");
  UINT_BAD("x10");
  UINT_BAD("1e3");
  UINT_BAD("0x10");
  UINT_BAD("1 0");
  UINT_BAD("1,000");
  UINT_BAD("10\r\n");
  UINT_BAD("10\0");
  UINT_BAD("\00010");
  {
    long long v = 0;
    CHECK(psk_parse_uint("12345", 3, &v) == PSK_OK && v == 123); /* length */
  }
}

#define DATE_OK(lit, want)                                    \
  do {                                                        \
    long long v_ = -12345;                                    \
    CHECK(parse_date(S(lit), &v_) == PSK_OK && v_ == (want)); \
  } while (0)
#define DATE_BAD(lit)                                  \
  do {                                                 \
    long long v_ = -12345;                             \
    CHECK(parse_date(S(lit), &v_) == PSK_INVALID);     \
  } while (0)

static void prefixes_refused(const char *s, int line) {
  size_t n = strlen(s), k;
  long long v;
  for (k = 0; k < n; k++)
    check_(parse_date(s, k, &v) == PSK_INVALID, __FILE__, line,
           "a prefix of a date is refused", (long long)k);
}

static void test_http_date(void) {
  /* the three formats of RFC 9110 */
  DATE_OK("Sun, 06 Nov 1994 08:49:37 GMT", 784111777LL);
  DATE_OK("Sunday, 06-Nov-94 08:49:37 GMT", 784111777LL);
  DATE_OK("Sun Nov  6 08:49:37 1994", 784111777LL);
  DATE_OK("Wed, 22 Jan 2025 10:36:19 GMT", 1737542179LL);
  DATE_OK("Wednesday, 22-Jan-25 10:36:19 GMT", 1737542179LL);
  DATE_OK("Wed Jan 22 10:36:19 2025", 1737542179LL);
  DATE_OK("Thu, 01 Jan 1970 00:00:00 GMT", 0LL);
  DATE_OK("Thursday, 01-Jan-70 00:00:00 GMT", 0LL);
  DATE_OK("Thu Jan  1 00:00:00 1970", 0LL);
  DATE_OK("Fri, 31 Dec 1999 23:59:59 GMT", 946684799LL);
  DATE_OK("Wed, 01 Mar 2000 00:00:00 GMT", 951868800LL); /* after 29 Feb */
  DATE_OK("Thu, 29 Feb 2024 12:00:00 GMT", 1709208000LL);
  DATE_OK("Wed, 22 Jan 2025 10:36:21 GMT", 1737542181LL);
  DATE_OK("Sun, 06 Nov 1994 08:49:37 GMT", 784111777LL);
  /* every month */
  DATE_OK("Mon, 15 Jan 2024 00:00:00 GMT", 1705276800LL);
  DATE_OK("Thu, 15 Feb 2024 00:00:00 GMT", 1705276800LL + 31 * 86400LL);
  DATE_OK("Fri, 15 Mar 2024 00:00:00 GMT", 1705276800LL + 60 * 86400LL);
  DATE_OK("Mon, 15 Apr 2024 00:00:00 GMT", 1705276800LL + 91 * 86400LL);
  DATE_OK("Wed, 15 May 2024 00:00:00 GMT", 1705276800LL + 121 * 86400LL);
  DATE_OK("Sat, 15 Jun 2024 00:00:00 GMT", 1705276800LL + 152 * 86400LL);
  DATE_OK("Mon, 15 Jul 2024 00:00:00 GMT", 1705276800LL + 182 * 86400LL);
  DATE_OK("Thu, 15 Aug 2024 00:00:00 GMT", 1705276800LL + 213 * 86400LL);
  DATE_OK("Sun, 15 Sep 2024 00:00:00 GMT", 1705276800LL + 244 * 86400LL);
  DATE_OK("Tue, 15 Oct 2024 00:00:00 GMT", 1705276800LL + 274 * 86400LL);
  DATE_OK("Fri, 15 Nov 2024 00:00:00 GMT", 1705276800LL + 305 * 86400LL);
  DATE_OK("Sun, 15 Dec 2024 00:00:00 GMT", 1705276800LL + 335 * 86400LL);

  DATE_BAD("");
  DATE_BAD("garbage");
  DATE_BAD("784111777");
  DATE_BAD("1994-11-06T08:49:37Z");
  DATE_BAD("Sun, 06 Foo 1994 08:49:37 GMT"); /* wrong month */
  DATE_BAD("Sunday, 06-Foo-94 08:49:37 GMT");
  DATE_BAD("Sun Foo  6 08:49:37 1994");
  DATE_BAD("Sun, 06 November 1994 08:49:37 GMT");
  DATE_BAD("Sun, 06 Nov 1994 08:49:37");     /* missing GMT */
  DATE_BAD("Sunday, 06-Nov-94 08:49:37");
  DATE_BAD("Sun, 06 Nov 1994 08:49:37 UTC");
  DATE_BAD("Sun, 06 Nov 1994 08:49:37 +0000");
  DATE_BAD("Sun, 06 Nov 1994 08:49:37 GMTX");
  DATE_BAD("Sun, 06 Nov 1994 08:49:37 GMT x");
  DATE_BAD("Sun, 06 Nov 94 08:49:37 GMT");
  DATE_BAD("Sun, 06 Nov 1994 8:49:37 GMT");
  DATE_BAD("Sun, 06 Nov 1994 08:49 GMT");
  DATE_BAD("Sun, 06 Nov 1994 24:00:00 GMT");
  DATE_BAD("Sun, 06 Nov 1994 08:60:00 GMT");
  DATE_BAD("Sun, 06 Nov 1994 08:49:61 GMT");
  DATE_BAD("Sun, 00 Nov 1994 08:49:37 GMT");
  DATE_BAD("Sun, 32 Nov 1994 08:49:37 GMT");
  DATE_BAD("Sun, 0x Nov 1994 08:49:37 GMT");
  DATE_BAD("Sun,06 Nov 1994 08:49:37 GMT");
  DATE_BAD("Sun, 06  Nov 1994 08:49:37 GMT");
  DATE_BAD("Sun, 06-Nov 1994 08:49:37 GMT");
  DATE_BAD("Sun Nov  6 08:49:37");           /* asctime without year */
  DATE_BAD("Sun Nov  6 08:49:37 94");
  DATE_BAD("Sun Nov 6 08:49:37 1994");
  DATE_BAD("Sun Nov  6 08:49:37 1994 GMT");
  DATE_BAD("Sun, 06 Nov 1994 08:49:37 GMT\r\n");
  DATE_BAD("Sun, 06 Nov 1994 08:49:37 GMT\0");
  prefixes_refused("Sun, 06 Nov 1994 08:49:37 GMT", __LINE__);
  prefixes_refused("Sunday, 06-Nov-94 08:49:37 GMT", __LINE__);
  prefixes_refused("Sun Nov  6 08:49:37 1994", __LINE__);
  prefixes_refused("Sun Nov 16 08:49:37 1994", __LINE__);
}

static void test_retry_after(void) {
  double w;
  const double now = 1737542179.0; /* Wed, 22 Jan 2025 10:36:19 GMT */

  w = -1;
  CHECK(retry_after(S("5"), now, &w) == PSK_OK && w == 5);
  w = -1;
  CHECK(retry_after(S(" 5 "), now, &w) == PSK_OK && w == 5);
  w = -1;
  CHECK(retry_after(S("0"), now, &w) == PSK_OK && w == 0);
  w = -1;
  CHECK(retry_after(S("120"), now, &w) == PSK_OK && w == 120);
  w = -1;
  CHECK(retry_after(S("5"), 0, &w) == PSK_OK && w == 5); /* needs no clock */
  w = -1;
  CHECK(retry_after(S("Wed, 22 Jan 2025 10:36:22 GMT"), now, &w) == PSK_OK &&
        w == 3);
  w = -1;
  CHECK(retry_after(S("Wednesday, 22-Jan-25 10:36:22 GMT"), now, &w) ==
            PSK_OK &&
        w == 3);
  w = -1;
  CHECK(retry_after(S("Wed Jan 22 10:36:22 2025"), now, &w) == PSK_OK &&
        w == 3);
  w = -1;
  CHECK(retry_after(S("Wed, 22 Jan 2025 10:37:19 GMT"), now, &w) == PSK_OK &&
        w == 60);
  w = -1;
  CHECK(retry_after(S("Wed, 22 Jan 2025 10:36:19 GMT"), now, &w) == PSK_OK &&
        w == 0);
  w = -1;
  CHECK(retry_after(S("Wed, 22 Jan 2025 10:36:10 GMT"), now, &w) == PSK_OK &&
        w == 0); /* in the past */
  w = -1;
  CHECK(retry_after(S("Sun, 06 Nov 1994 08:49:37 GMT"), now, &w) == PSK_OK &&
        w == 0);
  w = -1;
  CHECK(retry_after(S("Wed, 22 Jan 2025 10:36:22 GMT"), now + 0.5, &w) ==
            PSK_OK &&
        w == 2.5);

  CHECK(retry_after(S(""), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("soon"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("-1"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("1.5"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("5s"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("Wed, 22 Jan 2025 10:36:22"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("tomorrow"), now, &w) == PSK_INVALID);

  /* too large to be a wait: longer than any max_retry_wait */
  w = -1;
  CHECK(retry_after(S("99999999999999999999"), now, &w) == PSK_TOO_LARGE &&
        w == HUGE_VAL);
  w = -1;
  CHECK(retry_after(S(" 9007199254740992 "), now, &w) == PSK_TOO_LARGE &&
        w == HUGE_VAL); /* 2^53: one past the exact integers */
  CHECK(retry_after(S("9007199254740991"), now, &w) == PSK_OK &&
        w == 9007199254740991.0);
  {
    char *big = filled('9', 400); /* 400 digits */
    CHECK(retry_after(big, 400, now, &w) == PSK_TOO_LARGE);
    free(big);
  }
  CHECK(retry_after(S("1e308"), now, &w) == PSK_TOO_LARGE && w == HUGE_VAL);
  CHECK(retry_after(S("1E400"), now, &w) == PSK_TOO_LARGE);
  CHECK(retry_after(S("2.5e+20"), now, &w) == PSK_TOO_LARGE);
  CHECK(retry_after(S("1e16"), now, &w) == PSK_TOO_LARGE);
  CHECK(retry_after(S("0.001e19"), now, &w) == PSK_TOO_LARGE);
  CHECK(retry_after(S("00012e15"), now, &w) == PSK_TOO_LARGE);
  /* exponent forms below that are not delay-seconds: still invalid */
  CHECK(retry_after(S("1e15"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("9.99e15"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("1e3"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("0e400"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("0.000e400"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("1e-400"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("1e"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("1.e20"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S(".5e20"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("-1e20"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("1e20x"), now, &w) == PSK_INVALID);
  CHECK(retry_after(S("inf"), now, &w) == PSK_INVALID);
}

/* ---- retries ---- */

static void test_retryable(void) {
  static const long yes[] = {429, 500, 502, 503, 504};
  static const long no[] = {0,   100, 200, 201, 204, 301, 302, 304, 400, 401,
                            403, 404, 405, 408, 409, 413, 422, 428, 430, 499,
                            501, 505, 506, 511, 599, 600, -1};
  size_t i;
  for (i = 0; i < sizeof yes / sizeof yes[0]; i++)
    CHECKI(psk_status_retryable(yes[i]), yes[i]);
  for (i = 0; i < sizeof no / sizeof no[0]; i++)
    CHECKI(!psk_status_retryable(no[i]), no[i]);

  CHECK(psk_kind_retryable(PSK_KIND_TIMEOUT));
  CHECK(psk_kind_retryable(PSK_KIND_CONNECT));
  CHECK(psk_kind_retryable(PSK_KIND_NETWORK));
  CHECK(!psk_kind_retryable(PSK_KIND_NONE));
  CHECK(!psk_kind_retryable(PSK_KIND_RESOLVE));
  CHECK(!psk_kind_retryable(PSK_KIND_TLS));
  CHECK(!psk_kind_retryable(PSK_KIND_TOO_LARGE));
  CHECK(!psk_kind_retryable(-1));
  CHECK(!psk_kind_retryable(99));

  /* the names the contract uses */
  CHECK_STR(psk_kind_names[PSK_KIND_TIMEOUT], "timeout");
  CHECK_STR(psk_kind_names[PSK_KIND_CONNECT], "connect");
  CHECK_STR(psk_kind_names[PSK_KIND_RESOLVE], "resolve");
  CHECK_STR(psk_kind_names[PSK_KIND_TLS], "tls");
  CHECK_STR(psk_kind_names[PSK_KIND_NETWORK], "network");
  CHECK_STR(psk_kind_names[PSK_KIND_TOO_LARGE], "too_large");
  CHECK_STR(psk_wait_reasons[PSK_WAIT_RETRY_AFTER], "retry-after");
  CHECK_STR(psk_wait_reasons[PSK_WAIT_RATE_LIMIT], "rate-limit");
  CHECK_STR(psk_wait_reasons[PSK_WAIT_BACKOFF], "backoff");
}

/* An outcome whose header values are exact-length heap copies. */
typedef struct outcome {
  psk_outcome o;
  char *ra, *reset, *date;
} outcome;

static char *opt_dup(const char *s, size_t *n) {
  if (!s) {
    *n = 0;
    return NULL;
  }
  *n = strlen(s);
  return xdup(s, *n);
}

static void outcome_set(outcome *x, long status, int kind, const char *ra,
                        const char *reset, const char *date) {
  memset(x, 0, sizeof *x);
  x->o.status = status;
  x->o.kind = kind;
  x->ra = opt_dup(ra, &x->o.retry_after_len);
  x->reset = opt_dup(reset, &x->o.reset_len);
  x->date = opt_dup(date, &x->o.date_len);
  x->o.retry_after = x->ra;
  x->o.reset = x->reset;
  x->o.date = x->date;
}

static void outcome_free(outcome *x) {
  free(x->ra);
  free(x->reset);
  free(x->date);
}

/* Returns psk_retry_plan's answer; *wait and *reason as it set them. */
static int plan(long status, int kind, const char *ra, const char *reset,
                const char *date, int attempt, double local_now, double jitter,
                double *wait, int *reason) {
  outcome x;
  int r;
  outcome_set(&x, status, kind, ra, reset, date);
  *wait = -99;
  *reason = -99;
  r = psk_retry_plan(&x.o, attempt, local_now, jitter, wait, reason);
  outcome_free(&x);
  return r;
}

static void test_retry_plan(void) {
  const char *date = "Wed, 22 Jan 2025 10:36:19 GMT";
  const double server_now = 1737542179.0;
  double w;
  int reason, r, attempt;
  static const double skews[] = {0, 1000, -1000, 86400, -86400, 0.75, -3600};
  size_t i;

  /* Retry-After in seconds */
  r = plan(429, 0, "2", NULL, NULL, 1, server_now, 0.5, &w, &reason);
  CHECK(r == 1 && w == 2 && reason == PSK_WAIT_RETRY_AFTER);
  r = plan(429, 0, "2", "1737542190", date, 1, server_now, 0.5, &w, &reason);
  CHECK(r == 1 && w == 2 && reason == PSK_WAIT_RETRY_AFTER); /* wins */
  r = plan(503, 0, "0", NULL, date, 3, server_now, 0.5, &w, &reason);
  CHECK(r == 1 && w == 0 && reason == PSK_WAIT_RETRY_AFTER);
  r = plan(500, 0, "30", NULL, NULL, 1, 0, 0, &w, &reason);
  CHECK(r == 1 && w == 30 && reason == PSK_WAIT_RETRY_AFTER);
  r = plan(502, 0, "7", NULL, NULL, 2, 0, 0, &w, &reason);
  CHECK(r == 1 && w == 7 && reason == PSK_WAIT_RETRY_AFTER);
  r = plan(504, 0, "1", NULL, NULL, 2, 0, 0, &w, &reason);
  CHECK(r == 1 && w == 1 && reason == PSK_WAIT_RETRY_AFTER);
  /* a large Retry-After is still the plan; the budget is the caller's */
  r = plan(429, 0, "3600", NULL, NULL, 1, 0, 0, &w, &reason);
  CHECK(r == 1 && w == 3600 && reason == PSK_WAIT_RETRY_AFTER);
  /* too large to represent: an endless wait, never the backoff (nor the
     reset) that an absent Retry-After would give */
  r = plan(503, 0, "99999999999999999999", NULL, NULL, 1, 0, 0, &w, &reason);
  CHECK(r == 1 && w == HUGE_VAL && reason == PSK_WAIT_RETRY_AFTER);
  r = plan(503, 0, "1e308", "1737542181", date, 1, server_now, 0, &w,
           &reason);
  CHECK(r == 1 && w == HUGE_VAL && reason == PSK_WAIT_RETRY_AFTER);
  r = plan(404, 0, "1e308", NULL, NULL, 1, 0, 0, &w, &reason);
  CHECK(r == 0); /* not retryable at all */

  /* Retry-After as a date: measured against Date, not the local clock */
  for (i = 0; i < sizeof skews / sizeof skews[0]; i++) {
    r = plan(429, 0, "Wed, 22 Jan 2025 10:36:22 GMT", NULL, date, 1,
             server_now + skews[i], 0.5, &w, &reason);
    CHECKI(r == 1 && w == 3 && reason == PSK_WAIT_RETRY_AFTER, i);
    r = plan(503, 0, "Wed, 22 Jan 2025 10:36:10 GMT", NULL, date, 1,
             server_now + skews[i], 0.5, &w, &reason);
    CHECKI(r == 1 && w == 0 && reason == PSK_WAIT_RETRY_AFTER, i);
  }
  /* without Date, the local clock */
  r = plan(429, 0, "Wed, 22 Jan 2025 10:36:22 GMT", NULL, NULL, 1,
           server_now + 1, 0.5, &w, &reason);
  CHECK(r == 1 && w == 2 && reason == PSK_WAIT_RETRY_AFTER);
  r = plan(429, 0, "Wed, 22 Jan 2025 10:36:22 GMT", NULL, "garbage", 1,
           server_now - 7, 0.5, &w, &reason);
  CHECK(r == 1 && w == 10 && reason == PSK_WAIT_RETRY_AFTER);

  /* X-RateLimit-Reset = Date + 2, whatever the local clock says */
  for (i = 0; i < sizeof skews / sizeof skews[0]; i++) {
    r = plan(429, 0, NULL, "1737542181", date, 1, server_now + skews[i], 0.5,
             &w, &reason);
    CHECKI(r == 1 && w == 2 && reason == PSK_WAIT_RATE_LIMIT, i);
    r = plan(429, 0, NULL, " 1737542181 ", date, 2, server_now + skews[i], 0,
             &w, &reason);
    CHECKI(r == 1 && w == 2 && reason == PSK_WAIT_RATE_LIMIT, i);
  }
  /* an unusable Retry-After falls through to the reset */
  r = plan(429, 0, "soon", "1737542181", date, 1, server_now + 1000, 0.5, &w,
           &reason);
  CHECK(r == 1 && w == 2 && reason == PSK_WAIT_RATE_LIMIT);
  /* reset without Date: against the local clock */
  r = plan(429, 0, NULL, "1737542181", NULL, 1, server_now - 3, 0.5, &w,
           &reason);
  CHECK(r == 1 && w == 5 && reason == PSK_WAIT_RATE_LIMIT);

  /* a reset now or in the past: backoff */
  for (i = 0; i < sizeof skews / sizeof skews[0]; i++) {
    r = plan(429, 0, NULL, "1737542170", date, 1, server_now + skews[i], 0,
             &w, &reason);
    CHECKI(r == 1 && w == 0.5 && reason == PSK_WAIT_BACKOFF, i);
    r = plan(429, 0, NULL, "1737542179", date, 2, server_now + skews[i], 0,
             &w, &reason);
    CHECKI(r == 1 && w == 1 && reason == PSK_WAIT_BACKOFF, i);
  }
  /* a reset that is not a number: backoff */
  r = plan(429, 0, NULL, "soon", date, 1, server_now, 0, &w, &reason);
  CHECK(r == 1 && w == 0.5 && reason == PSK_WAIT_BACKOFF);
  r = plan(429, 0, NULL, "-5", date, 1, server_now, 0, &w, &reason);
  CHECK(r == 1 && w == 0.5 && reason == PSK_WAIT_BACKOFF);

  /* no headers: backoff */
  r = plan(429, 0, NULL, NULL, NULL, 1, server_now, 0, &w, &reason);
  CHECK(r == 1 && w == 0.5 && reason == PSK_WAIT_BACKOFF);
  r = plan(429, 0, NULL, NULL, NULL, 1, server_now, 0.999999, &w, &reason);
  CHECK(r == 1 && w >= 0.5 && w < 0.625 && reason == PSK_WAIT_BACKOFF);
  r = plan(500, 0, NULL, NULL, NULL, 2, server_now, 0, &w, &reason);
  CHECK(r == 1 && w == 1 && reason == PSK_WAIT_BACKOFF);
  r = plan(500, 0, NULL, NULL, NULL, 2, server_now, 0.999999, &w, &reason);
  CHECK(r == 1 && w >= 1 && w < 1.25 && reason == PSK_WAIT_BACKOFF);
  {
    uint64_t st = 42;
    int k;
    for (k = 0; k < 1000; k++) {
      double j = psk_random(&st);
      r = plan(503, 0, NULL, NULL, date, 1, server_now, j, &w, &reason);
      CHECKI(r == 1 && w >= 0.5 && w < 0.625 && reason == PSK_WAIT_BACKOFF, k);
      r = plan(503, 0, NULL, NULL, date, 2, server_now, j, &w, &reason);
      CHECKI(r == 1 && w >= 1 && w < 1.25 && reason == PSK_WAIT_BACKOFF, k);
    }
  }

  /* not retryable statuses: no retry, whatever the headers */
  {
    static const long no[] = {200, 201, 204, 400, 401, 403, 404, 409, 422, 501};
    for (i = 0; i < sizeof no / sizeof no[0]; i++) {
      r = plan(no[i], 0, "2", "1737542181", date, 1, server_now, 0, &w,
               &reason);
      CHECKI(r == 0, no[i]);
      r = plan(no[i], PSK_KIND_TIMEOUT, NULL, NULL, NULL, 1, server_now, 0,
               &w, &reason);
      CHECKI(r == 0, no[i]); /* a status means an answer came */
    }
  }
  r = plan(404, 0, NULL, NULL, NULL, 1, server_now, 0, &w, &reason);
  CHECK(r == 0);

  /* failures without an answer */
  r = plan(0, PSK_KIND_TIMEOUT, NULL, NULL, NULL, 1, server_now, 0, &w,
           &reason);
  CHECK(r == 1 && w == 0.5 && reason == PSK_WAIT_BACKOFF);
  r = plan(0, PSK_KIND_CONNECT, NULL, NULL, NULL, 2, server_now, 0, &w,
           &reason);
  CHECK(r == 1 && w == 1 && reason == PSK_WAIT_BACKOFF);
  r = plan(0, PSK_KIND_NETWORK, NULL, NULL, NULL, 3, server_now, 0, &w,
           &reason);
  CHECK(r == 1 && w == 2 && reason == PSK_WAIT_BACKOFF);
  r = plan(0, PSK_KIND_TLS, NULL, NULL, NULL, 1, server_now, 0, &w, &reason);
  CHECK(r == 0);
  r = plan(0, PSK_KIND_RESOLVE, NULL, NULL, NULL, 1, server_now, 0, &w,
           &reason);
  CHECK(r == 0);
  r = plan(0, PSK_KIND_TOO_LARGE, NULL, NULL, NULL, 1, server_now, 0, &w,
           &reason);
  CHECK(r == 0);
  r = plan(0, PSK_KIND_NONE, NULL, NULL, NULL, 1, server_now, 0, &w, &reason);
  CHECK(r == 0);

  /* the backoff grows with attempt and every wait is >= 0 */
  {
    double prev = -1;
    for (attempt = 1; attempt <= 20; attempt++) {
      r = plan(503, 0, NULL, NULL, NULL, attempt, server_now, 0.3, &w,
               &reason);
      CHECKI(r == 1 && w >= 0.5 && w <= 37.5 && reason == PSK_WAIT_BACKOFF,
             attempt);
      CHECKI(w >= prev, attempt);
      prev = w;
    }
  }
}

static void test_backoff(void) {
  static const double jitters[] = {0, 0.25, 0.5, 0.999999};
  size_t j;
  int a;

  CHECK(psk_backoff(1, 0) == 0.5);
  CHECK(psk_backoff(2, 0) == 1);
  CHECK(psk_backoff(3, 0) == 2);
  CHECK(psk_backoff(4, 0) == 4);
  CHECK(psk_backoff(5, 0) == 8);
  CHECK(psk_backoff(6, 0) == 16);
  CHECK(psk_backoff(7, 0) == 30); /* capped */
  CHECK(psk_backoff(8, 0) == 30);
  CHECK(psk_backoff(100, 0) == 30);
  CHECK(psk_backoff(1, 0.5) == 0.5 * 1.125);
  CHECK(psk_backoff(100, 0.999999) <= 37.5);
  CHECK(psk_backoff(100, 0.999999) > 37);
  CHECK(psk_backoff(INT_MAX, 0.999999) <= 37.5);
  CHECK(psk_backoff(INT_MAX, 0) == 30);

  for (j = 0; j < sizeof jitters / sizeof jitters[0]; j++) {
    double prev = 0;
    for (a = 1; a <= 200; a++) {
      double b = psk_backoff(a, jitters[j]);
      CHECKI(b >= prev, a);
      CHECKI(b >= 0.5 && b <= 37.5, a);
      prev = b;
    }
  }
  /* more jitter, never less wait; up to a quarter more */
  for (a = 1; a <= 12; a++) {
    double b0 = psk_backoff(a, 0), b1 = psk_backoff(a, 0.5),
           b2 = psk_backoff(a, 0.999999);
    CHECKI(b0 <= b1 && b1 <= b2, a);
    CHECKI(b2 < b0 * 1.25, a);
  }
}

static void test_random(void) {
  static const uint64_t seeds[] = {1, 42, 0x9E3779B97F4A7C15ULL,
                                   0xFFFFFFFFFFFFFFFFULL, 0x8000000000000000ULL};
  size_t s;
  for (s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
    uint64_t st = seeds[s];
    double first = psk_random(&st), lo = 1, hi = 0, sum = 0;
    int k, in_range = 1, distinct = 0, nonzero_state = 1;
    int buckets[10] = {0}, empty = 0;
    for (k = 0; k < 10000; k++) {
      double v = psk_random(&st);
      if (!(v >= 0 && v < 1)) in_range = 0;
      if (v != first) distinct = 1;
      if (st == 0) nonzero_state = 0;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      sum += v;
      if (v >= 0 && v < 1) buckets[(int)(v * 10)]++;
    }
    for (k = 0; k < 10; k++)
      if (buckets[k] < 800) empty = 1;
    CHECKI(in_range, s);
    CHECKI(first >= 0 && first < 1, s);
    CHECKI(distinct, s);
    CHECKI(nonzero_state, s);
    CHECKI(lo < 0.01 && hi > 0.99, s);
    CHECKI(sum / 10000 > 0.45 && sum / 10000 < 0.55, s);
    CHECKI(!empty, s);
  }
  /* the state moves, and the same seed gives the same sequence */
  {
    uint64_t a = 7, b = 7;
    double x = psk_random(&a), y = psk_random(&b);
    CHECK(a != 7);
    CHECK(x == y && a == b);
    CHECK(psk_random(&a) != x);
  }
}

/* Answers with the same stale reset on each (the OpenAPI example: limit
   10, remaining 9, reset 1737542181, while Date says today), settled as a
   batch settles them, through psk_pace_plausible when fresh is set. Returns
   how many of 16 takes in a row may start once the first answer came. */
static int stale_batch(int fresh) {
  const long long date = 1764600000; /* 2025-12-01, the answer's Date */
  psk_budget b;
  int i, round, started = 0;
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, (double)date, 30, 0, 0) == 0); /* learns first */
  for (round = 0; round < 4; round++) {
    long long limit = 10, remaining = 9, reset = 1737542181;
    if (fresh) psk_pace_plausible(date, &limit, &remaining, &reset);
    /* The answers of the round before come back; then 16 takes. */
    for (i = 0; i < (round ? started : 1); i++)
      psk_budget_settle(&b, 1, limit, remaining, reset, -1);
    for (started = 0; started < 16; started++)
      if (psk_budget_take(&b, (double)date + round, 30, 0, 0) != 0) break;
  }
  return started;
}

static void test_stale_reset(void) {
  long long limit = 10, remaining = 9, reset = 1000;
  /* Up to PSK_RESET_STALE seconds before Date: kept (a server whose
     clocks differ a little); more: dropped, all three. */
  CHECK(psk_pace_plausible(1000 + PSK_RESET_STALE, &limit, &remaining, &reset) == 1);
  CHECK(limit == 10 && remaining == 9 && reset == 1000);
  CHECK(psk_pace_plausible(1001 + PSK_RESET_STALE, &limit, &remaining, &reset) == 0);
  CHECK(limit == -1 && remaining == -1 && reset == -1);
  /* A reset ahead of Date, no Date, or no reset: kept as they are. */
  limit = 10, remaining = 0, reset = 1002;
  CHECK(psk_pace_plausible(1000, &limit, &remaining, &reset) == 1);
  CHECK(limit == 10 && remaining == 0 && reset == 1002);
  reset = 5;
  CHECK(psk_pace_plausible(-1, &limit, &remaining, &reset) == 1 && reset == 5);
  reset = -1;
  CHECK(psk_pace_plausible(1000, &limit, &remaining, &reset) == 1);
  CHECK(limit == 10 && remaining == 0 && reset == -1);
  /* The batch keeps its 16 in flight; taken at their word, such answers
     would let ten start and then one at a time. */
  CHECK(stale_batch(1) == 16);
  CHECK(stale_batch(0) == 1);
}

/* Values no window Periskope keeps: a reset an hour or more past the
   answer's Date (a far value, or milliseconds) is dropped like a stale
   one; a nearer reset from a later answer replaces a far one; a store's
   reset past the horizon is forgotten at the next take; a retry waits no
   such reset out. */
static void test_implausible_reset(void) {
  long long limit = 2, remaining = 0, reset = 1000 + PSK_RESET_HORIZON;
  psk_budget b;
  psk_outcome o;
  double wait;
  int reason;
  char ms[32];
  /* Up to the horizon: kept; past it, or in milliseconds: dropped. */
  CHECK(psk_pace_plausible(1000, &limit, &remaining, &reset) == 1 &&
        reset == 1000 + PSK_RESET_HORIZON);
  reset = 1001 + PSK_RESET_HORIZON;
  CHECK(psk_pace_plausible(1000, &limit, &remaining, &reset) == 0);
  CHECK(limit == -1 && remaining == -1 && reset == -1);
  limit = 2, remaining = 0, reset = 1764600000123LL;
  CHECK(psk_pace_plausible(1764600000, &limit, &remaining, &reset) == 0);

  /* A far reset, then answers with the real one: the nearer replaces it
     and the window opens there, not an hour later. */
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, 2, 0, 1000 + 3000, 1000);
  CHECK(psk_budget_take(&b, 1001, 30, 0, 0) > 2990);
  psk_budget_learn(&b, 2, 0, 1004, 1002); /* a later answer, reset ahead */
  CHECK(b.reset == 1004 && b.reset_date == 1002);
  {
    double d = psk_budget_take(&b, 1002, 30, 0, 0);
    CHECK(d > 1.99 && d < 2.01);
  }
  CHECK(psk_budget_take(&b, 1004, 30, 0, 0) == 0); /* the window rolled */
  /* An answer of an earlier window (older Date), late: changes nothing. */
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, 10, 9, 1062, 1060);
  psk_budget_learn(&b, 10, 0, 1060, 1059);
  CHECK(b.reset == 1062 && b.reset_date == 1060);
  /* Nor a reset that had passed when the answer was made. */
  psk_budget_learn(&b, 10, 0, 1060, 1061);
  CHECK(b.reset == 1062);
  /* A budget holding a reset past the horizon (a store written by an
     older version) forgets it: one request finds out. */
  psk_budget_init(&b);
  b.learned = 1;
  b.limit = b.cap = b.taken = 2;
  b.reset = 1000 + PSK_RESET_HORIZON + 10;
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0 && b.reset == 0);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) < 0); /* its answer will tell */

  /* A 429 whose reset is in milliseconds: backoff, not 1.7e12 s. */
  memset(&o, 0, sizeof o);
  o.status = 429;
  snprintf(ms, sizeof ms, "%lld", 1764600002000LL);
  o.reset = ms;
  o.reset_len = strlen(ms);
  o.date = "Mon, 01 Dec 2025 14:40:00 GMT";
  o.date_len = strlen(o.date);
  CHECK(psk_retry_plan(&o, 1, 1764600000, 0, &wait, &reason) == 1);
  CHECK(reason == PSK_WAIT_BACKOFF && wait < 1);
}

/* The circuit: opens after `failures` unanswered requests in a row,
   refuses until the cooldown ends, lets one probe go, and closes at any
   answer; a failed probe opens it again. Off (failures 0): never holds. */
static void circuit_op(psk_shared *s, psk_pace_op *op, int settle,
                       double now, int answered, int unanswered,
                       int was_probe) {
  memset(op, 0, sizeof *op);
  op->local = 1;
  op->settle = settle;
  op->now = now;
  op->lease = 10;
  op->failures = 3;
  op->cooldown = 5;
  op->answered = answered;
  op->unanswered = unanswered;
  op->was_probe = was_probe;
  op->limit = op->remaining = op->reset = op->date = -1;
  psk_pace_apply(s, op);
}

static void test_circuit(void) {
  psk_shared s;
  psk_pace_op op;
  char text[PSK_BUDGET_TEXT];
  psk_shared d;
  int i;
  psk_shared_init(&s);
  circuit_op(&s, &op, 0, 1000, 0, 0, 0);
  CHECK(op.delay == 0 && !op.refused && !op.is_probe);
  circuit_op(&s, &op, 1, 1000, 1, 0, 0); /* answered: learns, unlimited */
  for (i = 0; i < 3; i++) {
    circuit_op(&s, &op, 0, 1001, 0, 0, 0);
    CHECK(op.delay == 0 && !op.refused);
  }
  circuit_op(&s, &op, 1, 1002, 0, 1, 0);
  circuit_op(&s, &op, 1, 1002, 0, 1, 0);
  CHECK(!op.open && op.fails == 2);
  circuit_op(&s, &op, 1, 1002, 0, 1, 0);
  CHECK(op.open && op.fails == 3 && s.circuit.open_until == 1007);
  /* Open: refused, saying how long. */
  circuit_op(&s, &op, 0, 1003, 0, 0, 0);
  CHECK(op.refused && op.delay == 4 && op.open);
  /* A caller without a circuit is not held by it. */
  memset(&op, 0, sizeof op);
  op.local = 1;
  op.now = 1003;
  op.lease = 10;
  psk_pace_apply(&s, &op);
  CHECK(!op.refused && op.delay == 0);
  circuit_op(&s, &op, 1, 1003, 1, 0, 0); /* its answer closes it */
  CHECK(!op.open && op.fails == 0);
  for (i = 0; i < 3; i++) circuit_op(&s, &op, 1, 1004, 0, 1, 0);
  CHECK(op.open && s.circuit.open_until == 1009);
  /* After the cooldown: one probe; the rest refused while it is out. */
  circuit_op(&s, &op, 0, 1009, 0, 0, 0);
  CHECK(!op.refused && op.is_probe && op.delay == 0);
  circuit_op(&s, &op, 0, 1009.5, 0, 0, 0);
  CHECK(op.refused && op.delay > 9 && op.delay <= 10);
  /* The circuit survives a store's text. */
  CHECK(psk_shared_encode(&s, text) > 0);
  CHECK(psk_shared_decode(&d, text, strlen(text)) == 0);
  CHECK(d.circuit.fails == s.circuit.fails &&
        d.circuit.open_until == s.circuit.open_until &&
        d.circuit.probe_until == s.circuit.probe_until);
  /* The probe fails: open again for a cooldown. */
  circuit_op(&s, &op, 1, 1010, 0, 1, 1);
  CHECK(op.open && s.circuit.open_until == 1015 && s.circuit.probe_until == 0);
  circuit_op(&s, &op, 0, 1015, 0, 0, 0);
  CHECK(op.is_probe && !op.refused);
  /* A failure that does not count (TLS) frees the probe's turn. */
  circuit_op(&s, &op, 1, 1015, 0, 0, 1);
  CHECK(op.open && s.circuit.probe_until == 0);
  circuit_op(&s, &op, 0, 1015, 0, 0, 0);
  CHECK(op.is_probe);
  /* Its answer closes it. */
  circuit_op(&s, &op, 1, 1016, 1, 0, 1);
  CHECK(!op.open && op.fails == 0);
  circuit_op(&s, &op, 0, 1016, 0, 0, 0);
  CHECK(!op.refused && op.delay == 0 && !op.is_probe);
  /* Texts of earlier versions still read, with a closed circuit. */
  CHECK(psk_shared_decode(&d, "p2 1 0 0 0 3 3 0 0 0 6 0", 24) == 0 &&
        d.circuit.open_until == 0 && d.budget.reset_date == 0);
  CHECK(psk_shared_decode(&d, "p3 1 0 0 0 3 3 0 0 0 7 -1 0 0 6 0", 34) == -1);
  CHECK(psk_shared_decode(&d, "p3 1 0 0 0 3 3 0 0 0 7 2 5 0 6 0", 32) == 0 &&
        d.circuit.fails == 2 && d.circuit.open_until == 5);
}

/* The request that went alone to learn the budget got no answer: the
   next ones go together, not alone one after the other (an outage costs
   one timeout, not one each); the first answer teaches the budget. */
static void test_unanswered_learner(void) {
  psk_budget b;
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) < 0);  /* waits for its answer */
  psk_budget_settle(&b, 0, -1, -1, -1, -1);        /* none came */
  CHECK(psk_budget_take(&b, 1001, 30, 0, 0) == 0);
  CHECK(psk_budget_take(&b, 1001, 30, 0, 0) == 0); /* together */
  CHECK(psk_budget_take(&b, 1001, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, 3, 0, 1003, 1001);       /* an answer: spent */
  CHECK(psk_budget_take(&b, 1001.5, 30, 0, 0) > 1.4);
  CHECK(!b.unlimited);
}

static void test_budget(void) {
  psk_budget b;
  psk_clock k = {0, 0, 0};
  char text[PSK_BUDGET_TEXT];
  int i;
  psk_budget_init(&b);
  /* Nothing learned: one request goes alone to learn the budget. */
  CHECK(psk_budget_take(&b, 1500, 30, 0, 0) == 0);
  CHECK(psk_budget_take(&b, 1500, 30, 0, 0) < 0);
  /* Its answer: 10 per window, 9 left, the window ends at 1502. */
  psk_budget_settle(&b, 1, 10, 9, 1502, -1);
  CHECK(b.taken == 1 && b.cap == 10 && b.inflight == 0);
  for (i = 0; i < 9; i++) CHECK(psk_budget_take(&b, 1500, 30, 0, 0) == 0);
  CHECK(b.taken == 10 && b.inflight == 9);
  /* Spent: the wait is the time to the reset, on the server's clock. */
  CHECK(psk_budget_take(&b, 1500, 30, 0, 0) > 1.99 &&
        psk_budget_take(&b, 1500, 30, 0, 0) < 2.01);
  CHECK(psk_budget_take(&b, 1501.5, 30, 0, 0) > 0.49);
  CHECK(b.taken == 10); /* a refused take counts nothing */
  /* Answers in any order: the server's count never lowers ours. */
  psk_budget_settle(&b, 1, 10, 5, 1502, -1);
  psk_budget_settle(&b, 1, 10, 8, 1502, -1);
  CHECK(b.taken == 10 && b.inflight == 7);
  /* The window ends with 3 still in flight: they may land in the next. */
  for (i = 0; i < 4; i++) psk_budget_settle(&b, 1, 10, 0, 1502, -1);
  CHECK(b.inflight == 3);
  CHECK(psk_budget_take(&b, 1502, 30, 0, 0) == 0);
  CHECK(b.reset == 0 && b.taken == 4 && b.inflight == 4);
  /* An answer from the old window changes nothing; the new one's first
     answer gives its end. Other processes' requests show in remaining. */
  psk_budget_settle(&b, 1, 10, 0, 1502, -1);
  CHECK(b.reset == 0 && b.taken == 4);
  psk_budget_settle(&b, 1, 10, 4, 1504, -1);
  CHECK(b.reset == 1504 && b.taken == 6 && b.inflight == 2);
  /* A window that opened unseen (another clock ran ahead): what is in
     flight may count in it, and its answer says the rest. */
  psk_budget_settle(&b, 1, 10, 7, 1506, -1);
  CHECK(b.reset == 1506 && b.taken == 3 && b.inflight == 1);
  /* A request that never answered (network failure) frees its slot in
     flight but stays counted. */
  psk_budget_settle(&b, 0, -1, -1, -1, -1);
  CHECK(b.inflight == 0 && b.taken == 3);
  /* force: past the budget on purpose, still counted. */
  psk_budget_settle(&b, 1, 10, 0, 1506, -1);
  CHECK(psk_budget_take(&b, 1505, 30, 0, 0) > 0);
  CHECK(psk_budget_take(&b, 1505, 30, 1, 0) == 0 && b.taken == 11);
  /* A process that died in flight: after its lease its slot is void. */
  CHECK(b.inflight == 1);
  CHECK(psk_budget_take(&b, 1536, 30, 0, 0) == 0 && b.inflight == 1);
  /* An answer without rate-limit headers (a proxy's 502) after a limit
     was shown does not make the budget unlimited. */
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, 2, 1, 1002, -1);
  CHECK(psk_budget_take(&b, 1002.5, 30, 0, 0) == 0); /* rolled over */
  psk_budget_settle(&b, 1, -1, -1, -1, -1);
  CHECK(!b.unlimited);
  CHECK(psk_budget_take(&b, 1002.5, 30, 0, 0) == 0);
  CHECK(psk_budget_take(&b, 1002.5, 30, 0, 0) < 0);
  /* psk_budget_learn: the values, without ending a request here. */
  b.inflight = 1;
  psk_budget_learn(&b, 2, 0, 1004, -1);
  CHECK(b.inflight == 1 && b.reset == 1004 && b.taken == 2);
  /* A server without rate-limit headers: unlimited. */
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, -1, -1, -1, -1);
  for (i = 0; i < 100; i++) CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0);
  /* Remaining without a limit: what remains less what is in flight. */
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, -1, 3, 1002, -1);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0);
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, -1, 1, 1002, -1); /* the other one still flies */
  CHECK(psk_budget_take(&b, 1000, 30, 0, 0) > 1.99);
  psk_budget_settle(&b, 1, -1, 0, 1002, -1);
  /* ...and at the reset, with no limit ever shown, learn again. */
  CHECK(psk_budget_take(&b, 1002, 30, 0, 0) == 0);
  CHECK(psk_budget_take(&b, 1002, 30, 0, 0) < 0);
  /* Limit 0 and nothing in flight: one request finds out, no busy loop. */
  psk_budget_init(&b);
  psk_budget_settle(&b, 1, 0, 0, 1001, -1);
  CHECK(psk_budget_take(&b, 1000.5, 30, 0, 0) > 0.49);
  CHECK(psk_budget_take(&b, 1001.5, 30, 0, 0) == 0);
  CHECK(psk_budget_take(&b, 1001.5, 30, 0, 0) < 0);

  /* Text round trip, and text that is not a budget. */
  psk_budget_init(&b);
  psk_budget_take(&b, 1000.25, 30, 0, 0);
  psk_budget_settle(&b, 1, 10, 9, 1002, -1);
  psk_budget_take(&b, 1000.5, 30, 0, 0);
  {
    psk_shared w, d;
    w.budget = b;
    w.queue.last = w.queue.n = 0;
    CHECK(psk_shared_encode(&w, text) > 0);
    CHECK(psk_shared_decode(&d, text, strlen(text)) == 0);
    CHECK(d.budget.learned == 1 && d.budget.reset == 1002 &&
          d.budget.limit == 10 && d.budget.cap == 10 && d.budget.taken == 2 &&
          d.budget.inflight == 1 && d.budget.lease > 1030.49 &&
          d.budget.lease < 1030.51);
    CHECK(psk_shared_decode(&d, "", 0) == -1 && d.budget.learned == 0);
    CHECK(psk_shared_decode(&d, "p1 1 0 5", 8) == -1 && d.budget.reset == 0);
    CHECK(psk_shared_decode(&d, text, strlen(text) - 1) == -1);
    strcat(text, "x");
    CHECK(psk_shared_decode(&d, text, strlen(text)) == -1);
    CHECK(psk_shared_decode(&d, "p1 2 0 0 0 -1 0 0 0 0", 21) == -1);
    CHECK(psk_shared_decode(&d, "p1 1 0 0 0 -1 0 -4 0 0", 22) == -1);
    CHECK(psk_shared_decode(&d, "p1 1 0 0 0 -1 0 4 0 0", 21) == 0);
    /* The text of the version before the queue: no one waiting. */
    CHECK(psk_shared_decode(&d, "p1 1 0 0 1002 10 10 2 1 1030.5", 30) == 0);
    CHECK(d.budget.reset == 1002 && d.budget.taken == 2 && d.queue.n == 0 &&
          d.queue.last == 0);
    CHECK(psk_shared_decode(&d, "p1 1 0 0 1002 10 10 2 1 1030.5 0 0", 34) ==
          -1);
  }

  /* The clock: between Date - received and Date + 1 - sent; it runs on
     the lower bound, so waits are never cut short. */
  CHECK(psk_clock_server(&k, 100) == 100);
  CHECK(psk_clock_probe(&k) == 0);
  psk_clock_learn(&k, -1, 99, 100);
  CHECK(!k.known);
  psk_clock_learn(&k, 1600, 1000.6, 1000.7); /* offset in [599.3, 600.4) */
  CHECK(k.known && k.offset > 599.29 && k.offset < 599.31);
  CHECK(k.upper > 600.39 && k.upper < 600.41);
  CHECK(psk_clock_probe(&k) > 0.54 || psk_clock_probe(&k) == 0);
  psk_clock_learn(&k, 1601, 1001.1, 1001.2); /* [599.8, 600.9) */
  CHECK(k.offset > 599.79 && k.offset < 599.81);
  CHECK(k.upper > 600.39 && k.upper < 600.41);
  CHECK(psk_clock_server(&k, 1002) > 1601.79);
  CHECK(psk_clock_probe(&k) > 0.29 && psk_clock_probe(&k) < 0.31);
  /* Bounds that cross (a clock was stepped): start over. */
  psk_clock_learn(&k, 1700, 1001.0, 1001.1);
  CHECK(k.offset > 698.89 && k.offset < 698.91 && k.upper > 699.99);

  /* The probe: the last slot of a window is held until `probe` before
     the window's last whole second, when that is near... */
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1000.1, 30, 0, 0.25) == 0);
  psk_budget_settle(&b, 1, 3, 2, 1002, -1);
  CHECK(psk_budget_take(&b, 1000.1, 30, 0, 0.25) == 0);
  {
    double d = psk_budget_take(&b, 1000.1, 30, 0, 0.25);
    CHECK(d > 0.64 && d < 0.66 && b.taken == 2); /* 1000.75 - 1000.1 */
  }
  CHECK(psk_budget_take(&b, 1000.75, 30, 0, 0.25) == 0 && b.taken == 3);
  /* ...never when it is far, past, or the clock is sure enough. */
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1000.1, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, 2, 1, 1060, -1);
  CHECK(psk_budget_take(&b, 1000.1, 30, 0, 0.25) == 0);
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1001.5, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, 2, 1, 1002, -1);
  CHECK(psk_budget_take(&b, 1001.5, 30, 0, 0.25) == 0);
  psk_budget_init(&b);
  CHECK(psk_budget_take(&b, 1000.1, 30, 0, 0) == 0);
  psk_budget_settle(&b, 1, 2, 1, 1002, -1);
  CHECK(psk_budget_take(&b, 1000.1, 30, 0, 0) == 0);
}

/* psk_pace_apply: the one operation every store runs. */
static void test_pace_op(void) {
  psk_shared b;
  psk_budget seed;
  psk_pace_op op;
  char text[PSK_BUDGET_TEXT], out[PSK_BUDGET_TEXT];
  size_t n;

  /* A store that knows nothing starts from the taker's budget, keeping
     its own count of requests in flight -- and, since others' requests in
     flight in the seed's window are unknown, that window counts as spent:
     the take waits for its reset. */
  psk_budget_init(&seed);
  psk_budget_take(&seed, 1000, 30, 0, 0);
  psk_budget_settle(&seed, 1, 10, 9, 1002, -1);
  psk_shared_init(&b);
  b.budget.inflight = 2;
  b.budget.lease = 1030;
  memset(&op, 0, sizeof op);
  op.now = 1000.5;
  op.lease = 30;
  op.seed = &seed;
  psk_pace_apply(&b, &op);
  CHECK(op.delay > 1.49 && op.delay < 1.51);
  CHECK(b.budget.learned && b.budget.limit == 10 && b.budget.reset == 1002 &&
        b.budget.cap == 10 && b.budget.taken == 10);
  CHECK(b.budget.inflight == 2); /* its own 2 */
  /* The next window is paced as usual. */
  memset(&op, 0, sizeof op);
  op.now = 1002;
  op.lease = 30;
  psk_pace_apply(&b, &op);
  CHECK(op.delay == 0);
  CHECK(b.budget.inflight == 3); /* its own 2, and this one */
  CHECK(b.budget.taken == 3);    /* the 2 still in flight, and this one */
  /* A seed whose window is over seeds a store that goes at once. */
  {
    psk_shared fresh;
    psk_shared_init(&fresh);
    memset(&op, 0, sizeof op);
    op.now = 1003;
    op.lease = 30;
    op.seed = &seed;
    psk_pace_apply(&fresh, &op);
    CHECK(op.delay == 0 && fresh.budget.taken == 1);
  }

  /* Unsettled slots of this process come off first; never below 0. */
  memset(&op, 0, sizeof op);
  op.settle = 1;
  op.unsettled = 2;
  op.answered = 1;
  op.limit = 10;
  op.remaining = 8;
  op.reset = 1002;
  psk_pace_apply(&b, &op);
  CHECK(b.budget.inflight == 0);
  memset(&op, 0, sizeof op);
  op.settle = 1;
  op.unsettled = 99;
  psk_pace_apply(&b, &op);
  CHECK(b.budget.inflight == 0);

  /* A learned store is not overwritten by the seed. */
  seed.limit = 99;
  memset(&op, 0, sizeof op);
  op.now = 1002.1;
  op.lease = 30;
  op.seed = &seed;
  psk_pace_apply(&b, &op);
  CHECK(b.budget.limit == 10 && op.delay == 0);

  /* The text form: unknown text is a fresh budget; the result encodes. */
  memset(&op, 0, sizeof op);
  op.now = 1000;
  op.lease = 30;
  psk_pace_apply_text("garbage", 7, &op, out);
  CHECK(op.delay == 0);
  CHECK(psk_shared_decode(&b, out, strlen(out)) == 0);
  CHECK(b.budget.inflight == 1 && b.budget.taken == 1 && !b.budget.learned);
  n = psk_shared_encode(&b, text);
  memset(&op, 0, sizeof op);
  op.now = 1000;
  op.lease = 30;
  psk_pace_apply_text(text, n, &op, out); /* the first goes alone */
  CHECK(op.delay < 0);
  CHECK(op.ticket == 1); /* ... the second waits, first in the queue */
  n = strlen(out);
  memcpy(text, out, n + 1);
  op.now = 1000.05; /* asks again with it: nothing to write */
  psk_pace_apply_text(text, n, &op, out);
  CHECK(op.delay < 0 && op.ticket == 1);
  CHECK_STR(out, text);
}

/* Takes with ticket t (in and out) at time now; the delay. */
static double queued_take(psk_shared *b, long long *t, double now) {
  psk_pace_op op;
  memset(&op, 0, sizeof op);
  op.now = now;
  op.lease = 30;
  op.ticket = *t;
  psk_pace_apply(b, &op);
  *t = op.ticket;
  return op.delay;
}

static void settle_answer(psk_shared *b, long long remaining,
                          long long reset) {
  psk_pace_op op;
  memset(&op, 0, sizeof op);
  op.settle = 1;
  op.answered = 1;
  op.limit = 3;
  op.remaining = remaining;
  op.reset = reset;
  psk_pace_apply(b, &op);
}

/* The lease of ticket t in q, or -1. */
static long long lease_of(const psk_queue *q, long long t) {
  int i;
  for (i = 0; i < q->n; i++)
    if (q->id[i] == t) return q->until[i];
  return -1;
}

/* The queue: waiters are served in the order they began to wait, across
   windows; a ticket whose holder stopped asking expires; the text keeps
   it all. */
static void test_pace_queue(void) {
  psk_shared b, d;
  long long t[6] = {0, 0, 0, 0, 0, 0}, before;
  char text[PSK_BUDGET_TEXT], again[PSK_BUDGET_TEXT];
  int i;

  /* A budget of 3 per window, spent until 1002. */
  psk_shared_init(&b);
  CHECK(queued_take(&b, &t[0], 1000) == 0 && t[0] == 0);
  settle_answer(&b, 2, 1002);
  CHECK(queued_take(&b, &t[0], 1000) == 0);
  CHECK(queued_take(&b, &t[0], 1000) == 0);
  /* Five wait, in this order: tickets 1..5. */
  for (i = 1; i <= 5; i++) {
    CHECK(queued_take(&b, &t[i], 1000 + i * 0.01) > 1.9);
    CHECKI(t[i] == i, i);
  }
  CHECK(b.queue.n == 5 && b.queue.last == 5);
  /* The window ends; the three requests ended. A newcomer, and the
     fourth and fifth, are refused: the three free slots are the first
     three waiters'. */
  for (i = 0; i < 3; i++) settle_answer(&b, 0, 1002);
  before = 0;
  CHECK(queued_take(&b, &before, 1002.01) != 0 && before == 6);
  CHECK(queued_take(&b, &t[5], 1002.02) < 0 && t[5] == 5);
  CHECK(queued_take(&b, &t[4], 1002.03) < 0 && t[4] == 4);
  /* The third goes before the first and second, and leaves the queue. */
  CHECK(queued_take(&b, &t[3], 1002.04) == 0 && t[3] == 0);
  CHECK(queued_take(&b, &t[1], 1002.05) == 0 && t[1] == 0);
  CHECK(queued_take(&b, &t[2], 1002.06) == 0 && t[2] == 0);
  CHECK(queued_take(&b, &t[4], 1002.07) != 0 && t[4] == 4);
  CHECK(b.queue.n == 3); /* 4, 5 and the newcomer 6 */

  /* The text keeps the queue, and reads back the same. */
  CHECK(psk_shared_encode(&b, text) > 0);
  CHECK(psk_shared_decode(&d, text, strlen(text)) == 0);
  CHECK(d.queue.n == 3 && d.queue.last == 6 && d.queue.id[0] == 4 &&
        d.queue.id[2] == 6);
  for (i = 0; i < 3; i++) CHECKI(d.queue.until[i] == b.queue.until[i], i);
  CHECK(psk_shared_encode(&d, again) == strlen(text));
  CHECK_STR(again, text);
  /* Tickets out of order, above the last given, or a gap of 0 between
     two: not a queue. */
  CHECK(psk_shared_decode(&d, "p2 1 0 0 0 3 3 0 0 0 6 2 100 1:0 0:0", 36) ==
        -1);
  CHECK(psk_shared_decode(&d, "p2 1 0 0 0 3 3 0 0 0 6 1 100 7:0", 32) == -1);
  CHECK(psk_shared_decode(&d, "p2 1 0 0 0 3 3 0 0 0 6 2 100 2:0 1:5", 36) ==
        0);
  CHECK(d.queue.id[0] == 4 && d.queue.id[1] == 5 && d.queue.until[1] == 105);
  CHECK(psk_shared_decode(&d, "p2 1 0 0 0 3 3 0 0 0 6 1 100 2:0 x", 34) ==
        -1);
  CHECK(psk_shared_decode(&d, "p2 1 0 0 0 3 3 0 0 0 6 129", 26) == -1);

  /* Ticket 4's holder dies; 5 and 6 keep asking. Once the next window
     opens (1004), 4 still holds the first of its three slots until its
     lease ends: PSK_TICKET_GRACE after its last ask (1002.07), which was
     told to ask again shortly. */
  for (i = 0; i < 3; i++) settle_answer(&b, 0, 1004);
  CHECK(queued_take(&b, &t[5], 1004.01) == 0 && t[5] == 0);
  CHECK(queued_take(&b, &before, 1004.02) == 0 && before == 0);
  CHECK(b.budget.taken == 2 && b.queue.n == 1 && b.queue.id[0] == 4);
  t[0] = 0;
  CHECK(queued_take(&b, &t[0], 1004.03) != 0 && t[0] == 7);
  CHECK(queued_take(&b, &t[0], 1002.07 + PSK_TICKET_GRACE - 0.1) != 0);
  /* Past 4's lease: 7 goes. */
  CHECK(queued_take(&b, &t[0], 1002.07 + PSK_TICKET_GRACE + 0.1) == 0);
  CHECK(b.queue.n == 0);

  /* A ticket that expired while its holder still waited goes back to its
     place when the holder asks again; ticket numbers of another store
     (above the last given) are a new wait. */
  psk_shared_init(&b);
  t[1] = t[2] = t[3] = 0;
  CHECK(queued_take(&b, &t[1], 2000) == 0);
  CHECK(queued_take(&b, &t[1], 2000) < 0 && t[1] == 1);
  CHECK(queued_take(&b, &t[2], 2000) < 0 && t[2] == 2);
  CHECK(queued_take(&b, &t[2], 2000 + PSK_TICKET_GRACE - 0.5) < 0);
  CHECK(queued_take(&b, &t[2], 2000 + PSK_TICKET_GRACE + 0.5) < 0);
  CHECK(b.queue.n == 1 && b.queue.id[0] == 2); /* 1 expired */
  CHECK(queued_take(&b, &t[1], 2000 + PSK_TICKET_GRACE + 0.6) < 0);
  CHECK(b.queue.n == 2 && b.queue.id[0] == 1 && t[1] == 1);
  t[3] = 99;
  CHECK(queued_take(&b, &t[3], 2004) < 0 && t[3] == 3);

  /* A lease is written again only when it would end less than
     PSK_TICKET_MARGIN after the holder's next ask. */
  before = lease_of(&b.queue, 3);
  CHECK(before == (2004 + (long long)PSK_TICKET_GRACE) * 10);
  CHECK(queued_take(&b, &t[3],
                    2004 + PSK_TICKET_GRACE - PSK_TICKET_MARGIN - 0.1) < 0);
  CHECK(lease_of(&b.queue, 3) == before);
  CHECK(queued_take(&b, &t[3],
                    2004 + PSK_TICKET_GRACE - PSK_TICKET_MARGIN + 0.1) < 0);
  CHECK(lease_of(&b.queue, 3) > before);

  /* A forced take goes at once and leaves the queue. */
  {
    psk_pace_op op;
    memset(&op, 0, sizeof op);
    op.now = 2005;
    op.lease = 30;
    op.force = 1;
    op.ticket = t[2];
    psk_pace_apply(&b, &op);
    CHECK(op.delay == 0 && op.ticket == 0);
    CHECK(b.queue.n == 2 && b.queue.id[0] == 1 && b.queue.id[1] == 3);
  }

  /* A full queue: one more waits without a place, behind it. */
  psk_shared_init(&b);
  before = 0;
  CHECK(queued_take(&b, &before, 3000) == 0);
  for (i = 0; i < PSK_QUEUE_MAX; i++) {
    long long w = 0;
    CHECKI(queued_take(&b, &w, 3000) < 0 && w == i + 1, i);
  }
  before = 0;
  CHECK(queued_take(&b, &before, 3000) < 0 && before == 0);
  CHECK(b.queue.n == PSK_QUEUE_MAX);
  CHECK(psk_shared_encode(&b, text) > 0);
  CHECK(psk_shared_decode(&d, text, strlen(text)) == 0 &&
        d.queue.n == PSK_QUEUE_MAX);
  /* The longest text a queue can have fits. */
  for (i = 0; i < PSK_QUEUE_MAX; i++) {
    b.queue.id[i] = (i + 1) * (1000000000000000LL / PSK_QUEUE_MAX);
    b.queue.until[i] = i ? 1000000000000000LL : 0;
  }
  b.queue.last = 1000000000000000LL;
  b.budget.prev = b.budget.reset = b.budget.limit = 1000000000000000LL;
  b.budget.cap = b.budget.taken = b.budget.inflight = 1000000000000000LL;
  b.budget.lease = 999999999999.999;
  CHECK(psk_shared_encode(&b, text) > 4000);
  CHECK(psk_shared_decode(&d, text, strlen(text)) == 0 &&
        d.queue.n == PSK_QUEUE_MAX && d.queue.until[1] == 1000000000000000LL);
}

/* n processes share one stored budget of b requests per w-second window
   (a server like Periskope's: a window opens at the whole second nearest
   its first request, 429 past b), each pinning `pins` messages one at a
   time: asking for a slot (with its ticket), waiting as told (asking
   every 0.05 s when told to ask shortly), sending, settling the answer
   0.01 s later. Ties go to the lowest process, the order a race would
   favour. Returns the slowest pin's seconds (asking to answer); *n429
   the 429s, *end when the last pin ended. */
static double simulate_fair(int n, int b, int w, int pins, int *n429,
                            double *end) {
  enum { ASK, SENT };
  psk_shared shared;
  double next[64], start[64], slowest = 0, wstart = -1;
  long long ticket[64], used = 0;
  int state[64], left[64], i;
  psk_shared_init(&shared);
  *n429 = 0;
  *end = 0;
  for (i = 0; i < n; i++) {
    next[i] = start[i] = 1000;
    ticket[i] = 0;
    state[i] = ASK;
    left[i] = pins;
  }
  for (;;) {
    psk_pace_op op;
    int p = -1;
    double t;
    for (i = 0; i < n; i++)
      if (left[i] && (p < 0 || next[i] < next[p])) p = i;
    if (p < 0) break;
    t = next[p];
    memset(&op, 0, sizeof op);
    if (state[p] == ASK) {
      op.now = t;
      op.lease = 30;
      op.ticket = ticket[p];
      psk_pace_apply(&shared, &op);
      ticket[p] = op.ticket;
      if (op.delay == 0) {
        /* The server counts it halfway. */
        double at = t + 0.005;
        if (wstart < 0 || at >= wstart + w) {
          wstart = (double)(long long)(at + 0.5);
          used = 0;
        }
        used++;
        op.settle = 1;
        op.answered = 1;
        op.limit = b;
        op.remaining = used < b ? b - used : 0;
        op.reset = (long long)wstart + w;
        state[p] = SENT;
        next[p] = t + 0.01;
        if (used > b) (*n429)++;
        /* kept in op until the answer arrives */
        psk_pace_apply(&shared, &op);
      } else {
        next[p] = t + (op.delay > 0 ? op.delay : 0.05);
      }
    } else {
      state[p] = ASK;
      if (t - start[p] > slowest) slowest = t - start[p];
      if (t > *end) *end = t;
      left[p]--;
      start[p] = next[p] = t;
    }
  }
  return slowest;
}

/* With N processes each waiting for one slot and a budget of B per
   window, no pin waits more than ceil(N / B) + 1 windows, and the
   windows are used in full. */
static void test_pace_fair(void) {
  static const int cases[][3] = {{4, 10, 10}, {16, 10, 5}, {64, 10, 2},
                                 {16, 3, 3}};
  size_t c;
  for (c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int n = cases[c][0], b = cases[c][1], pins = cases[c][2], n429;
    int windows = (n + b - 1) / b + 1;
    double end, slowest = simulate_fair(n, b, 2, pins, &n429, &end);
    double ideal = (double)n * pins / b * 2;
    CHECKI(slowest <= windows * 2 + 0.1, n);
    CHECKI(n429 == 0, n);
    CHECKI(end - 1000 <= ideal + 2.5, n);
    if (slowest > windows * 2 + 0.1 || end - 1000 > ideal + 2.5)
      printf("  %d processes, %d per window: slowest %.2f s, all in %.2f s\n",
             n, b, slowest, end - 1000);
  }
}

/* ---- psk_resp ---- */

/* The Redis store's limits (psk_redis.c): arrays of at most 2 scalars,
   strings of at most 4608 bytes, lines of at most 1024. */
static const psk_resp_limits RESP_LIMITS = {4608, 2, 1, 1024};

/* Feeds n bytes, waiting for `waited` replies, in one piece and then
   one byte at a time; both must agree. The status; *done the replies
   seen. */
static int resp_run(const char *in, size_t n, unsigned long waited,
                    unsigned long *done) {
  psk_resp_scan whole, bytes;
  char *copy = xdup(in, n);
  int st_whole, st_bytes = PSK_RESP_OK;
  size_t i;
  psk_resp_init(&whole, &RESP_LIMITS);
  psk_resp_wait(&whole, waited);
  st_whole = psk_resp_feed(&whole, copy, n);
  psk_resp_init(&bytes, &RESP_LIMITS);
  psk_resp_wait(&bytes, waited);
  for (i = 0; i < n && st_bytes == PSK_RESP_OK; i++) {
    char *one = xdup(copy + i, 1);
    st_bytes = psk_resp_feed(&bytes, one, 1);
    free(one);
  }
  CHECK(st_whole == st_bytes);
  CHECK(whole.done == bytes.done);
  free(copy);
  if (done) *done = whole.done;
  return st_whole;
}

static void test_resp(void) {
  static const struct {
    const char *in;
    size_t n;
    unsigned long waited, done;
  } good[] = {
      {S("+OK\r\n"), 1, 1},
      {S("-ERR wrong number of arguments\r\n"), 1, 1},
      {S(":0\r\n"), 1, 1},
      {S(":-42\r\n"), 1, 1},
      {S("$40\r\nfa58d8ae174349690353dfffa7a0ddf920264a09\r\n"), 1, 1},
      {S("$0\r\n\r\n"), 1, 1},
      {S("$-1\r\n"), 1, 1},
      {S("*-1\r\n"), 1, 1},
      {S("*0\r\n"), 1, 1},
      {S("*1\r\n:1\r\n"), 1, 1},
      {S("*2\r\n:0\r\n$5\r\np2 1\n\r\n"), 1, 1},
      {S("*2\r\n:0\r\n$-1\r\n"), 1, 1},
      {S("$2\r\n\r\n\r\n"), 1, 1},  /* CRLF inside a string is its bytes */
      {S("+OK\r\n+OK\r\n$40\r\nfa58d8ae174349690353dfffa7a0ddf920264a09\r\n*1\r\n:1\r\n"), 4, 4},
      /* Part of a reply: accepted, not yet done. */
      {S("*2\r\n:0\r\n"), 1, 0},
      {S("$5\r\nab"), 1, 0},
      {S("+OK\r"), 1, 0},
      {S("*2"), 1, 0},
      {S(""), 0, 0},
  };
  static const struct {
    const char *in;
    size_t n;
    unsigned long waited;
    int status;
  } bad[] = {
      /* Refused at the header's digits, before its CRLF. */
      {S("*2000000000\r\n"), 1, PSK_RESP_TOO_LARGE},
      {S("*3"), 1, PSK_RESP_TOO_LARGE},
      {S("$2000000000\r\n"), 1, PSK_RESP_TOO_LARGE},
      {S("$4609"), 1, PSK_RESP_TOO_LARGE},
      {S("$99999999999999999999999999999"), 1, PSK_RESP_TOO_LARGE},
      {S("*00000000000000000000000000003"), 1, PSK_RESP_TOO_LARGE},
      {S("*1\r\n*1\r\n:1\r\n"), 1, PSK_RESP_TOO_LARGE}, /* nested */
      {S("*2\r\n:0\r\n*1\r\n"), 1, PSK_RESP_TOO_LARGE},
      /* Not RESP2. */
      {S("?\r\n"), 1, PSK_RESP_BAD},
      {S("%1\r\n"), 1, PSK_RESP_BAD},  /* RESP3: not asked for */
      {S("\0"), 1, PSK_RESP_BAD},
      {S("+OK\n"), 1, PSK_RESP_BAD},
      {S("+OK\rX"), 1, PSK_RESP_BAD},
      {S("$3\r\nabcX"), 1, PSK_RESP_BAD},
      {S("$3\r\nabc\rX"), 1, PSK_RESP_BAD},
      {S("$-2\r\n"), 1, PSK_RESP_BAD},
      {S("$-0\r\n"), 1, PSK_RESP_BAD},
      {S("*-\r\n"), 1, PSK_RESP_BAD},
      {S("$\r\n"), 1, PSK_RESP_BAD},
      {S("$1a\r\n"), 1, PSK_RESP_BAD},
      {S("$1-\r\n"), 1, PSK_RESP_BAD},
      {S("$ 1\r\n"), 1, PSK_RESP_BAD},
      /* More than was asked for. */
      {S("+OK\r\n+OK\r\n"), 1, PSK_RESP_EXTRA},
      {S("+OK\r\n"), 0, PSK_RESP_EXTRA},
      {S("*1\r\n:1\r\n:1\r\n"), 1, PSK_RESP_EXTRA},
  };
  size_t i;
  for (i = 0; i < sizeof good / sizeof good[0]; i++) {
    unsigned long done = 99;
    CHECKI(resp_run(good[i].in, good[i].n, good[i].waited, &done) ==
               PSK_RESP_OK, i);
    CHECKI(done == good[i].done, i);
  }
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECKI(resp_run(bad[i].in, bad[i].n, bad[i].waited, NULL) ==
               bad[i].status, i);

  /* The limits themselves: a string of 4608 bytes and a line of 1024
     pass; one byte more is refused before the rest arrives. */
  {
    size_t n = 4608;
    char *in = malloc(n + 16), *line = filled('e', 1025);
    psk_resp_scan s;
    int len = snprintf(in, 16, "$%zu\r\n", n);
    memset(in + len, 'x', n);
    memcpy(in + len + n, "\r\n", 2);
    CHECK(resp_run(in, (size_t)len + n + 2, 1, NULL) == PSK_RESP_OK);
    line[0] = '-';
    CHECK(resp_run(line, 1025, 1, NULL) == PSK_RESP_OK); /* 1024 after '-' */
    psk_resp_init(&s, &RESP_LIMITS);
    psk_resp_wait(&s, 1);
    CHECK(psk_resp_feed(&s, line, 1025) == PSK_RESP_OK);
    CHECK(psk_resp_feed(&s, "e", 1) == PSK_RESP_TOO_LARGE);
    CHECK(s.why != NULL && strstr(s.why, "line") != NULL);
    free(line);
    free(in);
  }

  /* An error stays: later bytes, even good ones, get it again. */
  {
    psk_resp_scan s;
    psk_resp_init(&s, &RESP_LIMITS);
    psk_resp_wait(&s, 2);
    CHECK(psk_resp_feed(&s, S("*2000000000")) == PSK_RESP_TOO_LARGE);
    CHECK(s.why != NULL && strstr(s.why, "array") != NULL);
    CHECK(psk_resp_feed(&s, S("+OK\r\n")) == PSK_RESP_TOO_LARGE);
    CHECK(s.done == 0);
  }

  /* Replies waited for as commands go: one more after the first. */
  {
    psk_resp_scan s;
    psk_resp_init(&s, &RESP_LIMITS);
    psk_resp_wait(&s, 1);
    CHECK(psk_resp_feed(&s, S("-NOSCRIPT No matching script.\r\n")) == PSK_RESP_OK);
    CHECK(s.done == 1);
    psk_resp_wait(&s, 2);
    CHECK(psk_resp_feed(&s, S("$40\r\nfa58d8ae174349690353dfffa7a0ddf920264a09\r\n*1\r\n")) ==
          PSK_RESP_OK);
    CHECK(s.done == 2);
    CHECK(psk_resp_feed(&s, S(":1\r\n")) == PSK_RESP_OK);
    CHECK(s.done == 3);
    CHECK(psk_resp_feed(&s, S("+")) == PSK_RESP_EXTRA);
  }

  /* Depth and limits out of range are clamped: a depth of 0 takes no
     array at all, one above PSK_RESP_DEPTH takes PSK_RESP_DEPTH. */
  {
    psk_resp_limits flat = {16, 4, 0, 64}, deep = {16, 4, 99, 64};
    psk_resp_scan s;
    int d;
    psk_resp_init(&s, &flat);
    psk_resp_wait(&s, 1);
    CHECK(psk_resp_feed(&s, S("*1\r\n")) == PSK_RESP_TOO_LARGE);
    psk_resp_init(&s, &deep);
    psk_resp_wait(&s, 1);
    for (d = 0; d < PSK_RESP_DEPTH; d++)
      CHECKI(psk_resp_feed(&s, S("*1\r\n")) == PSK_RESP_OK, d);
    CHECK(psk_resp_feed(&s, S("*1\r\n")) == PSK_RESP_TOO_LARGE);
    psk_resp_init(&s, &deep);
    psk_resp_wait(&s, 1);
    for (d = 0; d < PSK_RESP_DEPTH; d++)
      CHECKI(psk_resp_feed(&s, S("*1\r\n")) == PSK_RESP_OK, d);
    CHECK(psk_resp_feed(&s, S(":7\r\n")) == PSK_RESP_OK);
    CHECK(s.done == 1 && s.depth == 0);
  }
}

/* psk_time: the monotonic clock moves by what a sleep lasts, whatever
   the wall clock does; the wall clock is the epoch. */
static void test_clocks(void) {
  double m0 = psk_time_mono(), w0 = psk_time_wall(), m1;
  psk_time_sleep(0.02);
  m1 = psk_time_mono();
  CHECK(m1 - m0 >= 0.02 && m1 - m0 < 5);
  CHECK(w0 > 1.6e9 && w0 < 1e10);
  CHECK(psk_time_mono() >= m1);
  m0 = psk_time_mono();
  psk_time_sleep(0);
  psk_time_sleep(-1);
  psk_time_sleep(NAN);
  CHECK(psk_time_mono() - m0 < 0.01);
}

static void test_sha256(void) {
  static const struct {
    const char *in;
    const char *hex;
  } v[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc",
       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklm"
       "nopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
  };
  char hex[65], name[128];
  size_t i;
  for (i = 0; i < sizeof v / sizeof v[0]; i++) {
    psk_sha256_hex(v[i].in, strlen(v[i].in), hex);
    CHECKI(strcmp(hex, v[i].hex) == 0, v[i].in);
  }
  /* A million 'a's: many blocks. */
  {
    static char mil[1000000];
    memset(mil, 'a', sizeof mil);
    psk_sha256_hex(mil, sizeof mil, hex);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39c"
                      "cc7112cd0") == 0);
  }
  /* 55, 56 and 64 bytes: the padding edges. */
  {
    static const char *const edge[] = {
        "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318",
        "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a",
        "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"};
    static const size_t lens[] = {55, 56, 64};
    char in[64];
    memset(in, 'a', sizeof in);
    for (i = 0; i < 3; i++) {
      psk_sha256_hex(in, lens[i], hex);
      CHECKI(strcmp(hex, edge[i]) == 0, edge[i]);
    }
  }
  /* The stored name: prefix and the key's hash, never the key. */
  CHECK(psk_budget_name("periskope:", "abc", name, sizeof name) == 74);
  CHECK(strcmp(name, "periskope:ba7816bf8f01cfea414140de5dae2223b00361a396177a"
                     "9cb410ff61f20015ad") == 0);
  CHECK(psk_budget_name("periskope:", "abc", name, 74) == 0);
}

/* ---- psk_h1: the request's bytes ---- */

static void host_is(const char *url, int want_st, const char *want, int line) {
  psk_buf out;
  int st;
  psk_buf_init(&out, 4096);
  st = psk_h1_host(&out, url);
  check_(st == want_st, __FILE__, line, "psk_h1_host status", -1);
  if (want) check_str_(psk_buf_cstr(&out), want, __FILE__, line, url);
  psk_buf_free(&out);
}

#define HOST(url, want) host_is((url), PSK_OK, (want), __LINE__)
#define HOST_BAD(url) host_is((url), PSK_INVALID, "", __LINE__)

static void test_h1_request(void) {
  psk_config c;
  psk_request r;
  psk_buf out, host;
  int i;

  /* Host: as libcurl 7.88 sends it (the port without leading zeros, the
     scheme's default one left out, the host's case kept). */
  HOST("https://api.periskope.app/v1", "api.periskope.app");
  HOST("https://api.periskope.app:443/v1", "api.periskope.app");
  HOST("https://api.periskope.app:8443", "api.periskope.app:8443");
  HOST("http://127.0.0.1:80", "127.0.0.1");
  HOST("http://127.0.0.1:0080/x", "127.0.0.1");
  HOST("http://127.0.0.1:08080/x", "127.0.0.1:8080");
  HOST("http://127.0.0.1:443", "127.0.0.1:443");
  HOST("https://h:80", "h:80");
  HOST("http://LocalHost:38949", "LocalHost:38949");
  HOST("HTTP://localhost", "localhost");
  HOST("http://[::1]:8080/v1", "[::1]:8080");
  HOST("http://[::1]/v1", "[::1]");
  HOST("https://[::1]:443", "[::1]");
  HOST_BAD("ftp://h");
  HOST_BAD("http://");
  HOST_BAD("http:///x");
  HOST_BAD("http://:80");
  HOST_BAD("http://h:");
  HOST_BAD("http://h:0");
  HOST_BAD("http://h:65536");
  HOST_BAD("http://h:80x");
  HOST_BAD("http://[::1");
  HOST_BAD("h");

  memset(&c, 0, sizeof c);
  c.auth = (char *)"Bearer k";
  c.phone = (char *)"919874532456";
  c.base_url = (char *)"http://127.0.0.1:45925/v1";
  c.user_agent = (char *)"periskope-lua/0.1.0 libcurl/7.88.1 Lua/5.4";
  c.max_body = 1048576;
  psk_request_init(&r);
  psk_buf_init(&out, 1 << 20);
  psk_buf_init(&host, 4096);

  /* The bytes libcurl sent for this pin, as a server recorded them. */
  CHECK(psk_request_build(&r, &c, S("a@b"), 1, 7, NULL) == PSK_OK);
  CHECK(psk_h1_host(&host, c.base_url) == PSK_OK);
  CHECK(psk_h1_request(&out, &r, host.data, host.len) == PSK_OK);
  CHECK(out.len == strlen(psk_buf_cstr(&out)));
  CHECK_STR(psk_buf_cstr(&out),
            "POST /v1/message/a%40b/pin HTTP/1.1\r\n"
            "Host: 127.0.0.1:45925\r\n"
            "Authorization: Bearer k\r\n"
            "x-phone: 919874532456\r\n"
            "Content-Type: application/json\r\n"
            "Accept: application/json\r\n"
            "User-Agent: periskope-lua/0.1.0 libcurl/7.88.1 Lua/5.4\r\n"
            "Content-Length: 21\r\n"
            "\r\n"
            "{\"pin\":true,\"time\":7}");

  /* No phone: no x-phone line; an unpin; a base URL without a path. */
  c.phone = NULL;
  c.base_url = (char *)"https://api.periskope.app";
  CHECK(psk_request_build(&r, &c, S("m 1"), 0, 0, NULL) == PSK_OK);
  CHECK(psk_h1_host(&host, c.base_url) == PSK_OK);
  CHECK(psk_h1_request(&out, &r, host.data, host.len) == PSK_OK);
  CHECK_STR(psk_buf_cstr(&out),
            "POST /message/m%201/pin HTTP/1.1\r\n"
            "Host: api.periskope.app\r\n"
            "Authorization: Bearer k\r\n"
            "Content-Type: application/json\r\n"
            "Accept: application/json\r\n"
            "User-Agent: periskope-lua/0.1.0 libcurl/7.88.1 Lua/5.4\r\n"
            "Content-Length: 13\r\n"
            "\r\n"
            "{\"pin\":false}");

  /* A per-call phone id; out is cleared first, never appended to. */
  CHECK(psk_request_build(&r, &c, S("x"), 1, 30, "phone-abc") == PSK_OK);
  CHECK(psk_h1_request(&out, &r, host.data, host.len) == PSK_OK);
  CHECK(strncmp(psk_buf_cstr(&out), "POST /message/x/pin HTTP/1.1\r\n", 30) == 0);
  CHECK(strstr(psk_buf_cstr(&out), "\r\nx-phone: phone-abc\r\n") != NULL);
  CHECK(out.len > 26 && strcmp(psk_buf_cstr(&out) + out.len - 26,
                               "\r\n\r\n{\"pin\":true,\"time\":30}") == 0);

  /* Nothing that would split a line reaches the bytes: a CR, LF or NUL in
     a value, a name, the host or the target; a space in the target. */
  {
    static const char *const values[] = {"a\r\nX: y", "a\n", "a\rb"};
    const char *auth = c.auth;
    for (i = 0; i < 3; i++) {
      r.headers[0].value = values[i];
      CHECKI(psk_h1_request(&out, &r, host.data, host.len) == PSK_INVALID, i);
      CHECKI(out.len == 0, i);
    }
    r.headers[0].value = auth;
    r.headers[1].name = "X\r\nY";
    CHECK(psk_h1_request(&out, &r, host.data, host.len) == PSK_INVALID);
    r.headers[1].name = "x-phone";
    CHECK(psk_h1_request(&out, &r, "h\r\nX: y", 7) == PSK_INVALID);
    CHECK(psk_h1_request(&out, &r, "h\0", 2) == PSK_INVALID);
    CHECK(psk_h1_request(&out, &r, "h", 0) == PSK_INVALID);
    CHECK(psk_h1_request(&out, &r, S("h")) == PSK_OK);
    CHECK(psk_request_build(&r, &c, S("x"), 1, 0, NULL) == PSK_OK);
    r.url.data[r.target + 1] = ' ';
    CHECK(psk_h1_request(&out, &r, S("h")) == PSK_INVALID);
    r.url.data[r.target + 1] = '\n';
    CHECK(psk_h1_request(&out, &r, S("h")) == PSK_INVALID);
    r.target = r.url.len; /* no target at all */
    CHECK(psk_h1_request(&out, &r, S("h")) == PSK_INVALID);
  }

  /* out's cap is kept. */
  {
    psk_buf small;
    psk_buf_init(&small, 40);
    CHECK(psk_request_build(&r, &c, S("x"), 1, 0, NULL) == PSK_OK);
    CHECK(psk_h1_request(&small, &r, S("h")) == PSK_TOO_LARGE);
    psk_buf_free(&small);
  }

  psk_buf_free(&host);
  psk_buf_free(&out);
  psk_request_free(&r);
}

/* ---- psk_h1: reading a response ---- */

/* How h1_run cuts the input into pieces. */
enum {
  CUT_WHOLE,  /* one piece */
  CUT_BYTES,  /* one byte each */
  CUT_AT,     /* two: [0, at) and the rest */
  CUT_AT_3,   /* [0, at), then pieces of 3 */
  CUT_HOST    /* as a host does: psk_h1_want bytes when it says, else 7 */
};

/* Feeds resp (n bytes) to a fresh reader in pieces, every piece an
   exact-length heap copy, all the pieces even after DONE or FAIL; then,
   when eof, the close. Checks feed's contract on the way; whole: resp
   holds a whole response and a tail, so psk_h1_want never asks past its
   end. */
static void h1_run(const char *resp, size_t n, size_t max_body, int eof,
                   int cut, size_t at, int whole, h1_res *o, int line) {
  psk_h1 r;
  size_t off = 0;
  int st = PSK_H1_MORE, ended = 0;
  psk_h1_init(&r, max_body);
  while (off < n || (off == 0 && n == 0)) {
    size_t len = n - off, used = 12345;
    char *piece;
    int s;
    if (cut == CUT_BYTES) len = 1;
    if ((cut == CUT_AT || cut == CUT_AT_3) && off < at) len = at - off;
    else if (cut == CUT_AT_3) len = 3;
    if (cut == CUT_HOST) len = psk_h1_want(&r) ? psk_h1_want(&r) : 7;
    if (len > n - off) len = n - off;
    piece = xdup(resp + off, len);
    s = psk_h1_feed(&r, piece, len, &used);
    free(piece);
    if (ended) {
      /* DONE and FAIL are final: nothing more is taken. */
      check_(s == st && used == 0, __FILE__, line, "final stays final", -1);
    } else if (s == PSK_H1_MORE) {
      check_(used == len, __FILE__, line, "MORE takes every byte", -1);
      if (whole)
        check_(psk_h1_want(&r) <= n - off - len, __FILE__, line,
               "want within the response", -1);
    } else {
      check_(used <= len, __FILE__, line, "used within the piece", -1);
      check_(s == PSK_H1_DONE || s == PSK_H1_FAIL, __FILE__, line,
             "feed says MORE, DONE or FAIL", -1);
      ended = 1;
    }
    st = s;
    check_(r.body.len <= max_body, __FILE__, line, "body within max_body", -1);
    check_(r.head.len <= PSK_HEADERS_MAX, __FILE__, line, "head within cap", -1);
    check_(!r.head.data || r.head.data[r.head.len] == '\0', __FILE__, line,
           "head NUL-terminated", -1);
    off += len;
    if (n == 0) break;
  }
  if (eof) {
    int s = psk_h1_eof(&r);
    check_(st == PSK_H1_MORE || s == st, __FILE__, line, "eof after the end", -1);
    st = s;
    check_(psk_h1_eof(&r) == st, __FILE__, line, "eof twice", -1);
  }
  h1_res_take(o, st, &r);
  if (st == PSK_H1_FAIL)
    check_(r.kind == PSK_KIND_NETWORK || r.kind == PSK_KIND_TOO_LARGE,
           __FILE__, line, "a failure has a kind", -1);
  if (st != PSK_H1_DONE)
    check_(!o->keepalive, __FILE__, line, "no keep-alive unless DONE", -1);
  psk_h1_free(&r);
  psk_h1_free(&r); /* twice is safe */
}


/* One case: the input, and what must come of it. */
typedef struct h1_case {
  const char *resp;
  size_t n;
  size_t max_body;  /* 0: 1 MiB, unless zero_max */
  int zero_max;
  int eof;          /* the peer closes after the bytes */
  int st;
  long status;
  int kind;         /* when FAIL */
  const char *msg;  /* when FAIL: a part of the message */
  const char *head; /* when DONE; NULL: resp up to its blank line */
  size_t head_len;
  const char *body; /* when DONE */
  size_t body_len;
  int keepalive;
  uint64_t extra;
  int splits;       /* 0: every split offset; -1: whole, bytes and host only */
} h1_case;

#define RESP(lit) .resp = lit, .n = sizeof(lit) - 1
#define HEAD(lit) .head = lit, .head_len = sizeof(lit) - 1
#define BODY(lit) .body = lit, .body_len = sizeof(lit) - 1

/* Runs c cut every way, checks the expectations on the whole-input run
   and that every other run agrees with it. */
static void h1_case_run(const h1_case *c, int line) {
  size_t max_body = c->max_body ? c->max_body : (c->zero_max ? 0 : 1048576);
  int whole = c->st == PSK_H1_DONE && !c->eof;
  h1_res w, o;
  size_t at;
  int cut, bad = 0;
  h1_run(c->resp, c->n, max_body, c->eof, CUT_WHOLE, 0, whole, &w, line);
  check_(w.st == c->st, __FILE__, line, "outcome", -1);
  if (w.st != c->st)
    fprintf(stderr, "    got %d (%s), want %d\n", w.st, w.msg, c->st);
  if (c->st != PSK_H1_MORE)
    check_(w.status == c->status, __FILE__, line, "status", -1);
  if (c->st == PSK_H1_FAIL) {
    check_(w.kind == c->kind, __FILE__, line, "kind", -1);
    if (c->msg && !strstr(w.msg, c->msg)) {
      check_(0, __FILE__, line, "message", -1);
      fprintf(stderr, "    got: \"%s\"\n    want a part: \"%s\"\n", w.msg,
              c->msg);
    }
  } else {
    check_(w.msg[0] == '\0' && w.kind == PSK_KIND_NONE, __FILE__, line,
           "no failure", -1);
  }
  if (c->st == PSK_H1_DONE) {
    const char *head = c->head;
    size_t hl = c->head_len;
    if (!head) {
      const char *end = strstr(c->resp, "\r\n\r\n");
      head = c->resp;
      hl = end ? (size_t)(end - c->resp) + 4 : 0;
    }
    if (w.head_len != hl || memcmp(w.head, head, hl) != 0) {
      check_(0, __FILE__, line, "head", -1);
      fprintf(stderr, "    got:  \"%.*s\"\n    want: \"%.*s\"\n",
              (int)w.head_len, w.head, (int)hl, head);
    }
    if (w.body_len != c->body_len ||
        (c->body_len && memcmp(w.body, c->body, c->body_len) != 0)) {
      check_(0, __FILE__, line, "body", -1);
      fprintf(stderr, "    got:  \"%.*s\"\n", (int)w.body_len, w.body);
    }
    check_(w.keepalive == c->keepalive, __FILE__, line, "keep-alive", -1);
    check_(w.extra == c->extra, __FILE__, line, "extra bytes", -1);
    check_(w.received + w.extra == c->n, __FILE__, line,
           "received + extra", -1);
  }
  for (cut = CUT_BYTES; cut <= CUT_HOST && !bad; cut++) {
    size_t last = 1;
    if (cut == CUT_AT || cut == CUT_AT_3) {
      if (c->splits < 0) continue;
      last = c->n;
    }
    for (at = 1; at < last + (cut != CUT_AT && cut != CUT_AT_3) && !bad; at++) {
      h1_run(c->resp, c->n, max_body, c->eof, cut, at, whole, &o, line);
      if (!h1_same(&w, &o)) {
        bad = 1;
        check_(0, __FILE__, line, "the same outcome however the bytes come",
               (long long)(cut * 1000000 + at));
        fprintf(stderr, "    whole: %d %ld \"%s\"; cut %d at %lu: %d %ld \"%s\"\n",
                w.st, w.status, w.msg, cut, (unsigned long)at, o.st, o.status,
                o.msg);
      }
      h1_res_free(&o);
    }
  }
  h1_res_free(&w);
}

#define H1(...)                                   \
  do {                                            \
    const h1_case c_ = {__VA_ARGS__};             \
    h1_case_run(&c_, __LINE__);                   \
  } while (0)

/* The answer Periskope gives a pin: the OpenAPI description's 204, with
   the headers of its example, as the local server sends them. */
#define PERISKOPE_204                                                   \
  "HTTP/1.1 204 No Content\r\n"                                         \
  "X-Powered-By: Express\r\n"                                           \
  "Access-Control-Allow-Origin: *\r\n"                                  \
  "X-RateLimit-Limit: 10\r\n"                                           \
  "X-RateLimit-Remaining: 9\r\n"                                        \
  "X-RateLimit-Reset: 1737542181\r\n"                                   \
  "x-periskope-org-id: 2997dd64-89bf-48d3-9a22-b314fca017e5\r\n"        \
  "x-periskope-phone-id: phone-bqzvyibhmwkaergr\r\n"                    \
  "x-periskope-trace-id: b77a8810-d8ac-11ef-8033-3b03afb6e098\r\n"      \
  "Date: Wed, 22 Jan 2025 10:36:19 GMT\r\n"                             \
  "Connection: keep-alive\r\n"                                          \
  "Keep-Alive: timeout=5\r\n"                                           \
  "\r\n"

static void test_h1_answers(void) {
  /* Periskope's 204: no body, the connection kept. */
  H1(RESP(PERISKOPE_204), .st = PSK_H1_DONE, .status = 204, .keepalive = 1);
  /* The head is what the header walk reads for the result table. */
  {
    h1_res o;
    char *fields;
    h1_run(S(PERISKOPE_204), 1048576, 0, CUT_BYTES, 0, 1, &o, __LINE__);
    fields = walk(o.head, o.head_len, NULL);
    CHECK(strstr(fields, "|X-RateLimit-Remaining=9|X-RateLimit-Reset=1737542181|"));
    CHECK(strstr(fields, "|x-periskope-trace-id=b77a8810-d8ac-11ef-8033-3b03afb6e098|"));
    free(fields);
    h1_res_free(&o);
  }
  /* nginx's (the local server's) form of it. */
  H1(RESP("HTTP/1.1 204 No Content\r\n"
          "Server: openresty\r\n"
          "Date: Wed, 22 Jan 2025 10:36:19 GMT\r\n"
          "Connection: keep-alive\r\n"
          "X-RateLimit-Limit: 10\r\n"
          "X-RateLimit-Remaining: 0\r\n"
          "X-RateLimit-Reset: 1737542181\r\n"
          "\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 1);
  /* A 404 with a JSON body. */
  H1(RESP("HTTP/1.1 404 Not Found\r\n"
          "Content-Type: application/json; charset=utf-8\r\n"
          "Content-Length: 42\r\n"
          "\r\n"
          "{\"message\":\"Message not found\",\"code\":404}"),
     .st = PSK_H1_DONE, .status = 404,
     BODY("{\"message\":\"Message not found\",\"code\":404}"), .keepalive = 1);
  /* A 429 with Retry-After and a body, HTTP/1.0 with keep-alive. */
  H1(RESP("HTTP/1.0 429 Too Many Requests\r\n"
          "Retry-After: 2\r\n"
          "Connection: Keep-Alive\r\n"
          "Content-Length: 2\r\n"
          "\r\n"
          "{}"),
     .st = PSK_H1_DONE, .status = 429, BODY("{}"), .keepalive = 1);
  /* No reason phrase; a reason with spaces and odd bytes. */
  H1(RESP("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), .st = PSK_H1_DONE,
     .status = 200, .keepalive = 1);
  H1(RESP("HTTP/1.1 599 Any \x01 reason \xff\r\nContent-Length: 0\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 599, .keepalive = 1);
  /* A body holds any byte, NUL included. */
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na\0b"),
     .st = PSK_H1_DONE, .status = 200, BODY("a\0b"), .keepalive = 1);
  /* Content-Length repeated with the same value, or as a list. */
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length:2 \r\n\r\nhi"),
     .st = PSK_H1_DONE, .status = 200, BODY("hi"), .keepalive = 1);
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 2, 2,\r\n\r\nhi"),
     .st = PSK_H1_DONE, .status = 200, BODY("hi"), .keepalive = 1);
}

static void test_h1_interim(void) {
  /* 100-continue, then the 204: only the final head is kept. */
  H1(RESP("HTTP/1.1 100 Continue\r\n\r\n"
          "HTTP/1.1 204 No Content\r\nX-RateLimit-Remaining: 3\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204,
     HEAD("HTTP/1.1 204 No Content\r\nX-RateLimit-Remaining: 3\r\n\r\n"),
     .keepalive = 1);
  /* Several, with fields (even framing ones, which frame nothing). */
  H1(RESP("HTTP/1.1 100 Continue\r\nX: 1\r\n\r\n"
          "HTTP/1.1 102 Processing\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
          "HTTP/1.1 103 Early Hints\nLink: </a>\n\n"
          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
     .st = PSK_H1_DONE, .status = 200,
     HEAD("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"), BODY("ok"),
     .keepalive = 1);
  /* A 101 nobody asked for: final, its body up to the close (libcurl). */
  H1(RESP("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 204 No\r\n\r\n"),
     .eof = 1, .st = PSK_H1_DONE, .status = 101,
     HEAD("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
     BODY("HTTP/1.1 204 No\r\n\r\n"), .keepalive = 0);
  /* An interim head's lines obey the rules too. */
  H1(RESP("HTTP/1.1 100 Continue\r\nno colon\r\n\r\nHTTP/1.1 204 No\r\n\r\n"),
     .st = PSK_H1_FAIL, .status = 100, .kind = PSK_KIND_NETWORK,
     .msg = "header line without a colon");
  /* eof after an interim head: no answer. */
  H1(RESP("HTTP/1.1 100 Continue\r\n\r\n"), .eof = 1, .st = PSK_H1_FAIL,
     .status = 100, .kind = PSK_KIND_NETWORK,
     .msg = "connection closed before the end of the response head");
  H1(RESP("HTTP/1.1 100 Continue\r\n\r\n"), .st = PSK_H1_MORE);

  /* A storm of interim heads: every head's bytes count, as libcurl's
     PSK_HEADERS_MAX does, so 10,486 "100 Continue" (25 bytes each) are
     too large: said at the byte past the cap. Exactly at the cap is
     fine. */
  {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    static const char fin[] = "HTTP/1.1 204 No Content\r\nX: ";
    size_t clen = sizeof cont - 1, k = 10000, pad, n, i;
    char *resp;
    /* k interim heads, then a final one padded to end at the cap. */
    pad = PSK_HEADERS_MAX - k * clen - (sizeof fin - 1) - 4;
    n = k * clen + (sizeof fin - 1) + pad + 4;
    CHECK(n == PSK_HEADERS_MAX);
    resp = malloc(n + clen * 600 + 1);
    if (!resp) exit(2);
    for (i = 0; i < k; i++) memcpy(resp + i * clen, cont, clen);
    memcpy(resp + k * clen, fin, sizeof fin - 1);
    memset(resp + k * clen + sizeof fin - 1, 'x', pad);
    memcpy(resp + n - 4, "\r\n\r\n", 4);
    {
      h1_case c = {0};
      c.resp = resp;
      c.n = n;
      c.st = PSK_H1_DONE;
      c.status = 204;
      c.head = resp + k * clen;
      c.head_len = n - k * clen;
      c.keepalive = 1;
      c.splits = -1;
      h1_case_run(&c, __LINE__);
      /* One byte more of padding: too large. */
      memset(resp + k * clen + sizeof fin - 1, 'x', pad + 1);
      memcpy(resp + n - 3, "\r\n\r\n", 4);
      c.n = n + 1;
      c.st = PSK_H1_FAIL;
      c.kind = PSK_KIND_TOO_LARGE;
      c.msg = "response too large (heads over 256 KiB with interim ones)";
      h1_case_run(&c, __LINE__);
      /* Nothing but interim heads, past the cap: too large, not MORE. */
      for (i = 0; i < k + 600; i++) memcpy(resp + i * clen, cont, clen);
      c.n = (k + 600) * clen;
      c.status = 100;
      h1_case_run(&c, __LINE__);
    }
    free(resp);
  }
}

static void test_h1_body(void) {
  /* Content-Length at max_body is fine; one more is too large, said as
     soon as the head ends, before any of the body. */
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"),
     .max_body = 10, .st = PSK_H1_DONE, .status = 200, BODY("0123456789"),
     .keepalive = 1);
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n"), .max_body = 10,
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_TOO_LARGE,
     .msg = "response too large (body over max_body, 10 bytes)");
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999999\r\n\r\n"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_TOO_LARGE);
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_TOO_LARGE);
  /* max_body 0: an empty body only. */
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), .zero_max = 1,
     .st = PSK_H1_DONE, .status = 200, .keepalive = 1);
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"), .zero_max = 1,
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_TOO_LARGE);
  H1(RESP("HTTP/1.1 200 OK\r\n\r\nx"), .zero_max = 1, .st = PSK_H1_FAIL,
     .status = 200, .kind = PSK_KIND_TOO_LARGE);
  /* Differing, malformed or empty Content-Length: no answer. */
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "differing Content-Length values");
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nhi"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "differing Content-Length values");
  {
    static const char *const bad_cl[] = {
        "abc", "-1", "+5", "5 5", "0x10", "5;", "5abc", "", " ", ",", "1.0",
        "5\r"};
    size_t i;
    for (i = 0; i < sizeof bad_cl / sizeof bad_cl[0]; i++) {
      char resp[128];
      h1_case c = {0};
      c.n = (size_t)snprintf(resp, sizeof resp,
                             "HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\nhi",
                             bad_cl[i]);
      c.resp = resp;
      c.st = PSK_H1_FAIL;
      c.status = 200;
      c.kind = PSK_KIND_NETWORK;
      c.msg = "malformed Content-Length";
      h1_case_run(&c, __LINE__);
    }
  }
  /* 204 and 304 have no body: framing fields are not read, and bytes
     after the head are extra (the connection is then not reused). */
  H1(RESP("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 304, .keepalive = 1);
  H1(RESP("HTTP/1.1 204 No Content\r\nContent-Length: junk\r\n"
          "Transfer-Encoding: gzip\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 1);
  H1(RESP("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
     .st = PSK_H1_DONE, .status = 204,
     HEAD("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
     .keepalive = 0, .extra = 5);
  /* Leftover bytes after a body. */
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n"),
     .st = PSK_H1_DONE, .status = 200, BODY("hi"), .keepalive = 0,
     .extra = 17);
  /* A body up to the close: done only by the close. */
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world"),
     .eof = 1, .st = PSK_H1_DONE, .status = 200, BODY("hello world"),
     .keepalive = 0);
  H1(RESP("HTTP/1.0 200 OK\r\n\r\nabc"), .eof = 1, .st = PSK_H1_DONE,
     .status = 200, BODY("abc"), .keepalive = 0);
  H1(RESP("HTTP/1.1 200 OK\r\n\r\n"), .eof = 1, .st = PSK_H1_DONE,
     .status = 200, .keepalive = 0);
  H1(RESP("HTTP/1.1 200 OK\r\n\r\nhello"), .st = PSK_H1_MORE);
  H1(RESP("HTTP/1.1 200 OK\r\n\r\n0123456789a"), .max_body = 10, .eof = 1,
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_TOO_LARGE,
     .msg = "body over max_body, 10 bytes");
  H1(RESP("HTTP/1.1 200 OK\r\n\r\n0123456789"), .max_body = 10, .eof = 1,
     .st = PSK_H1_DONE, .status = 200, BODY("0123456789"), .keepalive = 0);

  /* The closes that cut an answer. */
  H1(RESP(""), .eof = 1, .st = PSK_H1_FAIL, .kind = PSK_KIND_NETWORK,
     .msg = "empty reply from server");
  H1(RESP("HTTP/1.1 2"), .eof = 1, .st = PSK_H1_FAIL, .kind = PSK_KIND_NETWORK,
     .msg = "connection closed before the end of the response head");
  H1(RESP("HTTP/1.1 204 No Content\r\nX-RateLimit-Li"), .eof = 1,
     .st = PSK_H1_FAIL, .status = 204, .kind = PSK_KIND_NETWORK,
     .msg = "connection closed before the end of the response head");
  H1(RESP("HTTP/1.1 204 No Content\r\nX: 1\r\n"), .eof = 1, .st = PSK_H1_FAIL,
     .status = 204, .kind = PSK_KIND_NETWORK,
     .msg = "connection closed before the end of the response head");
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nxxxxxxxxxx"),
     .eof = 1, .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "connection closed with 90 bytes of the body to come");
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
     .eof = 1, .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "connection closed before the end of the chunked body");
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
     .eof = 1, .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "connection closed before the end of the chunked body");
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n"),
     .eof = 1, .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "connection closed before the end of the chunked body");

  /* Content-Length's bytes are what the reader asks for, then none. */
  {
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    char body[1000];
    psk_h1 r;
    size_t used;
    psk_h1_init(&r, 4096);
    CHECK(psk_h1_want(&r) == 0);
    CHECK(psk_h1_feed(&r, S(head), &used) == PSK_H1_MORE && used == sizeof head - 1);
    CHECK(psk_h1_want(&r) == 1000);
    memset(body, 'b', sizeof body);
    CHECK(psk_h1_feed(&r, body, 300, &used) == PSK_H1_MORE);
    CHECK(psk_h1_want(&r) == 700);
    CHECK(psk_h1_feed(&r, body, 700, NULL) == PSK_H1_DONE);
    CHECK(psk_h1_want(&r) == 0);
    CHECK(r.body.len == 1000 && r.status == 200);
    CHECK(psk_h1_keepalive(&r));
    /* a feed after the end: extra, and the connection is not reused */
    CHECK(psk_h1_feed(&r, "x", 1, &used) == PSK_H1_DONE && used == 0);
    CHECK(r.extra == 1 && !psk_h1_keepalive(&r));
    CHECK(psk_h1_eof(&r) == PSK_H1_DONE);
    psk_h1_free(&r);
  }
}

static void test_h1_chunked(void) {
  /* Extensions skipped, trailers kept after the blank line, each line
     CRLF-ended (libcurl hands them to the header callback so). */
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          "5;name=value\r\nhello\r\n"
          "6 ; a=\"b;c\" ;d\r\n world\r\n"
          "000A\r\n, chunked.\r\n"
          "0;last\r\nX-Trailer: t1\r\nY:2\n\r\n"),
     .st = PSK_H1_DONE, .status = 200,
     HEAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          "X-Trailer: t1\r\nY:2\r\n"),
     BODY("hello world, chunked."), .keepalive = 1);
  /* LF-only line ends throughout. */
  H1(RESP("HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\n2\nhi\n0\n\n"),
     .st = PSK_H1_DONE, .status = 200,
     HEAD("HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\n"), BODY("hi"),
     .keepalive = 1);
  /* chunked wins over Content-Length; the connection is closed after. */
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
          "2\r\nhi\r\n0\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 200, BODY("hi"), .keepalive = 0);
  /* ... even a Content-Length beyond max_body. */
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n\r\n"
          "2\r\nhi\r\n0\r\n\r\n"),
     .max_body = 10, .st = PSK_H1_DONE, .status = 200, BODY("hi"),
     .keepalive = 0);
  /* An empty chunked body; leading zeros; bytes after the end. */
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          "0000000000000000000000000000000001\r\nx\r\n0\r\n\r\nextra"),
     .st = PSK_H1_DONE, .status = 200, BODY("x"), .keepalive = 0, .extra = 5);
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 200, .keepalive = 1);
  /* Trailers: a fold joins its field; the rules of a head line. */
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          "0\r\nA: 1\r\n\t2\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 200,
     HEAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA: 1 2\r\n"),
     .keepalive = 1);
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n x\r\n\r\n"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "folded line with no field before it");
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnocolon\r\n\r\n"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "trailer line without a colon");
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r2\r\n\r\n"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "bare CR in a trailer line");
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: \0\r\n\r\n"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "NUL byte in the response head");

  /* Chunked garbage. */
  {
    static const struct {
      const char *chunks, *msg;
    } bad_chunks[] = {
        {"zz\r\n", "malformed chunk size"},
        {" 2\r\nhi\r\n0\r\n\r\n", "malformed chunk size"},
        {"\r\n", "malformed chunk size"},
        {"2x\r\nhi\r\n0\r\n\r\n", "malformed chunk size"},
        {"2 x\r\nhi\r\n0\r\n\r\n", "malformed chunk size"},
        {"-2\r\n", "malformed chunk size"},
        {"0x2\r\nhi\r\n", "malformed chunk size"},
        {"2\rx\nhi\r\n", "bare CR in a chunk-size line"},
        {"2;a\rb\r\nhi\r\n", "bare CR in a chunk-size line"},
        {"2;a\0\r\nhi\r\n", "NUL byte in a chunk extension"},
        {"2\r\nhix\r\n0\r\n\r\n", "no line end after a chunk's data"},
        {"2\r\nhi\r\r\n0\r\n\r\n", "no line end after a chunk's data"},
        {"2\r\nhi0\r\n\r\n", "no line end after a chunk's data"},
        /* 17 significant hex digits would overflow 64 bits */
        {"10000000000000000\r\n", "chunk size out of range"},
        {"fffffffffffffffff\r\n", "chunk size out of range"},
    };
    size_t i;
    for (i = 0; i < sizeof bad_chunks / sizeof bad_chunks[0]; i++) {
      char resp[256];
      h1_case c = {0};
      size_t hl = strlen("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
      memcpy(resp, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", hl);
      /* the chunk bytes may hold a NUL: copy up to the line that has it */
      c.n = hl + strlen(bad_chunks[i].chunks);
      memcpy(resp + hl, bad_chunks[i].chunks, strlen(bad_chunks[i].chunks));
      if (strstr(bad_chunks[i].msg, "NUL")) {
        memcpy(resp + c.n, "\0\r\nhi\r\n", 7);
        c.n += 7;
      }
      c.resp = resp;
      c.st = PSK_H1_FAIL;
      c.status = 200;
      c.kind = PSK_KIND_NETWORK;
      c.msg = bad_chunks[i].msg;
      h1_case_run(&c, __LINE__);
    }
  }
  /* Up to 2^63 - 1 a size is in range, and only max_body refuses it;
     past it, out of range (libcurl's sizes are signed 64-bit). */
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_TOO_LARGE,
     .msg = "body over max_body");
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000\r\n"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "chunk size out of range");
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "chunk size out of range");
  /* The total over max_body: said at the chunk size that passes it,
     before its data. */
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          "6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n"),
     .max_body = 10, .st = PSK_H1_DONE, .status = 200, BODY("abcdefghij"),
     .keepalive = 1);
  H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          "6\r\nabcdef\r\n5\r\n"),
     .max_body = 10, .st = PSK_H1_FAIL, .status = 200,
     .kind = PSK_KIND_TOO_LARGE,
     .msg = "response too large (body over max_body, 10 bytes)");
  {
    psk_h1 r;
    size_t used;
    static const char resp[] =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5;";
    psk_h1_init(&r, 10);
    CHECK(psk_h1_feed(&r, S(resp), &used) == PSK_H1_FAIL);
    CHECK(used == sizeof resp - 2); /* at the byte after the digits */
    CHECK(r.body.len == 6);
    psk_h1_free(&r);
  }
  /* The chunk's bytes are what the reader asks for. */
  {
    psk_h1 r;
    psk_h1_init(&r, 1024);
    CHECK(psk_h1_feed(&r, S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                      NULL) == PSK_H1_MORE);
    CHECK(psk_h1_want(&r) == 0);
    CHECK(psk_h1_feed(&r, S("1f4"), NULL) == PSK_H1_MORE);
    CHECK(psk_h1_want(&r) == 0);
    CHECK(psk_h1_feed(&r, S("\r\nab"), NULL) == PSK_H1_MORE);
    CHECK(psk_h1_want(&r) == 498);
    psk_h1_free(&r);
  }
  /* Transfer codings other than one chunked: refused. */
  {
    static const char *const bad_te[] = {"gzip, chunked", "chunked, gzip",
                                         "chunked, chunked", "gzip", "",
                                         "chunked;q=1", "identity"};
    size_t i;
    for (i = 0; i < sizeof bad_te / sizeof bad_te[0]; i++) {
      char resp[128];
      h1_case c = {0};
      c.n = (size_t)snprintf(resp, sizeof resp,
                             "HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n"
                             "2\r\nhi\r\n0\r\n\r\n", bad_te[i]);
      c.resp = resp;
      c.st = PSK_H1_FAIL;
      c.status = 200;
      c.kind = PSK_KIND_NETWORK;
      c.msg = "unsupported Transfer-Encoding";
      h1_case_run(&c, __LINE__);
    }
    H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
       .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
       .msg = "unsupported Transfer-Encoding");
    H1(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: ,chunked,\r\n\r\n0\r\n\r\n"),
       .st = PSK_H1_DONE, .status = 200, .keepalive = 1);
  }
}

static void test_h1_head_rules(void) {
  /* obs-fold: joined as libcurl's path joins it (psk_head_unfold). */
  H1(RESP("HTTP/1.1 204 No Content\r\nX-A: 1\r\n  2\r\n\t3\r\nX-B: b\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204,
     HEAD("HTTP/1.1 204 No Content\r\nX-A: 1 2 3\r\nX-B: b\r\n\r\n"),
     .keepalive = 1);
  /* A folded Connection is not trusted to say keep-alive. */
  H1(RESP("HTTP/1.1 204 No Content\r\nConnection: keep-alive,\r\n close\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204,
     HEAD("HTTP/1.1 204 No Content\r\nConnection: keep-alive, close\r\n\r\n"),
     .keepalive = 0);
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length:\r\n 2\r\n\r\nhi"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK);
  H1(RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n 2\r\n\r\nhi"),
     .st = PSK_H1_FAIL, .status = 200, .kind = PSK_KIND_NETWORK,
     .msg = "folded Content-Length or Transfer-Encoding");
  H1(RESP("HTTP/1.1 204 No Content\r\n folded\r\n\r\n"), .st = PSK_H1_FAIL,
     .status = 204, .kind = PSK_KIND_NETWORK,
     .msg = "folded line with no field before it");
  /* LF-only lines, kept as sent. */
  H1(RESP("HTTP/1.1 200 OK\nContent-Length: 2\nX-RateLimit-Limit: 10\n\nhi"),
     .st = PSK_H1_DONE, .status = 200,
     HEAD("HTTP/1.1 200 OK\nContent-Length: 2\nX-RateLimit-Limit: 10\n\n"),
     BODY("hi"), .keepalive = 1);
  H1(RESP("HTTP/1.1 204 No Content\r\nA: 1\n\r\n"), .st = PSK_H1_DONE,
     .status = 204, HEAD("HTTP/1.1 204 No Content\r\nA: 1\n\r\n"),
     .keepalive = 1);
  /* A bare CR inside a line is kept, as libcurl keeps it; the header walk
     drops that field. */
  H1(RESP("HTTP/1.1 204 No Content\r\nX: a\rb\r\nY: 1\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 1);
  {
    h1_res o;
    char *fields;
    h1_run(S("HTTP/1.1 204 No Content\r\nX: a\rb\r\nY: 1\r\n\r\n"), 100, 0,
           CUT_WHOLE, 0, 1, &o, __LINE__);
    fields = walk(o.head, o.head_len, NULL);
    CHECK_STR(fields, "Y=1|");
    free(fields);
    h1_res_free(&o);
  }
  /* Bare CR garbage where a status line should be. */
  H1(RESP("\r\r\r\r\r\n"), .st = PSK_H1_FAIL, .kind = PSK_KIND_NETWORK,
     .msg = "malformed status line");
  H1(RESP("\r\nHTTP/1.1 204 No Content\r\n\r\n"), .st = PSK_H1_FAIL,
     .kind = PSK_KIND_NETWORK, .msg = "malformed status line");
  /* NUL bytes in a head: refused wherever they are. */
  H1(RESP("HTTP/1.1 204 No\0Content\r\n\r\n"), .st = PSK_H1_FAIL,
     .kind = PSK_KIND_NETWORK, .msg = "NUL byte in the response head");
  H1(RESP("HTTP/1.1 204 No Content\r\nX: a\0b\r\n\r\n"), .st = PSK_H1_FAIL,
     .status = 204, .kind = PSK_KIND_NETWORK,
     .msg = "NUL byte in the response head");
  H1(RESP("HTTP\0"), .st = PSK_H1_FAIL, .kind = PSK_KIND_NETWORK,
     .msg = "malformed status line");
  /* A line without a colon; names that are no token are kept (the walk
     drops them), as libcurl keeps them. */
  H1(RESP("HTTP/1.1 204 No Content\r\nno colon here\r\n\r\n"),
     .st = PSK_H1_FAIL, .status = 204, .kind = PSK_KIND_NETWORK,
     .msg = "header line without a colon");
  H1(RESP("HTTP/1.1 204 No Content\r\nA b: c\r\n: empty\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 1);
  /* Status lines. */
  {
    static const struct {
      const char *line, *msg;
    } bad_status[] = {
        {"http/1.1 200 OK", "malformed status line"},
        {"HTTP/1.1 200OK", "malformed status code"},
        {"HTTP/1.1 20 OK", "malformed status code"},
        {"HTTP/1.1 2000 OK", "malformed status code"},
        {"HTTP/1.1 099 OK", "malformed status code"},
        {"HTTP/1.1 -20 OK", "malformed status code"},
        {"HTTP/1.1  200 OK", "malformed status code"},
        {"HTTP/1.2 200 OK", "unsupported HTTP version"},
        {"HTTP/2.0 200 OK", "unsupported HTTP version"},
        {"HTTP/0.9 200 OK", "unsupported HTTP version"},
        {"HTTP/2 200 OK", "malformed status line"},
        {"HTTP/1.1\t200 OK", "malformed status line"},
        {" HTTP/1.1 200 OK", "malformed status line"},
        {"ICY 200 OK", "malformed status line"},
        {"\x16\x03\x01\x02\x00", "malformed status line"}, /* TLS */
        {"", "malformed status line"},
    };
    size_t i;
    for (i = 0; i < sizeof bad_status / sizeof bad_status[0]; i++) {
      char resp[128];
      h1_case c = {0};
      c.n = (size_t)snprintf(resp, sizeof resp, "%s\r\n\r\n", bad_status[i].line);
      c.resp = resp;
      c.st = PSK_H1_FAIL;
      c.kind = PSK_KIND_NETWORK;
      c.msg = bad_status[i].msg;
      h1_case_run(&c, __LINE__);
    }
  }
  H1(RESP("HTTP/1.0 204 No Content\r\n\r\n"), .st = PSK_H1_DONE, .status = 204,
     .keepalive = 0);
  /* Keep-alive: HTTP/1.1 by default, not with close; HTTP/1.0 only when
     asked; never with chunked in 1.0. */
  H1(RESP("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 0);
  H1(RESP("HTTP/1.1 204 No Content\r\nConnection: Upgrade, CLOSE\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 0);
  H1(RESP("HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\nconnection: close\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 0);
  H1(RESP("HTTP/1.1 204 No Content\r\nConnection: closed\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 1);
  H1(RESP("HTTP/1.1 204 No Content\r\nX-Connection: close\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 1);
  H1(RESP("HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 204, .keepalive = 1);
  H1(RESP("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
          "0\r\n\r\n"),
     .st = PSK_H1_DONE, .status = 200, .keepalive = 0);
}

static void test_h1_limits(void) {
  static const char status[] = "HTTP/1.1 204 No Content\r\n";
  static const char chunked[] =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  size_t sl = sizeof status - 1, cl = sizeof chunked - 1;
  char *resp = malloc(2 * PSK_H1_LINE_MAX);
  h1_case c = {0};
  if (!resp) exit(2);
  c.resp = resp;
  c.splits = -1;

  /* A line shorter than 100 KiB, its CRLF included, is fine. */
  memcpy(resp, status, sl);
  memcpy(resp + sl, "X: ", 3);
  memset(resp + sl + 3, 'v', PSK_H1_LINE_MAX - 6);
  memcpy(resp + sl + PSK_H1_LINE_MAX - 3, "\r\n\r\n", 4);
  c.n = sl + PSK_H1_LINE_MAX + 1;
  c.st = PSK_H1_DONE;
  c.status = 204;
  c.keepalive = 1;
  h1_case_run(&c, __LINE__);
  /* 100 KiB is too large (as libcurl, whose buffer holds the line and a
     NUL), said at the byte that reaches it: here its LF. */
  memset(resp + sl + 3, 'v', PSK_H1_LINE_MAX - 5);
  memcpy(resp + sl + PSK_H1_LINE_MAX - 2, "\r\n\r\n", 4);
  c.n = sl + PSK_H1_LINE_MAX + 2;
  c.st = PSK_H1_FAIL;
  c.kind = PSK_KIND_TOO_LARGE;
  c.msg = "response too large (a line over 100 KiB)";
  h1_case_run(&c, __LINE__);
  /* A longer line, cut at the limit: too large before its end. */
  memset(resp + sl + 3, 'v', PSK_H1_LINE_MAX);
  c.n = sl + PSK_H1_LINE_MAX;
  h1_case_run(&c, __LINE__);
  c.n--; /* one byte less: still within, so MORE */
  c.st = PSK_H1_MORE;
  h1_case_run(&c, __LINE__);
  /* A long status line. */
  memcpy(resp, "HTTP/1.1 200 ", 13);
  memset(resp + 13, 'r', PSK_H1_LINE_MAX);
  c.n = PSK_H1_LINE_MAX;
  c.st = PSK_H1_FAIL;
  c.status = 0;
  h1_case_run(&c, __LINE__);
  /* A chunk-size line: a byte short of 100 KiB is fine, 100 KiB not. */
  memcpy(resp, chunked, cl);
  memcpy(resp + cl, "1;", 2);
  memset(resp + cl + 2, 'e', PSK_H1_LINE_MAX);
  memcpy(resp + cl + PSK_H1_LINE_MAX - 3, "\r\n", 2);
  c.n = cl + PSK_H1_LINE_MAX - 1;
  c.st = PSK_H1_MORE;
  c.status = 200;
  h1_case_run(&c, __LINE__);
  memset(resp + cl + 2, 'e', PSK_H1_LINE_MAX);
  c.n = cl + PSK_H1_LINE_MAX;
  c.st = PSK_H1_FAIL;
  h1_case_run(&c, __LINE__);
  /* A trailer line. */
  memcpy(resp + cl, "0\r\nT: ", 6);
  memset(resp + cl + 6, 't', PSK_H1_LINE_MAX);
  c.n = cl + 3 + PSK_H1_LINE_MAX;
  h1_case_run(&c, __LINE__);
  c.n--;
  c.st = PSK_H1_MORE;
  h1_case_run(&c, __LINE__);
  free(resp);

  /* Many short header lines, together over 256 KiB. */
  {
    size_t i, k = PSK_HEADERS_MAX / 16 + 1;
    char *big = malloc(sl + k * 16 + 2);
    if (!big) exit(2);
    memcpy(big, status, sl);
    for (i = 0; i < k; i++) memcpy(big + sl + i * 16, "X-Filler: 1234\r\n", 16);
    memcpy(big + sl + k * 16, "\r\n", 2);
    c.resp = big;
    c.n = sl + k * 16 + 2;
    c.st = PSK_H1_FAIL;
    c.status = 204;
    c.msg = "response too large (heads over 256 KiB with interim ones)";
    h1_case_run(&c, __LINE__);
    free(big);
  }
}

/* A reader reused for answers that follow one another on a kept-alive
   connection, as the host reuses it: reset keeps the memory. */
static void test_h1_reuse(void) {
  static const char two[] =
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
      "HTTP/1.1 204 No Content\r\nX-RateLimit-Remaining: 1\r\n\r\n";
  psk_h1 r;
  size_t used, first;
  int i;
  psk_h1_init(&r, 100);
  psk_h1_free(&r); /* after init alone */
  psk_h1_init(&r, 100);
  for (i = 0; i < 3; i++) {
    CHECK(psk_h1_feed(&r, S(two), &used) == PSK_H1_DONE);
    first = used;
    CHECK(first == strlen("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"));
    CHECK(r.status == 200 && r.body.len == 2 && r.extra == sizeof two - 1 - first);
    CHECK(!psk_h1_keepalive(&r)); /* extra bytes came with it */
    psk_h1_reset(&r);
    CHECK(r.status == 0 && r.head.len == 0 && r.body.len == 0 && r.extra == 0);
    CHECK(psk_h1_feed(&r, two + first, sizeof two - 1 - first, &used) == PSK_H1_DONE);
    CHECK(used == sizeof two - 1 - first);
    CHECK(r.status == 204 && r.body.len == 0 && psk_h1_keepalive(&r));
    CHECK_STR(psk_buf_cstr(&r.head),
              "HTTP/1.1 204 No Content\r\nX-RateLimit-Remaining: 1\r\n\r\n");
    psk_h1_reset(&r);
  }
  /* A failed reader can be reset and used again. */
  CHECK(psk_h1_feed(&r, S("ICY 200 OK\r\n"), NULL) == PSK_H1_FAIL);
  CHECK(psk_h1_feed(&r, S("HTTP/1.1 204 No\r\n\r\n"), &used) == PSK_H1_FAIL &&
        used == 0);
  psk_h1_reset(&r);
  CHECK(psk_h1_feed(&r, S("HTTP/1.1 204 No\r\n\r\n"), NULL) == PSK_H1_DONE);
  /* A zero-length feed says MORE and takes nothing. */
  psk_h1_reset(&r);
  CHECK(psk_h1_feed(&r, "", 0, &used) == PSK_H1_MORE && used == 0);
  CHECK(r.received == 0);
  CHECK(psk_h1_eof(&r) == PSK_H1_FAIL && r.kind == PSK_KIND_NETWORK);
  CHECK_STR(r.msg, "empty reply from server");
  psk_h1_free(&r);
  psk_h1_free(&r);
}

/* Each area is one test: it passes when none of its checks fails. The
   closing line counts areas; the checks are counted beside it. */
static const struct {
  const char *name;
  void (*fn)(void);
} tests[] = {
    {"psk_buf", test_buf},
    {"key/user agent/message id rules", test_check_strings},
    {"phone", test_phone},
    {"base_url", test_base_url},
    {"loopback host", test_loopback},
    {"request target", test_path_offset},
    {"time", test_time},
    {"percent-encoding", test_percent_encode},
    {"request", test_request},
    {"header walk", test_headers},
    {"obs-fold", test_unfold},
    {"integers", test_parse_uint},
    {"HTTP dates", test_http_date},
    {"Retry-After", test_retry_after},
    {"retryable", test_retryable},
    {"retry plan", test_retry_plan},
    {"backoff", test_backoff},
    {"random", test_random},
    {"pacing budget and clock", test_budget},
    {"stale X-RateLimit-Reset", test_stale_reset},
    {"implausible X-RateLimit-Reset", test_implausible_reset},
    {"circuit breaker", test_circuit},
    {"a learner without an answer", test_unanswered_learner},
    {"pacing operation for every store", test_pace_op},
    {"pacing queue", test_pace_queue},
    {"pacing queue: fair", test_pace_fair},
    {"clocks", test_clocks},
    {"SHA-256 and budget names", test_sha256},
    {"Redis reply sizes", test_resp},
    {"HTTP/1.1: the request's bytes", test_h1_request},
    {"HTTP/1.1: answers", test_h1_answers},
    {"HTTP/1.1: interim answers", test_h1_interim},
    {"HTTP/1.1: bodies and closes", test_h1_body},
    {"HTTP/1.1: chunked", test_h1_chunked},
    {"HTTP/1.1: head rules and keep-alive", test_h1_head_rules},
    {"HTTP/1.1: size limits", test_h1_limits},
    {"HTTP/1.1: a reader reused", test_h1_reuse},
};

int main(void) {
  size_t i;
  int passed = 0, failed = 0;
  for (i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    int before = g_fail;
    tests[i].fn();
    if (g_fail == before) {
      passed++;
    } else {
      failed++;
      printf("FAILED: %s\n", tests[i].name);
    }
  }
  printf("(%d checks passed, %d failed)\n", g_pass, g_fail);
  printf("core: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
