/*
 * fuzz_resp: the size checks on Redis's replies (psk_resp) over any bytes,
 * under any limits, fed whole and in pieces.
 *
 * Input: three bytes make the limits and the replies waited for (a string
 * limit of 0-10,200 bytes, arrays of 0-4 elements, depth 0-5, lines of
 * 1-1,021 bytes, 0-4 replies), the rest is what the server sent.
 *
 * Invariants: the pieces do not matter (whole, byte by byte, and in
 * pieces cut where the input says give the same status, the same count of
 * replies and the same position in a reply); the failing byte is the same
 * one each way (the prefix before it is accepted); never more replies
 * than waited for; arrays never open deeper than the limit (and
 * PSK_RESP_DEPTH); an error is kept, whatever follows; why is set exactly
 * when there is an error.
 */
#include "fuzz.h"
#include "psk_resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Feeds p[0..n) cut into pieces after each byte whose bit `bit` is set
   (bit 8: one piece, bit 9: every byte); the status. */
static int feed_cut(psk_resp_scan *s, const char *p, size_t n, int bit) {
  size_t start = 0, i;
  int st = PSK_RESP_OK;
  for (i = 0; i < n && st == PSK_RESP_OK; i++) {
    int cut = bit == 9 || (bit < 8 && ((unsigned char)p[i] >> bit) & 1) ||
              i + 1 == n;
    if (cut) {
      char *piece = fz_dup((const uint8_t *)p + start, i + 1 - start);
      st = psk_resp_feed(s, piece, i + 1 - start);
      free(piece);
      start = i + 1;
    }
  }
  return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  psk_resp_limits lim;
  psk_resp_scan whole, bytes, cut;
  unsigned long waited;
  const char *in;
  size_t n;
  int st, depth_max;
  if (size < 3) return 0;
  lim.max_bulk = (size_t)data[0] * 40;
  lim.max_elements = data[1] % 5;
  lim.max_depth = (data[1] / 5) % 6;
  lim.max_line = 1 + (size_t)(data[2] % 64) * 16;
  waited = (unsigned long)(data[2] / 64) + (data[1] > 200);
  in = (const char *)data + 3;
  n = size - 3;
  depth_max = lim.max_depth < PSK_RESP_DEPTH ? lim.max_depth : PSK_RESP_DEPTH;

  psk_resp_init(&whole, &lim);
  psk_resp_wait(&whole, waited);
  {
    char *copy = fz_dup((const uint8_t *)in, n);
    st = n ? psk_resp_feed(&whole, copy, n) : PSK_RESP_OK;
    free(copy);
  }
  psk_resp_init(&bytes, &lim);
  psk_resp_wait(&bytes, waited);
  FUZZ_CHECK(feed_cut(&bytes, in, n, 9) == st);
  psk_resp_init(&cut, &lim);
  psk_resp_wait(&cut, waited);
  FUZZ_CHECK(feed_cut(&cut, in, n, data[0] % 8) == st);

  FUZZ_CHECK(whole.done == bytes.done && whole.done == cut.done);
  FUZZ_CHECK(whole.depth == bytes.depth && whole.depth == cut.depth);
  FUZZ_CHECK(whole.state == bytes.state && whole.state == cut.state);
  FUZZ_CHECK(whole.done <= waited);
  FUZZ_CHECK(whole.depth >= 0 && whole.depth <= depth_max);
  FUZZ_CHECK((st == PSK_RESP_OK) == (whole.why == NULL));
  FUZZ_CHECK(st == PSK_RESP_OK || st == PSK_RESP_TOO_LARGE ||
             st == PSK_RESP_BAD || st == PSK_RESP_EXTRA);
  if (st == PSK_RESP_OK) {
    /* Accepted: a bulk string under way is within its limit. */
    FUZZ_CHECK(whole.bulk_left <= lim.max_bulk);
  } else {
    /* The failing byte: every shorter prefix is accepted, byte by byte
       (done above: feed_cut stops at the first error), and the whole
       input without its bytes after it fails the same way. */
    psk_resp_scan again;
    FUZZ_CHECK(psk_resp_feed(&whole, "+OK\r\n", 5) == st);
    FUZZ_CHECK(whole.done == bytes.done);
    psk_resp_init(&again, &lim);
    psk_resp_wait(&again, waited);
    FUZZ_CHECK(feed_cut(&again, in, n, 9) == st && again.why == whole.why);
  }
  return 0;
}
