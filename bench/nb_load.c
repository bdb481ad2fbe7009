/*
 * nb_load: the load generator of `make bench-nonblocking`. N GETs of
 * URL_PREFIX<i> (i = 1..N) on libcurl's multi interface, exactly FLIGHT in
 * flight until the last has started: each slot is one reused easy handle,
 * and a finished transfer's handle starts the next request in the same
 * turn of the loop (curl --parallel leaves gaps between its transfers: at
 * 256 in flight against a 300 ms server it made about 0.7 of the ideal
 * rate on its own).
 *
 *   nb_load URL_PREFIX N FLIGHT
 *
 * Prints one line per transfer, "<status> <seconds>" (status 0: no
 * answer), in the order they ended, then "wall <seconds>": from the first
 * request started to the last answer. Exits 0 when it ran, whatever the
 * statuses.
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_FLIGHT 1024

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t discard(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  (void)ud;
  return size * n;
}

typedef struct slot {
  CURL *easy;
  double started;
} slot;

int main(int argc, char **argv) {
  static slot slots[MAX_FLIGHT];
  char url[4096];
  CURLM *multi;
  long n, next = 1, done = 0;
  int flight, i, running = 0;
  double t0;
  if (argc != 4) {
    fprintf(stderr, "usage: nb_load URL_PREFIX N FLIGHT\n");
    return 2;
  }
  n = strtol(argv[2], NULL, 10);
  flight = atoi(argv[3]);
  if (n < 1 || flight < 1 || flight > MAX_FLIGHT) return 2;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 2;
  if (!(multi = curl_multi_init())) return 2;
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)flight);
  for (i = 0; i < flight; i++) {
    CURL *e = curl_easy_init();
    if (!e) return 2;
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, &slots[i]);
    slots[i].easy = e;
  }
  t0 = now();
  for (i = 0; i < flight && next <= n; i++) {
    snprintf(url, sizeof url, "%s%ld", argv[1], next++);
    curl_easy_setopt(slots[i].easy, CURLOPT_URL, url);
    slots[i].started = now();
    curl_multi_add_handle(multi, slots[i].easy);
  }
  while (done < n) {
    CURLMsg *m;
    int left;
    curl_multi_perform(multi, &running);
    while ((m = curl_multi_info_read(multi, &left))) {
      long status = 0;
      slot *s;
      if (m->msg != CURLMSG_DONE) continue;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
      if (m->data.result == CURLE_OK)
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      printf("%ld %.6f\n", status, now() - s->started);
      done++;
      curl_multi_remove_handle(multi, s->easy);
      if (next <= n) {
        snprintf(url, sizeof url, "%s%ld", argv[1], next++);
        curl_easy_setopt(s->easy, CURLOPT_URL, url);
        s->started = now();
        curl_multi_add_handle(multi, s->easy);
      }
    }
    if (done < n) curl_multi_poll(multi, NULL, 0, 1000, NULL);
  }
  printf("wall %.6f\n", now() - t0);
  for (i = 0; i < flight; i++) curl_easy_cleanup(slots[i].easy);
  curl_multi_cleanup(multi);
  curl_global_cleanup();
  return 0;
}
