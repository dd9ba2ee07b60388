/* Stream assembly: chat.completion.chunk payloads folded into one result (rules in stream.h).
 *
 * Two phases per chunk. Parse: one jscan pass validates the whole chunk and records, for the
 * few keys we use, where their values are (jspans into the caller's bytes, nothing decoded);
 * a repeated key overwrites its record, so the last one wins as in a decoded table. Apply:
 * only once the chunk is known valid, the recorded strings are decoded straight into the
 * result's buffers. So an invalid chunk changes nothing, and a valid one costs no allocation
 * once the buffers have grown. */
#include "stream.h"
#include "jscan.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOMEM (-2) /* parse/apply status next to jscan's -1 */
#define NONE ((size_t)-1)

typedef struct stream_sc_choice {
  long index;                   /* -1: absent or not a valid index */
  int known;                    /* index, delta or finish_reason occurred (any value) */
  jspan finish, role, content, rcontent, reasoning, refusal;
  size_t tc_first, tc_end;      /* its fragments in stream_asm.scc */
} sc_choice;

typedef struct stream_sc_call {
  long index;
  jspan id, type, name, args;
} sc_call;

typedef struct sc_top {
  jspan id, model, sysfp, usage, xusage, error;
  double created;
} sc_top;

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

/* ---- buffers ---- */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  size_t nc;
  void *q;
  if (need <= *cap) return 0;
  nc = *cap ? *cap : 8;
  while (nc < need) {
    if (nc > SIZE_MAX / 2 / elem) return -1;
    nc *= 2;
  }
  q = realloc(*p, nc * elem);
  if (!q) return -1;
  *p = q;
  *cap = nc;
  return 0;
}

static int sbuf_reserve(stream_buf *b, size_t extra) {
  size_t need, nc;
  char *q;
  if (b->cap - b->len >= extra) return 0;
  if (extra > SIZE_MAX - b->len) return -1;
  need = b->len + extra;
  nc = b->cap ? b->cap : 64;
  while (nc < need) {
    if (nc > SIZE_MAX / 2) { nc = need; break; }
    nc *= 2;
  }
  q = realloc(b->p, nc);
  if (!q) return -1;
  b->p = q;
  b->cap = nc;
  return 0;
}

/* Appends a validated string span, decoded. */
static int buf_append_str(stream_buf *b, const jspan *v) {
  if (v->n == 0) return 0;
  if (sbuf_reserve(b, v->n)) return -1;
  if (v->esc) {
    b->len += jscan_unescape(v->p, v->n, b->p + b->len);
  } else {
    memcpy(b->p + b->len, v->p, v->n);
    b->len += v->n;
  }
  return 0;
}

/* Replaces the contents; on failure the old contents stay. */
static int sbuf_set(stream_buf *b, const char *p, size_t n) {
  size_t len = b->len;
  b->len = 0;
  if (sbuf_reserve(b, n)) { b->len = len; return -1; }
  if (n) memcpy(b->p, p, n);
  b->len = n;
  return 0;
}

static int buf_set_str(stream_buf *b, const jspan *v) {
  size_t len = b->len;
  b->len = 0;
  if (sbuf_reserve(b, v->n)) { b->len = len; return -1; }
  return buf_append_str(b, v);
}

static void sbuf_free(stream_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* ---- parse phase ---- */

static int is_str(const jspan *v) { return v->type == JSCAN_STRING; }
static int is_nonempty_str(const jspan *v) { return v->type == JSCAN_STRING && v->n > 0; }
static int is_container(const jspan *v) {
  return v->type == JSCAN_OBJECT || v->type == JSCAN_ARRAY;
}

static int span_number(stream_asm *a, const jspan *v, double *d) {
  a->tmp.len = 0;
  if (v->n >= 64 && sbuf_reserve(&a->tmp, v->n + 1)) return NOMEM;
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
    case K_NAME: r = jscan_value(s, &a->scc[ci].name); break;
    case K_ARGUMENTS: r = jscan_value(s, &a->scc[ci].args); break;
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
    case K_INDEX: r = scan_index(a, s, &a->scc[ci].index); break;
    case K_ID: r = jscan_value(s, &a->scc[ci].id); break;
    case K_TYPE: r = jscan_value(s, &a->scc[ci].type); break;
    case K_FUNCTION:
      a->scc[ci].name.type = a->scc[ci].args.type = JSCAN_NONE;
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
      size_t ci = a->nscc;
      if (grow((void **)&a->scc, &a->capscc, ci + 1, sizeof *a->scc)) return NOMEM;
      memset(&a->scc[ci], 0, sizeof a->scc[ci]);
      a->scc[ci].index = -1;
      a->nscc++;
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
    sc_choice *c = &a->sc[chi];
    switch (key_id(&k)) {
    case K_ROLE: r = jscan_value(s, &c->role); break;
    case K_CONTENT: r = jscan_value(s, &c->content); break;
    case K_RCONTENT: r = jscan_value(s, &c->rcontent); break;
    case K_REASONING: r = jscan_value(s, &c->reasoning); break;
    case K_REFUSAL: r = jscan_value(s, &c->refusal); break;
    case K_TOOL_CALLS:
      a->nscc = c->tc_first; /* a repeated key: the last one wins */
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
    sc_choice *c = &a->sc[chi];
    switch (key_id(&k)) {
    case K_INDEX: c->known = 1; r = scan_index(a, s, &c->index); break;
    case K_FINISH: c->known = 1; r = jscan_value(s, &c->finish); break;
    case K_DELTA:
      c->known = 1;
      c->role.type = c->content.type = c->rcontent.type = JSCAN_NONE;
      c->reasoning.type = c->refusal.type = JSCAN_NONE;
      a->nscc = c->tc_first;
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
      size_t chi = a->nsc;
      if (grow((void **)&a->sc, &a->capsc, chi + 1, sizeof *a->sc)) return NOMEM;
      memset(&a->sc[chi], 0, sizeof a->sc[chi]);
      a->sc[chi].index = -1;
      a->sc[chi].tc_first = a->nscc;
      a->nsc++;
      r = parse_choice(a, s, chi);
      a->sc[chi].tc_end = a->nscc;
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

/* ---- the chunk template ----
 * Past its first chunks, a stream repeats one shape: the same keys, numbers, nulls and
 * punctuation, byte for byte, with new string values (the delta's text, the provider's
 * "obfuscation" padding). The parse phase never looks inside a string value (only at keys
 * and at value types), so a chunk that equals an earlier one outside its string values
 * parses into the same records, with the spans moved to its own strings. The template is
 * the bytes of the last chunk parsed in full plus that parse, its string values recorded
 * by the scanner (jscan.rec). A new chunk is compared with it segment by segment (memcmp
 * of the bytes between string values, each new string value scanned and validated in
 * place); when every segment matches, the records are copied with their spans moved, and
 * only the apply phase runs. Any difference (a key, a null where a string was, a number)
 * falls back to the full parse, which then saves the new template. */

#define TPL_MAXV 32       /* string values a template may have (a content chunk has ~7) */
#define TPL_MAXLEN 16384  /* bytes of a template chunk */
#define TPL_SLOTS 2       /* templates kept: a tool-call stream alternates two shapes */

typedef struct tpl_slot {
  stream_buf bytes;                    /* the chunk, len 0 = empty slot */
  size_t nv;                           /* its string values */
  size_t voff[TPL_MAXV], vn[TPL_MAXV]; /* their content: offset and length */
  unsigned char vesc[TPL_MAXV];        /* and whether it has escapes */
  sc_top t;                            /* its parse; spans into bytes */
  sc_choice *sc;
  size_t nsc, capsc;
  sc_call *scc;
  size_t nscc, capscc;
  /* where each recorded span of the parse goes, worked out once at save time: for a
   * string, the index of its value among the string values; for anything else, how many
   * string values lie before its start (mk) and before its end (mkend). In the order
   * tpl_match visits them: t's six spans, then six per choice, then four per call. */
  unsigned short *mk, *mkend;
  size_t capmv;
} tpl_slot;

/* Per call, on the C stack (a stream keeps only its slots and the prefix's strings):
 * the recorder's array during a full parse, and a match's new string values with the
 * running length change. */
typedef struct tpl_scratch {
  jspan rec[TPL_MAXV];
  size_t noff[TPL_MAXV], nn[TPL_MAXV];
  unsigned char nesc[TPL_MAXV];
  ptrdiff_t shift[TPL_MAXV + 1];
} tpl_scratch;

typedef struct stream_tpl {
  tpl_slot slot[TPL_SLOTS];
  unsigned last;                       /* the slot matched or saved last */
  /* string values recorded in the prefix cache's bytes (offsets into them) */
  size_t pfx_nv;
  size_t pfx_voff[TPL_MAXV], pfx_vn[TPL_MAXV];
  unsigned char pfx_vesc[TPL_MAXV];
} stream_tpl;

/* ---- the spans of a parse ----
 * The two caches copy a parse and move its spans. They visit them in one order: the
 * chunk's six top-level spans, then six per choice, then four per tool-call fragment. */
#define TOP_SPANS 6
#define CHOICE_SPANS 6
#define CALL_SPANS 4

static const size_t top_offsets[TOP_SPANS] = {
  offsetof(sc_top, id), offsetof(sc_top, model), offsetof(sc_top, sysfp),
  offsetof(sc_top, usage), offsetof(sc_top, xusage), offsetof(sc_top, error),
};
static const size_t choice_offsets[CHOICE_SPANS] = {
  offsetof(sc_choice, finish), offsetof(sc_choice, role), offsetof(sc_choice, content),
  offsetof(sc_choice, rcontent), offsetof(sc_choice, reasoning), offsetof(sc_choice, refusal),
};
static const size_t call_offsets[CALL_SPANS] = {
  offsetof(sc_call, id), offsetof(sc_call, type), offsetof(sc_call, name), offsetof(sc_call, args),
};

static jspan *span_at(void *rec, size_t off) { return (jspan *)(void *)((char *)rec + off); }

/* Calls fn(span, its position in the order above, ctx) on every span of a parse; stops
 * with 0 as soon as fn returns 0. */
static int each_span(sc_top *t, sc_choice *sc, size_t nsc, sc_call *scc, size_t nscc,
                     int (*fn)(jspan *, size_t, void *), void *ctx) {
  size_t i, k, j = 0;
  for (k = 0; k < TOP_SPANS; k++)
    if (!fn(span_at(t, top_offsets[k]), j++, ctx)) return 0;
  for (i = 0; i < nsc; i++)
    for (k = 0; k < CHOICE_SPANS; k++)
      if (!fn(span_at(&sc[i], choice_offsets[k]), j++, ctx)) return 0;
  for (i = 0; i < nscc; i++)
    for (k = 0; k < CALL_SPANS; k++)
      if (!fn(span_at(&scc[i], call_offsets[k]), j++, ctx)) return 0;
  return 1;
}

/* A slot's arrays: exactly what its chunk needs (a stream keeps two slots, and a thousand
 * streams at once should not each carry the working arrays' slack). */
static int grow_exact(void **p, size_t *cap, size_t need, size_t elem) {
  void *q;
  if (need <= *cap) return 0;
  if (need > SIZE_MAX / elem) return -1;
  q = realloc(*p, need * elem);
  if (!q) return -1;
  *p = q;
  *cap = need;
  return 0;
}

/* How many of the slot's string values begin before offset off. */
static size_t tpl_before(const tpl_slot *x, size_t off) {
  size_t lo = 0, hi = x->nv;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (x->voff[mid] < off) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* At save time: the move of template span v (position i); 0 if it cannot be described. */
static int tpl_plan(jspan *v, size_t i, void *ctx) {
  tpl_slot *x = (tpl_slot *)ctx;
  size_t off, k;
  if (v->type == JSCAN_NONE) return 1;
  off = (size_t)(v->p - x->bytes.p);
  k = tpl_before(x, off);
  if (v->type == JSCAN_STRING) {
    if (k >= x->nv || x->voff[k] != off) return 0; /* every string value is recorded */
    x->mk[i] = (unsigned short)k;
    return 1;
  }
  x->mk[i] = (unsigned short)k;
  x->mkend[i] = (unsigned short)tpl_before(x, off + v->n);
  return 1;
}

/* At save time: a span of the parse of json moved into the slot's copy of its bytes. */
typedef struct rebase_ctx {
  const char *from, *to;
} rebase_ctx;

static int tpl_rebase(jspan *v, size_t i, void *ctx) {
  const rebase_ctx *r = (const rebase_ctx *)ctx;
  (void)i;
  if (v->type != JSCAN_NONE) v->p = r->to + (v->p - r->from);
  return 1;
}

/* At match time: template span v (position i) moved into the new chunk json. */
static void tpl_move(const tpl_scratch *m, const tpl_slot *x, jspan *v, size_t i,
                     const char *json) {
  if (v->type == JSCAN_NONE) return;
  if (v->type == JSCAN_STRING) {
    size_t k = x->mk[i];
    v->p = json + m->noff[k];
    v->n = m->nn[k];
    v->esc = m->nesc[k];
  } else {
    /* a number, literal or container: its ends move by the change of the strings before */
    ptrdiff_t start = (v->p - x->bytes.p) + m->shift[x->mk[i]];
    ptrdiff_t stop = (v->p - x->bytes.p) + (ptrdiff_t)v->n + m->shift[x->mkend[i]];
    v->p = json + start;
    v->n = (size_t)(stop - start);
  }
}

static int slot_plan(tpl_slot *x) {
  size_t nslots = TOP_SPANS + CHOICE_SPANS * x->nsc + CALL_SPANS * x->nscc;
  if (nslots > x->capmv) {
    unsigned short *m1, *m2;
    m1 = (unsigned short *)realloc(x->mk, nslots * sizeof *m1);
    if (!m1) return 0;
    x->mk = m1;
    m2 = (unsigned short *)realloc(x->mkend, nslots * sizeof *m2);
    if (!m2) return 0;
    x->mkend = m2;
    x->capmv = nslots;
  }
  return each_span(&x->t, x->sc, x->nsc, x->scc, x->nscc, tpl_plan, x);
}

/* After a full parse of json that succeeded: it becomes a template, in the slot not used
 * last (or, when it cannot, that slot is emptied). */
static void tpl_save(stream_asm *a, const jscan *s, const char *json, size_t len, const sc_top *t) {
  stream_tpl *m = a->tplx;
  tpl_slot *x;
  rebase_ctx rc;
  size_t i;
  if (!m) return;
  m->last = (m->last + 1) % TPL_SLOTS;
  x = &m->slot[m->last];
  x->bytes.len = 0;
  if (!s->rec || s->nrec > TPL_MAXV || len > TPL_MAXLEN || len == 0) return;
  if (grow_exact((void **)&x->sc, &x->capsc, a->nsc, sizeof *x->sc) ||
      grow_exact((void **)&x->scc, &x->capscc, a->nscc, sizeof *x->scc) ||
      sbuf_set(&x->bytes, json, len)) {
    x->bytes.len = 0;
    return;
  }
  x->nv = s->nrec;
  for (i = 0; i < x->nv; i++) {
    x->voff[i] = (size_t)(s->rec[i].p - json);
    x->vn[i] = s->rec[i].n;
    x->vesc[i] = s->rec[i].esc;
  }
  x->t = *t;
  x->nsc = a->nsc;
  x->nscc = a->nscc;
  if (x->nsc) memcpy(x->sc, a->sc, x->nsc * sizeof *x->sc);
  if (x->nscc) memcpy(x->scc, a->scc, x->nscc * sizeof *x->scc);
  rc.from = json;
  rc.to = x->bytes.p;
  each_span(&x->t, x->sc, x->nsc, x->scc, x->nscc, tpl_rebase, &rc);
  if (!slot_plan(x)) x->bytes.len = 0;
}

/* 1 when json has slot x's shape: t, a->sc, a->scc and the counts are then its records,
 * exactly what a full parse would have produced. */
static int slot_match(stream_asm *a, tpl_slot *x, tpl_scratch *m, const char *json, size_t len,
                      sc_top *t) {
  const char *c = x->bytes.p;
  size_t lc = x->bytes.len, pc = 0, pn = 0, k, i, j = 0;
  jscan s;
  if (lc == 0) return 0;
  jscan_init(&s, json, len);
  m->shift[0] = 0;
  for (k = 0; k < x->nv; k++) {
    size_t seg = x->voff[k] - pc;
    jspan v;
    if (len - pn < seg || memcmp(c + pc, json + pn, seg) != 0) return 0;
    pn += seg; /* json[pn - 1] is the opening quote: it was in the segment */
    if (len - pn > x->vn[k] && memcmp(c + x->voff[k], json + pn, x->vn[k] + 1) == 0) {
      /* the template's own string and its closing quote (id, model, fingerprint: the
       * same in every chunk): the same bytes scan the same way, and those were valid */
      v.n = x->vn[k];
      v.esc = x->vesc[k];
    } else {
      s.p = json + pn - 1;
      if (jscan_string(&s, &v)) return 0;
    }
    m->noff[k] = pn;
    m->nn[k] = v.n;
    m->nesc[k] = v.esc;
    m->shift[k + 1] = m->shift[k] + (ptrdiff_t)v.n - (ptrdiff_t)x->vn[k];
    pn += v.n;
    pc = x->voff[k] + x->vn[k];
  }
  if (len - pn != lc - pc || memcmp(c + pc, json + pn, lc - pc) != 0) return 0;
  if (grow((void **)&a->sc, &a->capsc, x->nsc, sizeof *a->sc) ||
      grow((void **)&a->scc, &a->capscc, x->nscc, sizeof *a->scc))
    return 0;
  *t = x->t;
  a->nsc = x->nsc;
  a->nscc = x->nscc;
  if (x->nsc) memcpy(a->sc, x->sc, x->nsc * sizeof *a->sc);
  if (x->nscc) memcpy(a->scc, x->scc, x->nscc * sizeof *a->scc);
  /* each_span's order, written out: this runs for every chunk, and the loop over the
   * offset tables measured ~100 instructions a chunk slower than these direct fields */
  tpl_move(m, x, &t->id, j++, json);
  tpl_move(m, x, &t->model, j++, json);
  tpl_move(m, x, &t->sysfp, j++, json);
  tpl_move(m, x, &t->usage, j++, json);
  tpl_move(m, x, &t->xusage, j++, json);
  tpl_move(m, x, &t->error, j++, json);
  for (i = 0; i < x->nsc; i++) {
    sc_choice *ch = &a->sc[i];
    tpl_move(m, x, &ch->finish, j++, json);
    tpl_move(m, x, &ch->role, j++, json);
    tpl_move(m, x, &ch->content, j++, json);
    tpl_move(m, x, &ch->rcontent, j++, json);
    tpl_move(m, x, &ch->reasoning, j++, json);
    tpl_move(m, x, &ch->refusal, j++, json);
  }
  for (i = 0; i < x->nscc; i++) {
    sc_call *cc = &a->scc[i];
    tpl_move(m, x, &cc->id, j++, json);
    tpl_move(m, x, &cc->type, j++, json);
    tpl_move(m, x, &cc->name, j++, json);
    tpl_move(m, x, &cc->args, j++, json);
  }
  return 1;
}

/* The slot used last first, then the other(s). */
static int tpl_match(stream_asm *a, tpl_scratch *w, const char *json, size_t len, sc_top *t) {
  stream_tpl *m = a->tplx;
  unsigned i;
  if (!m || !json) return 0;
  for (i = 0; i < TPL_SLOTS; i++) {
    unsigned k = (m->last + TPL_SLOTS - i) % TPL_SLOTS;
    if (slot_match(a, &m->slot[k], w, json, len, t)) {
      m->last = k;
      return 1;
    }
  }
  return 0;
}

void stream_forget_caches(stream_asm *a) {
  unsigned i;
  a->pfx.len = 0;
  if (a->tplx)
    for (i = 0; i < TPL_SLOTS; i++) a->tplx->slot[i].bytes.len = 0;
}

/* ---- the prefix cache ----
 * Every chunk of a stream begins with the same bytes: {"id":"chatcmpl-...","object":
 * "chat.completion.chunk","created":...,"model":...,"system_fingerprint":..., and then
 * "choices". The scanner is a pure function of the bytes it has read, so a chunk that
 * begins with the same P bytes as an earlier one is in the same state after them: same
 * depth, same members parsed, at the same offsets. parse_top saves that state when it meets
 * the "choices" key, and the next chunk whose first P bytes are equal (one memcmp) resumes
 * there instead of scanning them again: about half the work of a typical chunk. A chunk
 * that differs anywhere in those bytes is scanned in full, and its prefix is saved.
 * The saved bytes run one byte past the resume point: a number that ends the prefix
 * ("created":1744) ends there only because the byte after it is not a digit, so that byte
 * must match too ("created":1744186429 must not resume after 1744). Strings, literals and
 * brackets end within their own bytes. */

static void pfx_save(stream_asm *a, const jscan *s, const char *at, const sc_top *t, int first) {
  size_t n = (size_t)(at - s->base) + 1; /* at < s->end: a key follows */
  int i;
  if (at >= s->end || sbuf_set(&a->pfx, s->base, n)) { /* no memory: simply no cache */
    a->pfx.len = 0;
    return;
  }
  for (i = 0; i < TOP_SPANS; i++) {
    const jspan *v = span_at((sc_top *)t, top_offsets[i]);
    stream_pfx_span *c = &a->pfx_span[i];
    c->type = v->type;
    c->esc = v->esc;
    c->off = v->type != JSCAN_NONE ? (size_t)(v->p - s->base) : 0;
    c->n = v->type != JSCAN_NONE ? v->n : 0;
  }
  a->pfx_created = t->created;
  a->pfx_first = first;
  /* the string values recorded so far are all in the prefix: a resumed scan gets them back */
  if (a->tplx && s->rec) {
    stream_tpl *x = a->tplx;
    size_t k, m = s->nrec < TPL_MAXV ? s->nrec : TPL_MAXV;
    x->pfx_nv = s->nrec;
    for (k = 0; k < m; k++) {
      x->pfx_voff[k] = (size_t)(s->rec[k].p - s->base);
      x->pfx_vn[k] = s->rec[k].n;
      x->pfx_vesc[k] = s->rec[k].esc;
    }
  }
}

/* After jscan_enter on the chunk's '{': 1 and the state restored when the cache applies. */
static int pfx_resume(stream_asm *a, jscan *s, sc_top *t, int *first) {
  size_t n = a->pfx.len;
  int i;
  if (n == 0 || (size_t)(s->end - s->base) <= n || (size_t)(s->p - s->base) > n - 1 ||
      memcmp(s->base, a->pfx.p, n) != 0)
    return 0;
  for (i = 0; i < TOP_SPANS; i++) {
    const stream_pfx_span *c = &a->pfx_span[i];
    jspan *v = span_at(t, top_offsets[i]);
    v->type = c->type;
    v->esc = c->esc;
    v->p = c->type != JSCAN_NONE ? s->base + c->off : NULL;
    v->n = c->n;
  }
  t->created = a->pfx_created;
  *first = a->pfx_first;
  s->p = s->base + n - 1;
  if (s->rec) {
    const stream_tpl *x = a->tplx;
    size_t k, m = x->pfx_nv < s->caprec ? x->pfx_nv : s->caprec;
    for (k = 0; k < m; k++) {
      s->rec[k].p = s->base + x->pfx_voff[k];
      s->rec[k].n = x->pfx_vn[k];
      s->rec[k].esc = x->pfx_vesc[k];
      s->rec[k].type = JSCAN_STRING;
    }
    s->nrec = x->pfx_nv;
  }
  return 1;
}

static int parse_top(stream_asm *a, jscan *s, sc_top *t) {
  jspan k, v;
  int first = 1, r, resumed, id;
  int c = jscan_peek(s);
  if (c != '{') return jscan_value(s, &v); /* valid JSON, not a chunk: nothing to use */
  if (jscan_enter(s, c)) return -1;
  resumed = pfx_resume(a, s, t, &first);
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
        pfx_save(a, s, at, t, first_at);
        resumed = 1; /* a second "choices" key must not save a longer prefix */
      }
      a->nsc = a->nscc = 0;
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
  if (grow((void **)&a->choices, &a->capchoices, a->nchoices + 1, sizeof *a->choices))
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
  size_t most = a->nsc * 3 + a->nscc;
  if (most == 0) return 0;
  if (grow((void **)&a->pending, &a->cappending, a->npending + most, sizeof *a->pending))
    return NOMEM;
  if (sbuf_reserve(&a->raw, len)) return NOMEM;
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
    if (grow((void **)&c->calls, &c->capcalls, c->ncalls + 1, sizeof *c->calls)) return NOMEM;
    call = &c->calls[c->ncalls];
    memset(call, 0, sizeof *call);
    call->index = f->index;
    target = c->ncalls++;
  }
  call = &c->calls[target];
  c->last_call = target;
  if (has_id && call->id.len == 0 && sbuf_set(&call->id, id, idn)) return NOMEM;
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
    if (apply_call(x, slot, &a->scc[j])) return NOMEM;
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
  if (u && sbuf_set(&a->usage, u->p, u->n)) return NOMEM;
  if (is_container(&t->error) && sbuf_set(&a->error, t->error.p, t->error.n)) return NOMEM;
  if (is_str(&t->error) && sbuf_set(&a->error, t->error.p - 1, t->error.n + 2)) return NOMEM;
  return 0;
}

/* ---- interface ---- */

void stream_init(stream_asm *a) {
  memset(a, 0, sizeof *a);
  a->last_choice = NONE;
}

int stream_chunk(stream_asm *a, const char *json, size_t len) {
  tpl_scratch w;
  jscan s;
  sc_top t;
  apply_ctx x;
  size_t i;
  int r;
  if (!json) json = ""; /* an empty payload may come as NULL: no arithmetic on NULL */
  a->errmsg[0] = '\0';
  if (!a->tplx) {
    a->tplx = (stream_tpl *)calloc(1, sizeof *a->tplx);
    /* the prefix cache keeps its string values in tplx: a prefix saved without it (or
     * with none at all) is forgotten */
    a->pfx.len = 0;
  }
  /* a template match fills t and the records itself; otherwise the full parse */
  r = 0;
  if (!tpl_match(a, &w, json, len, &t)) {
    memset(&t, 0, sizeof t);
    a->nsc = a->nscc = 0;
    jscan_init(&s, json, len);
    if (a->tplx) {
      s.rec = w.rec;
      s.caprec = TPL_MAXV;
    }
    r = parse_top(a, &s, &t);
    if (r == 0) r = jscan_finish(&s);
    if (r == -1) {
      snprintf(a->errmsg, sizeof a->errmsg, "invalid JSON: %s at character %zu", s.err,
               s.errpos + 1);
      return STREAM_EJSON;
    }
    if (r == 0) tpl_save(a, &s, json, len, &t);
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
    for (i = 0; r == 0 && i < a->nsc; i++) r = apply_choice(&x, &a->sc[i]);
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
  (void)sbuf_reserve(&a->raw, n);
}

void stream_clear_pending(stream_asm *a) {
  a->npending = 0;
  a->raw.len = 0;
  /* after a burst of huge chunks, give the memory back: streaming memory stays flat */
  if (a->raw.cap > ((size_t)1 << 20)) sbuf_free(&a->raw);
  if (a->cappending > 65536) {
    free(a->pending);
    a->pending = NULL;
    a->cappending = 0;
  }
}

int stream_finished(const stream_asm *a) { return a->finished; }

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
    sbuf_free(&c->content);
    sbuf_free(&c->reasoning);
    sbuf_free(&c->refusal);
    sbuf_free(&c->finish_reason);
    sbuf_free(&c->role);
    for (j = 0; j < c->ncalls; j++) {
      sbuf_free(&c->calls[j].id);
      sbuf_free(&c->calls[j].type);
      sbuf_free(&c->calls[j].name);
      sbuf_free(&c->calls[j].args);
    }
    free(c->calls);
  }
  free(a->choices);
  sbuf_free(&a->id);
  sbuf_free(&a->model);
  sbuf_free(&a->system_fingerprint);
  sbuf_free(&a->pfx);
  if (a->tplx) {
    unsigned k;
    for (k = 0; k < TPL_SLOTS; k++) {
      tpl_slot *x = &a->tplx->slot[k];
      sbuf_free(&x->bytes);
      free(x->sc);
      free(x->scc);
      free(x->mk);
      free(x->mkend);
    }
    free(a->tplx);
  }
  sbuf_free(&a->usage);
  sbuf_free(&a->error);
  sbuf_free(&a->raw);
  sbuf_free(&a->tmp);
  free(a->pending);
  free(a->sc);
  free(a->scc);
  stream_init(a);
}
