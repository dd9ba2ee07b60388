/* The engine: every request of a Lua state runs through one libcurl multi handle driven
 * with the multi-socket interface (epoll on Linux, poll(2) elsewhere). It owns the multi
 * handle, the sockets, libcurl's timer, the idle-timeout checks, the queue of requests
 * with something to dispatch, and a pool of easy handles. Every change of a request's
 * state goes through here: start, pause/resume (flow control), idle re-arm, cancel,
 * completion, and its dispatch bookkeeping. No Lua here.
 *
 * Dependency: engine -> request -> consumer -> (sse, stream). The request never calls the
 * engine; it calls the notify hook the engine sets in engine_add. */
#ifndef LLMCHAT_ENGINE_H
#define LLMCHAT_ENGINE_H

#include <curl/curl.h>

#include "request.h"

typedef struct sockinfo {
  curl_socket_t fd;
  int what;                     /* CURL_POLL_* */
  struct sockinfo *next, *prev;
} sockinfo;

#define ENGINE_MAX_CONNS 256

typedef struct engine {
  CURLM *multi;
  int epfd;
  int idle_epfd;                /* idle connections (see engine.c); -1 when off */
  long long deadline_ms;        /* libcurl's timer, -1 when none */
  int nreq;                     /* requests in flight */
  request *all;                 /* list of requests in flight */
  request *ready_head, *ready_tail;
  sockinfo *socks;              /* sockets libcurl wants watched (transfers in progress) */
  int nsocks;
  int dispatching;              /* Lua callbacks fired by a dispatch are running */
  long long next_idle_check;    /* when to look for idle transfers again; 0: none */
  unsigned gen;                 /* dispatch generation: a poll dispatches what was ready
                                   when it began, not what its own dispatch made ready */
  int closed;
  CURL *pool[32];               /* easy handles kept for reuse (reset, not re-created) */
  int npool;
  /* every connection socket libcurl opened and has not closed (open/close socket
   * callbacks): the idle ones are checked for stray bytes before a new transfer */
  curl_socket_t conns[ENGINE_MAX_CONNS];
  int nconns;
  int inject;                   /* fault injection for specs (core.inject) */
  unsigned long stale_conns;    /* connections discarded for bytes that arrived while idle */
} engine;

int  engine_init(engine *e);                 /* 0, or -1 */
void engine_close(engine *e);                /* cancels every request; idempotent */

/* An easy handle for a new request (from the pool, reset), NULL when libcurl has none. */
CURL *engine_easy(engine *e);
/* A request is being freed: out of every list, no completion, its handle pooled. */
void engine_release(engine *e, request *r);

int  engine_add(engine *e, request *r);      /* starts a transfer: 0 or -1 */
void engine_cancel(engine *e, request *r);   /* stops a transfer at once (reason cancelled) */
/* Lua took r's pending records: clears them, resumes a paused transfer, re-arms its idle
 * timer. */
void engine_consumed(engine *e, request *r);
/* Held: the request is not dispatched (its records wait, and flow control pauses the
 * transfer once they reach the cap) until released; releasing queues it again. */
void engine_hold(engine *e, request *r, int on);
/* r's completion was dispatched (or dropped): r leaves the engine. */
void engine_completed(engine *e, request *r);
int  engine_is_added(const request *r);      /* running, or done with completion pending */

/* Waits up to wait_ms for activity, lets libcurl move the transfers. With budget_us > 0,
 * stops handing sockets to libcurl once that much time has passed (the rest are still
 * readable next time). Returns the requests in flight. */
int  engine_drive(engine *e, int wait_ms, long long budget_us);
long engine_timeout_ms(const engine *e);     /* when to drive again, -1 if never */
/* The next request with something to dispatch; with `only`, that request or NULL. */
request *engine_pop_ready(engine *e, request *only);
int  engine_has_ready(const engine *e);
void engine_begin_dispatch(engine *e);       /* what this dispatch makes ready waits */
void engine_end_dispatch(engine *e);

#endif
