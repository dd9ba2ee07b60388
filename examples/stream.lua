-- Streaming to the terminal: tokens are written as they arrive, reasoning (when the
-- provider sends it) in grey, then a summary line. Ctrl-C-free cancel: pass a byte limit.
--
--   lua5.4 bin/llmchat-server &                       # the bundled local server, port 8080
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua5.4/?.so;;" \
--     lua5.4 examples/stream.lua "Tell me a story" [max_bytes]
--
-- LLMCHAT_BASE_URL (default http://127.0.0.1:8080/v1), LLMCHAT_API_KEY, LLMCHAT_MODEL.
local llmchat = require("llmchat")

local base_url = os.getenv("LLMCHAT_BASE_URL") or "http://127.0.0.1:8080/v1"
local client = llmchat.client{
  base_url = base_url,
  api_key = os.getenv("LLMCHAT_API_KEY"),
  model = os.getenv("LLMCHAT_MODEL") or "llmchat-echo",
  stream_usage = true,  -- ask for the usage chunk at the end of the stream
}
local is_local = base_url:find("^https?://127%.0%.0%.1[:/]") or base_url:find("^https?://localhost[:/]")

local prompt = arg[1] or ("Streaming writes each piece of the answer as soon as it arrives, "
  .. "so the reader sees the text grow instead of waiting for the whole reply. ✓")
local max_bytes = tonumber(arg[2])

local params = { messages = { { role = "user", content = prompt } } }
if is_local then
  -- the local server echoes the prompt; slow it down so the streaming is visible
  params.mock = { chunk_size = 3, chunk_delay = 0.02, reasoning = "The user wants an echo." }
end

local grey, reset = "\27[90m", "\27[0m"
if not os.getenv("TERM") or os.getenv("NO_COLOR") then grey, reset = "", "" end

local in_reasoning, shown = false, 0
local t0 = llmchat.core.now()
local first_token
for ev in client:stream(params) do
  if ev.kind == "reasoning" then
    if not in_reasoning then io.write(grey, "[thinking] "); in_reasoning = true end
    io.write(ev.delta)
  elseif ev.kind == "content" or ev.kind == "refusal" then
    if in_reasoning then io.write(reset, "\n"); in_reasoning = false end
    first_token = first_token or llmchat.core.now()
    io.write(ev.delta)
    shown = shown + #ev.delta
    if max_bytes and shown >= max_bytes then
      io.write(" …\n[stopped after ", shown, " bytes]\n")
      break  -- leaving the loop cancels the request (the iterator is to-be-closed)
    end
  elseif ev.kind == "done" then
    local res = ev.result
    local u = res.usage
    io.write(reset, ("\n[%s; %s; first token after %.0f ms, done in %.0f ms]\n"):format(
      res.finish_reason or "?",
      u and ("%d prompt + %d completion tokens"):format(u.prompt_tokens or 0, u.completion_tokens or 0)
        or "no usage",
      ((first_token or llmchat.core.now()) - t0) * 1000, (llmchat.core.now() - t0) * 1000))
  elseif ev.kind == "error" then
    io.write(reset, "\n[error: ", tostring(ev.error), "]\n")
    os.exit(1)
  end
  io.flush()
end
