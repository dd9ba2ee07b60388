/* The engine: every request of a Lua state runs through one libcurl multi
 * handle driven with the multi-socket interface. On Linux the sockets libcurl
 * wants are watched with epoll, so the cost of a step grows with the sockets
 * that are active, not with the number of transfers; elsewhere poll(2). The
 * epoll descriptor itself is pollable, so a host loop (libuv) can watch it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/epoll.h>
#define LLMCHAT_EPOLL 1
#else
#include <poll.h>
#endif

#include "transport.h"

long long engine_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void engine_mark_ready(request *r) {
  engine *e = r->eng;
  if (r->in_ready || !e) return;
  r->in_ready = 1;
  r->ready_gen = e->gen;
  r->ready_next = NULL;
  if (e->ready_tail) e->ready_tail->ready_next = r;
  else e->ready_head = r;
  e->ready_tail = r;
}

static void ready_unlink(engine *e, request *r) {
  request *p = NULL, *q;
  if (!r->in_ready) return;
  for (q = e->ready_head; q; p = q, q = q->ready_next) {
    if (q != r) continue;
    if (p) p->ready_next = q->ready_next;
    else e->ready_head = q->ready_next;
    if (e->ready_tail == q) e->ready_tail = p;
    break;
  }
  r->in_ready = 0;
  r->ready_next = NULL;
}

/* The next request with something to dispatch (deltas or completion); with
 * `only`, that request or nothing. Popped requests keep their engine pointer
 * until completion is dispatched. */
request *engine_pop_ready(engine *e, request *only) {
  request *r;
  if (only) {
    if (!only->in_ready) return NULL;
    ready_unlink(e, only);
    return only;
  }
  r = e->ready_head;
  /* made ready by this very dispatch (an unpause): it waits for the next poll */
  if (!r || r->ready_gen == e->gen) return NULL;
  e->ready_head = r->ready_next;
  if (!e->ready_head) e->ready_tail = NULL;
  r->in_ready = 0;
  r->ready_next = NULL;
  return r;
}

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
#ifdef LLMCHAT_EPOLL
    {
      struct epoll_event ev;
      memset(&ev, 0, sizeof ev);
      ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
      ev.data.fd = s;
      if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
        epoll_ctl(e->epfd, EPOLL_CTL_MOD, s, &ev);
    }
#endif
  } else {
#ifdef LLMCHAT_EPOLL
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    ev.data.fd = s;
    epoll_ctl(e->epfd, EPOLL_CTL_MOD, s, &ev);
#endif
  }
  si->what = what;
  return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  engine *e = (engine *)userp;
  (void)multi;
  e->deadline_ms = timeout_ms < 0 ? -1 : engine_now_ms() + timeout_ms;
  return 0;
}

int engine_init(engine *e) {
  memset(e, 0, sizeof *e);
  e->deadline_ms = -1;
  e->epfd = -1;
#ifdef LLMCHAT_EPOLL
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (e->epfd < 0) return -1;
#endif
  e->multi = curl_multi_init();
  if (!e->multi) {
    if (e->epfd >= 0) close(e->epfd);
    e->epfd = -1;
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

/* out of the list of requests in flight */
static void all_unlink(engine *e, request *r) {
  if (r->prev) r->prev->next = r->next;
  else if (e->all == r) e->all = r->next;
  if (r->next) r->next->prev = r->prev;
  r->next = r->prev = NULL;
  e->nreq--;
}

static void detach(engine *e, request *r) {
  ready_unlink(e, r);
  all_unlink(e, r);
}

void engine_close(engine *e) {
  if (e->closed) return;
  e->closed = 1;
  while (e->all) {
    request *r = e->all;
    curl_multi_remove_handle(e->multi, r->easy);
    detach(e, r);
    r->eng = NULL;
    r->state = REQ_DONE;
    r->reason = REASON_CANCELLED;
  }
  e->ready_head = e->ready_tail = NULL;
  while (e->npool > 0) curl_easy_cleanup(e->pool[--e->npool]);
  curl_multi_cleanup(e->multi);  /* may report sockets removed through on_socket */
  e->multi = NULL;
  while (e->socks) {
    sockinfo *si = e->socks;
    e->socks = si->next;
    free(si);
  }
  e->nsocks = 0;
  if (e->epfd >= 0) close(e->epfd);
  e->epfd = -1;
}

int engine_add(engine *e, request *r) {
  if (e->closed || r->state == REQ_RUNNING) return -1;
  request_reset_response(r);
  r->eng = e;
  r->state = REQ_RUNNING;
  if (curl_multi_add_handle(e->multi, r->easy) != CURLM_OK) {
    r->eng = NULL;
    r->state = REQ_IDLE;
    return -1;
  }
  r->last_rx_ms = engine_now_ms();
  if (r->idle_ms && (e->next_idle_check == 0 || e->next_idle_check > r->last_rx_ms + r->idle_ms))
    e->next_idle_check = r->last_rx_ms + r->idle_ms;
  r->prev = NULL;
  r->next = e->all;
  if (e->all) e->all->prev = r;
  e->all = r;
  e->nreq++;
  return 0;
}

static void finish(engine *e, request *r, CURLcode code) {
  curl_multi_remove_handle(e->multi, r->easy);
  r->code = code;
  r->state = REQ_DONE;
  r->completion_due = 1;
  /* stays on the ready list with its engine pointer until dispatched */
  all_unlink(e, r);
  engine_mark_ready(r);
}

/* The request is being freed: take it out of every list without leaving a
 * trace (no completion to dispatch). */
void engine_forget(request *r) {
  engine *e = r->eng;
  if (!e) return;
  if (r->state == REQ_RUNNING) {
    curl_multi_remove_handle(e->multi, r->easy);
    detach(e, r);
    r->state = REQ_DONE;
    r->reason = REASON_CANCELLED;
  } else {
    ready_unlink(e, r);
  }
  r->eng = NULL;
}

void engine_cancel(request *r) {
  engine *e = r->eng;
  if (!e) return;
  if (r->state == REQ_RUNNING) {
    r->reason = REASON_CANCELLED;
    finish(e, r, CURLE_ABORTED_BY_CALLBACK);
  } else {
    /* done, completion pending: drop it from the ready list */
    ready_unlink(e, r);
    r->eng = NULL;
  }
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
  d = due - engine_now_ms();
  return d < 0 ? 0 : (long)d;
}

static void socket_action(engine *e, curl_socket_t fd, int mask) {
  int running = 0;
  curl_multi_socket_action(e->multi, fd, mask, &running);
}

/* The idle timeout is ours, not libcurl's low-speed check: that one does not
 * run while a response has not started, and a model that thinks for a minute
 * before its first byte is exactly what idle_timeout is for. */
static void check_idle(engine *e) {
  long long now = engine_now_ms(), next = 0;
  request *r = e->all;
  if (!e->next_idle_check || now < e->next_idle_check) return;
  while (r) {
    request *nx = r->next;
    if (r->idle_ms && r->state == REQ_RUNNING && !r->paused) {  /* paused: the bytes are here */
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

int engine_drive(engine *e, int wait_ms) {
  long t;
  int n, i;
  if (e->closed) return -1;
  t = engine_timeout_ms(e);
  /* libcurl's timer and the next idle check, both in engine_timeout_ms */
  if (t >= 0 && (wait_ms < 0 || t < wait_ms)) wait_ms = (int)t;
  if (wait_ms < 0) wait_ms = 0;
#ifdef LLMCHAT_EPOLL
  {
    struct epoll_event evs[256];  /* 1,000 paced streams: fewer, fuller wake-ups */
    n = epoll_wait(e->epfd, evs, 256, wait_ms);
    for (i = 0; i < n; i++) {
      int mask = 0;
      if (evs[i].events & (EPOLLIN | EPOLLHUP)) mask |= CURL_CSELECT_IN;
      if (evs[i].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
      if (evs[i].events & EPOLLERR) mask |= CURL_CSELECT_ERR;
      socket_action(e, evs[i].data.fd, mask);
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
    }
  }
#endif
  if (e->deadline_ms >= 0 && engine_now_ms() >= e->deadline_ms) {
    e->deadline_ms = -1;
    socket_action(e, CURL_SOCKET_TIMEOUT, 0);
  }
  collect(e);
  check_idle(e);
  return e->nreq;
}
