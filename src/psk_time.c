/* psk_time: see psk_time.h. No Lua, no libcurl. */
#define _POSIX_C_SOURCE 200809L
#include "psk_time.h"

#include <errno.h>
#include <time.h>

static double read_clock(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double psk_time_mono(void) { return read_clock(CLOCK_MONOTONIC); }

double psk_time_wall(void) { return read_clock(CLOCK_REALTIME); }

static struct timespec interval(double s) {
  struct timespec ts;
  if (s > 1e9) s = 1e9; /* about 31 years: time_t holds it everywhere */
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  return ts;
}

void psk_time_sleep(double s) {
  struct timespec ts;
  if (!(s > 0)) return;
  ts = interval(s);
  /* nanosleep measures a relative interval on the monotonic clock. */
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

int psk_time_nap(double s) {
  struct timespec ts;
  if (!(s > 0)) return 0;
  ts = interval(s);
  return nanosleep(&ts, NULL) == -1 && errno == EINTR ? -1 : 0;
}
