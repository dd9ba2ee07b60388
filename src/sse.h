/* Server-Sent Events parser (WHATWG event-stream rules), plain C, no Lua.
 * Usable alone: fuzzed and benchmarked without the rest of llmchat. */
#ifndef LLMCHAT_SSE_H
#define LLMCHAT_SSE_H

#include <stddef.h>

enum { SSE_OK = 0, SSE_STOP = 1, SSE_ELINE = 2, SSE_ENOMEM = 3 };

#define SSE_DEFAULT_MAX_LINE ((size_t)16 * 1024 * 1024)

typedef struct sse_event {
  const char *type; size_t type_len; /* "message" when the block had no event field */
  const char *data; size_t data_len; /* data lines joined by "\n" */
  const char *id;   size_t id_len;   /* last event ID in effect at dispatch ("" if none) */
  long retry;                        /* latest valid retry field seen so far, -1 if none */
} sse_event;

/* Called once per dispatched event; pointers are valid only during the call.
 * Return nonzero to stop: sse_feed then returns SSE_STOP. */
typedef int (*sse_event_fn)(void *ud, const sse_event *ev);

/* The struct is public so a request can embed it; fields are private to sse.c. */
typedef struct sse_parser {
  int todo_fields_defined_by_sse_c;
} sse_parser;

void sse_init(sse_parser *p, size_t max_line, sse_event_fn fn, void *ud);
int  sse_feed(sse_parser *p, const char *buf, size_t len);
int  sse_finish(sse_parser *p);  /* end of input: an undispatched block is discarded */
void sse_free(sse_parser *p);    /* releases buffers; sse_init may be called again */
const char *sse_strerror(int code);

#endif
