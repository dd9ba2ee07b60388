/* The floor: the least work any HTTP client can do on the benchmark's workloads, with
 * libcurl used directly. The llmchat and Node SDK rows are measured against it.
 *
 *   floor seq    URL N               N sequential POSTs on one reused easy handle
 *   floor tools  URL N               N sequential POSTs of the tool-call stream
 *   floor long   URL K               K sequential long streams on one easy handle
 *   floor conc   URL INFLIGHT TOTAL  TOTAL streams, INFLIGHT at once (multi interface,
 *                                    driven like a game loop: curl_multi_perform back to
 *                                    back; each call is timed like llmchat.poll(0))
 *   floor paced  URL N               N slow streams at once (multi-socket API + epoll)
 *   floor cold   URL                 one request, for the cold-start timing
 *
 * Prints one line of key=value pairs. A stream is split into events with memchr on
 * "\n\n" and each event's data payload is located (copied to a carry buffer only when
 * it straddles two reads); no JSON is parsed. That is the floor: any client has to find
 * the events, and every real client does more. The bodies are the runner's canned
 * files, LF-only, so CRLF handling is left out on purpose.
 *
 * Build: cc -O2 -o floor floor.c $(pkg-config --cflags --libs libcurl) */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>

static const char REQUEST_BODY[] =
  "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
  "{\"role\":\"user\",\"content\":\"Tell me a story about a dragon.\"}],"
  "\"stream\":true,\"stream_options\":{\"include_usage\":true}}";
static const char REQUEST_BODY_PLAIN[] =
  "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
  "{\"role\":\"user\",\"content\":\"Tell me a story about a dragon.\"}]}";

static void die(const char *what) {
  fprintf(stderr, "floor: %s\n", what);
  exit(1);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static long peak_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* ---- the event splitter: memchr for '\n', check for the blank line ---------------- */

typedef struct splitter {
  char *carry;        /* the unfinished event from earlier reads */
  size_t carry_len, carry_cap;
  int last_was_nl;    /* the previous read ended in '\n' */
  long events;        /* data events, [DONE] excluded */
  long done;          /* [DONE] seen */
  size_t bytes;
  size_t payload_bytes;
} splitter;

static void on_event(splitter *s, const char *ev, size_t len) {
  /* ev is "data: {...}" without the blank line; locate the payload. */
  if (len >= 6 && memcmp(ev, "data: ", 6) == 0) {
    ev += 6;
    len -= 6;
    if (len == 6 && memcmp(ev, "[DONE]", 6) == 0) {
      s->done++;
      return;
    }
    s->events++;
    s->payload_bytes += len;
  }
}

static void carry_append(splitter *s, const char *p, size_t n) {
  if (s->carry_len + n > s->carry_cap) {
    size_t cap = s->carry_cap ? s->carry_cap : 4096;
    while (cap < s->carry_len + n) cap *= 2;
    s->carry = realloc(s->carry, cap);
    if (!s->carry) die("out of memory");
    s->carry_cap = cap;
  }
  memcpy(s->carry + s->carry_len, p, n);
  s->carry_len += n;
}

static void split_feed(splitter *s, const char *buf, size_t len) {
  const char *p = buf, *end = buf + len, *start = buf;
  s->bytes += len;
  if (s->last_was_nl && len > 0 && buf[0] == '\n') {
    /* the blank line straddled two reads: the carry (minus its '\n') is an event */
    on_event(s, s->carry, s->carry_len ? s->carry_len - 1 : 0);
    s->carry_len = 0;
    p = start = buf + 1;
  }
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) break;
    if (nl + 1 < end && nl[1] == '\n') {
      if (s->carry_len) {
        carry_append(s, start, (size_t)(nl - start));
        on_event(s, s->carry, s->carry_len);
        s->carry_len = 0;
      } else {
        on_event(s, start, (size_t)(nl - start));
      }
      p = start = nl + 2;
    } else {
      p = nl + 1;
    }
  }
  if (start < end) carry_append(s, start, (size_t)(end - start));
  s->last_was_nl = len > 0 && buf[len - 1] == '\n';
}

static size_t write_stream(char *ptr, size_t size, size_t nmemb, void *ud) {
  split_feed(ud, ptr, size * nmemb);
  return size * nmemb;
}

/* A non-streamed body is kept whole, as any client must before decoding it. */
typedef struct body { char *p; size_t len, cap; } body;

static size_t write_body(char *ptr, size_t size, size_t nmemb, void *ud) {
  body *b = ud;
  size_t n = size * nmemb;
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) die("out of memory");
  }
  memcpy(b->p + b->len, ptr, n);
  b->len += n;
  return n;
}

static struct curl_slist *request_headers(void) {
  struct curl_slist *h = NULL;
  h = curl_slist_append(h, "Content-Type: application/json");
  h = curl_slist_append(h, "Authorization: Bearer sk-bench-not-a-key");
  h = curl_slist_append(h, "Expect:");
  return h;
}

static CURL *new_handle(const char *url, struct curl_slist *h, const char *post) {
  CURL *e = curl_easy_init();
  if (!e) die("curl_easy_init");
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, post);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(post));
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  return e;
}

static void check_status(CURL *e, CURLcode rc) {
  long status = 0;
  if (rc != CURLE_OK) die(curl_easy_strerror(rc));
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) die("HTTP status is not 200");
}

/* ---- sequential workloads: one easy handle, keep-alive --------------------------- */

static void run_seq(const char *url, long n) {
  struct curl_slist *h = request_headers();
  CURL *e = new_handle(url, h, REQUEST_BODY_PLAIN);
  body b = { 0 };
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
  /* one warm-up request opens the connection; every timed request reuses it */
  check_status(e, curl_easy_perform(e));
  double t0 = now_s(), c0 = cpu_s();
  for (long i = 0; i < n; i++) {
    b.len = 0;
    check_status(e, curl_easy_perform(e));
    if (b.len < 100 || b.p[0] != '{') die("unexpected body");
  }
  double wall = now_s() - t0, cpu = cpu_s() - c0;
  long conns = 0;
  curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &conns);
  printf("requests=%ld us_wall=%.2f us_cpu=%.2f new_connections=%ld rss_kb=%ld\n", n,
         wall / (double)n * 1e6, cpu / (double)n * 1e6, conns, peak_rss_kb());
  curl_easy_cleanup(e);
  curl_slist_free_all(h);
  free(b.p);
}

static void run_streams_seq(const char *url, long n, long expect_events, int report_rate) {
  struct curl_slist *h = request_headers();
  CURL *e = new_handle(url, h, REQUEST_BODY);
  splitter s = { 0 };
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_stream);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
  check_status(e, curl_easy_perform(e));  /* warm-up: connection and page cache */
  memset(&s, 0, sizeof s);
  double t0 = now_s(), c0 = cpu_s();
  for (long i = 0; i < n; i++) {
    check_status(e, curl_easy_perform(e));
    if (s.carry_len != 0) die("stream ended inside an event");
  }
  double wall = now_s() - t0, cpu = cpu_s() - c0;
  if (s.done != n || (expect_events && s.events != expect_events * n))
    die("wrong number of events");
  if (report_rate)
    printf("streams=%ld chunks=%ld bytes=%zu chunks_per_s=%.0f mb_per_s=%.1f us_cpu_per_chunk=%.3f"
           " rss_kb=%ld\n", n, s.events, s.bytes, (double)s.events / wall,
           (double)s.bytes / wall / 1e6, cpu / (double)s.events * 1e6, peak_rss_kb());
  else
    printf("requests=%ld chunks=%ld us_wall=%.2f us_cpu=%.2f rss_kb=%ld\n", n, s.events,
           wall / (double)n * 1e6, cpu / (double)n * 1e6, peak_rss_kb());
  curl_easy_cleanup(e);
  curl_slist_free_all(h);
  free(s.carry);
}

/* ---- concurrent streams: the multi interface, game-loop style -------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void run_conc(const char *url, long inflight, long total) {
  struct curl_slist *h = request_headers();
  CURLM *m = curl_multi_init();
  CURL **es = calloc((size_t)inflight, sizeof *es);
  splitter *ss = calloc((size_t)inflight, sizeof *ss);
  size_t tcap = 1 << 20, tn = 0;
  double *times = malloc(tcap * sizeof *times);
  if (!es || !ss || !times) die("out of memory");
  long started = 0, finished = 0, events = 0, done = 0;
  double t0 = now_s(), c0 = cpu_s(), worst = 0;
  for (long i = 0; i < inflight && started < total; i++, started++) {
    es[i] = new_handle(url, h, REQUEST_BODY);
    curl_easy_setopt(es[i], CURLOPT_WRITEFUNCTION, write_stream);
    curl_easy_setopt(es[i], CURLOPT_WRITEDATA, &ss[i]);
    curl_easy_setopt(es[i], CURLOPT_PRIVATE, (void *)&ss[i]);
    curl_multi_add_handle(m, es[i]);
  }
  CURL **again = calloc((size_t)inflight, sizeof *again);
  if (!again) die("out of memory");
  while (finished < total) {
    int running, nagain = 0;
    /* one "frame", timed like llmchat.poll(0): drive the transfers and collect the
     * finished ones. The poll figures come from frames that begin with every stream
     * slot busy; re-adding handles (starting new streams) is outside the timing, as
     * client:start is in the Lua bench. */
    int full = started - finished == inflight;
    double f0 = now_s();
    curl_multi_perform(m, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left))) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL *e = msg->easy_handle;
      splitter *s;
      check_status(e, msg->data.result);
      curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&s);
      events += s->events;
      done += s->done;
      s->events = s->done = 0;
      s->carry_len = 0;
      finished++;
      curl_multi_remove_handle(m, e);
      again[nagain++] = e;
    }
    double dt = now_s() - f0;
    if (full) {
      if (tn == tcap) {
        tcap *= 2;
        times = realloc(times, tcap * sizeof *times);
        if (!times) die("out of memory");
      }
      times[tn++] = dt;
      if (dt > worst) worst = dt;
    }
    /* the same handles again: their connections are reused */
    for (int i = 0; i < nagain && started < total; i++, started++)
      curl_multi_add_handle(m, again[i]);
  }
  free(again);
  double wall = now_s() - t0, cpu = cpu_s() - c0;
  if (done != total) die("a stream did not end with [DONE]");
  qsort(times, tn, sizeof *times, cmp_double);
  double p99 = tn ? times[(size_t)((double)(tn - 1) * 0.99)] : 0;
  printf("inflight=%ld streams=%ld chunks=%ld chunks_per_s=%.0f us_cpu_per_chunk=%.3f"
         " polls=%zu poll_worst_us=%.1f poll_p99_us=%.1f rss_kb=%ld\n",
         inflight, total, events, (double)events / wall, cpu / (double)events * 1e6, tn,
         worst * 1e6, p99 * 1e6, peak_rss_kb());
  for (long i = 0; i < inflight; i++) {
    if (!es[i]) continue;
    curl_multi_remove_handle(m, es[i]);
    curl_easy_cleanup(es[i]);
    free(ss[i].carry);
  }
  curl_multi_cleanup(m);
  curl_slist_free_all(h);
  free(es);
  free(ss);
  free(times);
}

/* ---- paced streams: the multi-socket API driven by epoll ------------------------- */

typedef struct paced { int ep; long timeout_ms; } paced;

static int on_socket(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp) {
  paced *p = ud;
  struct epoll_event ev = { 0 };
  (void)e;
  ev.data.fd = fd;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(p->ep, EPOLL_CTL_DEL, fd, NULL);
    return 0;
  }
  (void)sockp;
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
  if (epoll_ctl(p->ep, EPOLL_CTL_MOD, fd, &ev) != 0) epoll_ctl(p->ep, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *ud) {
  (void)m;
  ((paced *)ud)->timeout_ms = timeout_ms;
  return 0;
}

static void run_paced(const char *url, long n) {
  struct curl_slist *h = request_headers();
  CURLM *m = curl_multi_init();
  paced p = { epoll_create1(0), -1 };
  CURL **es = calloc((size_t)n, sizeof *es);
  splitter *ss = calloc((size_t)n, sizeof *ss);
  struct epoll_event evs[256];
  if (p.ep < 0 || !es || !ss) die("setup");
  curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(m, CURLMOPT_SOCKETDATA, &p);
  curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(m, CURLMOPT_TIMERDATA, &p);
  double t0 = now_s(), c0 = cpu_s();
  long wakeups = 0;
  for (long i = 0; i < n; i++) {
    es[i] = new_handle(url, h, REQUEST_BODY);
    curl_easy_setopt(es[i], CURLOPT_WRITEFUNCTION, write_stream);
    curl_easy_setopt(es[i], CURLOPT_WRITEDATA, &ss[i]);
    curl_multi_add_handle(m, es[i]);
  }
  int running = (int)n;
  curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
  while (running > 0) {
    int k = epoll_wait(p.ep, evs, 256, p.timeout_ms < 0 ? 1000 : (int)p.timeout_ms);
    wakeups++;
    if (k <= 0) {
      curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
    } else {
      for (int i = 0; i < k; i++) {
        int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                    (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                    (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(m, evs[i].data.fd, flags, &running);
      }
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
      if (msg->msg == CURLMSG_DONE) check_status(msg->easy_handle, msg->data.result);
  }
  double wall = now_s() - t0, cpu = cpu_s() - c0;
  long events = 0, done = 0;
  for (long i = 0; i < n; i++) {
    events += ss[i].events;
    done += ss[i].done;
    curl_multi_remove_handle(m, es[i]);
    curl_easy_cleanup(es[i]);
    free(ss[i].carry);
  }
  if (done != n) die("a paced stream did not end with [DONE]");
  printf("streams=%ld chunks=%ld wall_s=%.2f cpu_s=%.3f us_cpu_per_chunk=%.2f wakeups=%ld"
         " rss_kb=%ld\n", n, events, wall, cpu, cpu / (double)events * 1e6, wakeups,
         peak_rss_kb());
  curl_multi_cleanup(m);
  curl_slist_free_all(h);
  free(es);
  free(ss);
}

static void run_cold(const char *url) {
  struct curl_slist *h = request_headers();
  CURL *e = new_handle(url, h, REQUEST_BODY_PLAIN);
  body b = { 0 };
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
  check_status(e, curl_easy_perform(e));
  if (b.len < 100) die("unexpected body");
  curl_easy_cleanup(e);
  curl_slist_free_all(h);
  free(b.p);
}

static long arg_long(int argc, char **argv, int i, long dflt) {
  return i < argc ? strtol(argv[i], NULL, 10) : dflt;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: floor seq|tools|long|conc|paced|cold URL [args]\n");
    return 2;
  }
  const char *mode = argv[1], *url = argv[2];
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (strcmp(mode, "seq") == 0) run_seq(url, arg_long(argc, argv, 3, 1000));
  else if (strcmp(mode, "tools") == 0) run_streams_seq(url, arg_long(argc, argv, 3, 500), 0, 0);
  else if (strcmp(mode, "long") == 0) run_streams_seq(url, arg_long(argc, argv, 3, 3), 20000, 1);
  else if (strcmp(mode, "conc") == 0)
    run_conc(url, arg_long(argc, argv, 3, 16), arg_long(argc, argv, 4, 1024));
  else if (strcmp(mode, "paced") == 0) run_paced(url, arg_long(argc, argv, 3, 1000));
  else if (strcmp(mode, "cold") == 0) run_cold(url);
  else {
    fprintf(stderr, "floor: unknown mode %s\n", mode);
    return 2;
  }
  curl_global_cleanup();
  return 0;
}
