/* A growable byte buffer. Header-only and static so that every C file gets
 * its own copy without exporting a symbol. */
#ifndef LLMCHAT_BUF_H
#define LLMCHAT_BUF_H

#include <stdlib.h>
#include <string.h>

typedef struct bytebuf {
  char *p;
  size_t len, cap;
} bytebuf;

static inline void buf_init(bytebuf *b) { b->p = NULL; b->len = b->cap = 0; }

static inline void buf_free(bytebuf *b) {
  free(b->p);
  buf_init(b);
}

/* 0 on success, -1 when memory is exhausted (the buffer is left as it was) */
static inline int buf_reserve(bytebuf *b, size_t extra) {
  size_t need, cap;
  char *p;
  if (extra <= b->cap - b->len) return 0;
  if (extra > (size_t)-1 / 2 - b->len) return -1;
  need = b->len + extra;
  cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
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

#endif
