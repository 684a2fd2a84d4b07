// egress-relay SOCKET: the guestfwd command of a user-mode VM under an egress policy (issue 16).
// libslirp starts it once per guest connection to the proxy address, that connection on its
// stdin/stdout/stderr: one end of a loopback TCP connection (libslirp 4.x's fork_exec makes it
// with listen/connect/accept on 127.0.0.1 and spawns this without a shell, g_shell_parse_argv).
// It connects to the daemon's egress proxy on the
// unix socket SOCKET and lets the proxy decide; when the proxy allows a plain request or a
// CONNECT it needs no part in, the proxy hands the connection back ("direct") and this process
// moves the bytes between the guest and the upstream itself with splice(2), so the data path is
// slirp -> this relay -> upstream (one process) instead of slirp -> socat -> node -> upstream.
//
// Protocol (src/egress/relay.ts is the other side; docs/egress.md "The relay"):
//   relay -> proxy: HELLO ("\0banger-relay 1\n") first, then the guest's bytes up to and
//     including the end of the request head ("\r\n\r\n"); nothing after it until the proxy
//     has spoken (so the proxy never sees body bytes of a request it hands back).
//   proxy -> relay: the proxy's first byte decides. Not NUL: "stay", these and all later bytes
//     go to the guest as they are (every HTTP answer starts with "HTTP/"). NUL: one control
//     line, closed vocabulary:
//       "\0stay\n"                                   keep relaying through the proxy
//       "\0direct IPV4 PORT UPLEN DOWNLEN BODY\n"    then UPLEN bytes, then DOWNLEN bytes
//     direct: connect to IPV4:PORT (the proxy resolved and checked it; this never resolves),
//     keeping the proxy's socket open and silent (its EOF ends the relay: the VM detached),
//     write the UPLEN bytes there (the rewritten request head), then the DOWNLEN bytes to the
//     guest (CONNECT's "200"; only once connected), then BODY = a decimal byte count: exactly
//     that many guest bytes after the head go upstream and the guest is not read again (one
//     request per connection), the answer is spliced back until the upstream closes; BODY =
//     "tunnel": both directions raw. A connect failure is a 502 to the guest.
// Guest bytes are only ever counted and searched for the end of the head: the guest cannot
// produce a control message (control is read from the proxy's socket only, and only as its
// first bytes). Nothing is written to stderr: it is the guest's connection.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HELLO "\0banger-relay 1\n"
#define HELLO_LEN 16
#define HOLD_MAX 65536   // the longest request head looked for (Node's own limit is 16 KiB)
#define LINE_MAX_ 128    // the longest control line
#define BLOB_MAX 65536   // the longest UPLEN / DOWNLEN
#define BODY_MAX 1000000000000000LL
#define IDLE_MS 300000   // no traffic either way for 5 min: closed (the proxy's idle timeout)
#define CONNECT_MS 15000 // connecting upstream (the proxy's connect timeout)
#define PIPE_WANT (256 * 1024)

static const int G = 0; // the guest's connection (stdin; stdout is the same socket)
// After "direct", the proxy's socket stays open and silent: the proxy still counts the
// connection against the VM's limit, and closing it (the VM detached) ends this relay.
static int WATCH = -1;

static void nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

// Wait for `ev` on fd; 0 when ready, -1 on timeout or error.
static int wait_fd(int fd, short ev, int ms) {
  struct pollfd p = {.fd = fd, .events = ev};
  for (;;) {
    int r = poll(&p, 1, ms);
    if (r > 0) return 0;
    if (r == 0) return -1;
    if (errno != EINTR) return -1;
  }
}

// Every byte of buf to a non-blocking fd (small writes: hello, heads, held bytes).
static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (wait_fd(fd, POLLOUT, IDLE_MS) < 0) return -1;
    } else
      return -1;
  }
  return 0;
}

static void bad_gateway(const char *what) {
  char body[160], msg[320];
  snprintf(body, sizeof body, "banger egress: %s\n", what);
  int n = snprintf(msg, sizeof msg,
                   "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
                   "connection: close\r\n\r\n%s",
                   strlen(body), body);
  if (n > 0 && (size_t)n < sizeof msg) write_all(G, msg, (size_t)n);
}

// ---- one direction of a relay: src -> pipe -> dst with splice, or read/write when splice fails
struct pump {
  int src, dst;
  int pr, pw;         // the pipe (splice)
  size_t inpipe, cap; // bytes in the pipe, its capacity
  long long left;     // bytes still to read from src; -1: until EOF
  int eof, done;
  int shut_dst;       // when done, shutdown(dst, SHUT_WR) (not after a counted HTTP body)
  int plain;          // splice unsupported: read/write through buf
  char *buf;
  size_t boff, blen;
  short want_src, want_dst; // what the last step blocked on
};

static int pump_init(struct pump *p, int src, int dst, long long left, int shut_dst) {
  memset(p, 0, sizeof *p);
  p->src = src;
  p->dst = dst;
  p->left = left;
  p->shut_dst = shut_dst;
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0) {
    p->pr = fds[0];
    p->pw = fds[1];
    fcntl(p->pw, F_SETPIPE_SZ, PIPE_WANT);
    int c = fcntl(p->pw, F_GETPIPE_SZ);
    p->cap = c > 0 ? (size_t)c : 65536;
  } else
    p->plain = 1;
  p->buf = malloc(65536);
  if (!p->buf) return -1;
  if (left == 0) p->eof = 1;
  return 0;
}

static void pump_finish(struct pump *p) {
  p->done = 1;
  if (p->shut_dst) shutdown(p->dst, SHUT_WR);
}

// Move what can be moved without blocking. -1: a fatal error (the connection is over).
static int pump_step(struct pump *p) {
  p->want_src = p->want_dst = 0;
  while (!p->done) {
    int progressed = 0;
    // Out first: what is buffered goes to dst.
    if (!p->plain && p->inpipe > 0) {
      ssize_t n = splice(p->pr, NULL, p->dst, NULL, p->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        p->inpipe -= (size_t)n;
        progressed = 1;
      } else if (n < 0 && errno == EAGAIN)
        p->want_dst = POLLOUT;
      else if (n < 0 && errno == EINVAL) {
        // dst does not take splice: drain the pipe through the buffer from now on.
        p->plain = 1;
        continue;
      } else if (n < 0 && errno != EINTR)
        return -1;
    }
    if (p->plain && (p->blen > p->boff || (p->inpipe > 0 && p->pr >= 0))) {
      if (p->blen == p->boff && p->inpipe > 0) {
        ssize_t r = read(p->pr, p->buf, p->inpipe < 65536 ? p->inpipe : 65536);
        if (r <= 0) return -1;
        p->inpipe -= (size_t)r;
        p->boff = 0;
        p->blen = (size_t)r;
      }
      ssize_t n = write(p->dst, p->buf + p->boff, p->blen - p->boff);
      if (n > 0) {
        p->boff += (size_t)n;
        progressed = 1;
      } else if (n < 0 && errno == EAGAIN)
        p->want_dst = POLLOUT;
      else if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
        // dst is gone: this direction is over, the other one still delivers what it has
        // (the proxy's 400 after refusing a guest it stopped reading).
        p->done = 1;
        break;
      } else if (n < 0 && errno != EINTR)
        return -1;
    }
    int empty = p->plain ? (p->blen == p->boff && p->inpipe == 0) : p->inpipe == 0;
    if (p->eof) {
      if (empty) pump_finish(p);
      else if (!progressed) break;
      continue;
    }
    // In: from src while there is room.
    size_t room = p->plain ? (empty ? 65536 : 0) : p->cap - p->inpipe;
    if (p->left >= 0 && (long long)room > p->left) room = (size_t)p->left;
    // dst blocked with bytes still in the pipe: nothing to take until it drains.
    if (p->inpipe > 0 && p->want_dst) room = 0;
    if (room > 0) {
      ssize_t n;
      if (!p->plain) {
        n = splice(p->src, NULL, p->pw, NULL, room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0 && errno == EINVAL && p->inpipe == 0) {
          p->plain = 1;
          continue;
        }
      } else
        n = read(p->src, p->buf, room);
      if (n > 0) {
        if (p->plain) {
          p->boff = 0;
          p->blen = (size_t)n;
        } else
          p->inpipe += (size_t)n;
        if (p->left > 0) p->left -= n;
        if (p->left == 0) p->eof = 1;
        progressed = 1;
      } else if (n == 0) {
        // src ended before the counted body did: the upstream would wait for the rest.
        if (p->left > 0) return -1;
        p->eof = 1, progressed = 1;
      } else if (errno == EAGAIN) {
        // With bytes in the pipe, EAGAIN may mean the pipe is full (it fills by slots, one
        // per segment, before its byte capacity): src may well be readable, and waiting for
        // it would spin until dst drains. Then the out step above waits for dst.
        if (p->inpipe == 0) p->want_src = POLLIN;
      }
      else if (errno != EINTR)
        return -1;
    }
    if (!progressed) break;
  }
  return 0;
}

// Relay with up to two pumps until `until` is done (or every pump is). Never returns.
static void run(struct pump *a, struct pump *b, struct pump *until) {
  struct pump *ps[2] = {a, b};
  for (;;) {
    for (int i = 0; i < 2; i++)
      if (ps[i] && pump_step(ps[i]) < 0) _exit(1);
    if (until ? until->done : ((!a || a->done) && (!b || b->done))) _exit(0);
    struct pollfd fds[5];
    int n = 0;
    if (WATCH >= 0) fds[n++] = (struct pollfd){.fd = WATCH, .events = POLLIN};
    for (int i = 0; i < 2; i++) {
      struct pump *p = ps[i];
      if (!p || p->done) continue;
      if (p->want_src) fds[n++] = (struct pollfd){.fd = p->src, .events = POLLIN};
      if (p->want_dst) fds[n++] = (struct pollfd){.fd = p->dst, .events = POLLOUT};
    }
    if (n == (WATCH >= 0)) continue;
    int r = poll(fds, (nfds_t)n, IDLE_MS);
    if (r == 0) _exit(0);
    if (r < 0 && errno != EINTR) _exit(1);
    if (WATCH >= 0 && fds[0].revents) {
      // The proxy sends nothing after "direct": any byte, its EOF or an error ends the relay.
      char c;
      ssize_t m = read(WATCH, &c, 1);
      if (m >= 0 || errno != EAGAIN) _exit(0);
    }
  }
}

// ---- the control message
static int parse_num(const char *s, long long max, long long *out) {
  if (!*s || strlen(s) > 16 || (s[0] == '0' && s[1])) return -1;
  long long v = 0;
  for (const char *c = s; *c; c++) {
    if (*c < '0' || *c > '9') return -1;
    v = v * 10 + (*c - '0');
  }
  if (v > max) return -1;
  *out = v;
  return 0;
}

struct direct {
  struct sockaddr_in to;
  long long uplen, downlen, body; // body -1: tunnel
};

// "direct IPV4 PORT UPLEN DOWNLEN BODY" (without the NUL and the newline). 0 when valid.
static int parse_direct(char *line, struct direct *d) {
  // Single spaces between printable tokens, nothing else.
  size_t len = strlen(line);
  if (len == 0 || line[0] == ' ' || line[len - 1] == ' ' || strstr(line, "  ")) return -1;
  for (size_t i = 0; i < len; i++)
    if (line[i] < 0x21 && line[i] != ' ') return -1;
  char *tok[7];
  int n = 0;
  for (char *s = line, *save = NULL; n < 7 && (tok[n] = strtok_r(s, " ", &save)); s = NULL) n++;
  if (n != 6 || strcmp(tok[0], "direct") != 0) return -1;
  memset(&d->to, 0, sizeof d->to);
  d->to.sin_family = AF_INET;
  if (inet_pton(AF_INET, tok[1], &d->to.sin_addr) != 1) return -1;
  long long port;
  if (parse_num(tok[2], 65535, &port) < 0 || port < 1) return -1;
  d->to.sin_port = htons((unsigned short)port);
  if (parse_num(tok[3], BLOB_MAX, &d->uplen) < 0) return -1;
  if (parse_num(tok[4], BLOB_MAX, &d->downlen) < 0) return -1;
  if (strcmp(tok[5], "tunnel") == 0)
    d->body = -1;
  else if (parse_num(tok[5], BODY_MAX, &d->body) < 0)
    return -1;
  return 0;
}

static long long find_head_end(const char *b, size_t len, size_t from) {
  for (size_t i = from; i + 4 <= len; i++)
    if (b[i] == '\r' && b[i + 1] == '\n' && b[i + 2] == '\r' && b[i + 3] == '\n') return (long long)(i + 4);
  return -1;
}

static char hold[HOLD_MAX];
static char pbuf[LINE_MAX_ + 2 * BLOB_MAX + 16];

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  // stderr is the guest's connection: nothing may go there by accident.
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) dup2(devnull, 2);
  if (argc != 2 || argv[1][0] != '/') return 2;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof sa.sun_path) return 2;
  strcpy(sa.sun_path, argv[1]);
  int P = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (P < 0 || connect(P, (struct sockaddr *)&sa, sizeof sa) < 0) {
    bad_gateway("the egress proxy is not running");
    return 1;
  }
  nonblock(P);
  nonblock(G);
  if (write_all(P, HELLO, HELLO_LEN) < 0) return 1;

  // Until the proxy speaks: the guest's head goes to it, what follows the head is held.
  size_t held = 0, sent = 0, lead = 0;
  long long head_end = -1;
  int guest_eof = 0;
  size_t got = 0; // bytes of pbuf read from the proxy
  for (;;) {
    // The guest's fd only when it is read: poll reports HUP/ERR even for no events, and a
    // guest that closed while the proxy decides would spin this loop.
    int want_guest = !guest_eof && held < HOLD_MAX;
    struct pollfd fds[2] = {{.fd = P, .events = POLLIN}, {.fd = want_guest ? G : -1, .events = POLLIN}};
    int r = poll(fds, 2, IDLE_MS);
    if (r == 0) return 0;
    if (r < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (want_guest && fds[1].revents) {
      ssize_t n = read(G, hold + held, HOLD_MAX - held);
      if (n == 0)
        guest_eof = 1;
      else if (n < 0 && errno != EAGAIN && errno != EINTR)
        return 1;
      else if (n > 0) {
        size_t from = held >= 3 ? held - 3 : 0;
        held += (size_t)n;
        // Empty lines before the request line are skipped (as the proxy's parser does): their
        // CRLFs are no head end.
        while (lead < held && (hold[lead] == '\r' || hold[lead] == '\n')) lead++;
        if (from < lead) from = lead;
        if (head_end < 0) head_end = find_head_end(hold, held, from);
        // Head bytes go to the proxy as they come; past the head nothing, until it speaks.
        size_t upto = head_end >= 0 ? (size_t)head_end : held;
        if (upto > sent) {
          if (write_all(P, hold + sent, upto - sent) < 0) return 1;
          sent = upto;
        }
      }
      // No head in HOLD_MAX bytes, or the guest ended before one: the proxy answers it as is.
      if ((held == HOLD_MAX && head_end < 0) || (guest_eof && head_end < 0)) {
        if (guest_eof) shutdown(P, SHUT_WR);
        struct pump gp, pg;
        if (pump_init(&gp, G, P, guest_eof ? 0 : -1, 1) < 0 || pump_init(&pg, P, G, -1, 1) < 0) return 1;
        run(&gp, &pg, &pg);
      }
    }
    if (!fds[0].revents) continue;
    ssize_t n = read(P, pbuf + got, sizeof pbuf - got);
    if (n == 0) return 0; // the proxy closed without a word
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return 1;
    }
    got += (size_t)n;
    if (pbuf[0] != '\0') {
      // stay (implicitly): the proxy answers itself; held bytes go on to it.
      if (write_all(G, pbuf, got) < 0) return 1;
      break;
    }
    char *nl = memchr(pbuf, '\n', got);
    if (!nl) {
      if (got > LINE_MAX_) return 1;
      continue;
    }
    size_t line_len = (size_t)(nl - pbuf) + 1;
    if (line_len > LINE_MAX_ || memchr(pbuf + 1, '\0', line_len - 2)) return 1;
    *nl = '\0';
    if (strcmp(pbuf + 1, "stay") == 0) {
      if (got > line_len && write_all(G, pbuf + line_len, got - line_len) < 0) return 1;
      break;
    }
    // direct: the line, then UPLEN + DOWNLEN bytes, and nothing more from the proxy.
    struct direct d;
    char line[LINE_MAX_ + 1];
    memcpy(line, pbuf + 1, line_len - 1);
    if (parse_direct(line, &d) < 0 || head_end < 0) return 1;
    size_t need = line_len + (size_t)d.uplen + (size_t)d.downlen;
    while (got < need) {
      ssize_t m = read(P, pbuf + got, need - got);
      if (m > 0)
        got += (size_t)m;
      else if (m < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (wait_fd(P, POLLIN, IDLE_MS) < 0) return 1;
      } else
        return 1;
    }
    if (got != need) return 1;
    WATCH = P;
    int U = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (U < 0) return 1;
    int one = 1;
    setsockopt(U, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int err = 0;
    if (connect(U, (struct sockaddr *)&d.to, sizeof d.to) < 0) {
      err = errno;
      if (err == EINPROGRESS) {
        socklen_t el = sizeof err;
        if (wait_fd(U, POLLOUT, CONNECT_MS) < 0)
          err = ETIMEDOUT;
        else if (getsockopt(U, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
          err = errno;
      }
    }
    if (err) {
      char what[128], ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &d.to.sin_addr, ip, sizeof ip);
      snprintf(what, sizeof what, "%s:%d: %s", ip, ntohs(d.to.sin_port), strerror(err));
      bad_gateway(what);
      return 1;
    }
    if (write_all(U, pbuf + line_len, (size_t)d.uplen) < 0) return 1;
    if (write_all(G, pbuf + line_len + d.uplen, (size_t)d.downlen) < 0) return 1;
    // The guest's bytes after its head: the body (at most BODY of them) or the tunnel's start.
    size_t after = held - (size_t)head_end;
    long long take = d.body < 0 || (long long)after < d.body ? (long long)after : d.body;
    if (write_all(U, hold + head_end, (size_t)take) < 0) return 1;
    long long left = d.body < 0 ? -1 : d.body - take;
    struct pump gu, ug;
    if (pump_init(&ug, U, G, -1, 1) < 0) return 1;
    if (d.body < 0) {
      if (guest_eof) shutdown(U, SHUT_WR);
      if (pump_init(&gu, G, U, guest_eof ? 0 : -1, 1) < 0) return 1;
      run(&gu, &ug, NULL);
    }
    // One request: a guest that ended mid-body aborts it; after the body the guest is not read.
    if (guest_eof && left > 0) return 1;
    if (pump_init(&gu, G, U, left, 0) < 0) return 1;
    run(&gu, &ug, &ug);
  }
  // stay: everything raw both ways, the held bytes first.
  if (held > sent && write_all(P, hold + sent, held - sent) < 0) return 1;
  if (guest_eof) shutdown(P, SHUT_WR);
  struct pump gp, pg;
  if (pump_init(&gp, G, P, guest_eof ? 0 : -1, 1) < 0 || pump_init(&pg, P, G, -1, 1) < 0) return 1;
  run(&gp, &pg, &pg);
}
