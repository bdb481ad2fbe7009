/* psk_buf: bounded byte buffer (see psk_buf.h). No Lua, no libcurl. */
#include "psk_buf.h"

#include <stdlib.h>
#include <string.h>

void psk_buf_init(psk_buf *b, size_t cap) {
  b->data = NULL;
  b->len = 0;
  b->size = 0;
  /* One byte stays for the NUL, so len + n + 1 can never wrap. */
  b->cap = cap < (size_t)-1 ? cap : (size_t)-1 - 1;
}

int psk_buf_append(psk_buf *b, const char *p, size_t n) {
  size_t need;
  if (n > b->cap || b->len > b->cap - n) return PSK_TOO_LARGE;
  need = b->len + n + 1; /* room for the terminating NUL */
  if (need > b->size) {
    size_t size = b->size ? b->size : 256;
    char *data;
    while (size < need) size = size > ((size_t)-1) / 2 ? need : size * 2;
    data = realloc(b->data, size);
    if (!data) return PSK_NOMEM;
    b->data = data;
    b->size = size;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return PSK_OK;
}

int psk_buf_addstr(psk_buf *b, const char *s) {
  return psk_buf_append(b, s, strlen(s));
}

void psk_buf_clear(psk_buf *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

const char *psk_buf_cstr(const psk_buf *b) {
  return b->data ? b->data : "";
}

void psk_buf_free(psk_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->size = 0;
}
