/* The stream assembler's two caches: a speed trick behind an interface (plain C, no Lua).
 *
 * stream.c is the reference path: every chunk can be parsed in full by one jscan pass and
 * applied. The caches only skip scanning work that would give the same records again; they
 * never change a result. stream_forget_caches (stream.h) empties them, and the stream
 * fuzzer compares an assembler that forgets them before every chunk with one that does not.
 *
 * THE PREFIX CACHE
 * Every chunk of a stream begins with the same bytes: {"id":"chatcmpl-...","object":
 * "chat.completion.chunk","created":...,"model":...,"system_fingerprint":..., and then
 * "choices". The scanner is a pure function of the bytes it has read, so a chunk that
 * begins with the same P bytes as an earlier one is in the same state after them: same
 * depth, same members parsed, at the same offsets. The parse records that state when it
 * meets the top-level "choices" key (stream_cache_record_prefix), and the next chunk whose
 * first P bytes are equal (one memcmp) resumes there instead of scanning them again
 * (stream_cache_resume): about half the work of a typical chunk. A chunk that differs
 * anywhere in those bytes is scanned in full, and its prefix is recorded.
 * The saved bytes run one byte past the resume point: a number that ends the prefix
 * ("created":1744) ends there only because the byte after it is not a digit, so that byte
 * must match too ("created":1744186429 must not resume after 1744). Strings, literals and
 * brackets end within their own bytes.
 *
 * THE CHUNK TEMPLATES
 * Past its first chunks, a stream repeats one shape: the same keys, numbers, nulls and
 * punctuation, byte for byte, with new string values (the delta's text, the provider's
 * "obfuscation" padding). The parse never looks inside a string value (only at keys and at
 * value types), so a chunk that equals an earlier one outside its string values parses into
 * the same records, with the spans moved to its own strings. A template is the bytes of a
 * chunk parsed in full plus that parse, its string values recorded by the scanner
 * (jscan.rec, which stream_cache_watch points at the caller's scratch). A new chunk is
 * compared with it segment by segment (memcmp of the bytes between string values, each new
 * string value scanned and validated in place); when every segment matches, the records
 * are copied with their spans moved (stream_cache_lookup), and only the apply phase runs.
 * Any difference (a key, a null where a string was, a number) falls back to the full parse,
 * which then records the new template (stream_cache_record). Two templates are kept: a
 * tool-call stream alternates two shapes.
 *
 * INTERFACE (stream.c calls exactly these; every one accepts a NULL cache and then does
 * nothing, or returns 0):
 *
 *   stream_cache *stream_cache_new(void);   NULL when memory is exhausted (no caches)
 *   void stream_cache_free(stream_cache *c);
 *   void stream_cache_forget(stream_cache *c);     empties both caches
 *   int  stream_cache_lookup(c, w, json, len, ps, t);
 *          before a full parse: 1 when json matches a template; ps and *t then hold
 *          exactly the records a full parse of json would have produced
 *   void stream_cache_watch(c, w, s);
 *          before a full parse with scanner s: s records its string values into w
 *   int  stream_cache_resume(c, s, t, first);
 *          after jscan_enter on the chunk's top-level '{': 1 when the prefix cache applies;
 *          s, *t and *first are then as if the prefix had been scanned
 *   void stream_cache_record_prefix(c, s, at, t, first);
 *          at the top-level "choices" key (at: where the key's scan began; first: the
 *          object iterator's flag there) of a chunk that did not resume
 *   void stream_cache_record(c, s, json, len, ps, t);
 *          after a full parse of json that succeeded: it becomes a template
 *
 * w is a stream_cache_scratch on the caller's stack (a stream keeps only its templates
 * and the prefix: a thousand streams at once should not each carry the working arrays),
 * used by one chunk: lookup, then watch and the full parse, then record. */
#ifndef LLMCHAT_STREAM_CACHE_H
#define LLMCHAT_STREAM_CACHE_H

#include <stddef.h>

#include "jscan.h"
#include "stream.h"

/* ---- the records of a chunk's parse (spans into the chunk's bytes) ---- */

typedef struct stream_sc_choice {
  long index;                   /* -1: absent or not a valid index */
  int known;                    /* index, delta or finish_reason occurred (any value) */
  jspan finish, role, content, rcontent, reasoning, refusal;
  size_t tc_first, tc_end;      /* its fragments in stream_parse.scc */
} sc_choice;

typedef struct stream_sc_call {
  long index;
  jspan id, type, name, args;
} sc_call;

typedef struct sc_top {
  jspan id, model, sysfp, usage, xusage, error;
  double created;
} sc_top;

/* ---- the caches ---- */

#define STREAM_CACHE_MAXV 32 /* string values a template may have (a content chunk has ~7) */

/* Private to stream_cache.c; public only so that the caller can put it on its stack. */
typedef struct stream_cache_scratch {
  jspan rec[STREAM_CACHE_MAXV];                 /* the full parse's string values */
  size_t noff[STREAM_CACHE_MAXV], nn[STREAM_CACHE_MAXV]; /* a match's new string values */
  unsigned char nesc[STREAM_CACHE_MAXV];
  ptrdiff_t shift[STREAM_CACHE_MAXV + 1];       /* and the running change of length */
} stream_cache_scratch;

typedef struct stream_cache stream_cache;

stream_cache *stream_cache_new(void);
void stream_cache_free(stream_cache *c);
void stream_cache_forget(stream_cache *c);
int  stream_cache_lookup(stream_cache *c, stream_cache_scratch *w, const char *json, size_t len,
                         stream_parse *ps, sc_top *t);
/* inline: it runs before every full parse and only points the scanner's recorder at w */
static inline void stream_cache_watch(stream_cache *c, stream_cache_scratch *w, jscan *s) {
  if (!c) return;
  s->rec = w->rec;
  s->caprec = STREAM_CACHE_MAXV;
}
int  stream_cache_resume(stream_cache *c, jscan *s, sc_top *t, int *first);
void stream_cache_record_prefix(stream_cache *c, const jscan *s, const char *at, const sc_top *t,
                                int first);
void stream_cache_record(stream_cache *c, const jscan *s, const char *json, size_t len,
                         const stream_parse *ps, const sc_top *t);

#endif
