-- luacheck: globals vim
-- A headless run of the Neovim example, for the test suite and for measuring a machine:
--
--   nvim --headless -u NONE -c 'luafile examples/neovim/headless.lua'
--
-- It loads the plugin from examples/neovim, runs one scenario through `:LLMChat`, writes
-- what it saw to $LLMCHAT_NVIM_OUT (a Lua chunk: `return { ... }`) and quits.
--
--   LLMCHAT_BASE_URL       the server (default http://127.0.0.1:8080/v1; the bundled
--                          llmchat-server: the scenarios use its mock controls)
--   LLMCHAT_NVIM_SCENARIO  streams: N full-speed streams; a 1 ms repeating timer measures
--                          how late the editor's loop runs while they arrive
--                          burst: the same, but the editor is busy for BLOCK_MS right after
--                          starting them, so their data piles up and arrives at once
--                          cancel: one paced stream, cancelled with the buffer's cancel key
--                          quit: N paced streams, :qa! while they are in flight
--   LLMCHAT_NVIM_STREAMS   N (default 16)
--   LLMCHAT_NVIM_CHUNKS    chunks per full-speed stream (default 20000, 4 bytes each)
--   LLMCHAT_NVIM_BLOCK_MS  (default 300)
--   LLMCHAT_NVIM_LIMIT     seconds before giving up (default 60; exits 2)
--   LLMCHAT_ROOT           the llmchat checkout (default: two directories up from here)
local uv = vim.uv or vim.loop
local api = vim.api

local here = debug.getinfo(1, "S").source:gsub("^@", ""):match("^(.*)/[^/]*$") or "."
local root = os.getenv("LLMCHAT_ROOT") or (here .. "/../..")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/luajit/?.so;" .. package.cpath
vim.opt.runtimepath:prepend(here)
vim.cmd("runtime! plugin/llmchat.lua")

local out_file = os.getenv("LLMCHAT_NVIM_OUT") or "llmchat-nvim.out"
local scenario = os.getenv("LLMCHAT_NVIM_SCENARIO") or "streams"
local nstreams = tonumber(os.getenv("LLMCHAT_NVIM_STREAMS") or "") or 16
local nchunks = tonumber(os.getenv("LLMCHAT_NVIM_CHUNKS") or "") or 20000
local block_ms = tonumber(os.getenv("LLMCHAT_NVIM_BLOCK_MS") or "") or 300
local limit = tonumber(os.getenv("LLMCHAT_NVIM_LIMIT") or "") or 60

local plugin = require("llmchat_nvim")
local base = { base_url = os.getenv("LLMCHAT_BASE_URL") or "http://127.0.0.1:8080/v1",
  api_key = "sk-headless", model = "llmchat-echo", window = "tab" }
local function setup(params)
  local opts = { params = params }
  for k, v in pairs(base) do opts[k] = v end
  plugin.setup(opts)
end

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

-- results --------------------------------------------------------------------------
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

local result = { scenario = scenario, nvim = tostring(vim.version().major) .. "."
  .. vim.version().minor .. "." .. vim.version().patch, libuv = uv.version_string() }

local function finish(code)
  local f = assert(io.open(out_file .. ".tmp", "w"))
  f:write("return ", serialize(result, ""), "\n")
  f:close()
  os.rename(out_file .. ".tmp", out_file)
  vim.cmd(code == 0 and "qa!" or ("cquit " .. code))
end

local function summary(samples)
  local s = {}
  for i, x in ipairs(samples) do s[i] = x end
  table.sort(s)
  local function q(p) return s[math.max(1, math.ceil(p * #s))] or 0 end
  return { n = #s, p50 = q(0.5), p99 = q(0.99), max = s[#s] or 0 }
end

-- a 1 ms repeating timer: how late does the editor's loop run it?
local lateness, ticker, last_tick = {}, nil, nil
local function start_ticker()
  ticker = uv.new_timer()
  last_tick = uv.hrtime()
  ticker:start(1, 1, function()
    local t = uv.hrtime()
    lateness[#lateness + 1] = math.max(0, (t - last_tick) / 1e6 - 1)
    last_tick = t
  end)
end

local guard = uv.new_timer()
guard:start(math.floor(limit * 1000), 0, vim.schedule_wrap(function()
  result.timed_out = true
  plugin.cancel_all()
  finish(2)
end))

-- every `ms`, in the editor's main context, until check() returns true
local function every(ms, check)
  local t = uv.new_timer()
  t:start(ms, ms, vim.schedule_wrap(function()
    if t:is_active() and check() then t:stop(); t:close() end
  end))
end

local bufs = {}
local function chat(prompt)
  vim.cmd("LLMChat " .. prompt)
  bufs[#bufs + 1] = api.nvim_get_current_buf()
  return bufs[#bufs]
end

local function replies()
  local texts, statuses = {}, {}
  for i, b in ipairs(bufs) do texts[i], statuses[i] = plugin.reply(b) end
  return texts, statuses
end

-- scenarios --------------------------------------------------------------------------
if scenario == "streams" or scenario == "burst" then
  setup{ mock = { long_stream = nchunks, chunk_size = 4 } }
  result.streams, result.chunks = nstreams, nchunks
  local t0 = uv.hrtime()
  plugin.stats.record = true
  plugin.stats.cpu_clock = thread_cpu_clock()
  for i = 1, nstreams do chat("full-speed stream " .. i) end
  if scenario == "streams" then start_ticker() end
  if scenario == "burst" then
    -- the editor is busy (a slow command, a long redraw): the streams' data piles up
    local until_t = uv.hrtime() + block_ms * 1e6
    while uv.hrtime() < until_t do end
    result.block_ms = block_ms
    start_ticker()
  end
  every(20, function()
    if plugin.active() > 0 then return false end
    vim.schedule(function()   -- after the flush that on_done scheduled
      ticker:stop()
      result.seconds = (uv.hrtime() - t0) / 1e9
      result.texts, result.statuses = replies()
      result.lateness_ms = summary(lateness)
      result.poll_ms = summary(plugin.stats.poll_time)
      result.poll_cpu_ms = summary(plugin.stats.poll_cpu)
      result.flush_ms = summary(plugin.stats.flush_time)
      result.lateness_all = lateness
      result.polls = plugin.stats.polls
      local ok_stats, engine_stats = pcall(function() return require("llmchat").core.stats() end)
      if ok_stats then result.engine = engine_stats end
      finish(0)
    end)
    return true
  end)
elseif scenario == "cancel" then
  local prompt = ("cancel me please "):rep(30)   -- 510 bytes: 128 chunks, ~4 s
  setup{ mock = { chunk_size = 4, chunk_delay = 0.03 } }
  result.prompt = prompt
  local buf = chat(prompt)
  local key = api.nvim_replace_termcodes("<C-c>", true, false, true)
  local cancelled_at
  every(10, function()
    local text, status = plugin.reply(buf)
    if not result.cancel_sent and #text >= 12 then
      result.cancel_sent = true
      result.text_before_cancel = text
      api.nvim_set_current_buf(buf)
      api.nvim_feedkeys(key, "x", false)   -- the buffer's cancel key, as a user presses it
      return false
    end
    if result.cancel_sent and status ~= "streaming" and not cancelled_at then
      cancelled_at = uv.hrtime()
      result.text_at_done, result.status = text, status
      return false
    end
    if cancelled_at and uv.hrtime() - cancelled_at > 500e6 then
      result.text_later = text          -- nothing may arrive after the cancel
      result.active = plugin.active()
      finish(0)
      return true
    end
    return false
  end)
elseif scenario == "quit" then
  setup{ mock = { chunk_size = 4, chunk_delay = 0.05 } }
  for i = 1, nstreams do chat(("quit while streaming %d "):format(i) .. ("."):rep(200)) end
  every(10, function()
    local text = plugin.reply(bufs[1])
    if #text == 0 then return false end
    result.in_flight = plugin.active()
    local f = assert(io.open(out_file, "w"))   -- written first: :qa! is the last word
    f:write("return ", serialize(result, ""), "\n")
    f:close()
    vim.cmd("qa!")
    return true
  end)
else
  result.error = "unknown LLMCHAT_NVIM_SCENARIO " .. scenario
  finish(3)
end
