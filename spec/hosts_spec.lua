-- Real Lua hosts (issue 12): the Neovim example run by Debian's nvim --headless, the LÖVE
-- example run by Debian's love under xvfb-run, both against the bundled server. Every
-- stream's text is compared with what the server sends, cancelling and quitting with
-- requests in flight are exercised, and the measured figures are printed.
--
-- The hosts run LuaJIT whatever the suite's Lua is: the spec builds build/luajit first.
-- It is pending only when nvim, love or xvfb-run is not installed (make deps installs them).
local server = require("support.server")
local cjson = require("cjson")
local socket = require("socket")

local root = server.root

local function sh_ok(cmd)
  local a, _, c = os.execute(cmd)
  if type(a) == "number" then return a == 0 end   -- Lua 5.1 / LuaJIT
  return a == true and (c == nil or c == 0)
end

local function installed(cmd) return sh_ok("command -v " .. cmd .. " >/dev/null 2>&1") end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function tmpname(tag)
  local dir = (os.getenv("TMPDIR") or "/tmp")
  return ("%s/llmchat-hosts-%d-%s-%d"):format(dir, server.self_pid() or 0, tag, math.random(1e9))
end

-- Runs `cmd` in the shell with env vars, bounded by `limit` seconds (SIGKILL 5 s later).
-- Returns exit code, elapsed seconds, output (stdout and stderr).
local function run(env, cmd, limit)
  local parts = {}
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. quote(v) end
  -- the hosts load the LuaJIT build, never make asan's sanitizer runtime (LÖVE deadlocks
  -- with libasan preloaded, as ps does)
  local full = ("cd %s && env -u LD_PRELOAD %s timeout -k 5 %d %s 2>&1; echo \"__rc=$?\""):format(
    quote(root), table.concat(parts, " "), limit, cmd)
  local t0 = socket.gettime()
  local p = assert(io.popen(full, "r"))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return rc, socket.gettime() - t0, (out:gsub("__rc=%d+%s*$", ""))
end

local function load_result(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local src = f:read("*a")
  f:close()
  os.remove(path)
  local chunk = assert((loadstring or load)(src))
  return chunk()
end

-- The content the server streams for this request (its deltas joined), fetched directly.
local function server_content(srv, prompt, mock)
  local res = assert(server.request(srv, "POST", "/v1/chat/completions", {
    model = "llmchat-echo", stream = true, mock = mock,
    messages = { { role = "user", content = prompt } } }))
  assert(res.status == 200, "server answered " .. tostring(res.status))
  local parts = {}
  for _, data in ipairs(server.sse_data(res.body)) do
    if data ~= "[DONE]" then
      local chunk = cjson.decode(data)
      local choice = chunk.choices and chunk.choices[1]
      local text = choice and choice.delta and choice.delta.content
      if type(text) == "string" then parts[#parts + 1] = text end
    end
  end
  return table.concat(parts)
end

local function ms(s) return ("p50 %.2f / p99 %.2f / max %.2f ms (n=%d)"):format(s.p50, s.p99, s.max, s.n) end

local function report(line) io.stdout:write("\n    [hosts] ", line, "\n"); io.stdout:flush() end

local built_luajit
local function build_luajit()
  if built_luajit == nil then
    built_luajit = sh_ok("cd " .. quote(root) .. " && make -s LUA=luajit >/dev/null 2>&1")
  end
  assert(built_luajit, "make LUA=luajit failed: the hosts need the LuaJIT build of llmchat.core")
end


local CHUNKS = 20000   -- per full-speed stream: 80 KB of content, ~4 MB of SSE
local LIMIT = 60       -- seconds a host may take before the run counts as a hang

-- What an editor does, without the editor: one stream per user command, a poll(0) after
-- each start, so earlier streams are already paused by flow control when the next starts.
describe("streams started one at a time, a poll(0) between (as a host's commands do)", function()
  local srv
  setup(function() srv = server.start() end)
  teardown(function()
    local llmchat = require("llmchat")
    while llmchat.poll(0.01) > 0 do end
    srv.stop()
  end)

  it("every stream completes exactly", function()
    local llmchat = require("llmchat")
    local c = llmchat.client{ base_url = srv.url, api_key = "sk-test", model = "m" }
    local want = server_content(srv, "x", { long_stream = CHUNKS, chunk_size = 4 })
    local got, errs = {}, {}
    for i = 1, 16 do
      local parts = {}
      c:start{ messages = { { role = "user", content = "x" } }, stream = true,
        mock = { long_stream = CHUNKS, chunk_size = 4 },
        on_delta = function(t) parts[#parts + 1] = t end,
        on_done = function(_, err) got[i] = table.concat(parts); errs[i] = err end }
      llmchat.poll(0)
      socket.sleep(0.005)   -- the editor opens a buffer meanwhile
    end
    local deadline = socket.gettime() + 60
    while llmchat.poll(0.01) > 0 and socket.gettime() < deadline do end
    for i = 1, 16 do
      assert.is_nil(errs[i], ("stream %d: %s after %d bytes (engine stats: stale_connections=%s)"):format(
        i, tostring(errs[i]), #(got[i] or ""), tostring(llmchat.core.stats().stale_connections)))
      assert.is_true(got[i] == want, ("stream %d: %d bytes, %d sent"):format(i, #(got[i] or ""), #want))
    end
  end)
end)

-- Neovim ------------------------------------------------------------------------------
local has_nvim = installed("nvim")
local describe_nvim = has_nvim and describe or pending
if not has_nvim then
  describe_nvim = function(name) pending(name .. ": nvim is not installed (make deps installs neovim)") end
end

describe_nvim("Neovim (headless) driving llmchat through vim.loop", function()
  local srv
  setup(function()
    build_luajit()
    srv = server.start()
  end)
  teardown(function() if srv then srv.stop() end end)

  local function nvim(scenario, extra)
    local out = tmpname("nvim-" .. scenario)
    local env = { LLMCHAT_BASE_URL = srv.url, LLMCHAT_NVIM_SCENARIO = scenario,
      LLMCHAT_NVIM_OUT = out, LLMCHAT_NVIM_CHUNKS = tostring(CHUNKS), LLMCHAT_ROOT = root }
    for k, v in pairs(extra or {}) do env[k] = v end
    local rc, dt, text = run(env, "nvim --headless -u NONE -i NONE -n -c 'luafile examples/neovim/headless.lua' </dev/null", LIMIT)
    return rc, dt, load_result(out), text
  end

  local function check_streams(r, want, label)
    assert.equal(16, #r.texts)
    for i = 1, 16 do
      assert.equal("done", r.statuses[i], label .. " stream " .. i)
      -- the buffer shows exactly what the server sent (compared whole, not printed whole)
      assert.is_true(r.texts[i] == want, ("%s stream %d: %d bytes in the buffer, %d sent"):format(
        label, i, #r.texts[i], #want))
    end
  end

  it("16 full-speed streams land exactly in 16 buffers; a 1 ms timer keeps running", function()
    local want = server_content(srv, "x", { long_stream = CHUNKS, chunk_size = 4 })
    assert.equal(CHUNKS * 4, #want)
    local rc, dt, r, text = nvim("streams")
    assert.equal(0, rc, "nvim exited " .. tostring(rc) .. ":\n" .. text)
    assert.is_table(r, "no result file:\n" .. text)
    check_streams(r, want, "streams")
    assert.truthy(r.lateness_ms.n > 0, "the 1 ms timer never ran while the streams arrived")
    report(("Neovim %s (libuv %s), 16 streams x %d chunks in %.2f s (%d polls, nvim ran %.1f s)")
      :format(r.nvim, r.libuv, CHUNKS, r.seconds, r.polls, dt))
    report("  1 ms timer lateness: " .. ms(r.lateness_ms))
    report("  llmchat.poll(0):     " .. ms(r.poll_ms))
    report("  poll(0) thread CPU:  " .. ms(r.poll_cpu_ms))
    report("  buffer flushes:      " .. ms(r.flush_ms))
  end)

  it("a burst (the editor busy for 300 ms while 16 streams arrive) is delivered exactly", function()
    local want = server_content(srv, "x", { long_stream = CHUNKS, chunk_size = 4 })
    local rc, _, r, text = nvim("burst", { LLMCHAT_NVIM_BLOCK_MS = "300" })
    assert.equal(0, rc, "nvim exited " .. tostring(rc) .. ":\n" .. text)
    assert.is_table(r, "no result file:\n" .. text)
    check_streams(r, want, "burst")
    report(("Neovim burst after a %d ms block: 16 streams done in %.2f s (%d polls)")
      :format(r.block_ms, r.seconds, r.polls))
    report("  1 ms timer lateness: " .. ms(r.lateness_ms))
    report("  llmchat.poll(0):     " .. ms(r.poll_ms))
    report("  poll(0) thread CPU:  " .. ms(r.poll_cpu_ms))
  end)

  it("the buffer's cancel key (<C-c>) cancels the reply; nothing arrives afterwards", function()
    local rc, _, r, text = nvim("cancel")
    assert.equal(0, rc, "nvim exited " .. tostring(rc) .. ":\n" .. text)
    assert.is_table(r, "no result file:\n" .. text)
    assert.is_true(r.cancel_sent)
    assert.equal("cancelled", r.status)
    assert.equal(0, r.active)
    local want = server_content(srv, r.prompt, { chunk_size = 4 })
    assert.equal(r.prompt, want)
    -- what the buffer shows is a true prefix of the reply, and it stopped growing
    assert.truthy(#r.text_at_done >= #r.text_before_cancel)
    assert.truthy(#r.text_at_done < #want, "the whole reply arrived: the cancel did nothing")
    assert.equal(want:sub(1, #r.text_at_done), r.text_at_done)
    assert.equal(r.text_at_done, r.text_later)
  end)

  it(":qa! with 16 replies in flight exits 0 at once", function()
    local rc, dt, r, text = nvim("quit")
    assert.equal(0, rc, "nvim exited " .. tostring(rc) .. ":\n" .. text)
    assert.is_table(r, "no result file:\n" .. text)
    assert.equal(16, r.in_flight)
    assert.truthy(dt < 30, ("nvim took %.1f s to quit"):format(dt))
    report(("Neovim :qa! with %d replies in flight: exited 0, whole run %.2f s"):format(r.in_flight, dt))
  end)
end)

-- LÖVE ----------------------------------------------------------------------------------
local has_love = installed("love") and installed("xvfb-run")
local describe_love = has_love and describe or pending
if not has_love then
  describe_love = function(name)
    pending(name .. ": love or xvfb-run is not installed (make deps installs love, xvfb, xauth)")
  end
end

describe_love("LÖVE (under Xvfb) polling llmchat once per frame", function()
  local srv
  setup(function()
    build_luajit()
    srv = server.start()
  end)
  teardown(function() if srv then srv.stop() end end)

  local function love_run(extra)
    local out = tmpname("love")
    local env = { LLMCHAT_BASE_URL = srv.url, LLMCHAT_LOVE_OUT = out, LLMCHAT_ROOT = root }
    for k, v in pairs(extra or {}) do env[k] = v end
    local rc, dt, text = run(env, "xvfb-run -a love examples/love", LIMIT)
    return rc, dt, load_result(out), text
  end

  it("six villagers stream their lines exactly; one is cancelled mid-line", function()
    local rc, _, r, text = love_run{ LLMCHAT_LOVE_STREAMS = "6", LLMCHAT_LOVE_CANCEL = "2" }
    assert.equal(0, rc, "love exited " .. tostring(rc) .. ":\n" .. text)
    assert.is_table(r, "no result file:\n" .. text)
    assert.equal(6, #r.villagers)
    for i, v in ipairs(r.villagers) do
      local want = server_content(srv, v.question, { chunk_size = 2 })
      if i == 2 then
        assert.is_true(v.cancel_sent)
        assert.equal("cancelled", v.state)
        assert.truthy(#v.text >= 8 and #v.text < #want, #v.text .. " bytes before the cancel")
        assert.equal(want:sub(1, #v.text), v.text)
      else
        assert.equal("done", v.state, v.name)
        assert.equal(want, v.text)
      end
    end
    report(("LÖVE %s, 6 paced lines: %d frames; frame %s"):format(r.love, r.frames, ms(r.frame_ms)))
    report("  llmchat.poll(0): " .. ms(r.poll_ms))
  end)

  local function full_speed(label, extra)
    local want = server_content(srv, "x", { long_stream = CHUNKS, chunk_size = 4 })
    local env = { LLMCHAT_LOVE_STREAMS = "16", LLMCHAT_LOVE_LONG = tostring(CHUNKS) }
    for k, v in pairs(extra or {}) do env[k] = v end
    local rc, _, r, text = love_run(env)
    assert.equal(0, rc, "love exited " .. tostring(rc) .. ":\n" .. text)
    assert.is_table(r, "no result file:\n" .. text)
    assert.equal(16, #r.villagers)
    for _, v in ipairs(r.villagers) do
      assert.equal("done", v.state, v.name)
      assert.is_true(v.text == want, ("%s: %d bytes, %d sent"):format(v.name, #v.text, #want))
    end
    report(("LÖVE %s, %s: 16 streams x %d chunks in %.2f s, %d frames"):format(
      r.love, label, CHUNKS, r.seconds, r.frames))
    report("  frame time:        " .. ms(r.frame_ms))
    report("  update+draw:       " .. ms(r.work_ms))
    report("  llmchat.poll(0):   " .. ms(r.poll_ms))
    report("  poll(0) thread CPU: " .. ms(r.poll_cpu_ms))
  end

  it("16 full-speed streams arrive exactly while the game renders", function()
    full_speed("full speed")
  end)

  it("a burst after a 300 ms frame is delivered exactly", function()
    full_speed("burst after a 300 ms frame", { LLMCHAT_LOVE_BLOCK_MS = "300" })
  end)

  it("quitting with lines in flight (the game cancels them) exits 0 at once", function()
    local rc, dt, r, text = love_run{ LLMCHAT_LOVE_STREAMS = "16", LLMCHAT_LOVE_QUIT_AFTER = "0.3" }
    assert.equal(0, rc, "love exited " .. tostring(rc) .. ":\n" .. text)
    assert.is_table(r, "no result file:\n" .. text)
    assert.truthy(r.in_flight_at_quit > 0, "every line was done before the quit")
    assert.truthy(dt < 30, ("love took %.1f s to quit"):format(dt))
    for _, v in ipairs(r.villagers) do assert.truthy(v.state ~= "talking" and v.state ~= "thinking") end
  end)

  it("quitting with full-speed streams in flight and no cleanup of the game's own exits 0", function()
    local rc, dt, r, text = love_run{ LLMCHAT_LOVE_STREAMS = "16", LLMCHAT_LOVE_LONG = "2000000",
      LLMCHAT_LOVE_QUIT_AFTER = "0.3", LLMCHAT_LOVE_QUIT_PLAIN = "1" }
    assert.equal(0, rc, "love exited " .. tostring(rc) .. ":\n" .. text)
    assert.is_table(r, "no result file:\n" .. text)
    assert.equal(16, r.in_flight_at_quit)
    assert.truthy(dt < 30, ("love took %.1f s to quit"):format(dt))
  end)
end)
