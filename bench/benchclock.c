/* A clock for bench/llmchat_bench.lua. Plain Lua has only os.clock (CPU time) and
 * os.time (seconds); timing a single llmchat.poll(0) call needs a monotonic wall clock
 * with sub-microsecond resolution. Kept out of llmchat itself: the bench measures
 * the module, it does not extend it.
 *   local bc = require("benchclock")
 *   bc.now()   monotonic wall time, seconds (CLOCK_MONOTONIC)
 *   bc.cpu()   user + system CPU time of this process, seconds (getrusage)
 *   bc.rss()   peak resident set size, kB (getrusage ru_maxrss = VmHWM) */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <lua.h>
#include <sys/resource.h>
#include <time.h>

static int bc_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

static int bc_cpu(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushnumber(L, (lua_Number)ru.ru_utime.tv_sec + (lua_Number)ru.ru_utime.tv_usec * 1e-6 +
                        (lua_Number)ru.ru_stime.tv_sec + (lua_Number)ru.ru_stime.tv_usec * 1e-6);
  return 1;
}

static int bc_rss(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushinteger(L, (lua_Integer)ru.ru_maxrss);
  return 1;
}

int luaopen_benchclock(lua_State *L);

int luaopen_benchclock(lua_State *L) {
  static const luaL_Reg fns[] = {{"now", bc_now}, {"cpu", bc_cpu}, {"rss", bc_rss}, {NULL, NULL}};
  lua_newtable(L);
  luaL_setfuncs(L, fns, 0);
  return 1;
}
