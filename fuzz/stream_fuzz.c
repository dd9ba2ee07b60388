/* libFuzzer target for the stream assembler (src/stream.c and its caches, src/stream_cache.c)
 * and its JSON scanner (src/jscan.c).
 *
 *   make fuzz-stream FUZZ_TIME=60      (mk/stream.mk; clang, ASan + UBSan)
 *
 * The input is a stream: chunks separated by '\n' (JSON whitespace, so no valid chunk needs
 * one). Each chunk goes to stream_chunk on one assembler. Beyond "no crash, no leak":
 *   - the accept/reject decision must equal that of a naive recursive validator written here
 *     independently of jscan.c, with the same language (jscan.h);
 *   - a rejected chunk must leave the assembler unchanged;
 *   - every pending delta must point inside the buffers it refers to;
 *   - memory stays bounded: pending deltas are cleared as a consumer would;
 *   - the prefix cache and the chunk template change nothing: a second assembler whose
 *     caches are emptied before every chunk returns the same codes and ends in the same
 *     state, byte for byte.
 * Any disagreement aborts, so libFuzzer saves the input. */
#include "jscan.h"
#include "stream.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the naive validator: recursive descent, byte at a time ---- */

typedef struct naive {
  const uint8_t *p, *e;
  int depth;
} naive;

static int nv_value(naive *v);

static void nv_ws(naive *v) {
  while (v->p < v->e && (*v->p == ' ' || *v->p == '\t' || *v->p == '\n' || *v->p == '\r')) v->p++;
}

static int nv_hex(naive *v, unsigned *out) {
  unsigned x = 0;
  int i;
  for (i = 0; i < 4; i++) {
    uint8_t c;
    if (v->p >= v->e) return 0;
    c = *v->p++;
    if (c >= '0' && c <= '9') x = x * 16 + (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') x = x * 16 + (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') x = x * 16 + (unsigned)(c - 'A' + 10);
    else return 0;
  }
  *out = x;
  return 1;
}

static int nv_string(naive *v) {
  v->p++; /* the quote */
  for (;;) {
    uint8_t c;
    if (v->p >= v->e) return 0;
    c = *v->p++;
    if (c == '"') return 1;
    if (c == 0) return 0;
    if (c != '\\') continue;
    if (v->p >= v->e) return 0;
    c = *v->p++;
    if (c == 'u') {
      unsigned hi, lo;
      if (!nv_hex(v, &hi)) return 0;
      if (hi >= 0xDC00 && hi <= 0xDFFF) return 0;
      if (hi >= 0xD800 && hi <= 0xDBFF) {
        if (v->e - v->p < 2 || v->p[0] != '\\' || v->p[1] != 'u') return 0;
        v->p += 2;
        if (!nv_hex(v, &lo) || lo < 0xDC00 || lo > 0xDFFF) return 0;
      }
    } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
      return 0;
    }
  }
}

static int nv_digits(naive *v) {
  const uint8_t *s = v->p;
  while (v->p < v->e && *v->p >= '0' && *v->p <= '9') v->p++;
  return v->p > s;
}

static int nv_number(naive *v) {
  if (*v->p == '-') v->p++;
  if (v->p >= v->e) return 0;
  if (*v->p == '0') v->p++;
  else if (!nv_digits(v)) return 0;
  if (v->p < v->e && *v->p == '.') {
    v->p++;
    if (!nv_digits(v)) return 0;
  }
  if (v->p < v->e && (*v->p == 'e' || *v->p == 'E')) {
    v->p++;
    if (v->p < v->e && (*v->p == '+' || *v->p == '-')) v->p++;
    if (!nv_digits(v)) return 0;
  }
  return 1;
}

static int nv_word(naive *v, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(v->e - v->p) < n || memcmp(v->p, w, n) != 0) return 0;
  v->p += n;
  return 1;
}

static int nv_container(naive *v, uint8_t close) {
  if (++v->depth > JSCAN_MAX_DEPTH) return 0;
  v->p++;
  nv_ws(v);
  if (v->p < v->e && *v->p == close) {
    v->p++;
    v->depth--;
    return 1;
  }
  for (;;) {
    nv_ws(v);
    if (close == '}') {
      if (v->p >= v->e || *v->p != '"' || !nv_string(v)) return 0;
      nv_ws(v);
      if (v->p >= v->e || *v->p != ':') return 0;
      v->p++;
    }
    if (!nv_value(v)) return 0;
    nv_ws(v);
    if (v->p >= v->e) return 0;
    if (*v->p == ',') { v->p++; continue; }
    if (*v->p != close) return 0;
    v->p++;
    v->depth--;
    return 1;
  }
}

static int nv_value(naive *v) {
  nv_ws(v);
  if (v->p >= v->e) return 0;
  switch (*v->p) {
  case '{': return nv_container(v, '}');
  case '[': return nv_container(v, ']');
  case '"': return nv_string(v);
  case 't': return nv_word(v, "true");
  case 'f': return nv_word(v, "false");
  case 'n': return nv_word(v, "null");
  default:
    if (*v->p == '-' || (*v->p >= '0' && *v->p <= '9')) return nv_number(v);
    return 0;
  }
}

static int naive_valid(const uint8_t *p, size_t n) {
  naive v;
  v.p = p;
  v.e = p + n;
  v.depth = 0;
  if (!nv_value(&v)) return 0;
  nv_ws(&v);
  return v.p == v.e;
}

/* ---- invariants ---- */

typedef struct snapshot {
  size_t chunks, nchoices, npending, raw, bytes, calls;
  double created;
} snapshot;

static void snap(const stream_asm *a, snapshot *s) {
  size_t i, j;
  memset(s, 0, sizeof *s);
  s->chunks = a->chunks;
  s->nchoices = a->nchoices;
  s->npending = a->npending;
  s->raw = a->raw.len;
  s->created = a->created;
  s->bytes = a->id.len + a->model.len + a->system_fingerprint.len + a->usage.len + a->error.len;
  for (i = 0; i < a->nchoices; i++) {
    const stream_choice *c = &a->choices[i];
    s->bytes += c->content.len + c->reasoning.len + c->refusal.len + c->finish_reason.len +
                c->role.len;
    s->calls += c->ncalls;
    for (j = 0; j < c->ncalls; j++)
      s->bytes += c->calls[j].id.len + c->calls[j].name.len + c->calls[j].type.len +
                  c->calls[j].args.len;
  }
}

static void check_pending(const stream_asm *a) {
  size_t i;
  unsigned order[STREAM_MAX_CHOICES];
  if (a->nchoices > STREAM_MAX_CHOICES) abort();
  for (i = 0; i < a->npending; i++) {
    const stream_delta *d = &a->pending[i];
    const stream_choice *c;
    const stream_buf *b;
    const char *t;
    if (d->choice >= a->nchoices || d->kind > STREAM_TOOL_CALL) abort();
    c = &a->choices[d->choice];
    if (d->kind == STREAM_TOOL_CALL) {
      if (d->tool >= c->ncalls || c->ncalls > STREAM_MAX_CALLS) abort();
      b = &c->calls[d->tool].args;
      if ((d->flags & STREAM_HAS_ID) && c->calls[d->tool].id.len == 0) abort();
      if ((d->flags & STREAM_HAS_NAME) && c->calls[d->tool].name.len == 0) abort();
    } else {
      b = d->kind == STREAM_CONTENT ? &c->content : d->kind == STREAM_REASONING ? &c->reasoning
                                                                                : &c->refusal;
      if (d->len == 0) abort(); /* an empty text delta makes no record */
    }
    if (d->off > b->len || d->len > b->len - d->off) abort();
    t = stream_delta_text(a, d);
    if (d->len && t != b->p + d->off) abort();
    if (d->raw_off > a->raw.len || d->raw_len > a->raw.len - d->raw_off) abort();
  }
  stream_choice_order(a, order);
  for (i = 1; i < a->nchoices; i++)
    if (a->choices[order[i - 1]].index >= a->choices[order[i]].index) abort();
}

static int same_buf(const stream_buf *x, const stream_buf *y) {
  return x->len == y->len && (x->len == 0 || memcmp(x->p, y->p, x->len) == 0);
}

/* a (cache on) and b (cache off) hold the same result and the same pending deltas */
static void check_same(const stream_asm *a, const stream_asm *b) {
  size_t i, j;
  if (a->chunks != b->chunks || a->nchoices != b->nchoices || a->npending != b->npending ||
      a->finished != b->finished || a->created != b->created || !same_buf(&a->id, &b->id) ||
      !same_buf(&a->model, &b->model) || !same_buf(&a->system_fingerprint, &b->system_fingerprint) ||
      !same_buf(&a->usage, &b->usage) || !same_buf(&a->error, &b->error) || !same_buf(&a->raw, &b->raw))
    abort();
  for (i = 0; i < a->nchoices; i++) {
    const stream_choice *x = &a->choices[i], *y = &b->choices[i];
    if (x->index != y->index || x->ncalls != y->ncalls || x->has_content != y->has_content ||
        x->has_reasoning != y->has_reasoning || x->has_refusal != y->has_refusal ||
        !same_buf(&x->content, &y->content) || !same_buf(&x->reasoning, &y->reasoning) ||
        !same_buf(&x->refusal, &y->refusal) || !same_buf(&x->finish_reason, &y->finish_reason) ||
        !same_buf(&x->role, &y->role))
      abort();
    for (j = 0; j < x->ncalls; j++) {
      const stream_call *p = &x->calls[j], *q = &y->calls[j];
      if (p->index != q->index || !same_buf(&p->id, &q->id) || !same_buf(&p->type, &q->type) ||
          !same_buf(&p->name, &q->name) || !same_buf(&p->args, &q->args))
        abort();
    }
  }
  for (i = 0; i < a->npending; i++)
    if (memcmp(&a->pending[i], &b->pending[i], sizeof a->pending[i]) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  stream_asm a, b;
  size_t start = 0, n = 0;
  stream_init(&a);
  stream_init(&b);
  while (start <= size) {
    const uint8_t *nl = memchr(data + start, '\n', size - start);
    size_t len = (nl ? (size_t)(nl - data) : size) - start;
    snapshot before, after;
    int rc, valid;
    snap(&a, &before);
    rc = stream_chunk(&a, (const char *)data + start, len);
    stream_forget_caches(&b); /* no prefix cache and no templates for b */
    if (stream_chunk(&b, (const char *)data + start, len) != rc) abort();
    check_same(&a, &b);
    valid = naive_valid(data + start, len);
    if (rc == STREAM_ENOMEM) abort(); /* no allocation limit is set below libFuzzer's */
    if ((rc == STREAM_OK) != valid) abort();
    if (rc == STREAM_EJSON) {
      snap(&a, &after);
      if (memcmp(&before, &after, sizeof before) != 0) abort();
      if (strncmp(stream_errmsg(&a), "invalid JSON: ", 14) != 0) abort();
    }
    check_pending(&a);
    (void)stream_finished(&a);
    (void)stream_error_json(&a, NULL);
    if (++n % 3 == 0) { /* a consumer delivers now and then */
      stream_clear_pending(&a);
      stream_clear_pending(&b);
    }
    if (!nl) break;
    start += len + 1;
  }
  stream_free(&a);
  stream_free(&a); /* idempotent */
  stream_free(&b);
  return 0;
}
