#!/usr/bin/env lua5.4
--- Tool calling: the model asks for tools, llmchat runs the handlers and asks again
-- until the model answers.
--
--   lua5.4 bin/llmchat-server --port 8080 &      # offline: a scripted model that calls the tools
--   lua5.4 examples/tools.lua                    # (or --base-url http://127.0.0.1:PORT/v1 --scripted)
--   lua5.4 examples/tools.lua --provider openai --model gpt-4o-mini
--
-- With the local server, the request carries a `mock` script (the server's scenario
-- control) so its built-in model calls the tools the way a real one would: two dice rolls
-- in parallel, then the time, then an answer.

local root = ((arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or ".")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/?.so;" .. package.cpath

local llmchat = require("llmchat")

local opts, i = {}, 1
while i <= #arg do
  local k = arg[i]:match("^%-%-([%w-]+)$")
  if k == "scripted" then
    opts.scripted = true
    i = i + 1
  elseif k then
    opts[(k:gsub("-", "_"))] = arg[i + 1]
    i = i + 2
  else
    io.stderr:write("usage: tools.lua [--provider P] [--base-url URL [--scripted]] [--model M]\n")
    os.exit(2)
  end
end
-- the scripted model: the default local server, or any llmchat-server given --scripted
local offline = opts.scripted or (not opts.provider and not opts.base_url)
local client = llmchat.client{ provider = opts.provider, model = opts.model,
  base_url = opts.base_url or (offline and "http://127.0.0.1:8080/v1" or nil) }

local conv = llmchat.conversation{
  client = client,
  system = "You are a game master. Use the tools; never invent dice results.",
  -- every call passes here first: a place to ask the user, log, or refuse
  on_tool_call = function(call)
    io.write(("-> %s(%s)\n"):format(call.name, call.arguments))
    return true
  end,
  on_tool_result = function(call, result)
    io.write(("<- %s: %s\n"):format(call.name, result))
  end,
}

math.randomseed(os.time())
conv:tool{
  name = "roll_dice",
  description = "Roll dice and return each face and the total.",
  parameters = {
    type = "object",
    properties = {
      count = { type = "integer", description = "how many dice", minimum = 1, maximum = 20 },
      sides = { type = "integer", description = "faces per die", minimum = 2 },
    },
    required = { "count", "sides" },
  },
  handler = function(args)
    if args.count > 20 then error("at most 20 dice") end  -- told to the model, not raised here
    local faces, total = llmchat.array{}, 0
    for k = 1, args.count do
      faces[k] = math.random(args.sides)
      total = total + faces[k]
    end
    return { faces = faces, total = total }                -- tables are sent as JSON
  end,
}
conv:tool{
  name = "current_time",
  description = "The current local time, ISO 8601.",
  parameters = { type = "object", properties = llmchat.object{} },
  handler = function() return os.date("%Y-%m-%dT%H:%M:%S") end,
}

local say_opts = {}
if offline then
  say_opts.mock = { script = {
    { tool_calls = {
      { id = "call_1", name = "roll_dice", arguments = '{"count":2,"sides":6}' },
      { id = "call_2", name = "roll_dice", arguments = '{"count":1,"sides":20}' } } },
    { tool_calls = { { id = "call_3", name = "current_time", arguments = "{}" } } },
    { reply = "The dice are cast; the results and the hour are above." },
  } }
end

local res, err = conv:say("Roll 2d6 and a d20 for me, then tell me what time it is.", say_opts)
if not res then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print(res.content)
local u = conv:usage()
print(("(%d tool rounds, %d calls, %d tokens, $%.6f at gpt-4o-mini prices)"):format(
  res.tool_rounds, u.calls, u.total_tokens, conv:cost{ input = 0.15, output = 0.6 }))
