/* The engine: see engine.h. On Linux the sockets libcurl wants are watched with epoll, so
 * the cost of a step grows with the sockets that are active, not with the number of
 * transfers; elsewhere poll(2). The epoll descriptor itself is pollable, so a host loop
 * (libuv) can watch it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#ifdef __linux__
#include <sys/epoll.h>
#define LLMCHAT_EPOLL 1
#else
#include <poll.h>
#endif

#include "engine.h"

/* ---- the ready queue ---------------------------------------------------- */

static void on_notify(void *ud, request *r) {
  engine *e = (engine *)ud;
  if (r->link.in_ready || r->link.eng != e) return;
  r->link.in_ready = 1;
  r->link.ready_gen = e->gen;
  r->link.ready_next = NULL;
  if (e->ready_tail) e->ready_tail->link.ready_next = r;
  else e->ready_head = r;
  e->ready_tail = r;
}

static void ready_unlink(engine *e, request *r) {
  request *p = NULL, *q;
  if (!r->link.in_ready) return;
  for (q = e->ready_head; q; p = q, q = q->link.ready_next) {
    if (q != r) continue;
    if (p) p->link.ready_next = q->link.ready_next;
    else e->ready_head = q->link.ready_next;
    if (e->ready_tail == q) e->ready_tail = p;
    break;
  }
  r->link.in_ready = 0;
  r->link.ready_next = NULL;
}

request *engine_pop_ready(engine *e, request *only) {
  request *r;
  if (only) {
    if (!only->link.in_ready || only->link.eng != e) return NULL;
    ready_unlink(e, only);
    return only;
  }
  r = e->ready_head;
  /* made ready by this very dispatch (an unpause): it waits for the next poll */
  if (!r || r->link.ready_gen == e->gen) return NULL;
  e->ready_head = r->link.ready_next;
  if (!e->ready_head) e->ready_tail = NULL;
  r->link.in_ready = 0;
  r->link.ready_next = NULL;
  return r;
}

int engine_has_ready(const engine *e) { return e->ready_head != NULL; }

void engine_begin_dispatch(engine *e) {
  e->dispatching++;
  e->gen++;
}

void engine_end_dispatch(engine *e) {
  if (e->dispatching > 0) e->dispatching--;
}

/* ---- connections: stray bytes on an idle kept-alive connection --------------
 * A server that writes after a complete response (late trailing bytes) would hand them to
 * the next request sent on that connection: request 2 would read the forged answer,
 * request 3 answer 2, and so on. libcurl notices excess bytes that arrive with the
 * response, not bytes that arrive while the connection sits idle in its cache. So every
 * connection libcurl opens is known here (open/close socket callbacks). Once a transfer on
 * it has finished, it sits in a second epoll set until libcurl watches it again for the
 * next transfer (a paused transfer's connection is never there: libcurl may stop watching
 * it, but it is not idle). Before a transfer starts, the idle ones that became readable are
 * discarded: shut down and drained, which libcurl's liveness check then sees as a closed
 * connection. */

static int conn_find(const engine *e, curl_socket_t fd) {
  int i;
  for (i = 0; i < e->nconns; i++)
    if (e->conns[i] == fd) return i;
  return -1;
}

/* libcurl watches fd for a transfer now (on_socket added it) */
static int sock_watched(const engine *e, curl_socket_t fd) {
  const sockinfo *si;
  for (si = e->socks; si; si = si->next)
    if (si->fd == fd) return 1;
  return 0;
}

static void idle_watch(engine *e, curl_socket_t fd, int on) {
#ifdef LLMCHAT_EPOLL
  struct epoll_event ev;
  if (e->idle_epfd < 0 || conn_find(e, fd) < 0) return;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (on) epoll_ctl(e->idle_epfd, EPOLL_CTL_ADD, fd, &ev);
  else epoll_ctl(e->idle_epfd, EPOLL_CTL_DEL, fd, NULL);
#else
  (void)e; (void)fd; (void)on;
#endif
}

static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
  engine *e = (engine *)ud;
  curl_socket_t fd;
  (void)purpose;
  fd = socket(a->family, a->socktype, a->protocol);
  if (fd != CURL_SOCKET_BAD && e->nconns < ENGINE_MAX_CONNS) e->conns[e->nconns++] = fd;
  return fd;
}

static int on_close_socket(void *ud, curl_socket_t fd) {
  engine *e = (engine *)ud;
  int i = conn_find(e, fd);
  if (i >= 0) {
    idle_watch(e, fd, 0);
    e->conns[i] = e->conns[--e->nconns];
  }
  return close(fd);
}

/* Idle connections with bytes waiting are discarded before a transfer may reuse them. */
static void discard_stale(engine *e) {
#ifdef LLMCHAT_EPOLL
  struct epoll_event evs[16];
  int n, i;
  if (e->idle_epfd < 0) return;
  n = epoll_wait(e->idle_epfd, evs, 16, 0);
  for (i = 0; i < n; i++) {
    curl_socket_t fd = evs[i].data.fd;
    char sink[4096];
    int k;
    epoll_ctl(e->idle_epfd, EPOLL_CTL_DEL, fd, NULL);
    /* a transfer took it over meanwhile (libcurl may hand a finished transfer's connection
     * to the next one before the engine sees the first one done): its bytes are its own.
     * (A paused transfer's connection is never in the idle set: only finish() adds to it,
     * and the next transfer's watch takes it out.) */
    if (sock_watched(e, fd)) continue;
    /* readable because the server closed it (EOF): libcurl's own check finds it dead */
    if (recv(fd, sink, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) continue;
    shutdown(fd, SHUT_RDWR);
    for (k = 0; k < 256 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; k++) {}
    e->stale_conns++;
  }
#else
  (void)e;
#endif
}

/* ---- libcurl's socket and timer callbacks --------------------------------- */

#ifdef LLMCHAT_EPOLL
static void epoll_set(engine *e, curl_socket_t s, int what, int op) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
  ev.data.fd = s;
  if (epoll_ctl(e->epfd, op, s, &ev) != 0 && op == EPOLL_CTL_ADD && errno == EEXIST)
    epoll_ctl(e->epfd, EPOLL_CTL_MOD, s, &ev);
}
#endif

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  engine *e = (engine *)userp;
  sockinfo *si = (sockinfo *)socketp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (si) {
#ifdef LLMCHAT_EPOLL
      epoll_ctl(e->epfd, EPOLL_CTL_DEL, s, NULL);
#endif
      if (si->prev) si->prev->next = si->next;
      else e->socks = si->next;
      if (si->next) si->next->prev = si->prev;
      e->nsocks--;
      free(si);
      curl_multi_assign(e->multi, s, NULL);
    }
    return 0;
  }
  if (!si) {
    si = (sockinfo *)calloc(1, sizeof *si);
    if (!si) return -1;
    si->fd = s;
    si->next = e->socks;
    if (e->socks) e->socks->prev = si;
    e->socks = si;
    e->nsocks++;
    curl_multi_assign(e->multi, s, si);
    idle_watch(e, s, 0);
#ifdef LLMCHAT_EPOLL
    epoll_set(e, s, what, EPOLL_CTL_ADD);
#endif
  } else {
#ifdef LLMCHAT_EPOLL
    epoll_set(e, s, what, EPOLL_CTL_MOD);
#endif
  }
  si->what = what;
  return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  engine *e = (engine *)userp;
  (void)multi;
  e->deadline_ms = timeout_ms < 0 ? -1 : clock_now_ms() + timeout_ms;
  return 0;
}

int engine_init(engine *e) {
  memset(e, 0, sizeof *e);
  e->deadline_ms = -1;
  e->epfd = -1;
  e->idle_epfd = -1;
#ifdef LLMCHAT_EPOLL
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (e->epfd < 0) return -1;
  e->idle_epfd = epoll_create1(EPOLL_CLOEXEC); /* optional: -1 turns the check off */
#endif
  e->multi = curl_multi_init();
  if (!e->multi) {
    if (e->epfd >= 0) close(e->epfd);
    if (e->idle_epfd >= 0) close(e->idle_epfd);
    e->epfd = e->idle_epfd = -1;
    return -1;
  }
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, (void *)e);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, (void *)e);
  /* One pool of kept-alive connections shared by every request of the state. Its size
   * is libcurl's default: 4 times the transfers in flight, so with 256 streams at once a
   * finished stream's connection is kept for the next one (a fixed cap below the number in
   * flight closed every connection as its stream ended: 921 new connections for 1,024
   * streams, 256 at a time). Idle connections close after libcurl's MAXAGE_CONN (118 s). */
  return 0;
}

/* ---- requests in flight --------------------------------------------------- */

static void all_unlink(engine *e, request *r) {
  if (r->link.prev) r->link.prev->link.next = r->link.next;
  else if (e->all == r) e->all = r->link.next;
  if (r->link.next) r->link.next->link.prev = r->link.prev;
  r->link.next = r->link.prev = NULL;
  e->nreq--;
}

void engine_close(engine *e) {
  if (e->closed) return;
  e->closed = 1;
  while (e->all) {
    request *r = e->all;
    curl_multi_remove_handle(e->multi, r->easy);
    ready_unlink(e, r);
    all_unlink(e, r);
    r->link.eng = NULL;
    r->link.completion_due = 0;
    r->state = REQ_DONE;
    r->reason = REASON_CANCELLED;
  }
  e->ready_head = e->ready_tail = NULL;
  while (e->npool > 0) curl_easy_cleanup(e->pool[--e->npool]);
  curl_multi_cleanup(e->multi); /* closes the cached connections through on_close_socket */
  e->multi = NULL;
  while (e->socks) {
    sockinfo *si = e->socks;
    e->socks = si->next;
    free(si);
  }
  e->nsocks = 0;
  if (e->epfd >= 0) close(e->epfd);
  if (e->idle_epfd >= 0) close(e->idle_epfd);
  e->epfd = e->idle_epfd = -1;
}

CURL *engine_easy(engine *e) {
  /* a pooled handle keeps its allocations (and libcurl its DNS cache) */
  if (!e->closed && e->npool > 0) {
    CURL *easy = e->pool[--e->npool];
    curl_easy_reset(easy);
    return easy;
  }
  return curl_easy_init();
}

int engine_is_added(const request *r) { return r->link.eng != NULL; }

/* out of every list, without a trace (no completion to dispatch) */
static void forget(engine *e, request *r) {
  if (r->link.eng != e) return;
  if (r->state == REQ_RUNNING) {
    curl_multi_remove_handle(e->multi, r->easy);
    all_unlink(e, r);
    r->state = REQ_DONE;
    r->reason = REASON_CANCELLED;
  }
  ready_unlink(e, r);
  r->link.eng = NULL;
  r->link.completion_due = 0;
  r->link.held = 0;
  r->notify = NULL;
}

void engine_release(engine *e, request *r) {
  CURL *easy;
  if (!e->closed) forget(e, r);
  easy = request_release(r);
  if (!easy) return;
  if (!e->closed && e->npool < (int)(sizeof e->pool / sizeof e->pool[0])) e->pool[e->npool++] = easy;
  else curl_easy_cleanup(easy);
}

static void arm_idle(engine *e, const request *r) {
  long long due;
  if (!r->idle_ms) return;
  due = r->last_rx_ms + r->idle_ms;
  if (e->next_idle_check == 0 || e->next_idle_check > due) e->next_idle_check = due;
}

int engine_add(engine *e, request *r) {
  if (e->closed || r->state == REQ_RUNNING) return -1;
  if (r->link.eng) forget(e, r); /* finished, its completion never dispatched */
  request_reset_response(r);
  r->notify = on_notify;
  r->notify_ud = e;
  curl_easy_setopt(r->easy, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
  curl_easy_setopt(r->easy, CURLOPT_OPENSOCKETDATA, (void *)e);
  curl_easy_setopt(r->easy, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
  curl_easy_setopt(r->easy, CURLOPT_CLOSESOCKETDATA, (void *)e);
  discard_stale(e);
  r->link.eng = e;
  r->link.held = 0;
  r->state = REQ_RUNNING;
  if (curl_multi_add_handle(e->multi, r->easy) != CURLM_OK) {
    r->link.eng = NULL;
    r->state = REQ_IDLE;
    return -1;
  }
  r->last_rx_ms = clock_now_ms();
  arm_idle(e, r);
  r->link.prev = NULL;
  r->link.next = e->all;
  if (e->all) e->all->link.prev = r;
  e->all = r;
  e->nreq++;
  return 0;
}

static void finish(engine *e, request *r, CURLcode code) {
  curl_socket_t s = CURL_SOCKET_BAD;
  /* its connection (when libcurl keeps it) sits idle from now until a transfer reuses it
   * (on_socket's add takes it out of the idle set again); a paused or running transfer's
   * connection is never there */
  if (code == CURLE_OK && curl_easy_getinfo(r->easy, CURLINFO_ACTIVESOCKET, &s) == CURLE_OK &&
      s != CURL_SOCKET_BAD && !sock_watched(e, s))
    idle_watch(e, s, 1);
  curl_multi_remove_handle(e->multi, r->easy);
  request_done(r);
  r->code = code;
  r->state = REQ_DONE;
  r->link.completion_due = 1;
  /* stays on the ready list with its engine pointer until dispatched */
  all_unlink(e, r);
  on_notify(e, r);
}

void engine_cancel(engine *e, request *r) {
  if (r->link.eng != e) return;
  if (r->state == REQ_RUNNING) {
    r->reason = REASON_CANCELLED;
    finish(e, r, CURLE_ABORTED_BY_CALLBACK);
  } else if (r->link.completion_due) {
    /* ended, completion not yet delivered: it is delivered as cancelled */
    r->reason = REASON_CANCELLED;
  }
}

void engine_consumed(engine *e, request *r) {
  consumer_clear(&r->cons);
  if (r->paused && r->state == REQ_RUNNING && r->link.eng == e) {
    /* Lua took the records: let libcurl go on (it may deliver at once), and the idle
     * timer counts from now (the check skipped this request while it was paused) */
    r->paused = 0;
    r->last_rx_ms = clock_now_ms();
    arm_idle(e, r);
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
  }
}

void engine_hold(engine *e, request *r, int on) {
  if (r->link.eng != e) return;
  r->link.held = on;
  if (!on && (consumer_pending(&r->cons) || r->link.completion_due)) on_notify(e, r);
}

void engine_completed(engine *e, request *r) {
  if (r->link.eng != e) return;
  ready_unlink(e, r);
  r->link.completion_due = 0;
  r->link.eng = NULL;
  r->notify = NULL;
}

static void collect(engine *e) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(e->multi, &left))) {
    request *r = NULL;
    if (m->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    if (r && r->state == REQ_RUNNING) finish(e, r, m->data.result);
  }
}

/* when the engine wants to be driven again: libcurl's timer, or the next
 * idle-timeout check, whichever is first; -1 when neither is set */
long engine_timeout_ms(const engine *e) {
  long long due = e->deadline_ms, d;
  if (e->next_idle_check && (due < 0 || e->next_idle_check < due)) due = e->next_idle_check;
  if (due < 0) return -1;
  d = due - clock_now_ms();
  return d < 0 ? 0 : (long)d;
}

static void socket_action(engine *e, curl_socket_t fd, int mask) {
  int running = 0;
  curl_multi_socket_action(e->multi, fd, mask, &running);
}

/* The idle timeout is ours, not libcurl's low-speed check: that one does not run while a
 * response has not started, and a model that thinks for a minute before its first byte is
 * exactly what idle_timeout is for. A paused request is skipped (its bytes are here, Lua
 * has not taken them); engine_consumed re-arms it. */
static void check_idle(engine *e) {
  long long now = clock_now_ms(), next = 0;
  request *r = e->all;
  if (!e->next_idle_check || now < e->next_idle_check) return;
  while (r) {
    request *nx = r->link.next;
    if (r->idle_ms && r->state == REQ_RUNNING && !r->paused) {
      long long due = r->last_rx_ms + r->idle_ms;
      if (now >= due) {
        r->reason = REASON_IDLE;
        finish(e, r, CURLE_OPERATION_TIMEDOUT);
      } else if (!next || due < next) {
        next = due;
      }
    }
    r = nx;
  }
  e->next_idle_check = next;
}

int engine_drive(engine *e, int wait_ms, long long budget_us) {
  long t;
  int n, i;
  long long t0 = budget_us > 0 ? clock_now_us() : 0;
  if (e->closed) return -1;
  t = engine_timeout_ms(e);
  /* libcurl's timer and the next idle check, both in engine_timeout_ms */
  if (t >= 0 && (wait_ms < 0 || t < wait_ms)) wait_ms = (int)t;
  if (wait_ms < 0) wait_ms = 0;
#ifdef LLMCHAT_EPOLL
  {
    struct epoll_event evs[256]; /* 1,000 paced streams: fewer, fuller wake-ups */
    n = epoll_wait(e->epfd, evs, 256, wait_ms);
    for (i = 0; i < n; i++) {
      int mask = 0;
      if (evs[i].events & (EPOLLIN | EPOLLHUP)) mask |= CURL_CSELECT_IN;
      if (evs[i].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
      if (evs[i].events & EPOLLERR) mask |= CURL_CSELECT_ERR;
      socket_action(e, evs[i].data.fd, mask);
      /* level-triggered: the sockets not handed over now are reported again */
      if (budget_us > 0 && clock_now_us() - t0 >= budget_us) break;
    }
  }
#else
  {
    struct pollfd pfds[256];
    sockinfo *si;
    int np = 0;
    for (si = e->socks; si && np < 256; si = si->next) {
      pfds[np].fd = si->fd;
      pfds[np].events = (short)((si->what & CURL_POLL_IN ? POLLIN : 0) |
                                (si->what & CURL_POLL_OUT ? POLLOUT : 0));
      pfds[np].revents = 0;
      np++;
    }
    n = poll(pfds, (nfds_t)np, wait_ms);
    for (i = 0; n > 0 && i < np; i++) {
      int mask = 0;
      if (!pfds[i].revents) continue;
      if (pfds[i].revents & (POLLIN | POLLHUP)) mask |= CURL_CSELECT_IN;
      if (pfds[i].revents & POLLOUT) mask |= CURL_CSELECT_OUT;
      if (pfds[i].revents & POLLERR) mask |= CURL_CSELECT_ERR;
      socket_action(e, pfds[i].fd, mask);
      if (budget_us > 0 && clock_now_us() - t0 >= budget_us) break;
    }
  }
#endif
  if (e->deadline_ms >= 0 && clock_now_ms() >= e->deadline_ms) {
    e->deadline_ms = -1;
    socket_action(e, CURL_SOCKET_TIMEOUT, 0);
  }
  collect(e);
  check_idle(e);
  return e->nreq;
}
