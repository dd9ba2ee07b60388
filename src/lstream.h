/* Lua glue for the stream assembler (stream.h): pushes delta events and the assembled
 * result, and the standalone `core.stream.assembler()` object. Builds on Lua 5.1 to 5.4
 * and LuaJIT through compat.h. */
#ifndef LLMCHAT_LSTREAM_H
#define LLMCHAT_LSTREAM_H

#include "compat.h"
#include "stream.h"

#define LSTREAM_ASSEMBLER_MT "llmchat.assembler"

/* Pushes two values for pending delta i: its text and the event table
 *   { choice = wire index + 1, kind = "content"|"reasoning"|"refusal"|"tool_call",
 *     tool = 1-based position of the call in its choice (tool_call only),
 *     id = the call's id, name = the call's name (only when this fragment carried them),
 *     raw = the chunk's JSON text }
 * and gives the table the metatable at mt_idx when mt_idx != 0. keys is 0, or the index of
 * the strings lstream_push_keys pushed (a dispatch loop pushes them once: setting a field
 * by a string already on the stack skips the lookup of a C string). Returns 2. */
int lstream_push_event(lua_State *L, const stream_asm *a, size_t i, int mt_idx, int keys);

/* Pushes the field names and kind names of events; returns the index of the first. The
 * string "delta" is at that index + LSTREAM_KEY_DELTA. */
int lstream_push_keys(lua_State *L);
#define LSTREAM_KEY_DELTA 10

/* Pushes the assembled result (one table, choices sorted by wire index):
 *   { id=, model=, created=, system_fingerprint=, chunks=, usage_json=, error_json=,
 *     choices = { { index=, finish_reason=, role=, content=, reasoning=, refusal=,
 *                   tool_calls = nil | { { index=, id=, type=, name=, arguments= }, ... } } } }
 * Returns 1. */
int lstream_push_result(lua_State *L, const stream_asm *a);

/* Pushes { assembler = function([event_metatable]) } (see lstream.c). Returns 1. */
int llmchat_open_stream(lua_State *L);

#endif
