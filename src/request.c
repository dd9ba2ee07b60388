/* One request: the libcurl easy handle, its callbacks and the buffers they
 * fill. The callbacks never call Lua: they append bytes, feed the SSE parser
 * and the request's consumer, and tell the engine (through the notify hook it
 * set) that records are pending. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "request.h"

#define MAX_HEADER_BYTES (256 * 1024)

#define MAX_HEADER_COUNT 4096

static int on_sse_event(void *ud, const sse_event *ev) {
  request *r = (request *)ud;
  int rc = consumer_event_in(&r->cons, ev);
  if (rc == CONSUMER_OK) {
    if (r->cons.assembled <= r->max_body) return 0;
    r->reason = REASON_TOO_LARGE;
  } else if (rc == CONSUMER_ENOMEM) {
    r->reason = REASON_NOMEM;
  } else {
    r->reason = REASON_JSON;
    snprintf(r->msg, sizeof r->msg, "%s", r->cons.errmsg);
  }
  return 1;
}

static void decide_mode(request *r) {
  long status = 0;
  char *ct = NULL;
  r->mode_decided = 1;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
  r->download_ok = status >= 200 && status < 300;
  r->sse_mode = r->want_stream && status >= 200 && status < 300 && ct &&
                strncasecmp(ct, "text/event-stream", 17) == 0;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud) {
  request *r = (request *)ud;
  size_t n = size * nmemb;
  if (r->idle_ms) r->last_rx_ms = clock_now_ms();
  if (!r->mode_decided) decide_mode(r);
  if (r->sse_mode) {
    int rc;
    size_t before = consumer_pending(&r->cons);
    if (before >= r->max_pending) {
      /* nothing consumed: libcurl delivers these bytes again after the unpause */
      r->paused = 1;
      return CURL_WRITEFUNC_PAUSE;
    }
    r->stream_bytes += n;
    consumer_expect(&r->cons, n);
    rc = sse_feed(&r->sse, ptr, n);
    if (consumer_pending(&r->cons) != before && r->notify) r->notify(r->notify_ud, r);
    if (rc == SSE_OK) return n;
    if (rc == SSE_ELINE) {
      r->reason = REASON_SSE;
      snprintf(r->msg, sizeof r->msg, "%s", sse_strerror(rc));
    } else if (rc == SSE_ENOMEM) {
      r->reason = REASON_NOMEM;
    }
    return 0;  /* aborts the transfer: CURLE_WRITE_ERROR */
  }
  if (n > r->max_body - r->body_bytes || r->body_bytes > r->max_body) {
    r->reason = REASON_TOO_LARGE;
    return 0;
  }
  r->body_bytes += n;
  if (r->download && r->download_ok) {
    if (!r->download_fp) r->download_fp = fopen(r->download, "wb");
    if (!r->download_fp || fwrite(ptr, 1, n, r->download_fp) != n) {
      r->reason = REASON_FILE;
      snprintf(r->msg, sizeof r->msg, "cannot write the download file");
      return 0;
    }
    return n;
  }
  if (buf_add(&r->resp_body, ptr, n)) {
    r->reason = REASON_NOMEM;
    return 0;
  }
  return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud) {
  request *r = (request *)ud;
  size_t n = size * nmemb, i, name_len, vs, ve;
  const char *colon;
  if (r->idle_ms) r->last_rx_ms = clock_now_ms();
  if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
    /* a new response (after 100 Continue or a redirect): forget the last one */
    r->resp_headers.len = 0;
    r->nheaders = 0;
    r->mode_decided = 0;
    return n;
  }
  colon = (const char *)memchr(ptr, ':', n);
  if (!colon || colon == ptr) return n;  /* blank line or folded junk */
  if (r->resp_headers.len + n > MAX_HEADER_BYTES || r->nheaders >= MAX_HEADER_COUNT) {
    r->reason = REASON_HEADERS;
    return 0;
  }
  name_len = (size_t)(colon - ptr);
  vs = name_len + 1;
  ve = n;
  while (vs < ve && (ptr[vs] == ' ' || ptr[vs] == '\t')) vs++;
  while (ve > vs && (ptr[ve - 1] == '\r' || ptr[ve - 1] == '\n' || ptr[ve - 1] == ' ' ||
                     ptr[ve - 1] == '\t'))
    ve--;
  if (buf_reserve(&r->resp_headers, name_len + (ve - vs) + 2)) {
    r->reason = REASON_NOMEM;
    return 0;
  }
  for (i = 0; i < name_len; i++)
    r->resp_headers.p[r->resp_headers.len++] = (char)tolower((unsigned char)ptr[i]);
  r->resp_headers.p[r->resp_headers.len++] = '\0';
  memcpy(r->resp_headers.p + r->resp_headers.len, ptr + vs, ve - vs);
  r->resp_headers.len += ve - vs;
  r->resp_headers.p[r->resp_headers.len++] = '\0';
  r->nheaders++;
  return n;
}

int request_init(request *r, CURL *easy, consumer_kind kind) {
  memset(r, 0, sizeof *r);
  buf_init(&r->resp_headers);
  buf_init(&r->resp_body);
  r->max_body = (size_t)64 * 1024 * 1024;
  r->max_line = SSE_DEFAULT_MAX_LINE;
  r->max_pending = MAX_PENDING_DELTAS;
  r->easy = easy;
  if (!r->easy) return -1;
  consumer_init(&r->cons, kind);
  sse_init(&r->sse, r->max_line, on_sse_event, r);
  curl_easy_setopt(r->easy, CURLOPT_PRIVATE, (void *)r);
  curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, (void *)r);
  curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, (void *)r);
  curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(r->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  curl_easy_setopt(r->easy, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYHOST, 2L);
  return 0;
}

/* Before a (re)start: the previous response, if any, is forgotten. */
void request_reset_response(request *r) {
  r->resp_headers.len = 0;
  r->nheaders = 0;
  r->resp_body.len = 0;
  r->body_bytes = 0;
  request_done(r);
  r->mode_decided = r->sse_mode = 0;
  r->stream_bytes = 0;
  r->reason = REASON_NONE;
  r->code = CURLE_OK;
  r->errbuf[0] = '\0';
  r->msg[0] = '\0';
  r->paused = 0;
  sse_free(&r->sse);
  sse_init(&r->sse, r->max_line, on_sse_event, r);
  consumer_reset(&r->cons);
}

void request_done(request *r) {
  if (r->download_fp) {
    if (fclose(r->download_fp) != 0 && r->reason == REASON_NONE) {
      r->reason = REASON_FILE;
      snprintf(r->msg, sizeof r->msg, "cannot write the download file");
    }
    r->download_fp = NULL;
  }
}

CURL *request_release(request *r) {
  CURL *easy = r->easy;
  request_done(r);
  free(r->download);
  r->download = NULL;
  r->easy = NULL;
  if (r->hdrs) curl_slist_free_all(r->hdrs);
  r->hdrs = NULL;
  if (r->mime) curl_mime_free(r->mime);
  r->mime = NULL;
  free(r->body);
  r->body = NULL;
  buf_free(&r->resp_headers);
  buf_free(&r->resp_body);
  sse_free(&r->sse);
  consumer_free(&r->cons);
  return easy;
}

const char *request_header(const request *r, const char *name) {
  size_t i = 0;
  while (i < r->resp_headers.len) {
    const char *k = r->resp_headers.p + i;
    const char *v = k + strlen(k) + 1;
    if (strcmp(k, name) == 0) return v;
    i = (size_t)(v - r->resp_headers.p) + strlen(v) + 1;
  }
  return NULL;
}
