/* Transport: one request (a libcurl easy handle and the buffers it fills) and
 * the engine that drives every request of a Lua state through one libcurl
 * multi handle with the multi-socket interface.
 *
 * No Lua here. libcurl's callbacks only append bytes to C buffers and feed
 * the SSE parser and the stream assembler; Lua runs after libcurl returns. */
#ifndef LLMCHAT_TRANSPORT_H
#define LLMCHAT_TRANSPORT_H

#include <curl/curl.h>

#include "buf.h"
#include "sse.h"
#include "stream.h"

/* Flow control: a stream whose undelivered deltas reach this many is paused
 * (libcurl keeps the bytes) until Lua has taken them. Memory stays bounded
 * however fast the server and however slow the consumer. */
#define MAX_PENDING_DELTAS 512
/* The same for a request whose events go to an iterator in one array per dispatch: the
 * array keeps them all alive until the loop has taken them, so a smaller batch keeps the
 * garbage collector's work (and the cache footprint) down. */
#define MAX_PENDING_BATCH 128

/* why a transfer ended, beyond libcurl's own result code */
typedef enum req_reason {
  REASON_NONE = 0,   /* libcurl finished; see code */
  REASON_TOO_LARGE,  /* body exceeded max_body */
  REASON_SSE,        /* SSE framing error (a line over the cap) */
  REASON_JSON,       /* a stream chunk that is not JSON */
  REASON_CANCELLED,  /* the caller cancelled */
  REASON_NOMEM,      /* out of memory in a callback */
  REASON_HEADERS,    /* response headers over the cap */
  REASON_IDLE        /* no byte for idle_ms */
} req_reason;

typedef enum req_state { REQ_IDLE = 0, REQ_RUNNING, REQ_DONE } req_state;

struct engine;
typedef struct engine engine;

typedef struct request {
  struct engine *eng;      /* set while added to the engine's multi handle */
  struct engine *home;     /* the engine whose pool the easy handle returns to */
  CURL *easy;
  struct curl_slist *hdrs; /* request headers, owned while libcurl may read them */
  char *body;              /* request body, owned likewise */
  size_t body_len;

  /* response */
  bytebuf resp_headers;        /* "name\0value\0" pairs, names lower-cased */
  bytebuf resp_body;           /* body when not parsed as SSE */
  size_t max_body;
  size_t max_line;         /* SSE line cap */
  long idle_ms;            /* no byte for this long ends the transfer; 0: off */
  long long last_rx_ms;    /* when the last byte arrived (or the transfer began) */
  int want_stream;         /* the caller asked for SSE */
  int mode_decided, sse_mode;
  sse_parser sse;
  stream_asm as;
  int done_marker;         /* "data: [DONE]" seen */
  unsigned long events;    /* SSE events seen */
  size_t stream_bytes;     /* bytes of SSE body seen */

  req_state state;
  req_reason reason;
  CURLcode code;
  char errbuf[CURL_ERROR_SIZE];
  char msg[256];           /* message for REASON_SSE / REASON_JSON */

  /* engine bookkeeping */
  struct request *next, *prev;  /* requests added to the engine */
  struct request *ready_next;   /* requests with something to dispatch */
  int in_ready;
  unsigned ready_gen;           /* the engine's dispatch generation when it became ready */
  int paused;                   /* libcurl holds the rest until Lua took the pending deltas */
  size_t max_pending;           /* MAX_PENDING_DELTAS, or MAX_PENDING_BATCH */
  int completion_due;           /* done, completion not yet dispatched */
} request;

typedef struct sockinfo {
  curl_socket_t fd;
  int what;                     /* CURL_POLL_* */
  struct sockinfo *next, *prev;
} sockinfo;

struct engine {
  CURLM *multi;
  int epfd;
  long long deadline_ms;        /* libcurl's timer, -1 when none */
  int nreq;                     /* requests in flight */
  request *all;                 /* list of requests in flight */
  request *ready_head, *ready_tail;
  sockinfo *socks;
  int nsocks;
  int dispatching;              /* Lua callbacks fired by poll are running */
  long long next_idle_check;    /* when to look for idle transfers again */
  unsigned gen;                 /* dispatch generation: a poll dispatches what was ready
                                   when it began, not what its own dispatch made ready */
  int closed;
  CURL *pool[32];               /* easy handles kept for reuse (reset, not re-created) */
  int npool;
};

/* request */
int  request_init(request *r, engine *home);  /* 0, or -1 when libcurl cannot make a handle */
void request_reset_response(request *r);
void request_free(request *r);          /* detaches from the engine first */
const char *request_header(const request *r, const char *name);  /* lower-case name */

/* engine */
int  engine_init(engine *e);            /* 0, or -1 */
void engine_close(engine *e);           /* removes every request; idempotent */
int  engine_add(engine *e, request *r); /* starts a transfer: 0 or -1 */
void engine_cancel(request *r);         /* stops a transfer at once (reason cancelled) */
void engine_forget(request *r);         /* before freeing: out of every list, no completion */
int  engine_drive(engine *e, int wait_ms);  /* waits up to wait_ms for activity, performs */
long engine_timeout_ms(const engine *e);    /* libcurl's next timeout, -1 if none */
void engine_mark_ready(request *r);
request *engine_pop_ready(engine *e, request *only);
long long engine_now_ms(void);

#endif
