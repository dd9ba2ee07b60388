-- The scheduler's interface toward calls (lua/llmchat/loop.lua): an object per Lua state,
-- tested here on its own instance with stand-in calls (anything with done, cancel() and
-- request()), no network.
local loop = require("llmchat.loop")
local core = require("llmchat.core")

local function fake_call()
  local c = { done = false, cancelled = 0 }
  function c:cancel() self.cancelled = self.cancelled + 1; self.done = true end
  function c.request() return nil end
  return c
end

describe("scheduler", function()
  it("is an object: a new instance shares nothing with the state's own", function()
    local s = loop.Scheduler.new()
    assert.are_not.equal(loop.default, s)
    s:after(10, function() end)
    assert.truthy(s:next_delay() > 5)
    assert.is_nil(loop.Scheduler.new():next_delay())
  end)

  it("fires timers in due order, and only an owner's in a wait on it", function()
    local s = loop.Scheduler.new()
    local order = {}
    local owner = fake_call()
    s:after(0.02, function() order[#order + 1] = "b" end)
    s:after(0, function() order[#order + 1] = "a" end, owner)
    local t = s:after(0, function() order[#order + 1] = "never" end)
    t.cancelled = true
    s:fire_timers(owner)
    assert.same({ "a" }, order)
    local t0 = core.now()
    while core.now() - t0 < 0.03 do end
    s:fire_timers()
    assert.same({ "a", "b" }, order)
  end)

  it("counts calls, wakes the task waiting on one, and cancels what a failed task started", function()
    local s = loop.Scheduler.new()
    local c = fake_call()
    local got
    s:spawn(function()
      s:call_started(c)
      s:wait(c)
      got = "woken"
    end)
    s:resume_ready()
    assert.equal(1, s.active)
    assert.is_nil(got)
    c.done = true
    s:call_finished(c)     -- notifies the waiter
    assert.is_true(s:has_ready())
    s:resume_ready()
    assert.equal("woken", got)
    assert.equal(0, s.active)

    local started = fake_call()
    s:spawn(function()
      s:call_started(started)
      error("task failed")
    end)
    local ok, err = pcall(s.resume_ready, s)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("task failed", 1, true))
    assert.equal(1, started.cancelled)
  end)

  it("cancels an abandoned call at the next poll, not from the finalizer", function()
    local s = loop.Scheduler.new()
    local c = fake_call()
    s:abandon(c)
    assert.equal(0, c.cancelled)
    s:cancel_abandoned()
    assert.equal(1, c.cancelled)
  end)

  it("tells a killed task's coroutine is gone", function()
    local s = loop.Scheduler.new()
    local ok = pcall(s.run, s, function()
      s:spawn(function() s:sleep(5) end)
      s:sleep(0.01)
      error("group fails")
    end)
    assert.is_false(ok)
    for co in pairs(s.tasks) do assert.is_true(s:gone(co)) end
    assert.is_false(s:gone(coroutine.create(function() end)))
  end)
end)
