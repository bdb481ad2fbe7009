/*
 * lpsk_head.c: response headers as a Lua table, and the cache that makes
 * it cheap. A response head becomes the headers table of a result
 * (lpsk_push_head), read_response's headers become one too
 * (lpsk_push_given_headers), both looked up in any case
 * (lpsk_headers_index); the headers a result and a retry read (known) are
 * found on the way.
 *
 * The cache: the same server sends the same lines, most of them byte for
 * byte, answer after answer. A client keeps what the headers table of its
 * last answer was built from, line by line: such a line reuses what was
 * made of it, its lower-cased name and its value as Lua strings, kept in
 * the client's uservalue table (line i's name at 2i + 1, its value at
 * 2i + 2). A longer or later line is made anew each time. Its structs are
 * this file's; the rest of the binding holds a pointer, and only the
 * client's last call out clears its busy flag (lpsk_head_idle).
 */
#include <stdlib.h>
#include <string.h>

#include "lpsk.h"

#define HEAD_LINES 24     /* lines of a head the cache keeps */
#define HEAD_LINE_MAX 120 /* ... each at most this long */
#define HEAD_MAX_FIELDS 64 /* fields read in one walk (more: a lookup each) */

typedef struct head_line {
  unsigned char used;  /* the entry and its strings are whole */
  unsigned char field; /* the line is a header field */
  short known;         /* the field's K_*, or -1 */
  unsigned char dup;   /* its name came earlier in that head */
  unsigned short len, name_len, value_off, value_len;
  long long num;       /* an X-RateLimit-* value as a number, or -1 */
  char text[HEAD_LINE_MAX]; /* the line as sent, without its LF */
} head_line;

struct head_cache {
  int busy; /* a table is being built from it (lpsk_push_head) */
  head_line line[HEAD_LINES];
};

void lpsk_head_idle(head_cache *hc) {
  if (hc) hc->busy = 0;
}

void lpsk_head_free(head_cache *hc) { free(hc); }

/* The headers a result and a retry decision read, in the order of K_*,
   their lengths counted by the compiler. */
#define KNOWN(s) {(s), sizeof(s) - 1}
static const struct {
  const char *name;
  size_t len;
} known_names[K_N] = {
    KNOWN("x-ratelimit-limit"),    KNOWN("x-ratelimit-remaining"),
    KNOWN("x-ratelimit-reset"),    KNOWN("x-periskope-trace-id"),
    KNOWN("retry-after"),          KNOWN("date")};
#undef KNOWN

/* Pushes s lower-cased. [-0, +1, m] */
static void push_lower(lua_State *L, const char *s, size_t n) {
  char small[128];
  if (n <= sizeof small) {
    size_t i;
    for (i = 0; i < n; i++)
      small[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
    lua_pushlstring(L, small, n);
  } else {
    luaL_Buffer b;
    size_t i;
    luaL_buffinit(L, &b);
    for (i = 0; i < n; i++)
      luaL_addchar(&b, (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i]);
    luaL_pushresult(&b);
  }
}

/* With a lower-cased name and a value on top of the stack, stores them in
   the headers table at t. A repeated name's values gather in parts (a
   table made at the first repeat, in that stack slot: name -> array of
   values) and join_parts joins each name's once, with ", " as HTTP
   allows: joining at every repeat would copy the growing value again
   each time, quadratic in a head of many repeats. [-2, +0, m] */
static void add_header(lua_State *L, int t, int parts) {
  lua_pushvalue(L, -2);
  lua_rawget(L, t); /* name value old */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_rawset(L, t);
    return;
  }
  if (lua_isnil(L, parts)) {
    lua_newtable(L);
    lua_replace(L, parts);
  }
  lua_pushvalue(L, -3);
  lua_rawget(L, parts); /* name value old list */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_createtable(L, 4, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1); /* name value list: { old } */
    lua_pushvalue(L, -3);
    lua_pushvalue(L, -2);
    lua_rawset(L, parts);
  } else {
    lua_remove(L, -2); /* name value list */
  }
  lua_insert(L, -2); /* name list value */
  lua_rawseti(L, -2, (int)psk_rawlen(L, -2) + 1);
  lua_pop(L, 2);
}

/* Sets each repeated name of parts (see add_header) to its values
   joined with ", ". [-0, +0, m] */
static void join_parts(lua_State *L, int t, int parts) {
  if (lua_isnil(L, parts)) return;
  lua_pushnil(L);
  while (lua_next(L, parts)) { /* name list */
    int list = lua_gettop(L), i, n = (int)psk_rawlen(L, list);
    luaL_Buffer b;
    lua_pushvalue(L, list - 1); /* name list name */
    luaL_buffinit(L, &b);
    for (i = 1; i <= n; i++) {
      if (i > 1) luaL_addlstring(&b, ", ", 2);
      lua_rawgeti(L, list, i);
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b); /* name list name joined */
    lua_rawset(L, t);
    lua_pop(L, 1); /* the name stays for lua_next */
  }
}

/* Pushes an empty headers table, sized for n names, with the
   case-insensitive metatable (kept in the module state, upvalue 1). */
static int new_headers(lua_State *L, int n) {
  lua_createtable(L, 0, n);
  lua_rawgeti(L, lua_upvalueindex(1), STATE_HEADERS_MT);
  lua_setmetatable(L, -2);
  return lua_gettop(L);
}


/* Parses the X-RateLimit-* values of k once, for the result and the
   pacer. */
static void known_numbers(known *k) {
  int i;
  for (i = K_LIMIT; i <= K_RESET; i++)
    if (!k->v[i] || psk_parse_uint(k->v[i], k->n[i], &k->num[i]) != PSK_OK)
      k->num[i] = -1;
}

static int ieq_n(const char *a, size_t n, const char *b, size_t m) {
  size_t i;
  if (n != m) return 0;
  for (i = 0; i < n; i++) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = (char)(x + 32);
    if (y >= 'A' && y <= 'Z') y = (char)(y + 32);
    if (x != y) return 0;
  }
  return 1;
}

/* The K_* of a header name in any case, or -1. */
static int known_index(const char *name, size_t n) {
  int i;
  for (i = 0; i < K_N; i++)
    if (n == known_names[i].len && ieq_n(name, n, known_names[i].name, n))
      return i;
  return -1;
}

/* A field of the head being read, and what of it the cache holds. */
typedef struct head_field {
  psk_header h;
  long long num; /* an X-RateLimit-* value as a whole number, or -1 */
  int line;   /* its cache entry, or -1 */
  char dup;   /* its name came earlier */
  char name;  /* the entry's name string is this field's */
  char value; /* ... and so is its value string */
} head_field;

/* Reads the line at p (avail bytes left in the head; *used gets the
   bytes it took, its LF included) as line number i of a head: whether it
   is a field (then filled into f, its name's K_* in *kn), through the
   cache entry when the line is the one kept there. same: the
   fields so far had the names their entries had (so each entry's dup
   still holds); cleared when not. A new line's entry stays unused until
   the table has its strings. */
static int read_line(head_cache *hc, int i, const char *p, size_t avail,
                     size_t *used, head_field *f, int *kn, int *same) {
  head_line *e = hc && i < HEAD_LINES ? &hc->line[i] : NULL;
  const char *eol;
  psk_header h;
  size_t pos = 0, n;
  int field;
  f->line = -1;
  f->name = f->value = 0;
  /* The entry's line, then its LF: no need to look for the LF first. */
  if (e && e->used && e->len < avail && p[e->len] == '\n' &&
      memcmp(e->text, p, e->len) == 0) {
    *used = e->len + 1u;
    if (!e->field) return 0;
    f->h.name = p;
    f->h.name_len = e->name_len;
    f->h.value = p + e->value_off;
    f->h.value_len = e->value_len;
    f->line = i;
    f->name = f->value = 1;
    f->dup = (char)e->dup; /* valid while *same; else the caller checks */
    f->num = e->num;
    *kn = e->known;
    return 1;
  }
  eol = memchr(p, '\n', avail);
  n = eol ? (size_t)(eol - p) : avail;
  *used = eol ? n + 1 : n;
  /* A line with the entry's name (and colon): only its value is new.
     Else psk_header_next reads it, one line, as it would in a head. */
  if (e && e->used && e->field && n > e->name_len &&
      memcmp(e->text, p, e->name_len + 1u) == 0)
    field = psk_header_field(p, n, e->name_len, &h);
  else
    field = psk_header_next(p, n, &pos, &h);
  if (e) {
    int old_field = e->used && e->field;
    f->name = field && old_field && e->name_len == h.name_len &&
              memcmp(e->text, h.name, h.name_len) == 0;
    if (!f->name && (field || old_field)) *same = 0;
    if (f->name) {
      *kn = e->known;
      f->dup = (char)e->dup;
    }
    e->used = 0;
    if (n <= HEAD_LINE_MAX) {
      memcpy(e->text, p, n);
      e->len = (unsigned short)n;
      e->field = (unsigned char)field;
      if (!field)
        e->used = 1; /* no strings to wait for */
      else if (h.name_len <= 0xffff && h.value_len <= 0xffff) {
        f->line = i;
        e->name_len = (unsigned short)h.name_len;
        e->value_off = (unsigned short)(h.value - p);
        e->value_len = (unsigned short)h.value_len;
      }
    }
  } else {
    *same = 0;
  }
  if (!field) return 0;
  if (!f->name) *kn = known_index(h.name, h.name_len);
  f->num = -1;
  if (*kn >= K_LIMIT && *kn <= K_RESET &&
      psk_parse_uint(h.value, h.value_len, &f->num) != PSK_OK)
    f->num = -1;
  if (e && f->line >= 0) {
    e->known = (short)*kn;
    e->num = f->num;
  }
  f->h = h;
  return 1;
}

/* Pushes the lower-cased name (which = 1) or the value (2) of field f:
   the cache entry's string when it is this field's, else a new one, kept
   in the entry. [-0, +1, m] */
static void push_part(lua_State *L, const head_field *f, int uv, int which) {
  int key = 2 * f->line + which;
  if (f->line >= 0 && (which == 1 ? f->name : f->value)) {
    lua_rawgeti(L, uv, key);
    return;
  }
  if (which == 1)
    push_lower(L, f->h.name, f->h.name_len);
  else
    lua_pushlstring(L, f->h.value, f->h.value_len);
  if (f->line >= 0) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, uv, key);
  }
}

/* One walk in C keeps up to HEAD_MAX_FIELDS fields, finds the known
   headers and repeated names, and sizes the table; only a repeated name
   pays for a Lua lookup. A head with more fields is walked again for the
   rest. With the cache, a line that comes back byte for byte is neither
   read again nor made into strings again. See lpsk.h for who may clear
   the cache's busy flag. */
void lpsk_push_head(lua_State *L, const psk_buf *head, known *k,
                    head_cache **cache, int uv) {
  const char *text = psk_buf_cstr(head);
  head_field f[HEAD_MAX_FIELDS];
  psk_header h;
  size_t pos = 0;
  int count = 0, kept, i, j, t, parts, line, same = 1, repeated_known = 0;
  head_cache *hc;
  /* Made at the first answer; out of memory, the table is made without
     it. Kept out of the userdata, whose size the collector would count. */
  if (!*cache) *cache = calloc(1, sizeof **cache);
  hc = *cache;
  if (hc && hc->busy) hc = NULL; /* a table is being built from it */
  if (hc) hc->busy = 1;
  memset(k, 0, sizeof *k);
  k->num[K_LIMIT] = k->num[K_REMAINING] = k->num[K_RESET] = -1;
  for (line = 0; pos < head->len; line++) {
    head_field *g = count < HEAD_MAX_FIELDS ? &f[count] : NULL;
    head_field spare;
    size_t used = 0;
    int kn = -1, field = read_line(hc, line, text + pos, head->len - pos,
                                   &used, g ? g : &spare, &kn, &same);
    pos += used;
    if (!field) continue;
    if (!g) g = &spare;
    if (kn >= 0) {
      if (k->v[kn]) repeated_known = 1;
      k->v[kn] = g->h.value;
      k->n[kn] = g->h.value_len;
      if (kn <= K_RESET) k->num[kn] = g->num;
    }
    if (count < HEAD_MAX_FIELDS && !(same && g->line >= 0)) {
      g->dup = 0;
      for (j = 0; j < count && !g->dup; j++)
        g->dup = (char)(f[j].h.name_len == g->h.name_len &&
                        ieq_n(g->h.name, g->h.name_len, f[j].h.name,
                              f[j].h.name_len));
    }
    if (hc && g->line >= 0) hc->line[g->line].dup = (unsigned char)g->dup;
    count++;
  }
  t = new_headers(L, count);
  lua_pushnil(L); /* parts: made at the first repeated name */
  parts = lua_gettop(L);
  kept = count < HEAD_MAX_FIELDS ? count : HEAD_MAX_FIELDS;
  for (i = 0; i < kept; i++) {
    push_part(L, &f[i], uv, 1);
    push_part(L, &f[i], uv, 2);
    if (f[i].dup)
      add_header(L, t, parts); /* joined with the earlier value below */
    else
      lua_rawset(L, t);
    if (hc && f[i].line >= 0) hc->line[f[i].line].used = 1;
  }
  if (count > HEAD_MAX_FIELDS) { /* an unusually long head: the rest by lookup */
    pos = 0;
    for (i = 0; psk_header_next(text, head->len, &pos, &h); i++) {
      if (i < kept) continue;
      push_lower(L, h.name, h.name_len);
      lua_pushlstring(L, h.value, h.value_len);
      add_header(L, t, parts);
    }
  }
  join_parts(L, t, parts);
  lua_settop(L, t);
  if (hc) hc->busy = 0;
  /* A repeated known header counts as its joined value, as in the table. */
  if (repeated_known) lpsk_known_from_table(L, t, k);
}

/* headers[k] for any case of k: the table's keys are lower-case. */
int lpsk_headers_index(lua_State *L) {
  size_t n;
  const char *k;
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  k = lua_tolstring(L, 2, &n);
  push_lower(L, k, n);
  lua_rawget(L, 1);
  return 1;
}

/* The string value of header name (lower-case) in headers table t, or
   NULL; it stays alive as long as the table. [-0, +0, -] */
static const char *header_str(lua_State *L, int t, const char *name,
                              size_t *len) {
  const char *s = NULL;
  lua_pushstring(L, name);
  lua_rawget(L, t);
  if (lua_type(L, -1) == LUA_TSTRING) s = lua_tolstring(L, -1, len);
  lua_pop(L, 1);
  return s;
}

/* Fills k from headers table h (lower-case keys). */
void lpsk_known_from_table(lua_State *L, int h, known *k) {
  int i;
  for (i = 0; i < K_N; i++)
    k->v[i] = header_str(L, h, known_names[i].name, &k->n[i]);
  known_numbers(k);
}

long long lpsk_known_int(const known *k, int i) { return k->num[i]; }

/* Pushes the headers table of read_response's headers argument at arg
   (a table, or none). [-0, +1, v] */
int lpsk_push_given_headers(lua_State *L, int arg) {
  int h, parts;
  h = new_headers(L, 0);
  lua_pushnil(L); /* parts (see add_header) */
  parts = lua_gettop(L);
  if (lua_istable(L, arg)) {
    lua_pushnil(L);
    while (lua_next(L, arg)) {
      size_t n;
      const char *k;
      int v = lua_gettop(L);
      if (lua_type(L, -2) != LUA_TSTRING)
        return luaL_argerror(L, arg, "header names must be strings");
      k = lua_tolstring(L, -2, &n);
      if (lua_type(L, v) == LUA_TTABLE) { /* several values: one each */
        int i, len = (int)psk_rawlen(L, v);
        for (i = 1; i <= len; i++) {
          lua_rawgeti(L, v, i);
          if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            return luaL_argerror(
                L, arg, lua_pushfstring(L, "header '%s' values must be strings", k));
          push_lower(L, k, n);
          lua_insert(L, -2);
          lua_tostring(L, -1); /* a number becomes its string */
          add_header(L, h, parts);
        }
      } else if (lua_type(L, v) == LUA_TSTRING ||
                 lua_type(L, v) == LUA_TNUMBER) {
        push_lower(L, k, n);
        lua_pushvalue(L, v);
        lua_tostring(L, -1);
        add_header(L, h, parts);
      } else {
        return luaL_argerror(
            L, arg,
            lua_pushfstring(L,
                            "header '%s' must be a string or an array of "
                            "strings, %s",
                            k, lpsk_got(L, v)));
      }
      lua_settop(L, v - 1); /* keep the key for lua_next */
    }
  }
  join_parts(L, h, parts);
  lua_settop(L, h);
  return h;
}
