/*
 * fuzz_headers: psk_header_next over an arbitrary response head, as
 * libcurl's header callback would collect it (status line, header lines,
 * CRLF or bare LF, obs-fold, junk), before and after psk_head_unfold
 * (which the transport runs on every head).
 *
 * Invariants: every field lies within the input and starts a line; its
 * name is a non-empty HTTP token followed by ':'; its value holds no CR,
 * LF or NUL (RFC 9110 5.5: invalid and dangerous; the binding hands values
 * to Lua as they are) and no leading or trailing optional whitespace; the
 * walk only moves forward and ends at the end of the input. A reference
 * walk, written from the header comment in psk_core.h, says which lines
 * are fields, so a field that is silently dropped is caught too.
 * Unfolding never grows the head, changes nothing in a head without a
 * line that starts with whitespace, is done once for all (a second pass
 * changes nothing), and finds no field the head did not have: the names
 * after it are those before it, in order, less any field whose fold
 * brought a CR or NUL into it.
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

/* Walks head with the invariants above; returns the fields found (at
   most max are stored in out). */
static int walk(const char *head, size_t size, psk_header *out, int max) {
  const char *end = head + size;
  size_t pos = 0, rpos = 0, last = 0, i;
  psk_header h;
  int fields = 0;

  while (psk_header_next(head, size, &pos, &h)) {
    const char *want = ref_next(head, size, &rpos);
    FUZZ_CHECK(++fields <= (int)size); /* a field costs a byte at least */
    if (fields <= max) out[fields - 1] = h;
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
  return fields;
}

#define MAX_KEPT 64

/* Whether a line of head starts with SP or HTAB. */
static int has_fold(const char *head, size_t size) {
  size_t i;
  for (i = 0; i < size; i++)
    if ((i == 0 || head[i - 1] == '\n') && is_ows((unsigned char)head[i]))
      return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *head = fz_dup(data, size), *flat = fz_dup(data, size), *again;
  psk_header before[MAX_KEPT], after[MAX_KEPT];
  int n1 = walk(head, size, before, MAX_KEPT), n2, i, j;
  size_t flen = psk_head_unfold(flat, size), alen;

  FUZZ_CHECK(flen <= size);
  if (!has_fold(head, size))
    FUZZ_CHECK(flen == size && memcmp(flat, head, size) == 0);
  n2 = walk(flat, flen, after, MAX_KEPT);
  FUZZ_CHECK(n2 <= n1);
  /* The names after are a subsequence of those before (greedy matching
     finds one when there is one). */
  if (n1 <= MAX_KEPT) {
    for (i = 0, j = 0; i < n1 && j < n2; i++)
      if (before[i].name_len == after[j].name_len &&
          memcmp(before[i].name, after[j].name, before[i].name_len) == 0)
        j++;
    FUZZ_CHECK(j == n2);
  }
  again = fz_dup((const uint8_t *)flat, flen);
  alen = psk_head_unfold(again, flen);
  FUZZ_CHECK(alen == flen && memcmp(again, flat, flen) == 0);
  free(again);
  free(flat);
  free(head);
  return 0;
}
