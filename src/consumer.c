/* Per-request consumers of SSE events: see consumer.h. */
#include <stdio.h>
#include <string.h>

#include "consumer.h"

void consumer_init(consumer *c, consumer_kind kind) {
  memset(c, 0, sizeof *c);
  c->kind = kind;
  buf_init(&c->error);
  buf_init(&c->evbuf);
  if (kind == CONSUMER_CHAT) stream_init(&c->as);
}

void consumer_free(consumer *c) {
  if (c->kind == CONSUMER_CHAT) stream_free(&c->as);
  buf_free(&c->error);
  buf_free(&c->evbuf);
  free(c->evs);
  c->evs = NULL;
  c->nevs = c->capevs = 0;
}

void consumer_reset(consumer *c) {
  consumer_kind kind = c->kind;
  consumer_free(c);
  consumer_init(c, kind);
}

static int is_done(const sse_event *ev) {
  return ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0;
}

static int chat_event(consumer *c, const sse_event *ev) {
  size_t before, i;
  int rc;
  if (ev->type_len == 5 && memcmp(ev->type, "error", 5) == 0) {
    /* `event: error` (some providers): its data is the error, whatever its shape */
    c->error.len = 0;
    if (buf_add(&c->error, ev->data, ev->data_len)) return CONSUMER_ENOMEM;
    return CONSUMER_OK;
  }
  before = stream_pending(&c->as);
  rc = stream_chunk(&c->as, ev->data, ev->data_len);
  if (rc == STREAM_ENOMEM) return CONSUMER_ENOMEM;
  if (rc != STREAM_OK) {
    const char *m = stream_errmsg(&c->as);
    snprintf(c->errmsg, sizeof c->errmsg, "stream chunk %lu is not valid JSON: %s", c->events,
             m ? m : "parse error");
    return CONSUMER_EJSON;
  }
  for (i = before; i < stream_pending(&c->as); i++) c->assembled += c->as.pending[i].len;
  return CONSUMER_OK;
}

static int events_event(consumer *c, const sse_event *ev) {
  consumer_event *e;
  size_t need = ev->type_len + ev->data_len + ev->id_len;
  if (c->nevs == c->capevs) {
    size_t cap = c->capevs ? c->capevs * 2 : 16;
    consumer_event *p = (consumer_event *)realloc(c->evs, cap * sizeof *p);
    if (!p) return CONSUMER_ENOMEM;
    c->evs = p;
    c->capevs = cap;
  }
  if (buf_reserve(&c->evbuf, need)) return CONSUMER_ENOMEM;
  e = &c->evs[c->nevs++];
  e->type_off = c->evbuf.len;
  e->type_len = ev->type_len;
  buf_add(&c->evbuf, ev->type, ev->type_len);
  e->data_off = c->evbuf.len;
  e->data_len = ev->data_len;
  buf_add(&c->evbuf, ev->data, ev->data_len);
  e->id_off = c->evbuf.len;
  e->id_len = ev->id_len;
  buf_add(&c->evbuf, ev->id, ev->id_len);
  c->assembled += ev->data_len;
  return CONSUMER_OK;
}

int consumer_event_in(consumer *c, const sse_event *ev) {
  c->events++;
  if (c->done_marker) return CONSUMER_OK; /* nothing after [DONE] counts */
  if (is_done(ev)) {
    c->done_marker = 1;
    return CONSUMER_OK;
  }
  return c->kind == CONSUMER_CHAT ? chat_event(c, ev) : events_event(c, ev);
}

void consumer_expect(consumer *c, size_t n) {
  if (c->kind == CONSUMER_CHAT) stream_expect(&c->as, n);
}

size_t consumer_pending(const consumer *c) {
  return c->kind == CONSUMER_CHAT ? stream_pending(&c->as) : c->nevs;
}

void consumer_clear(consumer *c) {
  if (c->kind == CONSUMER_CHAT) {
    stream_clear_pending(&c->as);
  } else {
    c->nevs = 0;
    c->evbuf.len = 0;
  }
}

int consumer_finished(const consumer *c) {
  if (c->done_marker) return 1;
  return c->kind == CONSUMER_CHAT && stream_finished(&c->as);
}

const char *consumer_error(const consumer *c, size_t *len) {
  if (c->error.len) {
    *len = c->error.len;
    return c->error.p;
  }
  if (c->kind == CONSUMER_CHAT) return stream_error_json(&c->as, len);
  return NULL;
}
