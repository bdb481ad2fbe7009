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
      curl_multi_setopt(o->multi, CURLMOPT_TIMERDATA, o)) {
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
