/*
 * fuzz_h1: the HTTP/1.1 response reader (psk_h1_feed, psk_h1_eof) on any
 * bytes, cut into pieces every which way; and, on a flag, the request
 * framer (psk_h1_host, psk_h1_request) on any base URL and message id.
 *
 * Input: a flags byte, a seed byte, then the bytes. Flags: bit 0, the
 * peer closes after the bytes (psk_h1_eof); bits 1-3, max_body (0, 1, 16,
 * 100, 1 KiB, 64 KiB, 1 MiB, 200 KiB); bit 4, frame a request instead;
 * bits 5, 6 and 7 all, with the seed's three low bits, inflate the bytes:
 * 0xFE then a count c repeats the byte before it c * 512 times, so that
 * 100 KiB lines and 256 KiB of heads are within reach of short inputs
 * (six bits: inflated inputs are slow, a 64th of the runs at most, and
 * they are cut only two ways).
 *
 * Invariants: the same outcome (DONE, FAIL or MORE; status, kind and
 * message; and when DONE the head, body, keep-alive, extra and received
 * bytes) whether the bytes come whole, one at a time, in pieces of random
 * sizes (the seed), as a host following psk_h1_want takes them, or through
 * a reader reset after another answer; feed takes every byte when it says
 * MORE; DONE and FAIL are final (a later feed takes nothing and says the
 * same, eof too); the body never over max_body, the head never over
 * PSK_HEADERS_MAX, nor holding a NUL; a failure has a kind and one of the
 * reader's own messages, never bytes of the input; psk_h1_want never asks
 * past the end of a response that ends; a DONE head starts with a status
 * line and psk_head_unfold leaves it as it is (done once); keep-alive only
 * when DONE with no extra bytes.
 *
 * Request mode: input after the flags is a length byte, a base URL
 * candidate of that length, then a message id. For every base URL
 * psk_normalize_base_url accepts, psk_h1_host gives a host with no '/',
 * CR, LF or NUL that the URL starts with (after the scheme); the request's
 * bytes are the request line, Host, each header, Content-Length and the
 * body, every line CRLF-ended, nothing else.
 */
#include "fuzz.h"
#include "psk_h1.h"
#include "../test/h1_res.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { CUT_WHOLE, CUT_BYTES, CUT_RANDOM, CUT_HOST };

/* The reader's own messages (psk_h1.c), the only ones it may say. */
static int known_message(const char *m) {
  static const char *const prefixes[] = {
      "response too large (",
      "malformed status line",
      "unsupported HTTP version in the status line",
      "malformed status code in the status line",
      "NUL byte in the response head",
      "header line without a colon",
      "folded line with no field before it",
      "folded Content-Length or Transfer-Encoding",
      "malformed Content-Length",
      "differing Content-Length values",
      "unsupported Transfer-Encoding (only chunked is read)",
      "malformed chunk size",
      "chunk size out of range",
      "NUL byte in a chunk extension",
      "bare CR in a chunk-size line",
      "no line end after a chunk's data",
      "bare CR in a trailer line",
      "trailer line without a colon",
      "empty reply from server",
      "connection closed before the end of the response head",
      "connection closed with ",
      "connection closed before the end of the chunked body",
      "out of memory",
  };
  size_t i, n = strlen(m);
  for (i = 0; i < n; i++)
    if ((unsigned char)m[i] < 0x20 || (unsigned char)m[i] >= 0x7f) return 0;
  for (i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
    if (strncmp(m, prefixes[i], strlen(prefixes[i])) == 0) return 1;
  return 0;
}

static uint32_t next_rand(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* Feeds resp[0, n) to r (fresh or reset) cut as asked, all pieces even
   after the end; then eof if asked. Each piece is copied to the end of a
   heap block (one per run, not per piece: a fuzzer must stay fast), so a
   read past a piece is an ASan report.
   ends: bytes the whole run took to DONE without eof (0: unknown), to
   check that want never asks past them. */
static void feed_all(psk_h1 *r, const char *resp, size_t n, size_t max_body,
                     int eof, int cut, uint8_t seed, size_t ends, h1_res *o) {
  size_t off = 0;
  int st = PSK_H1_MORE, ended = 0;
  uint32_t rnd = 0x9e3779b9u ^ seed;
  char *block = malloc(n ? n : 1);
  if (!block) abort();
  do {
    size_t len = n - off, used = (size_t)-1;
    char *piece;
    int s;
    if (cut == CUT_BYTES) len = 1;
    /* Large inputs in larger pieces: a fuzzer must stay fast. */
    if (cut == CUT_RANDOM)
      len = 1 + next_rand(&rnd) % (n > 4096 ? 65536 : seed % 4 ? 16 : 4096);
    if (cut == CUT_HOST)
      len = psk_h1_want(r) ? psk_h1_want(r) : 1 + seed % (n > 4096 ? 4096 : 32);
    if (len > n - off) len = n - off;
    piece = block + (n ? n : 1) - len;
    memmove(piece, resp + off, len);
    s = psk_h1_feed(r, piece, len, &used);
    if (ended) {
      FUZZ_CHECK(s == st && used == 0);
    } else if (s == PSK_H1_MORE) {
      FUZZ_CHECK(used == len);
      if (ends) FUZZ_CHECK(psk_h1_want(r) <= ends - (off + len));
    } else {
      FUZZ_CHECK(s == PSK_H1_DONE || s == PSK_H1_FAIL);
      FUZZ_CHECK(used <= len);
      ended = 1;
    }
    st = s;
    FUZZ_CHECK(r->body.len <= max_body);
    FUZZ_CHECK(r->head.len <= PSK_HEADERS_MAX);
    FUZZ_CHECK(!r->head.data || r->head.data[r->head.len] == '\0');
    off += len;
  } while (off < n);
  free(block);
  if (eof) {
    int s = psk_h1_eof(r);
    FUZZ_CHECK(st == PSK_H1_MORE || s == st);
    st = s;
    FUZZ_CHECK(st != PSK_H1_MORE);
    FUZZ_CHECK(psk_h1_eof(r) == st);
  }
  FUZZ_CHECK(memchr(psk_buf_cstr(&r->head), '\0', r->head.len) == NULL);
  FUZZ_CHECK(memchr(r->msg, '\0', sizeof r->msg) != NULL);
  h1_res_take(o, st, r);
  if (st == PSK_H1_FAIL) {
    FUZZ_CHECK(o->kind == PSK_KIND_NETWORK || o->kind == PSK_KIND_TOO_LARGE);
    FUZZ_CHECK(known_message(o->msg));
    FUZZ_CHECK((o->kind == PSK_KIND_TOO_LARGE) ==
               (strncmp(o->msg, "response too large (", 20) == 0));
  } else {
    FUZZ_CHECK(o->kind == PSK_KIND_NONE && o->msg[0] == '\0');
  }
  if (st != PSK_H1_DONE) FUZZ_CHECK(!o->keepalive);
  if (st == PSK_H1_DONE) {
    char *again;
    FUZZ_CHECK(o->status >= 100 && o->status <= 999);
    FUZZ_CHECK(o->head_len >= 14 &&
               (memcmp(o->head, "HTTP/1.1 ", 9) == 0 ||
                memcmp(o->head, "HTTP/1.0 ", 9) == 0));
    FUZZ_CHECK(o->received + o->extra == n);
    FUZZ_CHECK(o->head_len <= o->received);
    if (o->keepalive) FUZZ_CHECK(o->extra == 0);
    again = fz_dup((const uint8_t *)o->head, o->head_len);
    FUZZ_CHECK(psk_head_unfold(again, o->head_len) == o->head_len &&
               memcmp(again, o->head, o->head_len) == 0);
    free(again);
  }
}

/* An answer read in part before the one under test, on a reader then
   reset: an interim head, then a final head up to a fold. */
static const char OTHER[] =
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX: y\r\n folded\r\n";

static void check_reader(const char *resp, size_t n, size_t max_body, int eof,
                         uint8_t seed) {
  psk_h1 r;
  h1_res whole, o;
  size_t ends;
  int cut;
  psk_h1_init(&r, max_body);
  feed_all(&r, resp, n, max_body, eof, CUT_WHOLE, seed, 0, &whole);
  psk_h1_free(&r);
  ends = whole.st == PSK_H1_DONE && !eof ? (size_t)whole.received : 0;
  for (cut = CUT_BYTES; cut <= CUT_HOST; cut++) {
    if ((cut == CUT_BYTES && n > 1024) || (cut == CUT_RANDOM && n > 4096))
      continue; /* too slow */
    psk_h1_init(&r, max_body);
    feed_all(&r, resp, n, max_body, eof, cut, seed, ends, &o);
    FUZZ_CHECK(h1_same(&whole, &o));
    h1_res_free(&o);
    psk_h1_free(&r);
  }
  /* A reader that read another answer first, then was reset (small
     inputs only: a fuzzer must stay fast). */
  if (n > 4096) {
    h1_res_free(&whole);
    return;
  }
  psk_h1_init(&r, max_body);
  FUZZ_CHECK(psk_h1_feed(&r, OTHER, sizeof OTHER - 1, NULL) == PSK_H1_MORE);
  psk_h1_reset(&r);
  feed_all(&r, resp, n, max_body, eof, CUT_RANDOM, seed, ends, &o);
  FUZZ_CHECK(h1_same(&whole, &o));
  h1_res_free(&o);
  psk_h1_free(&r);
  psk_h1_free(&r);
  h1_res_free(&whole);
}

/* The request framer on a base URL candidate and a message id. */
static void check_request(const uint8_t *data, size_t size) {
  size_t ulen, idlen, i, lines = 0;
  const char *id, *out, *target;
  char *url;
  psk_buf base, host, bytes;
  psk_err e;
  psk_config c;
  psk_request r;
  char head[64];
  int st;
  if (size < 1) return;
  ulen = data[0] < size - 1 ? data[0] : size - 1;
  url = fz_dup(data + 1, ulen);
  id = (const char *)data + 1 + ulen;
  idlen = size - 1 - ulen;
  psk_buf_init(&base, PSK_BASE_URL_MAX);
  psk_buf_init(&host, PSK_BASE_URL_MAX);
  psk_buf_init(&bytes, 1 << 16);
  if (psk_normalize_base_url(url, ulen, &base, &e) != PSK_OK ||
      psk_check_message_id(id, idlen, &e) != PSK_OK)
    goto out;
  /* The host: what follows the scheme, without the path, and without
     the port exactly when it is the scheme's default. */
  FUZZ_CHECK(psk_h1_host(&host, base.data) == PSK_OK);
  {
    const char *u = base.data;
    size_t skip = (u[4] == 's' || u[4] == 'S') ? 8 : 7;
    FUZZ_CHECK(host.len >= 1);
    FUZZ_CHECK(memchr(host.data, '/', host.len) == NULL);
    for (i = 0; i < host.len; i++) FUZZ_CHECK(!fz_is_ctl((unsigned char)host.data[i]));
    if (u[skip] != '[') FUZZ_CHECK(memcmp(u + skip, host.data, strcspn(host.data, ":")) == 0);
    else FUZZ_CHECK(memcmp(u + skip, host.data, strcspn(host.data, "]") + 1) == 0);
  }
  memset(&c, 0, sizeof c);
  c.auth = (char *)"Bearer k";
  c.phone = (char *)"919874532456";
  c.base_url = base.data;
  c.user_agent = (char *)"ua";
  psk_request_init(&r);
  FUZZ_CHECK(psk_request_build(&r, &c, id, idlen, 1, 7, NULL) == PSK_OK);
  st = psk_h1_request(&bytes, &r, host.data, host.len);
  FUZZ_CHECK(st == PSK_OK);
  out = psk_buf_cstr(&bytes);
  target = psk_buf_cstr(&r.url) + r.target;
  FUZZ_CHECK(strncmp(out, "POST ", 5) == 0);
  FUZZ_CHECK(strncmp(out + 5, target, strlen(target)) == 0);
  FUZZ_CHECK(strncmp(out + 5 + strlen(target), " HTTP/1.1\r\nHost: ", 17) == 0);
  FUZZ_CHECK(memcmp(out + 22 + strlen(target), host.data, host.len) == 0);
  snprintf(head, sizeof head, "\r\nContent-Length: %lu\r\n\r\n",
           (unsigned long)r.body.len);
  FUZZ_CHECK(bytes.len > r.body.len + strlen(head));
  FUZZ_CHECK(memcmp(out + bytes.len - r.body.len - strlen(head), head,
                    strlen(head)) == 0);
  FUZZ_CHECK(memcmp(out + bytes.len - r.body.len, r.body.data, r.body.len) == 0);
  /* Every CR is a line end: request line, Host, the headers,
     Content-Length, the blank line. */
  for (i = 0; i + 1 < bytes.len; i++) {
    if (out[i] == '\r') {
      FUZZ_CHECK(out[i + 1] == '\n');
      lines++;
    } else if (out[i] == '\n' || out[i] == '\0') {
      FUZZ_CHECK(i > 0 && out[i - 1] == '\r' && out[i] == '\n');
    }
  }
  FUZZ_CHECK(lines == (size_t)r.nheaders + 4);
  psk_request_free(&r);
out:
  psk_buf_free(&bytes);
  psk_buf_free(&host);
  psk_buf_free(&base);
  free(url);
}

/* Room for heads past their cap (bodies past max_body need no more: the
   smaller max_body values are there for them). */
#define INFLATED_MAX (272 * 1024)

/* Expands 0xFE c into c * 512 copies of the byte before it, up to
   INFLATED_MAX bytes in all. */
static char *inflate(const uint8_t *p, size_t n, size_t *out_n) {
  size_t i, len = 0;
  char *o = malloc(INFLATED_MAX + n);
  if (!o) abort();
  for (i = 0; i < n; i++) {
    if (p[i] == 0xFE && i + 1 < n && len > 0) {
      size_t k = (size_t)p[++i] * 512;
      if (len >= INFLATED_MAX) k = 0;
      else if (k > INFLATED_MAX - len) k = INFLATED_MAX - len;
      memset(o + len, o[len - 1], k);
      len += k;
    } else {
      o[len++] = (char)p[i];
    }
  }
  *out_n = len;
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t max_bodies[] = {0,    1,         16,      100,
                                      1024, 64 * 1024, 1 << 20, 200 * 1024};
  uint8_t flags, seed;
  char *resp;
  size_t n;
  if (size < 2) return 0;
  flags = data[0];
  seed = data[1];
  if (flags & 16) {
    check_request(data + 2, size - 2);
    return 0;
  }
  if ((flags & 224) == 224 && (seed & 7) == 7) {
    resp = inflate(data + 2, size - 2, &n);
  } else {
    n = size - 2;
    resp = fz_dup(data + 2, n);
  }
  check_reader(resp, n, max_bodies[(flags >> 1) & 7], flags & 1, seed);
  free(resp);
  return 0;
}
