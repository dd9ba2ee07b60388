-- llmchat on the benchmark's workloads (bench/run drives it), through the public API only.
--   lua5.4 bench/llmchat_bench.lua seq       BASE_URL N              blocking client:chat
--   lua5.4 bench/llmchat_bench.lua tools     BASE_URL N              streamed tool calls
--   lua5.4 bench/llmchat_bench.lua long      BASE_URL K              stream, on_delta callback
--   lua5.4 bench/llmchat_bench.lua long_iter BASE_URL K              for ev in client:stream{}
--   lua5.4 bench/llmchat_bench.lua conc      BASE_URL INFLIGHT TOTAL client:start + poll(0)
--   lua5.4 bench/llmchat_bench.lua paced     BASE_URL N              N slow streams at once
-- Run from the repository root with
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua5.4/?.so;bench/out/?.so;;"
-- Prints one line of key=value pairs, as bench/floor.c does; "na=<reason>" when the
-- module or the API a workload needs is not there (the table then shows n/a).

local mode, base_url = arg[1], arg[2]
local a1, a2 = tonumber(arg[3]), tonumber(arg[4])

local function na(reason)
  print("na=" .. tostring(reason):gsub("%s+", "_"))
  os.exit(0)
end

local function fail(why)
  io.stderr:write("llmchat bench: ", tostring(why), "\n")
  os.exit(1)
end

-- A monotonic clock with sub-microsecond resolution: bench/benchclock.c. Fallbacks keep
-- the script usable without it (coarser).
local clock_ok, bc = pcall(require, "benchclock")
if not clock_ok then
  local sok, socket = pcall(require, "socket")
  bc = {
    now = sok and socket.gettime or os.time,
    cpu = os.clock,
    rss = function()
      local f = io.open("/proc/self/status")
      local s = f and f:read("a") or ""
      if f then f:close() end
      return tonumber(s:match("VmHWM:%s*(%d+)")) or 0
    end,
  }
end
local now, cpu, rss = bc.now, bc.cpu, bc.rss

local ok, llmchat = pcall(require, "llmchat")
if not ok then na("llmchat not loadable: " .. tostring(llmchat):match("[^\n]*")) end
if type(llmchat.client) ~= "function" then na("llmchat.client missing") end

local cjson_ok, cjson = pcall(require, "cjson")

local client = llmchat.client{ base_url = base_url, api_key = "sk-bench-not-a-key",
                               model = "gpt-4o", max_retries = 0 }
local messages = {
  { role = "system", content = "You are terse." },
  { role = "user", content = "Tell me a story about a dragon." },
}
local stream_options = { include_usage = true }

local function need(cond, what)
  if not cond then na(what .. " missing") end
end

local function fmt(v) return string.format(math.type(v) == "integer" and "%d" or "%.3f", v) end
local function report(t, order)
  local out = {}
  for _, k in ipairs(order) do out[#out + 1] = k .. "=" .. fmt(t[k]) end
  print(table.concat(out, " "))
end

local function check_text(res, err)
  if not res then fail(err) end
  if res.finish_reason ~= "stop" or type(res.content) ~= "string" or #res.content == 0 then
    fail("stream not assembled: finish_reason=" .. tostring(res.finish_reason))
  end
  return res
end

local workloads = {}

function workloads.seq(n)
  n = n or 1000
  need(client.chat, "client:chat")
  local req = { messages = messages }
  check_text(client:chat(req))  -- warm-up: opens the connection
  local t0, c0 = now(), cpu()
  for _ = 1, n do
    local res, err = client:chat(req)
    if not res or not res.content then fail(err or "no content") end
  end
  local wall, c = now() - t0, cpu() - c0
  report({ requests = n, us_wall = wall / n * 1e6, us_cpu = c / n * 1e6, rss_kb = rss() },
         { "requests", "us_wall", "us_cpu", "rss_kb" })
end

function workloads.tools(n)
  n = n or 500
  need(client.chat, "client:chat")
  local req = { messages = messages, stream = true, stream_options = stream_options }
  local function one()
    local res, err = client:chat(req)
    if not res then fail(err) end
    local calls = res.message and res.message.tool_calls
    if not calls or #calls ~= 2 then fail("expected two tool calls") end
    if cjson_ok then
      for _, c in ipairs(calls) do cjson.decode(c["function"].arguments) end
    end
  end
  one()
  local t0, c0 = now(), cpu()
  for _ = 1, n do one() end
  local wall, c = now() - t0, cpu() - c0
  report({ requests = n, us_wall = wall / n * 1e6, us_cpu = c / n * 1e6, rss_kb = rss() },
         { "requests", "us_wall", "us_cpu", "rss_kb" })
end

-- the long body has 20,000 data events: a role chunk, 19,997 content chunks, the
-- finish chunk and the usage chunk
local LONG_CHUNKS = 20000

function workloads.long(k)
  k = k or 3
  need(client.chat, "client:chat")
  local deltas = 0
  local req = { messages = messages, stream = true, stream_options = stream_options,
                on_delta = function() deltas = deltas + 1 end }
  check_text(client:chat(req))
  deltas = 0
  local t0, c0 = now(), cpu()
  for _ = 1, k do check_text(client:chat(req)) end
  local wall, c = now() - t0, cpu() - c0
  if deltas < (LONG_CHUNKS - 3) * k then fail("only " .. deltas .. " deltas") end
  local chunks = LONG_CHUNKS * k
  report({ streams = k, chunks = chunks, chunks_per_s = chunks / wall,
           us_cpu_per_chunk = c / chunks * 1e6, rss_kb = rss() },
         { "streams", "chunks", "chunks_per_s", "us_cpu_per_chunk", "rss_kb" })
end

function workloads.long_iter(k)
  k = k or 3
  need(client.stream, "client:stream")
  local req = { messages = messages, stream_options = stream_options }
  local function one()
    local n = 0
    for ev in client:stream(req) do
      if ev.delta then n = n + 1 end
    end
    if n < LONG_CHUNKS - 3 then fail("only " .. n .. " deltas from the iterator") end
  end
  one()
  local t0, c0 = now(), cpu()
  for _ = 1, k do one() end
  local wall, c = now() - t0, cpu() - c0
  local chunks = LONG_CHUNKS * k
  report({ streams = k, chunks = chunks, chunks_per_s = chunks / wall,
           us_cpu_per_chunk = c / chunks * 1e6, rss_kb = rss() },
         { "streams", "chunks", "chunks_per_s", "us_cpu_per_chunk", "rss_kb" })
end

-- Concurrent streams the way a game drives them: start N, then call llmchat.poll(0)
-- once per "frame" (back to back here), starting a new stream whenever one finishes.
-- Each poll(0) is timed; the worst and p99 come from frames that began with all N
-- streams in flight.
local STREAM60_CHUNKS = 60

function workloads.conc(inflight, total)
  inflight, total = inflight or 16, total or 1024
  need(client.start, "client:start")
  need(llmchat.poll, "llmchat.poll")
  local started, finished, deltas = 0, 0, 0
  local failure
  local function on_delta() deltas = deltas + 1 end
  local function on_done(res, err)
    if not res then failure = failure or err
    elseif res.finish_reason ~= "stop" then failure = failure or "unfinished stream" end
    finished = finished + 1
  end
  local req = { messages = messages, stream = true, stream_options = stream_options,
                on_delta = on_delta, on_done = on_done }
  local times, nt, worst = {}, 0, 0
  local t0, c0 = now(), cpu()
  while started < inflight and started < total do
    started = started + 1
    client:start(req)
  end
  while finished < total do
    local full = started - finished == inflight
    local f0 = now()
    llmchat.poll(0)
    local dt = now() - f0
    if full then
      nt = nt + 1
      times[nt] = dt
      if dt > worst then worst = dt end
    end
    if failure then fail(failure) end
    while started - finished < inflight and started < total do
      started = started + 1
      client:start(req)
    end
  end
  local wall, c = now() - t0, cpu() - c0
  if deltas < (STREAM60_CHUNKS - 3) * total then fail("only " .. deltas .. " deltas") end
  table.sort(times)
  local p99 = nt > 0 and times[math.floor((nt - 1) * 0.99) + 1] or 0
  local chunks = STREAM60_CHUNKS * total
  report({ inflight = inflight, streams = total, chunks = chunks, chunks_per_s = chunks / wall,
           us_cpu_per_chunk = c / chunks * 1e6, polls = nt, poll_worst_us = worst * 1e6,
           poll_p99_us = p99 * 1e6, rss_kb = rss() },
         { "inflight", "streams", "chunks", "chunks_per_s", "us_cpu_per_chunk", "polls",
           "poll_worst_us", "poll_p99_us", "rss_kb" })
end

-- 1,000 slow streams at once: the host has nothing else to do, so it waits inside
-- llmchat.poll(timeout) (the engine's epoll) rather than spinning; what counts is the CPU
-- spent per chunk, against the floor's multi-socket + epoll client.
function workloads.paced(n)
  n = n or 1000
  need(client.start, "client:start")
  need(llmchat.poll, "llmchat.poll")
  local finished, deltas = 0, 0
  local failure
  local req = { messages = messages, stream = true, stream_options = stream_options,
                on_delta = function() deltas = deltas + 1 end,
                on_done = function(res, err)
                  if not res then failure = failure or err end
                  finished = finished + 1
                end }
  local t0, c0 = now(), cpu()
  for _ = 1, n do client:start(req) end
  while finished < n do
    llmchat.poll(1)
    if failure then fail(failure) end
  end
  local wall, c = now() - t0, cpu() - c0
  if deltas < (STREAM60_CHUNKS - 3) * n then fail("only " .. deltas .. " deltas") end
  local chunks = STREAM60_CHUNKS * n
  report({ streams = n, chunks = chunks, wall_s = wall, cpu_s = c,
           us_cpu_per_chunk = c / chunks * 1e6, rss_kb = rss() },
         { "streams", "chunks", "wall_s", "cpu_s", "us_cpu_per_chunk", "rss_kb" })
end

local run = workloads[mode or ""]
if not run then fail("unknown mode " .. tostring(mode)) end
local rok, rerr = pcall(run, a1, a2)
if not rok then
  -- an API that is there but not finished yet raises: a row of n/a, not a failed bench
  na("error: " .. tostring(rerr):match("[^\n]*"))
end
