-- A batch job: many prompts, N in flight at once, retries and rate limits respected,
-- results in input order. client:map never loses an item: each result is either an answer
-- or an error table (with .kind).
--
--   lua5.4 bin/llmchat-server &
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 examples/batch.lua [count] [concurrency]
--
-- LLMCHAT_BASE_URL (default http://127.0.0.1:8080/v1), LLMCHAT_API_KEY, LLMCHAT_MODEL.
local llmchat = require("llmchat")

local base_url = os.getenv("LLMCHAT_BASE_URL") or "http://127.0.0.1:8080/v1"
local client = llmchat.client{
  base_url = base_url,
  api_key = os.getenv("LLMCHAT_API_KEY"),
  model = os.getenv("LLMCHAT_MODEL") or "llmchat-echo",
  max_retries = 3,
}
local is_local = base_url:find("^https?://127%.0%.0%.1[:/]") or base_url:find("^https?://localhost[:/]")

local count = tonumber(arg[1]) or 40
local concurrency = tonumber(arg[2]) or 4
local run_id = ("%d-%d"):format(os.time(), math.random(1e6))

local list = {}
for i = 1, count do
  local item = {
    messages = {
      { role = "system", content = "Translate to French. Answer with the translation only." },
      { role = "user", content = ("Sentence number %d."):format(i) },
    },
    max_tokens = 64,
  }
  if is_local then
    -- against the local server: a little latency, and every 7th item is rate limited
    -- once (HTTP 429 with retry-after-ms), to show the retry and the batch slow-down
    item.mock = { delay = 0.02 }
    if i % 7 == 0 then
      item.mock = { key = "batch-" .. run_id .. "-" .. i, fail_times = 1, status = 429,
        headers = { ["retry-after-ms"] = "100" } }
    end
  end
  list[i] = item
end

local t0 = llmchat.core.now()
local finished = 0
local results = client:map(list, {
  concurrency = concurrency,
  on_result = function(i, res, err)
    finished = finished + 1
    io.write(("\r%3d/%d done (last: #%d %s)   "):format(finished, count, i, res and "ok" or err.kind))
    io.flush()
  end,
})
local dt = llmchat.core.now() - t0
io.write("\n")

local ok, failed, tokens = 0, 0, 0
for i, r in ipairs(results) do
  if r.kind then
    failed = failed + 1
    print(("#%-3d error %s: %s"):format(i, r.kind, tostring(r)))
  else
    ok = ok + 1
    tokens = tokens + (r.usage and r.usage.total_tokens or 0)
    if i <= 3 or i == count then print(("#%-3d %s"):format(i, (r.content or ""):gsub("%s+", " "))) end
  end
end
print(("%d answers, %d errors, %d tokens, %.2f s (%.1f requests/s, concurrency %d)"):format(
  ok, failed, tokens, dt, count / dt, concurrency))
os.exit(failed == 0 and 0 or 1)
