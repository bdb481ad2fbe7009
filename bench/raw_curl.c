/*
 * raw_curl: the reference for `make bench`. N pins in a C loop on ONE
 * reused libcurl easy handle, with the request periskope sends (same URL
 * shape, headers and body), reading back only the status. Everything that
 * does not change between pins is set once, before the loop; inside it
 * only the URL (a new message id per pin, as periskope's callers do) is set.
 *
 *   raw_curl BASE_URL API_KEY PHONE USER_AGENT WARMUP N [ID_PREFIX]
 *
 * Prints one line: "raw_curl pins=<N> ok=<204s> seconds=<wall s> cpu=<process
 * CPU s>" (the warm-up pins are sent first and counted in none); exits 1
 * when any pin of the timed part did not get a 204.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "raw_common.h"

/* Sends pins first..first+count-1; returns how many got a 204. */
static long run(CURL *e, const char *base, const char *prefix, long first,
                long count) {
  long i, ok = 0;
  for (i = first; i < first + count; i++) {
    long status = 0;
    pin_request(e, base, prefix, i);
    if (curl_easy_perform(e) == CURLE_OK &&
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
        status == 204)
      ok++;
  }
  return ok;
}

int main(int argc, char **argv) {
  CURL *e;
  struct curl_slist *h;
  long warmup, n, ok;
  double t0, t1;
  clock_t c0, c1;
  const char *prefix = argc > 7 ? argv[7] : "raw-";
  if (argc < 7) {
    fprintf(stderr,
            "usage: raw_curl BASE_URL API_KEY PHONE USER_AGENT WARMUP N "
            "[ID_PREFIX]\n");
    return 2;
  }
  warmup = strtol(argv[5], NULL, 10);
  n = strtol(argv[6], NULL, 10);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 2;
  h = pin_headers(argv[2], argv[3], argv[4]);
  if (!h || !(e = pin_easy(h))) return 2;

  run(e, argv[1], prefix, 0, warmup);
  t0 = now();
  c0 = clock();
  ok = run(e, argv[1], prefix, warmup, n);
  c1 = clock();
  t1 = now();

  printf("raw_curl pins=%ld ok=%ld seconds=%.6f cpu=%.6f\n", n, ok, t1 - t0,
         (double)(c1 - c0) / CLOCKS_PER_SEC);
  curl_slist_free_all(h);
  curl_easy_cleanup(e);
  curl_global_cleanup();
  return ok == n ? 0 : 1;
}
