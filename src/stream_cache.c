/* The stream assembler's prefix cache and chunk templates (design note: stream_cache.h). */
#include "stream_cache.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define TPL_MAXV STREAM_CACHE_MAXV
#define TPL_MAXLEN 16384  /* bytes of a template chunk */
#define TPL_SLOTS 2       /* templates kept: a tool-call stream alternates two shapes */

/* ---- the spans of a parse ----
 * Both caches copy a parse and move its spans. They visit them in one order: the chunk's
 * six top-level spans, then six per choice, then four per tool-call fragment. */
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

/* one top-level span of the prefix, as an offset into the chunk */
typedef struct pfx_span {
  size_t off, n;
  unsigned char type, esc;
} pfx_span;

typedef struct tpl_slot {
  bytebuf bytes;                       /* the chunk, len 0 = empty slot */
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
   * slot_match visits them: t's six spans, then six per choice, then four per call. */
  unsigned short *mk, *mkend;
  size_t capmv;
} tpl_slot;

struct stream_cache {
  /* the prefix: the bytes of an earlier chunk up to its "choices" key (and one more), the
   * top-level members parsed in them, and the string values the scanner recorded there */
  bytebuf pfx;                         /* len 0 = empty */
  pfx_span pfx_span[TOP_SPANS];        /* id, model, system_fingerprint, usage, x_groq usage, error */
  double pfx_created;
  int pfx_first;
  size_t pfx_nv;
  size_t pfx_voff[TPL_MAXV], pfx_vn[TPL_MAXV];
  unsigned char pfx_vesc[TPL_MAXV];
  /* the templates */
  tpl_slot slot[TPL_SLOTS];
  unsigned last;                       /* the slot matched or saved last */
};

stream_cache *stream_cache_new(void) {
  return (stream_cache *)calloc(1, sizeof(stream_cache));
}

void stream_cache_free(stream_cache *c) {
  unsigned k;
  if (!c) return;
  buf_free(&c->pfx);
  for (k = 0; k < TPL_SLOTS; k++) {
    tpl_slot *x = &c->slot[k];
    buf_free(&x->bytes);
    free(x->sc);
    free(x->scc);
    free(x->mk);
    free(x->mkend);
  }
  free(c);
}

void stream_cache_forget(stream_cache *c) {
  unsigned i;
  if (!c) return;
  c->pfx.len = 0;
  for (i = 0; i < TPL_SLOTS; i++) c->slot[i].bytes.len = 0;
}

/* ---- the prefix cache ---- */

void stream_cache_record_prefix(stream_cache *c, const jscan *s, const char *at, const sc_top *t,
                                int first) {
  size_t n = (size_t)(at - s->base) + 1; /* at < s->end: a key follows */
  size_t k, m;
  int i;
  if (!c) return;
  if (at >= s->end || buf_set(&c->pfx, s->base, n)) { /* no memory: simply no cache */
    c->pfx.len = 0;
    return;
  }
  for (i = 0; i < TOP_SPANS; i++) {
    const jspan *v = span_at((sc_top *)t, top_offsets[i]);
    pfx_span *p = &c->pfx_span[i];
    p->type = v->type;
    p->esc = v->esc;
    p->off = v->type != JSCAN_NONE ? (size_t)(v->p - s->base) : 0;
    p->n = v->type != JSCAN_NONE ? v->n : 0;
  }
  c->pfx_created = t->created;
  c->pfx_first = first;
  /* the string values recorded so far are all in the prefix: a resumed scan gets them back */
  if (s->rec) {
    m = s->nrec < TPL_MAXV ? s->nrec : TPL_MAXV;
    c->pfx_nv = s->nrec;
    for (k = 0; k < m; k++) {
      c->pfx_voff[k] = (size_t)(s->rec[k].p - s->base);
      c->pfx_vn[k] = s->rec[k].n;
      c->pfx_vesc[k] = s->rec[k].esc;
    }
  }
}

int stream_cache_resume(stream_cache *c, jscan *s, sc_top *t, int *first) {
  size_t n, k, m;
  int i;
  if (!c) return 0;
  n = c->pfx.len;
  if (n == 0 || (size_t)(s->end - s->base) <= n || (size_t)(s->p - s->base) > n - 1 ||
      memcmp(s->base, c->pfx.p, n) != 0)
    return 0;
  for (i = 0; i < TOP_SPANS; i++) {
    const pfx_span *p = &c->pfx_span[i];
    jspan *v = span_at(t, top_offsets[i]);
    v->type = p->type;
    v->esc = p->esc;
    v->p = p->type != JSCAN_NONE ? s->base + p->off : NULL;
    v->n = p->n;
  }
  t->created = c->pfx_created;
  *first = c->pfx_first;
  s->p = s->base + n - 1;
  if (s->rec) {
    m = c->pfx_nv < s->caprec ? c->pfx_nv : s->caprec;
    for (k = 0; k < m; k++) {
      s->rec[k].p = s->base + c->pfx_voff[k];
      s->rec[k].n = c->pfx_vn[k];
      s->rec[k].esc = c->pfx_vesc[k];
      s->rec[k].type = JSCAN_STRING;
    }
    s->nrec = c->pfx_nv;
  }
  return 1;
}

/* ---- the chunk templates ---- */

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
static void tpl_move(const stream_cache_scratch *m, const tpl_slot *x, jspan *v, size_t i,
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

/* The chunk becomes a template, in the slot not used last (or, when it cannot, that slot
 * is emptied). */
void stream_cache_record(stream_cache *c, const jscan *s, const char *json, size_t len,
                         const stream_parse *ps, const sc_top *t) {
  tpl_slot *x;
  rebase_ctx rc;
  size_t i;
  if (!c) return;
  c->last = (c->last + 1) % TPL_SLOTS;
  x = &c->slot[c->last];
  x->bytes.len = 0;
  if (!s->rec || s->nrec > TPL_MAXV || len > TPL_MAXLEN || len == 0) return;
  if (grow_exact((void **)&x->sc, &x->capsc, ps->nsc, sizeof *x->sc) ||
      grow_exact((void **)&x->scc, &x->capscc, ps->nscc, sizeof *x->scc) ||
      buf_set(&x->bytes, json, len)) {
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
  x->nsc = ps->nsc;
  x->nscc = ps->nscc;
  if (x->nsc) memcpy(x->sc, ps->sc, x->nsc * sizeof *x->sc);
  if (x->nscc) memcpy(x->scc, ps->scc, x->nscc * sizeof *x->scc);
  rc.from = json;
  rc.to = x->bytes.p;
  each_span(&x->t, x->sc, x->nsc, x->scc, x->nscc, tpl_rebase, &rc);
  if (!slot_plan(x)) x->bytes.len = 0;
}

/* 1 when json has slot x's shape: *t and ps are then its records, exactly what a full parse
 * would have produced. */
static int slot_match(tpl_slot *x, stream_cache_scratch *m, const char *json, size_t len,
                      stream_parse *ps, sc_top *t) {
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
  if (buf_grow_array((void **)&ps->sc, &ps->capsc, x->nsc, sizeof *ps->sc) ||
      buf_grow_array((void **)&ps->scc, &ps->capscc, x->nscc, sizeof *ps->scc))
    return 0;
  *t = x->t;
  ps->nsc = x->nsc;
  ps->nscc = x->nscc;
  if (x->nsc) memcpy(ps->sc, x->sc, x->nsc * sizeof *ps->sc);
  if (x->nscc) memcpy(ps->scc, x->scc, x->nscc * sizeof *ps->scc);
  /* each_span's order, written out: this runs for every chunk, and the loop over the
   * offset tables measured ~100 instructions a chunk slower than these direct fields */
  tpl_move(m, x, &t->id, j++, json);
  tpl_move(m, x, &t->model, j++, json);
  tpl_move(m, x, &t->sysfp, j++, json);
  tpl_move(m, x, &t->usage, j++, json);
  tpl_move(m, x, &t->xusage, j++, json);
  tpl_move(m, x, &t->error, j++, json);
  for (i = 0; i < x->nsc; i++) {
    sc_choice *ch = &ps->sc[i];
    tpl_move(m, x, &ch->finish, j++, json);
    tpl_move(m, x, &ch->role, j++, json);
    tpl_move(m, x, &ch->content, j++, json);
    tpl_move(m, x, &ch->rcontent, j++, json);
    tpl_move(m, x, &ch->reasoning, j++, json);
    tpl_move(m, x, &ch->refusal, j++, json);
  }
  for (i = 0; i < x->nscc; i++) {
    sc_call *cc = &ps->scc[i];
    tpl_move(m, x, &cc->id, j++, json);
    tpl_move(m, x, &cc->type, j++, json);
    tpl_move(m, x, &cc->name, j++, json);
    tpl_move(m, x, &cc->args, j++, json);
  }
  return 1;
}

/* The slot used last first, then the other(s). */
int stream_cache_lookup(stream_cache *c, stream_cache_scratch *w, const char *json, size_t len,
                        stream_parse *ps, sc_top *t) {
  unsigned i;
  if (!c || !json) return 0;
  for (i = 0; i < TPL_SLOTS; i++) {
    unsigned k = (c->last + TPL_SLOTS - i) % TPL_SLOTS;
    if (slot_match(&c->slot[k], w, json, len, ps, t)) {
      c->last = k;
      return 1;
    }
  }
  return 0;
}
