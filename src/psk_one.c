/* psk_one: one transfer through libcurl's socket interface (see
   psk_one.h). Must not include lua.h: the callbacks run inside libcurl. */
#define _POSIX_C_SOURCE 200809L
#include "psk_one.h"
#include "psk_time.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Runs inside libcurl: C memory only. Keeps the sockets libcurl wants
   watched for the transfer. */
static int one_socket(CURL *e, curl_socket_t s, int what, void *ud,
                      void *sockp) {
  psk_one *o = ud;
  int i;
  (void)e;
  (void)sockp;
  for (i = 0; i < o->nfds && o->fds[i].fd != s; i++)
    ;
  if (what == CURL_POLL_REMOVE) {
    if (i < o->nfds) o->fds[i] = o->fds[--o->nfds];
    return 0;
  }
  if (i == o->nfds) {
    /* Never with one transfer; were it so, that socket goes unwatched and
       the transfer ends by its timeout (-1 would make the multi handle
       unusable for every later pin). */
    if (o->nfds == PSK_ONE_SOCKETS) return 0;
    o->fds[o->nfds++].fd = s;
  }
  o->fds[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
                             ((what & CURL_POLL_OUT) ? POLLOUT : 0));
  return 0;
}

/* Runs inside libcurl: C memory only. */
static int one_timer(CURLM *m, long ms, void *ud) {
  psk_one *o = ud;
  (void)m;
  o->deadline = ms < 0 ? -1 : psk_time_mono() + (double)ms / 1000;
  return 0;
}

/* The multi handle, made on first use: CURLE_OK or why not. */
static CURLcode one_open(psk_one *o) {
  if (o->multi) return CURLE_OK;
  if (!(o->multi = curl_multi_init())) return CURLE_OUT_OF_MEMORY;
  o->nfds = 0;
  o->deadline = -1;
  if (curl_multi_setopt(o->multi, CURLMOPT_SOCKETFUNCTION, one_socket) ||
      curl_multi_setopt(o->multi, CURLMOPT_SOCKETDATA, o) ||
      curl_multi_setopt(o->multi, CURLMOPT_TIMERFUNCTION, one_timer) ||
      curl_multi_setopt(o->multi, CURLMOPT_TIMERDATA, o) ||
      curl_multi_setopt(o->multi, CURLMOPT_MAXCONNECTS, (long)PSK_KEEP_CONNECTIONS)) {
    curl_multi_cleanup(o->multi);
    o->multi = NULL;
    return CURLE_FAILED_INIT;
  }
  return CURLE_OK;
}

void psk_one_free(psk_one *o) {
  if (o->multi) curl_multi_cleanup(o->multi);
  o->multi = NULL;
}

CURLcode psk_one_run(psk_one *o, CURL *easy, char *errbuf) {
  CURLcode rc = one_open(o);
  CURLMcode mc;
  CURLMsg *m;
  int running = 1, left, err = 0;
  if (rc != CURLE_OK) return rc;
  if (curl_multi_add_handle(o->multi, easy) != CURLM_OK)
    return CURLE_OUT_OF_MEMORY;
  /* Adding set the timer to fire at once: that starts the transfer. */
  mc = curl_multi_socket_action(o->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  while (mc == CURLM_OK && running) {
    struct pollfd ready[PSK_ONE_SOCKETS];
    int i, n, nready = 0, wait_ms = 1000; /* no timer: look again in a second */
    if (o->deadline >= 0) {
      double wait = o->deadline - psk_time_mono();
      wait_ms = wait <= 0 ? 0 : wait < 1 ? (int)(wait * 1000) + 1 : 1000;
    }
    n = wait_ms == 0 ? 0 : poll(o->fds, (nfds_t)o->nfds, wait_ms);
    if (n < 0 && errno != EINTR) {
      err = errno;
      break;
    }
    if (n <= 0) { /* the timer (or a signal): libcurl checks its times */
      mc = curl_multi_socket_action(o->multi, CURL_SOCKET_TIMEOUT, 0,
                                    &running);
      continue;
    }
    /* libcurl may change the set while it acts: act on a copy. */
    for (i = 0; i < o->nfds; i++)
      if (o->fds[i].revents) ready[nready++] = o->fds[i];
    for (i = 0; i < nready && mc == CURLM_OK && running; i++) {
      short ev = ready[i].revents;
      int bits = ((ev & (POLLIN | POLLHUP)) ? CURL_CSELECT_IN : 0) |
                 ((ev & POLLOUT) ? CURL_CSELECT_OUT : 0) |
                 ((ev & (POLLERR | POLLNVAL)) ? CURL_CSELECT_ERR : 0);
      mc = curl_multi_socket_action(o->multi, ready[i].fd, bits, &running);
    }
  }
  rc = CURLE_RECV_ERROR;
  while ((m = curl_multi_info_read(o->multi, &left)))
    if (m->msg == CURLMSG_DONE && m->easy_handle == easy)
      rc = m->data.result;
  if (rc == CURLE_RECV_ERROR && running)
    snprintf(errbuf, CURL_ERROR_SIZE, "%s",
             err ? strerror(err) : curl_multi_strerror(mc));
  curl_multi_remove_handle(o->multi, easy);
  if (mc != CURLM_OK) {
    /* A failed call can leave the multi handle unfit for the next pin:
       libcurl 7.88, out of memory while adding a socket to its table,
       keeps a broken entry that a later transfer on that socket divides
       by zero on (SIGFPE). A new one is made on next use; the
       connections live in the easy handle's share, not here. */
    psk_one_free(o);
  }
  return rc;
}

void psk_one_forget(psk_one *o) {
  o->multi = NULL;
  o->nfds = 0;
}

/* ---------------------------------------------------------------- */
/* the outside loop's watch                                          */

#ifdef __linux__
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct psk_watch {
  CURLM *multi;
  CURL *easy;      /* the transfer on it, or NULL */
  int epfd;        /* libcurl's sockets, and wake */
  int wake;        /* an eventfd: readable once psk_watch_drop woke it */
  double deadline; /* psk_time_mono() of libcurl's timer; < 0: none */
};

/* Runs inside libcurl: C memory only. Mirrors the sockets libcurl wants
   watched into the epoll set. */
static int watch_socket(CURL *e, curl_socket_t s, int what, void *ud,
                        void *sockp) {
  psk_watch *w = ud;
  struct epoll_event ev;
  (void)e;
  (void)sockp;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, s, NULL);
    return 0;
  }
  memset(&ev, 0, sizeof ev);
  ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) |
              ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
  ev.data.fd = s;
  if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, s, &ev);
  return 0;
}

/* Runs inside libcurl: C memory only. */
static int watch_timer(CURLM *m, long ms, void *ud) {
  psk_watch *w = ud;
  (void)m;
  w->deadline = ms < 0 ? -1 : psk_time_mono() + (double)ms / 1000;
  return 0;
}

/* The multi handle, made on first use (and again after a failure). */
static CURLcode watch_open(psk_watch *w) {
  if (w->multi) return CURLE_OK;
  if (!(w->multi = curl_multi_init())) return CURLE_OUT_OF_MEMORY;
  w->deadline = -1;
  if (curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, watch_socket) ||
      curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w) ||
      curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, watch_timer) ||
      curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w) ||
      curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, (long)PSK_KEEP_CONNECTIONS)) {
    curl_multi_cleanup(w->multi);
    w->multi = NULL;
    return CURLE_FAILED_INIT;
  }
  return CURLE_OK;
}

psk_watch *psk_watch_new(void) {
  struct epoll_event ev;
  psk_watch *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->deadline = -1;
  w->epfd = epoll_create1(EPOLL_CLOEXEC);
  w->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.fd = w->wake;
  if (w->epfd < 0 || w->wake < 0 ||
      epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake, &ev) != 0) {
    psk_watch_free(w);
    return NULL;
  }
  return w;
}

void psk_watch_free(psk_watch *w) {
  if (!w) return;
  psk_watch_drop(w, 0);
  if (w->multi) curl_multi_cleanup(w->multi);
  if (w->epfd >= 0) close(w->epfd);
  if (w->wake >= 0) close(w->wake);
  free(w);
}

void psk_watch_forget(psk_watch *w) {
  if (!w) return;
  w->multi = NULL;
  w->easy = NULL;
}

int psk_watch_fd(const psk_watch *w) { return w->epfd; }

double psk_watch_wait(const psk_watch *w) {
  double left;
  if (w->deadline < 0) return -1;
  left = w->deadline - psk_time_mono();
  return left > 0 ? left : 0;
}

CURLcode psk_watch_start(psk_watch *w, CURL *easy) {
  CURLcode rc = watch_open(w);
  int running;
  if (rc != CURLE_OK) return rc;
  if (curl_multi_add_handle(w->multi, easy) != CURLM_OK)
    return CURLE_OUT_OF_MEMORY;
  w->easy = easy;
  /* Adding set the timer to fire at once: that starts the transfer. */
  if (curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running) !=
      CURLM_OK) {
    curl_multi_remove_handle(w->multi, easy);
    w->easy = NULL;
    curl_multi_cleanup(w->multi); /* see psk_one_run: a new one next time */
    w->multi = NULL;
    return CURLE_OUT_OF_MEMORY;
  }
  return CURLE_OK;
}

int psk_watch_act(psk_watch *w, CURLcode *rc, char *errbuf) {
  struct epoll_event ev[PSK_ONE_SOCKETS];
  CURLMcode mc = CURLM_OK;
  CURLMsg *m;
  int i, n, running = 1, left, acted = 0;
  if (!w->easy || !w->multi) {
    *rc = CURLE_RECV_ERROR;
    snprintf(errbuf, CURL_ERROR_SIZE, "the transfer was given up");
    return 1;
  }
  n = epoll_wait(w->epfd, ev, PSK_ONE_SOCKETS, 0);
  for (i = 0; i < n && mc == CURLM_OK; i++) {
    int bits;
    if (ev[i].data.fd == w->wake) continue;
    bits = ((ev[i].events & (EPOLLIN | EPOLLHUP)) ? CURL_CSELECT_IN : 0) |
           ((ev[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
           ((ev[i].events & EPOLLERR) ? CURL_CSELECT_ERR : 0);
    mc = curl_multi_socket_action(w->multi, ev[i].data.fd, bits, &running);
    acted = 1;
  }
  if (mc == CURLM_OK && (!acted || (w->deadline >= 0 &&
                                    psk_time_mono() >= w->deadline)))
    mc = curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  *rc = CURLE_RECV_ERROR;
  while ((m = curl_multi_info_read(w->multi, &left)))
    if (m->msg == CURLMSG_DONE && m->easy_handle == w->easy) {
      *rc = m->data.result;
      running = 0;
    }
  if (mc != CURLM_OK) {
    snprintf(errbuf, CURL_ERROR_SIZE, "%s", curl_multi_strerror(mc));
    running = 0;
  }
  if (running) return 0;
  curl_multi_remove_handle(w->multi, w->easy);
  w->easy = NULL;
  if (mc != CURLM_OK) { /* see psk_one_run */
    curl_multi_cleanup(w->multi);
    w->multi = NULL;
  }
  return 1;
}

void psk_watch_drop(psk_watch *w, int wake) {
  if (!w) return;
  if (w->easy && w->multi) curl_multi_remove_handle(w->multi, w->easy);
  w->easy = NULL;
  if (wake) {
    uint64_t one = 1;
    if (write(w->wake, &one, sizeof one) < 0) {
      /* Full (it was woken before): readable already. */
    }
  }
}

#else /* not Linux: no epoll */

psk_watch *psk_watch_new(void) { return NULL; }
void psk_watch_free(psk_watch *w) { (void)w; }
void psk_watch_forget(psk_watch *w) { (void)w; }
int psk_watch_fd(const psk_watch *w) { (void)w; return -1; }
double psk_watch_wait(const psk_watch *w) { (void)w; return -1; }
CURLcode psk_watch_start(psk_watch *w, CURL *easy) {
  (void)w, (void)easy;
  return CURLE_FAILED_INIT;
}
int psk_watch_act(psk_watch *w, CURLcode *rc, char *errbuf) {
  (void)w;
  *rc = CURLE_FAILED_INIT;
  snprintf(errbuf, CURL_ERROR_SIZE, "no watch here");
  return 1;
}
void psk_watch_drop(psk_watch *w, int wake) { (void)w, (void)wake; }

#endif
