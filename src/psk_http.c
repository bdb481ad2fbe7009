/*
 * psk_http: libcurl share + multi + easy transport (see psk_http.h).
 * Must not include lua.h: everything here may run inside libcurl.
 */
#define _POSIX_C_SOURCE 200809L
#include "psk_http.h"
#include "psk_fork.h"
#include "psk_h1.h"
#include "psk_one.h"
#include "psk_time.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct psk_transfer {
  psk_http *h;
  CURL *easy;
  struct curl_slist *headers; /* must outlive the transfer */
  int headers_set;            /* headers is built (NULL for none) */
  CURLU *url;                 /* the base URL, parsed once per easy handle */
  char headers_phone[PSK_PHONE_MAX + 1]; /* the x-phone it was built for */
  const psk_request *req;     /* borrowed while it is sent */
  psk_reply reply;
  psk_batch *batch;  /* the batch running it, or NULL */
  psk_watch *watch;  /* the outside loop's watch running it, or NULL */
  int tag;
  int held;          /* taken from the pool and not given back */
  int resent;        /* already sent again after a stale connection */
  int failure;       /* PSK_KIND_* when a callback stopped the transfer */
  int nomem;         /* ... because memory ran out */
  int head_done;     /* the final head ended with its blank line */
  int got_body;      /* body bytes came: a line now is a trailer */
  int folded;        /* the final head has a continuation line */
  size_t head_total; /* bytes of every head, interim (1xx) ones included */
  char errbuf[CURL_ERROR_SIZE];
};

struct psk_batch {
  psk_http *h;
  CURLM *multi;
  psk_owner owner;   /* the process that made the multi handle */
  int running;
};

struct psk_http {
  CURLSH *share;
  psk_one one;       /* where perform runs its transfers */
  psk_owner owner;   /* the process that opened the handles */
  const psk_config *cfg;
  int no_proxy;      /* say "no proxy" to libcurl (see setup_easy) */
  psk_transfer **pool;
  int npool, cap;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

/* curl_global_init is process-wide and not safe to race: once, here. A
   host that called curl_global_init (or _mem) first keeps its settings:
   libcurl only counts this call. */
static void global_init(void) {
  global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}


/* Runs inside libcurl: C memory only. Stops the transfer with `kind`. */
static size_t stop(psk_transfer *t, int st) {
  t->failure = st == PSK_NOMEM ? PSK_KIND_NETWORK : PSK_KIND_TOO_LARGE;
  t->nomem = st == PSK_NOMEM;
  return 0; /* CURLE_WRITE_ERROR */
}

/* Runs inside libcurl: C memory only. A new status line starts a new
   response (after a 1xx interim one), so only the final head is kept; the
   bytes of every head count against PSK_HEADERS_MAX, so a storm of
   interim answers is too large, as one huge head is. */
static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  psk_transfer *t = ud;
  size_t len = size * n;
  int st;
  t->head_total += len;
  if (t->head_total > PSK_HEADERS_MAX) return stop(t, PSK_TOO_LARGE);
  /* A status line starts a head only where one may come: first, or after
     an interim head's blank line, before any body. A trailer field named
     "HTTP/..." is a field. */
  if (len >= 9 && memcmp(p, "HTTP/", 5) == 0 && p[5] >= '0' && p[5] <= '9' &&
      (t->reply.head.len == 0 || (t->head_done && !t->got_body))) {
    psk_buf_clear(&t->reply.head);
    t->head_done = 0;
    t->folded = 0;
  } else if ((len == 2 && p[0] == '\r' && p[1] == '\n') ||
             (len == 1 && p[0] == '\n')) {
    t->head_done = 1;
  } else if (len && (p[0] == ' ' || p[0] == '\t')) {
    t->folded = 1; /* obs-fold: finish joins it (one pass, only then) */
  }
  if ((st = psk_buf_append(&t->reply.head, p, len)) != PSK_OK)
    return stop(t, st);
  return len;
}

/* Runs inside libcurl: C memory only. */
static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  psk_transfer *t = ud;
  size_t len = size * n;
  t->got_body = 1;
  int st = psk_buf_append(&t->reply.body, p, len);
  if (st != PSK_OK) return stop(t, st);
  return len;
}

/* The one CURLcode -> kind table. */
static int kind_of(CURLcode rc) {
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return PSK_KIND_TIMEOUT;
  case CURLE_COULDNT_CONNECT:
    return PSK_KIND_CONNECT;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return PSK_KIND_RESOLVE;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
  case CURLE_USE_SSL_FAILED:
    return PSK_KIND_TLS;
  case CURLE_FILESIZE_EXCEEDED:
    return PSK_KIND_TOO_LARGE;
  default:
    return PSK_KIND_NETWORK;
  }
}

/* What a failure message says before libcurl's sentence: nothing where
   that sentence names the cause itself ("Could not resolve host: x",
   "Operation timed out after ...", "Failed to connect to ..."), a heading
   where it is a detail ("wrong version number", "Recv failure: ..."). */
static const char *kind_lead(int kind) {
  switch (kind) {
  case PSK_KIND_TLS: return "TLS failed: ";
  case PSK_KIND_NETWORK: return "network error: ";
  default: return "";
  }
}

static long ms(double s) { return (long)(s * 1000 + 0.5); }

/* Sets the options that stay for the life of the easy handle: CURLE_OK,
   or the first failure (CURLE_OUT_OF_MEMORY when a copy failed). A
   transfer whose options are not all set is never sent. */
static CURLcode setup_easy(psk_http *h, psk_transfer *t) {
  CURL *e = t->easy;
  const psk_config *c = h->cfg;
  CURLcode rc = CURLE_OK;
#define SET(opt, val)                              \
  do {                                             \
    CURLcode r_ = curl_easy_setopt(e, opt, val);   \
    if (rc == CURLE_OK) rc = r_;                   \
  } while (0)
  SET(CURLOPT_NOSIGNAL, 1L); /* the host owns signals */
  SET(CURLOPT_SHARE, h->share);
#if LIBCURL_VERSION_NUM >= 0x075500
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SET(CURLOPT_FOLLOWLOCATION, 0L);
  SET(CURLOPT_SSL_VERIFYPEER, 1L);
  SET(CURLOPT_SSL_VERIFYHOST, 2L);
  if (c->ca_file) SET(CURLOPT_CAINFO, c->ca_file);
  SET(CURLOPT_TIMEOUT_MS, ms(c->timeout));
  SET(CURLOPT_CONNECTTIMEOUT_MS, ms(c->connect_timeout));
  SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_body);
  SET(CURLOPT_POST, 1L);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, t);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, t);
  SET(CURLOPT_PRIVATE, t);
  SET(CURLOPT_ERRORBUFFER, t->errbuf);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  /* No proxy for a loopback base_url (http:// is allowed only there, so
     the key would cross the network in clear to the proxy); and with no
     proxy variable set when the client was made, say so once instead of
     letting libcurl read the environment on every transfer. "" overrides
     the variables. */
  if (h->no_proxy) {
    SET(CURLOPT_PROXY, "");
    SET(CURLOPT_NOPROXY, ""); /* nor no_proxy / NO_PROXY, per transfer */
  }
  /* The base URL as a handle of our own, given once: given a URL string,
     libcurl would parse it into a new handle and print it back on every
     transfer. Each request then names only its target (prepare). */
  if (rc == CURLE_OK && !t->url) {
    /* Kept only once it holds the URL: a set that failed (out of memory)
       is tried again with the next easy handle. */
    CURLU *u = curl_url();
    CURLUcode uc = u ? curl_url_set(u, CURLUPART_URL, c->base_url, 0)
                     : CURLUE_OUT_OF_MEMORY;
    if (uc == CURLUE_OK) {
      t->url = u;
    } else {
      curl_url_cleanup(u);
      rc = uc == CURLUE_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_URL_MALFORMAT;
    }
  }
  SET(CURLOPT_CURLU, t->url);
#undef SET
  return rc;
}

static void transfer_free(psk_transfer *t) {
  if (!t) return;
  /* A loop may be watching it: woken, it steps and learns why. */
  psk_watch_drop(t->watch, 1);
  t->watch = NULL;
  if (t->easy) curl_easy_cleanup(t->easy);
  curl_slist_free_all(t->headers);
  if (t->url) curl_url_cleanup(t->url);
  psk_buf_free(&t->reply.head);
  psk_buf_free(&t->reply.body);
  free(t);
}

/* The share handle: PSK_OK, PSK_NOMEM, or -1 when libcurl refused. */
static int open_share(psk_http *h) {
  static const curl_lock_data shared[] = {
      CURL_LOCK_DATA_DNS, CURL_LOCK_DATA_SSL_SESSION, CURL_LOCK_DATA_CONNECT};
  size_t i;
  psk_owner_set(&h->owner);
  h->share = curl_share_init();
  if (!h->share) return PSK_NOMEM;
  for (i = 0; i < sizeof shared / sizeof shared[0]; i++) {
    CURLSHcode sc = curl_share_setopt(h->share, CURLSHOPT_SHARE, shared[i]);
    if (sc != CURLSHE_OK) return sc == CURLSHE_NOMEM ? PSK_NOMEM : -1;
  }
  return PSK_OK;
}

/* Whether any variable libcurl takes a proxy from is set. */
static int proxy_env_set(void) {
  static const char *const names[] = {"http_proxy", "https_proxy",
                                      "HTTPS_PROXY", "all_proxy",
                                      "ALL_PROXY"};
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++) {
    const char *v = getenv(names[i]);
    if (v && *v) return 1;
  }
  return 0;
}

/* ---------------------------------------------------------------- */
/* base URLs, as libcurl reads them                                  */

/* The scheme and host libcurl reads in url, NUL-terminated; each to be
   given back with curl_free. */
static CURLUcode url_host(const char *url, char **scheme, char **host) {
  CURLU *u = curl_url();
  CURLUcode uc = u ? curl_url_set(u, CURLUPART_URL, url, 0)
                   : CURLUE_OUT_OF_MEMORY;
  *scheme = *host = NULL;
  if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_SCHEME, scheme, 0);
  if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_HOST, host, 0);
  if (uc != CURLUE_OK) {
    curl_free(*scheme);
    curl_free(*host);
    *scheme = *host = NULL;
  }
  curl_url_cleanup(u);
  return uc;
}

static int url_fail(psk_err *e, const char *msg) {
  if (e) snprintf(e->msg, sizeof e->msg, "%s", msg);
  return PSK_INVALID;
}

/* out's host (as written, where psk_h1_origin finds it) replaced with
   host. */
static int set_host(psk_buf *out, const char *host) {
  psk_origin o;
  psk_buf was;
  int st;
  size_t n = strlen(host);
  if (psk_h1_origin(psk_buf_cstr(out), &o) != PSK_OK) return PSK_INVALID;
  if (o.host_len == n && memcmp(psk_buf_cstr(out) + o.host_off, host, n) == 0)
    return PSK_OK;
  was = *out;
  psk_buf_init(out, was.cap);
  if ((st = psk_buf_append(out, was.data, o.host_off)) == PSK_OK &&
      (st = psk_buf_addstr(out, host)) == PSK_OK)
    st = psk_buf_addstr(out, was.data + o.host_off + o.host_len);
  psk_buf_free(&was);
  return st;
}

int psk_http_base_url(const char *s, size_t n, psk_buf *out, psk_err *e) {
  char *scheme, *host;
  CURLUcode uc;
  int st = psk_normalize_base_url(s, n, out, e);
  if (st != PSK_OK) return st;
  uc = url_host(psk_buf_cstr(out), &scheme, &host);
  if (uc == CURLUE_OUT_OF_MEMORY)
    st = PSK_NOMEM;
  else if (uc != CURLUE_OK || (st = set_host(out, host)) == PSK_INVALID)
    st = url_fail(e, "must be a URL libcurl can read: http or https, a host "
                     "and no user, query or fragment");
  else if (st == PSK_TOO_LARGE) /* libcurl's host is longer */
    st = url_fail(e, "must be at most 2048 bytes");
  else if (st == PSK_OK && strcmp(scheme, "http") == 0 &&
           !psk_host_loopback(host, strlen(host)))
    st = url_fail(e, "must use https: plain http is allowed only to a "
                     "loopback host (127.0.0.0/8, ::1 or localhost)");
  curl_free(scheme);
  curl_free(host);
  if (st != PSK_OK) psk_buf_clear(out);
  return st;
}

/* Whether url names a loopback host, as libcurl reads it. */
static int url_loopback(const char *url) {
  char *scheme, *host;
  int loopback = url_host(url, &scheme, &host) == CURLUE_OK &&
                 psk_host_loopback(host, strlen(host));
  curl_free(scheme);
  curl_free(host);
  return loopback;
}

psk_http *psk_http_new(const psk_config *c, char *errmsg, size_t errlen) {
  psk_http *h;
  int st;
  pthread_once(&global_once, global_init);
  if (global_rc != CURLE_OK) {
    snprintf(errmsg, errlen, "periskope: curl_global_init failed: %s",
             curl_easy_strerror(global_rc));
    return NULL;
  }
  h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(errmsg, errlen, "periskope: out of memory");
    return NULL;
  }
  h->cfg = c;
  h->no_proxy = url_loopback(c->base_url) || !proxy_env_set();
  if ((st = open_share(h)) != PSK_OK) {
    snprintf(errmsg, errlen, "periskope: %s",
             st == PSK_NOMEM ? "out of memory" : "could not set up libcurl");
    psk_http_free(h);
    return NULL;
  }
  return h;
}

/* libcurl order: easies (a batch has taken its own out of its multi
   already), then the share (it refuses cleanup while an easy still uses
   it). */
void psk_http_free(psk_http *h) {
  int i;
  if (!h) return;
  if (psk_owner_other(&h->owner)) {
    /* A forked child closing a client it inherited: the handles are the
       parent's, so forget them (see forget_after_fork) and free only
       memory that is ours alone. */
    for (i = 0; i < h->npool; i++) {
      h->pool[i]->easy = NULL;
      psk_watch_forget(h->pool[i]->watch);
      h->pool[i]->watch = NULL;
    }
    h->share = NULL;
    psk_one_forget(&h->one);
  }
  psk_one_free(&h->one);
  for (i = 0; i < h->npool; i++) transfer_free(h->pool[i]);
  free(h->pool);
  if (h->share) curl_share_cleanup(h->share);
  free(h);
}

/* After fork() the child must not clean up the parent's handles: that
   could send TLS close-notify on connections the parent still uses. It
   forgets them (a deliberate, bounded leak in the child) and opens its
   own on next use. */
static int forget_after_fork(psk_http *h) {
  int i;
  if (!psk_owner_other(&h->owner)) return PSK_OK;
  for (i = 0; i < h->npool; i++) {
    psk_transfer *t = h->pool[i];
    t->easy = NULL;   /* the parent's: forgotten, not cleaned up */
    t->headers = NULL;
    t->headers_set = 0;
    psk_watch_forget(t->watch);
    t->watch = NULL;
    t->batch = NULL;
  }
  h->share = NULL;
  psk_one_forget(&h->one);
  return open_share(h);
}

psk_transfer *psk_http_take(psk_http *h) {
  psk_transfer *t;
  int i;
  for (i = 0; i < h->npool; i++)
    if (!h->pool[i]->held) {
      h->pool[i]->held = 1;
      return h->pool[i];
    }
  if (h->npool == h->cap) {
    int cap = h->cap ? h->cap * 2 : 4;
    psk_transfer **pool =
        realloc(h->pool, sizeof(psk_transfer *) * (size_t)cap);
    if (!pool) return NULL;
    h->pool = pool;
    h->cap = cap;
  }
  t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->h = h;
  psk_buf_init(&t->reply.head, PSK_HEADERS_MAX);
  psk_buf_init(&t->reply.body, h->cfg->max_body);
  t->held = 1;
  h->pool[h->npool++] = t;
  return t;
}

/* Takes t out of its batch's multi handle, if it runs there. */
static void batch_remove(psk_transfer *t) {
  psk_batch *b = t->batch;
  if (!b) return;
  if (!psk_owner_other(&b->owner) && t->easy)
    curl_multi_remove_handle(b->multi, t->easy);
  b->running--;
  t->batch = NULL;
}

void psk_http_give(psk_http *h, psk_transfer *t) {
  (void)h;
  if (!t) return;
  batch_remove(t);
  psk_watch_drop(t->watch, 0);
  t->watch = NULL;
  t->req = NULL;
  t->held = 0;
}

psk_reply *psk_transfer_reply(psk_transfer *t) { return &t->reply; }
void psk_transfer_set_tag(psk_transfer *t, int tag) { t->tag = tag; }
int psk_transfer_tag(const psk_transfer *t) { return t->tag; }

static void fail_reply(psk_transfer *t, int kind, const char *what) {
  t->reply.status = 0;
  t->reply.kind = kind;
  snprintf(t->reply.message, sizeof t->reply.message, "periskope: %s", what);
}

/* The request's header lines as libcurl's list: 0, or -1 when out of
   memory. No lines: an empty list (NULL). */
static int header_list(const psk_request *r, struct curl_slist **out) {
  struct curl_slist *list = NULL, *next;
  char line[PSK_API_KEY_MAX + PSK_USER_AGENT_MAX + 64];
  int i;
  for (i = 0; i < r->nheaders; i++) {
    snprintf(line, sizeof line, "%s: %s", r->headers[i].name,
             r->headers[i].value);
    if (!(next = curl_slist_append(list, line))) goto nomem;
    list = next;
  }
  /* No "Expect:" line: libcurl asks for 100-continue only for bodies over
     1 MiB, and a pin's body is at most 22 bytes. */
  *out = list;
  return 0;
nomem:
  curl_slist_free_all(list);
  *out = NULL;
  return -1;
}

/* Makes t ready to send r: handles (after fork too), header list,
   per-request options, empty reply. 0, or -1 with the reply set. */
static int prepare(psk_http *h, psk_transfer *t, const psk_request *r) {
  CURL *e;
  int fresh = 0, st;
  t->req = r;
  if ((st = forget_after_fork(h)) != PSK_OK) {
    fail_reply(t, PSK_KIND_NETWORK, st == PSK_NOMEM
                                        ? "out of memory"
                                        : "could not set up libcurl after fork");
    return -1;
  }
  if (!t->easy) {
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    t->easy = curl_easy_init();
    if (!t->easy || (rc = setup_easy(h, t)) != CURLE_OK) {
      /* Not set up in full (a proxy setting missing, say): never sent. */
      if (t->easy) curl_easy_cleanup(t->easy);
      t->easy = NULL;
      fail_reply(t, PSK_KIND_NETWORK, rc == CURLE_OUT_OF_MEMORY
                                          ? "out of memory"
                                          : "could not set up libcurl");
      return -1;
    }
    fresh = 1;
  }
  e = t->easy;
  /* Only x-phone varies between a client's requests: the header list is
     rebuilt when it changes, not for every pin. */
  if (!t->headers_set || strcmp(t->headers_phone, r->phone) != 0) {
    curl_slist_free_all(t->headers);
    t->headers_set = 0;
    if (header_list(r, &t->headers) != 0) {
      fail_reply(t, PSK_KIND_NETWORK, "out of memory");
      return -1;
    }
    t->headers_set = 1;
    memcpy(t->headers_phone, r->phone, sizeof t->headers_phone);
    fresh = 1;
  }
  if (fresh) curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
  /* The request target, the bytes build_pin shows after the base URL's
     origin (libcurl copies it). The URL handle names the same origin, so
     connections, TLS and proxy tunnels are the base URL's. */
  if (curl_easy_setopt(e, CURLOPT_REQUEST_TARGET,
                       psk_buf_cstr(&r->url) + r->target) != CURLE_OK) {
    fail_reply(t, PSK_KIND_NETWORK, "out of memory");
    return -1;
  }
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, psk_buf_cstr(&r->body));
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
  t->resent = 0;
  t->reply.status = 0;
  t->reply.kind = PSK_KIND_NONE;
  t->reply.message[0] = '\0';
  t->reply.elapsed = 0;
  return 0;
}

/* Empties the reply before each exchange (a resend starts over). */
static void reset_exchange(psk_transfer *t) {
  psk_buf_clear(&t->reply.head);
  psk_buf_clear(&t->reply.body);
  t->failure = PSK_KIND_NONE;
  t->nomem = 0;
  t->head_done = 0;
  t->got_body = 0;
  t->folded = 0;
  t->head_total = 0;
  t->errbuf[0] = '\0';
}

/* A reused connection that died while idle: the request never reached a
   live server (or the server dropped it unanswered), and pinning is
   idempotent, so sending it again once on a new connection is safe. */
static int stale_connection(psk_transfer *t, CURLcode rc) {
  long connects = -1;
  if (t->resent || (rc != CURLE_SEND_ERROR && rc != CURLE_RECV_ERROR &&
                    rc != CURLE_GOT_NOTHING))
    return 0;
  curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects);
  return connects == 0;
}

/* The URL as a failure message shows it: at most URL_SHOWN bytes, cut
   with "...", so that the cause after it always fits in reply.message
   (16 + 200 + 3 + ": " + the lead + CURL_ERROR_SIZE < 512). */
#define URL_SHOWN 200
static int url_width(const psk_buf *url) {
  return url->len > URL_SHOWN ? URL_SHOWN - 3 : (int)url->len;
}
static const char *url_cut(const psk_buf *url) {
  return url->len > URL_SHOWN ? "..." : "";
}

/* Fills t's reply from the exchange's outcome. */
static void finish(psk_transfer *t, CURLcode rc) {
  psk_reply *rep = &t->reply;
  const psk_buf *url = &t->req->url;
  double total = 0;
  /* libcurl takes a head cut off by the server closing the connection as
     a complete response; a head without its blank line is no answer. */
  if (rc == CURLE_OK && !t->head_done) {
    rc = CURLE_RECV_ERROR;
    snprintf(t->errbuf, sizeof t->errbuf,
             "connection closed before the end of the response head");
  }
  curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total);
  rep->elapsed = total;
  if (rc == CURLE_OK) {
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &rep->status);
    rep->kind = PSK_KIND_NONE;
    if (t->folded && rep->head.data)
      rep->head.len = psk_head_unfold(rep->head.data, rep->head.len);
    return;
  }
  rep->status = 0;
  /* libcurl refuses a header line longer than CURL_MAX_HTTP_HEADER (100
     KiB) before on_header sees it, with CURLE_OUT_OF_MEMORY (CURLE_TOO_LARGE
     since 8.6.0): in the head, that is an answer too large to keep, not a
     broken connection that a retry could mend. */
  if (!t->head_done && !t->failure && (rc == CURLE_OUT_OF_MEMORY
#if LIBCURL_VERSION_NUM >= 0x080600
                        || rc == CURLE_TOO_LARGE
#endif
                        ))
    t->failure = PSK_KIND_TOO_LARGE;
  rep->kind = t->failure ? t->failure : kind_of(rc);
  if (rep->kind == PSK_KIND_TOO_LARGE) {
    snprintf(rep->message, sizeof rep->message,
             "periskope: POST %.*s%s: response too large (body over "
             "max_body, %lu bytes, heads over 256 KiB with interim ones, or a "
             "header line over 100 KiB)",
             url_width(url), psk_buf_cstr(url), url_cut(url),
             (unsigned long)t->h->cfg->max_body);
  } else {
    /* Each cause once: libcurl ends some sentences with its code's
       generic text ("... after 0 ms: Couldn't connect to server"), a
       repeat that is left out. */
    const char *generic = curl_easy_strerror(rc);
    const char *why = t->nomem ? "out of memory"
                      : t->errbuf[0] ? t->errbuf
                                     : generic;
    const char *lead = kind_lead(rep->kind);
    size_t n = strlen(why), g = strlen(generic);
    if (why == t->errbuf && n > g + 2 && strcmp(why + n - g, generic) == 0 &&
        memcmp(why + n - g - 2, ": ", 2) == 0)
      n -= g + 2;
    /* A timeout met while connecting reads "Failed to connect to ... after
       N ms" once the generic "Timeout was reached" is left out: it gets
       the heading its sentence no longer says. */
    if (rep->kind == PSK_KIND_TIMEOUT && !strstr(why, "timed out"))
      lead = "timed out: ";
    snprintf(rep->message, sizeof rep->message, "periskope: POST %.*s%s: %s%.*s",
             url_width(url), psk_buf_cstr(url), url_cut(url), lead, (int)n,
             why);
  }
}

psk_reply *psk_http_perform(psk_http *h, psk_transfer *t,
                            const psk_request *r) {
  CURLcode rc;
  if (prepare(h, t, r) != 0) return &t->reply;
  reset_exchange(t);
  rc = psk_one_run(&h->one, t->easy, t->errbuf);
  if (stale_connection(t, rc)) {
    t->resent = 1;
    reset_exchange(t);
    rc = psk_one_run(&h->one, t->easy, t->errbuf);
  }
  finish(t, rc);
  return &t->reply;
}

int psk_http_watch_start(psk_http *h, psk_transfer *t, psk_watch *w,
                         const psk_request *r) {
  CURLcode rc;
  if (prepare(h, t, r) != 0) return -1;
  reset_exchange(t);
  if ((rc = psk_watch_start(w, t->easy)) != CURLE_OK) {
    finish(t, rc);
    return -1;
  }
  t->watch = w;
  return 0;
}

psk_reply *psk_http_watch_step(psk_http *h, psk_transfer *t) {
  CURLcode rc;
  (void)h;
  if (!t->watch) return &t->reply; /* ended already */
  if (!psk_watch_act(t->watch, &rc, t->errbuf)) return NULL;
  if (stale_connection(t, rc)) {
    t->resent = 1;
    reset_exchange(t);
    if ((rc = psk_watch_start(t->watch, t->easy)) == CURLE_OK) return NULL;
  }
  t->watch = NULL;
  finish(t, rc);
  return &t->reply;
}

psk_batch *psk_batch_new(psk_http *h) {
  psk_batch *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  b->h = h;
  psk_owner_set(&b->owner);
  if (!(b->multi = curl_multi_init()) ||
      curl_multi_setopt(b->multi, CURLMOPT_MAXCONNECTS, (long)PSK_KEEP_CONNECTIONS)) {
    if (b->multi) curl_multi_cleanup(b->multi);
    free(b);
    return NULL;
  }
  return b;
}

/* libcurl order: easies out of the multi, then the multi. */
void psk_batch_free(psk_batch *b) {
  int i;
  if (!b) return;
  for (i = 0; i < b->h->npool; i++)
    if (b->h->pool[i]->batch == b) batch_remove(b->h->pool[i]);
  /* In a forked child the multi handle is the parent's: forgotten. */
  if (!psk_owner_other(&b->owner)) curl_multi_cleanup(b->multi);
  free(b);
}

int psk_batch_start(psk_batch *b, psk_transfer *t, const psk_request *r) {
  if (t->batch) return 0;
  if (prepare(b->h, t, r) != 0) return -1;
  reset_exchange(t);
  if (curl_multi_add_handle(b->multi, t->easy) != CURLM_OK) {
    fail_reply(t, PSK_KIND_NETWORK, "could not start a transfer");
    return -1;
  }
  t->batch = b;
  b->running++;
  return 0;
}

int psk_batch_running(const psk_batch *b) { return b->running; }

/* The first finished transfer libcurl reports, resending stale ones. */
static psk_transfer *collect(psk_batch *b) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(b->multi, &left))) {
    psk_transfer *t = NULL;
    CURLcode rc;
    if (m->msg != CURLMSG_DONE) continue;
    rc = m->data.result;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
    curl_multi_remove_handle(b->multi, t->easy);
    if (stale_connection(t, rc)) {
      t->resent = 1;
      reset_exchange(t);
      if (curl_multi_add_handle(b->multi, t->easy) == CURLM_OK) continue;
    }
    t->batch = NULL;
    b->running--;
    finish(t, rc);
    return t;
  }
  return NULL;
}

psk_transfer *psk_batch_wait(psk_batch *b, double timeout) {
  double deadline = psk_time_mono() + (timeout > 0 ? timeout : 0);
  if (!b->running) {
    psk_time_sleep(timeout);
    return NULL;
  }
  for (;;) {
    int still = 0;
    double left;
    psk_transfer *t = collect(b);
    if (t) return t;
    curl_multi_perform(b->multi, &still);
    if ((t = collect(b))) return t;
    left = deadline - psk_time_mono();
    if (left <= 0) return NULL;
    if (left > 1) left = 1; /* poll in bounded slices */
    curl_multi_poll(b->multi, NULL, 0, (int)(left * 1000) + 1, NULL);
  }
}

const char *psk_http_curl_version(void) {
  return curl_version_info(CURLVERSION_NOW)->version;
}
