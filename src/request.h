/* One request: a libcurl easy handle, its callbacks and the buffers they fill, and the
 * consumer its SSE events go to.
 *
 * A request knows nothing of the engine but what it is handed: an easy handle at
 * request_init (the engine's pool gives it, request_release hands it back) and a `notify`
 * hook that the engine sets when it adds the request (called when new records are pending,
 * so the engine can queue the request for dispatch). No Lua here: libcurl's callbacks only
 * append bytes to C buffers and feed the SSE parser and the consumer; Lua runs after
 * libcurl returns. */
#ifndef LLMCHAT_REQUEST_H
#define LLMCHAT_REQUEST_H

#include <stdio.h>

#include <curl/curl.h>

#include "buf.h"
#include "clock.h"
#include "consumer.h"
#include "sse.h"

/* Flow control: a stream whose undelivered records reach this many is paused (libcurl
 * keeps the bytes) until Lua has taken them. Memory stays bounded however fast the server
 * and however slow the consumer. */
#define MAX_PENDING_DELTAS 512
/* The same for a request whose events go to an iterator in one array per dispatch: the
 * array keeps them all alive until the loop has taken them, so a smaller batch keeps the
 * garbage collector's work (and the cache footprint) down. */
#define MAX_PENDING_BATCH 128

/* why a transfer ended, beyond libcurl's own result code */
typedef enum req_reason {
  REASON_NONE = 0,   /* libcurl finished; see code */
  REASON_TOO_LARGE,  /* body (decoded) or assembled stream exceeded max_body */
  REASON_SSE,        /* SSE framing error (a line over the cap) */
  REASON_JSON,       /* a stream chunk that is not JSON */
  REASON_CANCELLED,  /* the caller cancelled */
  REASON_NOMEM,      /* out of memory in a callback */
  REASON_HEADERS,    /* response headers over the cap */
  REASON_IDLE,       /* no byte for idle_ms */
  REASON_FILE        /* the upload file could not be read */
} req_reason;

typedef enum req_state { REQ_IDLE = 0, REQ_RUNNING, REQ_DONE } req_state;

struct request;
typedef void (*request_notify_fn)(void *ud, struct request *r);

typedef struct request {
  CURL *easy;
  struct curl_slist *hdrs; /* request headers, owned while libcurl may read them */
  char *body;              /* request body, owned likewise */
  size_t body_len;
  curl_mime *mime;         /* multipart body (uploads), owned likewise */

  /* response */
  bytebuf resp_headers;    /* "name\0value\0" pairs, names lower-cased */
  size_t nheaders;         /* pairs in resp_headers */
  bytebuf resp_body;       /* body when not parsed as SSE */
  char *download;          /* a 2xx body goes to this file instead (streamed to disk) */
  FILE *download_fp;       /* open while the body is written */
  int download_ok;         /* the status is 2xx: the body goes to the file */
  size_t body_bytes;       /* decoded body bytes received (buffered or written) */
  size_t max_body;         /* decoded body bytes, or assembled stream bytes */
  size_t max_line;         /* SSE line cap */
  long idle_ms;            /* no byte for this long ends the transfer; 0: off */
  long long last_rx_ms;    /* when the last byte arrived (or the transfer began) */
  int want_stream;         /* the caller asked for SSE */
  int mode_decided, sse_mode;
  sse_parser sse;
  consumer cons;
  size_t stream_bytes;     /* bytes of SSE body seen */

  req_state state;
  req_reason reason;
  CURLcode code;
  char errbuf[CURL_ERROR_SIZE];
  char msg[256];           /* message for REASON_SSE / REASON_JSON */
  int paused;              /* on_write returned CURL_WRITEFUNC_PAUSE: libcurl holds the rest */
  size_t max_pending;      /* MAX_PENDING_DELTAS, or MAX_PENDING_BATCH */

  /* set by the engine that runs it; the request only calls notify */
  request_notify_fn notify;
  void *notify_ud;
  /* the engine's bookkeeping: request.c never reads or writes these */
  struct {
    void *eng;                    /* the engine while added (until completion is dispatched) */
    struct request *next, *prev;  /* requests in flight */
    struct request *ready_next;   /* requests with something to dispatch */
    int in_ready;
    unsigned ready_gen;           /* dispatch generation when it became ready */
    int completion_due;           /* done, completion not yet dispatched */
    int held;                     /* Lua asked to hold its records (a full iterator queue) */
  } link;
} request;

/* 0, or -1 without an easy handle. The request takes `easy` (reset, or new). */
int  request_init(request *r, CURL *easy, consumer_kind kind);
void request_reset_response(request *r); /* before a (re)start */
/* The transfer ended (the engine calls it): a download file is flushed and closed. */
void request_done(request *r);
/* Frees the buffers; returns the easy handle for the caller to pool or clean up. */
CURL *request_release(request *r);
const char *request_header(const request *r, const char *name); /* lower-case name */

#endif
