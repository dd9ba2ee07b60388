-- A real round trip with llmchat: blocking chat, streaming, an error, and a
-- request that never blocks the loop. Run with `make demo` (it starts the
-- bundled local server), or point LLMCHAT_BASE_URL at any OpenAI-compatible
-- server (and set LLMCHAT_API_KEY / LLMCHAT_MODEL for it).
local llmchat = require("llmchat")

local client = llmchat.client{
  base_url = os.getenv("LLMCHAT_BASE_URL") or "http://127.0.0.1:8080/v1",
  api_key = os.getenv("LLMCHAT_API_KEY"),
  model = os.getenv("LLMCHAT_MODEL") or "llmchat-echo",
}

-- 1. one call, one answer
local res, err = client:chat{ messages = { { role = "user", content = "Hello from llmchat!" } } }
if not res then print("chat failed: " .. tostring(err)); os.exit(1) end
print(("chat      -> %q (%s, %d tokens, HTTP %d)"):format(res.content, res.finish_reason,
  res.usage and res.usage.total_tokens or 0, res.status))

-- 2. streaming: tokens as they arrive
io.write("stream    -> ")
res, err = client:chat{
  messages = { { role = "user", content = "Streaming arrives token by token." } },
  on_delta = function(text) io.write(text, "|") io.flush() end,
}
print(res and "  [" .. res.finish_reason .. "]" or tostring(err))

-- 3. errors come back as values, with a kind
local _, e = client:chat{ messages = { { role = "user", content = "x" } },
  mock = { status = 429, error = { message = "slow down" }, headers = { ["retry-after"] = "0" } },
  max_retries = 0 }
print("error     -> " .. tostring(e) .. "  (kind " .. tostring(e and e.kind) .. ")")

-- 4. never block: start, then poll once per "frame"
local frames = 0
local req = client:start{
  messages = { { role = "user", content = "Polled from a game loop." } }, stream = true,
  on_done = function(r, er) print(("start/poll-> %q after %d frames"):format(r and r.content or tostring(er), frames)) end,
}
while not req.done do
  frames = frames + 1
  llmchat.poll(0.005)
end
