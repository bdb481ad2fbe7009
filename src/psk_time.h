/*
 * psk_time: the two clocks and the one sleep, in plain C (POSIX), with
 * neither Lua nor libcurl.
 *
 * Every wait, timeout, elapsed time, store rest and lock deadline is
 * measured on the monotonic clock, which no wall-clock step (NTP, a
 * suspended laptop, an administrator) moves. The epoch clock is read only
 * where a time is compared with the server's Date: the server clock's
 * offset (psk_clock in psk_pace.h), Retry-After dates and X-RateLimit-Reset.
 */
#ifndef PSK_TIME_H
#define PSK_TIME_H

/* Seconds on CLOCK_MONOTONIC: only differences mean anything. */
double psk_time_mono(void);
/* Epoch seconds on CLOCK_REALTIME, for comparing with a server's Date. */
double psk_time_wall(void);
/* Sleeps s seconds, resuming after signals (s <= 0 or NaN: not at all). */
void psk_time_sleep(double s);
/* Sleeps up to s seconds: 0 when it slept them all, -1 when a signal
   woke it first (the caller may look at what the signal asked for, and
   sleep the rest). */
int psk_time_nap(double s);

#endif
