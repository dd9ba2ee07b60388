/* The whole C core as one translation unit: what `make` and the rockspec compile.
 *
 * Two reasons. The hot paths cross files (stream.c calls jscan.c for every token of every
 * chunk, core.c calls stream.c and loop.c per event); in one unit the compiler inlines
 * them. And only luaopen_llmchat_core may leave the module: LuaRocks' builtin backend
 * compiles with its own CFLAGS (no -fvisibility=hidden), so visibility is set here, after
 * every system header has been seen (a hidden declaration of a libc, Lua or libcurl
 * function would not link). luaopen_llmchat_core is marked LLMCHAT_EXPORT itself.
 *
 * The files still compile one by one too (the fuzz targets and test/ programs do). */
#include "compat.h"
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility push(hidden)
#endif

#include "b64.c"
#include "jscan.c"
#include "jencode.c"
#include "jdecode.c"
#include "sse.c"
#include "lsse.c"
#include "stream_cache.c"
#include "stream.c"
#include "lstream.c"
#include "consumer.c"
#include "lconsumer.c"
#include "request.c"
#include "engine.c"
#include "core.c"

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility pop
#endif
