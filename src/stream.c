/* Stream assembly: chat.completion.chunk payloads folded into one result (rules in stream.h).
 *
 * Two phases per chunk. Parse: one jscan pass validates the whole chunk and records, for the
 * few keys we use, where their values are (jspans into the caller's bytes, nothing decoded);
 * a repeated key overwrites its record, so the last one wins as in a decoded table. Apply:
 * only once the chunk is known valid, the recorded strings are decoded straight into the
 * result's buffers. So an invalid chunk changes nothing, and a valid one costs no allocation
 * once the buffers have grown.
 *
 * This is the reference path. stream_cache.c lets most chunks skip most of the parse (a
 * prefix shared with earlier chunks, a chunk shaped like an earlier one); it only ever
 * hands back the records this parse would have made. */
#include "stream.h"
#include "buf.h"
#include "jscan.h"
#include "stream_cache.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOMEM (-2) /* parse/apply status next to jscan's -1 */
#define NONE ((size_t)-1)

enum {
  K_OTHER, K_ID, K_MODEL, K_CREATED, K_SYSFP, K_CHOICES, K_USAGE, K_XGROQ, K_ERROR,
  K_INDEX, K_DELTA, K_FINISH, K_ROLE, K_CONTENT, K_RCONTENT, K_REASONING, K_REFUSAL,
  K_TOOL_CALLS, K_TYPE, K_FUNCTION, K_NAME, K_ARGUMENTS
};

#define IS(lit) (memcmp(k, lit, sizeof(lit) - 1) == 0)

static int key_lookup(const char *k, size_t n) {
  switch (n) {
  case 2: if (IS("id")) return K_ID; break;
  case 4:
    if (IS("role")) return K_ROLE;
    if (IS("type")) return K_TYPE;
    if (IS("name")) return K_NAME;
    break;
  case 5:
    if (IS("index")) return K_INDEX;
    if (IS("delta")) return K_DELTA;
    if (IS("model")) return K_MODEL;
    if (IS("usage")) return K_USAGE;
    if (IS("error")) return K_ERROR;
    break;
  case 6: if (IS("x_groq")) return K_XGROQ; break;
  case 7:
    if (IS("content")) return K_CONTENT;
    if (IS("choices")) return K_CHOICES;
    if (IS("created")) return K_CREATED;
    if (IS("refusal")) return K_REFUSAL;
    break;
  case 8: if (IS("function")) return K_FUNCTION; break;
  case 9:
    if (IS("reasoning")) return K_REASONING;
    if (IS("arguments")) return K_ARGUMENTS;
    break;
  case 10: if (IS("tool_calls")) return K_TOOL_CALLS; break;
  case 13: if (IS("finish_reason")) return K_FINISH; break;
  case 17: if (IS("reasoning_content")) return K_RCONTENT; break;
  case 18: if (IS("system_fingerprint")) return K_SYSFP; break;
  }
  return K_OTHER;
}

/* A key spelled with escapes ("con\u0074ent") is the same key once decoded, as in cjson.
 * Our longest key is 18 bytes, at most 6 bytes of escape each. */
static int key_id(const jspan *k) {
  char buf[18 * 6];
  if (!k->esc) return key_lookup(k->p, k->n);
  if (k->n > sizeof buf) return K_OTHER;
  return key_lookup(buf, jscan_unescape(k->p, k->n, buf));
}

/* ---- decoded strings into buffers ---- */

/* Appends a validated string span, decoded. */
static int buf_append_str(stream_buf *b, const jspan *v) {
  if (v->n == 0) return 0;
  if (buf_reserve(b, v->n)) return -1;
  if (v->esc) {
    b->len += jscan_unescape(v->p, v->n, b->p + b->len);
  } else {
    memcpy(b->p + b->len, v->p, v->n);
    b->len += v->n;
  }
  return 0;
}

static int buf_set_str(stream_buf *b, const jspan *v) {
  size_t len = b->len;
  b->len = 0;
  if (buf_reserve(b, v->n)) { b->len = len; return -1; }
  return buf_append_str(b, v);
}

/* ---- parse phase ---- */

static int is_str(const jspan *v) { return v->type == JSCAN_STRING; }
static int is_nonempty_str(const jspan *v) { return v->type == JSCAN_STRING && v->n > 0; }
static int is_container(const jspan *v) {
  return v->type == JSCAN_OBJECT || v->type == JSCAN_ARRAY;
}

static int span_number(stream_asm *a, const jspan *v, double *d) {
  a->tmp.len = 0;
  if (v->n >= 64 && buf_reserve(&a->tmp, v->n + 1)) return NOMEM;
  *d = jscan_number(v->p, v->n, a->tmp.p);
  return 0;
}

/* An index: a number whose value is an integer in 0..2^31-1, else -1 (absent). */
static int scan_index(stream_asm *a, jscan *s, long *out) {
  jspan v;
  double d;
  *out = -1;
  if (jscan_value(s, &v)) return -1;
  if (v.type != JSCAN_NUMBER) return 0;
  if (span_number(a, &v, &d)) return NOMEM;
  if (d >= 0 && d <= 2147483647.0 && d == (double)(long)d) *out = (long)d;
  return 0;
}

static int skip(jscan *s) {
  jspan v;
  return jscan_value(s, &v);
}

static int parse_function(stream_asm *a, jscan *s, size_t ci) {
  jspan k;
  int first = 1, r;
  if (jscan_enter(s, '{')) return -1;
  while ((r = jscan_next_key(s, &k, &first)) > 0) {
    switch (key_id(&k)) {
    case K_NAME: r = jscan_value(s, &a->parse.scc[ci].name); break;
    case K_ARGUMENTS: r = jscan_value(s, &a->parse.scc[ci].args); break;
    default: r = skip(s); break;
    }
    if (r) return r;
  }
  return r;
}

static int parse_call(stream_asm *a, jscan *s, size_t ci) {
  jspan k;
  int first = 1, r;
  if (jscan_enter(s, '{')) return -1;
  while ((r = jscan_next_key(s, &k, &first)) > 0) {
    switch (key_id(&k)) {
    case K_INDEX: r = scan_index(a, s, &a->parse.scc[ci].index); break;
    case K_ID: r = jscan_value(s, &a->parse.scc[ci].id); break;
    case K_TYPE: r = jscan_value(s, &a->parse.scc[ci].type); break;
    case K_FUNCTION:
      a->parse.scc[ci].name.type = a->parse.scc[ci].args.type = JSCAN_NONE;
      r = jscan_peek(s) == '{' ? parse_function(a, s, ci) : skip(s);
      break;
    default: r = skip(s); break;
    }
    if (r) return r;
  }
  return r;
}

static int parse_tool_calls(stream_asm *a, jscan *s) {
  int first = 1, r;
  if (jscan_enter(s, '[')) return -1;
  while ((r = jscan_next_elem(s, &first)) > 0) {
    if (jscan_peek(s) == '{') {
      size_t ci = a->parse.nscc;
      if (buf_grow_array((void **)&a->parse.scc, &a->parse.capscc, ci + 1, sizeof *a->parse.scc)) return NOMEM;
      memset(&a->parse.scc[ci], 0, sizeof a->parse.scc[ci]);
      a->parse.scc[ci].index = -1;
      a->parse.nscc++;
      r = parse_call(a, s, ci);
    } else {
      r = skip(s);
    }
    if (r) return r;
  }
  return r;
}

static int parse_delta(stream_asm *a, jscan *s, size_t chi) {
  jspan k;
  int first = 1, r;
  if (jscan_enter(s, '{')) return -1;
  while ((r = jscan_next_key(s, &k, &first)) > 0) {
    sc_choice *c = &a->parse.sc[chi];
    switch (key_id(&k)) {
    case K_ROLE: r = jscan_value(s, &c->role); break;
    case K_CONTENT: r = jscan_value(s, &c->content); break;
    case K_RCONTENT: r = jscan_value(s, &c->rcontent); break;
    case K_REASONING: r = jscan_value(s, &c->reasoning); break;
    case K_REFUSAL: r = jscan_value(s, &c->refusal); break;
    case K_TOOL_CALLS:
      a->parse.nscc = c->tc_first; /* a repeated key: the last one wins */
      r = jscan_peek(s) == '[' ? parse_tool_calls(a, s) : skip(s);
      break;
    default: r = skip(s); break;
    }
    if (r) return r;
  }
  return r;
}

static int parse_choice(stream_asm *a, jscan *s, size_t chi) {
  jspan k;
  int first = 1, r;
  if (jscan_enter(s, '{')) return -1;
  while ((r = jscan_next_key(s, &k, &first)) > 0) {
    sc_choice *c = &a->parse.sc[chi];
    switch (key_id(&k)) {
    case K_INDEX: c->known = 1; r = scan_index(a, s, &c->index); break;
    case K_FINISH: c->known = 1; r = jscan_value(s, &c->finish); break;
    case K_DELTA:
      c->known = 1;
      c->role.type = c->content.type = c->rcontent.type = JSCAN_NONE;
      c->reasoning.type = c->refusal.type = JSCAN_NONE;
      a->parse.nscc = c->tc_first;
      r = jscan_peek(s) == '{' ? parse_delta(a, s, chi) : skip(s);
      break;
    default: r = skip(s); break;
    }
    if (r) return r;
  }
  return r;
}

static int parse_choices(stream_asm *a, jscan *s) {
  int first = 1, r;
  if (jscan_enter(s, '[')) return -1;
  while ((r = jscan_next_elem(s, &first)) > 0) {
    if (jscan_peek(s) == '{') {
      size_t chi = a->parse.nsc;
      if (buf_grow_array((void **)&a->parse.sc, &a->parse.capsc, chi + 1, sizeof *a->parse.sc)) return NOMEM;
      memset(&a->parse.sc[chi], 0, sizeof a->parse.sc[chi]);
      a->parse.sc[chi].index = -1;
      a->parse.sc[chi].tc_first = a->parse.nscc;
      a->parse.nsc++;
      r = parse_choice(a, s, chi);
      a->parse.sc[chi].tc_end = a->parse.nscc;
    } else {
      r = skip(s);
    }
    if (r) return r;
  }
  return r;
}

static int parse_xgroq(jscan *s, sc_top *t) {
  jspan k;
  int first = 1, r;
  if (jscan_enter(s, '{')) return -1;
  while ((r = jscan_next_key(s, &k, &first)) > 0) {
    r = key_id(&k) == K_USAGE ? jscan_value(s, &t->xusage) : skip(s);
    if (r) return r;
  }
  return r;
}

static int parse_top(stream_asm *a, jscan *s, sc_top *t) {
  jspan k, v;
  int first = 1, r, resumed, id;
  int c = jscan_peek(s);
  if (c != '{') return jscan_value(s, &v); /* valid JSON, not a chunk: nothing to use */
  if (jscan_enter(s, c)) return -1;
  resumed = stream_cache_resume(a->cache, s, t, &first);
  for (;;) {
    const char *at = s->p;
    int first_at = first;
    if ((r = jscan_next_key(s, &k, &first)) <= 0) break;
    switch (id = key_id(&k)) {
    case K_ID: r = jscan_value(s, &t->id); break;
    case K_MODEL: r = jscan_value(s, &t->model); break;
    case K_SYSFP: r = jscan_value(s, &t->sysfp); break;
    case K_USAGE: r = jscan_value(s, &t->usage); break;
    case K_ERROR: r = jscan_value(s, &t->error); break;
    case K_CREATED:
      t->created = 0;
      r = jscan_value(s, &v);
      if (!r && v.type == JSCAN_NUMBER) r = span_number(a, &v, &t->created);
      break;
    case K_CHOICES:
      if (!resumed) {
        stream_cache_record_prefix(a->cache, s, at, t, first_at);
        resumed = 1; /* a second "choices" key must not save a longer prefix */
      }
      a->parse.nsc = a->parse.nscc = 0;
      r = jscan_peek(s) == '[' ? parse_choices(a, s) : skip(s);
      break;
    case K_XGROQ:
      t->xusage.type = JSCAN_NONE;
      r = jscan_peek(s) == '{' ? parse_xgroq(s, t) : skip(s);
      break;
    default: r = skip(s); break;
    }
    if (r) return r;
  }
  return r;
}

/* ---- apply phase ---- */

/* The slot of the choice with wire index idx, created if new; -1 past the cap, NOMEM. */
static long choice_slot(stream_asm *a, long idx) {
  size_t i;
  stream_choice *c;
  if (a->last_choice < a->nchoices && a->choices[a->last_choice].index == idx)
    return (long)a->last_choice;
  for (i = 0; i < a->nchoices; i++)
    if (a->choices[i].index == idx) { a->last_choice = i; return (long)i; }
  if (a->nchoices >= STREAM_MAX_CHOICES) return -1;
  if (buf_grow_array((void **)&a->choices, &a->capchoices, a->nchoices + 1, sizeof *a->choices))
    return NOMEM;
  c = &a->choices[a->nchoices];
  memset(c, 0, sizeof *c);
  c->index = idx;
  c->last_call = NONE;
  a->last_choice = a->nchoices;
  return (long)a->nchoices++;
}

/* Room for every record this chunk can make and for its raw text, reserved before anything
 * is applied: a record can then not fail half way. */
static int reserve_records(stream_asm *a, size_t len) {
  size_t most = a->parse.nsc * 3 + a->parse.nscc;
  if (most == 0) return 0;
  if (buf_grow_array((void **)&a->pending, &a->cappending, a->npending + most, sizeof *a->pending))
    return NOMEM;
  if (buf_reserve(&a->raw, len)) return NOMEM;
  return 0;
}

typedef struct apply_ctx {
  stream_asm *a;
  const char *json;
  size_t len;
  size_t raw_off; /* NONE until this chunk's text is copied */
} apply_ctx;

static void record(apply_ctx *x, unsigned slot, int kind, unsigned tool, int flags,
                   size_t off, size_t len) {
  stream_asm *a = x->a;
  stream_delta *d;
  if (x->raw_off == NONE) { /* room reserved by reserve_records */
    x->raw_off = a->raw.len;
    memcpy(a->raw.p + a->raw.len, x->json, x->len);
    a->raw.len += x->len;
  }
  d = &a->pending[a->npending++];
  d->off = off;
  d->len = len;
  d->raw_off = x->raw_off;
  d->raw_len = x->len;
  d->choice = slot;
  d->tool = tool;
  d->kind = (unsigned char)kind;
  d->flags = (unsigned char)flags;
}

static int apply_text(apply_ctx *x, unsigned slot, int kind, const jspan *v) {
  stream_choice *c = &x->a->choices[slot];
  stream_buf *b = kind == STREAM_CONTENT ? &c->content :
                  kind == STREAM_REASONING ? &c->reasoning : &c->refusal;
  size_t off = b->len;
  if (!is_str(v)) return 0;
  if (buf_append_str(b, v)) return NOMEM;
  if (kind == STREAM_CONTENT) c->has_content = 1;
  else if (kind == STREAM_REASONING) c->has_reasoning = 1;
  else c->has_refusal = 1;
  if (b->len > off) record(x, slot, kind, 0, 0, off, b->len - off);
  return 0;
}

static int same_bytes(const stream_buf *b, const char *p, size_t n) {
  return b->len == n && memcmp(b->p, p, n) == 0;
}

static int apply_call(apply_ctx *x, unsigned slot, const sc_call *f) {
  stream_asm *a = x->a;
  stream_choice *c = &a->choices[slot];
  stream_call *call;
  int has_id = is_nonempty_str(&f->id), has_name = is_nonempty_str(&f->name);
  const char *id = f->id.p;
  size_t idn = f->id.n, k, target = NONE, off;
  if (!has_id && !has_name && !is_nonempty_str(&f->type) && !is_str(&f->args))
    return 0; /* carries nothing: {} or a fragment of unexpected types */
  if (has_id && f->id.esc) { /* compare ids decoded */
    a->tmp.len = 0;
    if (buf_append_str(&a->tmp, &f->id)) return NOMEM;
    id = a->tmp.p;
    idn = a->tmp.len;
  }
  if (f->index >= 0) {
    for (k = c->ncalls; k-- > 0;) {
      if (c->calls[k].index == f->index) {
        if (!has_id || c->calls[k].id.len == 0 || same_bytes(&c->calls[k].id, id, idn))
          target = k;
        break;
      }
    }
  } else if (has_id) {
    for (k = c->ncalls; k-- > 0;)
      if (same_bytes(&c->calls[k].id, id, idn)) { target = k; break; }
  } else {
    target = c->last_call;
  }
  if (target == NONE) {
    if (c->ncalls >= STREAM_MAX_CALLS) return 0;
    if (buf_grow_array((void **)&c->calls, &c->capcalls, c->ncalls + 1, sizeof *c->calls)) return NOMEM;
    call = &c->calls[c->ncalls];
    memset(call, 0, sizeof *call);
    call->index = f->index;
    target = c->ncalls++;
  }
  call = &c->calls[target];
  c->last_call = target;
  if (has_id && call->id.len == 0 && buf_set(&call->id, id, idn)) return NOMEM;
  if (is_nonempty_str(&f->type) && call->type.len == 0 && buf_set_str(&call->type, &f->type))
    return NOMEM;
  if (has_name && call->name.len == 0 && buf_set_str(&call->name, &f->name)) return NOMEM;
  off = call->args.len;
  if (is_str(&f->args) && buf_append_str(&call->args, &f->args)) return NOMEM;
  if (has_id || has_name || call->args.len > off)
    record(x, slot, STREAM_TOOL_CALL, (unsigned)target,
           (has_id ? STREAM_HAS_ID : 0) | (has_name ? STREAM_HAS_NAME : 0),
           off, call->args.len - off);
  return 0;
}

static int apply_choice(apply_ctx *x, const sc_choice *sc) {
  stream_asm *a = x->a;
  long r;
  unsigned slot;
  stream_choice *c;
  const jspan *why;
  size_t j;
  if (!sc->known) return 0; /* {} or {"foo":1}: not a choice */
  r = choice_slot(a, sc->index < 0 ? 0 : sc->index);
  if (r == NOMEM) return NOMEM;
  if (r < 0) return 0; /* past STREAM_MAX_CHOICES */
  slot = (unsigned)r;
  c = &a->choices[slot];
  if (is_nonempty_str(&sc->finish)) {
    if (buf_set_str(&c->finish_reason, &sc->finish)) return NOMEM;
    a->finished = 1;
  }
  if (c->role.len == 0 && is_nonempty_str(&sc->role) && buf_set_str(&c->role, &sc->role))
    return NOMEM;
  why = is_nonempty_str(&sc->rcontent) ? &sc->rcontent :
        is_nonempty_str(&sc->reasoning) ? &sc->reasoning :
        is_str(&sc->rcontent) ? &sc->rcontent : &sc->reasoning;
  if (apply_text(x, slot, STREAM_REASONING, why)) return NOMEM;
  if (apply_text(x, slot, STREAM_CONTENT, &sc->content)) return NOMEM;
  if (apply_text(x, slot, STREAM_REFUSAL, &sc->refusal)) return NOMEM;
  for (j = sc->tc_first; j < sc->tc_end; j++)
    if (apply_call(x, slot, &a->parse.scc[j])) return NOMEM;
  return 0;
}

static int apply_top(stream_asm *a, const sc_top *t) {
  const jspan *u = is_container(&t->usage) ? &t->usage :
                   is_container(&t->xusage) ? &t->xusage : NULL;
  if (a->id.len == 0 && is_nonempty_str(&t->id) && buf_set_str(&a->id, &t->id)) return NOMEM;
  if (a->model.len == 0 && is_nonempty_str(&t->model) && buf_set_str(&a->model, &t->model))
    return NOMEM;
  if (a->system_fingerprint.len == 0 && is_nonempty_str(&t->sysfp) &&
      buf_set_str(&a->system_fingerprint, &t->sysfp))
    return NOMEM;
  if (a->created == 0 && t->created == t->created) a->created = t->created;
  if (u && buf_set(&a->usage, u->p, u->n)) return NOMEM;
  if (is_container(&t->error) && buf_set(&a->error, t->error.p, t->error.n)) return NOMEM;
  if (is_str(&t->error) && buf_set(&a->error, t->error.p - 1, t->error.n + 2)) return NOMEM;
  return 0;
}

/* ---- interface ---- */

void stream_init(stream_asm *a) {
  memset(a, 0, sizeof *a);
  a->last_choice = NONE;
}

int stream_chunk(stream_asm *a, const char *json, size_t len) {
  stream_cache_scratch w;
  jscan s;
  sc_top t;
  apply_ctx x;
  size_t i;
  int r;
  if (!json) json = ""; /* an empty payload may come as NULL: no arithmetic on NULL */
  a->errmsg[0] = '\0';
  if (!a->cache) a->cache = stream_cache_new(); /* NULL (no memory): the full parse only */
  /* a template match fills t and the records itself; otherwise the full parse */
  r = 0;
  if (!stream_cache_lookup(a->cache, &w, json, len, &a->parse, &t)) {
    memset(&t, 0, sizeof t);
    a->parse.nsc = a->parse.nscc = 0;
    jscan_init(&s, json, len);
    stream_cache_watch(a->cache, &w, &s);
    r = parse_top(a, &s, &t);
    if (r == 0) r = jscan_finish(&s);
    if (r == -1) {
      snprintf(a->errmsg, sizeof a->errmsg, "invalid JSON: %s at character %zu", s.err,
               s.errpos + 1);
      return STREAM_EJSON;
    }
    if (r == 0) stream_cache_record(a->cache, &s, json, len, &a->parse, &t);
  }
  if (r == 0) r = reserve_records(a, len);
  if (r == 0) {
    /* from here on the chunk counts; only a text buffer's growth can fail, and then the
     * result holds part of the chunk */
    a->chunks++;
    x.a = a;
    x.json = json;
    x.len = len;
    x.raw_off = NONE;
    r = apply_top(a, &t);
    for (i = 0; r == 0 && i < a->parse.nsc; i++) r = apply_choice(&x, &a->parse.sc[i]);
  }
  if (r) {
    snprintf(a->errmsg, sizeof a->errmsg, "not enough memory");
    return STREAM_ENOMEM;
  }
  return STREAM_OK;
}

size_t stream_pending(const stream_asm *a) { return a->npending; }

/* A read's chunks bring about the read's size of raw text (an event cut by the previous
 * read brings its start too; reserve_records still grows the buffer then). Reserved once
 * up front, a 16 KB read takes one allocation instead of doubling up from 64 bytes
 * through eight reallocs that copy what came before; a paced stream's small reads keep
 * it small. */
void stream_expect(stream_asm *a, size_t n) {
  (void)buf_reserve(&a->raw, n);
}

void stream_clear_pending(stream_asm *a) {
  a->npending = 0;
  a->raw.len = 0;
  /* after a burst of huge chunks, give the memory back: streaming memory stays flat */
  if (a->raw.cap > ((size_t)1 << 20)) buf_free(&a->raw);
  if (a->cappending > 65536) {
    free(a->pending);
    a->pending = NULL;
    a->cappending = 0;
  }
}

int stream_finished(const stream_asm *a) { return a->finished; }

void stream_forget_caches(stream_asm *a) { stream_cache_forget(a->cache); }

const char *stream_error_json(const stream_asm *a, size_t *len) {
  if (len) *len = a->error.len;
  return a->error.len ? a->error.p : NULL;
}

const char *stream_errmsg(const stream_asm *a) { return a->errmsg; }

const char *stream_delta_text(const stream_asm *a, const stream_delta *d) {
  const stream_choice *c = &a->choices[d->choice];
  const stream_buf *b = d->kind == STREAM_CONTENT ? &c->content :
                        d->kind == STREAM_REASONING ? &c->reasoning :
                        d->kind == STREAM_REFUSAL ? &c->refusal : &c->calls[d->tool].args;
  return b->p ? b->p + d->off : "";
}

void stream_choice_order(const stream_asm *a, unsigned *order) {
  size_t i, j;
  for (i = 0; i < a->nchoices; i++) { /* few choices: insertion sort */
    unsigned v = (unsigned)i;
    for (j = i; j > 0 && a->choices[order[j - 1]].index > a->choices[v].index; j--)
      order[j] = order[j - 1];
    order[j] = v;
  }
}

void stream_free(stream_asm *a) {
  size_t i, j;
  for (i = 0; i < a->nchoices; i++) {
    stream_choice *c = &a->choices[i];
    buf_free(&c->content);
    buf_free(&c->reasoning);
    buf_free(&c->refusal);
    buf_free(&c->finish_reason);
    buf_free(&c->role);
    for (j = 0; j < c->ncalls; j++) {
      buf_free(&c->calls[j].id);
      buf_free(&c->calls[j].type);
      buf_free(&c->calls[j].name);
      buf_free(&c->calls[j].args);
    }
    free(c->calls);
  }
  free(a->choices);
  buf_free(&a->id);
  buf_free(&a->model);
  buf_free(&a->system_fingerprint);
  stream_cache_free(a->cache);
  buf_free(&a->usage);
  buf_free(&a->error);
  buf_free(&a->raw);
  buf_free(&a->tmp);
  free(a->pending);
  free(a->parse.sc);
  free(a->parse.scc);
  stream_init(a);
}
