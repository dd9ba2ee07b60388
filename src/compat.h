/* One source for Lua 5.1, LuaJIT and 5.4: the 5.3 API on older versions comes
 * from Debian's lua-compat53-dev header (as luv and cqueues do). */
#ifndef LLMCHAT_COMPAT_H
#define LLMCHAT_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#if !defined(LUA_VERSION_NUM) || LUA_VERSION_NUM < 503
#include <compat-5.3.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LLMCHAT_EXPORT __attribute__((visibility("default")))
#define LLMCHAT_HIDDEN __attribute__((visibility("hidden")))
#else
#define LLMCHAT_EXPORT
#define LLMCHAT_HIDDEN
#endif

#endif
