#ifndef LLMCHAT_JENCODE_H
#define LLMCHAT_JENCODE_H
#include "compat.h"
/* encode(value [, config]) -> JSON string | nil, message (invalid UTF-8) */
int ljson_encode(lua_State *L);
/* normalize(value) -> value: nulls dropped from objects, whole floats as integers */
int ljson_normalize(lua_State *L);
#endif
