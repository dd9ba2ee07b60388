/* Lua glue of a request's consumer (consumer.h): one pending record as an event table. */
#ifndef LLMCHAT_LCONSUMER_H
#define LLMCHAT_LCONSUMER_H

#include "compat.h"
#include "consumer.h"

/* kind codes returned by lconsumer_push_event: STREAM_CONTENT ... STREAM_TOOL_CALL for
 * chat records, LCONSUMER_EVENT for a raw event */
#define LCONSUMER_EVENT 16

/* Pushes two values for pending record i: its text and its event table.
 *   chat:   lstream_push_event's (text = the delta; ev.kind, ev.choice, ev.raw ...)
 *   events: text = the data; ev = { kind = "event", type = the event type ("message"
 *           when the block had none), data = the data, id = the last event id (when set) }
 * mt_idx / keys as in lstream_push_event. Returns the record's kind code. */
int lconsumer_push_event(lua_State *L, const consumer *c, size_t i, int mt_idx, int keys);

/* 1 when pending record i is text of the answer (res.content): a content delta of the
 * first choice (wire index 0). What on_delta receives. */
int lconsumer_is_answer(const consumer *c, size_t i);

#endif
