/*
 * lpsk_result.c: requests and answers as Lua tables. build_pin's request
 * table; the result table that pin, pin_many and read_response all end
 * in (lpsk_push_result); response headers as a table looked up in any
 * case; and read_response, which turns an answer the caller got itself
 * into that same result.
 */
#include <stdio.h>
#include <string.h>

#include "lpsk.h"

void lpsk_build_request(lua_State *L, Client *c, psk_request *r,
                        const pin_args *a) {
  if (psk_request_build(r, &c->cfg, a->id, a->idlen, a->pin, a->time,
                        a->has_phone ? a->phone : NULL) != PSK_OK)
    luaL_error(L, "periskope: out of memory");
}

void lpsk_push_request_headers(lua_State *L, const psk_request *r,
                               int redact) {
  int i;
  lua_createtable(L, 0, r->nheaders);
  for (i = 0; i < r->nheaders; i++) {
    if (redact && strcmp(r->headers[i].name, "Authorization") == 0)
      lua_pushliteral(L, "Bearer ***");
    else
      lua_pushstring(L, r->headers[i].value);
    lua_setfield(L, -2, r->headers[i].name);
  }
}

/* Client:build_pin(args): the request pin would send, as a table. */
int lpsk_build_pin(lua_State *L) {
  Client *c = lpsk_checkclient(L);
  pin_args a;
  lpsk_check_pin_args(L, 2, 2, "", &a);
  lpsk_build_request(L, c, &c->req, &a);
  lua_pop(L, 1); /* message_id: the request holds its own copy now */
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "POST");
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, psk_buf_cstr(&c->req.url), c->req.url.len);
  lua_setfield(L, -2, "url");
  lpsk_push_request_headers(L, &c->req, 0);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, psk_buf_cstr(&c->req.body), c->req.body.len);
  lua_setfield(L, -2, "body");
  return 1;
}

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

static const char *const known_names[K_N] = {
    "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
    "x-periskope-trace-id", "retry-after", "date"};

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

#define HEAD_MAX_FIELDS 64

static const size_t known_lens[K_N] = {17, 21, 17, 20, 11, 4};

/* The K_* of a header name in any case, or -1. */
static int known_index(const char *name, size_t n) {
  int i;
  for (i = 0; i < K_N; i++)
    if (n == known_lens[i] && ieq_n(name, n, known_names[i], n)) return i;
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

/* Pushes the headers table of a response head and fills k from it. One
   walk in C keeps up to HEAD_MAX_FIELDS fields, finds the known headers
   and repeated names, and sizes the table; only a repeated name pays for
   a Lua lookup. A head with more fields is walked again for the rest.
   With a cache, a line that comes back byte for byte is neither read
   again nor made into strings again. The cache is busy while the table
   is built: the allocations may run a finalizer, which may pin on the
   same client; that pin goes without it. A raise (out of memory) leaves
   it busy, so the client goes without it until its calls are over
   (run_busy). [-0, +1, m] */
void lpsk_push_head(lua_State *L, const psk_buf *head, known *k,
                    head_cache *hc, int uv) {
  const char *text = psk_buf_cstr(head);
  head_field f[HEAD_MAX_FIELDS];
  psk_header h;
  size_t pos = 0;
  int count = 0, kept, i, j, t, parts, line, same = 1, repeated_known = 0;
  if (hc && hc->busy) hc = NULL;
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
  for (i = 0; i < K_N; i++) k->v[i] = header_str(L, h, known_names[i], &k->n[i]);
  known_numbers(k);
}

long long lpsk_known_int(const known *k, int i) { return k->num[i]; }

static const char *const result_keys[RK_N] = {
    "ok", "status", "headers", "body", "rate_limit", "trace_id",
    "error", "attempts", "limit", "remaining", "reset",
    "x-periskope-trace-id"};

void lpsk_result_keys(lua_State *L, int state) {
  int i;
  for (i = 0; i < RK_N; i++) {
    lua_pushstring(L, result_keys[i]);
    lua_rawseti(L, state, STATE_KEYS + i);
  }
}

/* Pushes field name rk (the module state is upvalue 1); lua_rawset(L,
   -3) then sets it, once its value is pushed. [-0, +1, -] */
static void push_key(lua_State *L, int rk) {
  lua_rawgeti(L, lua_upvalueindex(1), STATE_KEYS + rk);
}

/* Whether an X-RateLimit-* header holds an integer: the result then has
   a rate_limit table. */
static int has_rate_limit(const known *k) {
  return k->num[K_LIMIT] >= 0 || k->num[K_REMAINING] >= 0 ||
         k->num[K_RESET] >= 0;
}

/* Pushes the rate_limit table of the X-RateLimit-* headers that hold an
   integer (has_rate_limit). [-0, +1, m] */
static void push_rate_limit(lua_State *L, const known *k) {
  int i;
  lua_createtable(L, 0, 3);
  for (i = K_LIMIT; i <= K_RESET; i++) {
    long long v = lpsk_known_int(k, i);
    if (v >= 0) {
      push_key(L, RK_LIMIT + (i - K_LIMIT));
      lua_pushinteger(L, (lua_Integer)v);
      lua_rawset(L, -3);
    }
  }
}

/* Pushes the error text of a non-2xx answer: the JSON body's "message" (or
   "error") field, decoded by lua-cjson under pcall, else "HTTP <status>".
   [-0, +1, m] */
/* lua_pcall for one result, except that running out of memory is raised
   again: it says nothing about lua-cjson or the body, and a result built
   around it would be wrong (or, cached, wrong for good). [-(n+1), +1, m] */
static int pcall_keep_memory_errors(lua_State *L, int nargs) {
  int st = lua_pcall(L, nargs, 1, 0);
  if (st == LUA_ERRMEM) lua_error(L);
  return st;
}

static void push_error_text(lua_State *L, long status, const char *body,
                            size_t blen) {
  int top = lua_gettop(L);
  if (blen > 0) {
    lua_getfield(L, lua_upvalueindex(1), "cjson_decode");
    if (lua_isnil(L, -1)) {
      /* First use in this state: require "cjson" under pcall, cache the
         decoder, or false when lua-cjson is missing. */
      lua_pop(L, 1);
      lua_getglobal(L, "require");
      lua_pushliteral(L, "cjson");
      if (pcall_keep_memory_errors(L, 1) == LUA_OK && lua_istable(L, -1))
        lua_getfield(L, -1, "decode");
      else
        lua_pushboolean(L, 0);
      if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
      }
      lua_pushvalue(L, -1);
      lua_setfield(L, lua_upvalueindex(1), "cjson_decode");
    }
    if (lua_isfunction(L, -1)) {
      lua_pushlstring(L, body, blen);
      if (pcall_keep_memory_errors(L, 1) == LUA_OK && lua_istable(L, -1)) {
        int j = lua_gettop(L);
        static const char *const fields[] = {"message", "error"};
        int k;
        for (k = 0; k < 2; k++) {
          lua_getfield(L, j, fields[k]);
          if (lua_istable(L, -1)) { /* {"error": {"message": "..."}} */
            lua_getfield(L, -1, "message");
            lua_remove(L, -2);
          }
          if (lua_type(L, -1) == LUA_TSTRING) {
            lua_replace(L, top + 1);
            lua_settop(L, top + 1);
            return;
          }
          lua_pop(L, 1);
        }
      }
    }
    lua_settop(L, top);
  }
  lua_pushfstring(L, "HTTP %d", (int)status);
}

/* The result builder every path ends in: pushes the result table for an
   answer with headers table h, whose known headers are k. [-0, +1, m] */
void lpsk_push_result(lua_State *L, long status, int h, const known *k,
                      const char *body, size_t blen, int attempts) {
  int ok = status >= 200 && status < 300;
  /* Sized for its fields: ok, status, headers, body, attempts, and
     rate_limit, trace_id and error when present. */
  lua_createtable(L, 0, 5 + has_rate_limit(k) + (k->v[K_TRACE] != NULL) + !ok);
  push_key(L, RK_OK);
  lua_pushboolean(L, ok);
  lua_rawset(L, -3);
  push_key(L, RK_STATUS);
  lua_pushinteger(L, (lua_Integer)status);
  lua_rawset(L, -3);
  push_key(L, RK_HEADERS);
  lua_pushvalue(L, h);
  lua_rawset(L, -3);
  push_key(L, RK_BODY);
  lua_pushlstring(L, body, blen);
  lua_rawset(L, -3);
  if (has_rate_limit(k)) {
    push_key(L, RK_RATE_LIMIT);
    push_rate_limit(L, k);
    lua_rawset(L, -3);
  }
  if (k->v[K_TRACE]) { /* the string the headers table holds */
    push_key(L, RK_TRACE_ID);
    push_key(L, RK_TRACE_HEADER);
    lua_rawget(L, h);
    lua_rawset(L, -3);
  }
  if (!ok) {
    push_key(L, RK_ERROR);
    push_error_text(L, status, body, blen);
    lua_rawset(L, -3);
  }
  push_key(L, RK_ATTEMPTS);
  lua_pushinteger(L, attempts);
  lua_rawset(L, -3);
}

/* periskope.read_response(status, headers, body) */
int lpsk_read_response(lua_State *L) {
  known kh;
  long long status;
  size_t blen = 0;
  const char *body;
  int h, parts;
  if (!psk_tointegral(L, 1, &status) || status < 100 || status > 599)
    return luaL_argerror(
        L, 1, lua_pushfstring(L, "status must be an integer from 100 to 599, %s",
                              lpsk_got(L, 1)));
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  body = luaL_optlstring(L, 3, "", &blen);
  h = new_headers(L, 0);
  lua_pushnil(L); /* parts (see add_header) */
  parts = lua_gettop(L);
  if (lua_istable(L, 2)) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      size_t n;
      const char *k;
      int v = lua_gettop(L);
      if (lua_type(L, -2) != LUA_TSTRING)
        return luaL_argerror(L, 2, "header names must be strings");
      k = lua_tolstring(L, -2, &n);
      if (lua_type(L, v) == LUA_TTABLE) { /* several values: one each */
        int i, len = (int)psk_rawlen(L, v);
        for (i = 1; i <= len; i++) {
          lua_rawgeti(L, v, i);
          if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            return luaL_argerror(
                L, 2, lua_pushfstring(L, "header '%s' values must be strings", k));
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
            L, 2,
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
  lpsk_known_from_table(L, h, &kh);
  lpsk_push_result(L, (long)status, h, &kh, body, blen, 1);
  return 1;
}

