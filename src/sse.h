/* Server-Sent Events parser (WHATWG event-stream rules), plain C, no Lua.
 * Usable alone: fuzzed and benchmarked without the rest of llmchat.
 *
 * Rules (HTML "event stream interpretation"): lines end in LF, CR or CRLF (a CRLF split
 * across two feeds is one line ending); a UTF-8 BOM at the very start of the stream is
 * dropped; ':' lines are comments; "field: value" strips one leading space from the value;
 * a line without a colon is a field with an empty value; data/event/id/retry as the spec
 * says (an id containing NUL is ignored; a retry that is not all ASCII digits, or empty,
 * is ignored; a retry too large for a long is clamped to LONG_MAX); a blank line
 * dispatches. Input may be split at any byte: the events are the same.
 *
 * Bounds: a line longer than max_line bytes (terminator excluded), or a block whose data
 * buffer (each data value plus "\n") would exceed max_line bytes, is SSE_ELINE. Memory is
 * therefore bounded by a small multiple of max_line, never by the stream's length.
 *
 * Errors are sticky: after SSE_ELINE or SSE_ENOMEM every sse_feed/sse_finish returns the
 * same code until sse_free + sse_init.
 *
 * Zero-copy: when a block's only data line lies inside the buffer being fed, ev->data
 * points into that buffer; lines that span feeds, and blocks of several data lines, are
 * copied. Either way the event's pointers are valid only during the callback. The parser
 * never reads buf[len] or beyond and never needs NUL termination. */
#ifndef LLMCHAT_SSE_H
#define LLMCHAT_SSE_H

#include <stddef.h>

#include "buf.h"

enum { SSE_OK = 0, SSE_STOP = 1, SSE_ELINE = 2, SSE_ENOMEM = 3 };

#define SSE_DEFAULT_MAX_LINE ((size_t)16 * 1024 * 1024)

/* Hidden even in builds without -fvisibility=hidden (e.g. a LuaRocks builtin build):
 * only luaopen_llmchat_core leaves the module. */
#if defined(__GNUC__) || defined(__clang__)
#define SSE_API __attribute__((visibility("hidden")))
#else
#define SSE_API
#endif

typedef struct sse_event {
  const char *type; size_t type_len; /* "message" when the block had no event field */
  const char *data; size_t data_len; /* data lines joined by "\n" */
  const char *id;   size_t id_len;   /* last event ID in effect at dispatch ("" if none) */
  long retry;                        /* latest valid retry field seen so far, -1 if none */
} sse_event;

/* Called once per dispatched event; pointers are valid only during the call.
 * Return nonzero to stop: sse_feed then returns SSE_STOP. */
typedef int (*sse_event_fn)(void *ud, const sse_event *ev);

/* The parser's buffers are the common byte buffer (buf.h: plain C, no Lua). */
typedef bytebuf sse_buf;

/* The struct is public so a request can embed it; fields are private to sse.c. */
typedef struct sse_parser {
  sse_event_fn fn;
  void *ud;
  size_t max_line;
  sse_buf line;         /* the start of a line that has not ended yet (spans feeds) */
  sse_buf data;         /* owned data buffer: each value followed by "\n" */
  sse_buf type;         /* event type buffer */
  sse_buf id;           /* last event ID buffer (persists across events) */
  const char *data_ref; /* zero-copy data: one value inside the buffer being fed */
  size_t data_ref_len;  /* (the implicit "\n" after it is not stored) */
  size_t consumed;      /* bytes of the last sse_feed's input taken (see sse_consumed) */
  long retry;           /* -1 until a valid retry field */
  int has_ref;          /* data_ref holds the block's data (data.len == 0 then) */
  int cr_pending;       /* the last byte seen was a CR: skip one LF at the next feed */
  int bom;              /* 0..2: bytes of a BOM matched at stream start; 3: past the start */
  int err;              /* sticky SSE_ELINE / SSE_ENOMEM, else SSE_OK */
} sse_parser;

/* max_line 0 means SSE_DEFAULT_MAX_LINE. Allocates nothing. */
SSE_API void sse_init(sse_parser *p, size_t max_line, sse_event_fn fn, void *ud);

/* Parses len bytes; calls fn for each complete event. Returns SSE_OK, SSE_STOP (fn returned
 * nonzero), SSE_ELINE or SSE_ENOMEM.
 * On SSE_STOP the parser is consistent and positioned just after the blank line that
 * dispatched the stopping event: sse_consumed() tells how many bytes of buf were taken,
 * and feeding buf + sse_consumed(p) later resumes exactly as if no stop had happened.
 * A caller that abandons the parser after a stop need do nothing but sse_free. */
SSE_API int  sse_feed(sse_parser *p, const char *buf, size_t len);

/* Bytes of the last sse_feed's buffer that were consumed: len after SSE_OK, the offset just
 * past the dispatching blank line after SSE_STOP, 0 after an error. */
SSE_API size_t sse_consumed(const sse_parser *p);

/* End of input: an undispatched block and an unterminated last line are discarded. The
 * parser is then at the start of a new stream (a BOM may follow); the last event ID and the
 * retry value are kept, as EventSource keeps them across reconnections. Returns SSE_OK or
 * the sticky error. Never calls fn. */
SSE_API int  sse_finish(sse_parser *p);

SSE_API void sse_free(sse_parser *p);    /* releases buffers; sse_init may be called again */
SSE_API const char *sse_strerror(int code);

#endif
