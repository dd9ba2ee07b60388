-- Turns bench/out/raw.txt (lines "CLIENT WORKLOAD RUN key=value ...") into the markdown
-- table of `make bench`: medians over the runs, each figure's cost as a ratio to the C
-- floor of the same run, llmchat's lead over the Node SDK, and the issue's targets.
-- Usage: lua5.4 bench/report.lua bench/out/raw.txt > bench/out/latest.md
-- (bench/run sets BENCH_* environment variables for the header.)
--        lua5.4 bench/report.lua --update-readme bench/README.md bench/out/latest.md
-- copies a table into the README between its latest-table markers.

if arg[1] == "--update-readme" then
  local readme, tablefile = arg[2], arg[3]
  local f = assert(io.open(readme))
  local s = f:read("a")
  f:close()
  f = assert(io.open(tablefile))
  local t = f:read("a")
  f:close()
  t = t:gsub("^# [^\n]*\n\n", ""):gsub("\n*$", "\n")  -- the README has its own heading
  local _, j = s:find("<!-- latest-table:begin -->\n", 1, true)
  local k = s:find("<!-- latest-table:end -->", 1, true)
  if not j or not k then
    io.stderr:write("report: the README's latest-table markers are missing\n")
    os.exit(1)
  end
  f = assert(io.open(readme, "w"))
  f:write(s:sub(1, j), t, s:sub(k))
  f:close()
  os.exit(0)
end

local raw = arg[1] or "bench/out/raw.txt"
local env = function(k, d) local v = os.getenv(k); return (v and v ~= "") and v or d end

-- data[client][workload] = { runs = { [run] = {key=value} }, notes = {...} }
local data = {}
for line in io.lines(raw) do
  local client, workload, run, rest = line:match("^(%S+) (%S+) (%d+) ?(.*)$")
  if client then
    data[client] = data[client] or {}
    local w = data[client][workload] or { runs = {}, notes = {} }
    data[client][workload] = w
    local kv = {}
    for k, v in rest:gmatch("([%w_]+)=(%S+)") do kv[k] = tonumber(v) or v end
    if kv.na or kv.error then
      w.notes[#w.notes + 1] = (kv.na and "n/a: " .. kv.na or "failed: " .. kv.error):gsub("_", " ")
    else
      w.runs[tonumber(run)] = kv
    end
  end
end

local LONG_BYTES_PER_CHUNK = (tonumber(env("BENCH_LONG_BYTES", "0")) or 0) / 20000

local function value(kv, key)
  if key == "mb_per_s" then
    return kv.chunks_per_s and LONG_BYTES_PER_CHUNK > 0
      and kv.chunks_per_s * LONG_BYTES_PER_CHUNK / 1e6 or nil
  elseif key == "rss_mb" then
    return kv.rss_kb and kv.rss_kb / 1024
  elseif key == "cold_rss_mb" then
    return kv.cold_rss_kb and kv.cold_rss_kb / 1024
  end
  return tonumber(kv[key])
end

local function median(t)
  if #t == 0 then return nil end
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local function series(client, workload, key)
  local w = data[client] and data[client][workload]
  local out = {}
  if not w then return out, nil end
  for run, kv in pairs(w.runs) do out[run] = value(kv, key) end
  return out, w
end

local function med(client, workload, key)
  local s = series(client, workload, key)
  local t = {}
  for _, v in pairs(s) do t[#t + 1] = v end
  return median(t), #t
end

-- cost ratio of a client to the floor: >1 means more time / CPU / memory than the floor.
-- Taken run by run (both measured in the same run, minutes apart at most), then the median.
local function cost(a, b, better) -- a's cost relative to b's
  if not a or not b or a == 0 or b == 0 then return nil end
  return better == "lower" and a / b or b / a
end
local function ratio_to(client, cw, ref, rw, key, better)
  local s, r = series(client, cw, key), series(ref, rw, key)
  local t = {}
  for run, v in pairs(s) do
    local c = cost(v, r[run], better)
    if c then t[#t + 1] = c end
  end
  if #t > 0 then return median(t) end
  return cost(med(client, cw, key), med(ref, rw, key), better)
end

local function si(v)
  if v >= 1e6 then return string.format("%.2f M", v / 1e6) end
  if v >= 1e3 then return string.format("%.1f k", v / 1e3) end
  return string.format("%.0f", v)
end
local fmts = {
  us = function(v) return v >= 100 and string.format("%.0f µs", v) or string.format("%.1f µs", v) end,
  rate = function(v) return si(v) .. "/s" end,
  mbs = function(v) return string.format("%.0f MB/s", v) end,
  mb = function(v) return string.format("%.1f MB", v) end,
  ms = function(v) return string.format("%.1f ms", v) end,
}
local function x(v)
  if not v then return "n/a" end
  if v >= 100 then return string.format("%.0f×", v) end
  if v >= 10 then return string.format("%.1f×", v) end
  return string.format("%.2f×", v)
end

-- The rows: label, figure, workload (floor and Node), llmchat's workload, key, which way is
-- better, unit, and the issue's target for llmchat. target(m) gets { value, ratio (cost
-- relative to the floor), lead (over Node) } and returns true or false.
-- without Node figures (skipped) the 15× rule is left out; the Met cell says so
local function lead15(m) return m.lead == nil or m.lead >= 15 end
local function assembly_target(m)
  return m.value and m.ratio and m.value >= 1e6 and m.ratio <= 3 and lead15(m)
end
local rows = {
  { "Sequential non-streamed requests, keep-alive", "wall per request",
    "seq", "seq", "us_wall", "lower", "us", "≤ 1.2× floor; ≥ 15× Node",
    function(m) return m.ratio and m.ratio <= 1.2 and lead15(m) end },
  { "", "CPU per request", "seq", "seq", "us_cpu", "lower", "us" },
  { "Tool-call stream (2 parallel calls in small interleaved fragments)", "wall per request",
    "tools", "tools", "us_wall", "lower", "us", "≥ 15× Node", lead15 },
  { "Long stream, 20,000 chunks, full assembly: on_delta callback", "chunks/s",
    "long", "long", "chunks_per_s", "higher", "rate", "≥ 1 M/s; ≤ 3× floor; ≥ 15× Node",
    assembly_target },
  { "", "MB/s", "long", "long", "mb_per_s", "higher", "mbs" },
  { "", "peak RSS", "long", "long", "rss_mb", "lower", "mb", "< 20 MB",
    function(m) return m.value and m.value < 20 end },
  { "Long stream: `for ev in client:stream{}` iterator", "chunks/s",
    "long", "long_iter", "chunks_per_s", "higher", "rate", "≥ 1 M/s; ≤ 3× floor; ≥ 15× Node",
    assembly_target },
  { "", "peak RSS", "long", "long_iter", "rss_mb", "lower", "mb", "< 20 MB",
    function(m) return m.value and m.value < 20 end },
  { "16 concurrent streams (60 chunks each, 1,024 streams), start + poll(0)", "aggregate chunks/s",
    "conc16", "conc16", "chunks_per_s", "higher", "rate", "≥ 500 k/s; ≥ 15× Node",
    function(m) return m.value and m.value >= 5e5 and lead15(m) end },
  { "", "worst poll(0) †", "conc16", "conc16", "poll_worst_us", "lower", "us" },
  { "", "p99 poll(0) †", "conc16", "conc16", "poll_p99_us", "lower", "us" },
  { "256 concurrent streams (1,024 streams)", "aggregate chunks/s",
    "conc256", "conc256", "chunks_per_s", "higher", "rate", "≥ 15× Node", lead15 },
  { "1,000 paced streams at once (60 chunks over ~3.3 s each)", "CPU per chunk",
    "paced", "paced", "us_cpu_per_chunk", "lower", "us", "≤ 2× floor; ≥ 15× Node",
    function(m) return m.ratio and m.ratio <= 2 and lead15(m) end },
  { "", "peak RSS", "paced", "paced", "rss_mb", "lower", "mb" },
  { "Cold start: process start → one request done", "wall",
    "cold", "cold", "cold_ms", "lower", "ms", "< 25 ms; ≥ 15× Node",
    function(m) return m.value and m.value < 25 and lead15(m) end },
  { "", "CPU (user + system)", "cold", "cold", "cold_cpu_ms", "lower", "ms" },
}
-- Node has no poll(0); the floor's figure there is one curl_multi_perform frame.
local node_absent = { poll_worst_us = true, poll_p99_us = true }

local out = {}
local function w(...) out[#out + 1] = table.concat({ ... }) end

w("# llmchat benchmark: latest run")
w("")
w("- Date: ", os.date("!%Y-%m-%d %H:%M UTC"), "; commit ", env("BENCH_COMMIT", "?"))
w("- Machine: ", env("BENCH_MACHINE", "?"))
w("- Software: ", env("BENCH_VERSIONS", "?"))
w("- Load average (1, 5, 15 min): ", env("BENCH_LOAD", "?"),
  " (other processes on the machine add noise to every figure, the floor's too)")
w("- Command: `make bench` (", env("BENCH_SETTINGS", ""), "); took ", env("BENCH_ELAPSED", "?"), " s")
w("- Each figure is the median of the runs; ratios are cost relative to the C floor",
  " (time, CPU or memory; for rates, floor rate / client rate), taken run by run and then the",
  " median; \"vs Node\" is how many times less cost llmchat has than the Node SDK.")
w("")
w("| Workload | Figure | C floor | llmchat | llmchat / floor | Node SDK | Node / floor |",
  " llmchat vs Node | Target (llmchat) | Met |")
w("|---|---|---:|---:|---:|---:|---:|---:|---|---|")

local misses, meets, unjudged = 0, 0, 0
for _, r in ipairs(rows) do
  local label, figure, ref_w, l_w, key, better, unit, ttext, target =
    r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]
  local f = fmts[unit]
  local fv = med("floor", ref_w, key)
  local lv = med("llmchat", l_w, key)
  local nv = not node_absent[key] and med("node", ref_w, key) or nil
  local lr = ratio_to("llmchat", l_w, "floor", ref_w, key, better)
  local nr = nv and ratio_to("node", ref_w, "floor", ref_w, key, better)
  local lead = lv and nv and cost(nv, lv, better)
  local met = ""
  if target then
    local okv = target({ value = lv, ratio = lr, lead = lead })
    if lv == nil then met = "n/a"; unjudged = unjudged + 1
    elseif okv then met = "yes"; meets = meets + 1
    else met = "**no**"; misses = misses + 1 end
    if lv ~= nil and lead == nil and ttext:find("Node", 1, true) then
      met = met .. " (no Node figure)"
    end
  end
  w("| ", label, " | ", figure, " | ", fv and f(fv) or "n/a", " | ", lv and f(lv) or "n/a",
    " | ", x(lr), " | ", nv and f(nv) or (node_absent[key] and "—" or "n/a"), " | ",
    nr and x(nr) or (node_absent[key] and "—" or "n/a"), " | ", lead and x(lead) or "n/a",
    " | ", ttext or "", " | ", met, " |")
end
w("")
w("† poll(0) is timed per call while all 16 streams are in flight, back to back as a game",
  " loop would call it; the floor's figure is one frame of its multi loop (curl_multi_perform",
  " plus collecting finished transfers). Node has no equivalent.")
w("")
w("Targets met: ", meets, ", missed: ", misses, ", not measured: ", unjudged, ".")

-- notes: why a row is n/a or failed
local notes = {}
for _, client in ipairs({ "floor", "llmchat", "node" }) do
  for workload, wd in pairs(data[client] or {}) do
    if #wd.notes > 0 and next(wd.runs) == nil then
      notes[#notes + 1] = string.format("- %s %s: %s", client, workload, wd.notes[1])
    elseif #wd.notes > 0 then
      notes[#notes + 1] = string.format("- %s %s: %d of the runs %s", client, workload, #wd.notes, wd.notes[1])
    end
  end
end
if env("BENCH_LLMCHAT_NOTE", nil) then notes[#notes + 1] = "- llmchat: " .. env("BENCH_LLMCHAT_NOTE") end
if env("BENCH_NODE_NOTE", nil) then notes[#notes + 1] = "- Node SDK: " .. env("BENCH_NODE_NOTE") end
table.sort(notes)
if #notes > 0 then
  w("")
  w("Notes:")
  for _, n in ipairs(notes) do w(n) end
end

-- the issue's reference figures (one run on the same kind of machine) next to this run's
w("")
w("Reference figures from the issue, next to this run:")
w("")
w("| Figure | Issue's reference | This run |")
w("|---|---:|---:|")
local function ref(label, refv, client, workload, key, f)
  local v = med(client, workload, key)
  w("| ", label, " | ", refv, " | ", v and fmts[f](v) or "n/a", " |")
end
ref("C floor, sequential request", "~90 µs", "floor", "seq", "us_wall", "us")
ref("C floor, long stream", "~2.8 M/s", "floor", "long", "chunks_per_s", "rate")
ref("C floor, 16 concurrent streams", "~0.96 M/s", "floor", "conc16", "chunks_per_s", "rate")
ref("Node SDK, sequential request", "~1,650 µs", "node", "seq", "us_wall", "us")
ref("Node SDK, long stream", "~31 k/s", "node", "long", "chunks_per_s", "rate")
ref("Node SDK, 16 concurrent streams", "~15 k/s", "node", "conc16", "chunks_per_s", "rate")
ref("Node SDK, peak RSS (long stream)", "~140 MB", "node", "long", "rss_mb", "mb")
ref("Node SDK, cold start", "640 ms", "node", "cold", "cold_ms", "ms")

print(table.concat(out, "\n"))
