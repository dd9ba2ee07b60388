/* The byte buffer of every C piece (sse.c, stream.c, stream_cache.c, lsse.c, jencode.c,
 * transport.c), and the growth of their arrays. Plain C, no Lua: the SSE parser and the
 * stream assembler stay usable alone. Header-only and static so that every C file gets
 * its own copy without exporting a symbol.
 *
 * A bytebuf is p/len/cap; p is NULL until the first reservation. Capacity doubles from
 * BUF_MIN_CAP: small enough that an assembler's many short strings (id, role, a call's
 * name) stay small, and a caller that knows better reserves up front (buf_reserve). No
 * function here fails half way: on -1 (memory exhausted, or a size past SIZE_MAX / 2) the
 * buffer is left exactly as it was. */
#ifndef LLMCHAT_BUF_H
#define LLMCHAT_BUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 64

typedef struct bytebuf {
  char *p;
  size_t len, cap;
} bytebuf;

static inline void buf_init(bytebuf *b) { b->p = NULL; b->len = b->cap = 0; }

static inline void buf_free(bytebuf *b) {
  free(b->p);
  buf_init(b);
}

/* Room for extra more bytes after len. */
static inline int buf_reserve(bytebuf *b, size_t extra) {
  size_t need, cap;
  char *p;
  if (extra <= b->cap - b->len) return 0;
  if (extra > SIZE_MAX / 2 - b->len) return -1;
  need = b->len + extra;
  cap = b->cap ? b->cap : BUF_MIN_CAP;
  while (cap < need) cap *= 2; /* need <= SIZE_MAX / 2: cannot overflow */
  p = (char *)realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static inline int buf_add(bytebuf *b, const void *s, size_t n) {
  if (buf_reserve(b, n)) return -1;
  if (n) memcpy(b->p + b->len, s, n);
  b->len += n;
  return 0;
}

static inline int buf_addc(bytebuf *b, char c) {
  if (b->len == b->cap && buf_reserve(b, 1)) return -1;
  b->p[b->len++] = c;
  return 0;
}

/* Replaces the contents. */
static inline int buf_set(bytebuf *b, const void *s, size_t n) {
  size_t len = b->len;
  b->len = 0; /* room for n bytes from the start, not after the old ones */
  if (buf_reserve(b, n)) { b->len = len; return -1; }
  if (n) memcpy(b->p, s, n);
  b->len = n;
  return 0;
}

/* Room for need items of elem bytes in the array *p of capacity *cap (in items); the
 * capacity doubles from 8. */
static inline int buf_grow_array(void **p, size_t *cap, size_t need, size_t elem) {
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

#endif
