/*
 * psk_core: everything about a Periskope pin that is neither I/O nor Lua.
 *
 * Validation of keys, phones, message ids, user agents and base URLs;
 * percent-encoding; the request (URL, headers, JSON body); header-block,
 * rate-limit, Date and Retry-After parsing; the retry plan and backoff.
 * Plain C99 plus <stdint.h>: no lua.h, no curl.h, so it can be fuzzed and
 * tested on its own (make check-core). Functions return PSK_OK or a status
 * and fill a psk_err naming what is accepted; nothing aborts or raises, and
 * no message ever quotes the value it rejects (it might be the API key).
 */
#ifndef PSK_CORE_H
#define PSK_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "psk_buf.h"

#define PSK_VERSION "0.1.0"

#define PSK_DEFAULT_BASE_URL "https://api.periskope.app/v1"
#define PSK_MESSAGE_ID_MAX 1024
#define PSK_API_KEY_MAX 4096
#define PSK_USER_AGENT_MAX 1024
#define PSK_BASE_URL_MAX 2048
#define PSK_PHONE_MAX 64 /* normalized x-phone value, without the NUL */
#define PSK_HEADERS_MAX (256 * 1024) /* response head bytes kept */
#define PSK_MAX_SAFE_INT 9007199254740991LL /* 2^53 - 1: exact in a double */
/* Seconds after an answer's Date beyond which its X-RateLimit-Reset is
   not believed (Periskope sets it about 2 s after Date; a reset in
   milliseconds lands some 1.7e12 s out): such a reset counts as absent,
   for retries and for pacing alike. */
#define PSK_RESET_HORIZON 3600

/* What a failed check says: "must be ..." (what is accepted). */
typedef struct psk_err {
  char msg[192];
} psk_err;

/* Why a call got no answer. Index into psk_kind_names. The kinds up to
   PSK_KIND_TOO_LARGE are what an exchange can end in; the others are
   decided without one: nothing was sent on purpose (the rate limit is
   spent past max_retry_wait, the circuit is open), or an asynchronous
   driver ended the call (its client closed, the caller cancelled). */
enum {
  PSK_KIND_NONE = 0,
  PSK_KIND_TIMEOUT,
  PSK_KIND_CONNECT,
  PSK_KIND_RESOLVE,
  PSK_KIND_TLS,
  PSK_KIND_NETWORK,
  PSK_KIND_TOO_LARGE,
  PSK_KIND_RATE_LIMITED,
  PSK_KIND_UNAVAILABLE,
  PSK_KIND_CLOSED,
  PSK_KIND_CANCELLED
};
#define PSK_KIND_EXCHANGE_LAST PSK_KIND_TOO_LARGE
extern const char *const psk_kind_names[]; /* "timeout", "connect", ... */

/* Why a retry waits. Index into psk_wait_reasons. */
enum { PSK_WAIT_RETRY_AFTER = 0, PSK_WAIT_RATE_LIMIT, PSK_WAIT_BACKOFF };
extern const char *const psk_wait_reasons[]; /* "retry-after", ... */

/* ---- validation ---- */

/* Whether s holds a control byte (below 0x20, or 0x7f): the one test of
   them, for every value that goes into a request or a store's command. */
int psk_has_ctl(const char *s, size_t n);
/* 1..PSK_API_KEY_MAX bytes, no control bytes. */
int psk_check_api_key(const char *s, size_t n, psk_err *e);
/* 1..PSK_USER_AGENT_MAX bytes, no control bytes. */
int psk_check_user_agent(const char *s, size_t n, psk_err *e);
/* 1..PSK_MESSAGE_ID_MAX bytes, no control bytes, not "." or "..". */
int psk_check_message_id(const char *s, size_t n, psk_err *e);
/* Removes spaces, '+', '-', '(', ')' and '.', then accepts 7..15 digits;
   or accepts "phone-" followed by letters and digits as it is. Writes the
   normalized value, NUL-terminated, into out[PSK_PHONE_MAX + 1]. */
int psk_normalize_phone(const char *s, size_t n, char *out, psk_err *e);
/* The form of a base URL: http or https, a host, optional port and path,
   no userinfo, query or fragment. Writes it without trailing '/' into out
   (cleared first). It does not judge plain http: which host a URL names
   is what libcurl reads in it, so the transport decides that
   (psk_http_base_url, with psk_host_loopback below). */
int psk_normalize_base_url(const char *s, size_t n, psk_buf *out, psk_err *e);
/* Whether a host, as libcurl reads it in a URL (CURLUPART_HOST: an IPv4
   address as four decimal numbers, an IPv6 one in brackets), is loopback:
   127.0.0.0/8, localhost in any case, or [::1]. Plain http goes only
   there (the key never crosses a network in clear), and such a host never
   goes through a proxy. A name that only looks like an address
   ("127.0.0.09": libcurl reads no number in it) is a name: not loopback. */
int psk_host_loopback(const char *host, size_t n);
/* Where the path of an absolute URL ("scheme://authority/path") starts:
   the offset of the first '/' after "://", or the URL's length when it
   has no path. */
size_t psk_url_path_offset(const char *url);
/* 1, 7 or 30. */
int psk_check_time(long long days, psk_err *e);

/* ---- the request ---- */

/* Appends s with every byte outside A-Z a-z 0-9 - . _ ~ as %XX. */
int psk_percent_encode(psk_buf *out, const char *s, size_t n);

/* The fixed part of every request of one client, owned by the client. */
typedef struct psk_config {
  char *auth;       /* "Bearer <api_key>" */
  char *phone;      /* normalized x-phone, or NULL */
  char *base_url;   /* normalized, no trailing '/' */
  char *user_agent;
  char *ca_file;    /* or NULL for the system store */
  double timeout, connect_timeout, max_retry_wait; /* seconds */
  int retries;
  size_t max_body;
} psk_config;

/* Frees the strings; safe on a zeroed or already freed config. */
void psk_config_free(psk_config *c);

/* One header of a request: name and value, both NUL-terminated. */
typedef struct psk_hdr {
  const char *name;
  const char *value;
} psk_hdr;
#define PSK_REQ_HEADERS 5

/* A request ready to send. The header values point into the config and
   into phone[], so the request must not outlive either. */
typedef struct psk_request {
  psk_buf url;
  size_t target; /* where url's path starts: the request target sent */
  psk_buf body;
  char phone[PSK_PHONE_MAX + 1]; /* x-phone for this call, "" for none */
  psk_hdr headers[PSK_REQ_HEADERS];
  int nheaders;
} psk_request;

void psk_request_init(psk_request *r);
void psk_request_free(psk_request *r);
/* Builds POST <base_url>/message/<id>/pin for an already validated id.
   phone: the normalized per-call phone, or NULL for the client's. time: 0
   for none (and ignored when pin is 0). */
int psk_request_build(psk_request *r, const psk_config *c, const char *id,
                      size_t idlen, int pin, int time, const char *phone);

/* ---- the response ---- */

/* One header line of a response head. */
typedef struct psk_header {
  const char *name;
  size_t name_len;
  const char *value; /* optional whitespace trimmed */
  size_t value_len;
} psk_header;

/* Walks a response head (status line, "Name: value" lines, CRLF or LF).
   Start with *pos = 0; returns 1 and fills h for each header field, 0 at
   the end. Skips the status line, lines without ':', names that are not
   HTTP tokens, and obs-fold continuation lines (psk_head_unfold joins
   them to their field first). */
int psk_header_next(const char *head, size_t len, size_t *pos, psk_header *h);
/* The field of one line (n bytes, no LF) whose name, name_len bytes, is a
   token followed by ':': 1 with h filled (the value trimmed), or 0 when
   the line is no field (a CR or NUL in it). psk_header_next ends in it. */
int psk_header_field(const char *line, size_t n, size_t name_len,
                     psk_header *h);
/* Joins obs-fold continuation lines (RFC 9112 5.2: a line starting with SP
   or HTAB) to the field line before them, in place: the fold, with the
   whitespace around it, becomes one space, so "A: 10" + " 20" is "A: 10
   20". A fold right after the status line or after a blank line is left
   as it is. Returns the new length (never more than len). */
size_t psk_head_unfold(char *head, size_t len);

/* A decimal integer 0..PSK_MAX_SAFE_INT with optional surrounding
   whitespace, as in X-RateLimit-*; PSK_INVALID otherwise. */
int psk_parse_uint(const char *s, size_t n, long long *out);
/* An HTTP date (IMF-fixdate, RFC 850 or asctime) as epoch seconds. */
int psk_parse_http_date(const char *s, size_t n, long long *out);
/* Retry-After as seconds to wait from server_now (epoch seconds): delay
   seconds, or an HTTP date (a date in the past gives 0). A number too
   large to be a wait (digits past 2^53 - 1, or an exponent form such as
   1e308 of at least 1e16) is PSK_TOO_LARGE, with *wait = HUGE_VAL: longer
   than any wait a caller allows. */
int psk_parse_retry_after(const char *s, size_t n, double server_now,
                          double *wait);

/* ---- retries ---- */

/* 429, 500, 502, 503, 504. */
int psk_status_retryable(long status);
/* timeout, connect, network. */
int psk_kind_retryable(int kind);
/* timeout, connect, network, resolve: the server gave no sign of life
   (what the circuit breaker counts). */
int psk_kind_unanswered(int kind);

/* The response headers a retry decision reads; NULL when absent. */
typedef struct psk_outcome {
  long status; /* 0: no answer, see kind */
  int kind;
  const char *retry_after;
  size_t retry_after_len;
  const char *reset;
  size_t reset_len;
  const char *date;
  size_t date_len;
} psk_outcome;

/* Whether the outcome is retryable and, if so, the wait before the retry
   (seconds, >= 0; HUGE_VAL for a Retry-After too large to represent) and
   its reason (PSK_WAIT_*). An X-RateLimit-Reset more than
   PSK_RESET_HORIZON after the answer's Date counts as absent. attempt counts the requests
   made so far (1 after the first); jitter is uniform in [0, 1); local_now
   is the local epoch time, used when the response has no usable Date.
   Budgets (retries, max_retry_wait) are the caller's. */
int psk_retry_plan(const psk_outcome *o, int attempt, double local_now,
                   double jitter, double *wait, int *reason);

/* Exponential backoff: 0.5 s doubled per attempt, capped at 30 s, with up
   to a quarter more of jitter (jitter in [0, 1)). */
double psk_backoff(int attempt, double jitter);

/* xorshift64*: jitter source; state must be non-zero. */
double psk_random(uint64_t *state);

#endif
