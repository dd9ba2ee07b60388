/* jdecode: one-pass JSON decoder building the normalised Lua value directly (jdecode.h).
 *
 * The scanning and validation are jscan's (jscan_enter / jscan_next_key / jscan_next_elem
 * for containers, jscan_value for scalars), so the accepted language is jscan's by
 * construction. The walk is iterative: nesting costs no C stack, only the Lua stack slots of
 * the open tables (one per array, two per object: the table and the pending key), checked
 * with luaL_checkstack at each level; jscan stops at JSCAN_MAX_DEPTH. On a syntax error the
 * partial tables are left on the stack for the GC and nil, message is returned.
 *
 * Two per-state caches (a userdata in the registry) make repeated responses cheap; neither
 * changes a result:
 *   - short strings (keys, "assistant", "stop", model names): a direct-mapped table of Lua
 *     strings by hash slot, compared byte for byte, so a hit skips Lua's string interning;
 *     the strings are anchored in the userdata's user value table. A string is admitted
 *     the second time in a row its slot sees it (the first only notes its key words), so
 *     strings that never repeat (ids, arguments) neither pay for anchoring nor evict the
 *     ones that do;
 *   - table size hints: the member/element count last seen for an object or array under
 *     the same key at the same depth, so lua_createtable sizes it once instead of growing
 *     it 1, 2, 4, 8 (capped, so a one-off huge array cannot inflate later tables). */
#include <stdio.h>
#include <string.h>
#include <stdint.h>

#include "compat.h"
#include "jdecode.h"
#include "jscan.h"

/* stack slots of a call: 1 the text, 2 raw, then these */
#define JD_SCRATCH 3 /* nil or a userdata: escaped long strings, long numbers */
#define JD_CACHE 4   /* the cache userdata */
#define JD_STRS 5    /* its string table */

/* Escaped strings up to this length decode into a C stack buffer. */
#define JD_SMALL 256

#define JD_NSTR 256       /* string cache slots (a power of 2) */
#define JD_STR_MAXLEN 40  /* longer strings are not cached (Lua interns up to 40 too) */
#define JD_NHINT 128      /* size hint slots (a power of 2, <= 256) */
#define JD_HINT_MAX 64    /* a hint never exceeds this */
#define JD_OBJ_DEFAULT 4  /* hint for an object never seen */

typedef struct jd_cache {
  const char *str[JD_NSTR]; /* the bytes of the Lua string at index slot+1, or NULL */
  size_t len[JD_NSTR];
  uint64_t a[JD_NSTR], b[JD_NSTR]; /* its jd_key words */
  uint64_t pa[JD_NSTR], pb[JD_NSTR]; /* a candidate's key words and length (admission) */
  size_t plen[JD_NSTR];
  unsigned char hint[JD_NHINT];
} jd_cache;

static const char jd_cache_key = 'j'; /* its address keys the registry entry */

/* Pushes the cache userdata and its string table into slots JD_CACHE, JD_STRS. */
static jd_cache *jd_cache_get(lua_State *L) {
  jd_cache *c;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &jd_cache_key) == LUA_TUSERDATA) {
    c = (jd_cache *)lua_touserdata(L, -1);
    lua_getuservalue(L, -1);
    return c;
  }
  lua_pop(L, 1);
  c = (jd_cache *)lua_newuserdata(L, sizeof *c);
  memset(c, 0, sizeof *c);
  lua_createtable(L, JD_NSTR, 0);
  lua_pushvalue(L, -1);
  lua_setuservalue(L, -3);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &jd_cache_key);
  return c;
}

static inline uint64_t jd_load8(const char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static inline uint32_t jd_load4(const char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* Two words that, with the length, identify strings of up to 16 bytes exactly: the first
 * and last 8 bytes (overlapping), the first and last 4, or for 1..3 bytes all of them. */
typedef struct jd_key {
  uint64_t a, b;
} jd_key;

static inline jd_key jd_key_of(const char *p, size_t n) {
  jd_key k;
  if (n >= 8) {
    k.a = jd_load8(p);
    k.b = jd_load8(p + n - 8);
  } else if (n >= 4) {
    k.a = jd_load4(p);
    k.b = jd_load4(p + n - 4);
  } else if (n > 0) {
    k.a = (unsigned char)p[0] | ((uint64_t)(unsigned char)p[n >> 1] << 8) |
          ((uint64_t)(unsigned char)p[n - 1] << 16);
    k.b = 0;
  } else {
    k.a = k.b = 0;
  }
  return k;
}

/* A cheap hash of the key words and the length. Collisions only cost a cache miss. */
static inline unsigned jd_hash(jd_key k, size_t n) {
  return (unsigned)(((k.a ^ (k.b * 0xC2B2AE3D27D4EB4Full) ^ n) * 0x9E3779B97F4A7C15ull) >> 32);
}

static char *jd_scratch(lua_State *L, size_t n) {
  size_t have = lua_type(L, JD_SCRATCH) == LUA_TUSERDATA ? (size_t)lua_rawlen(L, JD_SCRATCH) : 0;
  if (have < n) {
    size_t want = n < 4096 ? 4096 : n;
    lua_newuserdata(L, want);
    lua_replace(L, JD_SCRATCH);
  }
  return (char *)lua_touserdata(L, JD_SCRATCH);
}

/* Pushes the n bytes at p as a Lua string; returns their hash (0 for long strings). */
static unsigned jd_push_bytes(lua_State *L, jd_cache *c, const char *p, size_t n) {
  unsigned h, slot;
  jd_key k;
  if (n > JD_STR_MAXLEN) {
    lua_pushlstring(L, p, n);
    return 0;
  }
  k = jd_key_of(p, n);
  h = jd_hash(k, n);
  slot = h & (JD_NSTR - 1);
  if (c->str[slot] && c->len[slot] == n && c->a[slot] == k.a && c->b[slot] == k.b &&
      (n <= 16 || memcmp(c->str[slot] + 8, p + 8, n - 16) == 0)) {
    lua_rawgeti(L, JD_STRS, (lua_Integer)slot + 1);
    return h;
  }
  lua_pushlstring(L, p, n);
  if (c->plen[slot] != n || c->pa[slot] != k.a || c->pb[slot] != k.b) {
    /* first sighting (as far as the key words tell): a candidate only */
    c->plen[slot] = n;
    c->pa[slot] = k.a;
    c->pb[slot] = k.b;
    return h;
  }
  c->plen[slot] = (size_t)-1; /* no length matches: the candidate is taken */
  lua_pushvalue(L, -1);
  lua_rawseti(L, JD_STRS, (lua_Integer)slot + 1); /* anchors it: the pointer stays valid */
  c->str[slot] = lua_tostring(L, -1);
  c->len[slot] = n;
  c->a[slot] = k.a;
  c->b[slot] = k.b;
  return h;
}

static unsigned jd_push_string(lua_State *L, jd_cache *c, const jspan *v) {
  char small[JD_SMALL], *out;
  if (!v->esc) return jd_push_bytes(L, c, v->p, v->n);
  out = v->n <= sizeof small ? small : jd_scratch(L, v->n);
  return jd_push_bytes(L, c, out, jscan_unescape(v->p, v->n, out));
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
  unsigned keyh = 0; /* hash of the key the next value sits under (0: none) */
  jd_cache *cache;
  jscan sc;
  jspan v;
  /* per open level: arrays the elements stored so far (>= 0), objects -1 - the members
   * stored so far; and the hint slot the final count goes to */
  lua_Integer count[JSCAN_MAX_DEPTH + 1];
  unsigned char hslot[JSCAN_MAX_DEPTH + 1];

  if (lua_type(L, 1) != LUA_TSTRING) {
    lua_pushnil(L);
    lua_pushfstring(L, "expected a JSON string, got %s",
                    lua_type(L, 1) == LUA_TNONE ? "nil" : luaL_typename(L, 1));
    return 2;
  }
  s = lua_tolstring(L, 1, &len);
  raw = lua_toboolean(L, 2);
  lua_settop(L, 2);
  luaL_checkstack(L, 10, "JSON decode");
  lua_pushnil(L); /* JD_SCRATCH */
  cache = jd_cache_get(L); /* JD_CACHE, JD_STRS */
  jscan_init(&sc, s, len);
  count[0] = 0;

value: /* a value starts here (whitespace not yet skipped); it ends up on the stack top */
  c = jscan_peek(&sc);
  if (c == '{' || c == '[') {
    unsigned slot;
    if (jscan_enter(&sc, c)) goto fail;
    /* the table, a key, a value, a cached string's copy or a scratch userdata, an error */
    luaL_checkstack(L, 6, "too many nested data structures");
    first = 1;
    slot = (keyh + (unsigned)sc.depth * 0x9E3779B1u + (c == '{' ? 0u : 0x5bd1e995u)) >> 25;
    hslot[sc.depth] = (unsigned char)(slot & (JD_NHINT - 1));
    if (c == '{') {
      unsigned h = cache->hint[hslot[sc.depth]];
      lua_createtable(L, 0, h ? (int)h - 1 : JD_OBJ_DEFAULT);
      count[sc.depth] = -1;
      goto member;
    }
    lua_createtable(L, cache->hint[hslot[sc.depth]], 0);
    count[sc.depth] = 0;
    goto element;
  }
  if (jscan_value(&sc, &v)) goto fail;
  switch (v.type) {
  case JSCAN_STRING: jd_push_string(L, cache, &v); break;
  case JSCAN_NUMBER: jd_push_number(L, v.p, v.n, raw); break;
  case JSCAN_TRUE: lua_pushboolean(L, 1); break;
  case JSCAN_FALSE: lua_pushboolean(L, 0); break;
  default: /* null: absent as an object member (rawset of nil also drops an earlier
            * duplicate, as normalising cjson's last-wins NULL would), NULL elsewhere */
    if (!raw && count[sc.depth] < 0) {
      lua_pushnil(L);
      lua_rawset(L, -3); /* not a member: not counted */
      goto member;
    } else {
      lua_pushlightuserdata(L, NULL);
    }
    break;
  }

stored: /* a complete value on top: store it in its container, or finish */
  if (sc.depth == 0) {
    if (jscan_finish(&sc)) goto fail;
    return 1;
  }
  if (count[sc.depth] < 0) {
    lua_rawset(L, -3);
    count[sc.depth]--;
  member:
    r = jscan_next_key(&sc, &v, &first);
    if (r < 0) goto fail;
    if (r == 0) {
      /* closed (depth already one less): the object is the value on top. Hints store
       * members + 1, so that 0 means "never seen" */
      lua_Integer m = -1 - count[sc.depth + 1];
      cache->hint[hslot[sc.depth + 1]] = (unsigned char)(m < JD_HINT_MAX ? m + 1 : JD_HINT_MAX);
      keyh = 0;
      goto stored;
    }
    keyh = jd_push_string(L, cache, &v);
    goto value;
  }
  lua_rawseti(L, -2, ++count[sc.depth]);
element:
  keyh = 0;
  r = jscan_next_elem(&sc, &first);
  if (r < 0) goto fail;
  if (r == 0) {
    lua_Integer m = count[sc.depth + 1];
    cache->hint[hslot[sc.depth + 1]] = (unsigned char)(m < JD_HINT_MAX ? m : JD_HINT_MAX);
    goto stored;
  }
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
