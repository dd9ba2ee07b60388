/* llmchat.core.sse: the SSE parser as a Lua utility.
 *
 *   local p = sse.parser{ max_line = 1024 }   -- opts and max_line optional
 *   local events = p:feed(bytes)   -- { {event=, data=, id=, retry=}, ... }
 *   local events = p:finish()      -- normally {}: an incomplete block is discarded
 *   p:close()                      -- also __gc and, on 5.4, __close
 *
 * A too-long line (or block) makes feed/finish return nil, "sse: line exceeds N bytes",
 * events (those dispatched by this feed before the error); the error is sticky.
 *
 * While sse_feed runs, events are copied into C arrays owned by the parser object; the
 * Lua table is built only after sse_feed has returned. So a memory error raised by Lua
 * while building it cannot leave the parser half-way through a buffer (those events are
 * lost, the parser is consistent), and nothing allocates on the Lua side under a C frame
 * that could not be unwound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "lsse.h"
#include "sse.h"

#define LSSE_MT "llmchat.sse.parser"

typedef struct lsse_event {
  size_t type_off, type_len, data_off, data_len, id_off, id_len;
  long retry;
} lsse_event;

typedef struct lsse {
  sse_parser p;
  int open;     /* 0 once closed: methods raise */
  int finished; /* p:finish() was called */
  int err;      /* sticky: SSE_ELINE or SSE_ENOMEM */
  /* the events of the feed in progress: offsets into bytes */
  lsse_event *ev;
  size_t nev, ev_cap;
  bytebuf bytes;
} lsse;

/* Room was reserved: cannot fail. */
static size_t lsse_put(lsse *s, const char *p, size_t n)
{
  size_t off = s->bytes.len;
  if (n) memcpy(s->bytes.p + off, p, n);
  s->bytes.len += n;
  return off;
}

static int lsse_on_event(void *ud, const sse_event *ev)
{
  lsse *s = (lsse *)ud;
  lsse_event *e;
  size_t total = ev->type_len + ev->data_len + ev->id_len;
  void *evp = s->ev;
  if (buf_grow_array(&evp, &s->ev_cap, s->nev + 1, sizeof *s->ev) != 0) goto oom;
  s->ev = (lsse_event *)evp;
  /* each length is below max_line <= SIZE_MAX / 4: the sum cannot wrap */
  if (buf_reserve(&s->bytes, total) != 0) goto oom;
  e = &s->ev[s->nev++];
  e->type_len = ev->type_len;
  e->type_off = lsse_put(s, ev->type, ev->type_len);
  e->data_len = ev->data_len;
  e->data_off = lsse_put(s, ev->data, ev->data_len);
  e->id_len = ev->id_len;
  e->id_off = lsse_put(s, ev->id, ev->id_len);
  e->retry = ev->retry;
  return 0;
oom:
  s->err = SSE_ENOMEM; /* stops sse_feed; the rest of the buffer is lost, hence sticky */
  return 1;
}

static void lsse_release(lsse *s)
{
  if (!s->open) return;
  s->open = 0;
  sse_free(&s->p);
  free(s->ev);
  s->ev = NULL;
  s->nev = s->ev_cap = 0;
  buf_free(&s->bytes);
}

static lsse *lsse_check(lua_State *L)
{
  lsse *s = (lsse *)luaL_checkudata(L, 1, LSSE_MT);
  if (!s->open) luaL_error(L, "attempt to use a closed sse parser");
  return s;
}

/* Pushes the collected events as an array. */
static void lsse_push_events(lua_State *L, lsse *s)
{
  size_t i;
  lua_createtable(L, (int)(s->nev < 0x7fffffff ? s->nev : 0), 0);
  for (i = 0; i < s->nev; i++) {
    const lsse_event *e = &s->ev[i];
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, s->bytes.p + e->type_off, e->type_len);
    lua_setfield(L, -2, "event");
    lua_pushlstring(L, s->bytes.p + e->data_off, e->data_len);
    lua_setfield(L, -2, "data");
    lua_pushlstring(L, s->bytes.p + e->id_off, e->id_len);
    lua_setfield(L, -2, "id");
    if (e->retry >= 0) {
      lua_pushinteger(L, (lua_Integer)e->retry);
      lua_setfield(L, -2, "retry");
    }
    lua_rawseti(L, -2, (int)(i + 1));
  }
}

/* events, or nil, message, events */
static int lsse_result(lua_State *L, lsse *s, int rc)
{
  lsse_push_events(L, s);
  s->nev = 0;
  s->bytes.len = 0;
  if (rc == SSE_OK) return 1;
  lua_pushnil(L);
  if (rc == SSE_ELINE) {
    char msg[64];
    snprintf(msg, sizeof msg, "sse: line exceeds %lu bytes", (unsigned long)s->p.max_line);
    lua_pushstring(L, msg);
  } else {
    lua_pushfstring(L, "sse: %s", sse_strerror(rc));
  }
  lua_pushvalue(L, -3);
  return 3;
}

static int lsse_feed(lua_State *L)
{
  lsse *s = lsse_check(L);
  size_t len;
  const char *buf = luaL_checklstring(L, 2, &len);
  int rc;
  if (s->finished) return luaL_error(L, "sse parser: feed after finish");
  s->nev = 0;
  s->bytes.len = 0;
  if (s->err) return lsse_result(L, s, s->err);
  rc = sse_feed(&s->p, buf, len);
  if (rc == SSE_STOP) rc = s->err; /* only lsse_on_event stops, on memory exhaustion */
  else if (rc != SSE_OK) s->err = rc;
  return lsse_result(L, s, rc);
}

static int lsse_finish(lua_State *L)
{
  lsse *s = lsse_check(L);
  s->nev = 0;
  s->bytes.len = 0;
  if (s->err) return lsse_result(L, s, s->err);
  if (!s->finished) {
    int rc = sse_finish(&s->p); /* never dispatches: the incomplete block is discarded */
    s->finished = 1;
    if (rc != SSE_OK) s->err = rc;
    return lsse_result(L, s, rc);
  }
  return lsse_result(L, s, SSE_OK);
}

static int lsse_close(lua_State *L)
{
  lsse *s = (lsse *)luaL_checkudata(L, 1, LSSE_MT);
  lsse_release(s);
  return 0;
}

static int lsse_tostring(lua_State *L)
{
  lsse *s = (lsse *)luaL_checkudata(L, 1, LSSE_MT);
  if (s->open) lua_pushfstring(L, "%s (%p)", LSSE_MT, (void *)s);
  else lua_pushfstring(L, "%s (closed)", LSSE_MT);
  return 1;
}

static size_t lsse_opt_max_line(lua_State *L)
{
  lua_Integer n;
  int isnum = 0;
  if (lua_isnoneornil(L, 1)) return 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "max_line");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  n = lua_tointegerx(L, -1, &isnum);
  luaL_argcheck(L, isnum && n > 0, 1, "max_line must be a positive integer");
  lua_pop(L, 1);
  if ((unsigned long long)n > (unsigned long long)((size_t)-1 / 4)) return (size_t)-1 / 4;
  return (size_t)n;
}

static int lsse_new(lua_State *L)
{
  size_t max_line = lsse_opt_max_line(L);
  lsse *s = (lsse *)lua_newuserdata(L, sizeof *s);
  /* consistent and closed until the metatable is set; sse_init allocates nothing */
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, LSSE_MT);
  sse_init(&s->p, max_line, lsse_on_event, s);
  s->open = 1;
  return 1;
}

static const luaL_Reg lsse_methods[] = {
  { "feed", lsse_feed },
  { "finish", lsse_finish },
  { "close", lsse_close },
  { NULL, NULL }
};

static const luaL_Reg lsse_meta[] = {
  { "__gc", lsse_close },
#if LUA_VERSION_NUM >= 504
  { "__close", lsse_close },
#endif
  { "__tostring", lsse_tostring },
  { NULL, NULL }
};

int llmchat_open_sse(lua_State *L)
{
  luaL_newmetatable(L, LSSE_MT);
  luaL_setfuncs(L, lsse_meta, 0);
  lua_pushstring(L, LSSE_MT);
  lua_setfield(L, -2, "__name");
  luaL_newlib(L, lsse_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lsse_new);
  lua_setfield(L, -2, "parser");
  return 1;
}
