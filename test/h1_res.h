/*
 * h1_res.h: what a psk_h1 reader made of a whole input, copied out of the
 * reader so that two runs over the same input, cut differently, can be
 * compared. Shared by the core's checks (test/check_core.c) and the
 * reader's fuzz harness (fuzz/fuzz_h1.c); header-only, C99.
 */
#ifndef PSK_TEST_H1_RES_H
#define PSK_TEST_H1_RES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psk_h1.h"

typedef struct h1_res {
  int st; /* DONE, FAIL, or MORE when the bytes ended first */
  long status;
  int kind;
  char msg[128];
  char *head, *body;
  size_t head_len, body_len;
  int keepalive;
  uint64_t extra, received;
} h1_res;

/* An exact-length heap copy; out of memory aborts. */
static inline char *h1_res_dup(const char *s, size_t n) {
  char *p = malloc(n ? n : 1);
  if (!p) abort();
  if (n) memcpy(p, s, n);
  return p;
}

/* o: what reader r holds, its feeds and eof having ended at st. */
static inline void h1_res_take(h1_res *o, int st, const psk_h1 *r) {
  memset(o, 0, sizeof *o);
  o->st = st;
  o->status = r->status;
  o->kind = r->kind;
  snprintf(o->msg, sizeof o->msg, "%s", r->msg);
  o->head = h1_res_dup(psk_buf_cstr(&r->head), r->head.len);
  o->head_len = r->head.len;
  o->body = h1_res_dup(psk_buf_cstr(&r->body), r->body.len);
  o->body_len = r->body.len;
  o->keepalive = psk_h1_keepalive(r);
  o->extra = r->extra;
  o->received = r->received;
}

static inline void h1_res_free(h1_res *o) {
  free(o->head);
  free(o->body);
  o->head = o->body = NULL;
}

/* Whether two runs over the same input agree: the outcome, and all of
   the answer when there is one (a failure may have kept more or less of
   the bytes before it). */
static inline int h1_same(const h1_res *a, const h1_res *b) {
  if (a->st != b->st || a->status != b->status || a->kind != b->kind ||
      strcmp(a->msg, b->msg) != 0)
    return 0;
  if (a->st != PSK_H1_DONE) return 1;
  return a->head_len == b->head_len && a->body_len == b->body_len &&
         memcmp(a->head, b->head, a->head_len) == 0 &&
         memcmp(a->body, b->body, a->body_len) == 0 &&
         a->keepalive == b->keepalive && a->extra == b->extra &&
         a->received == b->received;
}

#endif
