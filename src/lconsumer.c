/* Lua glue of a request's consumer: see lconsumer.h. */
#include "lconsumer.h"
#include "lstream.h"

int lconsumer_push_event(lua_State *L, const consumer *c, size_t i, int mt_idx, int keys) {
  const consumer_event *e;
  if (c->kind == CONSUMER_CHAT) {
    lstream_push_event(L, &c->as, i, mt_idx, keys);
    return c->as.pending[i].kind;
  }
  if (mt_idx) mt_idx = lua_absindex(L, mt_idx);
  e = &c->evs[i];
  lua_pushlstring(L, c->evbuf.p + e->data_off, e->data_len);
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "event");
  lua_setfield(L, -2, "kind");
  if (e->type_len) lua_pushlstring(L, c->evbuf.p + e->type_off, e->type_len);
  else lua_pushliteral(L, "message");
  lua_setfield(L, -2, "type");
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "data");
  if (e->id_len) {
    lua_pushlstring(L, c->evbuf.p + e->id_off, e->id_len);
    lua_setfield(L, -2, "id");
  }
  if (mt_idx) {
    lua_pushvalue(L, mt_idx);
    lua_setmetatable(L, -2);
  }
  return LCONSUMER_EVENT;
}

int lconsumer_is_answer(const consumer *c, size_t i) {
  const stream_delta *d;
  if (c->kind != CONSUMER_CHAT) return 0;
  d = &c->as.pending[i];
  return d->kind == STREAM_CONTENT && c->as.choices[d->choice].index == 0;
}
