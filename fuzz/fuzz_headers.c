/*
 * fuzz_headers: psk_header_next over an arbitrary response head, as
 * libcurl's header callback would collect it (status line, header lines,
 * CRLF or bare LF, obs-fold, junk).
 *
 * Invariants: every field lies within the input and starts a line; its
 * name is a non-empty HTTP token followed by ':'; its value holds no CR,
 * LF or NUL (RFC 9110 5.5: invalid and dangerous; the binding hands values
 * to Lua as they are) and no leading or trailing optional whitespace; the
 * walk only moves forward and ends at the end of the input. A reference
 * walk, written from the header comment in psk_core.h, says which lines
 * are fields, so a field that is silently dropped is caught too.
 */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* RFC 9110 5.6.2: tchar. */
static int is_tchar(unsigned char c) {
  return fz_is_alnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* The reference: the next line of head from *pos that is a field line,
   "token:..." not starting with whitespace, and free of CR and NUL once
   its CRLF is gone. (A line with them is invalid; whether it is skipped
   or the response refused is the core's choice, but it is never a field:
   the value checks below catch that first.) Returns its start or NULL. */
static const char *ref_next(const char *head, size_t len, size_t *pos) {
  while (*pos < len) {
    const char *line = head + *pos, *eol = memchr(line, '\n', len - *pos);
    size_t n = eol ? (size_t)(eol - line) : len - *pos, i = 0;
    *pos += eol ? n + 1 : n;
    if (n && line[n - 1] == '\r') n--;
    if (n == 0 || is_ows((unsigned char)line[0])) continue;
    if (memchr(line, '\r', n) || memchr(line, '\0', n)) continue;
    while (i < n && is_tchar((unsigned char)line[i])) i++;
    if (i > 0 && i < n && line[i] == ':') return line;
  }
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *head = fz_dup(data, size);
  const char *end = head + size;
  size_t pos = 0, rpos = 0, last = 0, i;
  psk_header h;
  int fields = 0;

  while (psk_header_next(head, size, &pos, &h)) {
    const char *want = ref_next(head, size, &rpos);
    FUZZ_CHECK(++fields <= (int)size); /* a field costs a byte at least */
    FUZZ_CHECK(pos > last && pos <= size);
    last = pos;

    /* The name: within the input, at a line start, a token, then ':'. */
    FUZZ_CHECK(h.name >= head && h.name_len >= 1);
    FUZZ_CHECK(h.name + h.name_len < end);
    FUZZ_CHECK(h.name == head || h.name[-1] == '\n');
    for (i = 0; i < h.name_len; i++)
      FUZZ_CHECK(is_tchar((unsigned char)h.name[i]));
    FUZZ_CHECK(h.name[h.name_len] == ':');

    /* The value: after the colon, within the input (an empty value may
       point just past the last byte), on this line, trimmed. */
    FUZZ_CHECK(h.value > h.name + h.name_len);
    FUZZ_CHECK(h.value + h.value_len <= end);
    FUZZ_CHECK(h.value + h.value_len <= head + pos);
    for (i = 0; i < h.value_len; i++) {
      FUZZ_CHECK(h.value[i] != '\n');
      /* RFC 9112 2.2, RFC 9110 5.5: a bare CR (or a NUL) must be refused
         or replaced by SP; it must never reach the result table. */
      FUZZ_CHECK(h.value[i] != '\r');
      FUZZ_CHECK(h.value[i] != '\0');
    }
    if (h.value_len) {
      FUZZ_CHECK(!is_ows((unsigned char)h.value[0]));
      FUZZ_CHECK(!is_ows((unsigned char)h.value[h.value_len - 1]));
    }

    /* The same field as the reference walk, none skipped before it. */
    FUZZ_CHECK(want == h.name);
    FUZZ_CHECK(rpos == pos);
  }
  FUZZ_CHECK(pos == size);
  FUZZ_CHECK(ref_next(head, size, &rpos) == NULL); /* none dropped */
  /* At the end it stays at the end. */
  FUZZ_CHECK(psk_header_next(head, size, &pos, &h) == 0 && pos == size);
  free(head);
  return 0;
}
