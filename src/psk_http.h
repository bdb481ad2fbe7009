/*
 * psk_http: the libcurl transport. Sends a psk_request and collects the
 * answer (status, head, body) or why none came (a PSK_KIND_* and a message).
 *
 * No lua.h here: callbacks touch C memory only, so no Lua error can be
 * raised while libcurl is on the C stack. curl.h stays inside psk_http.c,
 * so the binding sees only these opaque handles.
 *
 * One psk_http per client, used by one thread at a time (so the share
 * handle needs no lock callbacks). It owns a share handle that pools
 * connections, DNS and TLS sessions, and the easy handle that pin reuses,
 * so one handshake serves many pins.
 */
#ifndef PSK_HTTP_H
#define PSK_HTTP_H

#include "psk_core.h"

typedef struct psk_http psk_http;

/* What one exchange produced. Owned by the psk_http; valid until its next
   perform or its release. */
typedef struct psk_reply {
  long status;    /* HTTP status; 0 when no answer came */
  int kind;       /* PSK_KIND_* when status is 0 */
  char message[512]; /* when status is 0: "periskope: ..." */
  psk_buf head;   /* the final response's status line and header lines */
  psk_buf body;
  double elapsed; /* seconds */
} psk_reply;

/* A transport for the options in c (timeouts, ca_file, max_body); NULL
   when memory or libcurl fails (errmsg says which). */
psk_http *psk_http_new(const psk_config *c, char *errmsg, size_t errlen);
/* Cleans up everything; NULL is fine. */
void psk_http_free(psk_http *h);

/* Sends r and waits for the answer. A reused connection that turns out to
   be closed by the server is replaced and the request sent again, once,
   inside this call. After fork() the child's first call opens its own
   connections. Returns the reply (never NULL). */
psk_reply *psk_http_perform(psk_http *h, const psk_request *r);

/* libcurl's version string, e.g. "7.88.1". */
const char *psk_http_curl_version(void);
/* Local wall-clock time, epoch seconds. */
double psk_http_now(void);
/* Sleeps, resuming after signals, for s seconds (s <= 0: not at all). */
void psk_http_sleep(double s);

#endif
