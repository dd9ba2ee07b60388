/* SSE parser throughput: ~20,000 realistic OpenAI chat.completion.chunk events (each a
 * 150-300 byte "data:" line and a blank line), copied into a 16 KiB read buffer and fed
 * 16 KiB at a time, as a socket read loop would. Also an LF-vs-CRLF and a Responses-API
 * (event: + data:) variant. Prints events/s and MB/s; best of several rounds. */
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NCHUNKS 20000
#define READ_SIZE 16384

typedef struct counter {
  size_t events, bytes;
} counter;

static int on_event(void *ud, const sse_event *ev)
{
  counter *c = (counter *)ud;
  c->events++;
  c->bytes += ev->data_len + ev->type_len; /* touch the event so nothing is optimised away */
  return 0;
}

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *words[] = { " the", " quick", " brown", " fox", " jumps", " over", " lazy",
                               " dog", "!", " Ça", " va", "?", "\\n", " 🌕", " extraordinarily",
                               " a", " of", " and", ",", " to" };

/* kind 0: OpenAI chat chunks, LF; 1: the same with CRLF; 2: Responses API typed events */
static char *make_stream(int kind, size_t *len)
{
  size_t cap = (size_t)NCHUNKS * 700, n = 0;
  char *s = (char *)malloc(cap);
  unsigned seed = 12345;
  int i;
  const char *eol = kind == 1 ? "\r\n" : "\n";
  if (!s) abort();
  for (i = 0; i < NCHUNKS; i++) {
    char content[160];
    size_t cl = 0;
    int w, nw;
    seed = seed * 1103515245u + 12345u;
    nw = 1 + (int)((seed >> 16) % 6); /* 1..6 words: lines of ~190-290 bytes */
    for (w = 0; w < nw; w++) {
      const char *word;
      seed = seed * 1103515245u + 12345u;
      word = words[(seed >> 16) % (sizeof words / sizeof words[0])];
      memcpy(content + cl, word, strlen(word));
      cl += strlen(word);
    }
    content[cl] = '\0';
    if (kind == 2)
      n += (size_t)sprintf(s + n,
        "event: response.output_text.delta\n"
        "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":%d,\"item_id\":"
        "\"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"output_index\":0,"
        "\"content_index\":0,\"delta\":\"%s\"}\n\n", i, content);
    else
      n += (size_t)sprintf(s + n,
        "data: {\"id\":\"chatcmpl-AUnb3kQ7cX2r9Zp1Yd8EwKq5LmNoP\",\"object\":"
        "\"chat.completion.chunk\",\"created\":1731974400,\"model\":\"gpt-4o-2024-08-06\","
        "\"system_fingerprint\":\"fp_b28b39ffa8\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"content\":\"%s\"},\"logprobs\":null,\"finish_reason\":null}]}%s%s",
        content, eol, eol);
  }
  *len = n;
  return s;
}

static void bench(const char *name, int kind)
{
  size_t len, off;
  char *stream = make_stream(kind, &len);
  char *rd = (char *)malloc(READ_SIZE);
  double best = 1e9;
  int round, rep, reps = 20;
  counter c;
  if (!rd) abort();
  for (round = 0; round < 5; round++) {
    double t0 = now(), t;
    sse_parser p;
    c.events = c.bytes = 0;
    for (rep = 0; rep < reps; rep++) {
      sse_init(&p, 0, on_event, &c);
      for (off = 0; off < len; off += READ_SIZE) {
        size_t n = len - off < READ_SIZE ? len - off : READ_SIZE;
        memcpy(rd, stream + off, n); /* what recv() would do */
        if (sse_feed(&p, rd, n) != SSE_OK) abort();
      }
      if (sse_finish(&p) != SSE_OK) abort();
      sse_free(&p);
    }
    t = now() - t0;
    if (t < best) best = t;
  }
  if (c.events != (size_t)NCHUNKS * (size_t)reps) {
    fprintf(stderr, "%s: %zu events, expected %d\n", name, c.events, NCHUNKS * reps);
    abort();
  }
  printf("%-34s %6.1f bytes/event  %7.2f M events/s  %7.0f MB/s\n", name,
         (double)len / NCHUNKS, (double)c.events / best / 1e6, (double)len * reps / best / 1e6);
  free(rd);
  free(stream);
}

int main(void)
{
  printf("sse_bench: %d events per stream, %d-byte reads, best of 5 rounds x 20 streams\n",
         NCHUNKS, READ_SIZE);
  bench("openai chat chunks (LF)", 0);
  bench("openai chat chunks (CRLF)", 1);
  bench("responses api (event: + data:)", 2);
  return 0;
}
