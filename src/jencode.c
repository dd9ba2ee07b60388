/* JSON encoding of request bodies.
 *
 * Debian's lua-cjson 2.1.0 sends integers above 1e14 rounded to 14 digits,
 * cannot tell an empty array from an empty object, and has no array_mt. A
 * request is the caller's data going out byte for byte, so the C core encodes
 * it itself: integers exactly (seed), floats with the shortest digits that
 * read back to the same double, strings as valid UTF-8 left untouched, empty
 * tables as arrays where the API expects arrays. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compat.h"
#include "buf.h"
#include "jencode.h"

#define JENC_MAX_DEPTH 1000
/* a request body is rarely shorter: one allocation where buf.h's 64 would take three */
#define JENC_FIRST_CAP 256

typedef struct jenc {
  lua_State *L;
  bytebuf *outp;       /* lives in a userdata whose __gc frees it, so a raised
                      error never leaks the buffer */
  int cfg;          /* stack index of the config table */
  const char *err;  /* data error (invalid UTF-8): returned, not raised */
  char errbuf[160];
} jenc;

static void jenc_oom(jenc *e) {
  luaL_error(e->L, "llmchat: out of memory while encoding JSON");
}

static void put(jenc *e, const char *s, size_t n) {
  if (buf_add(e->outp, s, n)) jenc_oom(e);
}

static void putc_(jenc *e, char c) {
  if (buf_addc(e->outp, c)) jenc_oom(e);
}

/* Length of the valid UTF-8 sequence at s (1..4), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t left) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    if (left >= 2 && (s[1] & 0xC0) == 0x80) return 2;
    return 0;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;   /* overlong */
    if (c == 0xED && s[1] >= 0xA0) return 0;  /* surrogate */
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
        (s[3] & 0xC0) != 0x80)
      return 0;
    if (c == 0xF0 && s[1] < 0x90) return 0;   /* overlong */
    if (c == 0xF4 && s[1] >= 0x90) return 0;  /* above U+10FFFF */
    return 4;
  }
  return 0;
}

static int enc_string(jenc *e, const char *str, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0, run = 0;
  if (buf_reserve(e->outp, len + 2)) jenc_oom(e);
  putc_(e, '"');
  while (i < len) {
    unsigned c = s[i];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      i++;
      continue;
    }
    if (i > run) put(e, str + run, i - run);
    if (c >= 0x80) {
      size_t n = utf8_seq(s + i, len - i);
      if (n == 0) {
        snprintf(e->errbuf, sizeof e->errbuf,
                 "invalid UTF-8 at byte %lu of a string", (unsigned long)i + 1);
        e->err = e->errbuf;
        return -1;
      }
      put(e, str + i, n);
      i += n;
    } else {
      char esc[6];
      switch (c) {
        case '"': put(e, "\\\"", 2); break;
        case '\\': put(e, "\\\\", 2); break;
        case '\n': put(e, "\\n", 2); break;
        case '\r': put(e, "\\r", 2); break;
        case '\t': put(e, "\\t", 2); break;
        case '\b': put(e, "\\b", 2); break;
        case '\f': put(e, "\\f", 2); break;
        default:
          esc[0] = '\\'; esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
          esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
          put(e, esc, 6);
      }
      i++;
    }
    run = i;
  }
  if (i > run) put(e, str + run, i - run);
  putc_(e, '"');
  return 0;
}

static void enc_number(jenc *e, int idx) {
  char tmp[40];
  int n;
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(e->L, idx)) {
    n = snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(e->L, idx));
    put(e, tmp, (size_t)n);
    return;
  }
#endif
  {
    double d = (double)lua_tonumber(e->L, idx);
    int prec;
    if (isnan(d) || isinf(d))
      luaL_error(e->L, "llmchat: cannot encode %s as JSON", isnan(d) ? "NaN" : "infinity");
    /* integral doubles print exactly, as integers (%.0f is the double's exact value): on
     * 5.1/5.2/LuaJIT a number is the only integer there is, and a server parsing an integer
     * field (Go's encoding/json) rejects 1.2e+17. Below 1e21, as JavaScript's
     * JSON.stringify does. */
    if (d == floor(d) && fabs(d) < 1e21) {
      n = snprintf(tmp, sizeof tmp, "%.0f", d);
      put(e, tmp, (size_t)n);
      return;
    }
    for (prec = 15; prec <= 17; prec++) {
      n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
      if (strtod(tmp, NULL) == d) break;
    }
    put(e, tmp, (size_t)n);
  }
}

/* -1: object, 1: array, 0: decide by content. Reads the metatable marker
 * (__jsontype) and the array metatables registered in the config. */
static int table_hint(jenc *e, int idx) {
  lua_State *L = e->L;
  int hint = 0;
  if (!lua_getmetatable(L, idx)) return 0;
  lua_getfield(L, -1, "__jsontype");
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *t = lua_tostring(L, -1);
    if (strcmp(t, "array") == 0) hint = 1;
    else if (strcmp(t, "object") == 0) hint = -1;
  }
  lua_pop(L, 1);
  if (hint == 0) {
    lua_getfield(L, e->cfg, "array_mts");
    if (lua_istable(L, -1)) {
      lua_pushvalue(L, -2);
      lua_rawget(L, -2);
      if (lua_toboolean(L, -1)) hint = 1;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return hint;
}

static int enc_value(jenc *e, int idx, int depth, const char *key);

static int enc_table(jenc *e, int idx, int depth, const char *key) {
  lua_State *L = e->L;
  int hint = table_hint(e, idx);
  size_t n = (size_t)lua_rawlen(L, idx), count = 0;
  int all_int_keys = 1, any = 0;

  if (depth > JENC_MAX_DEPTH)
    luaL_error(L, "llmchat: cannot encode JSON: nesting deeper than %d (a cycle?)", JENC_MAX_DEPTH);
  luaL_checkstack(L, 6, "JSON nesting");

  lua_pushnil(L);
  while (lua_next(L, idx)) {
    any = 1;
    count++;
    if (lua_type(L, -2) == LUA_TNUMBER) {
      lua_Number k = lua_tonumber(L, -2);
      if (!(k >= 1 && k == floor(k) && k <= (lua_Number)n)) all_int_keys = 0;
    } else if (lua_type(L, -2) == LUA_TSTRING) {
      all_int_keys = 0;
    } else {
      luaL_error(L, "llmchat: cannot encode a table key of type %s as JSON",
                 luaL_typename(L, -2));
    }
    lua_pop(L, 1);
  }

  if (!any) {
    int arr = hint == 1;
    if (hint == 0 && key) {
      lua_getfield(L, e->cfg, "array_keys");
      if (lua_istable(L, -1)) {
        lua_getfield(L, -1, key);
        arr = lua_toboolean(L, -1);
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
    put(e, arr ? "[]" : "{}", 2);
    return 0;
  }

  if (hint != -1 && all_int_keys && count == n) {
    size_t i;
    putc_(e, '[');
    for (i = 1; i <= n; i++) {
      if (i > 1) putc_(e, ',');
      lua_rawgeti(L, idx, (lua_Integer)i);
      if (enc_value(e, lua_gettop(L), depth + 1, key)) return -1;
      lua_pop(L, 1);
    }
    putc_(e, ']');
    return 0;
  }

  if (hint == 1) luaL_error(L, "llmchat: cannot encode a table marked as array with non-sequence keys");

  putc_(e, '{');
  any = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k;
    size_t klen;
    if (lua_type(L, -2) == LUA_TNUMBER) {
      /* numeric keys of a mixed table become strings, as lua-cjson does */
      lua_pushvalue(L, -2);
      k = lua_tolstring(L, -1, &klen);
      lua_pop(L, 1);
      luaL_error(L, "llmchat: cannot encode a table mixing array items and named keys (key %s)", k);
    }
    k = lua_tolstring(L, -2, &klen);
    if (any) putc_(e, ',');
    any = 1;
    if (enc_string(e, k, klen)) return -1;
    putc_(e, ':');
    if (enc_value(e, lua_gettop(L), depth + 1, k)) return -1;
    lua_pop(L, 1);
  }
  putc_(e, '}');
  return 0;
}

static int enc_value(jenc *e, int idx, int depth, const char *key) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      return enc_string(e, s, len);
    }
    case LUA_TNUMBER: enc_number(e, idx); return 0;
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, idx)) put(e, "true", 4);
      else put(e, "false", 5);
      return 0;
    case LUA_TTABLE: return enc_table(e, idx, depth, key);
    case LUA_TLIGHTUSERDATA:
      /* cjson.null is a NULL light userdata */
      if (lua_touserdata(L, idx) == NULL) {
        put(e, "null", 4);
        return 0;
      }
      /* fall through */
    default:
      return luaL_error(L, "llmchat: cannot encode a value of type %s as JSON%s%s",
                        luaL_typename(L, idx), key ? " at key " : "", key ? key : "");
  }
}

static void jbuf_release(bytebuf *b) { buf_free(b); }

static int jbuf_gc(lua_State *L) {
  jbuf_release((bytebuf *)lua_touserdata(L, 1));
  return 0;
}

/* encode(value [, config]) -> string | nil, message
 * config: { array_keys = {name = true}, array_mts = {[mt] = true} } */
int ljson_encode(lua_State *L) {
  jenc e;
  luaL_checkany(L, 1);
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) {
    lua_newtable(L);
    lua_replace(L, 2);
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  e.L = L;
  e.cfg = 2;
  e.err = NULL;
  e.outp = (bytebuf *)lua_newuserdata(L, sizeof(bytebuf));
  buf_init(e.outp);
  if (luaL_newmetatable(L, "llmchat.jsonbuf")) {
    lua_pushcfunction(L, jbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (buf_reserve(e.outp, JENC_FIRST_CAP)) jenc_oom(&e);
  if (enc_value(&e, 1, 0, NULL)) {
    jbuf_release(e.outp);
    lua_pushnil(L);
    lua_pushstring(L, e.err ? e.err : "cannot encode JSON");
    return 2;
  }
  lua_pushlstring(L, e.outp->p, e.outp->len);
  jbuf_release(e.outp);
  return 1;
}

/* What a decoded response becomes before a user sees it: JSON nulls dropped
 * from objects (nil is what Lua code expects: `if res.refusal then`), kept in
 * arrays (a hole would change the length); on 5.3+ whole floats in integer
 * range become integers (lua-cjson 2.1.0 decodes every number as a float,
 * token counts are integers). In C: it runs on every response. */
static void normalize(lua_State *L, int idx, int depth) {
  lua_Integer n;
  if (depth > JENC_MAX_DEPTH) return;
  luaL_checkstack(L, 4, "JSON nesting");
  n = (lua_Integer)lua_rawlen(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int t = lua_type(L, -1);
    if (t == LUA_TTABLE) {
      normalize(L, lua_gettop(L), depth + 1);
    } else if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) {
      int in_array = 0;
      if (lua_type(L, -2) == LUA_TNUMBER) {
        lua_Number k = lua_tonumber(L, -2);
        in_array = k >= 1 && k <= (lua_Number)n && k == floor(k);
      }
      if (!in_array) {
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, idx);  /* clearing a field during traversal is allowed */
      }
    }
#if LUA_VERSION_NUM >= 503
    else if (t == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      lua_Number d = lua_tonumber(L, -1);
      if (d == floor(d) && d >= -9007199254740992.0 && d <= 9007199254740992.0) {
        lua_pushvalue(L, -2);
        lua_pushinteger(L, (lua_Integer)d);
        lua_rawset(L, idx);  /* assigning an existing field is allowed too */
      }
    }
#endif
    lua_pop(L, 1);
  }
}

/* normalize(value) -> value (tables changed in place) */
int ljson_normalize(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  if (lua_istable(L, 1)) normalize(L, 1, 0);
  return 1;
}
