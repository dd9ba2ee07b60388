/* Unit tests for the SSE parser (plain C). `make test-sse-c` runs them under ASan+UBSan.
 * Events are rendered as "type|data|id|retry\n" so expectations read like the stream. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The parser is compiled into this program with realloc routed through a hook, so the
 * out-of-memory paths can be walked one failing allocation at a time. */
static long alloc_countdown = -1; /* fail the allocation when it reaches 0; -1: never */
static void *test_realloc(void *ptr, size_t n);
#define realloc test_realloc
#include "sse.c"
#undef realloc

static void *test_realloc(void *ptr, size_t n)
{
  if (alloc_countdown >= 0 && alloc_countdown-- == 0) return NULL;
  return realloc(ptr, n);
}

#if LONG_MAX == 9223372036854775807L
#define LONG_MAX_STR "9223372036854775807"
#else
#define LONG_MAX_STR "2147483647"
#endif

typedef struct evlog {
  char s[8192];
  size_t n;
  int stop_at; /* stop when this many events have been logged (0: never) */
  int count;
  const char *last_data;
} evlog;

static int failures, checks;

static void log_put(evlog *l, const char *s, size_t n)
{
  if (l->n + n >= sizeof l->s) { fprintf(stderr, "log overflow\n"); abort(); }
  memcpy(l->s + l->n, s, n);
  l->n += n;
  l->s[l->n] = '\0';
}

static int on_event(void *ud, const sse_event *ev)
{
  evlog *l = (evlog *)ud;
  char num[32];
  log_put(l, ev->type, ev->type_len);
  log_put(l, "|", 1);
  log_put(l, ev->data, ev->data_len);
  log_put(l, "|", 1);
  log_put(l, ev->id, ev->id_len);
  sprintf(num, "|%ld\n", ev->retry);
  log_put(l, num, strlen(num));
  l->last_data = ev->data;
  l->count++;
  return l->stop_at && l->count == l->stop_at;
}

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)

static void check(int ok, const char *what, const char *file, int line)
{
  checks++;
  if (!ok) {
    failures++;
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
  }
}

/* the expectation may hold NUL bytes: wl is its length */
static void check_log(const evlog *l, const char *want, size_t wl, const char *name, int line)
{
  const char *got = l->s;
  checks++;
  if (l->n != wl || memcmp(got, want, wl) != 0) {
    failures++;
    fprintf(stderr, "sse_test.c:%d: %s\n  want: \"%s\"\n  got:  \"%s\"\n", line, name, want, got);
  }
}

/* Parses `in` (n bytes) fed as pieces of `step` bytes (0: whole), each in its own heap
 * block, then sse_finish; returns the rendered events and sets *rc. */
static void parse(evlog *l, const char *in, size_t n, size_t step, size_t max_line, int *rc)
{
  sse_parser p;
  size_t off = 0;
  int r = SSE_OK;
  memset(l, 0, sizeof *l);
  sse_init(&p, max_line, on_event, l);
  while (off < n && r == SSE_OK) {
    size_t k = step == 0 || step > n - off ? n - off : step;
    char *piece = (char *)malloc(k);
    memcpy(piece, in + off, k);
    r = sse_feed(&p, piece, k);
    free(piece);
    off += k;
  }
  if (r == SSE_OK) r = sse_finish(&p);
  sse_free(&p);
  *rc = r;
}

/* The events must be the same whole, byte by byte, and split in two at every offset. */
static void expect(const char *in, size_t n, const char *want, size_t wl, int want_rc,
                   size_t max_line, int line)
{
  evlog l;
  int rc;
  size_t cut;
  char name[64];
  parse(&l, in, n, 0, max_line, &rc);
  check_log(&l, want, wl, "whole", line);
  check(rc == want_rc, "rc (whole)", "sse_test.c", line);
  parse(&l, in, n, 1, max_line, &rc);
  check_log(&l, want, wl, "byte by byte", line);
  check(rc == want_rc, "rc (byte by byte)", "sse_test.c", line);
  for (cut = 1; cut < n; cut++) {
    sse_parser p;
    char *a = (char *)malloc(cut), *b = (char *)malloc(n - cut);
    int r;
    memcpy(a, in, cut);
    memcpy(b, in + cut, n - cut);
    memset(&l, 0, sizeof l);
    sse_init(&p, max_line, on_event, &l);
    r = sse_feed(&p, a, cut);
    free(a); /* nothing may point into a once the feed returned */
    if (r == SSE_OK) r = sse_feed(&p, b, n - cut);
    free(b);
    if (r == SSE_OK) r = sse_finish(&p);
    sse_free(&p);
    sprintf(name, "split at %zu", cut);
    check_log(&l, want, wl, name, line);
    check(r == want_rc, "rc (split)", "sse_test.c", line);
  }
}

#define EXPECT(in, want) expect((in), sizeof(in) - 1, (want), sizeof(want) - 1, SSE_OK, 0, __LINE__)
#define EXPECT_MAX(in, max, want, rc) \
  expect((in), sizeof(in) - 1, (want), sizeof(want) - 1, (rc), (max), __LINE__)

static void test_fields(void)
{
  EXPECT("data: hello\n\n", "message|hello||-1\n");
  EXPECT("data:hello\n\n", "message|hello||-1\n");
  EXPECT("data:  two spaces\n\n", "message| two spaces||-1\n"); /* only one space stripped */
  EXPECT("data:\tx\n\n", "message|\tx||-1\n");
  EXPECT("data: a\ndata: b\ndata:\n\n", "message|a\nb\n||-1\n");
  EXPECT("data\n\n", "message|||-1\n");           /* no colon: field with empty value */
  EXPECT("data:\n\n", "message|||-1\n");
  EXPECT("data: x:y: z\n\n", "message|x:y: z||-1\n"); /* field name ends at the first colon */
  EXPECT("event: ping\ndata: 1\n\ndata: 2\n\n", "ping|1||-1\nmessage|2||-1\n");
  EXPECT("event:\ndata: 1\n\n", "message|1||-1\n");
  EXPECT("event: a\nevent: b\ndata: 1\n\n", "b|1||-1\n");
  EXPECT(": comment\n:\ndata: 1\n: another\n\n", "message|1||-1\n");
  EXPECT("Data: 1\nDATA: 2\nfoo: bar\ndata : 3\n\n", "");   /* case-sensitive, exact names */
  EXPECT("foo: bar\ndata: 1\n\n", "message|1||-1\n");
  /* a blank line with no data resets the event type and dispatches nothing */
  EXPECT("event: lost\n\ndata: 1\n\n", "message|1||-1\n");
  EXPECT("\n\n\n", "");
  /* id persists, is set on every later event, and "id" alone clears it */
  EXPECT("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
         "message|a|1|-1\nmessage|b|1|-1\nmessage|c||-1\n");
  EXPECT("id: 7\n\ndata: a\n\n", "message|a|7|-1\n"); /* set even by an empty block */
  EXPECT("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n", "message|a|1|-1\nmessage|b|1|-1\n");
  /* retry: ASCII digits only; empty or anything else ignored; huge clamps */
  EXPECT("retry: 3000\ndata: a\n\nretry: 12x\ndata: b\n\nretry:\ndata: c\n\n",
         "message|a||3000\nmessage|b||3000\nmessage|c||3000\n");
  EXPECT("retry: -5\ndata: a\n\nretry:  5\ndata: b\n\n", "message|a||-1\nmessage|b||-1\n");
  EXPECT("retry: 99999999999999999999999999\ndata: a\n\n",
         "message|a||" LONG_MAX_STR "\n");
  EXPECT("retry: 0\ndata: a\n\n", "message|a||0\n");
}

static void test_line_endings(void)
{
  EXPECT("data: a\r\n\r\n", "message|a||-1\n");
  EXPECT("data: a\r\rdata: b\n\n", "message|a||-1\nmessage|b||-1\n");
  EXPECT("data: a\r\ndata: b\r\n\r\n", "message|a\nb||-1\n");
  EXPECT("data: a\n\rdata: b\r\n\n", "message|a||-1\nmessage|b||-1\n");
  EXPECT("data: a\r\n\ndata: b\n\r\n", "message|a||-1\nmessage|b||-1\n");
  EXPECT("data: a\r\r\n", "message|a||-1\n");
  EXPECT("data: a\n\r\n\r", "message|a||-1\n"); /* \n, \r\n, \r: three line ends */
  /* end of input: the incomplete block is discarded, whatever its last line */
  EXPECT("data: a\n", "");
  EXPECT("data: a", "");
  EXPECT("data: a\n\ndata: b\r", "message|a||-1\n");
}

static void test_bom(void)
{
  EXPECT("\xEF\xBB\xBF" "data: a\n\n", "message|a||-1\n");
  EXPECT("\xEF\xBB\xBF\xEF\xBB\xBF" "data: a\n\n", "");  /* only one BOM is dropped */
  EXPECT("\xEF\xBB\xBF" "\xEF\xBB\xBF" "data: a\n\n" "data: b\n\n", "message|b||-1\n");
  EXPECT("\xEF\xBB" "data: a\n\n", "");   /* a partial BOM is part of the first line */
  EXPECT("\xEF" "\n" "data: a\n\n", "message|a||-1\n");
  EXPECT("\xEF\xBB\n" "data: a\n\n", "message|a||-1\n");
  EXPECT("data: \xEF\xBB\xBF" "a\n\n", "message|\xEF\xBB\xBF" "a||-1\n");
  EXPECT("\xEF\xBB\xBF", "");
  EXPECT("\xEF\xBB\xBF\n" "data: a\n\n", "message|a||-1\n");
}

static void test_utf8_and_binary(void)
{
  EXPECT("event: caf\xC3\xA9\ndata: \xF0\x9F\x8C\x95 \xC3\xA7" "a\n\n",
         "caf\xC3\xA9|\xF0\x9F\x8C\x95 \xC3\xA7" "a||-1\n");
  EXPECT("data: a\0b\n\n", "message|a\0b||-1\n");
}

static void test_limits(void)
{
  /* max_line 8: a line of 8 bytes passes, 9 fails, whether or not its end has arrived */
  EXPECT_MAX("data:123\n\n", 8, "message|123||-1\n", SSE_OK);
  EXPECT_MAX("data:1234\n\n", 8, "", SSE_ELINE);
  EXPECT_MAX("data:1\n\ndata:1234", 8, "message|1||-1\n", SSE_ELINE);
  EXPECT_MAX(": comment!\n", 8, "", SSE_ELINE);
  EXPECT_MAX("\xEF\xBB\xBF" "data:123\n\n", 8, "message|123||-1\n", SSE_OK);
  EXPECT_MAX("\xEF\xBB" "\n", 1, "", SSE_ELINE);
  EXPECT_MAX("\xEF\xBB", 1, "", SSE_ELINE);
  EXPECT_MAX("\xEF\xBB", 2, "", SSE_OK);
  /* the data buffer (values plus "\n" each) is bounded too: 3+1 + 3+1 = 8 fits, 9 does not */
  EXPECT_MAX("data:abc\ndata:def\n\n", 8, "message|abc\ndef||-1\n", SSE_OK);
  EXPECT_MAX("data:abc\ndata:defg\n\n", 8, "", SSE_ELINE);
  EXPECT_MAX("data:a\ndata:b\ndata:c\ndata:d\ndata:e\n\n", 8, "", SSE_ELINE);
  EXPECT_MAX("data:a\ndata:b\ndata:c\ndata:d\n\n", 8, "message|a\nb\nc\nd||-1\n", SSE_OK);
  EXPECT_MAX("data:1234567\n\n", 8, "", SSE_ELINE); /* a single value of 7 + "\n" is 8: ok */
}

static void test_sticky_error(void)
{
  evlog l;
  sse_parser p;
  memset(&l, 0, sizeof l);
  sse_init(&p, 4, on_event, &l);
  CHECK(sse_feed(&p, "data: x", 7) == SSE_ELINE);
  CHECK(sse_feed(&p, "\n\n", 2) == SSE_ELINE);
  CHECK(sse_finish(&p) == SSE_ELINE);
  CHECK(l.count == 0);
  sse_free(&p);
  sse_free(&p); /* idempotent */
  sse_init(&p, 4, on_event, &l); /* usable again after init */
  CHECK(sse_feed(&p, "data\n\n", 6) == SSE_OK && l.count == 1);
  sse_free(&p);
}

static void test_stop_and_resume(void)
{
  static const char in[] = "data: a\n\ndata: b\r\rdata: c\r\n\r\ndata: d\n\n";
  evlog l;
  sse_parser p;
  size_t off = 0, n = sizeof in - 1;
  int rc, stops = 0;
  memset(&l, 0, sizeof l);
  sse_init(&p, 0, on_event, &l);
  for (;;) {
    l.stop_at = l.count + 1;
    rc = sse_feed(&p, in + off, n - off);
    if (rc != SSE_STOP) break;
    stops++;
    CHECK(sse_consumed(&p) > 0 && sse_consumed(&p) <= n - off);
    off += sse_consumed(&p);
  }
  CHECK(rc == SSE_OK && stops == 4);
  CHECK(sse_consumed(&p) == n - off);
  check_log(&l, "message|a||-1\nmessage|b||-1\nmessage|c||-1\nmessage|d||-1\n", strlen("message|a||-1\nmessage|b||-1\nmessage|c||-1\nmessage|d||-1\n"), "resume",
            __LINE__);
  sse_free(&p);

  /* a stop on a CR that ends the buffer: the LF opening the next feed is skipped */
  memset(&l, 0, sizeof l);
  l.stop_at = 1;
  sse_init(&p, 0, on_event, &l);
  CHECK(sse_feed(&p, "data: a\r\r", 9) == SSE_STOP && sse_consumed(&p) == 9);
  l.stop_at = 0;
  CHECK(sse_feed(&p, "\ndata: b\n\n", 10) == SSE_OK);
  check_log(&l, "message|a||-1\nmessage|b||-1\n", strlen("message|a||-1\nmessage|b||-1\n"), "stop at CR", __LINE__);
  sse_free(&p);
}

static void test_zero_copy_and_reuse(void)
{
  static const char one[] = "data: hello\n\n";
  static const char two[] = "data: a\ndata: b\n\n";
  evlog l;
  sse_parser p;
  memset(&l, 0, sizeof l);
  sse_init(&p, 0, on_event, &l);
  CHECK(sse_feed(&p, one, sizeof one - 1) == SSE_OK);
  CHECK(l.last_data == one + 6); /* points into the caller's buffer */
  CHECK(sse_feed(&p, two, sizeof two - 1) == SSE_OK);
  CHECK(l.last_data < two || l.last_data >= two + sizeof two); /* joined: a copy */
  CHECK(sse_feed(&p, NULL, 0) == SSE_OK);
  /* finish discards the open block, keeps the id, and starts a new stream (BOM allowed) */
  CHECK(sse_feed(&p, "id: 9\ndata: lost\n", 17) == SSE_OK);
  CHECK(sse_finish(&p) == SSE_OK);
  CHECK(sse_feed(&p, "\xEF\xBB\xBF" "data: new\n\n", 14) == SSE_OK);
  check_log(&l, "message|hello||-1\nmessage|a\nb||-1\nmessage|new|9|-1\n", strlen("message|hello||-1\nmessage|a\nb||-1\nmessage|new|9|-1\n"), "reuse", __LINE__);
  sse_free(&p);
}

/* Every allocation, in turn, fails: the parser reports SSE_ENOMEM (sticky), never crashes
 * or leaks, and the events before the failure are a prefix of the real ones. */
static void test_out_of_memory(void)
{
  static const char in[] = "event: e\nid: 1\ndata: a\ndata: b\n\ndata: c\n\ndata: spans";
  static const char tail[] = " feeds\n\n";
  evlog ref, l;
  sse_parser p;
  long k;
  int rc, saw_enomem = 0;
  memset(&ref, 0, sizeof ref);
  sse_init(&p, 0, on_event, &ref);
  CHECK(sse_feed(&p, in, sizeof in - 1) == SSE_OK && sse_feed(&p, tail, sizeof tail - 1) == SSE_OK);
  sse_free(&p);
  for (k = 0; k < 20; k++) {
    memset(&l, 0, sizeof l);
    sse_init(&p, 0, on_event, &l);
    alloc_countdown = k;
    rc = sse_feed(&p, in, sizeof in - 1);
    if (rc == SSE_OK) rc = sse_feed(&p, tail, sizeof tail - 1);
    alloc_countdown = -1;
    CHECK(rc == SSE_OK || rc == SSE_ENOMEM);
    if (rc == SSE_ENOMEM) {
      saw_enomem = 1;
      CHECK(sse_feed(&p, "data: x\n\n", 10) == SSE_ENOMEM);
      CHECK(sse_finish(&p) == SSE_ENOMEM);
    }
    CHECK(l.n <= ref.n && memcmp(l.s, ref.s, l.n) == 0);
    if (rc == SSE_OK) CHECK(l.n == ref.n);
    sse_free(&p);
  }
  CHECK(saw_enomem);
}

static void test_strerror(void)
{
  CHECK(strcmp(sse_strerror(SSE_OK), "ok") == 0);
  CHECK(strstr(sse_strerror(SSE_ELINE), "line") != NULL);
  CHECK(strstr(sse_strerror(SSE_ENOMEM), "memory") != NULL);
  CHECK(strstr(sse_strerror(SSE_STOP), "stop") != NULL);
  CHECK(strcmp(sse_strerror(42), "unknown error") == 0);
}

int main(void)
{
  test_fields();
  test_line_endings();
  test_bom();
  test_utf8_and_binary();
  test_limits();
  test_sticky_error();
  test_stop_and_resume();
  test_zero_copy_and_reuse();
  test_out_of_memory();
  test_strerror();
  if (failures) {
    fprintf(stderr, "sse_test: %d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf("sse_test: %d checks passed\n", checks);
  return 0;
}
