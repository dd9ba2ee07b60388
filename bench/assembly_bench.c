/* Stream assembly benchmark: chunks/s of stream_chunk (+ stream_clear_pending) over 20,000
 * realistic chat.completion.chunk payloads, on one core. No Lua, no I/O in the timed loop.
 *
 *   make bench-assembly            (mk/stream.mk)
 *
 * The mix: OpenAI-shaped content chunks (~200-260 bytes, some with escapes and \u
 * sequences, some with raw UTF-8), DeepSeek-style reasoning_content chunks, parallel tool
 * call fragments, Groq x_groq and include_usage final chunks. Each stream of 500 chunks
 * starts from a fresh assembler, as a request would. */
#include "stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NCHUNKS 20000
#define PER_STREAM 500

static unsigned long rng_state = 12345;
static unsigned rnd(unsigned n) {
  rng_state = rng_state * 6364136223846793005UL + 1442695040888963407UL;
  return (unsigned)((rng_state >> 33) % n);
}

static const char *const words[] = {
  "Hello", " world", ",", " the", " quick", " brown", " fox", " jumps", " over", " lazy",
  " dog", ".", "\\n\\n", " caf\\u00e9", " na\xc3\xafve", " \\\"quoted\\\"", " 42", " and",
  " streaming", " tokens", " \xe2\x9c\x93", " \\ud83d\\ude00", " is", " a", " test"};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t text(char *o, int n) {
  size_t len = 0;
  int i;
  for (i = 0; i < n; i++) {
    const char *w = words[rnd(sizeof words / sizeof words[0])];
    size_t l = strlen(w);
    memcpy(o + len, w, l);
    len += l;
  }
  o[len] = '\0';
  return len;
}

static const char *HEAD =
  "{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\","
  "\"created\":1744186429,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_f9f4fb6dbf\","
  "\"choices\":[";

static int make_chunk(char *o, size_t cap, int k) {
  char t[512];
  int pos = k % PER_STREAM;
  if (pos == 0)
    return snprintf(o, cap, "%s{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\","
                    "\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}",
                    HEAD);
  if (pos == PER_STREAM - 2)
    return snprintf(o, cap, "%s{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":"
                    "\"stop\"}],\"usage\":null}", HEAD);
  if (pos == PER_STREAM - 1)
    return snprintf(o, cap, "%s],\"usage\":{\"prompt_tokens\":1234,\"completion_tokens\":498,"
                    "\"total_tokens\":1732,\"prompt_tokens_details\":{\"cached_tokens\":0,"
                    "\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,"
                    "\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
                    "\"rejected_prediction_tokens\":0}}}", HEAD);
  switch (rnd(20)) {
  case 0: case 1: case 2: /* DeepSeek reasoning */
    text(t, 1 + (int)rnd(3));
    return snprintf(o, cap, "{\"id\":\"2f3c1b0e-7a4d-4e0f-9c1a-5b6d7e8f9a0b\",\"object\":"
                    "\"chat.completion.chunk\",\"created\":1744186429,\"model\":\"deepseek-reasoner\","
                    "\"system_fingerprint\":\"fp_7e73fd9a08\",\"choices\":[{\"index\":0,\"delta\":"
                    "{\"content\":null,\"reasoning_content\":\"%s\"},\"logprobs\":null,"
                    "\"finish_reason\":null}]}", t);
  case 3: /* a tool call fragment, two calls interleaved */
    if (rnd(4) == 0)
      return snprintf(o, cap, "%s{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%u,\"id\":"
                      "\"call_DdmO9pD3xa9XTPNJ32zg2hcA\",\"type\":\"function\",\"function\":{\"name\":"
                      "\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],"
                      "\"usage\":null}", HEAD, rnd(2));
    return snprintf(o, cap, "%s{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%u,\"function\":"
                    "{\"arguments\":\"{\\\"location\\\": \\\"Pa\"}}]},\"logprobs\":null,"
                    "\"finish_reason\":null}],\"usage\":null}", HEAD, rnd(2));
  case 4: /* Groq */
    text(t, 1 + (int)rnd(3));
    return snprintf(o, cap, "{\"id\":\"chatcmpl-5d3e\",\"object\":\"chat.completion.chunk\","
                    "\"created\":1744186429,\"model\":\"llama-3.3-70b-versatile\","
                    "\"system_fingerprint\":\"fp_2ca0059abb\",\"choices\":[{\"index\":0,\"delta\":"
                    "{\"content\":\"%s\"},\"logprobs\":null,\"finish_reason\":null}],"
                    "\"x_groq\":{\"id\":\"req_01jqkz\"}}", t);
  default: /* OpenAI content */
    text(t, 1 + (int)rnd(4));
    return snprintf(o, cap, "%s{\"index\":0,\"delta\":{\"content\":\"%s\"},\"logprobs\":null,"
                    "\"finish_reason\":null}],\"usage\":null}", HEAD, t);
  }
}

int main(int argc, char **argv) {
  static char store[NCHUNKS * 640];
  static size_t off[NCHUNKS + 1];
  size_t total = 0, deltas = 0;
  int i, rep, reps = argc > 1 ? atoi(argv[1]) : 20;
  double best = 1e30;
  stream_asm a;
  for (i = 0; i < NCHUNKS; i++) {
    int n = make_chunk(store + total, sizeof store - total, i);
    if (n < 0 || (size_t)n >= sizeof store - total) return 1;
    off[i] = total;
    total += (size_t)n;
  }
  off[NCHUNKS] = total;
  /* every generated chunk must be accepted */
  stream_init(&a);
  for (i = 0; i < NCHUNKS; i++) {
    if (stream_chunk(&a, store + off[i], off[i + 1] - off[i]) != STREAM_OK) {
      fprintf(stderr, "chunk %d rejected: %s\n%.*s\n", i, stream_errmsg(&a),
              (int)(off[i + 1] - off[i]), store + off[i]);
      return 1;
    }
    deltas += stream_pending(&a);
    stream_clear_pending(&a);
  }
  stream_free(&a);
  for (rep = 0; rep < reps; rep++) {
    double t0 = now(), dt;
    for (i = 0; i < NCHUNKS; i++) {
      if (i % PER_STREAM == 0) {
        if (i) stream_free(&a);
        stream_init(&a);
      }
      stream_chunk(&a, store + off[i], off[i + 1] - off[i]);
      stream_clear_pending(&a);
    }
    stream_free(&a);
    dt = now() - t0;
    if (dt < best) best = dt;
  }
  printf("stream assembly: %d chunks, mean %.0f bytes, %zu delta records\n", NCHUNKS,
         (double)total / NCHUNKS, deltas);
  printf("best of %d: %.2f ms  %.0f ns/chunk  %.2f M chunks/s  %.0f MB/s\n", reps, best * 1e3,
         best * 1e9 / NCHUNKS, NCHUNKS / best / 1e6, (double)total / best / 1e6);
  return 0;
}
