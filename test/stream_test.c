/* C tests for the stream assembler's caches (src/stream_cache.c) and its out-of-memory
 * paths. `make test-stream-c` runs them under ASan+UBSan.
 *
 * The caches must never change a result. The fuzzer (fuzz/stream_fuzz.c) compares an
 * assembler with one whose caches are emptied before every chunk; this test adds the two
 * cases a fuzzer does not reach:
 *   - no cache at all (its allocation failed): the same results, chunk by chunk;
 *   - an allocation that fails anywhere, one at a time: every run stays consistent (fed on
 *     and freed under ASan), and a run in which no chunk reported STREAM_ENOMEM (the
 *     failure hit a cache or a hint) ends with exactly the result of a run without failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The assembler is compiled into this program with its allocations routed through hooks. */
static long alloc_countdown = -1; /* fail the allocation when it reaches 0; -1: never */
static long allocs;               /* allocations seen */
static int fail_calloc;           /* every calloc fails (only the cache uses calloc) */
static void *test_malloc(size_t n);
static void *test_calloc(size_t k, size_t n);
static void *test_realloc(void *p, size_t n);
#define malloc test_malloc
#define calloc test_calloc
#define realloc test_realloc
#include "jscan.c"
#include "stream_cache.c"
#include "stream.c"
#undef malloc
#undef calloc
#undef realloc

static int failing(void) {
  allocs++;
  return alloc_countdown >= 0 && alloc_countdown-- == 0;
}
static void *test_malloc(size_t n) { return failing() ? NULL : malloc(n); }
static void *test_calloc(size_t k, size_t n) {
  return failing() || fail_calloc ? NULL : calloc(k, n);
}
static void *test_realloc(void *p, size_t n) { return failing() ? NULL : realloc(p, n); }

static int checks, failures;

#define CHECK(cond, ...)                                                                 \
  do {                                                                                   \
    checks++;                                                                            \
    if (!(cond)) {                                                                       \
      failures++;                                                                        \
      fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                    \
      fprintf(stderr, __VA_ARGS__);                                                      \
      fputc('\n', stderr);                                                               \
    }                                                                                    \
  } while (0)

/* ---- the stream: every shape the caches know, and the changes that must defeat them ---- */

#define MAXCHUNKS 64
static char chunk_store[MAXCHUNKS][1024];
static size_t chunk_len[MAXCHUNKS];
static int nchunks, invalid_chunk = -1;

static const char *const HEAD =
  "{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":1744186429,"
  "\"model\":\"gpt-4o\",\"system_fingerprint\":\"fp_1\",\"choices\":[";

static void add(const char *fmt, const char *a1, const char *a2) {
  int n = snprintf(chunk_store[nchunks], sizeof chunk_store[0], fmt, a1, a2);
  if (n < 0 || (size_t)n >= sizeof chunk_store[0] || nchunks + 1 >= MAXCHUNKS) abort();
  chunk_len[nchunks++] = (size_t)n;
}

static void make_stream(void) {
  static const char *const words[] = {"Hello", " wor\\\"ld", " caf\\u00e9", "\\n", " \\ud83d\\ude00",
                                      " plain", " x"};
  size_t i;
  add("%s{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}",
      HEAD, NULL);
  for (i = 0; i < sizeof words / sizeof words[0]; i++) /* one shape: the template matches */
    add("%s{\"index\":0,\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}]}", HEAD, words[i]);
  add("%s{\"index\":0,\"delta\":{\"reasoning_content\":\"%s\"},\"finish_reason\":null}]}", HEAD,
      "think");
  add("%s{\"index\":0,\"delta\":{\"reasoning_content\":\"%s\"},\"finish_reason\":null}]}", HEAD,
      "ing");
  /* a number that goes on past the saved prefix's end; then a new prefix */
  add("{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":17441864290,"
      "\"model\":\"gpt-4o\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,"
      "\"delta\":{\"content\":\"%s\"}}]}", "!", NULL);
  add("{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":1744186430,"
      "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"}}]}",
      "?", NULL);
  /* an invalid chunk in the middle changes nothing */
  invalid_chunk = nchunks;
  add("%s{\"index\":0,\"delta\":{\"content\":\"%s\"}", HEAD, "cut");
  /* tool calls: two shapes alternating (the two template slots) */
  add("%s{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_%s\",\"type\":"
      "\"function\",\"function\":{\"name\":\"roll\",\"arguments\":\"\"}}]}}]}", HEAD, "a");
  for (i = 0; i < 3; i++) {
    add("%s{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
        "\"%s\"}}]}}]}", HEAD, i == 0 ? "{\\\"n\\\":" : i == 1 ? "2" : "}");
    add("%s{\"index\":1,\"delta\":{\"content\":\"%s\"}}]}", HEAD, i == 0 ? "second" : " choice");
  }
  add("%s{\"index\":0,\"delta\":{},\"finish_reason\":\"%s\"}]}", HEAD, "tool_calls");
  add("%s],\"usage\":{\"prompt_tokens\":%s,\"completion_tokens\":9}}", HEAD, "12");
  add("{\"id\":\"x\",\"choices\":[],\"x_groq\":{\"usage\":{\"total_tokens\":%s}}}", "21", NULL);
  add("%s{\"index\":0,\"delta\":{\"content\":\"%s\"}}]}", HEAD, "tail");
}

/* ---- one run of the stream; what it ends with ---- */

typedef struct run {
  int rc[MAXCHUNKS];
  size_t pending[MAXCHUNKS]; /* delta records each chunk made */
  int msg_ok[MAXCHUNKS];     /* after STREAM_ENOMEM: stream_errmsg says so */
  stream_asm a;
} run;

static void feed(run *r, int forget) {
  int i;
  stream_init(&r->a);
  for (i = 0; i < nchunks; i++) {
    if (forget) stream_forget_caches(&r->a);
    stream_expect(&r->a, chunk_len[i]);
    r->rc[i] = stream_chunk(&r->a, chunk_store[i], chunk_len[i]);
    r->pending[i] = stream_pending(&r->a);
    r->msg_ok[i] = r->rc[i] != STREAM_ENOMEM || strcmp(stream_errmsg(&r->a), "not enough memory") == 0;
    stream_clear_pending(&r->a);
  }
}

static int same_buf(const stream_buf *x, const stream_buf *y) {
  return x->len == y->len && (x->len == 0 || memcmp(x->p, y->p, x->len) == 0);
}

static int same_result(const stream_asm *a, const stream_asm *b) {
  size_t i, j;
  if (a->chunks != b->chunks || a->nchoices != b->nchoices || a->finished != b->finished ||
      a->created != b->created || !same_buf(&a->id, &b->id) || !same_buf(&a->model, &b->model) ||
      !same_buf(&a->system_fingerprint, &b->system_fingerprint) ||
      !same_buf(&a->usage, &b->usage) || !same_buf(&a->error, &b->error))
    return 0;
  for (i = 0; i < a->nchoices; i++) {
    const stream_choice *x = &a->choices[i], *y = &b->choices[i];
    if (x->index != y->index || x->ncalls != y->ncalls || x->has_content != y->has_content ||
        x->has_reasoning != y->has_reasoning || x->has_refusal != y->has_refusal ||
        !same_buf(&x->content, &y->content) || !same_buf(&x->reasoning, &y->reasoning) ||
        !same_buf(&x->refusal, &y->refusal) || !same_buf(&x->finish_reason, &y->finish_reason) ||
        !same_buf(&x->role, &y->role))
      return 0;
    for (j = 0; j < x->ncalls; j++) {
      const stream_call *p = &x->calls[j], *q = &y->calls[j];
      if (p->index != q->index || !same_buf(&p->id, &q->id) || !same_buf(&p->type, &q->type) ||
          !same_buf(&p->name, &q->name) || !same_buf(&p->args, &q->args))
        return 0;
    }
  }
  return 1;
}

static int same_run(const run *x, const run *y) {
  int i;
  for (i = 0; i < nchunks; i++)
    if (x->rc[i] != y->rc[i] || x->pending[i] != y->pending[i]) return 0;
  return same_result(&x->a, &y->a);
}

static void buf_of(const stream_buf *b, const char *want, const char *what) {
  CHECK(b->len == strlen(want) && memcmp(b->p, want, b->len) == 0, "%s: \"%.*s\", want \"%s\"",
        what, (int)b->len, b->p ? b->p : "", want);
}

int main(void) {
  static run ref, forgetful, cacheless, r;
  long total, n;
  int i, invisible = 0, visible = 0;

  make_stream();

  /* the reference: caches on; its result is what the rules say */
  feed(&ref, 0);
  for (i = 0; i < nchunks; i++)
    CHECK(ref.rc[i] == (i == invalid_chunk ? STREAM_EJSON : STREAM_OK), "chunk %d: rc %d", i,
          ref.rc[i]);
  CHECK(ref.a.cache != NULL, "the cache was allocated");
  CHECK(ref.a.nchoices == 2, "%zu choices", ref.a.nchoices);
  if (ref.a.nchoices == 2) {
    buf_of(&ref.a.choices[0].content, "Hello wor\"ld caf\xc3\xa9\n \xf0\x9f\x98\x80 plain x!?tail",
           "content");
    buf_of(&ref.a.choices[0].reasoning, "thinking", "reasoning");
    buf_of(&ref.a.choices[0].finish_reason, "tool_calls", "finish_reason");
    buf_of(&ref.a.choices[1].content, "second choice choice", "second choice's content");
    CHECK(ref.a.choices[0].ncalls == 1, "%zu calls", ref.a.choices[0].ncalls);
    if (ref.a.choices[0].ncalls == 1) buf_of(&ref.a.choices[0].calls[0].args, "{\"n\":2}", "args");
  }
  buf_of(&ref.a.model, "gpt-4o", "model");
  buf_of(&ref.a.usage, "{\"total_tokens\":21}", "usage (x_groq, the last)");
  CHECK(ref.a.created == 1744186429.0, "created %f", ref.a.created);

  /* the caches do work here: after three content chunks the fourth matches a template and
   * resumes after the prefix; a chunk whose "created" goes on past the prefix does neither */
  {
    stream_asm a;
    stream_cache_scratch w;
    sc_top t;
    jscan sc;
    int first = 1, longer = invalid_chunk - 2;
    stream_init(&a);
    for (i = 0; i < 3; i++) stream_chunk(&a, chunk_store[i], chunk_len[i]);
    CHECK(stream_cache_lookup(a.cache, &w, chunk_store[3], chunk_len[3], &a.parse, &t) == 1,
          "a chunk of the same shape does not match the template");
    CHECK(stream_cache_lookup(a.cache, &w, chunk_store[longer], chunk_len[longer], &a.parse,
                              &t) == 0, "a chunk of another shape matches the template");
    memset(&t, 0, sizeof t);
    jscan_init(&sc, chunk_store[3], chunk_len[3]);
    CHECK(jscan_enter(&sc, jscan_peek(&sc)) == 0 && stream_cache_resume(a.cache, &sc, &t, &first),
          "a chunk with the same first bytes does not resume after them");
    CHECK(t.model.type == JSCAN_STRING && t.model.n == 6 && t.created == 1744186429.0,
          "the resumed prefix lost its members");
    jscan_init(&sc, chunk_store[longer], chunk_len[longer]);
    CHECK(jscan_enter(&sc, jscan_peek(&sc)) == 0 && !stream_cache_resume(a.cache, &sc, &t, &first),
          "the prefix resumes inside a number that goes on");
    stream_clear_pending(&a);
    stream_free(&a);
  }

  /* caches emptied before every chunk, and no cache at all: the same, chunk by chunk */
  feed(&forgetful, 1);
  CHECK(same_run(&ref, &forgetful), "forgetting the caches changed a result");
  fail_calloc = 1;
  feed(&cacheless, 0);
  fail_calloc = 0;
  CHECK(cacheless.a.cache == NULL, "the cache's allocation was meant to fail");
  CHECK(same_run(&ref, &cacheless), "an assembler without caches gives another result");
  stream_free(&forgetful.a);
  stream_free(&cacheless.a);

  /* one failing allocation at a time */
  allocs = 0;
  feed(&r, 0);
  stream_free(&r.a);
  total = allocs;
  CHECK(total > 20, "only %ld allocations", total);
  for (n = 0; n < total; n++) {
    int enomem = 0;
    alloc_countdown = n;
    feed(&r, 0);
    alloc_countdown = -1;
    for (i = 0; i < nchunks; i++) {
      CHECK(r.rc[i] == ref.rc[i] || r.rc[i] == STREAM_ENOMEM, "failure %ld: chunk %d rc %d", n, i,
            r.rc[i]);
      if (r.rc[i] == STREAM_ENOMEM) enomem++;
      CHECK(r.msg_ok[i], "failure %ld: chunk %d: ENOMEM without its message", n, i);
    }
    CHECK(enomem <= 1, "failure %ld: %d chunks report ENOMEM", n, enomem);
    if (enomem == 0) {
      invisible++;
      CHECK(same_run(&ref, &r), "failure %ld was not reported, yet the result differs", n);
    } else {
      visible++;
    }
    stream_free(&r.a);
  }
  CHECK(invisible > 0 && visible > 0, "%d failures hidden by the caches, %d reported", invisible,
        visible);

  stream_free(&ref.a);
  if (failures) {
    fprintf(stderr, "stream_test: %d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf("stream_test: %d checks passed (%ld allocations, each failed once: %d reported, %d "
         "absorbed by the caches or a hint)\n", checks, total, visible, invisible);
  return 0;
}
