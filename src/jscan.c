/* jscan: validating JSON scanner. See jscan.h for the accepted language and the documented
 * differences from lua-cjson. One pass over the bytes, no allocation, no recursion. */
#include "jscan.h"

#include <locale.h>
#include <stdlib.h>
#include <string.h>

#define KIND_SET(s, d)   ((s)->kinds[(d) >> 6] |= (uint64_t)1 << ((d) & 63))
#define KIND_CLEAR(s, d) ((s)->kinds[(d) >> 6] &= ~((uint64_t)1 << ((d) & 63)))
#define KIND_IS_OBJ(s, d) (((s)->kinds[(d) >> 6] >> ((d) & 63)) & 1)

void jscan_init(jscan *s, const char *buf, size_t len) {
  s->p = buf;
  s->end = buf + len;
  s->base = buf;
  s->depth = 0;
  s->err = NULL;
  s->errpos = 0;
  s->rec = NULL;
  s->nrec = s->caprec = 0;
}

static int fail(jscan *s, const char *at, const char *msg) {
  if (!s->err) {
    s->err = msg;
    s->errpos = (size_t)(at - s->base);
  }
  return -1;
}

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Four hex digits at p (bounds checked by the caller); -1 if any is not hex. */
static long hex4(const unsigned char *p) {
  int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]), d = hexval(p[3]);
  if ((a | b | c | d) < 0) return -1;
  return ((long)a << 12) | (b << 8) | (c << 4) | d;
}

/* Bytes a string scan must stop at: the closing quote, an escape, and NUL (rejected inside
 * strings, as lua-cjson does). Other control characters pass, as in lua-cjson.
 * find_special returns the first such byte at or after p, or e: 16 bytes at a time with
 * SSE2, 8 with plain 64-bit arithmetic elsewhere, then byte by byte for the tail. */
#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>
static inline const unsigned char *find_special(const unsigned char *p, const unsigned char *e) {
  const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\'), z = _mm_setzero_si128();
  while (e - p >= 16) {
    __m128i w = _mm_loadu_si128((const __m128i *)(const void *)p);
    unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(w, q), _mm_cmpeq_epi8(w, b)), _mm_cmpeq_epi8(w, z)));
    if (m) return p + __builtin_ctz(m);
    p += 16;
  }
  while (p < e && *p != '"' && *p != '\\' && *p != 0) p++;
  return p;
}
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline uint64_t zero_bytes(uint64_t v) {
  /* exact in its lowest set bit, which is all we use */
  return (v - 0x0101010101010101ULL) & ~v & 0x8080808080808080ULL;
}
static inline const unsigned char *find_special(const unsigned char *p, const unsigned char *e) {
  while (e - p >= 8) {
    uint64_t w, hit;
    memcpy(&w, p, 8);
    hit = zero_bytes(w ^ 0x2222222222222222ULL) | zero_bytes(w ^ 0x5c5c5c5c5c5c5c5cULL) |
          zero_bytes(w);
    if (hit) return p + ((unsigned)__builtin_ctzll(hit) >> 3);
    p += 8;
  }
  while (p < e && *p != '"' && *p != '\\' && *p != 0) p++;
  return p;
}
#else
static const unsigned char *find_special(const unsigned char *p, const unsigned char *e) {
  while (p < e && *p != '"' && *p != '\\' && *p != 0) p++;
  return p;
}
#endif

/* s->p is at the opening quote. */
static int scan_string(jscan *s, jspan *v) {
  const unsigned char *p = (const unsigned char *)s->p + 1;
  const unsigned char *e = (const unsigned char *)s->end;
  const unsigned char *start = p;
  int esc = 0;
  for (;;) {
    p = find_special(p, e);
    if (p >= e) return fail(s, (const char *)start - 1, "unterminated string");
    if (*p == '"') break;
    if (*p == 0) return fail(s, (const char *)p, "NUL byte inside a string");
    /* backslash */
    esc = 1;
    if (e - p < 2) return fail(s, (const char *)p, "unterminated string");
    switch (p[1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
      p += 2;
      break;
    case 'u': {
      long cp, lo;
      if (e - p < 6 || (cp = hex4(p + 2)) < 0)
        return fail(s, (const char *)p, "invalid unicode escape");
      if ((cp & 0xF800) == 0xD800) {
        /* a surrogate: must be a high one followed by an escaped low one */
        if (cp & 0x400) return fail(s, (const char *)p, "invalid unicode escape (lone low surrogate)");
        if (e - p < 12 || p[6] != '\\' || p[7] != 'u' || (lo = hex4(p + 8)) < 0 ||
            (lo & 0xFC00) != 0xDC00)
          return fail(s, (const char *)p, "invalid unicode escape (lone high surrogate)");
        p += 12;
      } else {
        p += 6;
      }
      break;
    }
    default:
      return fail(s, (const char *)p, "invalid escape");
    }
  }
  v->type = JSCAN_STRING;
  v->p = (const char *)start;
  v->n = (size_t)(p - start);
  v->esc = (unsigned char)esc;
  s->p = (const char *)p + 1;
  return 0;
}

/* RFC 8259 number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static int scan_number(jscan *s, jspan *v) {
  const unsigned char *p = (const unsigned char *)s->p;
  const unsigned char *e = (const unsigned char *)s->end;
  const unsigned char *start = p;
  if (*p == '-') p++;
  if (p >= e) goto bad;
  if (*p == '0') {
    p++;
  } else if (*p >= '1' && *p <= '9') {
    p++;
    while (p < e && *p >= '0' && *p <= '9') p++;
  } else {
    goto bad;
  }
  if (p < e && *p == '.') {
    p++;
    if (p >= e || *p < '0' || *p > '9') goto bad; /* D1: cjson would accept "1." */
    while (p < e && *p >= '0' && *p <= '9') p++;
  }
  if (p < e && (*p | 0x20) == 'e') {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (p >= e || *p < '0' || *p > '9') goto bad;
    while (p < e && *p >= '0' && *p <= '9') p++;
  }
  v->type = JSCAN_NUMBER;
  v->p = (const char *)start;
  v->n = (size_t)(p - start);
  v->esc = 0;
  s->p = (const char *)p;
  return 0;
bad:
  return fail(s, (const char *)start, "invalid number");
}

static int scan_literal(jscan *s, jspan *v, const char *lit, size_t n, int type) {
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
    return fail(s, s->p, "invalid token");
  v->type = (unsigned char)type;
  v->p = s->p;
  v->n = n;
  v->esc = 0;
  s->p += n;
  return 0;
}

/* A scalar at s->p (whitespace skipped, c is its first byte). */
static int scan_scalar(jscan *s, int c, jspan *v) {
  switch (c) {
  case '"':
    if (scan_string(s, v)) return -1;
    if (s->rec) {
      if (s->nrec < s->caprec) s->rec[s->nrec] = *v;
      s->nrec++;
    }
    return 0;
  case 't': return scan_literal(s, v, "true", 4, JSCAN_TRUE);
  case 'f': return scan_literal(s, v, "false", 5, JSCAN_FALSE);
  case 'n': return scan_literal(s, v, "null", 4, JSCAN_NULL);
  case '-': case '0': case '1': case '2': case '3': case '4':
  case '5': case '6': case '7': case '8': case '9':
    return scan_number(s, v);
  case -1: return fail(s, s->p, "unexpected end of input, expected a value");
  default: return fail(s, s->p, "invalid token, expected a value");
  }
}

int jscan_enter(jscan *s, int open) {
  if (s->depth >= JSCAN_MAX_DEPTH)
    return fail(s, s->p, "too many nested data structures");
  s->depth++;
  if (open == '{') KIND_SET(s, s->depth); else KIND_CLEAR(s, s->depth);
  s->p++;
  return 0;
}

/* Skips a whole object or array starting at s->p ('{' or '['), any depth, iteratively. */
static int skip_container(jscan *s, int c) {
  int base = s->depth;
  jspan tmp;
  for (;;) {
    /* c is '{' or '[' at s->p: open it */
    if (jscan_enter(s, c)) return -1;
    c = jscan_peek(s);
    if (c == (KIND_IS_OBJ(s, s->depth) ? '}' : ']')) goto close;
    for (;;) {
      /* at the start of a member (object) or element (array) */
      if (KIND_IS_OBJ(s, s->depth)) {
        if (c != '"') return fail(s, s->p, c < 0 ? "unexpected end of input" :
                                               "expected an object key string");
        if (scan_string(s, &tmp)) return -1;
        if (jscan_peek(s) != ':') return fail(s, s->p, "expected ':' after an object key");
        s->p++;
        c = jscan_peek(s);
      }
      if (c == '{' || c == '[') break; /* descend: the outer loop opens it */
      if (scan_scalar(s, c, &tmp)) return -1;
      /* after a value: ',' or the closing bracket, possibly several levels up */
      for (;;) {
        int closer = KIND_IS_OBJ(s, s->depth) ? '}' : ']';
        c = jscan_peek(s);
        if (c == ',') { s->p++; c = jscan_peek(s); break; }
        if (c != closer)
          return fail(s, s->p, c < 0 ? "unexpected end of input" :
                               closer == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
      close:
        s->p++;
        s->depth--;
        if (s->depth == base) return 0;
      }
    }
  }
}

int jscan_string(jscan *s, jspan *v) {
  if (s->p >= s->end || *s->p != '"') return fail(s, s->p, "expected a string");
  return scan_string(s, v);
}

int jscan_value(jscan *s, jspan *v) {
  int c = jscan_peek(s);
  if (c == '{' || c == '[') {
    const char *start = s->p;
    if (skip_container(s, c)) return -1;
    v->type = (unsigned char)(c == '{' ? JSCAN_OBJECT : JSCAN_ARRAY);
    v->p = start;
    v->n = (size_t)(s->p - start);
    v->esc = 0;
    return 0;
  }
  return scan_scalar(s, c, v);
}

int jscan_next_key(jscan *s, jspan *key, int *first) {
  int c = jscan_peek(s);
  if (*first) {
    *first = 0;
    if (c == '}') goto close;
  } else if (c == ',') {
    s->p++;
    c = jscan_peek(s);
  } else if (c == '}') {
    goto close;
  } else {
    return fail(s, s->p, c < 0 ? "unexpected end of input" : "expected ',' or '}'");
  }
  if (c != '"')
    return fail(s, s->p, c < 0 ? "unexpected end of input" : "expected an object key string");
  if (scan_string(s, key)) return -1;
  if (jscan_peek(s) != ':') return fail(s, s->p, "expected ':' after an object key");
  s->p++;
  return 1;
close:
  s->p++;
  s->depth--;
  return 0;
}

int jscan_next_elem(jscan *s, int *first) {
  int c = jscan_peek(s);
  if (*first) {
    *first = 0;
    if (c == ']') goto close;
    return 1;
  }
  if (c == ',') {
    s->p++;
    jscan_peek(s);
    return 1;
  }
  if (c == ']') goto close;
  return fail(s, s->p, c < 0 ? "unexpected end of input" : "expected ',' or ']'");
close:
  s->p++;
  s->depth--;
  return 0;
}

int jscan_finish(jscan *s) {
  /* D2: a NUL here is garbage to us; lua-cjson stops reading at it */
  if (jscan_peek(s) >= 0) return fail(s, s->p, "trailing garbage after the JSON value");
  return 0;
}

static size_t put_utf8(char *o, unsigned long cp) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

size_t jscan_unescape(const char *p, size_t n, char *out) {
  const char *e = p + n;
  char *o = out;
  while (p < e) {
    const char *bs = memchr(p, '\\', (size_t)(e - p));
    size_t run = (size_t)((bs ? bs : e) - p);
    memmove(o, p, run); /* out may alias p: decoding never grows */
    o += run;
    if (!bs) break;
    p = bs + 1;
    switch (*p++) {
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      unsigned long cp = (unsigned long)hex4((const unsigned char *)p);
      p += 4;
      if ((cp & 0xFC00) == 0xD800) { /* validated: a low surrogate escape follows */
        unsigned long lo = (unsigned long)hex4((const unsigned char *)p + 2);
        cp = 0x10000 + (((cp & 0x3FF) << 10) | (lo & 0x3FF));
        p += 6;
      }
      o += put_utf8(o, cp);
      break;
    }
    default: *o++ = p[-1]; break; /* " \ / */
    }
  }
  return (size_t)(o - out);
}

double jscan_number(const char *p, size_t n, char *tmp) {
  char small[64], *buf;
  const char *dp;
  size_t i;
  /* the common case, a small non-negative integer, exactly and without strtod */
  if (n > 0 && n <= 15) {
    double d = 0;
    for (i = 0; i < n && p[i] >= '0' && p[i] <= '9'; i++) d = d * 10 + (p[i] - '0');
    if (i == n) return d;
  }
  buf = n < sizeof small ? small : tmp;
  memcpy(buf, p, n);
  buf[n] = '\0';
  /* strtod honours LC_NUMERIC; write the locale's decimal point, as lua-cjson's fpconv does */
  dp = localeconv()->decimal_point;
  if (dp && dp[0] && dp[0] != '.' && dp[1] == '\0') {
    char *dot = memchr(buf, '.', n);
    if (dot) *dot = dp[0];
  }
  return strtod(buf, NULL);
}
