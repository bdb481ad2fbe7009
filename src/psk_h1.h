/*
 * psk_h1: HTTP/1.1 for a pin, sans-I/O. It frames the request's bytes and
 * reads the answer's bytes as they arrive; whoever owns the socket (an
 * OpenResty cosocket, a luv handle) only moves them. Models: hiredis's
 * redisReader (bytes in, a reply out when one is whole), Python's h11 and
 * llhttp (told bytes, saying "need more" or "done", every limit checked
 * as bytes arrive).
 *
 * Plain C99 beside psk_core: no lua.h, no curl.h, no socket. What the
 * reader produces is what psk_http collects from libcurl (psk_reply in
 * psk_http.h): the status, the final head as sent (status line, header
 * lines, blank line; obs-fold joined by psk_head_unfold) and the body, so
 * a result built from either is the same. Memory grows only with bytes
 * received, within the caps: never by a size the peer announced.
 */
#ifndef PSK_H1_H
#define PSK_H1_H

#include <stddef.h>
#include <stdint.h>

#include "psk_buf.h"
#include "psk_core.h"

/* A line of a head, a trailer or a chunk size must be shorter, its line
   end included: libcurl's CURL_MAX_HTTP_HEADER (100 KiB), a buffer that
   holds the line and a NUL. */
#define PSK_H1_LINE_MAX (100 * 1024)

/* ---- the request ---- */

/* Where a normalized base URL's requests go: TLS or not, the host as
   written in it (url + host_off, host_len bytes; an IPv6 literal with its
   brackets, as nginx's cosockets take it) and the port (the scheme's
   default when none is written; explicit_port: a port other than that
   default is written). PSK_OK, or PSK_INVALID for a URL that is not
   http:// or https:// with a host. */
typedef struct psk_origin {
  int tls;
  size_t host_off, host_len;
  int port;
  int explicit_port;
} psk_origin;
int psk_h1_origin(const char *url, psk_origin *o);

/* The Host header's value for a normalized base URL (psk_core.h): its
   host as written, a bracketed IPv6 literal kept, then ":port" unless the
   port is the scheme's default (80 for http, 443 for https); the port in
   decimal without leading zeros. That is what libcurl sends. Written into
   out (cleared first): PSK_OK, PSK_NOMEM, or PSK_INVALID when url does
   not start with http:// or https:// or names no host. A client's base
   URL never changes, so this runs once per client, not per pin. */
int psk_h1_host(psk_buf *out, const char *url);

/* The bytes of r as libcurl sends them (psk_http.c, header_list), into
   out (cleared first):

     POST <target> HTTP/1.1\r\n
     Host: <host>\r\n
     <each of r->headers: Authorization, x-phone when set, Content-Type,
      Accept, User-Agent, in that order>\r\n
     Content-Length: <body length>\r\n
     \r\n
     <body>

   The target is psk_buf_cstr(&r->url) + r->target; host (host_len bytes)
   is psk_h1_host's. PSK_OK, PSK_NOMEM, PSK_TOO_LARGE (out's cap), or
   PSK_INVALID, out left empty, when the host, the target, a header name
   or a value holds a CR, LF or NUL, the target a space, or the host or
   target is empty: the validators keep such bytes out, and this is the
   last place that could put one on the wire. */
int psk_h1_request(psk_buf *out, const psk_request *r, const char *host,
                   size_t host_len);

/* ---- the response ---- */

/* What psk_h1_feed and psk_h1_eof say. */
enum {
  PSK_H1_MORE = 0, /* the answer is not whole yet: feed more bytes */
  PSK_H1_DONE = 1, /* a whole final response: status, head, body */
  PSK_H1_FAIL = 2  /* no usable answer: kind and msg say why */
};

/* One response being read. The fields above "private" may be read; none
   may be written. */
typedef struct psk_h1 {
  long status;       /* of the last status line read: the final one once
                        DONE (a 1xx while one is being skipped) */
  psk_buf head;      /* the final head, whole once DONE (see above) */
  psk_buf body;      /* at most max_body bytes */
  int kind;          /* when FAIL: PSK_KIND_NETWORK or PSK_KIND_TOO_LARGE */
  char msg[128];     /* when FAIL: what was wrong, never a header's value;
                        "periskope: POST <url>: " goes before it, and for
                        PSK_KIND_NETWORK "network error: " too, as
                        psk_http.c's finish() writes libcurl's text */
  uint64_t received; /* bytes taken in all; 0 when the peer sent nothing */
  uint64_t extra;    /* bytes fed after the end of the response */
  /* private */
  int state;
  int version;         /* 10 or 11 */
  int flags;           /* H1_* in psk_h1.c */
  size_t max_body;
  size_t head_total;   /* bytes of every head of this answer, 1xx included */
  size_t line_start;   /* where the line being read starts in head */
  size_t line_len;     /* its bytes so far */
  uint64_t length;     /* Content-Length */
  uint64_t left;       /* body or chunk bytes still to come */
  int digits;          /* significant hex digits of the chunk size */
  int trailers;        /* trailer lines kept */
} psk_h1;

/* A reader for one response whose body may hold max_body bytes. Allocates
   nothing until bytes come. */
void psk_h1_init(psk_h1 *r, size_t max_body);
/* Ready for the next response on a kept-alive connection: everything
   forgotten, the memory kept. */
void psk_h1_reset(psk_h1 *r);
/* Releases the memory; safe to call twice, and after init alone. */
void psk_h1_free(psk_h1 *r);

/* Takes the n bytes at p, the next the peer sent (n may be 0). Returns
   PSK_H1_MORE (all n taken: *used == n), PSK_H1_DONE (the response ended
   after *used bytes; any more are extra: counted in r->extra and the
   connection is not reused) or PSK_H1_FAIL (r->kind, r->msg; *used: how
   far it read). DONE and FAIL are final: a later feed takes nothing
   (*used = 0) and says the same again, counting bytes fed after a DONE as
   extra. used may be NULL.

   Rules (RFC 9112; where libcurl 7.88 is laxer, psk_h1.c's opening
   comment lists what this reader refuses that libcurl takes):
   - status line "HTTP/1.0" or "HTTP/1.1", SP, three digits 100-999, then
     SP and a reason or the line end; lines end in CRLF or LF;
   - 1xx interim heads are skipped (a 101, never asked for, is final with
     a body up to the close, as libcurl has it); 204 and 304 have no body;
   - every head line is a field with a ':' or an obs-fold continuation of
     the field before it; a NUL anywhere in a head is refused;
   - Transfer-Encoding "chunked" (the only coding accepted) wins over
     Content-Length; chunk extensions are skipped, trailers kept in head
     after its blank line, one CRLF-ended line each, as libcurl gives
     them; Content-Length values repeated must agree; with neither, the
     body runs to the close (psk_h1_eof);
   - too large (PSK_KIND_TOO_LARGE): a line of PSK_H1_LINE_MAX bytes or
     more; the heads of one answer (1xx and trailers included) over
     PSK_HEADERS_MAX; a Content-Length or a chunk size beyond what
     max_body leaves, said before its bytes are read; a body to the close
     past max_body;
   - anything else malformed is PSK_KIND_NETWORK, as is memory running
     out (msg "out of memory"). */
int psk_h1_feed(psk_h1 *r, const char *p, size_t n, size_t *used);

/* The peer closed the connection. PSK_H1_DONE when that ends the response
   (a body delimited by the close, or one that was DONE already), else
   PSK_H1_FAIL with kind PSK_KIND_NETWORK: "empty reply from server" when
   nothing came (r->received == 0: a kept-alive connection the server had
   closed, which may be retried at once), "connection closed before the
   end of the response head", or the body cut short. Final, as feed's. */
int psk_h1_eof(psk_h1 *r);

/* How many bytes the reader wants next, while it says MORE: exactly the
   rest of the Content-Length body or of the current chunk when that is
   what comes next, else 0 ("any": a line, a chunk size, or a body
   delimited by the close). Never more than the response has left. */
size_t psk_h1_want(const psk_h1 *r);

/* Whether the connection may carry the next request once DONE: not after
   a FAIL, an HTTP/1.0 answer without "Connection: keep-alive", a
   "Connection: close" (or a folded Connection field), a body delimited by
   the close, a 101, a response framed by both Transfer-Encoding and
   Content-Length or chunked in HTTP/1.0 (RFC 9112 6.1, 6.3), or extra
   bytes after the response. */
int psk_h1_keepalive(const psk_h1 *r);

#endif
