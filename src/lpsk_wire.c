/*
 * lpsk_wire.c: a pin job's exchange whose bytes the host moves
 * (client:pin_job's io = "bytes"), for hosts that own the network and do
 * TLS themselves: OpenResty's cosockets. The job frames the request and
 * reads the answer sans-I/O (psk_h1); the host only connects, hands
 * bytes over and back, and keeps or closes the connection when told.
 * Each of its socket calls is one action of job:step, whose result goes
 * straight back into the next step:
 *
 *   "connect", target      -> job:step(sock:connect(host, port, {pool}),
 *                                      sock:getreusedtimes())
 *   "handshake", name      -> job:step(sock:sslhandshake(nil, name, true))
 *   "write", bytes, secs   -> job:step(sock:send(bytes))
 *   "read", n, secs        -> job:step(sock:receive(n) or receiveany)
 *   "release", keep, secs  -> setkeepalive (keep) or close; job:step()
 *
 * A store operation of the job's pacing (a Redis limiter's compare-and-
 * set, lpace_io) goes the same way: connect, write, read, release, to
 * Redis, with the operation's deadline.
 *
 * Every limit the module's libcurl transport has is here too: the
 * attempt's timeout (each action carries the seconds left), the head and
 * body caps (too_large), a kept-alive connection the server had closed
 * is reopened and the request sent again once. What the host's socket
 * says becomes the failure kinds pin returns. The answer then goes
 * through the job's one path, as any other driver's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpsk.h"
#include "psk_h1.h"
#include "psk_time.h"

enum {
  W_IDLE,      /* no exchange */
  W_CONNECT,   /* "connect" asked */
  W_HANDSHAKE, /* "handshake" asked */
  W_WRITE,     /* "write" asked */
  W_READ,      /* "read" asked */
  W_RELEASE,   /* "release" asked: the outcome is in rep */
  W_RESEND,    /* "release" asked of a stale connection: then "connect" */
  S_CONNECT,   /* a store operation (lpace_io): "connect" asked */
  S_WRITE,     /* ... "write" asked */
  S_READ,      /* ... "read" asked */
  S_RELEASE    /* ... "release" asked: it has ended */
};

struct lpsk_wire {
  int phase;
  psk_buf out;       /* the request's bytes */
  psk_h1 h1;         /* the answer being read */
  psk_reply rep;     /* the outcome, once the exchange ends */
  psk_buf host;      /* Host header value */
  psk_origin origin; /* where it goes */
  double started;    /* monotonic */
  double deadline;   /* the attempt's timeout */
  int reused;        /* the connection came from the host's pool */
  int resent;        /* sent again after a stale connection */
  int keep;          /* release: keep the connection */
  int fresh;         /* connect: a new connection is needed */
  lpace_io *io;      /* S_*: the store operation carried */
};

lpsk_wire *lpsk_wire_new(void) {
  lpsk_wire *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  psk_buf_init(&w->out, 64 * 1024);
  psk_buf_init(&w->host, PSK_BASE_URL_MAX);
  psk_buf_init(&w->rep.head, 0);
  psk_buf_init(&w->rep.body, 0);
  return w;
}

void lpsk_wire_free(lpsk_wire *w) {
  if (!w) return;
  psk_buf_free(&w->out);
  psk_buf_free(&w->host);
  psk_h1_free(&w->h1);
  free(w);
}

int lpsk_wire_busy(const lpsk_wire *w) { return w && w->phase != W_IDLE; }

/* ---------------------------------------------------------------- */
/* actions                                                           */

static double left(const lpsk_wire *w) {
  double s = w->deadline - psk_time_mono();
  return s > 0.001 ? s : 0.001;
}

static const char *url_of(const pin_job *j) {
  return psk_buf_cstr(&j->req.url);
}

/* Pushes "connect", { host, port, pool, timeout }. The pool is the
   origin's: scheme, host and port (a TLS connection is never handed to
   a plain one). [-0, +2, m] */
static int push_connect(lua_State *L, pin_job *j, lpsk_wire *w) {
  const char *url = j->c->cfg.base_url;
  double t = left(w);
  if (t > j->c->cfg.connect_timeout) t = j->c->cfg.connect_timeout;
  w->phase = W_CONNECT;
  lua_pushliteral(L, "connect");
  lua_createtable(L, 0, 5);
  lua_pushlstring(L, url + w->origin.host_off, w->origin.host_len);
  lua_setfield(L, -2, "host");
  lua_pushinteger(L, w->origin.port);
  lua_setfield(L, -2, "port");
  lua_pushfstring(L, "periskope:%s:%s", w->origin.tls ? "https" : "http",
                  psk_buf_cstr(&w->host));
  if (w->fresh) {
    /* A pool of its own: the stale one may hold more dead connections. */
    lua_pushliteral(L, ":fresh");
    lua_concat(L, 2);
  }
  lua_setfield(L, -2, "pool");
  lua_pushnumber(L, (lua_Number)t);
  lua_setfield(L, -2, "timeout");
  lua_pushboolean(L, w->origin.tls);
  lua_setfield(L, -2, "tls");
  return 2;
}

/* Pushes "handshake", server name, seconds. [-0, +3, m] */
static int push_handshake(lua_State *L, pin_job *j, lpsk_wire *w) {
  (void)j;
  w->phase = W_HANDSHAKE;
  lua_pushliteral(L, "handshake");
  /* The name to verify: the host, an IPv6 literal without brackets. */
  if (w->origin.host_len > 2 && psk_buf_cstr(&w->host)[0] == '[')
    lua_pushlstring(L, j->c->cfg.base_url + w->origin.host_off + 1,
                    w->origin.host_len - 2);
  else
    lua_pushlstring(L, j->c->cfg.base_url + w->origin.host_off,
                    w->origin.host_len);
  lua_pushnumber(L, (lua_Number)left(w));
  return 3;
}

static int push_write(lua_State *L, lpsk_wire *w) {
  w->phase = W_WRITE;
  lua_pushliteral(L, "write");
  lua_pushlstring(L, psk_buf_cstr(&w->out), w->out.len);
  lua_pushnumber(L, (lua_Number)left(w));
  return 3;
}

static int push_read(lua_State *L, lpsk_wire *w) {
  w->phase = W_READ;
  lua_pushliteral(L, "read");
  lua_pushinteger(L, (lua_Integer)psk_h1_want(&w->h1));
  lua_pushnumber(L, (lua_Number)left(w));
  return 3;
}

/* Pushes "release", keep, idle seconds: the exchange is over, its
   outcome in w->rep. Periskope closes a connection idle for 5 s
   (Keep-Alive: timeout=5): the host's pool keeps it a little less. */
static int push_release(lua_State *L, lpsk_wire *w, int keep) {
  w->phase = W_RELEASE;
  w->keep = keep;
  lua_pushliteral(L, "release");
  lua_pushboolean(L, keep);
  lua_pushnumber(L, 4);
  return 3;
}

/* ---------------------------------------------------------------- */
/* outcomes                                                          */

/* Ends the exchange with no answer: kind and a message in the style of
   the libcurl transport's. [-0, +3, m] */
static int fail(lua_State *L, pin_job *j, lpsk_wire *w, int kind,
                const char *lead, const char *why) {
  psk_reply *r = &w->rep;
  r->status = 0;
  r->kind = kind;
  r->elapsed = psk_time_mono() - w->started;
  snprintf(r->message, sizeof r->message, "periskope: POST %.200s%s: %s%.280s",
           url_of(j), strlen(url_of(j)) > 200 ? "..." : "", lead, why);
  return push_release(L, w, 0);
}

/* The kind of what a cosocket call said. */
static int kind_of(const char *err, int connecting) {
  if (strstr(err, "timeout")) return PSK_KIND_TIMEOUT;
  if (connecting && (strstr(err, "resolve") || strstr(err, "resolver")))
    return PSK_KIND_RESOLVE;
  if (connecting) return PSK_KIND_CONNECT;
  return PSK_KIND_NETWORK;
}

static int fail_socket(lua_State *L, pin_job *j, lpsk_wire *w,
                       const char *err, int connecting) {
  char why[320];
  int kind = kind_of(err, connecting);
  if (kind == PSK_KIND_TIMEOUT)
    snprintf(why, sizeof why, "timed out after %.0f ms (%s)",
             (psk_time_mono() - w->started) * 1000, err);
  else if (connecting)
    snprintf(why, sizeof why, "Failed to connect to %.*s port %d: %s",
             (int)w->origin.host_len,
             j->c->cfg.base_url + w->origin.host_off, w->origin.port, err);
  else
    snprintf(why, sizeof why, "%s", err);
  return fail(L, j, w, kind, kind == PSK_KIND_NETWORK ? "network error: " : "",
              why);
}

/* The answer is whole (DONE): its status, head and body become the
   outcome; the connection is kept when the answer allows. */
static int answered(lua_State *L, lpsk_wire *w) {
  psk_reply *r = &w->rep;
  r->status = w->h1.status;
  r->kind = PSK_KIND_NONE;
  r->message[0] = '\0';
  r->elapsed = psk_time_mono() - w->started;
  /* The reader's buffers are lent to the reply; reset takes them back. */
  r->head = w->h1.head;
  r->body = w->h1.body;
  return push_release(L, w, psk_h1_keepalive(&w->h1));
}

/* A kept-alive connection the server had closed: nothing came back (or
   the write failed). Reopened and sent again, once, as libcurl does. */
static int stale(const lpsk_wire *w) {
  return w->reused && !w->resent && w->h1.received == 0;
}

static int resend(lua_State *L, lpsk_wire *w) {
  w->resent = 1;
  w->fresh = 1;
  psk_h1_reset(&w->h1);
  /* The dead connection goes first; the step after it connects anew. */
  push_release(L, w, 0);
  w->phase = W_RESEND;
  return 3;
}

/* ---------------------------------------------------------------- */
/* the exchange                                                      */

int lpsk_wire_begin(lua_State *L, pin_job *j, lpsk_wire *w) {
  psk_h1_free(&w->h1);
  psk_h1_init(&w->h1, j->c->cfg.max_body);
  w->started = psk_time_mono();
  w->deadline = w->started + j->c->cfg.timeout;
  w->reused = w->resent = w->fresh = w->keep = 0;
  if (psk_h1_origin(j->c->cfg.base_url, &w->origin) != PSK_OK ||
      psk_h1_host(&w->host, j->c->cfg.base_url) != PSK_OK ||
      psk_h1_request(&w->out, &j->req, psk_buf_cstr(&w->host), w->host.len) !=
          PSK_OK) {
    w->phase = W_IDLE;
    return luaL_error(L, "periskope: out of memory");
  }
  return push_connect(L, j, w);
}

/* What a socket call said at i, or def: never raises. */
static const char *said(lua_State *L, int i, const char *def) {
  int t = lua_type(L, i);
  return t == LUA_TSTRING || t == LUA_TNUMBER ? lua_tostring(L, i) : def;
}

static int store_step(lua_State *L, lpsk_wire *w);

int lpsk_wire_step(lua_State *L, pin_job *j, lpsk_wire *w) {
  if (w->phase >= S_CONNECT) return store_step(L, w);
  switch (w->phase) {
  case W_RELEASE:
    return 0; /* the outcome: lpsk_wire_outcome */
  case W_RESEND:
    return push_connect(L, j, w);
  case W_CONNECT:
    if (!lua_toboolean(L, 2))
      return fail_socket(L, j, w, said(L, 3, "failed"), 1);
    w->reused = lua_tointeger(L, 4) > 0;
    if (w->origin.tls && !w->reused) return push_handshake(L, j, w);
    return push_write(L, w);
  case W_HANDSHAKE:
    if (!lua_toboolean(L, 2)) {
      const char *err = said(L, 3, "failed");
      if (strstr(err, "timeout")) return fail_socket(L, j, w, err, 1);
      return fail(L, j, w, PSK_KIND_TLS, "TLS failed: ", err);
    }
    return push_write(L, w);
  case W_WRITE:
    if (lua_isnil(L, 2)) {
      if (stale(w)) return resend(L, w);
      return fail_socket(L, j, w, said(L, 3, "failed"), 0);
    }
    return push_read(L, w);
  case W_READ: {
    size_t n = 0;
    const char *data = NULL;
    int rc;
    if (lua_type(L, 2) == LUA_TSTRING)
      data = lua_tolstring(L, 2, &n);
    else if (lua_type(L, 4) == LUA_TSTRING) /* the bytes before an error */
      data = lua_tolstring(L, 4, &n);
    rc = psk_h1_feed(&w->h1, data ? data : "", n, NULL);
    if (rc == PSK_H1_MORE && !data) {
      const char *err = said(L, 3, "closed");
      if (strcmp(err, "closed") != 0) return fail_socket(L, j, w, err, 0);
      rc = psk_h1_eof(&w->h1);
      if (rc == PSK_H1_FAIL && stale(w)) return resend(L, w);
    } else if (rc == PSK_H1_MORE && lua_isnil(L, 2)) {
      /* Bytes, then an error: the error decides. */
      const char *err = said(L, 3, "closed");
      if (strcmp(err, "closed") != 0) return fail_socket(L, j, w, err, 0);
      rc = psk_h1_eof(&w->h1);
    }
    if (rc == PSK_H1_DONE) return answered(L, w);
    if (rc == PSK_H1_FAIL)
      return fail(L, j, w, w->h1.kind,
                  w->h1.kind == PSK_KIND_NETWORK ? "network error: " : "",
                  w->h1.msg);
    return push_read(L, w);
  }
  default:
    return luaL_error(L, "periskope: job:step: no exchange is under way");
  }
}

/* ---------------------------------------------------------------- */
/* a store operation                                                 */

/* The operation's next bytes to write, or a read when there are none. */
static int store_next(lua_State *L, lpsk_wire *w) {
  const char *bytes;
  size_t n;
  lpace_io_output(w->io, &bytes, &n);
  if (n) {
    w->phase = S_WRITE;
    lua_pushliteral(L, "write");
    lua_pushlstring(L, bytes, n);
  } else {
    w->phase = S_READ;
    lua_pushliteral(L, "read");
    lua_pushinteger(L, 0);
  }
  lua_pushnumber(L, (lua_Number)lpace_io_left(w->io));
  return 3;
}

/* The operation has ended: its connection kept when still in step. */
static int store_release(lua_State *L, lpsk_wire *w, int keep) {
  w->phase = S_RELEASE;
  lua_pushliteral(L, "release");
  lua_pushboolean(L, keep && lpace_io_reusable(w->io));
  lua_pushnumber(L, 30);
  return 3;
}

int lpsk_wire_store(lua_State *L, lpsk_wire *w, lpace_io *io) {
  const char *host, *pool;
  int port;
  w->io = io;
  w->phase = S_CONNECT;
  lpace_io_target(io, &host, &port, &pool);
  lua_pushliteral(L, "connect");
  lua_createtable(L, 0, 5);
  lua_pushstring(L, host);
  lua_setfield(L, -2, "host");
  lua_pushinteger(L, port);
  lua_setfield(L, -2, "port");
  lua_pushstring(L, pool);
  lua_setfield(L, -2, "pool");
  lua_pushnumber(L, (lua_Number)lpace_io_left(io));
  lua_setfield(L, -2, "timeout");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "tls");
  return 2;
}

/* A store operation's next action, from what the socket call gave. */
static int store_step(lua_State *L, lpsk_wire *w) {
  int rc;
  switch (w->phase) {
  case S_CONNECT:
    if (!lua_toboolean(L, 2)) {
      lpace_io_fail(w->io, said(L, 3, "connect failed"));
      return store_release(L, w, 0);
    }
    rc = lpace_io_connected(w->io, lua_tointeger(L, 4) == 0);
    if (rc == LPACE_IO) return store_next(L, w);
    return store_release(L, w, 1);
  case S_WRITE:
    if (lua_isnil(L, 2)) {
      lpace_io_fail(w->io, said(L, 3, "send failed"));
      return store_release(L, w, 0);
    }
    return store_next(L, w);
  case S_READ: {
    size_t n = 0;
    const char *data = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &n)
                                                     : NULL;
    if (!data) {
      const char *err = said(L, 3, "closed");
      lpace_io_fail(w->io, strcmp(err, "closed") == 0
                               ? "the server closed the connection"
                               : err);
      return store_release(L, w, 0);
    }
    rc = lpace_io_feed(w->io, data, n);
    if (rc == LPACE_IO) return store_next(L, w);
    return store_release(L, w, 1);
  }
  default: /* S_RELEASE */
    w->phase = W_IDLE;
    return 0;
  }
}

const psk_reply *lpsk_wire_outcome(lpsk_wire *w) {
  if (w->phase != W_RELEASE) return NULL;
  w->phase = W_IDLE;
  return &w->rep;
}
