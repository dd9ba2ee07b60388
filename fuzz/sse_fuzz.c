/* Differential fuzz target for the SSE parser (libFuzzer).
 *
 * Input: byte 0 chooses max_line (< 0x80: the default; else 1..64, to reach the length
 * limits), byte 1 seeds the split points, the rest is the stream. The stream is parsed by a
 * deliberately naive byte-at-a-time reference written here from the WHATWG text, and by
 * src/sse.c fed: whole; in pseudo-random chunks (with empty feeds between); one byte at a
 * time; and in chunks with the callback stopping on every event and the caller resuming
 * at sse_consumed(). Every run must give the same events (type, data, id, retry) and the
 * same final status, else abort(). Each chunk is copied into its own exact-size heap block
 * that is freed right after sse_feed, so ASan catches reads past len and any pointer the
 * parser keeps into a caller's buffer after the feed returns. */
#include "sse.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size);

typedef struct rbuf {
  char *p;
  size_t len, cap;
} rbuf;

static void rb_put(rbuf *b, const void *s, size_t n)
{
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    b->p = (char *)realloc(b->p, cap);
    if (!b->p) abort();
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void rb_putc(rbuf *b, char c) { rb_put(b, &c, 1); }

static void record(rbuf *out, const char *type, size_t tl, const char *data, size_t dl,
                   const char *id, size_t il, long retry)
{
  rb_put(out, &tl, sizeof tl);
  rb_put(out, type, tl);
  rb_put(out, &dl, sizeof dl);
  rb_put(out, data, dl);
  rb_put(out, &il, sizeof il);
  rb_put(out, id, il);
  rb_put(out, &retry, sizeof retry);
}

/* ---- the reference: one byte at a time, whole input, no cleverness ---- */

typedef struct ref {
  size_t max_line;
  rbuf line, data, type, id;
  long retry;
  rbuf *out;
} ref;

static int ref_line(ref *r)
{
  const char *s = r->line.p;
  size_t n = r->line.len, i, colon = n, vstart;
  int has_colon = 0;
  if (n == 0) {
    if (r->data.len == 0) {
      r->type.len = 0;
      return SSE_OK;
    }
    r->data.len--; /* the trailing "\n" */
    if (r->type.len)
      record(r->out, r->type.p, r->type.len, r->data.p, r->data.len, r->id.p, r->id.len, r->retry);
    else
      record(r->out, "message", 7, r->data.p, r->data.len, r->id.p, r->id.len, r->retry);
    r->data.len = 0;
    r->type.len = 0;
    return SSE_OK;
  }
  if (s[0] == ':') return SSE_OK;
  for (i = 0; i < n; i++) {
    if (s[i] == ':') { colon = i; has_colon = 1; break; }
  }
  vstart = has_colon ? colon + 1 : n;
  if (vstart < n && s[vstart] == ' ') vstart++;
  if (colon == 4 && s[0] == 'd' && s[1] == 'a' && s[2] == 't' && s[3] == 'a') {
    for (i = vstart; i < n; i++) rb_putc(&r->data, s[i]);
    rb_putc(&r->data, '\n');
    if (r->data.len > r->max_line) return SSE_ELINE;
  } else if (colon == 5 && s[0] == 'e' && s[1] == 'v' && s[2] == 'e' && s[3] == 'n' && s[4] == 't') {
    r->type.len = 0;
    for (i = vstart; i < n; i++) rb_putc(&r->type, s[i]);
  } else if (colon == 2 && s[0] == 'i' && s[1] == 'd') {
    int nul = 0;
    for (i = vstart; i < n; i++) if (s[i] == '\0') nul = 1;
    if (!nul) {
      r->id.len = 0;
      for (i = vstart; i < n; i++) rb_putc(&r->id, s[i]);
    }
  } else if (colon == 5 && s[0] == 'r' && s[1] == 'e' && s[2] == 't' && s[3] == 'r' && s[4] == 'y') {
    int ok = vstart < n;
    long v = 0;
    for (i = vstart; i < n; i++) if (s[i] < '0' || s[i] > '9') ok = 0;
    if (ok) {
      for (i = vstart; i < n; i++) {
        long d = s[i] - '0';
        if (v > (LONG_MAX - d) / 10) v = LONG_MAX;
        else v = v * 10 + d;
      }
      r->retry = v;
    }
  }
  return SSE_OK;
}

static int ref_parse(const uint8_t *in, size_t n, size_t max_line, rbuf *out)
{
  ref r;
  size_t i = 0;
  int prev_cr = 0, rc = SSE_OK;
  memset(&r, 0, sizeof r);
  r.max_line = max_line;
  r.retry = -1;
  r.out = out;
  if (n >= 3 && in[0] == 0xEF && in[1] == 0xBB && in[2] == 0xBF) i = 3;
  for (; i < n; i++) {
    char c = (char)in[i];
    if (c == '\n' && prev_cr) { prev_cr = 0; continue; }
    prev_cr = (c == '\r');
    if (c == '\r' || c == '\n') {
      rc = ref_line(&r);
      r.line.len = 0;
      if (rc != SSE_OK) break;
      continue;
    }
    rb_putc(&r.line, c);
    if (r.line.len > max_line) { rc = SSE_ELINE; break; }
  }
  /* end of input: whatever is pending is discarded */
  free(r.line.p); free(r.data.p); free(r.type.p); free(r.id.p);
  return rc;
}

/* ---- the real parser under different feeding patterns ---- */

typedef struct sink {
  rbuf *out;
  int stop_every; /* stop after every event when nonzero */
} sink;

static int on_event(void *ud, const sse_event *ev)
{
  sink *k = (sink *)ud;
  if (ev->type_len == 0 || ev->type == NULL || ev->data == NULL || ev->id == NULL) abort();
  record(k->out, ev->type, ev->type_len, ev->data, ev->data_len, ev->id, ev->id_len, ev->retry);
  return k->stop_every;
}

static uint32_t rng_next(uint32_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* mode 0: whole; 1: random chunks; 2: byte at a time; 3: random chunks, stop and resume */
static int run(const uint8_t *in, size_t n, size_t max_line, uint32_t seed, int mode, rbuf *out)
{
  sse_parser p;
  sink k;
  size_t off = 0;
  int rc = SSE_OK;
  k.out = out;
  k.stop_every = (mode == 3);
  sse_init(&p, max_line, on_event, &k);
  if (seed == 0) seed = 0x9e3779b9u;
  while (off < n && rc == SSE_OK) {
    size_t chunk, step;
    char *copy;
    if (mode == 0) chunk = n;
    else if (mode == 2) chunk = 1;
    else {
      uint32_t x = rng_next(&seed);
      chunk = (x & 3) == 0 ? 1 + (x >> 8) % 4 : 1 + (x >> 8) % 64;
      if ((x & 0xF0) == 0) { /* an empty feed now and then */
        char *empty = (char *)malloc(1);
        if (sse_feed(&p, empty, 0) != SSE_OK) abort();
        free(empty);
      }
    }
    if (chunk > n - off) chunk = n - off;
    step = chunk;
    copy = (char *)malloc(chunk);
    if (!copy) abort();
    memcpy(copy, in + off, chunk);
    rc = sse_feed(&p, copy, chunk);
    while (rc == SSE_STOP && mode == 3) {
      size_t used = sse_consumed(&p);
      if (used == 0 || used > chunk) abort(); /* a stop always follows a line ending */
      rc = sse_feed(&p, copy + used, chunk - used);
      chunk -= used;
      memmove(copy, copy + used, chunk); /* same bytes, so offsets stay honest */
    }
    if (rc == SSE_OK && sse_consumed(&p) != chunk) abort();
    free(copy);
    off += step;
  }
  if (rc == SSE_STOP) abort();
  if (rc == SSE_OK) rc = sse_finish(&p);
  else if (sse_finish(&p) != rc || sse_feed(&p, "\n\n", 2) != rc) abort(); /* sticky */
  sse_free(&p);
  return rc;
}

static void dump(const char *what, const rbuf *b, int rc)
{
  size_t i;
  fprintf(stderr, "%s rc=%d len=%zu:", what, rc, b->len);
  for (i = 0; i < b->len && i < 400; i++) fprintf(stderr, " %02x", (unsigned char)b->p[i]);
  fprintf(stderr, "\n");
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
  rbuf want = { NULL, 0, 0 }, got = { NULL, 0, 0 };
  size_t max_line;
  uint32_t seed;
  int want_rc, mode;
  if (size < 2) return 0;
  max_line = in[0] < 0x80 ? SSE_DEFAULT_MAX_LINE : (size_t)1 + (in[0] & 0x3F);
  seed = (uint32_t)in[1] * 2654435761u + (uint32_t)size;
  in += 2;
  size -= 2;
  want_rc = ref_parse(in, size, max_line, &want);
  for (mode = 0; mode < 4; mode++) {
    int rc;
    got.len = 0;
    rc = run(in, size, max_line, seed, mode, &got);
    if (rc != want_rc || got.len != want.len || (got.len && memcmp(got.p, want.p, got.len) != 0)) {
      fprintf(stderr, "sse_fuzz: mode %d differs from the reference (max_line %zu)\n", mode,
              max_line);
      dump("want", &want, want_rc);
      dump("got ", &got, rc);
      abort();
    }
  }
  free(want.p);
  free(got.p);
  return 0;
}
