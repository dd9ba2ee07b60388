/* libFuzzer target for the JSON decoder (src/jdecode.c, over src/jscan.c).
 *
 *   make fuzz-jdecode FUZZ_TIME=60      (mk/jdecode.mk; clang, ASan + UBSan, links liblua5.4)
 *
 * One Lua state for the whole run, so the decoder's per-state string cache and size hints
 * carry over from input to input, as in a long-running client. For each input, beyond
 * "no crash, no leak, never raises":
 *   - json_decode returns a value exactly when jscan accepts the input (jscan_value +
 *     jscan_finish), otherwise nil and a message ending in "at character N";
 *   - the value, normalised and raw, deep-equals (types, integer/float subtypes, float bits,
 *     bytes, no metatables) the one built by a naive recursive decoder written here over
 *     jscan's API, with no caches, hints or iteration tricks, and numbers read with
 *     strtoll/strtod instead of the decoder's hand parser.
 * Any disagreement aborts, so libFuzzer saves the input. */
#include "compat.h"
#include "jdecode.h"
#include "jscan.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *GL;

/* ---- the naive decoder: recursive descent over jscan's API ---- */

static int nv_value(lua_State *L, jscan *s, int raw, int in_object);

static void nv_string(lua_State *L, const jspan *v) {
  char *out = malloc(v->n + 1);
  size_t n;
  if (!out) abort();
  n = jscan_unescape(v->p, v->n, out);
  lua_pushlstring(L, out, n);
  free(out);
}

static void nv_number(lua_State *L, const jspan *v, int raw) {
  char *buf = malloc(v->n + 1);
  double d;
  if (!buf) abort();
  memcpy(buf, v->p, v->n);
  buf[v->n] = 0;
  if (!memchr(buf, '.', v->n) && !memchr(buf, 'e', v->n) && !memchr(buf, 'E', v->n)) {
    long long ll;
    errno = 0;
    ll = strtoll(buf, NULL, 10);
    if (errno == 0) {
      free(buf);
      lua_pushinteger(L, (lua_Integer)ll);
      return;
    }
  }
  d = strtod(buf, NULL); /* the fuzzer runs in the "C" locale */
  free(buf);
  if (!raw && d >= -9007199254740992.0 && d <= 9007199254740992.0 &&
      d == (double)(long long)d) {
    lua_pushinteger(L, (lua_Integer)d);
    return;
  }
  lua_pushnumber(L, d);
}

/* Pushes the value at s->p; returns -1 on a syntax error (nothing pushed then, or junk the
 * caller drops with lua_settop). */
static int nv_value(lua_State *L, jscan *s, int raw, int in_object) {
  int c = jscan_peek(s), first = 1, r;
  jspan v;
  if (!lua_checkstack(L, 8)) abort();
  if (c == '{') {
    if (jscan_enter(s, c)) return -1;
    lua_newtable(L);
    while ((r = jscan_next_key(s, &v, &first)) == 1) {
      nv_string(L, &v);
      if (nv_value(L, s, raw, 1)) return -1;
      lua_rawset(L, -3);
    }
    return r;
  }
  if (c == '[') {
    lua_Integer i = 0;
    if (jscan_enter(s, c)) return -1;
    lua_newtable(L);
    while ((r = jscan_next_elem(s, &first)) == 1) {
      if (nv_value(L, s, raw, 0)) return -1;
      lua_rawseti(L, -2, ++i);
    }
    return r;
  }
  if (jscan_value(s, &v)) return -1;
  switch (v.type) {
  case JSCAN_STRING: nv_string(L, &v); break;
  case JSCAN_NUMBER: nv_number(L, &v, raw); break;
  case JSCAN_TRUE: lua_pushboolean(L, 1); break;
  case JSCAN_FALSE: lua_pushboolean(L, 0); break;
  default:
    if (in_object && !raw) lua_pushnil(L); /* rawset nil: absent, drops a duplicate */
    else lua_pushlightuserdata(L, NULL);
    break;
  }
  return 0;
}

/* ---- deep comparison ---- */

static int same(lua_State *L, int a, int b, int depth);

/* every key of table a maps to an equal value in table b (deep: when deep is 0, only
 * that b has the key; comparing both ways deeply would cost 2^depth) */
static int subset(lua_State *L, int a, int b, int depth, int deep) {
  lua_pushnil(L);
  while (lua_next(L, a)) {
    int ok;
    lua_pushvalue(L, -2);
    lua_rawget(L, b);
    ok = deep ? same(L, lua_gettop(L) - 1, lua_gettop(L), depth + 1) : !lua_isnil(L, -1);
    lua_pop(L, 2);
    if (!ok) {
      lua_pop(L, 1);
      return 0;
    }
  }
  return 1;
}

static int same(lua_State *L, int a, int b, int depth) {
  int t = lua_type(L, a);
  if (t != lua_type(L, b)) return 0;
  if (depth > JSCAN_MAX_DEPTH + 2 || !lua_checkstack(L, 8)) abort();
  switch (t) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
    if (lua_isinteger(L, a)) return lua_tointeger(L, a) == lua_tointeger(L, b);
    {
      lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
      return memcmp(&x, &y, sizeof x) == 0;
    }
  case LUA_TTABLE:
    if (lua_getmetatable(L, a)) {
      lua_pop(L, 1);
      return 0;
    }
    return subset(L, a, b, depth, 1) && subset(L, b, a, depth, 0);
  default:
    return lua_rawequal(L, a, b);
  }
}

/* ---- the target ---- */

static void check(lua_State *L, const char *p, size_t n, int raw, int accepted) {
  jscan s;
  int base = lua_gettop(L);
  lua_pushcfunction(L, ljson_decode);
  lua_pushlstring(L, p, n);
  lua_pushboolean(L, raw);
  if (lua_pcall(L, 2, 2, 0) != 0) {
    fprintf(stderr, "json_decode raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  if (!accepted) {
    const char *msg = lua_tostring(L, -1);
    if (!lua_isnil(L, -2) || !msg || !strstr(msg, " at character ")) {
      fprintf(stderr, "accepted what jscan rejects, or no message\n");
      abort();
    }
    lua_settop(L, base);
    return;
  }
  if (lua_isnil(L, -2)) {
    fprintf(stderr, "rejected what jscan accepts: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pop(L, 1);
  jscan_init(&s, p, n);
  if (nv_value(L, &s, raw, 0) || jscan_finish(&s)) abort(); /* jscan accepted it once */
  if (!same(L, base + 1, base + 2, 0)) {
    fprintf(stderr, "decoded value differs from the naive decoder's (raw %d)\n", raw);
    abort();
  }
  lua_settop(L, base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data;
  jscan s;
  jspan v;
  int accepted;
  if (!GL) {
    GL = luaL_newstate();
    if (!GL) abort();
  }
  jscan_init(&s, p, size);
  accepted = jscan_value(&s, &v) == 0 && jscan_finish(&s) == 0;
  check(GL, p, size, 0, accepted);
  check(GL, p, size, 1, accepted);
  if (lua_gettop(GL) != 0) abort();
  return 0;
}
