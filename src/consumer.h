/* What a request does with the SSE events of its answer: a per-request consumer.
 *
 * Plain C, no Lua, no libcurl. The request feeds each SSE event to its consumer; the
 * consumer keeps what Lua has not taken yet ("pending" records) and what the final result
 * needs. Two kinds:
 *
 *   CONSUMER_CHAT    chat.completion.chunk payloads folded by the stream assembler
 *                    (stream.h): pending records are text deltas (content, reasoning,
 *                    refusal, tool-call fragments). "data: [DONE]" ends the stream; an
 *                    `event: error` block is kept as the stream's error.
 *   CONSUMER_EVENTS  every event as it came: its type (the `event:` field, "message" when
 *                    absent), data and last event id. For any SSE API (the Responses API's
 *                    typed events are assembled from these in Lua). "data: [DONE]" is
 *                    recorded as the end marker, not as an event.
 *
 * Memory: pending records live until consumer_clear; the request pauses its transfer when
 * consumer_pending reaches its cap, so they stay bounded. `assembled` counts the bytes a
 * stream has produced (chat: text, reasoning, refusal and tool arguments together; events:
 * data bytes): the request compares it with max_response_size. */
#ifndef LLMCHAT_CONSUMER_H
#define LLMCHAT_CONSUMER_H

#include <stddef.h>

#include "buf.h"
#include "sse.h"
#include "stream.h"

typedef enum consumer_kind { CONSUMER_CHAT = 0, CONSUMER_EVENTS = 1 } consumer_kind;

enum { CONSUMER_OK = 0, CONSUMER_EJSON = 1, CONSUMER_ENOMEM = 2 };

/* one recorded event of CONSUMER_EVENTS: offsets into consumer.evbuf */
typedef struct consumer_event {
  size_t type_off, type_len, data_off, data_len, id_off, id_len;
} consumer_event;

typedef struct consumer {
  consumer_kind kind;
  int done_marker;          /* "data: [DONE]" seen */
  unsigned long events;     /* SSE events seen */
  size_t assembled;         /* bytes produced so far (see above) */
  /* CONSUMER_CHAT */
  stream_asm as;
  bytebuf error;            /* data of an `event: error` block */
  /* CONSUMER_EVENTS */
  consumer_event *evs;
  size_t nevs, capevs;
  bytebuf evbuf;
  char errmsg[200];         /* why the last consumer_event returned an error */
} consumer;

void   consumer_init(consumer *c, consumer_kind kind);
void   consumer_reset(consumer *c);   /* a new attempt: forget everything, keep the kind */
void   consumer_free(consumer *c);
/* One SSE event: CONSUMER_OK, CONSUMER_EJSON (errmsg says why), CONSUMER_ENOMEM. */
int    consumer_event_in(consumer *c, const sse_event *ev);
void   consumer_expect(consumer *c, size_t n);        /* n bytes of SSE are coming at once */
size_t consumer_pending(const consumer *c);
void   consumer_clear(consumer *c);                   /* drops the pending records */
/* The stream said it is complete: [DONE], or (chat) a finish_reason. */
int    consumer_finished(const consumer *c);
/* Raw JSON (or text) of an in-stream error, NULL if none. */
const char *consumer_error(const consumer *c, size_t *len);

#endif
