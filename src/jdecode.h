/* jdecode: JSON text -> Lua value in one pass, already normalised (see jdecode.c).
 *
 * json_decode(s [, raw]) -> value | nil, message
 *
 * Accepts exactly what src/jscan.c accepts (its API does the scanning): lua-cjson's strict
 * decoder minus the two documented differences D1/D2 in jscan.h; at most JSCAN_MAX_DEPTH
 * nested arrays/objects. Malformed input never raises: nil and "<what> at character <N>"
 * (1-based). Not a string: nil, "expected a JSON string, got <type>".
 *
 * Normalised (raw false, the default), the result equals
 * json_normalize(cjson.decode(s)): object members whose value is null are absent (a later
 * duplicate null removes an earlier value), nulls in arrays and at the top level are the
 * NULL lightuserdata (cjson.null), whole floats within +-2^53 are integers on Lua 5.3+
 * (also a top-level number, which json_normalize, walking only tables, leaves alone).
 * The one deliberate difference: an integer literal (no fraction, no exponent) that fits a
 * lua_Integer is that integer exactly, also above 2^53 where cjson's double rounds.
 * raw true: nulls are the NULL lightuserdata everywhere and numbers with a fraction or an
 * exponent stay floats ("1.0" -> 1.0); integer literals are still integers.
 * No metatables are set. On Lua 5.1/LuaJIT every number is a lua_Number (strtod's). */
#ifndef LLMCHAT_JDECODE_H
#define LLMCHAT_JDECODE_H
#include "compat.h"

int ljson_decode(lua_State *L);

#endif
