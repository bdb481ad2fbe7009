/*
 * psk_http: libcurl easy + share transport (see psk_http.h).
 * Must not include lua.h: everything here may run inside libcurl.
 */
#define _POSIX_C_SOURCE 200809L
#include "psk_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct psk_http {
  CURLSH *share;
  CURL *easy;
  pid_t pid;          /* the process that opened the handles */
  psk_config cfg;     /* borrowed pointers: the client outlives us */
  int failure;        /* PSK_KIND_TOO_LARGE when a callback stopped */
  int head_done;      /* the final head ended with its blank line */
  char errbuf[CURL_ERROR_SIZE];
  psk_reply reply;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

/* curl_global_init is process-wide and not safe to race: once, here. */
static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* Runs inside libcurl: C memory only. A new status line starts a new
   response (after a 1xx interim one), so only the final head is kept. */
static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  psk_http *h = ud;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    psk_buf_clear(&h->reply.head);
    h->head_done = 0;
  } else if ((len == 2 && p[0] == '\r' && p[1] == '\n') ||
             (len == 1 && p[0] == '\n')) {
    h->head_done = 1;
  }
  if (psk_buf_append(&h->reply.head, p, len) != PSK_OK) {
    h->failure = PSK_KIND_TOO_LARGE;
    return 0; /* CURLE_WRITE_ERROR */
  }
  return len;
}

/* Runs inside libcurl: C memory only. */
static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  psk_http *h = ud;
  size_t len = size * n;
  if (psk_buf_append(&h->reply.body, p, len) != PSK_OK) {
    h->failure = PSK_KIND_TOO_LARGE;
    return 0;
  }
  return len;
}

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

static const char *kind_text(int kind) {
  switch (kind) {
  case PSK_KIND_TIMEOUT: return "timed out";
  case PSK_KIND_CONNECT: return "could not connect";
  case PSK_KIND_RESOLVE: return "could not resolve the host";
  case PSK_KIND_TLS: return "TLS failed";
  case PSK_KIND_TOO_LARGE: return "response too large";
  default: return "network error";
  }
}

static long ms(double s) { return (long)(s * 1000 + 0.5); }

/* Sets the options that stay for the life of the handle. */
static int setup_easy(psk_http *h) {
  CURL *e = h->easy;
  const psk_config *c = &h->cfg;
  int bad = 0;
#define SET(opt, val) bad |= curl_easy_setopt(e, opt, val) != CURLE_OK
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
  SET(CURLOPT_PATH_AS_IS, 1L); /* send the URL build_pin shows, byte for byte */
  SET(CURLOPT_POST, 1L);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, h);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, h);
  SET(CURLOPT_ERRORBUFFER, h->errbuf);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
#undef SET
  return bad ? -1 : 0;
}

/* Opens the curl handles; on failure leaves what it made for close_handles. */
static int open_handles(psk_http *h) {
  h->pid = getpid();
  h->share = curl_share_init();
  h->easy = curl_easy_init();
  if (!h->share || !h->easy) return -1;
  if (curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
      curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) ||
      curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT))
    return -1;
  return setup_easy(h);
}

/* Easy before share: the share refuses cleanup while an easy uses it. */
static void close_handles(psk_http *h) {
  if (h->easy) curl_easy_cleanup(h->easy);
  if (h->share) curl_share_cleanup(h->share);
  h->easy = NULL;
  h->share = NULL;
}

psk_http *psk_http_new(const psk_config *c, char *errmsg, size_t errlen) {
  psk_http *h;
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
  h->cfg = *c;
  psk_buf_init(&h->reply.head, PSK_HEADERS_MAX);
  psk_buf_init(&h->reply.body, c->max_body);
  if (open_handles(h) != 0) {
    snprintf(errmsg, errlen, "periskope: could not set up libcurl");
    psk_http_free(h);
    return NULL;
  }
  return h;
}

void psk_http_free(psk_http *h) {
  if (!h) return;
  close_handles(h);
  psk_buf_free(&h->reply.head);
  psk_buf_free(&h->reply.body);
  free(h);
}

/* After fork() the child must not clean up the parent's handles: that
   could send TLS close-notify on connections the parent still uses. It
   forgets them (a deliberate, bounded leak in the child) and opens its own. */
static int reopen_after_fork(psk_http *h) {
  h->easy = NULL;
  h->share = NULL;
  if (open_handles(h) == 0) return 0;
  close_handles(h);
  return -1;
}

static struct curl_slist *header_list(const psk_request *r) {
  struct curl_slist *list = NULL, *next;
  char line[PSK_API_KEY_MAX + PSK_USER_AGENT_MAX + 64];
  int i;
  for (i = 0; i < r->nheaders; i++) {
    snprintf(line, sizeof line, "%s: %s", r->headers[i].name,
             r->headers[i].value);
    if (!(next = curl_slist_append(list, line))) goto nomem;
    list = next;
  }
  /* No "Expect: 100-continue" round trip, whatever the body size. */
  if (!(next = curl_slist_append(list, "Expect:"))) goto nomem;
  return next;
nomem:
  curl_slist_free_all(list);
  return NULL;
}

static CURLcode exchange(psk_http *h, const psk_request *r,
                         struct curl_slist *headers) {
  CURL *e = h->easy;
  psk_buf_clear(&h->reply.head);
  psk_buf_clear(&h->reply.body);
  h->failure = PSK_KIND_NONE;
  h->head_done = 0;
  h->errbuf[0] = '\0';
  curl_easy_setopt(e, CURLOPT_URL, psk_buf_cstr(&r->url));
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, psk_buf_cstr(&r->body));
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
  return curl_easy_perform(e);
}

/* A reused connection that died while idle: the request never reached a
   live server, so sending it again on a new connection is safe. */
static int stale_connection(CURL *e, CURLcode rc) {
  long connects = -1;
  if (rc != CURLE_SEND_ERROR && rc != CURLE_RECV_ERROR &&
      rc != CURLE_GOT_NOTHING)
    return 0;
  curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
  return connects == 0;
}

psk_reply *psk_http_perform(psk_http *h, const psk_request *r) {
  psk_reply *rep = &h->reply;
  struct curl_slist *headers;
  CURLcode rc;
  double total = 0;
  rep->status = 0;
  rep->kind = PSK_KIND_NONE;
  rep->message[0] = '\0';
  rep->elapsed = 0;
  if (h->pid != getpid() && reopen_after_fork(h) != 0) {
    rep->kind = PSK_KIND_NETWORK;
    snprintf(rep->message, sizeof rep->message,
             "periskope: could not set up libcurl after fork");
    return rep;
  }
  if (!(headers = header_list(r))) {
    rep->kind = PSK_KIND_NETWORK;
    snprintf(rep->message, sizeof rep->message, "periskope: out of memory");
    return rep;
  }
  rc = exchange(h, r, headers);
  if (stale_connection(h->easy, rc)) rc = exchange(h, r, headers);
  /* libcurl takes a head cut off by the server closing the connection as
     a complete response; a head without its blank line is no answer. */
  if (rc == CURLE_OK && !h->head_done) {
    rc = CURLE_RECV_ERROR;
    snprintf(h->errbuf, sizeof h->errbuf,
             "connection closed before the end of the response head");
  }
  curl_easy_getinfo(h->easy, CURLINFO_TOTAL_TIME, &total);
  rep->elapsed = total;
  if (rc == CURLE_OK) {
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &rep->status);
  } else {
    rep->kind = h->failure ? h->failure : kind_of(rc);
    if (rep->kind == PSK_KIND_TOO_LARGE)
      snprintf(rep->message, sizeof rep->message,
               "periskope: POST %s: %s (over max_body %lu bytes or 256 KiB "
               "of headers)",
               psk_buf_cstr(&r->url), kind_text(rep->kind),
               (unsigned long)h->cfg.max_body);
    else
      snprintf(rep->message, sizeof rep->message, "periskope: POST %s: %s: %s",
               psk_buf_cstr(&r->url), kind_text(rep->kind),
               h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
  }
  /* The slist must outlive the transfer; detach it before freeing. */
  curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
  curl_slist_free_all(headers);
  return rep;
}

const char *psk_http_curl_version(void) {
  return curl_version_info(CURLVERSION_NOW)->version;
}

double psk_http_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void psk_http_sleep(double s) {
  struct timespec ts;
  if (!(s > 0)) return;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}
