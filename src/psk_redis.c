/* psk_redis: see psk_redis.h. */
#define _POSIX_C_SOURCE 200809L
#include "psk_redis.h"

#include <stdio.h>

#ifdef PSK_HAVE_HIREDIS

#include "psk_fork.h"
#include "psk_pace.h"
#include "psk_resp.h"
#include "psk_time.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Compare-and-set, run by Redis as one atomic step. KEYS[1]: the budget;
   ARGV: the value read (or ""), the value to store, its lifetime in ms,
   the longest value the caller takes. Returns {1} when the value was the
   one read (and is now the new one: unchanged values are not written
   again), else {0, the value now}, or {2} when that value is longer than
   the caller takes (no budget is: the name holds something else), so
   that no reply is ever longer than a budget. */
static const char CAS_SCRIPT[] =
    "local cur = redis.call('GET', KEYS[1]) or ''\n"
    "if cur ~= ARGV[1] then\n"
    "  if #cur > tonumber(ARGV[4]) then return {2} end\n"
    "  return {0, cur}\n"
    "end\n"
    "if ARGV[2] ~= cur then\n"
    "  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
    "end\n"
    "return {1}\n";
/* Its SHA-1, which EVALSHA names and SCRIPT LOAD answers: known before
   the answer, so that the first EVALSHA goes with the SCRIPT LOAD. After
   a change to the script: printf '%s' "<the script>" | sha1sum. A wrong
   one fails every exchange, saying so (see on_reply). */
static const char CAS_SHA[] = "fa58d8ae174349690353dfffa7a0ddf920264a09";

/* The longest value the exchange takes back, and what the replies may
   hold: {0, value} is the largest (an array of 2), a SHA-1 or a value at
   most PSK_BUDGET_TEXT long, lines (an error's text) under 1 KB. */
#define VALUE_MAX (PSK_BUDGET_TEXT - 1)
static const psk_resp_limits REPLY_LIMITS = {PSK_BUDGET_TEXT, 2, 1, 1024};

struct psk_redis {
  char *host;
  char *password;
  int port;
  int db;
  double timeout;
  /* The blocking driver's connection (psk_redis_cas). */
  int fd;             /* -1: none */
  psk_owner owner;    /* the process that opened fd */
  psk_redis_x *x;     /* its exchange, made on first use */
};

/* What each reply awaited answers, in the order the commands went. */
enum { STEP_AUTH, STEP_SELECT, STEP_LOAD, STEP_EVAL };
#define MAX_STEPS 6 /* AUTH SELECT LOAD EVAL, then LOAD EVAL after NOSCRIPT */

struct psk_redis_x {
  const psk_redis *r;
  redisReader *reader;
  psk_resp_scan scan;
  char *eval;               /* the EVALSHA command, formatted by hiredis */
  size_t eval_len;
  char *buf;                /* commands sent together, when more than one */
  size_t buf_len, buf_size;
  const char *pending;      /* output not yet handed out (eval or buf) */
  size_t pending_len;
  int steps[MAX_STEPS];
  int nsteps, next;         /* steps awaited; the next reply answers next */
  int reloaded;             /* NOSCRIPT was answered once already */
  int result;               /* PSK_REDIS_MORE until the exchange ends */
  int in_step;              /* reader and connection are between replies */
  int reusable;
  char value[PSK_BUDGET_TEXT];
  size_t value_len;
  char name[160];           /* the budget's name, for messages */
  char err[256];
};

/* ---------------------------------------------------------------- */
/* the exchange                                                      */

psk_redis_x *psk_redis_x_new(void) {
  psk_redis_x *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->reader = redisReaderCreate();
  if (!x->reader) {
    free(x);
    return NULL;
  }
  x->result = PSK_REDIS_FAILED;
  x->in_step = 1;
  return x;
}

/* Forgets the batched commands: one of them may be AUTH, whose password
   is wiped rather than left in freed memory. */
static void wipe_buf(psk_redis_x *x) {
  if (x->buf) memset(x->buf, 0, x->buf_len);
  x->buf_len = 0;
}

void psk_redis_x_free(psk_redis_x *x) {
  if (!x) return;
  wipe_buf(x);
  free(x->buf);
  if (x->eval) redisFreeCommand(x->eval);
  if (x->reader) redisReaderFree(x->reader);
  free(x);
}

static int fail(psk_redis_x *x, const char *fmt, const char *what,
                const char *detail) {
  int n = x->r ? snprintf(x->err, sizeof x->err, "redis %s:%d: ",
                          x->r->host, x->r->port)
               : snprintf(x->err, sizeof x->err, "redis: ");
  if (n < 0 || (size_t)n >= sizeof x->err) n = 0;
  snprintf(x->err + n, sizeof x->err - (size_t)n, fmt, what, detail);
  x->result = PSK_REDIS_FAILED;
  x->reusable = 0;
  return PSK_REDIS_FAILED;
}

int psk_redis_x_fail(psk_redis_x *x, const char *what) {
  x->in_step = 0;
  return fail(x, "%s%s", what, "");
}

/* Room for n more bytes in the batch; 0, or -1 out of memory. The old
   block is wiped before it is freed (it may hold AUTH). */
static int reserve(psk_redis_x *x, size_t n) {
  char *p;
  size_t size;
  if (x->buf_len + n <= x->buf_size) return 0;
  size = x->buf_len + n + 256;
  p = malloc(size);
  if (!p) return -1;
  if (x->buf) {
    memcpy(p, x->buf, x->buf_len);
    memset(x->buf, 0, x->buf_size);
    free(x->buf);
  }
  x->buf = p;
  x->buf_size = size;
  return 0;
}

/* Formats a command and adds it to the batch; 0, or -1 out of memory. */
static int batch(psk_redis_x *x, int step, int argc, const char **argv,
                 const size_t *lens) {
  char *cmd = NULL;
  int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
  int rc = -1;
  if (n < 0 || !cmd) return -1;
  if (reserve(x, (size_t)n) == 0) {
    memcpy(x->buf + x->buf_len, cmd, (size_t)n);
    x->buf_len += (size_t)n;
    x->steps[x->nsteps++] = step;
    rc = 0;
  }
  memset(cmd, 0, (size_t)n);
  redisFreeCommand(cmd);
  return rc;
}

static int batch_load(psk_redis_x *x) {
  const char *argv[3] = {"SCRIPT", "LOAD", CAS_SCRIPT};
  size_t lens[3] = {6, 4, sizeof CAS_SCRIPT - 1};
  return batch(x, STEP_LOAD, 3, argv, lens);
}

/* The exchange's EVALSHA, formatted once in begin, goes after the rest. */
static int batch_eval(psk_redis_x *x) {
  if (reserve(x, x->eval_len) != 0) return -1;
  memcpy(x->buf + x->buf_len, x->eval, x->eval_len);
  x->buf_len += x->eval_len;
  x->steps[x->nsteps++] = STEP_EVAL;
  return 0;
}

int psk_redis_x_begin(psk_redis_x *x, const psk_redis *r, int fresh,
                      const char *name, const char *expected,
                      const char *desired, long ttl_ms) {
  char ttl[24], max[24];
  const char *argv[8];
  size_t lens[8];
  int n;
  x->r = r;
  x->result = PSK_REDIS_MORE;
  x->reusable = 0;
  x->nsteps = x->next = 0;
  x->reloaded = 0;
  x->value[0] = '\0';
  x->value_len = 0;
  x->err[0] = '\0';
  x->pending = NULL;
  x->pending_len = 0;
  wipe_buf(x);
  if (x->eval) redisFreeCommand(x->eval);
  x->eval = NULL;
  snprintf(x->name, sizeof x->name, "%s", name);
  if (!x->in_step) { /* the last exchange ended between replies */
    redisReader *fresh_reader = redisReaderCreate();
    if (!fresh_reader) return fail(x, "%s%s", "out of memory", "");
    redisReaderFree(x->reader);
    x->reader = fresh_reader;
    x->in_step = 1;
  }
  psk_resp_init(&x->scan, &REPLY_LIMITS);
  argv[0] = "EVALSHA";
  argv[1] = CAS_SHA;
  argv[2] = "1";
  argv[3] = name;
  argv[4] = expected;
  argv[5] = desired;
  argv[6] = ttl;
  argv[7] = max;
  lens[0] = 7;
  lens[1] = sizeof CAS_SHA - 1;
  lens[2] = 1;
  lens[3] = strlen(name);
  lens[4] = strlen(expected);
  lens[5] = strlen(desired);
  lens[6] = (size_t)snprintf(ttl, sizeof ttl, "%ld", ttl_ms);
  lens[7] = (size_t)snprintf(max, sizeof max, "%d", VALUE_MAX);
  n = redisFormatCommandArgv(&x->eval, 8, argv, lens);
  if (n < 0 || !x->eval) {
    x->eval = NULL;
    return fail(x, "%s%s", "out of memory", "");
  }
  x->eval_len = (size_t)n;
  x->in_step = 0; /* until every reply is read */
  if (!fresh) { /* the command alone, as hiredis formatted it */
    x->steps[x->nsteps++] = STEP_EVAL;
    x->pending = x->eval;
    x->pending_len = x->eval_len;
  } else {
    /* The connection's setup and the command, one round trip. */
    if (r->password) {
      const char *a[2] = {"AUTH", r->password};
      size_t l[2] = {4, strlen(r->password)};
      if (batch(x, STEP_AUTH, 2, a, l) != 0)
        return fail(x, "%s%s", "out of memory", "");
    }
    if (r->db) {
      char db[24];
      const char *a[2] = {"SELECT", db};
      size_t l[2] = {6, 0};
      l[1] = (size_t)snprintf(db, sizeof db, "%d", r->db);
      if (batch(x, STEP_SELECT, 2, a, l) != 0)
        return fail(x, "%s%s", "out of memory", "");
    }
    if (batch_load(x) != 0 || batch_eval(x) != 0)
      return fail(x, "%s%s", "out of memory", "");
    x->pending = x->buf;
    x->pending_len = x->buf_len;
  }
  psk_resp_wait(&x->scan, (unsigned long)x->nsteps);
  return PSK_REDIS_MORE;
}

void psk_redis_x_output(psk_redis_x *x, const char **bytes, size_t *len) {
  *bytes = x->pending ? x->pending : "";
  *len = x->pending_len;
  x->pending = NULL;
  x->pending_len = 0;
}

/* NOSCRIPT: Redis lost the script (SCRIPT FLUSH, a failover): load it
   again and retry, once. */
static int reload(psk_redis_x *x) {
  if (x->reloaded) return fail(x, "%s%s", "the script keeps disappearing", "");
  x->reloaded = 1;
  wipe_buf(x);
  if (batch_load(x) != 0 || batch_eval(x) != 0)
    return fail(x, "%s%s", "out of memory", "");
  psk_resp_wait(&x->scan, 2);
  x->pending = x->buf;
  x->pending_len = x->buf_len;
  return PSK_REDIS_MORE;
}

/* EVALSHA's reply: {1}, {0, value} or {2} (see CAS_SCRIPT). */
static int on_eval(psk_redis_x *x, const redisReply *rep) {
  if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
      rep->element[0]->type == REDIS_REPLY_INTEGER) {
    long long k = rep->element[0]->integer;
    if (k == 1 && rep->elements == 1) return PSK_REDIS_SET;
    if (k == 0 && rep->elements == 2 &&
        rep->element[1]->type == REDIS_REPLY_STRING &&
        rep->element[1]->len <= VALUE_MAX) {
      memcpy(x->value, rep->element[1]->str, rep->element[1]->len);
      x->value[rep->element[1]->len] = '\0';
      x->value_len = rep->element[1]->len;
      return PSK_REDIS_CHANGED;
    }
    if (k == 2 && rep->elements == 1) { /* no budget of ours is that long */
      fail(x, "%s%s", x->name, " holds something else");
      x->reusable = 1; /* the connection itself is fine */
      return PSK_REDIS_FAILED;
    }
  }
  return fail(x, "%s: %s", "EVALSHA", "unexpected reply");
}

static int on_reply(psk_redis_x *x, const redisReply *rep, int step) {
  static const char *const names[] = {"AUTH", "SELECT", "SCRIPT LOAD",
                                      "EVALSHA"};
  if (rep->type == REDIS_REPLY_ERROR) {
    if (step == STEP_EVAL && rep->str && strncmp(rep->str, "NOSCRIPT", 8) == 0)
      return reload(x);
    /* Redis's own text: a refused AUTH names no password. */
    return fail(x, "%s: %.120s", names[step], rep->str ? rep->str : "error");
  }
  switch (step) {
    case STEP_AUTH:
    case STEP_SELECT:
      if (rep->type == REDIS_REPLY_STATUS) return PSK_REDIS_MORE;
      break;
    case STEP_LOAD:
      if (rep->type == REDIS_REPLY_STRING && rep->len == 40 &&
          memcmp(rep->str, CAS_SHA, 40) == 0)
        return PSK_REDIS_MORE;
      if (rep->type == REDIS_REPLY_STRING && rep->len == 40)
        return fail(x, "%s: %s", names[step],
                    "the script's SHA-1 is not the one this build names");
      break;
    default:
      return on_eval(x, rep);
  }
  return fail(x, "%s: %s", names[step], "unexpected reply");
}

int psk_redis_x_feed(psk_redis_x *x, const char *bytes, size_t len) {
  int st;
  if (x->result != PSK_REDIS_MORE) return x->result;
  /* Every byte is judged before hiredis sees it. */
  st = psk_resp_feed(&x->scan, bytes, len);
  if (st != PSK_RESP_OK)
    return fail(x,
                st == PSK_RESP_TOO_LARGE ? "reply too large (%s)%s"
                : st == PSK_RESP_EXTRA   ? "%s (not asked for)%s"
                                         : "not a Redis reply (%s)%s",
                x->scan.why, "");
  if (redisReaderFeed(x->reader, bytes, len) != REDIS_OK)
    return fail(x, "%s%s", "out of memory", "");
  for (;;) {
    void *rep = NULL;
    int rc;
    if (redisReaderGetReply(x->reader, &rep) != REDIS_OK)
      return fail(x, "%s%s",
                  x->reader->err == REDIS_ERR_OOM ? "out of memory"
                                                  : "not a Redis reply: ",
                  x->reader->err == REDIS_ERR_OOM ? "" : x->reader->errstr);
    if (!rep) return PSK_REDIS_MORE;
    if (x->next >= x->nsteps) { /* the scanner lets none through */
      freeReplyObject(rep);
      return fail(x, "%s%s", "a reply to nothing sent", "");
    }
    rc = on_reply(x, rep, x->steps[x->next++]);
    freeReplyObject(rep);
    if (rc != PSK_REDIS_MORE) {
      x->result = rc;
      /* In step when every reply was read and none was refused. */
      x->in_step = x->next == x->nsteps && (rc != PSK_REDIS_FAILED || x->reusable);
      return rc;
    }
  }
}

const char *psk_redis_x_value(const psk_redis_x *x, size_t *len) {
  if (len) *len = x->value_len;
  return x->value;
}

const char *psk_redis_x_error(const psk_redis_x *x) { return x->err; }

int psk_redis_x_reusable(const psk_redis_x *x) {
  return x->result != PSK_REDIS_MORE && x->in_step &&
         (x->result != PSK_REDIS_FAILED || x->reusable);
}

/* ---------------------------------------------------------------- */
/* the blocking driver                                               */

psk_redis *psk_redis_new(const char *host, int port, const char *password,
                         int db, double timeout) {
  psk_redis *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->fd = -1;
  r->host = strdup(host);
  r->password = password ? strdup(password) : NULL;
  if (!r->host || (password && !r->password)) {
    psk_redis_free(r);
    return NULL;
  }
  r->port = port;
  r->db = db;
  r->timeout = timeout;
  return r;
}

/* Closes the connection. In a forked child the socket is the parent's
   too: closing our copy of the descriptor leaves the parent's open. */
static void disconnect(psk_redis *r) {
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
}

void psk_redis_free(psk_redis *r) {
  if (!r) return;
  disconnect(r);
  psk_redis_x_free(r->x);
  if (r->password) {
    memset(r->password, 0, strlen(r->password));
    free(r->password);
  }
  free(r->host);
  free(r);
}

/* Waits until fd is ready for events or the deadline passes: 0 ready (or
   in error: the next call on it says which), 1 the deadline passed, -1
   poll failed (errno). */
static int wait_fd(int fd, short events, double deadline) {
  for (;;) {
    struct pollfd p;
    double left = deadline - psk_time_mono();
    int ms, n;
    if (left <= 0) return 1;
    /* Rounded up: poll must not return just before the deadline. */
    ms = left > INT_MAX / 1000 - 1 ? INT_MAX : (int)(left * 1000.0) + 1;
    p.fd = fd;
    p.events = events;
    p.revents = 0;
    n = poll(&p, 1, ms);
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return -1;
  }
}

/* A non-blocking socket, closed on exec; -1 with errno. */
static int new_socket(int family, int protocol) {
  int fd;
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
  fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
#else
  fd = socket(family, SOCK_STREAM, protocol);
  if (fd >= 0 && (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
                  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)) {
    int e = errno;
    close(fd);
    errno = e;
    fd = -1;
  }
#endif
#if !defined(MSG_NOSIGNAL) && defined(SO_NOSIGPIPE)
  if (fd >= 0) { /* no MSG_NOSIGNAL (macOS): the socket's own option */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
  }
#endif
  return fd;
}

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* Opens r->fd before the deadline: 0, or -1 with why. Each address of
   the host in turn, a non-blocking connect each. */
static int open_connection(psk_redis *r, double deadline, char *why,
                           size_t why_cap) {
  struct addrinfo hints, *res = NULL, *ai;
  char port[16];
  int rc, last = ECONNREFUSED;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  snprintf(port, sizeof port, "%d", r->port);
  /* A numeric address (the default, 127.0.0.1) is read, not looked up; a
     name is resolved here, once per connection, and the deadline does not
     bound that: getaddrinfo takes no timeout (the resolver's own apply:
     resolv.conf's timeout and attempts). */
  rc = getaddrinfo(r->host, port, &hints, &res);
  if (rc != 0) {
    snprintf(why, why_cap, "cannot resolve the host: %s",
             rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    return -1;
  }
  for (ai = res; ai; ai = ai->ai_next) {
    int fd = new_socket(ai->ai_family, ai->ai_protocol), soerr = 0;
    socklen_t len = sizeof soerr;
    if (fd < 0) {
      last = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS && errno != EINTR) {
        last = errno;
        close(fd);
        continue;
      }
      rc = wait_fd(fd, POLLOUT, deadline);
      if (rc == 1) {
        close(fd);
        freeaddrinfo(res);
        snprintf(why, why_cap, "connect timed out (timeout %g s)", r->timeout);
        return -1;
      }
      if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        soerr = errno;
      if (soerr != 0) {
        last = soerr;
        close(fd);
        continue;
      }
    }
    {
      int one = 1; /* the commands go as they are written */
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    r->fd = fd;
    freeaddrinfo(res);
    return 0;
  }
  freeaddrinfo(res);
  snprintf(why, why_cap, "connect: %s", strerror(last));
  return -1;
}

/* Sends all n bytes before the deadline: 0, or -1 with why. SIGPIPE is
   not raised: a server that went away is an error, not the host's end. */
static int send_all(psk_redis *r, const char *p, size_t n, double deadline,
                    char *why, size_t why_cap) {
  while (n > 0) {
    ssize_t k = send(r->fd, p, n, MSG_NOSIGNAL);
    if (k > 0) {
      p += k;
      n -= (size_t)k;
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int rc = wait_fd(r->fd, POLLOUT, deadline);
      if (rc == 0) continue;
      if (rc == 1)
        snprintf(why, why_cap, "timed out (timeout %g s)", r->timeout);
      else
        snprintf(why, why_cap, "poll: %s", strerror(errno));
      return -1;
    }
    snprintf(why, why_cap, "send: %s", k < 0 ? strerror(errno) : "nothing sent");
    return -1;
  }
  return 0;
}

/* Reads what has come, waiting for it until the deadline: the number of
   bytes (> 0), or -1 with why. */
static ssize_t recv_some(psk_redis *r, char *buf, size_t cap, double deadline,
                         char *why, size_t why_cap) {
  for (;;) {
    ssize_t k;
    int rc = wait_fd(r->fd, POLLIN, deadline);
    if (rc == 1) {
      snprintf(why, why_cap, "timed out (timeout %g s)", r->timeout);
      return -1;
    }
    if (rc < 0) {
      snprintf(why, why_cap, "poll: %s", strerror(errno));
      return -1;
    }
    k = recv(r->fd, buf, cap, 0);
    if (k > 0) return k;
    if (k == 0) {
      snprintf(why, why_cap, "the server closed the connection");
      return -1;
    }
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      snprintf(why, why_cap, "recv: %s", strerror(errno));
      return -1;
    }
  }
}

int psk_redis_cas(psk_redis *r, double deadline, const char *name,
                  const char *expected, const char *desired, long ttl_ms,
                  char *cur, size_t cur_cap, size_t *cur_len, char *err,
                  size_t err_cap) {
  /* One deadline for the whole call: connect, every send, every read. */
  char buf[8192], why[160];
  int rc, fresh;
  if (r->fd >= 0 && psk_owner_other(&r->owner)) disconnect(r); /* the parent's */
  if (!r->x && !(r->x = psk_redis_x_new())) {
    snprintf(err, err_cap, "redis %s:%d: out of memory", r->host, r->port);
    return PSK_REDIS_FAILED;
  }
  fresh = r->fd < 0;
  if (fresh) {
    if (open_connection(r, deadline, why, sizeof why) != 0) {
      snprintf(err, err_cap, "redis %s:%d: %s", r->host, r->port, why);
      return PSK_REDIS_FAILED;
    }
    psk_owner_set(&r->owner);
  }
  rc = psk_redis_x_begin(r->x, r, fresh, name, expected, desired, ttl_ms);
  while (rc == PSK_REDIS_MORE) {
    const char *out;
    size_t n;
    ssize_t got;
    psk_redis_x_output(r->x, &out, &n);
    if (n > 0 && send_all(r, out, n, deadline, why, sizeof why) != 0) {
      rc = psk_redis_x_fail(r->x, why);
      break;
    }
    got = recv_some(r, buf, sizeof buf, deadline, why, sizeof why);
    if (got < 0) {
      rc = psk_redis_x_fail(r->x, why);
      break;
    }
    rc = psk_redis_x_feed(r->x, buf, (size_t)got);
  }
  if (rc == PSK_REDIS_CHANGED) {
    size_t len;
    const char *v = psk_redis_x_value(r->x, &len);
    if (len >= cur_cap) { /* no budget of the caller's is that long */
      snprintf(err, err_cap, "redis %s:%d: %s holds something else", r->host,
               r->port, name);
      return PSK_REDIS_FAILED; /* the connection itself is fine */
    }
    memcpy(cur, v, len + 1);
    *cur_len = len;
  } else if (rc == PSK_REDIS_FAILED) {
    snprintf(err, err_cap, "%s", psk_redis_x_error(r->x));
    if (!psk_redis_x_reusable(r->x)) disconnect(r);
  }
  return rc;
}

int psk_redis_available(void) { return 1; }

#else /* built without hiredis: periskope.limiter.redis refuses, see lpace.c */

int psk_redis_available(void) { return 0; }

psk_redis *psk_redis_new(const char *host, int port, const char *password,
                         int db, double timeout) {
  (void)host, (void)port, (void)password, (void)db, (void)timeout;
  return NULL;
}

void psk_redis_free(psk_redis *r) { (void)r; }

int psk_redis_cas(psk_redis *r, double deadline, const char *name,
                  const char *expected, const char *desired, long ttl_ms,
                  char *cur, size_t cur_cap, size_t *cur_len, char *err,
                  size_t err_cap) {
  (void)deadline;
  (void)r, (void)name, (void)expected, (void)desired, (void)ttl_ms;
  (void)cur, (void)cur_cap, (void)cur_len;
  snprintf(err, err_cap, "built without hiredis");
  return PSK_REDIS_FAILED;
}

psk_redis_x *psk_redis_x_new(void) { return NULL; }

void psk_redis_x_free(psk_redis_x *x) { (void)x; }

int psk_redis_x_begin(psk_redis_x *x, const psk_redis *r, int fresh,
                      const char *name, const char *expected,
                      const char *desired, long ttl_ms) {
  (void)x, (void)r, (void)fresh, (void)name, (void)expected, (void)desired;
  (void)ttl_ms;
  return PSK_REDIS_FAILED;
}

void psk_redis_x_output(psk_redis_x *x, const char **bytes, size_t *len) {
  (void)x;
  *bytes = "";
  *len = 0;
}

int psk_redis_x_feed(psk_redis_x *x, const char *bytes, size_t len) {
  (void)x, (void)bytes, (void)len;
  return PSK_REDIS_FAILED;
}

int psk_redis_x_fail(psk_redis_x *x, const char *what) {
  (void)x, (void)what;
  return PSK_REDIS_FAILED;
}

const char *psk_redis_x_value(const psk_redis_x *x, size_t *len) {
  (void)x;
  if (len) *len = 0;
  return "";
}

const char *psk_redis_x_error(const psk_redis_x *x) {
  (void)x;
  return "built without hiredis";
}

int psk_redis_x_reusable(const psk_redis_x *x) {
  (void)x;
  return 0;
}

#endif
