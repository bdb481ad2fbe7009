/*
 * psk_h1: the pin request's bytes and a response reader fed bytes as they
 * arrive (see psk_h1.h). Plain C99; must not include lua.h or curl.h, and
 * does no I/O.
 *
 * Where libcurl 7.88 (the other transport) is laxer than RFC 9112, this
 * reader takes the RFC's side and fails with PSK_KIND_NETWORK, as libcurl
 * does for the malformed answers it does refuse: a status line in lower
 * case, without SP after the code, or saying "HTTP/2" on an HTTP/1.1
 * connection; a Content-Length with bytes after its digits, differing
 * values (libcurl keeps the last) or an obs-fold (libcurl ignores it);
 * bytes other than OWS and ';' after a chunk size, a bare CR in a chunk
 * line; a Transfer-Encoding other than one chunked (libcurl decodes gzip,
 * reads "identity" or an empty one to the close, and "chunked, chunked" as
 * chunked). A chunk size beyond what max_body leaves is too large at once,
 * before its data (libcurl: once the data overflows). It agrees with
 * libcurl on the rest (a differential run over a few dozen answers, valid
 * and hostile, found the same status, head and body, or the same failure
 * kind): a NUL in a head, a line without ':' or a fold with no field
 * before it (refused); a bare CR inside a header line (kept:
 * psk_header_next drops the field); a 101 never asked for (final, body up
 * to the close); trailers (kept in the head after its blank line,
 * CRLF-ended); chunk sizes past 2^63 - 1 (out of range). Two small
 * differences in where a limit falls: a line of PSK_H1_LINE_MAX bytes is
 * too large here in a trailer or a chunk line too (libcurl: a network
 * error past 64 KiB of trailers, no limit on chunk extensions), and the
 * blank line that ends the trailers counts toward PSK_HEADERS_MAX while it
 * is read.
 */
#include "psk_h1.h"

#include <stdio.h>
#include <string.h>

/* ---- the request ---- */

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* Whether the n bytes at a are b (NUL-terminated), ignoring ASCII case. */
static int ieq(const char *a, size_t n, const char *b) {
  size_t i;
  for (i = 0; i < n; i++)
    if (!b[i] || lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
      return 0;
  return b[n] == '\0';
}

int psk_h1_origin(const char *url, psk_origin *o) {
  size_t n = strlen(url), i;
  memset(o, 0, sizeof *o);
  if (n >= 8 && ieq(url, 8, "https://")) {
    i = 8;
    o->tls = 1;
    o->port = 443;
  } else if (n >= 7 && ieq(url, 7, "http://")) {
    i = 7;
    o->port = 80;
  } else {
    return PSK_INVALID;
  }
  o->host_off = i;
  if (url[i] == '[') {
    const char *close = strchr(url + i, ']');
    if (!close) return PSK_INVALID;
    i = (size_t)(close - url) + 1;
  } else {
    while (i < n && url[i] != ':' && url[i] != '/') i++;
  }
  o->host_len = i - o->host_off;
  if (o->host_len == 0) return PSK_INVALID;
  if (url[i] == ':') {
    unsigned long port = 0;
    size_t d = ++i;
    for (; url[i] >= '0' && url[i] <= '9'; i++) {
      port = port * 10 + (unsigned long)(url[i] - '0');
      if (port > 65535) return PSK_INVALID;
    }
    if (i == d || port == 0) return PSK_INVALID;
    o->explicit_port = (int)port != o->port;
    o->port = (int)port;
  }
  if (url[i] && url[i] != '/') return PSK_INVALID;
  return PSK_OK;
}

int psk_h1_host(psk_buf *out, const char *url) {
  psk_origin o;
  int st;
  psk_buf_clear(out);
  if ((st = psk_h1_origin(url, &o)) != PSK_OK) return st;
  if ((st = psk_buf_append(out, url + o.host_off, o.host_len)) != PSK_OK)
    return st;
  if (o.explicit_port) {
    char num[8];
    snprintf(num, sizeof num, ":%d", o.port);
    return psk_buf_addstr(out, num);
  }
  return PSK_OK;
}

/* Whether s[0, n) holds a byte that would end or split a line. */
static int breaks_line(const char *s, size_t n) {
  return memchr(s, '\r', n) || memchr(s, '\n', n) || memchr(s, '\0', n);
}

int psk_h1_request(psk_buf *out, const psk_request *r, const char *host,
                   size_t host_len) {
  const char *url = psk_buf_cstr(&r->url), *target;
  size_t tlen, i;
  char length[40];
  int st, k;
  psk_buf_clear(out);
  if (r->target >= r->url.len) return PSK_INVALID;
  target = url + r->target;
  tlen = r->url.len - r->target;
  /* A space would end the target: the request line has three parts. */
  if (breaks_line(target, tlen) || memchr(target, ' ', tlen) ||
      host_len == 0 || breaks_line(host, host_len))
    return PSK_INVALID;
  for (k = 0; k < r->nheaders; k++)
    if (breaks_line(r->headers[k].name, strlen(r->headers[k].name)) ||
        breaks_line(r->headers[k].value, strlen(r->headers[k].value)))
      return PSK_INVALID;
  if ((st = psk_buf_append(out, "POST ", 5)) != PSK_OK ||
      (st = psk_buf_append(out, target, tlen)) != PSK_OK ||
      (st = psk_buf_append(out, " HTTP/1.1\r\nHost: ", 17)) != PSK_OK ||
      (st = psk_buf_append(out, host, host_len)) != PSK_OK ||
      (st = psk_buf_append(out, "\r\n", 2)) != PSK_OK)
    return st;
  for (k = 0; k < r->nheaders; k++)
    if ((st = psk_buf_addstr(out, r->headers[k].name)) != PSK_OK ||
        (st = psk_buf_append(out, ": ", 2)) != PSK_OK ||
        (st = psk_buf_addstr(out, r->headers[k].value)) != PSK_OK ||
        (st = psk_buf_append(out, "\r\n", 2)) != PSK_OK)
      return st;
  i = (size_t)snprintf(length, sizeof length, "Content-Length: %lu\r\n\r\n",
                       (unsigned long)r->body.len);
  if ((st = psk_buf_append(out, length, i)) != PSK_OK) return st;
  return psk_buf_append(out, psk_buf_cstr(&r->body), r->body.len);
}

/* ---- the response ---- */

enum {
  S_STATUS,     /* a status line */
  S_FIELDS,     /* the lines of a head after its status line */
  S_BODY,       /* Content-Length bytes */
  S_CLOSE,      /* a body up to the close */
  S_CHUNK_SIZE, /* the hex digits of a chunk size */
  S_CHUNK_AFTER, /* OWS after them, then ';', CR or LF */
  S_CHUNK_EXT,  /* a chunk extension, up to the line end */
  S_CHUNK_LF,   /* the LF after a chunk-size line's CR */
  S_CHUNK_DATA, /* a chunk's bytes */
  S_DATA_CR,    /* the CRLF (or LF) after them */
  S_DATA_LF,
  S_TRAILERS,   /* trailer lines, up to a blank one */
  S_DONE,
  S_FAIL
};

/* psk_h1.flags */
enum {
  H1_INTERIM = 1 << 0,     /* the head being read is a 1xx */
  H1_CL = 1 << 1,          /* Content-Length seen */
  H1_TE = 1 << 2,          /* Transfer-Encoding seen */
  H1_TE_CHUNKED = 1 << 3,  /* ... saying chunked once */
  H1_TE_BAD = 1 << 4,      /* ... saying anything else */
  H1_CONN_CLOSE = 1 << 5,  /* Connection: close */
  H1_CONN_KEEP = 1 << 6,   /* Connection: keep-alive */
  H1_CONN_FOLD = 1 << 7,   /* a folded Connection field */
  H1_FOLDED = 1 << 8,      /* the final head has a fold: unfold when done */
  H1_CLOSE_DELIM = 1 << 9, /* the body ends at the close */
  H1_LAST_STATUS = 1 << 10, /* the line before was the status line */
  H1_LAST_FRAMING = 1 << 11, /* ... a Content-Length or Transfer-Encoding */
  H1_LAST_CONN = 1 << 12,  /* ... a Connection field */
  H1_LAST = H1_LAST_STATUS | H1_LAST_FRAMING | H1_LAST_CONN
};

#define HEADS_TOO_LARGE "heads over 256 KiB with interim ones"
#define LINE_TOO_LARGE "a line over 100 KiB"

void psk_h1_init(psk_h1 *r, size_t max_body) {
  psk_buf_init(&r->head, PSK_HEADERS_MAX);
  psk_buf_init(&r->body, max_body);
  r->max_body = max_body;
  psk_h1_reset(r);
}

void psk_h1_reset(psk_h1 *r) {
  psk_buf_clear(&r->head);
  psk_buf_clear(&r->body);
  r->status = 0;
  r->kind = PSK_KIND_NONE;
  r->msg[0] = '\0';
  r->received = r->extra = 0;
  r->state = S_STATUS;
  r->version = 0;
  r->flags = 0;
  r->head_total = r->line_start = r->line_len = 0;
  r->length = r->left = 0;
  r->digits = r->trailers = 0;
}

void psk_h1_free(psk_h1 *r) {
  psk_buf_free(&r->head);
  psk_buf_free(&r->body);
}

static int fail(psk_h1 *r, int kind, const char *msg) {
  r->state = S_FAIL;
  r->kind = kind;
  snprintf(r->msg, sizeof r->msg, "%s", msg);
  return PSK_H1_FAIL;
}

static int bad(psk_h1 *r, const char *msg) {
  return fail(r, PSK_KIND_NETWORK, msg);
}

static int too_large(psk_h1 *r, const char *what) {
  r->state = S_FAIL;
  r->kind = PSK_KIND_TOO_LARGE;
  snprintf(r->msg, sizeof r->msg, "response too large (%s)", what);
  return PSK_H1_FAIL;
}

static int body_too_large(psk_h1 *r) {
  r->state = S_FAIL;
  r->kind = PSK_KIND_TOO_LARGE;
  snprintf(r->msg, sizeof r->msg,
           "response too large (body over max_body, %lu bytes)",
           (unsigned long)r->max_body);
  return PSK_H1_FAIL;
}

/* A psk_buf_append that did not succeed. */
static int append_failed(psk_h1 *r, int st) {
  return st == PSK_NOMEM ? bad(r, "out of memory") : body_too_large(r);
}

static int done(psk_h1 *r) {
  if ((r->flags & H1_FOLDED) && r->head.data) {
    r->head.len = psk_head_unfold(r->head.data, r->head.len);
    r->head.data[r->head.len] = '\0';
  }
  r->state = S_DONE;
  return PSK_H1_DONE;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = (char)lower((unsigned char)c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Whether a list value has an element: a byte other than OWS and ','. */
static int has_element(const char *v, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (!is_ows(v[i]) && v[i] != ',') return 1;
  return 0;
}

/* Calls fn on each element of a comma-separated list, OWS trimmed, empty
   elements skipped (RFC 9110 5.6.1). Stops at the first fn that returns
   nonzero and returns it. */
static int each_element(psk_h1 *r, const char *v, size_t n,
                        int (*fn)(psk_h1 *, const char *, size_t)) {
  size_t i = 0;
  while (i <= n) {
    const char *comma = memchr(v + i, ',', n - i);
    size_t e = comma ? (size_t)(comma - v) : n, a = i, b = e;
    int st;
    while (a < b && is_ows(v[a])) a++;
    while (b > a && is_ows(v[b - 1])) b--;
    if (b > a && (st = fn(r, v + a, b - a)) != 0) return st;
    i = e + 1;
  }
  return 0;
}

/* One Content-Length value: digits only. Values past 2^64 - 1 saturate:
   they are too large for any max_body anyway. */
static int cl_element(psk_h1 *r, const char *s, size_t n) {
  uint64_t v = 0;
  size_t i;
  for (i = 0; i < n; i++) {
    if (!is_digit(s[i])) return bad(r, "malformed Content-Length");
    v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX : v * 10 + (uint64_t)(s[i] - '0');
  }
  if ((r->flags & H1_CL) && v != r->length)
    return bad(r, "differing Content-Length values");
  r->flags |= H1_CL;
  r->length = v;
  return 0;
}

static int te_element(psk_h1 *r, const char *s, size_t n) {
  if (ieq(s, n, "chunked") && !(r->flags & H1_TE_CHUNKED))
    r->flags |= H1_TE_CHUNKED;
  else
    r->flags |= H1_TE_BAD; /* another coding, chunked twice, parameters */
  return 0;
}

static int conn_element(psk_h1 *r, const char *s, size_t n) {
  if (ieq(s, n, "close")) r->flags |= H1_CONN_CLOSE;
  if (ieq(s, n, "keep-alive")) r->flags |= H1_CONN_KEEP;
  return 0;
}

/* A field line of a head: line[0, n) without its line end, not starting
   with whitespace. Reads the fields that frame the final response. */
static int field(psk_h1 *r, const char *line, size_t n) {
  const char *colon = memchr(line, ':', n), *v;
  size_t name, vn;
  r->flags &= ~H1_LAST;
  if (!colon) return bad(r, "header line without a colon");
  /* A 1xx's fields frame nothing; nor do a 101's, a 204's or a 304's
     Content-Length and Transfer-Encoding (libcurl never reads them). */
  if ((r->flags & H1_INTERIM) || r->status == 101) return PSK_H1_MORE;
  name = (size_t)(colon - line);
  v = colon + 1;
  vn = n - name - 1;
  if (ieq(line, name, "connection")) {
    r->flags |= H1_LAST_CONN;
    each_element(r, v, vn, conn_element);
    return PSK_H1_MORE;
  }
  if (r->status == 204 || r->status == 304) return PSK_H1_MORE;
  if (ieq(line, name, "content-length")) {
    r->flags |= H1_LAST_FRAMING;
    if (!has_element(v, vn)) return bad(r, "malformed Content-Length");
    return each_element(r, v, vn, cl_element) ? PSK_H1_FAIL : PSK_H1_MORE;
  }
  if (ieq(line, name, "transfer-encoding")) {
    r->flags |= H1_TE | H1_LAST_FRAMING;
    if (!has_element(v, vn)) r->flags |= H1_TE_BAD;
    each_element(r, v, vn, te_element);
  }
  return PSK_H1_MORE;
}

/* The blank line of a head. */
static int head_end(psk_h1 *r) {
  if (r->flags & H1_INTERIM) {
    /* Skipped: only the final head is kept, but its bytes stay counted
       in head_total. */
    psk_buf_clear(&r->head);
    r->line_start = 0;
    r->flags = 0;
    r->state = S_STATUS;
    return PSK_H1_MORE;
  }
  r->line_start = r->head.len;
  if (r->status == 101) {
    r->flags |= H1_CLOSE_DELIM;
    r->state = S_CLOSE;
    return PSK_H1_MORE;
  }
  if (r->status == 204 || r->status == 304) return done(r);
  if (r->flags & H1_TE) {
    if (r->flags & H1_TE_BAD)
      return bad(r, "unsupported Transfer-Encoding (only chunked is read)");
    r->left = 0;
    r->digits = 0;
    r->state = S_CHUNK_SIZE;
    return PSK_H1_MORE;
  }
  if (r->flags & H1_CL) {
    if (r->length > r->max_body) return body_too_large(r);
    if (r->length == 0) return done(r);
    r->left = r->length;
    r->state = S_BODY;
    return PSK_H1_MORE;
  }
  r->flags |= H1_CLOSE_DELIM;
  r->state = S_CLOSE;
  return PSK_H1_MORE;
}

/* "HTTP/1.x NNN[ reason]", line[0, n) without its line end. */
static int status_line(psk_h1 *r, const char *line, size_t n) {
  if (n < 12 || memcmp(line, "HTTP/", 5) != 0 || !is_digit(line[5]) ||
      line[6] != '.' || !is_digit(line[7]) || line[8] != ' ')
    return bad(r, "malformed status line");
  if (line[5] != '1' || (line[7] != '0' && line[7] != '1'))
    return bad(r, "unsupported HTTP version in the status line");
  if (!is_digit(line[9]) || line[9] == '0' || !is_digit(line[10]) ||
      !is_digit(line[11]) || (n > 12 && line[12] != ' '))
    return bad(r, "malformed status code in the status line");
  r->version = line[7] == '1' ? 11 : 10;
  r->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  r->flags = H1_LAST_STATUS;
  if (r->status < 200 && r->status != 101) r->flags |= H1_INTERIM;
  r->state = S_FIELDS;
  return PSK_H1_MORE;
}

/* A whole line of a head or of the trailers is in head, from line_start:
   line_len bytes, its LF the last. */
static int line_end(psk_h1 *r) {
  char *line = r->head.data + r->line_start;
  size_t n = r->line_len - 1, len = r->line_len;
  int st = PSK_H1_MORE;
  if (n && line[n - 1] == '\r') n--;
  r->line_len = 0;
  if (r->state == S_STATUS) {
    st = status_line(r, line, n);
  } else if (n == 0) { /* the blank line */
    if (r->state == S_FIELDS) return head_end(r);
    /* After the trailers: libcurl hands it to no one. */
    r->head.len = r->line_start;
    r->head.data[r->head.len] = '\0';
    r->head_total -= len;
    return done(r);
  } else if (r->state == S_TRAILERS && memchr(line, '\r', n)) {
    return bad(r, "bare CR in a trailer line");
  } else if (is_ows(line[0])) {
    /* obs-fold: continues the field before it (done() joins them). */
    if (r->flags & H1_LAST_STATUS ||
        (r->state == S_TRAILERS && r->trailers == 0))
      return bad(r, "folded line with no field before it");
    if (r->flags & H1_LAST_FRAMING)
      return bad(r, "folded Content-Length or Transfer-Encoding");
    if (r->flags & H1_LAST_CONN) r->flags |= H1_CONN_FOLD;
    r->flags |= H1_FOLDED;
  } else if (r->state == S_TRAILERS) {
    if (!memchr(line, ':', n)) return bad(r, "trailer line without a colon");
    r->trailers++;
  } else {
    st = field(r, line, n);
  }
  if (st == PSK_H1_MORE && r->state == S_TRAILERS && line[len - 2] != '\r') {
    /* Trailers as libcurl hands them on: each line CRLF-ended. */
    if (r->head_total >= PSK_HEADERS_MAX) return too_large(r, HEADS_TOO_LARGE);
    line[len - 1] = '\r';
    if (psk_buf_append(&r->head, "\n", 1) != PSK_OK)
      return bad(r, "out of memory");
    r->head_total++;
  }
  r->line_start = r->head.len;
  return st;
}

/* Bytes of a head or of the trailers, up to the first LF of the n at p:
   *k of them taken. Whole lines are read as their LF comes, every limit
   checked before a byte is kept, and in the order of the bytes: the
   first byte that breaks a rule decides, however the bytes were split. */
static int line_bytes(psk_h1 *r, const char *p, size_t n, size_t *k) {
  const char *lf = memchr(p, '\n', n);
  size_t line_room = PSK_H1_LINE_MAX - 1 - r->line_len;
  size_t head_room = PSK_HEADERS_MAX - r->head_total;
  size_t room = line_room < head_room ? line_room : head_room, take;
  *k = lf ? (size_t)(lf - p) + 1 : n;
  take = *k < room ? *k : room;
  if (r->state == S_STATUS && r->line_len < 5) {
    /* Refused from its first bytes: not HTTP (0.9, TLS, garbage). */
    static const char http[] = "HTTP/";
    size_t m = 5 - r->line_len < take ? 5 - r->line_len : take;
    if (memcmp(p, http + r->line_len, m) != 0)
      return bad(r, "malformed status line");
  }
  if (memchr(p, '\0', take)) return bad(r, "NUL byte in the response head");
  if (take < *k)
    return too_large(r, line_room <= head_room ? LINE_TOO_LARGE
                                               : HEADS_TOO_LARGE);
  /* Within head's cap (head_total counts more than head holds), so only
     memory can fail. */
  if (psk_buf_append(&r->head, p, *k) != PSK_OK)
    return bad(r, "out of memory");
  r->line_len += *k;
  r->head_total += *k;
  return lf ? line_end(r) : PSK_H1_MORE;
}

/* Bytes of the chunk framing, one at a time (a few per chunk). */
static int chunk_byte(psk_h1 *r, char c) {
  if (r->state != S_DATA_CR && r->state != S_DATA_LF &&
      ++r->line_len >= PSK_H1_LINE_MAX)
    return too_large(r, LINE_TOO_LARGE);
  if (r->state == S_CHUNK_SIZE) {
    int v = hex_value(c);
    if (v >= 0) {
      /* Leading zeros are free; a size past 2^63 - 1 is out of range
         (as for libcurl, whose sizes are signed 64-bit): checked before
         the 17th significant digit could overflow. */
      if ((r->left || v) && ++r->digits > 16)
        return bad(r, "chunk size out of range");
      r->left = r->left << 4 | (uint64_t)v;
      if (r->left > (uint64_t)INT64_MAX)
        return bad(r, "chunk size out of range");
      return PSK_H1_MORE;
    }
    if (r->line_len == 1) return bad(r, "malformed chunk size");
    /* Said before any of its bytes is read. */
    if (r->left > r->max_body - r->body.len) return body_too_large(r);
    r->state = S_CHUNK_AFTER; /* and this byte is read as such */
  }
  switch (r->state) {
  case S_CHUNK_AFTER:
    if (is_ows(c)) return PSK_H1_MORE;
    if (c == ';') {
      r->state = S_CHUNK_EXT;
      return PSK_H1_MORE;
    }
    break; /* the line end, or wrong */
  case S_CHUNK_EXT:
    if (c == '\0') return bad(r, "NUL byte in a chunk extension");
    if (c != '\r' && c != '\n') return PSK_H1_MORE;
    break;
  case S_CHUNK_LF:
    if (c != '\n') return bad(r, "bare CR in a chunk-size line");
    break;
  case S_DATA_CR:
  case S_DATA_LF:
    if (c == '\r' && r->state == S_DATA_CR) {
      r->state = S_DATA_LF;
      return PSK_H1_MORE;
    }
    if (c != '\n') return bad(r, "no line end after a chunk's data");
    r->line_len = 0;
    r->digits = 0;
    r->state = S_CHUNK_SIZE;
    return PSK_H1_MORE;
  default:
    return bad(r, "internal error: not in a chunk");
  }
  /* The end of a chunk-size line: c is its CR or LF. */
  if (c == '\r' && r->state != S_CHUNK_LF) {
    r->state = S_CHUNK_LF;
    return PSK_H1_MORE;
  }
  if (c != '\n') return bad(r, "malformed chunk size");
  r->line_len = 0;
  if (r->left) {
    r->state = S_CHUNK_DATA;
  } else {
    r->state = S_TRAILERS;
    r->line_start = r->head.len;
    r->flags &= ~H1_LAST;
  }
  return PSK_H1_MORE;
}

/* Body bytes: *k of the n at p, at most left of them unless the body
   runs to the close. */
static int body_bytes(psk_h1 *r, const char *p, size_t n, size_t *k) {
  int st;
  if (r->state != S_CLOSE && (uint64_t)n > r->left) n = (size_t)r->left;
  if ((st = psk_buf_append(&r->body, p, n)) != PSK_OK)
    return append_failed(r, st);
  *k = n;
  if (r->state != S_CLOSE) r->left -= n;
  return PSK_H1_MORE;
}

int psk_h1_feed(psk_h1 *r, const char *p, size_t n, size_t *used) {
  size_t i = 0;
  int st = PSK_H1_MORE;
  if (used) *used = 0;
  if (r->state == S_DONE) {
    r->extra += n;
    return PSK_H1_DONE;
  }
  if (r->state == S_FAIL) return PSK_H1_FAIL;
  while (i < n && st == PSK_H1_MORE) {
    size_t k = 0;
    switch (r->state) {
    case S_STATUS:
    case S_FIELDS:
    case S_TRAILERS:
      st = line_bytes(r, p + i, n - i, &k);
      break;
    case S_BODY:
    case S_CHUNK_DATA:
      st = body_bytes(r, p + i, n - i, &k);
      if (st == PSK_H1_MORE && r->left == 0)
        st = r->state == S_BODY ? done(r) : (r->state = S_DATA_CR, PSK_H1_MORE);
      break;
    case S_CLOSE:
      st = body_bytes(r, p + i, n - i, &k);
      break;
    default:
      st = chunk_byte(r, p[i]);
      k = 1;
      break;
    }
    /* A failure keeps what was read before the byte it stopped at. */
    if (st != PSK_H1_FAIL) i += k;
  }
  r->received += i;
  if (used) *used = i;
  if (st == PSK_H1_DONE) r->extra += n - i;
  return st;
}

int psk_h1_eof(psk_h1 *r) {
  char msg[96];
  switch (r->state) {
  case S_DONE:
    return PSK_H1_DONE;
  case S_FAIL:
    return PSK_H1_FAIL;
  case S_CLOSE:
    return done(r);
  case S_STATUS:
  case S_FIELDS:
    return bad(r, r->received == 0
                      ? "empty reply from server"
                      : "connection closed before the end of the response head");
  case S_BODY:
    snprintf(msg, sizeof msg,
             "connection closed with %lu bytes of the body to come",
             (unsigned long)r->left);
    return bad(r, msg);
  default:
    return bad(r, "connection closed before the end of the chunked body");
  }
}

size_t psk_h1_want(const psk_h1 *r) {
  return r->state == S_BODY || r->state == S_CHUNK_DATA ? (size_t)r->left : 0;
}

int psk_h1_keepalive(const psk_h1 *r) {
  if (r->state != S_DONE || r->extra) return 0;
  if (r->flags & (H1_CLOSE_DELIM | H1_CONN_CLOSE | H1_CONN_FOLD)) return 0;
  /* RFC 9112 6.1 and 6.3: both framings, or chunked in HTTP/1.0, is a
     message to close the connection after. */
  if ((r->flags & H1_TE) && (r->flags & H1_CL)) return 0;
  if (r->version == 10 && (!(r->flags & H1_CONN_KEEP) || (r->flags & H1_TE)))
    return 0;
  return 1;
}
