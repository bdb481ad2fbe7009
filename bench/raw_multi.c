/*
 * raw_multi: the reference for pin_many in `make bench`. N pins on
 * libcurl's multi interface, at most C in flight, each slot one reused easy
 * handle, with the request periskope sends (same URL shape, headers and
 * body), reading back only the status. A plain loop: no pacing, no retry,
 * no header callback, nothing between an answer and the next request of
 * its slot but the new URL.
 *
 *   raw_multi BASE_URL API_KEY PHONE USER_AGENT C N [ID_PREFIX]
 *
 * First a warm-up batch of C pins (it opens the connections), then N timed
 * ones. Prints "raw_multi c=<C> pins=<N> ok=<204s> seconds=<wall s>"; exits
 * 1 when any timed pin did not get a 204.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "raw_common.h"

#define MAX_C 64

typedef struct run {
  CURLM *multi;
  CURL *easy[MAX_C];
  const char *base, *prefix;
  long next, last; /* pins next .. last - 1 are still to start */
  long ok;
} run;

/* Starts pin r->next on easy handle e. */
static void start(run *r, CURL *e) {
  pin_request(e, r->base, r->prefix, r->next++);
  curl_multi_add_handle(r->multi, e);
}

/* Sends pins first..first+count-1, at most c at once; returns how many got
   a 204. */
static long batch(run *r, int c, long first, long count) {
  int i, running = 0;
  r->next = first;
  r->last = first + count;
  r->ok = 0;
  for (i = 0; i < c && r->next < r->last; i++) start(r, r->easy[i]);
  do {
    CURLMsg *m;
    int left;
    curl_multi_perform(r->multi, &running);
    while ((m = curl_multi_info_read(r->multi, &left))) {
      long status = 0;
      CURL *e = m->easy_handle;
      if (m->msg != CURLMSG_DONE) continue;
      if (m->data.result == CURLE_OK &&
          curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
          status == 204)
        r->ok++;
      curl_multi_remove_handle(r->multi, e);
      if (r->next < r->last) {
        start(r, e);
        running++;
      }
    }
    if (running) curl_multi_poll(r->multi, NULL, 0, 1000, NULL);
  } while (running);
  return r->ok;
}

int main(int argc, char **argv) {
  run r;
  struct curl_slist *h;
  long n, ok;
  int c, i;
  double t0, t1;
  if (argc < 7) {
    fprintf(stderr, "usage: raw_multi BASE_URL API_KEY PHONE USER_AGENT C N "
                    "[ID_PREFIX]\n");
    return 2;
  }
  c = atoi(argv[5]);
  n = strtol(argv[6], NULL, 10);
  if (c < 1 || c > MAX_C) return 2;
  memset(&r, 0, sizeof r);
  r.base = argv[1];
  r.prefix = argc > 7 ? argv[7] : "multi-";
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 2;
  h = pin_headers(argv[2], argv[3], argv[4]);
  if (!h || !(r.multi = curl_multi_init())) return 2;
  for (i = 0; i < c; i++)
    if (!(r.easy[i] = pin_easy(h))) return 2;

  batch(&r, c, 0, c); /* warm-up: opens the connections */
  t0 = now();
  ok = batch(&r, c, c, n);
  t1 = now();

  printf("raw_multi c=%d pins=%ld ok=%ld seconds=%.6f\n", c, n, ok, t1 - t0);
  for (i = 0; i < c; i++) curl_easy_cleanup(r.easy[i]);
  curl_multi_cleanup(r.multi);
  curl_slist_free_all(h);
  curl_global_cleanup();
  return ok == n ? 0 : 1;
}
