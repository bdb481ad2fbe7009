/*
 * psk_http: the libcurl transport. Sends psk_requests and collects each
 * answer (status, head, body) or why none came (a PSK_KIND_* and a message).
 *
 * No lua.h here: callbacks touch C memory only, so no Lua error can be
 * raised while libcurl is on the C stack. curl.h stays inside psk_http.c,
 * so the binding sees only these opaque handles.
 *
 * One psk_http per client, used by one thread at a time (so the share
 * handle needs no lock callbacks). It owns a share handle that pools
 * connections, DNS and TLS sessions for all its transfers, a multi handle
 * for concurrent transfers, and a pool of transfers (easy handles), so one
 * handshake serves many pins, sequential or concurrent.
 */
#ifndef PSK_HTTP_H
#define PSK_HTTP_H

#include "psk_core.h"

#define PSK_MAX_CONCURRENCY 64 /* transfers pin_many may run at once */
#define PSK_PIN_TRANSFER PSK_MAX_CONCURRENCY /* pin's own, after those */
#define PSK_MAX_TRANSFERS (PSK_MAX_CONCURRENCY + 1)

typedef struct psk_http psk_http;
typedef struct psk_transfer psk_transfer;

/* What one exchange produced. Owned by its transfer; valid until the
   transfer is started again or the psk_http is freed. */
typedef struct psk_reply {
  long status;       /* HTTP status; 0 when no answer came */
  int kind;          /* PSK_KIND_* when status is 0 */
  char message[512]; /* when status is 0: "periskope: ..." */
  psk_buf head;      /* the final response's status line and header lines */
  psk_buf body;
  double elapsed;    /* seconds */
} psk_reply;

/* A transport for the options in c (timeouts, ca_file, max_body), which
   it borrows: c must outlive it. NULL when memory or libcurl fails
   (errmsg says which). Opens no connection. */
psk_http *psk_http_new(const psk_config *c, char *errmsg, size_t errlen);
/* Stops every transfer and cleans up everything; NULL is fine. */
void psk_http_free(psk_http *h);

/* Transfer i of the pool (0 <= i < PSK_MAX_TRANSFERS), created on first
   use; NULL when out of memory. Its request is the caller's to fill. */
psk_transfer *psk_http_transfer(psk_http *h, int i);
psk_request *psk_transfer_request(psk_transfer *t);
psk_reply *psk_transfer_reply(psk_transfer *t);
/* The caller's tag for a transfer (pin_many: the item index). */
void psk_transfer_set_tag(psk_transfer *t, int tag);
int psk_transfer_tag(const psk_transfer *t);

/* Sends t's request and waits for the answer (blocking). A reused
   connection that turns out to be closed by the server is replaced and the
   request sent again, once, inside this call. After fork() the child's
   first call opens its own connections. Returns t's reply. */
psk_reply *psk_http_perform(psk_http *h, psk_transfer *t);

/* Starts t's request on the multi handle. 0, or -1 with t's reply holding
   the failure (it is then not running). */
int psk_http_start(psk_http *h, psk_transfer *t);
/* Drives the running transfers for at most timeout seconds, returning as
   soon as one finishes (its reply filled; it is no longer running), or
   NULL when none finished in time. Same stale-connection rule as perform. */
psk_transfer *psk_http_wait(psk_http *h, double timeout);
/* How many transfers are running. */
int psk_http_running(const psk_http *h);
/* Stops every running transfer (they get no reply). Never fails. */
void psk_http_stop_all(psk_http *h);

/* libcurl's version string, e.g. "7.88.1". */
const char *psk_http_curl_version(void);
/* Local wall-clock time, epoch seconds. */
double psk_http_now(void);
/* Sleeps, resuming after signals, for s seconds (s <= 0: not at all). */
void psk_http_sleep(double s);

#endif
