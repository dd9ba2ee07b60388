-- Starts streams and fire-and-forget requests, then lets lua.c close the state
-- with all of them in flight (run under valgrind by spec/lifecycle_spec.lua).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "./?.so;" .. package.cpath
local llmchat = require("llmchat")
local c = llmchat.client{ base_url = arg[1] }
local reqs = {}
for i = 1, 8 do
  reqs[i] = c:start{ messages = { { role = "user", content = string.rep("abc ", 50) } }, stream = true,
    mock = { chunk_delay = 0.01 }, on_delta = function() end }
end
-- fire-and-forget ones, no handle kept
for _ = 1, 4 do c:start{ messages = { { role = "user", content = "x" } }, mock = { delay = 2 } } end
local t0 = llmchat.core.now()
while llmchat.core.now() - t0 < 0.3 do llmchat.poll(0.01) end
collectgarbage(); collectgarbage()
print("closing with", llmchat.poll(0), "in flight")
assert(#reqs == 8 and not reqs[1].done)
-- lua.c closes the state on return: every request is still in flight
