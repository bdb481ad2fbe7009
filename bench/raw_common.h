/*
 * raw_common.h: what the C reference loops of `make bench` (raw_curl.c,
 * raw_multi.c) share: the request periskope sends (header lines, easy
 * handle options, URL and body per pin), a write callback that discards,
 * and the clock. Static functions: each program includes it once.
 */
#ifndef RAW_COMMON_H
#define RAW_COMMON_H

#include <curl/curl.h>
#include <stdio.h>
#include <time.h>

static size_t discard(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  (void)ud;
  return size * n;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The six header lines: periskope's five and "Expect:" (what a naive loop
   adds to be sure libcurl sends no Expect: 100-continue). NULL when out
   of memory. */
static struct curl_slist *pin_headers(const char *key, const char *phone,
                                      const char *ua) {
  struct curl_slist *h = NULL;
  char line[8192];
  snprintf(line, sizeof line, "Authorization: Bearer %s", key);
  h = curl_slist_append(h, line);
  snprintf(line, sizeof line, "x-phone: %s", phone);
  h = curl_slist_append(h, line);
  h = curl_slist_append(h, "Content-Type: application/json");
  h = curl_slist_append(h, "Accept: application/json");
  snprintf(line, sizeof line, "User-Agent: %s", ua);
  h = curl_slist_append(h, line);
  return curl_slist_append(h, "Expect:");
}

/* An easy handle set up once for pins with header list h: the options
   that stay for every pin. NULL when out of memory. */
static CURL *pin_easy(struct curl_slist *h) {
  CURL *e = curl_easy_init();
  if (!e) return NULL;
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  return e;
}

/* What changes per pin: the URL, with message id <prefix><i>, as a naive
   loop sets it (a string libcurl parses again), and the body. */
static void pin_request(CURL *e, const char *base, const char *prefix,
                        long i) {
  static const char body[] = "{\"pin\":true}";
  char url[2048];
  snprintf(url, sizeof url, "%s/message/%s%ld/pin", base, prefix, i);
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                   (curl_off_t)(sizeof body - 1));
}

#endif
