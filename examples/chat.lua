#!/usr/bin/env lua5.4
--- A terminal chat with streaming and history, on llmchat.conversation.
--
--   lua5.4 bin/llmchat-server --port 8080 &          # the local echo model, or:
--   lua5.4 examples/chat.lua                          # talks to http://127.0.0.1:8080/v1
--   lua5.4 examples/chat.lua --provider openai --model gpt-4o-mini --system "Be terse."
--   lua5.4 examples/chat.lua --base-url http://127.0.0.1:11434/v1 --model llama3.2
--   lua5.4 examples/chat.lua --history chat.json     # load it if present, save after each turn
--
-- Commands: /undo /clear /save FILE /load FILE /usage /cost IN OUT /history /help /quit

-- Run from a checkout: find lua/ and the C module next to this script.
local root = ((arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or ".")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/?.so;" .. package.cpath

local llmchat = require("llmchat")

local opts = { base_url = os.getenv("LLMCHAT_BASE_URL") }
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--provider" then opts.provider = v
  elseif a == "--base-url" then opts.base_url = v
  elseif a == "--model" then opts.model = v
  elseif a == "--system" then opts.system = v
  elseif a == "--history" then opts.history = v
  elseif a == "-h" or a == "--help" then
    print("usage: chat.lua [--provider P] [--base-url URL] [--model M] [--system TEXT] [--history FILE]")
    os.exit(0)
  else
    io.stderr:write("unknown option ", a, "\n")
    os.exit(2)
  end
  i = i + 2
end
if not opts.provider and not opts.base_url then opts.base_url = "http://127.0.0.1:8080/v1" end

local client = llmchat.client{ provider = opts.provider, base_url = opts.base_url, model = opts.model }

local conv
if opts.history and io.open(opts.history) then
  local err
  conv, err = llmchat.conversation.load(opts.history, client)
  if not conv then io.stderr:write(err, "\n"); os.exit(1) end
  print(("(loaded %d messages from %s)"):format(#conv:messages(), opts.history))
else
  conv = llmchat.conversation{ client = client, model = opts.model, system = opts.system }
end

local function text_of(m)
  if not m then return "" end
  local c = m.content
  if type(c) == "string" then return c end
  if type(c) == "table" and c ~= llmchat.null then return llmchat.content.to_text(c) end
  return m.refusal or (m.tool_calls and "(tool calls)") or ""
end

local commands = {}
function commands.help()
  print("/undo            forget the last exchange")
  print("/clear           forget everything but the system prompt")
  print("/save FILE       save the conversation (JSON)")
  print("/load FILE       load a saved conversation")
  print("/history         print the messages")
  print("/usage           tokens used so far")
  print("/cost IN OUT     dollars spent at IN / OUT dollars per million tokens")
  print("/quit            leave (also Ctrl-D)")
end
function commands.undo()
  if conv:undo() then print("(dropped the last exchange)") else print("(nothing to undo)") end
end
function commands.clear() conv:clear(); print("(cleared)") end
function commands.save(file)
  local ok, err = conv:save(file or opts.history or "chat.json")
  print(ok and "(saved)" or ("(not saved: " .. err .. ")"))
end
function commands.load(file)
  local c, err = llmchat.conversation.load(file or opts.history or "chat.json", client)
  if c then conv = c; print(("(loaded %d messages)"):format(#c:messages()))
  else print("(not loaded: " .. err .. ")") end
end
function commands.history()
  for _, m in ipairs(conv:messages()) do print(("[%s] %s"):format(m.role, text_of(m))) end
end
function commands.usage()
  local u = conv:usage()
  print(("%d calls, %d prompt + %d completion = %d tokens (%d cached, %d reasoning)%s"):format(
    u.calls, u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens,
    u.reasoning_tokens, u.cost and (", provider cost $" .. u.cost) or ""))
end
function commands.cost(input, output)
  input, output = tonumber(input), tonumber(output)
  if not (input and output) then
    local c, why = conv:cost()
    print(c and ("$%.6f (reported by the provider)"):format(c) or why)
  else
    print(("$%.6f"):format(conv:cost{ input = input, output = output }))
  end
end

print("llmchat " .. llmchat.version .. " -- " .. client.base_url .. "  (/help for commands)")
while true do
  io.write("> ")
  io.flush()
  local line = io.read("*l")
  if not line or line == "/quit" or line == "/exit" then break end
  local cmd, rest = line:match("^/(%a+)%s*(.*)$")
  if cmd then
    local f = commands[cmd]
    if f then
      local a, b = rest:match("^(%S*)%s*(%S*)")
      f(a ~= "" and a or nil, b ~= "" and b or nil)
    else
      print("(unknown command; /help)")
    end
  elseif line:find("%S") then
    local res, err = conv:say(line, {
      on_delta = function(text, ev)
        if ev.kind == "content" then io.write(text); io.flush() end
      end,
    })
    if res then
      if res.refusal then io.write("(refused) ", res.refusal) end
      io.write("\n")
      if opts.history then conv:save(opts.history) end
    else
      io.write("\n(error: ", tostring(err), ")\n")
    end
  end
end
print()
