/* Base64 for data URLs (images sent as content parts): megabytes of image
 * per request, so it is done in C. */
#include "b64.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t b64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }

size_t b64_encode(const unsigned char *in, size_t n, char *out) {
  size_t i = 0, o = 0;
  for (; i + 3 <= n; i += 3) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
    out[o++] = alphabet[v >> 18];
    out[o++] = alphabet[(v >> 12) & 63];
    out[o++] = alphabet[(v >> 6) & 63];
    out[o++] = alphabet[v & 63];
  }
  if (n - i == 1) {
    unsigned v = (unsigned)in[i] << 16;
    out[o++] = alphabet[v >> 18];
    out[o++] = alphabet[(v >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (n - i == 2) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
    out[o++] = alphabet[v >> 18];
    out[o++] = alphabet[(v >> 12) & 63];
    out[o++] = alphabet[(v >> 6) & 63];
    out[o++] = '=';
  }
  return o;
}

int lb64_encode(lua_State *L) {
  size_t n, len;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  char *out;
  if (n > ((size_t)-1 / 4) * 3 - 3) return luaL_error(L, "llmchat.base64: input too large");
  len = b64_encoded_len(n);
  out = luaL_buffinitsize(L, &b, len);
  luaL_pushresultsize(&b, b64_encode((const unsigned char *)s, n, out));
  return 1;
}

/* value of a base64 character, -1 for anything else */
static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

/* Decodes base64 (standard or URL alphabet, padding optional) into out, which holds
 * n / 4 * 3 + 3 bytes; returns the length, or (size_t)-1 on a character outside the
 * alphabet or a length that cannot be base64. */
size_t b64_decode(const char *in, size_t n, unsigned char *out) {
  size_t i, o = 0;
  unsigned v = 0;
  int bits = 0;
  while (n > 0 && in[n - 1] == '=') n--;
  if (n % 4 == 1) return (size_t)-1;
  for (i = 0; i < n; i++) {
    int d = b64_value((unsigned char)in[i]);
    if (d < 0) return (size_t)-1;
    v = (v << 6) | (unsigned)d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)((v >> bits) & 0xff);
    }
  }
  return o;
}

/* core.base64_floats(s) -> { numbers } | nil, message
 * The embeddings endpoint's encoding_format = "base64": little-endian IEEE float32s. */
int lb64_floats(lua_State *L) {
  size_t n, len, i;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char *buf;
  buf = (unsigned char *)lua_newuserdata(L, n / 4 * 3 + 3);
  len = b64_decode(s, n, buf);
  if (len == (size_t)-1) {
    lua_pushnil(L);
    lua_pushliteral(L, "not base64");
    return 2;
  }
  if (len % 4 != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "not a whole number of float32 values");
    return 2;
  }
  lua_createtable(L, (int)(len / 4), 0);
  for (i = 0; i < len / 4; i++) {
    union { uint32_t u; float f; } x;
    const unsigned char *p = buf + i * 4;
    x.u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    lua_pushnumber(L, (lua_Number)x.f);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}
