/*
 * psk_one: one transfer at a time, to its end, on a multi handle of its
 * own driven through libcurl's socket interface. psk_http's sequential
 * exchanges run here. No lua.h: it runs inside libcurl's callbacks.
 *
 * The process sleeps in poll() on the sockets libcurl names
 * (CURLMOPT_SOCKETFUNCTION), and each wake-up tells libcurl which socket
 * is ready (curl_multi_socket_action), so it reads without polling that
 * socket again. curl_easy_perform polls its wake-up pipe before it starts
 * and each socket once more before it reads: two more system calls per
 * transfer (bench/README.md says what one costs). libcurl makes the
 * handle's socket table once, at its first transfer.
 */
#ifndef PSK_ONE_H
#define PSK_ONE_H

#include <curl/curl.h>
#include <poll.h>

#include "psk_http.h" /* psk_watch, and its curl-free functions */

/* At most a few sockets at once for one transfer: a connection, a second
   address family while connecting, the resolver's thread. */
#define PSK_ONE_SOCKETS 8

typedef struct psk_one {
  CURLM *multi;      /* made on first use; NULL after a failure */
  struct pollfd fds[PSK_ONE_SOCKETS];
  int nfds;
  double deadline;   /* psk_time_mono() when libcurl wants its timer run;
                        < 0: no timer */
} psk_one;

/* Runs easy to its end: its result, with errbuf (CURL_ERROR_SIZE bytes)
   saying why when the wait itself failed. easy must be in no multi
   handle; it is in none after. o starts zeroed. */
CURLcode psk_one_run(psk_one *o, CURL *easy, char *errbuf);
/* Cleans up o's multi handle (no transfer runs on it between runs). */
void psk_one_free(psk_one *o);
/* After fork: the multi handle is the parent's, forgotten, not cleaned. */
void psk_one_forget(psk_one *o);

/* ---------------------------------------------------------------- */
/* One transfer driven by an outside event loop                      */

/* The same socket interface, for a host whose loop must not block (luv,
   Neovim, cqueues): libcurl's sockets go into an epoll set of the
   watch's own, and the loop watches that one descriptor for reading,
   with libcurl's timer as its timeout; when either fires, psk_watch_act
   lets libcurl act on what is ready, without waiting. The descriptor
   stays the same for the watch's life, whatever sockets libcurl opens
   and closes, so the loop never polls a closed or reused one; an eventfd
   in the set lets psk_watch_drop make it readable from outside (the
   transfer's client was closed: the loop must step to learn it). Linux
   only (epoll); elsewhere psk_watch_new fails. psk_watch_new, _free,
   _fd and _wait are declared in psk_http.h, for the binding.

   Starts easy on w (no other transfer on it): CURLE_OK, or why not. */
CURLcode psk_watch_start(psk_watch *w, CURL *easy);
/* Acts on what is ready, and on the timer when it is due: 1 when the
   transfer ended (*rc its result; errbuf says why when the watch itself
   failed; the transfer is then out of w), else 0. */
int psk_watch_act(psk_watch *w, CURLcode *rc, char *errbuf);
/* Takes the transfer out (it was freed, or is given up) and makes the
   descriptor readable, so that a loop watching it steps once more. */
void psk_watch_drop(psk_watch *w, int wake);
/* After fork: the parent's multi handle, forgotten. */
void psk_watch_forget(psk_watch *w);

#endif
