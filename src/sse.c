/* Server-Sent Events parser: WHATWG "event stream interpretation", incremental.
 *
 * Hot path (an OpenAI chunk: one "data: {...}" line, then a blank line): one memchr for the
 * line end, one memchr for the colon, and the data value is handed to the callback as a
 * pointer into the caller's buffer. A CR is looked for once per buffer, not once per line:
 * the position of the next CR (or "none before the end") is cached, so LF-only streams pay
 * for a single memchr over the whole buffer. Bytes are copied only for a line that spans
 * two feeds, for a block with several data lines, and for a block still open when a feed
 * ends (the caller's buffer is about to go away). */
#include "sse.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char sse_bom[3] = { 0xEF, 0xBB, 0xBF };

static int sse_fail(sse_parser *p, int code)
{
  p->err = code;
  p->has_ref = 0;
  return code;
}

void sse_init(sse_parser *p, size_t max_line, sse_event_fn fn, void *ud)
{
  memset(p, 0, sizeof *p);
  p->fn = fn;
  p->ud = ud;
  p->max_line = max_line ? max_line : SSE_DEFAULT_MAX_LINE;
  p->retry = -1;
}

void sse_free(sse_parser *p)
{
  buf_free(&p->line);
  buf_free(&p->data);
  buf_free(&p->type);
  buf_free(&p->id);
  p->has_ref = 0;
}

const char *sse_strerror(int code)
{
  switch (code) {
  case SSE_OK: return "ok";
  case SSE_STOP: return "stopped by the event callback";
  case SSE_ELINE: return "line exceeds the maximum length";
  case SSE_ENOMEM: return "out of memory";
  default: return "unknown error";
  }
}

size_t sse_consumed(const sse_parser *p)
{
  return p->consumed;
}

/* The zero-copy data value becomes owned bytes: the buffer it points into is going away,
 * or a second data line must be joined to it. */
static int sse_materialize(sse_parser *p)
{
  p->has_ref = 0;
  if (buf_reserve(&p->data, p->data_ref_len + 1) != 0) return SSE_ENOMEM;
  if (p->data_ref_len) memcpy(p->data.p, p->data_ref, p->data_ref_len);
  p->data.p[p->data_ref_len] = '\n';
  p->data.len = p->data_ref_len + 1;
  return SSE_OK;
}

static int sse_data(sse_parser *p, const char *v, size_t n)
{
  int rc;
  if (!p->has_ref && p->data.len == 0) {
    if (n >= p->max_line) return SSE_ELINE; /* n + "\n" > max_line */
    p->data_ref = v;
    p->data_ref_len = n;
    p->has_ref = 1;
    return SSE_OK;
  }
  if (p->has_ref && (rc = sse_materialize(p)) != SSE_OK) return rc;
  /* data.len <= max_line always holds here */
  if (n >= p->max_line - p->data.len) return SSE_ELINE;
  if (buf_reserve(&p->data, n + 1) != 0) return SSE_ENOMEM;
  if (n) memcpy(p->data.p + p->data.len, v, n);
  p->data.p[p->data.len + n] = '\n';
  p->data.len += n + 1;
  return SSE_OK;
}

static void sse_retry(sse_parser *p, const char *v, size_t n)
{
  long r = 0;
  size_t i;
  if (n == 0) return;
  for (i = 0; i < n; i++)
    if (v[i] < '0' || v[i] > '9') return;
  for (i = 0; i < n; i++) {
    int d = v[i] - '0';
    r = (r > (LONG_MAX - d) / 10) ? LONG_MAX : r * 10 + d;
  }
  p->retry = r;
}

static int sse_dispatch(sse_parser *p)
{
  sse_event ev;
  if (!p->has_ref && p->data.len == 0) {
    p->type.len = 0;
    return SSE_OK;
  }
  if (p->has_ref) {
    ev.data = p->data_ref;
    ev.data_len = p->data_ref_len;
  } else {
    ev.data = p->data.p;
    ev.data_len = p->data.len - 1; /* the last "\n" */
  }
  if (p->type.len) {
    ev.type = p->type.p;
    ev.type_len = p->type.len;
  } else {
    ev.type = "message";
    ev.type_len = 7;
  }
  ev.id = p->id.len ? p->id.p : "";
  ev.id_len = p->id.len;
  ev.retry = p->retry;
  /* reset first: the buffers' bytes stay valid for the callback, and the parser is
   * already consistent for whatever the callback decides */
  p->has_ref = 0;
  p->data.len = 0;
  p->type.len = 0;
  return p->fn(p->ud, &ev) ? SSE_STOP : SSE_OK;
}

/* One complete line, terminator removed. */
static int sse_line(sse_parser *p, const char *s, size_t n)
{
  const char *colon, *v;
  size_t flen, vlen;
  if (n == 0) return sse_dispatch(p);
  if (s[0] == ':') return SSE_OK;
  colon = (const char *)memchr(s, ':', n);
  if (colon) {
    flen = (size_t)(colon - s);
    v = colon + 1;
    vlen = n - flen - 1;
    if (vlen && *v == ' ') { v++; vlen--; }
  } else {
    flen = n;
    v = s + n;
    vlen = 0;
  }
  switch (flen) {
  case 4:
    if (memcmp(s, "data", 4) == 0) return sse_data(p, v, vlen);
    break;
  case 5:
    if (memcmp(s, "event", 5) == 0) {
      if (buf_set(&p->type, v, vlen) != 0) return SSE_ENOMEM;
    } else if (memcmp(s, "retry", 5) == 0) {
      sse_retry(p, v, vlen);
    }
    break;
  case 2:
    if (s[0] == 'i' && s[1] == 'd' && (vlen == 0 || memchr(v, '\0', vlen) == NULL))
      if (buf_set(&p->id, v, vlen) != 0) return SSE_ENOMEM;
    break;
  default:
    break;
  }
  return SSE_OK;
}

/* Appends to the unterminated line carried across feeds, within max_line. */
static int sse_carry(sse_parser *p, const char *s, size_t n)
{
  if (n > p->max_line - p->line.len) return SSE_ELINE;
  if (buf_add(&p->line, s, n) != 0) return SSE_ENOMEM;
  return SSE_OK;
}

/* The first bytes looked like a BOM but are not one (or the input ended): they are
 * ordinary bytes of the first line. */
static int sse_bom_give_back(sse_parser *p)
{
  int held = p->bom;
  p->bom = 3;
  if (held == 0) return SSE_OK;
  return sse_carry(p, (const char *)sse_bom, (size_t)held);
}

static const char *sse_find(const char *s, const char *end, char c)
{
  const char *r = (const char *)memchr(s, c, (size_t)(end - s));
  return r ? r : end;
}

int sse_feed(sse_parser *p, const char *buf, size_t len)
{
  const char *s = buf, *end = buf + len, *lf, *cr, *eol, *next;
  int rc;
  p->consumed = 0;
  if (p->err) return p->err;
  if (len == 0) return SSE_OK;
  if (p->bom < 3) {
    while (p->bom < 3 && s < end) {
      if ((unsigned char)*s == sse_bom[p->bom]) {
        p->bom++;
        s++;
      } else if ((rc = sse_bom_give_back(p)) != SSE_OK) {
        return sse_fail(p, rc);
      }
    }
    if (p->bom < 3) { /* the whole feed was a BOM prefix */
      p->consumed = len;
      return SSE_OK;
    }
  }
  if (p->cr_pending) {
    p->cr_pending = 0;
    if (s < end && *s == '\n') s++;
  }
  lf = sse_find(s, end, '\n');
  cr = sse_find(s, end, '\r');
  while (s < end) {
    if (lf < s) lf = sse_find(s, end, '\n');
    if (cr < s) cr = sse_find(s, end, '\r');
    eol = lf < cr ? lf : cr;
    if (eol == end) break;
    next = eol + 1;
    if (eol == cr) {
      if (next == end) p->cr_pending = 1;
      else if (*next == '\n') next++;
    }
    if (p->line.len) {
      if ((rc = sse_carry(p, s, (size_t)(eol - s))) != SSE_OK) return sse_fail(p, rc);
      /* a data value may point into p->line: it stays intact until the end of the feed */
      rc = sse_line(p, p->line.p, p->line.len);
      p->line.len = 0;
    } else {
      if ((size_t)(eol - s) > p->max_line) return sse_fail(p, SSE_ELINE);
      rc = sse_line(p, s, (size_t)(eol - s));
    }
    s = next;
    if (rc == SSE_STOP) {
      p->consumed = (size_t)(s - buf);
      return SSE_STOP;
    }
    if (rc != SSE_OK) return sse_fail(p, rc);
  }
  /* the caller's buffer (and p->line) are about to change: own the open block's data */
  if (p->has_ref && (rc = sse_materialize(p)) != SSE_OK) return sse_fail(p, rc);
  if (s < end && (rc = sse_carry(p, s, (size_t)(end - s))) != SSE_OK) return sse_fail(p, rc);
  p->consumed = len;
  return SSE_OK;
}

int sse_finish(sse_parser *p)
{
  int rc;
  if (p->err) return p->err;
  if (p->bom < 3 && (rc = sse_bom_give_back(p)) != SSE_OK) return sse_fail(p, rc);
  p->line.len = 0;
  p->data.len = 0;
  p->type.len = 0;
  p->has_ref = 0;
  p->cr_pending = 0;
  p->bom = 0;
  return SSE_OK;
}
