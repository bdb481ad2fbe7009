/* psk_resp: see psk_resp.h. */
#include "psk_resp.h"

#include <limits.h>
#include <string.h>

enum {
  S_TYPE,    /* a type byte: + - : $ * */
  S_LINE,    /* a simple line's bytes, up to CR */
  S_NUM,     /* a header's number, up to CR */
  S_LF,      /* the LF after a line's CR */
  S_BULK,    /* a bulk string's bytes */
  S_BULK_CR, /* the CRLF after them */
  S_BULK_LF,
  S_ERROR    /* stays so: s->why says why */
};

void psk_resp_init(psk_resp_scan *s, const psk_resp_limits *lim) {
  memset(s, 0, sizeof *s);
  s->lim = *lim;
  if (s->lim.max_depth > PSK_RESP_DEPTH) s->lim.max_depth = PSK_RESP_DEPTH;
  if (s->lim.max_depth < 0) s->lim.max_depth = 0;
  s->state = S_TYPE;
}

void psk_resp_wait(psk_resp_scan *s, unsigned long n) { s->waited += n; }

static int fail(psk_resp_scan *s, int code, const char *why) {
  s->state = S_ERROR;
  s->why = why;
  s->status = code; /* what every later call returns */
  return code;
}

/* A whole element ended: it counts against the array it is in, and an
   array whose last element it was ends too. */
static void element_done(psk_resp_scan *s) {
  for (;;) {
    if (s->depth == 0) {
      s->done++;
      break;
    }
    if (--s->left[s->depth - 1] > 0) break;
    s->depth--;
  }
  s->state = S_TYPE;
}

/* The CRLF of a line came: what the line said takes effect. */
static int line_done(psk_resp_scan *s) {
  if (s->type == '+' || s->type == '-' || s->type == ':') {
    element_done(s);
    return PSK_RESP_OK;
  }
  if (s->line == 0 || (s->neg && s->line == 1))
    return fail(s, PSK_RESP_BAD, "a length without digits");
  if (s->neg) { /* only -1, the nil string or array */
    if (s->num != 1)
      return fail(s, PSK_RESP_BAD, "a negative length other than -1");
    element_done(s);
    return PSK_RESP_OK;
  }
  if (s->type == '$') {
    s->bulk_left = (size_t)s->num;
    s->state = s->bulk_left ? S_BULK : S_BULK_CR;
    return PSK_RESP_OK;
  }
  if (s->num == 0) { /* the empty array */
    element_done(s);
    return PSK_RESP_OK;
  }
  if (s->depth >= s->lim.max_depth)
    return fail(s, PSK_RESP_TOO_LARGE, "arrays nested too deep");
  s->left[s->depth++] = (long)s->num;
  s->state = S_TYPE;
  return PSK_RESP_OK;
}

int psk_resp_feed(psk_resp_scan *s, const char *p, size_t len) {
  size_t i = 0;
  if (s->state == S_ERROR) return s->status;
  while (i < len) {
    char c = p[i];
    switch (s->state) {
      case S_TYPE:
        if (s->depth == 0 && s->done >= s->waited)
          return fail(s, PSK_RESP_EXTRA, "bytes after the last reply");
        if (!strchr("+-:$*", c) || c == '\0')
          return fail(s, PSK_RESP_BAD, "an unknown reply type");
        s->type = c;
        s->line = 0;
        s->num = 0;
        s->neg = 0;
        s->state = (c == '$' || c == '*') ? S_NUM : S_LINE;
        i++;
        break;
      case S_LINE:
        /* A line's bytes up to its CR, counted, all at once. */
        while (i < len && p[i] != '\r' && p[i] != '\n') {
          if (++s->line > s->lim.max_line)
            return fail(s, PSK_RESP_TOO_LARGE, "a line too long");
          i++;
        }
        if (i < len) {
          if (p[i] == '\n')
            return fail(s, PSK_RESP_BAD, "a line not ended by CRLF");
          s->state = S_LF;
          i++;
        }
        break;
      case S_NUM:
        if (c == '\r') {
          s->state = S_LF;
        } else if (c == '-' && s->line == 0) {
          s->neg = 1;
          s->line++;
        } else if (c >= '0' && c <= '9') {
          /* Refused as soon as the digits pass the limit: a header is
             never taken whole before it is judged. */
          long long max = s->neg ? 1
                          : s->type == '$'
                              ? (s->lim.max_bulk > (size_t)LLONG_MAX
                                     ? LLONG_MAX
                                     : (long long)s->lim.max_bulk)
                              : (long long)s->lim.max_elements;
          int over = s->num > (LLONG_MAX - 9) / 10;
          if (!over) s->num = s->num * 10 + (c - '0');
          if (++s->line > s->lim.max_line || over || s->num > max) {
            if (s->neg) return fail(s, PSK_RESP_BAD, "a negative length other than -1");
            return fail(s, PSK_RESP_TOO_LARGE, s->type == '$'
                                                   ? "a bulk string too long"
                                                   : "an array too long");
          }
        } else {
          return fail(s, PSK_RESP_BAD, "a length that is not a number");
        }
        i++;
        break;
      case S_LF:
        if (c != '\n') return fail(s, PSK_RESP_BAD, "a line not ended by CRLF");
        i++;
        if (line_done(s) != PSK_RESP_OK) return s->status;
        break;
      case S_BULK: {
        size_t n = len - i < s->bulk_left ? len - i : s->bulk_left;
        s->bulk_left -= n;
        i += n;
        if (s->bulk_left == 0) s->state = S_BULK_CR;
        break;
      }
      case S_BULK_CR:
      case S_BULK_LF:
        if (c != (s->state == S_BULK_CR ? '\r' : '\n'))
          return fail(s, PSK_RESP_BAD, "a bulk string not ended by CRLF");
        i++;
        if (s->state == S_BULK_CR)
          s->state = S_BULK_LF;
        else
          element_done(s);
        break;
      default:
        return s->status;
    }
  }
  return PSK_RESP_OK;
}
