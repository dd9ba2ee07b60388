-- Never block, from a host event loop (issue 5): llmchat driven by libuv (luv) through
-- llmchat.fd() (readable = call llmchat.poll(0)) and llmchat.timeout(), without busy polling.
local server = require("support.server")
local llmchat = require("llmchat")

local has_luv, uv = pcall(require, "luv")

local function user(text) return { { role = "user", content = text } } end

-- libuv's version as a number: 1.44.2 -> 14402
local function uv_version()
  local v = uv and uv.version and uv.version()
  if type(v) == "number" then return math.floor(v / 65536) * 10000 + math.floor(v / 256) % 256 * 100 + v % 256 end
  return 0
end

-- Drives llmchat from the uv loop until done() or `limit` seconds; returns stats.
-- The recipe of examples/luv.lua: a poll handle on llmchat.fd(), a timer for
-- llmchat.timeout() (never under 1 ms) and an idle handle while timeout() is 0.
-- recipe = "zero_timer" is the old recipe, kept as a witness: a 0 ms timer re-armed from
-- its own callback whenever timeout() is 0.
-- st.max_per_iteration: the most llmchat.poll calls one loop iteration made.
local function drive(done, limit, recipe)
  local st = { polls = 0, fd_wakeups = 0, timer_wakeups = 0, idle_wakeups = 0, timed_out = false,
    errors = {}, iterations = 0, max_per_iteration = 0 }
  local poll_h = uv.new_poll(llmchat.fd())
  local timer = uv.new_timer()
  local idle = uv.new_idle()
  local guard = uv.new_timer()
  local prepare = uv.new_prepare()   -- runs once per loop iteration, before the I/O wait
  local in_iteration = 0
  local closed = false
  local function stop()
    if closed then return end
    closed = true
    for _, h in ipairs{ poll_h, timer, idle, guard, prepare } do h:stop(); h:close() end
  end
  local function on_timer()
    st.timer_wakeups = st.timer_wakeups + 1
    st.step()
  end
  local function on_idle()
    st.idle_wakeups = st.idle_wakeups + 1
    st.step()
  end
  local function rearm()
    if closed then return end
    local t = llmchat.timeout()
    if recipe == "zero_timer" then
      timer:stop()
      if t then timer:start(math.max(0, math.ceil(t * 1000)), 0, on_timer) end
      return
    end
    if t == 0 then
      timer:stop()
      if not idle:is_active() then idle:start(on_idle) end
      return
    end
    if idle:is_active() then idle:stop() end
    if t == nil or t > 0.5 then t = 0.5 end
    timer:start(math.max(1, math.ceil(t * 1000)), 0, on_timer)
  end
  function st.step()
    st.polls = st.polls + 1
    in_iteration = in_iteration + 1
    if in_iteration > st.max_per_iteration then st.max_per_iteration = in_iteration end
    local ok, err = pcall(llmchat.poll, 0)
    if not ok then st.errors[#st.errors + 1] = err end
    if done() then stop() else rearm() end
  end
  prepare:start(function()
    st.iterations = st.iterations + 1
    in_iteration = 0
  end)
  poll_h:start("r", function(err)
    assert(not err, err)
    st.fd_wakeups = st.fd_wakeups + 1
    st.step()
  end)
  guard:start(math.floor(limit * 1000), 0, function()
    st.timed_out = true
    stop()
  end)
  st.step()  -- a first poll after starting the requests, as a host does
  if not closed then uv.run("default") end
  return st
end

local describe_luv = has_luv and describe or pending
describe_luv("llmchat under a luv loop", function()
  local srv, c
  setup(function()
    srv = server.start()
    c = llmchat.client{ base_url = srv.url, model = "luv-model", api_key = "sk-test" }
  end)
  teardown(function()
    while llmchat.poll(0.01) > 0 do end
    srv.stop()
  end)

  it("llmchat.fd() is a descriptor and llmchat.timeout() a number or nil", function()
    assert.is_number(llmchat.fd())
    local t = llmchat.timeout()
    assert.truthy(t == nil or type(t) == "number")
  end)

  it("drives a streaming request to completion without busy polling", function()
    local want = ("luv stream "):rep(6)  -- 66 bytes: 17 chunks of 4
    local deltas, res_, err_ = {}, nil, nil
    local req = c:start{ messages = user(want), stream = true, mock = { chunk_delay = 0.02 },
      on_delta = function(t) deltas[#deltas + 1] = t end,
      on_done = function(res, err) res_, err_ = res, err end }
    local t0 = llmchat.core.now()
    local st = drive(function() return req.done end, 5)
    local dt = llmchat.core.now() - t0
    assert.is_false(st.timed_out)
    assert.same({}, st.errors)
    assert.is_nil(err_)
    assert.equal(want, res_.content)
    assert.equal(want, table.concat(deltas))
    assert.truthy(dt > 0.3, ("took %.3f s"):format(dt))  -- the stream really took time ...
    -- ... and the loop slept in between: about one wakeup per chunk, not thousands
    assert.truthy(st.polls < 120, ("%d polls in %.2f s"):format(st.polls, dt))
    assert.truthy(st.fd_wakeups >= 5, "woken by the descriptor " .. st.fd_wakeups .. " times")
  end)

  it("sleeps while the server takes its time before answering", function()
    local req = c:start{ messages = user("after a pause"), mock = { delay = 0.4 } }
    local st = drive(function() return req.done end, 5)
    assert.is_false(st.timed_out)
    assert.equal("after a pause", req:result().content)
    assert.truthy(st.polls < 30, st.polls .. " polls")
  end)

  it("runs several streams at once", function()
    local reqs = {}
    for i = 1, 8 do
      reqs[i] = c:start{ messages = user("luv " .. i .. (" ."):rep(10)), stream = true,
        mock = { chunk_delay = 0.01 }, on_delta = function() end }
    end
    local st = drive(function()
      for _, r in ipairs(reqs) do if not r.done then return false end end
      return true
    end, 5)
    assert.is_false(st.timed_out)
    for i, r in ipairs(reqs) do assert.equal("luv " .. i .. (" ."):rep(10), r:result().content) end
    assert.truthy(st.polls < 300, st.polls .. " polls")
  end)

  -- A task that sleeps 0 s again and again keeps llmchat.timeout() at 0 for every poll,
  -- as queued events do: the case where the old recipe re-armed a 0 ms timer.
  local function zero_sleeper(rounds)
    local left = rounds
    llmchat.spawn(function()
      for _ = 1, rounds do llmchat.sleep(0); left = left - 1 end
    end)
    return function() return left == 0 end
  end

  it("while llmchat.timeout() is 0 the recipe polls once per loop iteration (an idle handle)", function()
    local done = zero_sleeper(300)
    local other, other_ticks = uv.new_timer(), 0
    other:start(1, 1, function() other_ticks = other_ticks + 1 end)   -- the host's own work
    local st = drive(function()
      if not done() then return false end
      other:stop()   -- else it keeps uv.run going
      return true
    end, 10)
    if other:is_active() then other:stop() end
    other:close()
    assert.is_false(st.timed_out)
    assert.same({}, st.errors)
    assert.is_true(done())
    assert.truthy(st.idle_wakeups >= 250, st.idle_wakeups .. " idle wakeups")
    -- the idle handle, the descriptor and a timer may each poll once in an iteration
    assert.truthy(st.max_per_iteration <= 3, st.max_per_iteration .. " polls in one loop iteration")
    assert.truthy(st.iterations >= 100, st.iterations .. " loop iterations for 300 polls")
  end)

  it("the old recipe, a 0 ms timer re-armed from its callback, runs in one iteration on libuv < 1.48", function()
    local done = zero_sleeper(300)
    local st = drive(done, 10, "zero_timer")
    assert.is_false(st.timed_out)
    assert.is_true(done())
    local version = uv.version_string()
    io.stdout:write(("\n    [luv] libuv %s: the 0 ms timer recipe made %d polls in one loop iteration "
      .. "(%d polls in all; the loop finished %d iterations meanwhile)\n"):format(version, st.max_per_iteration,
      st.polls, st.iterations))
    if uv_version() < 14800 then
      -- the starvation examples/luv.lua avoids: nothing else in the loop runs meanwhile
      assert.truthy(st.max_per_iteration >= 100, st.max_per_iteration .. " polls in one iteration")
    else
      assert.truthy(st.max_per_iteration <= 3, st.max_per_iteration .. " polls in one iteration")
    end
  end)

  it("examples/luv.lua runs to the end against the server", function()
    local cmd = ("cd %s && LLMCHAT_BASE_URL=%s LUA_PATH='lua/?.lua;lua/?/init.lua;;' %s examples/luv.lua 2>&1")
      :format(server.root, srv.url, server.child())
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("[1] What is the event loop of Neovim called?", 1, true), out)
    assert.truthy(out:find("[2] Name a Lua binding for libuv.", 1, true), out)
    assert.truthy(out:find("[3] Why must a host loop never block?", 1, true), out)
    assert.truthy(out:find("done in [%d.]+ s: %d+ llmchat.poll%(0%) calls"), out)
  end)

  it("an idle timeout fires from the timer alone (no data on the descriptor)", function()
    local req = c:start{ messages = user("abcdefgh"), stream = true, idle_timeout = 0.2, max_retries = 0,
      mock = { stall = 1 }, on_delta = function() end }
    local t0 = llmchat.core.now()
    local st = drive(function() return req.done end, 3)
    local dt = llmchat.core.now() - t0
    assert.is_false(st.timed_out)
    local _, err = req:result()
    -- llmchat.timeout() covers the idle check, so the timer alone wakes the loop for it
    assert.is_table(err, "the stalled stream completed instead of timing out")
    assert.truthy(dt < 1.5, ("the idle timeout of 0.2 s fired after %.2f s"):format(dt))
    assert.equal("timeout", err.kind)
    assert.truthy(st.polls < 40, st.polls .. " polls")
  end)

  it("a retry waiting on its retry-after timer is woken by llmchat.timeout()", function()
    local key = "luv-retry-" .. os.time() .. "-" .. math.random(1e9)
    local req = c:start{ messages = user("retried under luv"), max_retries = 2,
      mock = { key = key, fail_times = 1, status = 429, headers = { ["retry-after-ms"] = "150" } } }
    local st = drive(function() return req.done end, 5)
    if st.timed_out then req:cancel() end
    -- llmchat.timeout() covers the scheduler's timers (the retry-after backoff)
    assert.is_false(st.timed_out, "the host loop never woke up for the retry")
    assert.equal("retried under luv", req:result().content)
    assert.truthy(st.polls < 40, st.polls .. " polls")
  end)
end)
