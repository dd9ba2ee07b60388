/* Stream assembly: chat.completion.chunk payloads folded into one result, in C.
 * Plain C (no Lua): fuzzed and benchmarked alone. The Lua glue is lstream.c.
 *
 * INTERFACE CONTRACT (the request code in core.c/transport.c calls exactly these;
 * the struct layout and everything else is private to stream.c):
 *
 *   void   stream_init(stream_asm *a);
 *   int    stream_chunk(stream_asm *a, const char *json, size_t len);
 *            one SSE data payload (never "[DONE]"); returns STREAM_OK, STREAM_EJSON
 *            (invalid JSON; stream_errmsg() says why), STREAM_ENOMEM
 *   size_t stream_pending(const stream_asm *a);     deltas not yet delivered to Lua
 *   void   stream_clear_pending(stream_asm *a);     after delivery: drops those deltas
 *                                                   and the raw chunk text they refer to
 *   int    stream_finished(const stream_asm *a);    1 once any choice has a finish_reason
 *   const char *stream_error_json(const stream_asm *a, size_t *len);  raw JSON of an
 *            in-stream "error" object, NULL if none
 *   const char *stream_errmsg(const stream_asm *a);
 *   void   stream_free(stream_asm *a);
 */
#ifndef LLMCHAT_STREAM_H
#define LLMCHAT_STREAM_H

#include <stddef.h>

enum { STREAM_OK = 0, STREAM_EJSON = 1, STREAM_ENOMEM = 2 };

typedef struct stream_asm {
  int todo_fields_defined_by_stream_c;
} stream_asm;

#endif
