/*
 * check_redis: the Redis store's exchange (psk_redis_x), sans-I/O, with
 * no server: the bytes it hands out are compared with what Redis expects
 * (RESP commands, pipelined), and canned replies are fed to it whole and
 * one byte at a time, as a host moving bytes would. Built with hiredis
 * under ASan/UBSan by `make check-redis`.
 *
 * What is checked comes from psk_redis.h: the setup pipelined with the
 * first EVALSHA, NOSCRIPT reloaded once, a reply larger than the protocol
 * needs refused at its header, the password never in an error, and
 * whether the connection may be kept.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psk_redis.h"

static int g_pass, g_fail;

static void check_(int ok, int line, const char *expr) {
  if (ok) {
    g_pass++;
    return;
  }
  g_fail++;
  fprintf(stderr, "check_redis.c:%d: FAIL: %s\n", line, expr);
}
#define CHECK(cond) check_((cond) ? 1 : 0, __LINE__, #cond)

/* A string literal as (pointer, length). */
#define S(lit) lit, (sizeof(lit) - 1)

#define SHA "fa58d8ae174349690353dfffa7a0ddf920264a09"
#define LOADED "$40\r\n" SHA "\r\n"

/* The output the exchange hands out now, as a NUL-terminated copy. */
static char *take_output(psk_redis_x *x) {
  const char *p;
  size_t n;
  char *copy;
  psk_redis_x_output(x, &p, &n);
  copy = malloc(n + 1);
  if (!copy) exit(2);
  memcpy(copy, p, n);
  copy[n] = '\0';
  return copy;
}

/* Feeds reply, whole (by_byte 0) or one byte at a time (each an exact
   heap copy, so a read past it is caught), until a result; the result,
   or PSK_REDIS_MORE when the bytes ran out first. */
static int feed(psk_redis_x *x, const char *reply, size_t n, int by_byte) {
  int rc = PSK_REDIS_MORE;
  size_t i;
  if (!by_byte) {
    char *copy = malloc(n ? n : 1);
    if (!copy) exit(2);
    memcpy(copy, reply, n);
    rc = psk_redis_x_feed(x, copy, n);
    free(copy);
    return rc;
  }
  for (i = 0; i < n && rc == PSK_REDIS_MORE; i++) {
    char *one = malloc(1);
    if (!one) exit(2);
    *one = reply[i];
    rc = psk_redis_x_feed(x, one, 1);
    free(one);
  }
  return rc;
}

/* The EVALSHA command for name "k", expected "e", desired "d", 3600000 ms,
   values up to 4607 bytes. */
#define EVAL_CMD                                                          \
  "*8\r\n$7\r\nEVALSHA\r\n$40\r\n" SHA "\r\n$1\r\n1\r\n$1\r\nk\r\n"        \
  "$1\r\ne\r\n$1\r\nd\r\n$7\r\n3600000\r\n$4\r\n4607\r\n"
#define LOAD_CMD "*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$"

static int begin(psk_redis_x *x, const psk_redis *r, int fresh) {
  return psk_redis_x_begin(x, r, fresh, "k", "e", "d", 3600000L);
}

static void test_fresh_and_kept(psk_redis *plain, int by_byte) {
  psk_redis_x *x = psk_redis_x_new();
  char *out;
  CHECK(x != NULL);
  /* A fresh connection: SCRIPT LOAD and EVALSHA in one batch. */
  CHECK(begin(x, plain, 1) == PSK_REDIS_MORE);
  out = take_output(x);
  CHECK(strncmp(out, LOAD_CMD, strlen(LOAD_CMD)) == 0);
  CHECK(strstr(out, "redis.call('GET', KEYS[1])") != NULL);
  CHECK(strlen(out) > strlen(EVAL_CMD) &&
        strcmp(out + strlen(out) - strlen(EVAL_CMD), EVAL_CMD) == 0);
  free(out);
  out = take_output(x); /* handed out already */
  CHECK(out[0] == '\0');
  free(out);
  CHECK(feed(x, S(LOADED "*1\r\n:1\r\n"), by_byte) == PSK_REDIS_SET);
  CHECK(psk_redis_x_reusable(x));
  CHECK(psk_redis_x_feed(x, S("+OK\r\n")) == PSK_REDIS_SET); /* stays */

  /* The connection kept: EVALSHA alone; another process changed it. */
  CHECK(begin(x, plain, 0) == PSK_REDIS_MORE);
  out = take_output(x);
  CHECK(strcmp(out, EVAL_CMD) == 0);
  free(out);
  CHECK(feed(x, S("*2\r\n:0\r\n"), by_byte) == PSK_REDIS_MORE);
  CHECK(feed(x, S("$9\r\np2 1 2 34\r\n"), by_byte) == PSK_REDIS_CHANGED);
  {
    size_t len = 0;
    const char *v = psk_redis_x_value(x, &len);
    CHECK(len == 9 && strcmp(v, "p2 1 2 34") == 0);
  }
  CHECK(psk_redis_x_reusable(x));

  /* Nothing stored yet: {0, ""}. */
  CHECK(begin(x, plain, 0) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(feed(x, S("*2\r\n:0\r\n$0\r\n\r\n"), by_byte) == PSK_REDIS_CHANGED);
  CHECK(psk_redis_x_value(x, NULL)[0] == '\0');
  psk_redis_x_free(x);
}

static void test_setup(psk_redis *secured, int by_byte) {
  psk_redis_x *x = psk_redis_x_new();
  char *out;
  const char *err;
  CHECK(begin(x, secured, 1) == PSK_REDIS_MORE);
  out = take_output(x);
  CHECK(strncmp(out, "*2\r\n$4\r\nAUTH\r\n$9\r\npw-SECRET\r\n"
                     "*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n" LOAD_CMD,
                strlen("*2\r\n$4\r\nAUTH\r\n$9\r\npw-SECRET\r\n"
                       "*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n" LOAD_CMD)) == 0);
  free(out);
  CHECK(feed(x, S("+OK\r\n+OK\r\n" LOADED "*1\r\n:1\r\n"), by_byte) ==
        PSK_REDIS_SET);
  CHECK(psk_redis_x_reusable(x));

  /* A wrong password: AUTH's error, the rest unread, the connection to
     be closed, the password nowhere. */
  CHECK(begin(x, secured, 1) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(feed(x, S("-WRONGPASS invalid username-password pair or user is "
                  "disabled.\r\n-NOAUTH Authentication required.\r\n"),
             by_byte) == PSK_REDIS_FAILED);
  err = psk_redis_x_error(x);
  CHECK(strstr(err, "redis 127.0.0.1:6380: AUTH: WRONGPASS") == err);
  CHECK(strstr(err, "pw-SECRET") == NULL);
  CHECK(!psk_redis_x_reusable(x));

  /* A database out of range. */
  CHECK(begin(x, secured, 1) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(feed(x, S("+OK\r\n-ERR DB index is out of range\r\n"), by_byte) ==
        PSK_REDIS_FAILED);
  CHECK(strstr(psk_redis_x_error(x), "SELECT: ERR DB index") != NULL);
  psk_redis_x_free(x);
}

static void test_noscript(psk_redis *plain, int by_byte) {
  psk_redis_x *x = psk_redis_x_new();
  char *out;
  /* Flushed: load again and retry, in one batch. */
  CHECK(begin(x, plain, 0) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(feed(x, S("-NOSCRIPT No matching script. Please use EVAL.\r\n"),
             by_byte) == PSK_REDIS_MORE);
  out = take_output(x);
  CHECK(strncmp(out, LOAD_CMD, strlen(LOAD_CMD)) == 0);
  CHECK(strcmp(out + strlen(out) - strlen(EVAL_CMD), EVAL_CMD) == 0);
  free(out);
  CHECK(feed(x, S(LOADED "*1\r\n:1\r\n"), by_byte) == PSK_REDIS_SET);
  CHECK(psk_redis_x_reusable(x));

  /* Flushed again at once: once only. */
  CHECK(begin(x, plain, 0) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(feed(x, S("-NOSCRIPT x\r\n"), by_byte) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(feed(x, S(LOADED "-NOSCRIPT x\r\n"), by_byte) == PSK_REDIS_FAILED);
  CHECK(strstr(psk_redis_x_error(x), "the script keeps disappearing") != NULL);

  /* Even right after the fresh connection's own SCRIPT LOAD. */
  CHECK(begin(x, plain, 1) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(feed(x, S(LOADED "-NOSCRIPT x\r\n"), by_byte) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(feed(x, S(LOADED "*1\r\n:1\r\n"), by_byte) == PSK_REDIS_SET);
  psk_redis_x_free(x);
}

/* Replies that fail the exchange, and whether its connection may stay. */
static void test_refused(psk_redis *plain, int by_byte) {
  static const struct {
    int fresh;
    const char *reply;
    size_t n;
    const char *err;
    int reusable;
  } cases[] = {
      {0, S("*2000000000\r\n"), "reply too large (an array too long)", 0},
      {0, S("*3\r\n"), "reply too large", 0},
      {1, S("$2000000000\r\n"), "reply too large (a bulk string too long)", 0},
      {0, S("*2\r\n:0\r\n$4609\r\n"), "reply too large (a bulk string too long)", 0},
      {0, S("*2\r\n:0\r\n*1\r\n"), "reply too large (arrays nested too deep)", 0},
      {0, S("%2\r\n"), "not a Redis reply (an unknown reply type)", 0},
      {0, S("+OK\n"), "not a Redis reply", 0},
      {0, S("+OK\r\n"), "EVALSHA: unexpected reply", 0},
      {0, S("*1\r\n:0\r\n"), "EVALSHA: unexpected reply", 0},
      {0, S("*2\r\n:1\r\n$0\r\n\r\n"), "EVALSHA: unexpected reply", 0},
      {0, S("*2\r\n:0\r\n:5\r\n"), "EVALSHA: unexpected reply", 0},
      {0, S("-ERR Error running script: WRONGTYPE\r\n"),
       "EVALSHA: ERR Error running script: WRONGTYPE", 0},
      {1, S("$40\r\n0000000000000000000000000000000000000000\r\n*1\r\n:1\r\n"),
       "SCRIPT LOAD: the script's SHA-1 is not the one this build names", 0},
      {1, S(":1\r\n"), "SCRIPT LOAD: unexpected reply", 0},
      /* A value longer than a budget: the script says so in {2}, and the
         connection is still in step. */
      {0, S("*1\r\n:2\r\n"), "redis 127.0.0.1:6379: k holds something else", 1},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    psk_redis_x *x = psk_redis_x_new();
    int ok;
    CHECK(begin(x, plain, cases[i].fresh) == PSK_REDIS_MORE);
    free(take_output(x));
    ok = feed(x, cases[i].reply, cases[i].n, by_byte) == PSK_REDIS_FAILED &&
         strstr(psk_redis_x_error(x), cases[i].err) != NULL &&
         psk_redis_x_reusable(x) == cases[i].reusable;
    if (!ok)
      fprintf(stderr, "  case %zu: %s (%s)\n", i, psk_redis_x_error(x),
              by_byte ? "byte by byte" : "whole");
    CHECK(ok);
    /* Then the same exchange object serves a fresh connection. */
    CHECK(begin(x, plain, 1) == PSK_REDIS_MORE);
    free(take_output(x));
    CHECK(feed(x, S(LOADED "*1\r\n:1\r\n"), by_byte) == PSK_REDIS_SET);
    psk_redis_x_free(x);
  }
}

/* Bytes after the last reply: in the same read, they fail it (the
   connection is out of step); in a later one, the exchange had ended. */
static void test_extra(psk_redis *plain) {
  psk_redis_x *x = psk_redis_x_new();
  CHECK(begin(x, plain, 0) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(psk_redis_x_feed(x, S("*1\r\n:1\r\n+OK\r\n")) == PSK_REDIS_FAILED);
  CHECK(strstr(psk_redis_x_error(x),
               "bytes after the last reply (not asked for)") != NULL);
  CHECK(!psk_redis_x_reusable(x));
  CHECK(begin(x, plain, 0) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(psk_redis_x_feed(x, S("*1\r\n:1\r\n")) == PSK_REDIS_SET);
  CHECK(psk_redis_x_feed(x, S("+OK\r\n")) == PSK_REDIS_SET);
  psk_redis_x_free(x);
}

/* The driver's own failures: a timeout halfway through a reply. */
static void test_driver_failure(psk_redis *plain) {
  psk_redis_x *x = psk_redis_x_new();
  CHECK(begin(x, plain, 0) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(psk_redis_x_feed(x, S("*2\r\n:0\r\n$9\r\np2")) == PSK_REDIS_MORE);
  CHECK(psk_redis_x_fail(x, "timed out (timeout 1 s)") == PSK_REDIS_FAILED);
  CHECK(strcmp(psk_redis_x_error(x),
               "redis 127.0.0.1:6379: timed out (timeout 1 s)") == 0);
  CHECK(!psk_redis_x_reusable(x));
  CHECK(psk_redis_x_feed(x, S(" 1 2 3\r\n")) == PSK_REDIS_FAILED);
  /* The half reply is forgotten: a new connection starts clean. */
  CHECK(begin(x, plain, 1) == PSK_REDIS_MORE);
  free(take_output(x));
  CHECK(psk_redis_x_feed(x, S(LOADED "*1\r\n:1\r\n")) == PSK_REDIS_SET);
  /* Before any exchange, an error still reads as one. */
  psk_redis_x_free(x);
  x = psk_redis_x_new();
  CHECK(psk_redis_x_fail(x, "connect: Connection refused") == PSK_REDIS_FAILED);
  CHECK(strstr(psk_redis_x_error(x), "connect: Connection refused") != NULL);
  CHECK(!psk_redis_x_reusable(x));
  psk_redis_x_free(x);
}

int main(void) {
  psk_redis *plain = psk_redis_new("127.0.0.1", 6379, NULL, 0, 1.0);
  psk_redis *secured = psk_redis_new("127.0.0.1", 6380, "pw-SECRET", 3, 1.0);
  int by_byte;
  if (!psk_redis_available() || !plain || !secured) {
    fprintf(stderr, "check_redis: built without hiredis\n");
    return 2;
  }
  for (by_byte = 0; by_byte < 2; by_byte++) {
    test_fresh_and_kept(plain, by_byte);
    test_setup(secured, by_byte);
    test_noscript(plain, by_byte);
    test_refused(plain, by_byte);
  }
  test_extra(plain);
  test_driver_failure(plain);
  psk_redis_free(plain);
  psk_redis_free(secured);
  printf("redis exchange: %d checks passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
