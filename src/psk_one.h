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
 * transfer (about 1 us each here). libcurl's socket table for the handle
 * is about 30 KB, made at the first transfer.
 */
#ifndef PSK_ONE_H
#define PSK_ONE_H

#include <curl/curl.h>
#include <poll.h>

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

#endif
