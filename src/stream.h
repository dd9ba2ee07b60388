/* Stream assembly: chat.completion.chunk payloads folded into one result, in C.
 * Plain C (no Lua): fuzzed and benchmarked alone (stream.c, stream_cache.c, jscan.c, buf.h).
 * The Lua glue is lstream.c.
 *
 * INTERFACE CONTRACT (the request code in core.c/transport.c calls exactly these;
 * the struct layout is shared by stream.c and its Lua glue lstream.c only):
 *
 *   void   stream_init(stream_asm *a);
 *   int    stream_chunk(stream_asm *a, const char *json, size_t len);
 *            one SSE data payload (never "[DONE]"); returns STREAM_OK, STREAM_EJSON
 *            (invalid JSON; stream_errmsg() says why), STREAM_ENOMEM
 *   void   stream_expect(stream_asm *a, size_t n);  n more bytes of SSE are coming at once:
 *            room for their raw chunk text in one allocation (a hint; failing is harmless)
 *   size_t stream_pending(const stream_asm *a);     deltas not yet delivered to Lua
 *   void   stream_clear_pending(stream_asm *a);     after delivery: drops those deltas
 *                                                   and the raw chunk text they refer to
 *   int    stream_finished(const stream_asm *a);    1 once any choice has a finish_reason
 *   const char *stream_error_json(const stream_asm *a, size_t *len);  raw JSON of an
 *            in-stream "error" object, NULL if none
 *   const char *stream_errmsg(const stream_asm *a);
 *   void   stream_free(stream_asm *a);
 *   void   stream_forget_caches(stream_asm *a);     empties the caches (no result changes)
 *
 * ASSEMBLY RULES (spec/stream_assembly_spec.lua checks each; spec/json_diff_spec.lua holds a
 * Lua reference of the same rules over lua-cjson and compares on thousands of chunks):
 *
 * A chunk is parsed and validated completely before anything is applied: an invalid chunk
 * (STREAM_EJSON) leaves the assembler exactly as it was. Validity is jscan.h's (lua-cjson
 * strict, with the differences listed there). A valid chunk whose top level is not an object
 * is counted and otherwise ignored. Duplicate keys: the last one wins, at every level, as in
 * a table decoded by lua-cjson. Unknown keys are skipped (still validated). A value of an
 * unexpected type counts as absent. "Index" below means a JSON number whose value (as strtod
 * reads it) is an integer in 0..2^31-1; any other index value counts as absent.
 *
 * Top level
 *   id, model, system_fingerprint   the first non-empty string wins;
 *   created                         the first nonzero number wins.
 *     (first, not last: Azure's first chunk carries id "", model "", created 0 and later
 *     chunks the real values; OpenRouter's usage-only chunk may repeat them.)
 *   usage      the raw JSON text of the last object or array seen, from "usage", or, when a
 *              chunk has none, from "x_groq"."usage" (Groq). null never erases it.
 *   error      the raw JSON text of the last "error" that is an object, array or string
 *              (OpenRouter sends {"error":{...}} under HTTP 200); see stream_error_json.
 *   choices    an array; absent, empty or not an array (Azure's prompt_filter_results chunk)
 *              is fine. An element counts only if it is an object with at least one of
 *              index, delta, finish_reason (any value, null included); others are skipped.
 * Per choice (choice.index, absent = 0; at most STREAM_MAX_CHOICES distinct choices, the
 * elements of further ones are dropped)
 *   finish_reason   the last non-empty string; null or "" never erases it.
 *   delta.role      the first non-empty string.
 *   delta.reasoning_content / delta.reasoning (DeepSeek / OpenRouter): one of them per delta:
 *                   reasoning_content if it is a non-empty string, else reasoning if it is,
 *                   else "" if either is a string.
 *   delta.content, the reasoning above, delta.refusal: strings appended to the choice's
 *                   text; the text exists (maybe "") once any string arrived. A non-empty
 *                   string makes a delta record; order within one choice of one chunk:
 *                   reasoning, content, refusal, then tool calls.
 *   delta.tool_calls   an array of fragments. A fragment counts only if it is an object that
 *     carries an id, a type or a function.name (non-empty strings) or a function.arguments
 *     string; others ({}, non-objects, wrong types) are skipped. Each fragment is merged
 *     into the choice's list of calls (in order of first appearance, at most
 *     STREAM_MAX_CALLS; fragments needing more are dropped). With i = its index,
 *     id = its "id" if a non-empty string:
 *       index i present: the target is the latest call with index i, unless there is none,
 *         or the fragment has an id and that call has a different one (providers that give
 *         every call index 0 with distinct ids): then a new call with index i.
 *       no index, an id: the latest call with that id, else a new call without index.
 *       no index, no id: the call touched last in this choice, else a new call.
 *     On the target: id, type, function.name are set if still unset (first non-empty
 *     string); function.arguments (a string) is appended. The fragment makes a delta record
 *     when it carries an id, a name or non-empty arguments (its text: the arguments, maybe "").
 *
 * After STREAM_ENOMEM the assembler stays consistent (it can be read, fed and freed) but
 * may hold part of that chunk.
 *
 * Delta records (pending until stream_clear_pending): choice slot, kind, call position,
 * whether the fragment carried id/name, the text (a slice of the choice's accumulated text
 * or of the call's arguments: never copied twice) and the raw chunk text, copied once per
 * chunk that produced records. The caller must clear pending deltas regularly, or they grow.
 */
#ifndef LLMCHAT_STREAM_H
#define LLMCHAT_STREAM_H

#include <stddef.h>

#include "buf.h"

enum { STREAM_OK = 0, STREAM_EJSON = 1, STREAM_ENOMEM = 2 };

/* kinds of delta records */
enum { STREAM_CONTENT = 0, STREAM_REASONING = 1, STREAM_REFUSAL = 2, STREAM_TOOL_CALL = 3 };

/* delta record flags */
enum { STREAM_HAS_ID = 1, STREAM_HAS_NAME = 2 };

#define STREAM_MAX_CHOICES 256
#define STREAM_MAX_CALLS   1024

/* The common byte buffer (buf.h); p is NULL until the first byte. */
typedef bytebuf stream_buf;

typedef struct stream_call {
  long index; /* wire index, -1 when the fragments carried none */
  stream_buf id, type, name, args;
} stream_call;

typedef struct stream_choice {
  long index; /* wire index */
  stream_buf content, reasoning, refusal;
  unsigned char has_content, has_reasoning, has_refusal;
  stream_buf finish_reason, role; /* len 0 = unset */
  stream_call *calls;
  size_t ncalls, capcalls;
  size_t last_call; /* the call touched last, (size_t)-1 none */
} stream_choice;

typedef struct stream_delta {
  size_t off, len;         /* the text: a slice of the target buffer */
  size_t raw_off, raw_len; /* the chunk it came from, in stream_asm.raw */
  unsigned choice;         /* slot in stream_asm.choices (not the wire index) */
  unsigned tool;           /* STREAM_TOOL_CALL: position of the call in the choice */
  unsigned char kind;      /* STREAM_CONTENT ... */
  unsigned char flags;     /* STREAM_HAS_ID | STREAM_HAS_NAME */
} stream_delta;

/* private: a chunk's parse, made by stream.c's parse phase and read by its apply phase
 * (the records are defined in stream_cache.h: the chunk templates store and replay them) */
struct stream_sc_choice;
struct stream_sc_call;
typedef struct stream_parse {
  struct stream_sc_choice *sc; /* the chunk's choices */
  size_t nsc, capsc;
  struct stream_sc_call *scc;  /* their tool-call fragments */
  size_t nscc, capscc;
} stream_parse;

struct stream_cache; /* private: the prefix cache and the chunk templates (stream_cache.h) */

typedef struct stream_asm {
  /* the result so far (read by lstream.c) */
  stream_buf id, model, system_fingerprint; /* len 0 = unset */
  double created;                           /* 0 = unset */
  stream_buf usage, error;                  /* raw JSON, len 0 = none */
  size_t chunks;                            /* valid chunks applied */
  stream_choice *choices;                   /* in order of first appearance */
  size_t nchoices, capchoices;
  int finished;
  /* pending delta records and the raw chunks they refer to */
  stream_delta *pending;
  size_t npending, cappending;
  stream_buf raw;
  /* private: per-chunk scratch, reused so that a chunk costs no allocation */
  stream_parse parse;
  stream_buf tmp;
  size_t last_choice;
  /* private: the caches, allocated with the first chunk (NULL: none, results the same) */
  struct stream_cache *cache;
  char errmsg[160];
} stream_asm;

void   stream_init(stream_asm *a);
int    stream_chunk(stream_asm *a, const char *json, size_t len);
void   stream_expect(stream_asm *a, size_t n);
size_t stream_pending(const stream_asm *a);
void   stream_clear_pending(stream_asm *a);
int    stream_finished(const stream_asm *a);
const char *stream_error_json(const stream_asm *a, size_t *len);
const char *stream_errmsg(const stream_asm *a);
void   stream_free(stream_asm *a);
/* Empties the prefix cache and the chunk templates (they never change a result; the
 * fuzzer compares an assembler that forgets them before every chunk with one that does
 * not). */
void   stream_forget_caches(stream_asm *a);

/* Helpers for the glue: the bytes a delta record's text refers to, and a choice slot's
 * wire index order (fills order[0..nchoices) with slots sorted by wire index). */
const char *stream_delta_text(const stream_asm *a, const stream_delta *d);
void stream_choice_order(const stream_asm *a, unsigned *order);

#endif
