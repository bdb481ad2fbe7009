/*
 * psk_http: the libcurl transport. Sends psk_requests and collects each
 * answer (status, head, body) or why none came (a PSK_KIND_* and a message).
 *
 * No lua.h here: callbacks touch C memory only, so no Lua error can be
 * raised while libcurl is on the C stack. curl.h stays inside the
 * transport (psk_http.c, psk_one.[ch]), so the binding sees only these
 * opaque handles.
 *
 * One psk_http per client, used by one thread at a time (so the share
 * handle needs no lock callbacks). It owns a share handle that pools
 * connections, DNS and TLS sessions for all its transfers, and a pool of
 * transfers (easy handles) that callers take and give back, so one
 * handshake serves many pins, sequential or concurrent. A sequential
 * exchange runs on a multi handle of its own through libcurl's socket
 * interface (psk_one.h). Concurrent transfers run in a psk_batch: a
 * multi handle of their own, so a batch started while another runs (from
 * an on_event hook) never mixes with it. After fork() (psk_fork.h) a
 * child forgets the parent's handles and opens its own.
 */
#ifndef PSK_HTTP_H
#define PSK_HTTP_H

#include "psk_core.h"

/* An exchange driven by an outside event loop: libcurl's sockets in an
   epoll set whose one descriptor the loop watches (see psk_one.h). */
typedef struct psk_watch psk_watch;
/* A watch with no transfer; NULL when out of descriptors or memory (or
   not on Linux). */
psk_watch *psk_watch_new(void);
/* Takes its transfer out (if any), cleans up its multi handle, closes
   the descriptors. NULL is fine. */
void psk_watch_free(psk_watch *w);
/* The descriptor the loop watches for reading: the same for the watch's
   life. */
int psk_watch_fd(const psk_watch *w);
/* Seconds until libcurl wants to act on its own (a timeout, a retry of
   a connect), or -1 for no such time. */
double psk_watch_wait(const psk_watch *w);

#define PSK_MAX_CONCURRENCY 64 /* transfers one batch may run at once */
/* Idle connections the client's shared cache keeps, whichever multi
   handle gives one back (CURLMOPT_MAXCONNECTS on each). libcurl's default
   is 4 per easy handle of that multi: a job's own multi has one, so past 4
   jobs in flight each connection given back closed the oldest, and almost
   every pin connected again. */
#define PSK_KEEP_CONNECTIONS PSK_MAX_CONCURRENCY

typedef struct psk_http psk_http;
typedef struct psk_transfer psk_transfer;
typedef struct psk_batch psk_batch;

/* What one exchange produced: a plain struct, so that whoever performs an
   exchange (this transport, or another thread) can fill one. */
typedef struct psk_reply {
  long status;       /* HTTP status; 0 when no answer came */
  int kind;          /* PSK_KIND_* when status is 0 */
  char message[512]; /* when status is 0: "periskope: ..." */
  psk_buf head;      /* the final response's status line and header lines,
                        obs-fold joined (psk_head_unfold) */
  psk_buf body;
  double elapsed;    /* seconds */
} psk_reply;

/* A transport for the options in c (timeouts, ca_file, max_body,
   base_url), which it borrows: c must outlive it. NULL when memory or
   libcurl fails (errmsg says which). Opens no connection. A loopback
   base_url never goes through a proxy, whatever the environment says. */
psk_http *psk_http_new(const psk_config *c, char *errmsg, size_t errlen);
/* Cleans up every transfer and the share; NULL is fine. Every batch must
   have been freed and every transfer given back. */
void psk_http_free(psk_http *h);

/* A transfer of the pool that no one holds (created when all are held),
   now held by the caller until psk_http_give; NULL when out of memory. */
psk_transfer *psk_http_take(psk_http *h);
/* Gives t back to the pool (stopping it first if a batch runs it). */
void psk_http_give(psk_http *h, psk_transfer *t);
psk_reply *psk_transfer_reply(psk_transfer *t);
/* The caller's tag for a transfer (pin_many: the slot). */
void psk_transfer_set_tag(psk_transfer *t, int tag);
int psk_transfer_tag(const psk_transfer *t);

/* Sends r on t and waits for the answer (blocking); r is only read during
   the call. A reused connection that turns out to be closed by the server
   is replaced and the request sent again, once, inside this call. After
   fork() the child's first call opens its own connections. Returns t's
   reply. */
psk_reply *psk_http_perform(psk_http *h, psk_transfer *t,
                            const psk_request *r);

/* An exchange an outside event loop drives (psk_watch, psk_one.h): r
   is started on t through w, which the caller owns and keeps for as long
   as a loop may watch its descriptor. 0, or -1 with t's reply holding
   the failure (nothing runs then). */
int psk_http_watch_start(psk_http *h, psk_transfer *t, psk_watch *w,
                         const psk_request *r);
/* Acts on what is ready: t's reply once the exchange ended (the same
   stale-connection rule as perform: a resend starts inside), else NULL:
   watch again. */
psk_reply *psk_http_watch_step(psk_http *h, psk_transfer *t);

/* A set of concurrent transfers over h's share; NULL when out of memory. */
psk_batch *psk_batch_new(psk_http *h);
/* Stops its running transfers (they get no reply) and frees it; NULL is
   fine. Never fails. */
void psk_batch_free(psk_batch *b);
/* Starts r on t in batch b; r and its buffers must stay unchanged until t
   finishes or is given back. 0, or -1 with t's reply holding the failure
   (it is then not running). */
int psk_batch_start(psk_batch *b, psk_transfer *t, const psk_request *r);
/* Drives b's transfers for at most timeout seconds, returning as soon as
   one finishes (its reply filled; it is no longer running), or NULL when
   none finished in time. Same stale-connection rule as perform. */
psk_transfer *psk_batch_wait(psk_batch *b, double timeout);
/* How many of b's transfers are running. */
int psk_batch_running(const psk_batch *b);

/* A base URL (base_url, or the origin of perform's URL) as libcurl reads
   it, into out (cleared first): psk_normalize_base_url's form, then
   libcurl's reading (CURLU): its host replaces the host as written (so
   every reader of the URL after this -- libcurl, the HTTP/1.1 framer of
   the host's sockets, the Host header, messages -- finds the same one:
   "http://127.1" is "http://127.0.0.1"), and plain http only when that
   host is loopback (psk_host_loopback): the key never crosses a network
   in clear. PSK_OK, PSK_NOMEM, or PSK_INVALID with e saying what is
   accepted (never quoting the URL). */
int psk_http_base_url(const char *s, size_t n, psk_buf *out, psk_err *e);

/* libcurl's version string, e.g. "7.88.1". */
const char *psk_http_curl_version(void);

#endif
