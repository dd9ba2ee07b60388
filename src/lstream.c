/* Lua glue for the stream assembler: events, the result table, and the standalone
 * assembler object (`require("llmchat.core").stream.assembler([event_metatable])`):
 *
 *   local a = core.stream.assembler(mt)
 *   local deltas, err = a:chunk(json)  -- { {text, ev}, ... } for that chunk; nil, msg if the
 *                                      -- chunk is not valid JSON (the assembler is unchanged)
 *   local r = a:result()               -- lstream_push_result's table
 *   a:close()                          -- idempotent; also __gc and, on 5.4, __close
 *
 * All C state is complete before anything is pushed, so an allocation error raised by a
 * push leaves the assembler consistent. */
#include "lstream.h"

#include <string.h>

static const char *const kind_names[] = {"content", "reasoning", "refusal", "tool_call"};

static void set_buf(lua_State *L, const char *key, const stream_buf *b) {
  lua_pushlstring(L, b->len ? b->p : "", b->len);
  lua_setfield(L, -2, key);
}

static void set_buf_if(lua_State *L, const char *key, const stream_buf *b, int present) {
  if (present) set_buf(L, key, b);
}

enum { KEY_CHOICE, KEY_KIND, KEY_TOOL, KEY_ID, KEY_NAME, KEY_RAW, KEY_KIND0,
       KEY_DELTA = KEY_KIND0 + 4, NKEYS };
static const char *const key_names[] = {"choice", "kind", "tool", "id", "name", "raw"};

/* compile-time check that lstream.h's LSTREAM_KEY_DELTA is KEY_DELTA */
typedef char lstream_key_delta_matches[KEY_DELTA == LSTREAM_KEY_DELTA ? 1 : -1];

int lstream_push_keys(lua_State *L) {
  int i;
  luaL_checkstack(L, NKEYS + 8, "llmchat events");
  for (i = 0; i < KEY_KIND0; i++) lua_pushstring(L, key_names[i]);
  for (i = 0; i < 4; i++) lua_pushstring(L, kind_names[i]);
  lua_pushliteral(L, "delta");
  return lua_gettop(L) - NKEYS + 1;
}

/* t[key] = value on top (t at -2 once the value is pushed) */
static void set_key(lua_State *L, int keys, int k) {
  if (keys) {
    lua_pushvalue(L, keys + k);
    lua_insert(L, -2);
    lua_rawset(L, -3);
  } else {
    lua_setfield(L, -2, key_names[k]);
  }
}

int lstream_push_event(lua_State *L, const stream_asm *a, size_t i, int mt_idx, int keys) {
  const stream_delta *d = &a->pending[i];
  const stream_choice *c = &a->choices[d->choice];
  if (mt_idx) mt_idx = lua_absindex(L, mt_idx);
  if (keys) keys = lua_absindex(L, keys);
  lua_pushlstring(L, stream_delta_text(a, d), d->len);
  lua_createtable(L, 0, d->kind == STREAM_TOOL_CALL ? 6 : 3);
  lua_pushinteger(L, (lua_Integer)c->index + 1);
  set_key(L, keys, KEY_CHOICE);
  if (keys) lua_pushvalue(L, keys + KEY_KIND0 + d->kind);
  else lua_pushstring(L, kind_names[d->kind]);
  set_key(L, keys, KEY_KIND);
  if (d->kind == STREAM_TOOL_CALL) {
    const stream_call *call = &c->calls[d->tool];
    lua_pushinteger(L, (lua_Integer)d->tool + 1);
    set_key(L, keys, KEY_TOOL);
    if (d->flags & STREAM_HAS_ID) {
      lua_pushlstring(L, call->id.len ? call->id.p : "", call->id.len);
      set_key(L, keys, KEY_ID);
    }
    if (d->flags & STREAM_HAS_NAME) {
      lua_pushlstring(L, call->name.len ? call->name.p : "", call->name.len);
      set_key(L, keys, KEY_NAME);
    }
  }
  lua_pushlstring(L, a->raw.p + d->raw_off, d->raw_len);
  set_key(L, keys, KEY_RAW);
  if (mt_idx) {
    lua_pushvalue(L, mt_idx);
    lua_setmetatable(L, -2);
  }
  return 2;
}

static void push_created(lua_State *L, double d) {
#if defined(LUA_MAXINTEGER)
  /* 5.3+: a whole number in range is an integer, as `created` is on the wire */
  if (d >= -(double)LUA_MAXINTEGER && d < (double)LUA_MAXINTEGER && d == (double)(lua_Integer)d) {
    lua_pushinteger(L, (lua_Integer)d);
    return;
  }
#endif
  lua_pushnumber(L, (lua_Number)d);
}

static void push_call(lua_State *L, const stream_call *call) {
  lua_createtable(L, 0, 5);
  if (call->index >= 0) {
    lua_pushinteger(L, (lua_Integer)call->index);
    lua_setfield(L, -2, "index");
  }
  set_buf_if(L, "id", &call->id, call->id.len > 0);
  if (call->type.len) set_buf(L, "type", &call->type);
  else {
    lua_pushliteral(L, "function");
    lua_setfield(L, -2, "type");
  }
  set_buf_if(L, "name", &call->name, call->name.len > 0);
  set_buf(L, "arguments", &call->args);
}

static void push_choice(lua_State *L, const stream_choice *c) {
  size_t j;
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, (lua_Integer)c->index);
  lua_setfield(L, -2, "index");
  set_buf_if(L, "finish_reason", &c->finish_reason, c->finish_reason.len > 0);
  set_buf_if(L, "role", &c->role, c->role.len > 0);
  set_buf_if(L, "content", &c->content, c->has_content);
  set_buf_if(L, "reasoning", &c->reasoning, c->has_reasoning);
  set_buf_if(L, "refusal", &c->refusal, c->has_refusal);
  if (c->ncalls) {
    lua_createtable(L, (int)c->ncalls, 0);
    for (j = 0; j < c->ncalls; j++) {
      push_call(L, &c->calls[j]);
      lua_rawseti(L, -2, (lua_Integer)j + 1);
    }
    lua_setfield(L, -2, "tool_calls");
  }
}

int lstream_push_result(lua_State *L, const stream_asm *a) {
  unsigned order[STREAM_MAX_CHOICES];
  size_t k;
  lua_createtable(L, 0, 9);
  set_buf_if(L, "id", &a->id, a->id.len > 0);
  set_buf_if(L, "model", &a->model, a->model.len > 0);
  set_buf_if(L, "system_fingerprint", &a->system_fingerprint, a->system_fingerprint.len > 0);
  if (a->created != 0) {
    push_created(L, a->created);
    lua_setfield(L, -2, "created");
  }
  lua_pushinteger(L, (lua_Integer)a->chunks);
  lua_setfield(L, -2, "chunks");
  set_buf_if(L, "usage_json", &a->usage, a->usage.len > 0);
  set_buf_if(L, "error_json", &a->error, a->error.len > 0);
  stream_choice_order(a, order);
  lua_createtable(L, (int)a->nchoices, 0);
  for (k = 0; k < a->nchoices; k++) {
    push_choice(L, &a->choices[order[k]]);
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
  lua_setfield(L, -2, "choices");
  return 1;
}

/* ---- the assembler object ---- */

typedef struct lassembler {
  stream_asm a;
  int closed;
  int has_mt; /* an event metatable is the userdata's user value */
} lassembler;

static lassembler *check_open(lua_State *L) {
  lassembler *x = (lassembler *)luaL_checkudata(L, 1, LSTREAM_ASSEMBLER_MT);
  if (x->closed) luaL_error(L, "attempt to use a closed assembler");
  return x;
}

static int l_assembler(lua_State *L) {
  lassembler *x;
  int has_mt = !lua_isnoneornil(L, 1);
  if (has_mt) luaL_checktype(L, 1, LUA_TTABLE);
  x = (lassembler *)lua_newuserdata(L, sizeof *x);
  stream_init(&x->a); /* owns nothing until the first chunk */
  x->closed = 0;
  x->has_mt = has_mt;
  luaL_setmetatable(L, LSTREAM_ASSEMBLER_MT);
  if (has_mt) {
    lua_pushvalue(L, 1);
    lua_setuservalue(L, -2);
  }
  return 1;
}

static int l_chunk(lua_State *L) {
  lassembler *x = check_open(L);
  size_t len, i, n;
  const char *s = luaL_checklstring(L, 2, &len);
  int rc, mt = 0, keys;
  stream_clear_pending(&x->a); /* left over if a push raised last time */
  rc = stream_chunk(&x->a, s, len);
  if (rc == STREAM_EJSON) {
    lua_pushnil(L);
    lua_pushstring(L, stream_errmsg(&x->a));
    return 2;
  }
  if (rc != STREAM_OK) {
    stream_clear_pending(&x->a);
    return luaL_error(L, "%s", stream_errmsg(&x->a));
  }
  if (x->has_mt) {
    lua_getuservalue(L, 1);
    mt = lua_gettop(L);
  }
  keys = lstream_push_keys(L);
  n = stream_pending(&x->a);
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_createtable(L, 2, 0);
    lstream_push_event(L, &x->a, i, mt, keys);
    lua_rawseti(L, -3, 2);
    lua_rawseti(L, -2, 1);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  stream_clear_pending(&x->a);
  return 1;
}

static int l_result(lua_State *L) {
  lassembler *x = check_open(L);
  return lstream_push_result(L, &x->a);
}

static int l_close(lua_State *L) {
  lassembler *x = (lassembler *)luaL_checkudata(L, 1, LSTREAM_ASSEMBLER_MT);
  if (!x->closed) {
    x->closed = 1;
    stream_free(&x->a);
  }
  return 0;
}

static int l_tostring(lua_State *L) {
  lassembler *x = (lassembler *)luaL_checkudata(L, 1, LSTREAM_ASSEMBLER_MT);
  if (x->closed) lua_pushliteral(L, "llmchat.assembler (closed)");
  else lua_pushfstring(L, "llmchat.assembler (%p)", (void *)x);
  return 1;
}

int llmchat_open_stream(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"chunk", l_chunk}, {"result", l_result}, {"close", l_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
    {"__gc", l_close},
#if LUA_VERSION_NUM >= 504
    {"__close", l_close},
#endif
    {"__tostring", l_tostring}, {NULL, NULL}};
  if (luaL_newmetatable(L, LSTREAM_ASSEMBLER_MT)) {
    luaL_setfuncs(L, meta, 0);
    lua_createtable(L, 0, 3);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, LSTREAM_ASSEMBLER_MT);
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_assembler);
  lua_setfield(L, -2, "assembler");
  return 1;
}
