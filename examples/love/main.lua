-- luacheck: globals love
-- The llmchat village: a LÖVE game whose villagers stream their lines while the game keeps
-- rendering. Each villager's line is one client:start{ stream = true }; love.update calls
-- llmchat.poll(0) once per frame, which never waits and fires the on_delta callbacks for
-- whatever has arrived.
--
--   lua5.4 bin/llmchat-server &            # or any OpenAI-compatible server
--   make LUA=luajit                        # LÖVE runs LuaJIT: the module for LuaJIT
--   love examples/love
--
-- Arrow keys walk; walking away from a villager who is talking cancels the line (as does x
-- near them); space asks the nearest villager again; escape quits.
--
--   LLMCHAT_BASE_URL   the server (default http://127.0.0.1:8080/v1)
--   LLMCHAT_API_KEY, LLMCHAT_MODEL
--   LLMCHAT_ROOT       where llmchat is (default: two directories up from this game)
-- For the test suite and for measuring (headless: xvfb-run -a love examples/love):
--   LLMCHAT_LOVE_OUT        write what happened to this file (`return { ... }`) at quit,
--                           and quit once every line is done
--   LLMCHAT_LOVE_STREAMS    villagers (default 6)
--   LLMCHAT_LOVE_LONG       K: every line is a full-speed stream of K chunks (bundled server)
--   LLMCHAT_LOVE_BLOCK_MS   one slow frame of this many ms right after the lines start
--   LLMCHAT_LOVE_CANCEL     i: villager i's line is cancelled once 8 bytes have arrived
--   LLMCHAT_LOVE_QUIT_AFTER seconds: quit then, lines in flight or not
--   LLMCHAT_LOVE_QUIT_PLAIN 1: love.quit leaves lines in flight to the library's own cleanup
--   LLMCHAT_LOVE_FPS        frame cap when vsync is not in effect (default 60; 0: none)
local function env(name) local v = os.getenv(name); if v ~= "" then return v end end

local root = env("LLMCHAT_ROOT") or (love.filesystem.getSource() .. "/../..")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/luajit/?.so;" .. package.cpath
local llmchat = require("llmchat")

local base_url = env("LLMCHAT_BASE_URL") or "http://127.0.0.1:8080/v1"
local is_local = base_url:find("^https?://127%.0%.0%.1[:/]") or base_url:find("^https?://localhost[:/]")
local out_file = env("LLMCHAT_LOVE_OUT")
local nvillagers = tonumber(env("LLMCHAT_LOVE_STREAMS") or "") or 6
local long = tonumber(env("LLMCHAT_LOVE_LONG") or "")
local block_ms = tonumber(env("LLMCHAT_LOVE_BLOCK_MS") or "")
local cancel_one = tonumber(env("LLMCHAT_LOVE_CANCEL") or "")
local quit_after = tonumber(env("LLMCHAT_LOVE_QUIT_AFTER") or "")
local quit_plain = env("LLMCHAT_LOVE_QUIT_PLAIN") == "1"
local fps = tonumber(env("LLMCHAT_LOVE_FPS") or "") or 60

local client = llmchat.client{
  base_url = base_url,
  api_key = env("LLMCHAT_API_KEY") or (is_local and "sk-local") or nil,
  model = env("LLMCHAT_MODEL") or "llmchat-echo",
}

local NAMES = { "Ada", "Bram", "Cora", "Dov", "Elke", "Finn", "Gala", "Hugo",
  "Iris", "Jory", "Kaia", "Lars", "Mira", "Nils", "Odo", "Pia" }
local TALK_RANGE = 150

local villagers = {}
local player = { x = 480, y = 600 }
local now = love.timer.getTime
local t_start   -- when the villagers were asked

-- this thread's CPU time (LuaJIT's FFI, Linux): a poll's own cost, without the time the
-- kernel gave other processes meanwhile (a loaded machine inflates wall-clock figures)
local function thread_cpu_clock()
  local ok, ffi = pcall(require, "ffi")
  if not ok or ffi.os ~= "Linux" then return nil end
  pcall(ffi.cdef, "typedef struct { long tv_sec; long tv_nsec; } llmchat_timespec;"
    .. " int clock_gettime(int clk, llmchat_timespec *tp);")
  local ts = ffi.new("llmchat_timespec")
  local CLOCK_THREAD_CPUTIME_ID = 3
  return function()
    ffi.C.clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end
end

-- measurements (printed at quit and written to LLMCHAT_LOVE_OUT)
local cpu_clock = thread_cpu_clock()
local poll_cpu_ms = {}
local frame_ms, poll_ms, work_ms = {}, {}, {}
local last_update, frame_began, next_frame
local frames, WARMUP = 0, 5
local skip_interval = false

local function question(v)
  return ("Good day, %s! What news from the north road? (villager %d)"):format(v.name, v.index)
end

local function ask(v)
  if v.req and not v.req.done then v.req:cancel() end
  v.pieces, v.bytes, v.tail, v.state, v.asked_at = {}, 0, "", "thinking", now()
  local params = {
    messages = {
      { role = "system", content = "You are a villager in a fantasy game. One sentence." },
      { role = "user", content = question(v) },
    },
    stream = true,
    on_delta = function(text, ev)
      if ev.kind ~= "content" then return end
      v.pieces[#v.pieces + 1] = text
      v.bytes = v.bytes + #text
      v.tail = (v.tail .. text):sub(-180)   -- the speech bubble shows the end of the line
      v.state = "talking"
    end,
    on_done = function(_, err)
      if err then
        v.state = err.kind == "cancelled" and "cancelled" or "error"
        v.error = tostring(err)
      else
        v.state = "done"
      end
      v.done_at = now()
    end,
  }
  if long and is_local then
    params.mock = { long_stream = long, chunk_size = 4 }
  elseif is_local then
    params.mock = { chunk_size = 2, chunk_delay = 0.01 + 0.004 * v.index, delay = 0.03 * v.index }
  end
  v.req = client:start(params)   -- returns at once
end

local function cancel(v)
  if v.req and not v.req.done then v.req:cancel() end
end

local function nearest()
  local best, bd
  for _, v in ipairs(villagers) do
    local d = math.sqrt((v.x - player.x) ^ 2 + (v.y - player.y) ^ 2)
    if not bd or d < bd then best, bd = v, d end
  end
  return best, bd
end

function love.load()
  love.graphics.setBackgroundColor(0.12, 0.16, 0.12)
  local cols = 4
  for i = 1, nvillagers do
    local v = { index = i, name = NAMES[(i - 1) % #NAMES + 1],
      x = 120 + ((i - 1) % cols) * 240, y = 90 + math.floor((i - 1) / cols) * 130,
      pieces = {}, bytes = 0, tail = "", state = "waiting" }
    villagers[i] = v
  end
  next_frame = now()
end

-- the villagers speak once the first frames (GL context, font glyphs) are behind us
local function start_lines()
  t_start = now()
  for _, v in ipairs(villagers) do ask(v) end
  if block_ms then   -- a slow frame (a level load, a hitch): the lines' data piles up
    local until_t = now() + block_ms / 1000
    while now() < until_t do end
    skip_interval = true   -- that frame is the hitch itself, not a frame llmchat slowed
  end
end

local function all_done()
  for _, v in ipairs(villagers) do
    if v.req and not v.req.done then return false end
  end
  return true
end

function love.update(dt)
  -- without vsync (Xvfb, or a driver that ignores it) cap the frame rate instead of spinning
  if fps > 0 then
    local t = now()
    if t < next_frame then love.timer.sleep(next_frame - t) end
    next_frame = math.max(next_frame + 1 / fps, now())
  end
  local t0 = now()
  frames = frames + 1
  if frames == WARMUP then start_lines() end
  -- the first frames set up the GL context and the font's glyphs: not llmchat's doing
  if last_update and frames > WARMUP and not skip_interval then
    frame_ms[#frame_ms + 1] = (t0 - last_update) * 1000
  end
  if frames > WARMUP then skip_interval = false end
  last_update, frame_began = t0, t0

  local p0, c0 = now(), cpu_clock and cpu_clock()
  llmchat.poll(0)                 -- once per frame, never waits
  if frames > WARMUP then poll_ms[#poll_ms + 1] = (now() - p0) * 1000 end
  if frames > WARMUP and c0 then poll_cpu_ms[#poll_cpu_ms + 1] = (cpu_clock() - c0) * 1000 end

  local speed = 220 * dt
  if love.keyboard.isDown("left") then player.x = player.x - speed end
  if love.keyboard.isDown("right") then player.x = player.x + speed end
  if love.keyboard.isDown("up") then player.y = player.y - speed end
  if love.keyboard.isDown("down") then player.y = player.y + speed end
  if love.keyboard.isDown("left", "right", "up", "down") then
    -- walking away from a villager who is talking ends the conversation
    for _, v in ipairs(villagers) do
      local d = math.sqrt((v.x - player.x) ^ 2 + (v.y - player.y) ^ 2)
      if v.state == "talking" and v.heard and d > TALK_RANGE * 2 then cancel(v) end
      if d < TALK_RANGE then v.heard = true end
    end
  end

  if cancel_one and villagers[cancel_one] and villagers[cancel_one].bytes >= 8 and not villagers[cancel_one].cancel_sent then
    villagers[cancel_one].cancel_sent = true
    cancel(villagers[cancel_one])
  end
  if not t_start then return end
  if quit_after and now() - t_start >= quit_after then love.event.quit(0) end
  if out_file and all_done() then love.event.quit(0) end
end

function love.keypressed(key)
  if key == "escape" then love.event.quit(0)
  elseif key == "space" then local v, d = nearest(); if v and d < TALK_RANGE then ask(v) end
  elseif key == "x" then local v, d = nearest(); if v and d < TALK_RANGE then cancel(v) end
  end
end

local STATE_COLOR = { thinking = { 0.8, 0.8, 0.3 }, talking = { 0.4, 0.9, 0.4 },
  done = { 0.6, 0.7, 1.0 }, cancelled = { 0.7, 0.5, 0.5 }, error = { 1.0, 0.3, 0.3 } }

function love.draw()
  local g = love.graphics
  for _, v in ipairs(villagers) do
    g.setColor(STATE_COLOR[v.state] or { 1, 1, 1 })
    g.circle("fill", v.x, v.y, 14)
    g.setColor(1, 1, 1)
    g.print(("%s  %s  %d B"):format(v.name, v.state, v.bytes), v.x - 100, v.y + 18)
    g.setColor(0.95, 0.95, 0.85)
    g.printf(v.tail, v.x - 110, v.y - 75, 220)
  end
  g.setColor(0.9, 0.6, 0.2)
  g.rectangle("fill", player.x - 10, player.y - 10, 20, 20)
  g.setColor(1, 1, 1)
  g.print(("%d fps   poll(0) %.2f ms   arrows walk, space ask, x cancel, esc quit"):format(
    love.timer.getFPS(), poll_ms[#poll_ms] or 0), 10, 10)
  if frame_began and frames > WARMUP then work_ms[#work_ms + 1] = (now() - frame_began) * 1000 end
end

-- A headless run must not wait on LÖVE's error screen: report and exit non-zero.
if out_file then
  function love.errorhandler(msg)
    io.stderr:write("llmchat village: error: ", tostring(msg), "\n", debug.traceback(), "\n")
    io.stderr:flush()
    os.exit(3)
  end
end

-- results ----------------------------------------------------------------------------
local function summary(samples)
  local s = {}
  for i, x in ipairs(samples) do s[i] = x end
  table.sort(s)
  local function q(p) return s[math.max(1, math.ceil(p * #s))] or 0 end
  return { n = #s, p50 = q(0.5), p99 = q(0.99), max = s[#s] or 0 }
end

local function serialize(v, indent)
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  local pad = indent .. "  "
  local parts = {}
  for k, x in pairs(v) do
    local key = type(k) == "string" and ("[%q]"):format(k) or ("[" .. k .. "]")
    parts[#parts + 1] = pad .. key .. " = " .. serialize(x, pad)
  end
  table.sort(parts)
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

function love.quit()
  local in_flight = 0
  for _, v in ipairs(villagers) do
    if v.req and not v.req.done then
      in_flight = in_flight + 1
      if not quit_plain then cancel(v) end
    end
  end
  if not quit_plain then llmchat.poll(0) end   -- the cancellations finish before the exit
  local r = { love = ("%d.%d"):format(love.getVersion()), seconds = now() - (t_start or now()),
    in_flight_at_quit = in_flight, frame_ms = summary(frame_ms), poll_ms = summary(poll_ms),
    poll_cpu_ms = summary(poll_cpu_ms),
    work_ms = summary(work_ms), frames = frames, warmup_frames = WARMUP, villagers = {} }
  for i, v in ipairs(villagers) do
    r.villagers[i] = { name = v.name, question = question(v), state = v.state,
      text = table.concat(v.pieces), cancel_sent = v.cancel_sent or false }
  end
  print(("llmchat village: %d frames in %.2f s; frame ms p50 %.2f p99 %.2f max %.2f; "
    .. "poll(0) ms p50 %.3f p99 %.3f max %.3f"):format(r.frames, r.seconds,
    r.frame_ms.p50, r.frame_ms.p99, r.frame_ms.max, r.poll_ms.p50, r.poll_ms.p99, r.poll_ms.max))
  if out_file then
    local f = assert(io.open(out_file .. ".tmp", "w"))
    f:write("return ", serialize(r, ""), "\n")
    f:close()
    os.rename(out_file .. ".tmp", out_file)
  end
  return false
end
