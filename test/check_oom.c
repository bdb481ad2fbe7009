/*
 * check_oom: periskope with the n-th allocation failing, for n = 1, 2, ...
 * until a run completes without reaching n. libcurl's "torture" test,
 * applied to the binding.
 *
 * Three allocators are counted as one sequence: Lua's (a lua_State made
 * with lua_newstate and the allocator below), libcurl's (given through
 * curl_global_init_mem before the module's own curl_global_init, which
 * then only counts a user) and the module's own C allocations (malloc,
 * calloc, realloc and strdup, wrapped at link time with --wrap, so only
 * the module's objects and this driver see the wrappers). When Lua
 * retries a failed allocation after its emergency collection, the retry
 * fails too: otherwise most of Lua's failures would never reach a raise.
 *
 * Each scenario is a Lua chunk that returns two functions: run, called
 * with the failure armed, and after, called with failures off. A run must
 * end in a memory error (Lua's, or "periskope: out of memory"), in nil,
 * "periskope: ...", kind, or in success (the failure was absorbed); never
 * in another error, a crash or an abort. after must then succeed: the
 * client pins again, or was closed cleanly. Built with ASan, whose leak
 * check at exit fails the run for any leak.
 *
 * A few scenarios are C, for core parts that no Lua call reaches yet: the
 * sans-I/O HTTP/1.1 reader and request framer (psk_h1). Their run reads
 * answers of every framing through fresh readers, fed in pieces, and
 * frames a request; each must end as it would with memory to spare, or
 * (the one whose allocation failed) in PSK_H1_FAIL with kind network and
 * "out of memory", or PSK_NOMEM from the framer: the "nil+kind" of C.
 * after resets the reader that failed and reads an answer with it.
 *
 * Run by make check-oom under spec/support/run_with_server.lua (the local
 * Periskope server: PERISKOPE_BASE_URL, _API_KEY, _PHONE); it starts a
 * redis-server of its own on a free 127.0.0.1 port for the Redis limiter
 * and stops it by pid. CHECK_OOM_SCENARIO=<name> runs one scenario.
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

#include "psk_h1.h"

int luaopen_periskope(lua_State *L);

/* The real allocator, under the module's wrappers (ld --wrap). */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

/* ---------------------------------------------------------------- */
/* failing the n-th allocation                                       */

static int g_armed;      /* count (and fail) allocations now */
static long g_count;     /* allocations counted in this run */
static long g_fail_at;   /* the one to fail (0: none) */
static int g_failed;     /* this run had its failure */
static int g_retry;      /* a Lua allocation just failed: fail its retry */
static const void *g_retry_ptr;
static size_t g_retry_size;

/* Distinct call stacks of the injected failures: a hash of each. */
#define MAX_STACKS 65536
static uint64_t g_stacks[MAX_STACKS];
static int g_nstacks;

static void note_stack(void) {
  void *frames[16];
  int n = backtrace(frames, 16), i;
  uint64_t h = 1469598103934665603ULL;
  for (i = 2; i < n; i++) { /* past this and the allocator */
    h ^= (uint64_t)(uintptr_t)frames[i];
    h *= 1099511628211ULL;
  }
  for (i = 0; i < g_nstacks; i++)
    if (g_stacks[i] == h) return;
  if (g_nstacks < MAX_STACKS) g_stacks[g_nstacks++] = h;
}

/* Whether this allocation fails. */
static int fail_now(void) {
  if (!g_armed) return 0;
  if (++g_count != g_fail_at) return 0;
  g_failed = 1;
  note_stack();
  return 1;
}

static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  /* Lua assumes a block that shrinks never fails to. */
  if (ptr && nsize <= osize) return __real_realloc(ptr, nsize);
  if (g_armed && g_retry && ptr == g_retry_ptr && nsize == g_retry_size) {
    g_retry = 0; /* the retry after the emergency collection */
    return NULL;
  }
  g_retry = 0;
  if (fail_now()) {
    g_retry = 1;
    g_retry_ptr = ptr;
    g_retry_size = nsize;
    return NULL;
  }
  return __real_realloc(ptr, nsize);
}

static void *c_malloc(size_t n) { return fail_now() ? NULL : __real_malloc(n); }
static void c_free(void *p) { free(p); }
static void *c_realloc(void *p, size_t n) {
  return fail_now() ? NULL : __real_realloc(p, n);
}
static char *c_strdup(const char *s) {
  return fail_now() ? NULL : __real_strdup(s);
}
static void *c_calloc(size_t n, size_t m) {
  return fail_now() ? NULL : __real_calloc(n, m);
}

void *__wrap_malloc(size_t n) { return c_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { return c_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { return c_realloc(p, n); }
char *__wrap_strdup(const char *s) { return c_strdup(s); }

/* ---------------------------------------------------------------- */
/* the scenarios                                                     */

/* Every chunk gets p (the module), E (the server's environment) and
   REDIS_PORT, and returns run, after. */
static const char PRELUDE[] =
    "local p = require 'periskope'\n"
    "local E = { base_url = os.getenv('PERISKOPE_BASE_URL'),\n"
    "  api_key = os.getenv('PERISKOPE_API_KEY'),\n"
    "  phone = os.getenv('PERISKOPE_PHONE') }\n"
    "local REDIS_PORT = tonumber(os.getenv('CHECK_OOM_REDIS_PORT'))\n"
    "local function client(o)\n"
    "  local opts = { retries = 0, timeout = 2, connect_timeout = 2,\n"
    "    on_event = function() end }\n"
    "  for k, v in pairs(o or {}) do opts[k] = v end\n"
    "  return p.new(opts)\n"
    "end\n"
    "local function ok204(c, id)\n"
    "  local r = assert(c:pin { message_id = id })\n"
    "  assert(r.status == 204, r.status)\n"
    "end\n"
    "local function many_ok(c, l)\n"
    "  local r = c:pin_many(l)\n"
    "  for i = 1, #l do assert(r[i].ok, i) end\n"
    "  c:close()\n"
    "end\n";

/* A scenario whose chunk is NULL is in C, found by name in c_scenarios
   (below, with the C it tests). */
static const struct scenario {
  const char *name;
  const char *chunk;
} scenarios[] = {
    {"pin",
     "local c = client {}\n"
     "return function() return c:pin { message_id = 'oom@1', time = 7 } end,\n"
     "  function() ok204(c, 'after'); c:close() end\n"},
    {"pin_error_body", /* a 401 with a JSON body: the error text */
     "local c = client { api_key = 'not-the-key' }\n"
     "return function() return c:pin { message_id = 'oom' } end,\n"
     "  function()\n"
     "    local r = assert(c:pin { message_id = 'after' })\n"
     "    assert(r.status == 401 and r.error == 'Unauthorized', r.error)\n"
     "    c:close()\n"
     "  end\n"},
    {"pin_many",
     "local c = client {}\n"
     "local l = { { message_id = 'a' }, { message_id = 'b', pin = false },\n"
     "  { message_id = 'c', phone = 'phone-oom' } }\n"
     "return function() return c:pin_many(l, { concurrency = 2 }) end,\n"
     "  function() many_ok(c, l) end\n"},
    {"hooks", /* a nested pin, then a close, from the hook */
     "local c, nested\n"
     "c = client { on_event = function(ev)\n"
     "  if ev.type == 'request' and not nested then\n"
     "    nested = true; c:pin { message_id = 'inner' }\n"
     "  elseif ev.type == 'response' then c:close() end\n"
     "end }\n"
     "return function() return c:pin { message_id = 'outer' } end,\n"
     "  function()\n"
     "    -- closed by its hook, or (failed before that) still usable\n"
     "    if tostring(c) ~= 'periskope.Client (closed)' then ok204(c, 'again') end\n"
     "    ok204(client {}, 'after')\n"
     "  end\n"},
    {"hooks_pin_many", /* a pin and a pin_many nested in pin_many's hook */
     "local c, started\n"
     "c = client { on_event = function(ev)\n"
     "  if ev.type == 'response' and ev.index == 1 and not started then\n"
     "    started = true\n"
     "    c:pin { message_id = 'inner' }\n"
     "    c:pin_many { { message_id = 'n1' }, { message_id = 'n2' } }\n"
     "  end\n"
     "end }\n"
     "local l = { { message_id = 'a' }, { message_id = 'b' }, { message_id = 'c' } }\n"
     "return function() return c:pin_many(l, { concurrency = 2 }) end,\n"
     "  function() many_ok(c, l) end\n"},
    {"pin_job", /* the job driven from Lua, its exchange by perform */
     "local c = client {}\n"
     "local function drive(id)\n"
     "  local job = c:pin_job { message_id = id, time = 7 }\n"
     "  local a, x, y, z = job:step()\n"
     "  while a ~= 'done' do\n"
     "    if a == 'send' then a, x, y, z = job:step(p.perform(x))\n"
     "    else a, x, y, z = job:step() end\n"
     "  end\n"
     "  return x, y, z\n"
     "end\n"
     "return function() return drive('oom@job') end,\n"
     "  function()\n"
     "    local r = assert(drive('after'))\n"
     "    assert(r.status == 204, r.status)\n"
     "    c:close()\n"
     "  end\n"},
    {"build_pin",
     "local c = client {}\n"
     "return function()\n"
     "    return c:build_pin { message_id = 'a@b', time = 30, phone = 'phone-x' }\n"
     "  end,\n"
     "  function() assert(c:build_pin { message_id = 'x' }.url); c:close() end\n"},
    {"read_response",
     "return function()\n"
     "    return p.read_response(429, { ['Retry-After'] = '1',\n"
     "      ['X-RateLimit-Limit'] = { '10', '20' }, ['X-RateLimit-Reset'] = 5 },\n"
     "      '{\"message\":\"slow down\"}')\n"
     "  end,\n"
     "  function()\n"
     "    assert(p.read_response(503, {}, '{\"error\":{\"message\":\"x\"}}').error == 'x')\n"
     "  end\n"},
    {"options", /* new and configure with every option */
     "local opts = { api_key = E.api_key, phone = '+91 98745 32456',\n"
     "  base_url = E.base_url .. '/', timeout = 3, connect_timeout = 2,\n"
     "  retries = 1, max_retry_wait = 5, max_body = 4096,\n"
     "  ca_file = '/etc/ssl/certs/ca-certificates.crt', user_agent = 'oom/1',\n"
     "  on_event = function() end,\n"
     "  limiter = p.limiter.redis { port = REDIS_PORT, prefix = 'oom:' } }\n"
     "return function()\n"
     "    local c = p.new(opts)\n"
     "    p.configure(opts)\n"
     "    return c\n"
     "  end,\n"
     "  function()\n"
     "    ok204(p.new(opts), 'after')\n"
     "    p.configure(opts)\n"
     "    assert(p.pin { message_id = 'after' }.status == 204)\n"
     "  end\n"},
    {"limiter_shared_dict", /* a Lua table standing in for ngx.shared */
     "local store = {}\n"
     "local dict = {}\n"
     "function dict:get(k) return store[k] end\n"
     "function dict:set(k, v) store[k] = v; return true end\n"
     "function dict:add(k, v)\n"
     "  if store[k] ~= nil then return false, 'exists' end\n"
     "  store[k] = v; return true\n"
     "end\n"
     "function dict:delete(k) store[k] = nil; return true end\n"
     "local c = client { limiter = p.limiter.shared_dict(dict) }\n"
     "return function() return c:pin { message_id = 'oom' } end,\n"
     "  function()\n"
     "    -- nginx expires a lock a failed run left (3 s); the table forgets it\n"
     "    for k in pairs(store) do if k:find(':lock$') then store[k] = nil end end\n"
     "    ok204(c, 'after'); c:close()\n"
     "  end\n"},
    {"limiter_redis",
     "local c = client { limiter = p.limiter.redis { port = REDIS_PORT,\n"
     "  prefix = 'oom:', timeout = 1 } }\n"
     "return function() return c:pin { message_id = 'oom' } end,\n"
     "  function() ok204(c, 'after'); c:close() end\n"},
    {"h1_reader", NULL},
    {"h1_request", NULL},
};

/* ---------------------------------------------------------------- */
/* one run                                                           */

enum { R_MEMORY, R_NIL_KIND, R_ABSORBED, R_BAD };
static const char *const result_names[] = {"memory error", "nil+kind",
                                           "absorbed", "UNEXPECTED"};

static int is_memory_error(lua_State *L, int status) {
  const char *m;
  if (status == LUA_ERRMEM) return 1;
  m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
  return strstr(m, "not enough memory") != NULL ||
         strstr(m, "periskope: out of memory") != NULL;
}

/* Classifies what run returned (status, and its results from base + 1). */
static int classify(lua_State *L, int status, int base, char *why,
                    size_t whylen) {
  if (status != LUA_OK) {
    if (is_memory_error(L, status)) return R_MEMORY;
    snprintf(why, whylen, "raised: %s",
             lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                            : luaL_typename(L, -1));
    return R_BAD;
  }
  if (lua_gettop(L) >= base + 3 && lua_isnil(L, base + 1)) {
    const char *msg = lua_tostring(L, base + 2), *kind = lua_tostring(L, base + 3);
    if (msg && kind && strncmp(msg, "periskope: ", 11) == 0) return R_NIL_KIND;
    snprintf(why, whylen, "returned nil, %s, %s", msg ? msg : "?",
             kind ? kind : "?");
    return R_BAD;
  }
  return R_ABSORBED;
}

static lua_State *new_state(void) {
  lua_State *L = lua_newstate(lua_alloc, NULL);
  if (!L) {
    fprintf(stderr, "check_oom: lua_newstate failed\n");
    exit(2);
  }
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_periskope);
  lua_setfield(L, -2, "periskope");
  lua_pop(L, 1);
  return L;
}

/* Runs scenario s once with allocation n failing (0: none). Returns the
   result class; *count: allocations counted. Exits on a broken after. */
static int run_once(const struct scenario *s, long n, long *count,
                    char *why, size_t whylen) {
  lua_State *L = new_state();
  int st, base, res;
  size_t plen = strlen(PRELUDE), clen = strlen(s->chunk);
  char *src = __real_malloc(plen + clen + 1);
  memcpy(src, PRELUDE, plen);
  memcpy(src + plen, s->chunk, clen + 1);
  if (luaL_loadbuffer(L, src, plen + clen, s->name) != LUA_OK ||
      lua_pcall(L, 0, 2, 0) != LUA_OK) {
    fprintf(stderr, "check_oom: %s: setup: %s\n", s->name,
            lua_tostring(L, -1));
    exit(2);
  }
  free(src);
  base = lua_gettop(L); /* run, after */
  lua_pushvalue(L, base - 1);
  g_count = 0;
  g_fail_at = n;
  g_failed = 0;
  g_retry = 0;
  g_armed = 1;
  st = lua_pcall(L, 0, LUA_MULTRET, 0);
  g_armed = 0;
  *count = g_count;
  res = classify(L, st, base, why, whylen);
  lua_settop(L, base);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    fprintf(stderr,
            "check_oom: %s: allocation %ld failed (%s), and then the client "
            "was not usable: %s\n",
            s->name, n, result_names[res], luaL_tolstring(L, -1, NULL));
    exit(1);
  }
  lua_close(L);
  return res;
}

/* ---------------------------------------------------------------- */
/* C scenarios: the sans-I/O HTTP/1.1 reader and framer (psk_h1)      */

/* Answers of every framing, and what each must give with memory to
   spare: the status and the body's length. */
#define H1_FIELD \
  "X-Periskope-Filler: 0123456789012345678901234567890123456789\r\n"
#define H1_BODY "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
static const struct h1_answer {
  const char *bytes;
  int eof;     /* the peer closes after them */
  long status;
  size_t body;
} h1_answers[] = {
    {"HTTP/1.1 204 No Content\r\nX-RateLimit-Limit: 10\r\n"
     "X-RateLimit-Remaining: 9\r\nX-RateLimit-Reset: 1737542181\r\n"
     "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
     0, 204, 0},
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n"
     "Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
     "{\"message\":\"gone\"}  ",
     0, 404, 20},
    {"HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
     0, 200, 11},
    {"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
     "a body that runs to the close",
     1, 200, 29},
    /* Heads and a body that grow their buffers more than once. */
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\n"
     H1_FIELD H1_FIELD H1_FIELD H1_FIELD H1_FIELD H1_FIELD H1_FIELD H1_FIELD
     "Content-Length: 640\r\n\r\n"
     H1_BODY H1_BODY H1_BODY H1_BODY H1_BODY H1_BODY H1_BODY H1_BODY
     H1_BODY H1_BODY,
     0, 429, 640},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     "40\r\n" H1_BODY "\r\n40\r\n" H1_BODY "\r\n40\r\n" H1_BODY "\r\n"
     "40\r\n" H1_BODY "\r\n40\r\n" H1_BODY "\r\n40\r\n" H1_BODY "\r\n"
     "0\r\n" H1_FIELD H1_FIELD H1_FIELD "T: lf only\n\r\n",
     0, 200, 384},
};
#define H1_ANSWERS (sizeof h1_answers / sizeof h1_answers[0])

/* Readers that failed for want of memory, kept for after. */
static psk_h1 g_h1_failed[H1_ANSWERS];
static int g_h1_nfailed;

/* Reads answer a with r in pieces of 7 bytes (each an exact-length copy).
   Returns R_ABSORBED (read as with memory to spare), R_NIL_KIND (failed:
   out of memory) or R_BAD. */
static int h1_read(psk_h1 *r, const struct h1_answer *a, char *why,
                   size_t whylen) {
  size_t n = strlen(a->bytes), off = 0;
  int st = PSK_H1_MORE;
  while (off < n && st == PSK_H1_MORE) {
    size_t len = n - off < 7 ? n - off : 7;
    char *piece = __real_malloc(len);
    memcpy(piece, a->bytes + off, len);
    st = psk_h1_feed(r, piece, len, NULL);
    free(piece);
    off += len;
  }
  if (st == PSK_H1_MORE && a->eof) st = psk_h1_eof(r);
  if (st == PSK_H1_DONE && r->status == a->status && r->body.len == a->body)
    return R_ABSORBED;
  if (st == PSK_H1_FAIL && r->kind == PSK_KIND_NETWORK &&
      strcmp(r->msg, "out of memory") == 0)
    return R_NIL_KIND;
  snprintf(why, whylen, "answer %d: %s, status %ld, %lu bytes of body: %s",
           (int)(a - h1_answers), st == PSK_H1_DONE ? "done"
                                  : st == PSK_H1_FAIL ? "failed" : "more",
           r->status, (unsigned long)r->body.len, r->msg);
  return R_BAD;
}

/* Each answer through a reader of its own; the one failure armed must be
   the only outcome that differs. */
static int h1_reader_run(char *why, size_t whylen) {
  size_t i;
  int res = R_ABSORBED;
  g_h1_nfailed = 0;
  for (i = 0; i < H1_ANSWERS; i++) {
    psk_h1 r;
    int c;
    psk_h1_init(&r, 4096);
    c = h1_read(&r, &h1_answers[i], why, whylen);
    if (c == R_BAD) {
      psk_h1_free(&r);
      return R_BAD;
    }
    if (c == R_NIL_KIND) {
      res = R_NIL_KIND;
      g_h1_failed[g_h1_nfailed++] = r; /* after reuses it */
    } else {
      psk_h1_free(&r);
    }
  }
  return res;
}

static void h1_reader_after(void) {
  int i;
  char why[256];
  for (i = 0; i < g_h1_nfailed; i++) {
    psk_h1 *r = &g_h1_failed[i];
    size_t k;
    /* Reset, the reader that failed reads every answer again. */
    for (k = 0; k < H1_ANSWERS; k++) {
      psk_h1_reset(r);
      if (h1_read(r, &h1_answers[k], why, sizeof why) != R_ABSORBED) {
        fprintf(stderr, "check_oom: h1_reader: a reader reset after running "
                        "out of memory: %s\n", why);
        exit(1);
      }
    }
    psk_h1_free(r);
  }
  g_h1_nfailed = 0;
}


/* The request's bytes: the host of a base URL, then the request. */
static int h1_frame(char *why, size_t whylen, size_t *len) {
  static char auth[] = "Bearer oom", phone[] = "919874532456",
              base[] = "https://api.periskope.app:8443/v1", ua[] = "oom/1";
  psk_config c;
  psk_request rq;
  psk_buf host, out;
  int st, res = R_ABSORBED;
  memset(&c, 0, sizeof c);
  c.auth = auth;
  c.phone = phone;
  c.base_url = base;
  c.user_agent = ua;
  psk_request_init(&rq);
  psk_buf_init(&host, 4096);
  psk_buf_init(&out, 1 << 16);
  *len = 0;
  st = psk_request_build(&rq, &c, "a@b", 3, 1, 7, NULL);
  if (st == PSK_OK) st = psk_h1_host(&host, base);
  if (st == PSK_OK) st = psk_h1_request(&out, &rq, host.data, host.len);
  if (st == PSK_NOMEM) {
    res = R_NIL_KIND;
  } else if (st != PSK_OK) {
    snprintf(why, whylen, "framing returned %d", st);
    res = R_BAD;
  } else {
    *len = out.len;
  }
  psk_buf_free(&out);
  psk_buf_free(&host);
  psk_request_free(&rq);
  return res;
}

static size_t g_h1_request_len;

static int h1_request_run(char *why, size_t whylen) {
  size_t len;
  int res = h1_frame(why, whylen, &len);
  if (res == R_ABSORBED && len != g_h1_request_len) {
    snprintf(why, whylen, "%lu bytes framed, %lu expected", (unsigned long)len,
             (unsigned long)g_h1_request_len);
    return R_BAD;
  }
  return res;
}

static void h1_request_after(void) {
  char why[256];
  size_t len;
  if (h1_frame(why, sizeof why, &len) != R_ABSORBED || len != g_h1_request_len) {
    fprintf(stderr, "check_oom: h1_request: framing failed afterwards\n");
    exit(1);
  }
}

/* A scenario in C: run (with the failure armed) returns a R_* class and
   says why when R_BAD; after (failures off) exits on a broken state. */
static const struct c_scenario {
  const char *name;
  int (*run)(char *why, size_t whylen);
  void (*after)(void);
} c_scenarios[] = {
    {"h1_reader", h1_reader_run, h1_reader_after},
    {"h1_request", h1_request_run, h1_request_after},
};

/* Runs C scenario s once with allocation n failing (0: none), as
   run_once does a Lua one. */
static int run_c_once(const struct scenario *s, long n, long *count,
                      char *why, size_t whylen) {
  const struct c_scenario *c = NULL;
  size_t i;
  int res;
  for (i = 0; i < sizeof c_scenarios / sizeof c_scenarios[0]; i++)
    if (strcmp(c_scenarios[i].name, s->name) == 0) c = &c_scenarios[i];
  if (!c) {
    fprintf(stderr, "check_oom: no C scenario %s\n", s->name);
    exit(2);
  }
  if (c->run == h1_request_run && g_h1_request_len == 0) {
    size_t len;
    h1_frame(why, whylen, &len); /* with memory to spare: the length */
    g_h1_request_len = len;
  }
  g_count = 0;
  g_fail_at = n;
  g_failed = 0;
  g_retry = 0;
  g_armed = 1;
  res = c->run(why, whylen);
  g_armed = 0;
  *count = g_count;
  c->after();
  return res;
}

/* ---------------------------------------------------------------- */
/* a redis-server of our own                                         */

static pid_t g_redis;

/* A port nothing listens on now (bound, read, closed). */
static int free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

static void stop_redis(void) {
  if (g_redis > 0) {
    kill(g_redis, SIGTERM);
    waitpid(g_redis, NULL, 0);
    g_redis = 0;
  }
}

static int start_redis(void) {
  int tries;
  for (tries = 0; tries < 5; tries++) {
    int port = free_port(), wait;
    char ports[16];
    if (!port) continue;
    snprintf(ports, sizeof ports, "%d", port);
    g_redis = fork();
    if (g_redis == 0) {
      /* Its output nowhere (it must not hold our pipes), and it dies
         with us, however we end. */
      int null = open("/dev/null", O_RDWR);
      if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
      }
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() == 1) _exit(1); /* we died already */
      execlp("redis-server", "redis-server", "--port", ports, "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no", "--logfile",
             "/dev/null", (char *)NULL);
      _exit(127);
    }
    if (g_redis < 0) break;
    for (wait = 0; wait < 100; wait++) { /* 5 s */
      struct timespec ts = {0, 50 * 1000 * 1000};
      redisContext *r = redisConnect("127.0.0.1", port);
      int up = r && !r->err;
      if (r) redisFree(r);
      if (up) return port;
      if (waitpid(g_redis, NULL, WNOHANG) == g_redis) break; /* it died */
      nanosleep(&ts, NULL);
    }
    stop_redis();
  }
  fprintf(stderr, "check_oom: could not start redis-server\n");
  exit(2);
}

/* ---------------------------------------------------------------- */

int main(void) {
  const char *only = getenv("CHECK_OOM_SCENARIO");
  char port[16];
  size_t i;
  int bad = 0, total_stacks = 0;
  long total_runs = 0;
  time_t t0 = time(NULL);

  if (!getenv("PERISKOPE_BASE_URL")) {
    fprintf(stderr, "check_oom: run it under spec/support/run_with_server.lua\n");
    return 2;
  }
  /* Before the module's curl_global_init, which then only counts. */
  if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, c_malloc, c_free, c_realloc,
                           c_strdup, c_calloc) != CURLE_OK) {
    fprintf(stderr, "check_oom: curl_global_init_mem failed\n");
    return 2;
  }
  snprintf(port, sizeof port, "%d", start_redis());
  atexit(stop_redis);
  setenv("CHECK_OOM_REDIS_PORT", port, 1);

  for (i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
    const struct scenario *s = &scenarios[i];
    long n, count = 0, seen[4] = {0, 0, 0, 0}, total;
    int stacks_before = g_nstacks;
    char why[512];
    if (only && strcmp(only, s->name) != 0) continue;
    /* the count, failing none */
    if (!s->chunk)
      run_c_once(s, 0, &total, why, sizeof why);
    else
      run_once(s, 0, &total, why, sizeof why);
    for (n = 1;; n++) {
      int r = !s->chunk ? run_c_once(s, n, &count, why, sizeof why)
                   : run_once(s, n, &count, why, sizeof why);
      total_runs++;
      if (!g_failed) break; /* it completed before allocation n */
      seen[r]++;
      if (r == R_BAD) {
        fprintf(stderr, "check_oom: %s: allocation %ld failed: %s\n",
                s->name, n, why);
        bad++;
      }
    }
    printf("check_oom: %-20s %5ld allocations (%ld with none failing), "
           "%ld memory errors, %ld nil+kind, %ld absorbed, %ld unexpected; "
           "%d failing call stacks\n",
           s->name, n - 1, total, seen[R_MEMORY], seen[R_NIL_KIND],
           seen[R_ABSORBED], seen[R_BAD], g_nstacks - stacks_before);
    fflush(stdout);
  }
  stop_redis();
  total_stacks = g_nstacks;
  printf("check_oom: %ld runs, %d distinct failing call stacks, %ld s, %s\n",
         total_runs, total_stacks, (long)(time(NULL) - t0),
         bad ? "FAILED" : "ok");
  /* Once for ours, once for the module's: libcurl frees its globals. */
  curl_global_cleanup();
  curl_global_cleanup();
  return bad ? 1 : 0;
}
