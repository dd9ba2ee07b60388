/* jdecode: one-pass JSON decoder building the normalised Lua value directly (jdecode.h).
 *
 * The scanning and validation are jscan's (jscan_enter / jscan_next_key / jscan_next_elem
 * for containers, jscan_value for scalars), so the accepted language is jscan's by
 * construction. The walk is iterative: nesting costs no C stack, only the Lua stack slots of
 * the open tables (one per array, two per object: the table and the pending key), checked
 * with luaL_checkstack at each level; jscan stops at JSCAN_MAX_DEPTH. On a syntax error the
 * partial tables are left on the stack for the GC and nil, message is returned. */
#include <stdio.h>
#include <string.h>

#include "compat.h"
#include "jdecode.h"
#include "jscan.h"

/* Escaped strings up to this length decode into a C stack buffer; longer ones into a
 * scratch userdata kept in stack slot JD_SCRATCH (grown as needed, one per call). */
#define JD_SMALL 256
#define JD_SCRATCH 3

/* lua_createtable hint for objects: most API objects have a few members */
#define JD_OBJ_HINT 4

static char *jd_scratch(lua_State *L, size_t n) {
  size_t have = lua_type(L, JD_SCRATCH) == LUA_TUSERDATA ? (size_t)lua_rawlen(L, JD_SCRATCH) : 0;
  if (have < n) {
    size_t want = n < 4096 ? 4096 : n;
    lua_newuserdata(L, want);
    lua_replace(L, JD_SCRATCH);
  }
  return (char *)lua_touserdata(L, JD_SCRATCH);
}

static void jd_push_string(lua_State *L, const jspan *v) {
  char small[JD_SMALL], *out;
  if (!v->esc) {
    lua_pushlstring(L, v->p, v->n);
    return;
  }
  out = v->n <= sizeof small ? small : jd_scratch(L, v->n);
  lua_pushlstring(L, out, jscan_unescape(v->p, v->n, out));
}

/* A number jscan validated (RFC 8259 grammar). */
static void jd_push_number(lua_State *L, const char *p, size_t n, int raw) {
  char *tmp = n >= 64 ? jd_scratch(L, n + 1) : NULL;
  double d;
#if LUA_VERSION_NUM >= 503
  /* an integer literal that fits: exact, by hand */
  const char *q = p, *e = p + n;
  int neg = *q == '-';
  lua_Unsigned u = 0, limit;
  q += neg;
  limit = neg ? (lua_Unsigned)LUA_MAXINTEGER + 1u : (lua_Unsigned)LUA_MAXINTEGER;
  for (; q < e; q++) {
    unsigned dg = (unsigned char)*q - (unsigned)'0';
    if (dg > 9 || u > (limit - dg) / 10) break; /* '.', 'e', 'E', or too big */
    u = u * 10 + dg;
  }
  if (q == e) {
    lua_pushinteger(L, neg ? (lua_Integer)(0u - u) : (lua_Integer)u);
    return;
  }
  d = jscan_number(p, n, tmp); /* strtod in the "C" locale's terms */
  if (!raw && d >= -9007199254740992.0 && d <= 9007199254740992.0 &&
      (double)(lua_Integer)d == d) {
    lua_pushinteger(L, (lua_Integer)d); /* whole: as json_normalize does */
    return;
  }
#else
  (void)raw;
  d = jscan_number(p, n, tmp);
#endif
  lua_pushnumber(L, (lua_Number)d);
}

int ljson_decode(lua_State *L) {
  size_t len;
  const char *s;
  int raw, first = 0, r, c;
  jscan sc;
  jspan v;
  /* per open level: the next array index - 1, or -1 for an object */
  lua_Integer count[JSCAN_MAX_DEPTH + 1];

  if (lua_type(L, 1) != LUA_TSTRING) {
    lua_pushnil(L);
    lua_pushfstring(L, "expected a JSON string, got %s",
                    lua_type(L, 1) == LUA_TNONE ? "nil" : luaL_typename(L, 1));
    return 2;
  }
  s = lua_tolstring(L, 1, &len);
  raw = lua_toboolean(L, 2);
  lua_settop(L, 2);
  lua_pushnil(L); /* JD_SCRATCH */
  luaL_checkstack(L, 6, "JSON decode");
  jscan_init(&sc, s, len);
  count[0] = 0;

value: /* a value starts here (whitespace not yet skipped); it ends up on the stack top */
  c = jscan_peek(&sc);
  if (c == '{' || c == '[') {
    if (jscan_enter(&sc, c)) goto fail;
    /* the table, a key, a value, a scratch userdata, an error message */
    luaL_checkstack(L, 6, "too many nested data structures");
    first = 1;
    if (c == '{') {
      lua_createtable(L, 0, JD_OBJ_HINT);
      count[sc.depth] = -1;
      goto member;
    }
    lua_createtable(L, 0, 0);
    count[sc.depth] = 0;
    goto element;
  }
  if (jscan_value(&sc, &v)) goto fail;
  switch (v.type) {
  case JSCAN_STRING: jd_push_string(L, &v); break;
  case JSCAN_NUMBER: jd_push_number(L, v.p, v.n, raw); break;
  case JSCAN_TRUE: lua_pushboolean(L, 1); break;
  case JSCAN_FALSE: lua_pushboolean(L, 0); break;
  default: /* null: absent as an object member (rawset of nil also drops an earlier
            * duplicate, as normalising cjson's last-wins NULL would), NULL elsewhere */
    if (!raw && count[sc.depth] < 0) lua_pushnil(L);
    else lua_pushlightuserdata(L, NULL);
    break;
  }

stored: /* a complete value on top: store it in its container, or finish */
  if (sc.depth == 0) {
    if (jscan_finish(&sc)) goto fail;
    return 1;
  }
  if (count[sc.depth] < 0) {
    lua_rawset(L, -3);
  member:
    r = jscan_next_key(&sc, &v, &first);
    if (r < 0) goto fail;
    if (r == 0) goto stored; /* closed: the object is the value on top */
    jd_push_string(L, &v);
    goto value;
  }
  lua_rawseti(L, -2, ++count[sc.depth]);
element:
  r = jscan_next_elem(&sc, &first);
  if (r < 0) goto fail;
  if (r == 0) goto stored;
  goto value;

fail: {
    char msg[160];
    snprintf(msg, sizeof msg, "%s at character %lu", sc.err ? sc.err : "invalid JSON",
             (unsigned long)sc.errpos + 1ul);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
  }
}
