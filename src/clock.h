/* A monotonic clock in milliseconds, shared by the request (idle timestamps) and the
 * engine (timers). Header-only. */
#ifndef LLMCHAT_CLOCK_H
#define LLMCHAT_CLOCK_H

#include <time.h>

static inline long long clock_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline long long clock_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif
