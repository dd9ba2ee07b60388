#ifndef LLMCHAT_B64_H
#define LLMCHAT_B64_H
#include <stddef.h>
#include <stdint.h>
#include "compat.h"
/* base64 (RFC 4648, with padding) of n bytes into out, which holds
 * b64_encoded_len(n) bytes; returns the length written */
size_t b64_encode(const unsigned char *in, size_t n, char *out);
size_t b64_encoded_len(size_t n);
size_t b64_decode(const char *in, size_t n, unsigned char *out);
/* core.base64(bytes) -> string */
int lb64_floats(lua_State *L);
int lb64_encode(lua_State *L);
#endif
