/* Lua binding of the SSE parser: llmchat.core.sse (re-exported as llmchat.sse). */
#ifndef LLMCHAT_LSSE_H
#define LLMCHAT_LSSE_H

#include "compat.h"

/* Pushes the table { parser = function([opts]) }; registers the metatable
 * "llmchat.sse.parser". core.c stores the table as the module's "sse" field. */
LLMCHAT_HIDDEN int llmchat_open_sse(lua_State *L);

#endif
