#ifndef LLMCHAT_JENCODE_H
#define LLMCHAT_JENCODE_H
#include "compat.h"
/* encode(value [, config]) -> JSON string | nil, message (invalid UTF-8) */
int ljson_encode(lua_State *L);
#endif
