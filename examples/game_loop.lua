-- A game loop that never blocks: a fixed 60 Hz timestep "renders" frames while several
-- chat streams run in the background (client:start + llmchat.poll(0) once per frame).
-- At the end it prints the worst time a frame spent in llmchat.poll(0).
--
--   lua5.4 bin/llmchat-server &
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 examples/game_loop.lua [streams]
--
-- LLMCHAT_BASE_URL (default http://127.0.0.1:8080/v1), LLMCHAT_API_KEY, LLMCHAT_MODEL.
local llmchat = require("llmchat")
local now = llmchat.core.now

local base_url = os.getenv("LLMCHAT_BASE_URL") or "http://127.0.0.1:8080/v1"
local client = llmchat.client{
  base_url = base_url,
  api_key = os.getenv("LLMCHAT_API_KEY"),
  model = os.getenv("LLMCHAT_MODEL") or "llmchat-echo",
}
local is_local = base_url:find("^https?://127%.0%.0%.1[:/]") or base_url:find("^https?://localhost[:/]")

local nstreams = math.max(1, math.min(16, tonumber(arg[1]) or 8))
local DT = 1 / 60

-- sleep until the next frame without spinning (luasocket when available)
local ok_socket, socket = pcall(require, "socket")
local function sleep_until(t)
  local left = t - now()
  if left <= 0 then return end
  if ok_socket then socket.sleep(left) else while now() < t do end end
end

-- the NPCs: each one streams its line of dialogue
local npcs = {}
for i = 1, nstreams do
  local npc = { name = ("npc%02d"):format(i), text = {}, bytes = 0, state = "thinking" }
  local params = {
    messages = {
      { role = "system", content = "You are a villager in a fantasy game. One sentence." },
      { role = "user", content = ("Greetings, villager %d! What news from the north road?"):format(i) },
    },
    stream = true,
    on_delta = function(text, ev)
      if ev.kind == "content" then
        npc.text[#npc.text + 1] = text
        npc.bytes = npc.bytes + #text
        npc.state = "talking"
      end
    end,
    on_done = function(res, err)
      npc.state = res and "done" or ("error: " .. tostring(err))
      npc.finished_at = now()
    end,
  }
  if is_local then params.mock = { chunk_size = 2, chunk_delay = 0.01 + 0.005 * i, delay = 0.05 * i } end
  npc.req = client:start(params)  -- returns at once
  npcs[i] = npc
end

local frame, worst, total_poll, slow_frames = 0, 0, 0, 0
local t_start = now()
local next_frame = t_start
local player_x = 0

local function render()
  -- a fake frame: move the player, and once in a while show the dialogue progress
  player_x = (player_x + 1) % 80
  if frame % 30 == 0 then
    local parts = {}
    for _, npc in ipairs(npcs) do
      parts[#parts + 1] = npc.state == "done" and "✓" or npc.state == "talking" and tostring(npc.bytes)
        or npc.state == "thinking" and "…" or "✗"
    end
    print(("frame %4d  t=%5.2fs  [%s]"):format(frame, now() - t_start, table.concat(parts, " ")))
  end
end

while true do
  frame = frame + 1
  local p0 = now()
  local left = llmchat.poll(0)   -- never waits: fires callbacks for whatever has arrived
  local p = now() - p0
  total_poll = total_poll + p
  if p > worst then worst = p end
  render()
  if left == 0 then break end
  if now() - t_start > 30 then print("giving up after 30 s"); break end
  next_frame = next_frame + DT
  if now() > next_frame + DT then slow_frames = slow_frames + 1; next_frame = now() end
  sleep_until(next_frame)
end

print()
for _, npc in ipairs(npcs) do
  print(("%s (%s, %.2fs): %s"):format(npc.name, npc.state, (npc.finished_at or now()) - t_start,
    table.concat(npc.text)))
end
print(("%d frames in %.2f s with %d streams; llmchat.poll(0): worst %.3f ms, mean %.3f ms; %d late frames")
  :format(frame, now() - t_start, nstreams, worst * 1000, total_poll / frame * 1000, slow_frames))
