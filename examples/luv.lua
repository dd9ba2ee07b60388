-- llmchat inside a libuv loop (luv: the loop of Neovim and of many Lua hosts). The loop
-- watches llmchat.fd() (readable: call llmchat.poll(0)) and re-arms one timer from
-- llmchat.timeout(); nothing busy-polls, and the loop stays free for other work (here a
-- 100 ms "heartbeat" timer that keeps ticking while the answers stream in).
--
--   lua5.4 bin/llmchat-server &
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 examples/luv.lua
--
-- LLMCHAT_BASE_URL (default http://127.0.0.1:8080/v1), LLMCHAT_API_KEY, LLMCHAT_MODEL.
local uv = require("luv")
local llmchat = require("llmchat")

local base_url = os.getenv("LLMCHAT_BASE_URL") or "http://127.0.0.1:8080/v1"
local client = llmchat.client{
  base_url = base_url,
  api_key = os.getenv("LLMCHAT_API_KEY"),
  model = os.getenv("LLMCHAT_MODEL") or "llmchat-echo",
}
local is_local = base_url:find("^https?://127%.0%.0%.1[:/]") or base_url:find("^https?://localhost[:/]")

-- the glue: ~35 lines a host needs ----------------------------------------------------
-- Three handles: a poll handle on llmchat.fd() (readable: data arrived), a timer for
-- llmchat.timeout() (libcurl's timeouts, retry backoff) and an idle handle for
-- timeout() == 0 (events already queued). Never a 0 ms timer re-armed from its own
-- callback: libuv before 1.48 (Neovim 0.7-0.9) runs such a timer again in the same
-- loop iteration, so a fast stream starved everything else (one iteration took 833 ms).
-- An idle handle runs at most once per iteration, between the loop's other handles.
local polls = 0
local watcher = uv.new_poll(llmchat.fd())
local timer = uv.new_timer()
local idle = uv.new_idle()
local step

local function rearm()
  local t = llmchat.timeout()          -- seconds until llmchat wants a poll, or nil
  if t == 0 then                       -- queued events: poll again next iteration
    timer:stop()
    if not idle:is_active() then idle:start(function() step() end) end
    return
  end
  if idle:is_active() then idle:stop() end
  -- a safety net of 0.5 s, and never under 1 ms (a 0 ms timer is what we avoid)
  if t == nil or t > 0.5 then t = 0.5 end
  timer:start(math.max(1, math.ceil(t * 1000)), 0, function() step() end)
end

function step()
  polls = polls + 1
  local left = llmchat.poll(0)         -- never waits
  if left == 0 then
    watcher:stop(); timer:stop(); idle:stop()   -- nothing in flight: let the loop end
  else
    rearm()
  end
end

local function kick()                  -- after starting requests
  watcher:start("r", function(err) assert(not err, err); step() end)
  step()
end
----------------------------------------------------------------------------------------

local answers = {}
local function ask(i, question)
  local params = {
    messages = { { role = "user", content = question } },
    on_delta = function(text) answers[i] = (answers[i] or "") .. text end,
    on_done = function(res, err)
      print(("[%d] %s"):format(i, res and res.content or ("error: " .. tostring(err))))
    end,
  }
  if is_local then params.mock = { chunk_size = 3, chunk_delay = 0.03 } end
  client:start(params)
end

ask(1, "What is the event loop of Neovim called?")
ask(2, "Name a Lua binding for libuv.")
ask(3, "Why must a host loop never block?")
kick()

local beats = 0
local heartbeat = uv.new_timer()
heartbeat:start(100, 100, function()
  beats = beats + 1
  local progress = {}
  for i = 1, 3 do progress[i] = #(answers[i] or "") end
  print(("heartbeat %2d: bytes so far %s"):format(beats, table.concat(progress, "/")))
  if llmchat.poll(0) == 0 and not watcher:is_active() then heartbeat:stop() end
end)

local t0 = llmchat.core.now()
uv.run("default")
watcher:close(); timer:close(); idle:close(); heartbeat:close()
uv.run("nowait")
print(("done in %.2f s: %d llmchat.poll(0) calls, %d heartbeats"):format(
  llmchat.core.now() - t0, polls, beats))
