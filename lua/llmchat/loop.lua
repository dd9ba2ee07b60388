--- The scheduler: timers (retry backoff), polling, blocking waits and the coroutines of
-- llmchat.run / llmchat.spawn. An object (Scheduler) per Lua state, like the C engine it
-- drives: this module makes the state's one instance and binds llmchat.poll, run, spawn,
-- sleep, timeout to it.
--
-- Its interface toward calls (llmchat.call) is small and is all it knows of them:
--   sched:call_started(call) / sched:call_finished(call)   a call begins / ends (wakes
--                                                           whatever waits on it)
--   sched:notify(call)     something arrived for the call (wakes its waiter)
--   sched:after(delay, fn, owner) -> timer                 timer.cancelled = true stops it
--   sched:wait(call, until_fn)     block (or yield inside run) until until_fn(call)
--   sched:abandon(call)    cancel at the next poll or wait (from a finalizer)
-- and of a call it reads only its public handle: call.done, call:cancel(), call:request()
-- (the C request to dispatch while blocking on it, or nil).
local core = require("llmchat.core")

local M = {}

local now = core.now
local unpack = table.unpack or unpack  -- luacheck: ignore 143

-- PUC Lua 5.1 cannot yield across pcall, a metamethod or the call of a generic for's
-- iterator; LuaJIT and 5.2+ can
local OLD_YIELD = _VERSION == "Lua 5.1" and not rawget(_G, "jit")
M.OLD_YIELD = OLD_YIELD

local function pack(...) return { n = select("#", ...), ... } end

-- The default frame budget of poll(0): what one call may spend moving transfers and
-- firing callbacks before it leaves the rest queued (in order) for the next poll. A 60 fps
-- frame is 16.7 ms; a millisecond of it is llmchat's.
local DEFAULT_BUDGET = 0.001
M.DEFAULT_BUDGET = DEFAULT_BUDGET

local Scheduler = {}
Scheduler.__index = Scheduler
Scheduler.__name = "llmchat.scheduler"
M.Scheduler = Scheduler

--- A new scheduler (llmchat uses one per Lua state: M.default).
function Scheduler.new()
  return setmetatable({
    heap = {}, timer_seq = 0,      -- timers: a binary heap ordered by due time
    active = 0,                    -- calls started and not finished (a retry's timer counts)
    tasks = setmetatable({}, { __mode = "k" }),  -- coroutine -> task
    -- tasks to resume: one queue (ready[rhead..rtail]) that nested resumes (a wait inside a
    -- generic for on 5.1) take from too, so a task queued behind the waiting one still runs
    ready = {}, rhead = 1, rtail = 0,
    ntasks = 0,
    waiters = setmetatable({}, { __mode = "k" }),  -- call -> the task waiting on it
    current_group = nil,
    in_poll = false,
    abandoned = {},
  }, Scheduler)
end

---------------------------------------------------------------------------
-- timers

function Scheduler:heap_up(i)
  local heap = self.heap
  while i > 1 do
    local p = math.floor(i / 2)
    if heap[p].at <= heap[i].at then break end
    heap[p], heap[i] = heap[i], heap[p]
    i = p
  end
end

function Scheduler:heap_down(i)
  local heap = self.heap
  local n = #heap
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and heap[l].at < heap[m].at then m = l end
    if r <= n and heap[r].at < heap[m].at then m = r end
    if m == i then return end
    heap[m], heap[i] = heap[i], heap[m]
    i = m
  end
end

--- Runs fn after `delay` seconds (from poll or a blocking wait). `owner` (a call) lets a
-- blocking wait fire only its own timers. Returns the timer; timer.cancelled = true stops it.
function Scheduler:after(delay, fn, owner)
  self.timer_seq = self.timer_seq + 1
  local t = { at = now() + math.max(0, delay), fn = fn, owner = owner, seq = self.timer_seq }
  local heap = self.heap
  heap[#heap + 1] = t
  self:heap_up(#heap)
  return t
end

function Scheduler:pop_timer()
  local heap = self.heap
  local t = heap[1]
  local n = #heap
  heap[1] = heap[n]
  heap[n] = nil
  if n > 1 then self:heap_down(1) end
  return t
end

--- Seconds until the next timer (of `owner` when given), nil if none.
function Scheduler:next_delay(owner)
  local heap = self.heap
  if heap[1] == nil then return nil end
  if owner then
    local best
    for _, t in ipairs(heap) do
      if t.owner == owner and not t.cancelled and (not best or t.at < best) then best = t.at end
    end
    return best and math.max(0, best - now())
  end
  while heap[1] and heap[1].cancelled do self:pop_timer() end
  return heap[1] and math.max(0, heap[1].at - now())
end

local function by_time(a, b) return a.at < b.at end

-- Fires due timers; with `owner`, only that owner's (the rest stay queued).
function Scheduler:fire_timers(owner)
  local heap = self.heap
  if heap[1] == nil then return end  -- the common case: no timer at all
  local t0 = now()
  if owner then
    local due
    for i = #heap, 1, -1 do
      local t = heap[i]
      if t.owner == owner and t.at <= t0 then
        due = due or {}
        due[#due + 1] = t
      end
    end
    if not due then return end
    table.sort(due, by_time)
    for _, t in ipairs(due) do
      if not t.cancelled then
        t.cancelled = true
        t.fn()
      end
    end
    return
  end
  while heap[1] and heap[1].at <= t0 do
    local t = self:pop_timer()
    if not t.cancelled then
      t.cancelled = true
      t.fn()
    end
  end
end

---------------------------------------------------------------------------
-- the interface toward calls

-- (the two below and wait run for every call: current_task and notify are inlined)
function Scheduler:call_started(call)
  self.active = self.active + 1
  local co = coroutine.running()
  local task = co and self.tasks[co]
  if task then self:track(task, call) end
end

function Scheduler:call_finished(call)
  self.active = self.active - 1
  local task = self.waiters[call]
  if task then self:wake(task) end
end

--- Something arrived for `call`: the task waiting on it runs again.
function Scheduler:notify(call)
  local task = self.waiters[call]
  if task then self:wake(task) end
end

--- Calls whose owner was collected (an iterator left by break on a Lua without
-- to-be-closed variables): cancelled at the next poll or wait, never from the finalizer
-- itself (a finalizer may run in the middle of a dispatch, under the call's own records).
function Scheduler:abandon(call)
  self.abandoned[#self.abandoned + 1] = call
end

function Scheduler:cancel_abandoned()
  if self.abandoned[1] == nil then return end
  local list = self.abandoned
  self.abandoned = {}
  for _, call in ipairs(list) do
    if not call.done then call:cancel() end
  end
end

---------------------------------------------------------------------------
-- coroutines

function Scheduler:has_ready() return self.rhead <= self.rtail end

function Scheduler:wake(task)
  if task and not task.queued and not task.dead then
    task.queued = true
    self.rtail = self.rtail + 1
    self.ready[self.rtail] = task
  end
end

--- Calls started inside a task are tracked by it (weakly): when the task dies with an
-- error, or is killed, every call it started and did not finish is cancelled.
function Scheduler.track(_, task, call)
  local t = task.calls
  if not t then
    t = setmetatable({}, { __mode = "k" })
    task.calls = t
  end
  t[call] = true
end

local function cancel_calls(task)
  if task.calls then
    for call in pairs(task.calls) do
      if not call.done then call:cancel() end
    end
    task.calls = nil
  end
  if task.call and not task.call.done then task.call:cancel() end
end

function Scheduler:kill_group(group)
  for co, task in pairs(self.tasks) do
    if task.group == group and not task.dead and co == task.co then
      task.dead = true
      self.ntasks = self.ntasks - 1
      cancel_calls(task)
      if coroutine.close then pcall(coroutine.close, co) end
    end
  end
end

-- Resumes every task that was ready when it began. A task outside any group (spawned
-- outside llmchat.run) that raises does not strand the others of the batch: they are
-- resumed too, and the first such error is raised once the batch is done.
function Scheduler:resume_ready()
  local count = self.rtail - self.rhead + 1  -- what was ready when it began
  local first_err, has_err
  while count > 0 and self.rhead <= self.rtail do
    count = count - 1
    local task = self.ready[self.rhead]
    self.ready[self.rhead] = nil
    self.rhead = self.rhead + 1
    if self.rhead > self.rtail then self.ready, self.rhead, self.rtail = {}, 1, 0 end
    task.queued = false
    -- a task waiting inside a generic for on 5.1 is running (it resumed us): it goes on
    -- when its own wait ends
    if not task.dead and coroutine.status(task.co) == "suspended" then
      local ok, err = coroutine.resume(task.co, unpack(task.args or {}))
      task.args = nil
      -- killed while it ran (its group failed during a wait inside a generic for on 5.1):
      -- already counted out, and its unwinding error is not news
      local killed = task.dead
      if coroutine.status(task.co) == "dead" and not killed then
        task.dead = true
        self.ntasks = self.ntasks - 1
        self.tasks[task.co] = nil
        if task.group then task.group.left = task.group.left - 1 end
        if not ok then
          -- what it started goes with it (5.4 also closes its to-be-closed variables)
          cancel_calls(task)
          if coroutine.close then pcall(coroutine.close, task.co) end
          if task.group then
            if task.group.err == nil then
              task.group.err = err
              task.group.traceback = debug.traceback(task.co)
            end
            self:kill_group(task.group)
          elseif not has_err then
            has_err, first_err = true, err
          end
        end
      end
    end
  end
  if has_err then error(first_err, 0) end
end

--- Starts fn(...) as a coroutine driven by llmchat.run / llmchat.poll.
function Scheduler:spawn(fn, ...)
  if type(fn) ~= "function" then
    error(("llmchat.spawn: bad argument #1 'fn' (a function expected, got %s)"):format(type(fn)), 2)
  end
  local co = coroutine.create(fn)
  local parent = self.tasks[coroutine.running() or false]
  local group = parent and parent.group or self.current_group
  local task = { co = co, args = { ... }, group = group }
  self.tasks[co] = task
  self.ntasks = self.ntasks + 1
  if group then group.left = group.left + 1 end
  self:wake(task)
  return co
end

--- The task of the running coroutine, when it is one of ours.
function Scheduler:current_task()
  local co = coroutine.running()
  return co and self.tasks[co]
end

--- true when co is a coroutine that will never run again: dead, or a task of ours that
-- was killed (its group failed) and left suspended (5.1 - 5.3 cannot close it)
function Scheduler:gone(co)
  if type(co) ~= "thread" then return false end
  if coroutine.status(co) == "dead" then return true end
  local task = self.tasks[co]
  return task ~= nil and task.dead == true
end

--- pcall that a coroutine of ours may yield through, on every Lua version. On 5.1 the
-- function runs in a coroutine of its own (mapped to the same task) whose yields are passed
-- up to the scheduler and whose errors are caught by resume.
function Scheduler:pcall(f, ...)
  local task = OLD_YIELD and self:current_task()
  if not task then return pcall(f, ...) end
  local co = coroutine.create(f)
  self.tasks[co] = task
  local args = pack(...)
  while true do
    local r = pack(coroutine.resume(co, unpack(args, 1, args.n)))
    if coroutine.status(co) == "dead" then
      self.tasks[co] = nil
      return unpack(r, 1, r.n)
    end
    args = pack(coroutine.yield(unpack(r, 2, r.n)))
  end
end

---------------------------------------------------------------------------
-- polling

--- Seconds until llmchat wants llmchat.poll to run again (libcurl's timer, idle checks,
-- retry and sleep timers, ready coroutines); nil when nothing is scheduled. A host loop
-- sleeps at most this long between polls.
function Scheduler:timeout()
  if self:has_ready() then return 0 end
  local t = core.timeout()
  local nt = self:next_delay()
  if nt and (not t or nt < t) then t = nt end
  return t
end

--- Advances every request in flight; fires callbacks and due timers; resumes coroutines.
-- Returns how many calls and coroutines are still going.
-- budget (seconds): stop delivering once that much time is spent (what is left stays
-- queued, in order; llmchat.timeout() is 0 then). Default: DEFAULT_BUDGET for poll(0),
-- none for a poll that may wait. false: no budget.
function Scheduler:poll(timeout, budget)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout) then
    error("llmchat.poll: 'timeout' must be a number of seconds", 2)
  end
  if budget ~= nil and budget ~= false and (type(budget) ~= "number" or budget ~= budget or budget < 0) then
    error("llmchat.poll: 'budget' must be a number of seconds (or false)", 2)
  end
  if self.in_poll or core.dispatching() then
    error("llmchat.poll: cannot poll from inside a callback that poll fired", 2)
  end
  if budget == nil then budget = (timeout or 0) == 0 and DEFAULT_BUDGET or 0 end
  if budget == false then budget = 0 end
  self.in_poll = true
  local ok, err = pcall(function()
    self:cancel_abandoned()
    local wait = timeout or 0
    if self:has_ready() then wait = 0 end
    local nt = self:next_delay()
    if nt and nt < wait then wait = nt end
    if core.inflight() == 0 and not nt then wait = 0 end
    local _, cberr = core.drive(wait, nil, budget)
    self:fire_timers()
    self:resume_ready()
    if cberr ~= nil then error(cberr, 0) end
  end)
  self.in_poll = false
  if not ok then error(err, 0) end
  return self.active + self.ntasks
end

--- Sleeps `seconds`: yields inside a coroutine of ours, else drives the engine meanwhile
-- (callbacks of other requests wait for the next poll).
function Scheduler:sleep(seconds)
  local task = self:current_task()
  if task then
    local t = self:after(seconds, function() self:wake(task) end)
    repeat coroutine.yield() until t.cancelled
    return
  end
  local deadline = now() + seconds
  while true do
    local left = deadline - now()
    if left <= 0 then return end
    core.drive(left, false)
  end
end

local function is_done(call) return call.done end

--- Waits until until_fn(call) (default: the call is done). In a coroutine of ours: yields
-- to the scheduler. Otherwise drives the engine, dispatching only this call's callbacks
-- and timers, so a blocking call never fires another request's.
function Scheduler:wait(call, until_fn)
  until_fn = until_fn or is_done
  local co = coroutine.running()
  local task = co and self.tasks[co]
  if task then
    local prev = task.call
    task.call = call
    self.waiters[call] = task
    while not until_fn(call) do coroutine.yield() end
    self.waiters[call] = nil
    task.call = prev
    return
  end
  local heap = self.heap
  while not until_fn(call) do
    if self.abandoned[1] ~= nil then self:cancel_abandoned() end
    local wait = 1.0
    local nt = heap[1] ~= nil and self:next_delay(call)
    if nt and nt < wait then wait = nt end
    -- only this call's callbacks; a call that never reached the network (it failed before
    -- sending) has no request: drive without dispatching anybody's
    local _, err = core.drive(wait, call:request() or false)
    if heap[1] ~= nil then self:fire_timers(call) end
    if err ~= nil then error(err, 0) end
  end
end

--- wait() for the iterator of a generic for. On 5.1 (no yield across the for's call) a
-- coroutine of ours cannot yield there: it drives the engine itself, and resumes the other
-- ready coroutines meanwhile, so they go on while it waits. Elsewhere: wait().
function Scheduler:wait_in_iterator(call, until_fn)
  local task = self:current_task()
  if not (OLD_YIELD and task) then return self:wait(call, until_fn) end
  local prev = task.call
  task.call = call
  while not until_fn(call) do
    local wait = self:has_ready() and 0 or 0.05
    local nt = self:next_delay()
    if nt and nt < wait then wait = nt end
    local _, err = core.drive(wait)
    self:fire_timers()
    self:resume_ready()
    if err ~= nil then error(err, 0) end
    -- its group failed meanwhile: unwind this coroutine too
    if task.dead then error("llmchat: coroutine cancelled (its group failed)", 0) end
  end
  task.call = prev
end

--- Runs fn(...) as a coroutine and drives everything until it and every coroutine it
-- spawned are done. An error in one cancels the others and is raised from run.
function Scheduler:run(fn, ...)
  if type(fn) ~= "function" then
    error(("llmchat.run: bad argument #1 'fn' (a function expected, got %s)"):format(type(fn)), 2)
  end
  local group = { left = 0 }
  local saved = self.current_group
  self.current_group = group
  self:spawn(fn, ...)
  self.current_group = saved
  local ok, err = pcall(function()
    while group.left > 0 and group.err == nil do
      if self.in_poll or core.dispatching() then
        error("llmchat.run: cannot run from inside a callback that poll fired", 0)
      end
      if self:has_ready() then
        self.in_poll = true
        local rok, rerr = pcall(self.resume_ready, self)
        self.in_poll = false
        if not rok then error(rerr, 0) end
      end
      if group.left > 0 and group.err == nil then self:poll(self:has_ready() and 0 or 0.05) end
    end
  end)
  if not ok and group.err == nil then group.err = err end
  if group.err ~= nil then
    self:kill_group(group)
    error(group.err, 0)
  end
end

---------------------------------------------------------------------------
-- this Lua state's scheduler, and the module functions bound to it

local S = Scheduler.new()
M.default = S

-- (tail calls: an error's level still names the caller of llmchat.poll & co.)
function M.poll(timeout, budget) return S:poll(timeout, budget) end
function M.run(fn, ...) return S:run(fn, ...) end
function M.spawn(fn, ...) return S:spawn(fn, ...) end
function M.sleep(seconds) return S:sleep(seconds) end
function M.timeout() return S:timeout() end
function M.after(delay, fn, owner) return S:after(delay, fn, owner) end
function M.wait(call, until_fn) return S:wait(call, until_fn) end
function M.wait_in_iterator(call, until_fn) return S:wait_in_iterator(call, until_fn) end
function M.current_task() return S:current_task() end
function M.pcall(f, ...) return S:pcall(f, ...) end
function M.gone(co) return S:gone(co) end
function M.abandon(call) return S:abandon(call) end
function M.notify(call) return S:notify(call) end
function M.call_started(call) return S:call_started(call) end
function M.call_finished(call) return S:call_finished(call) end
function M.active() return S.active end

--- A value whose collection calls fn (5.1 and LuaJIT: a newproxy userdata; 5.2+: a
-- table with __gc). Keep it in the object whose life it follows.
function M.on_collect(fn)
  local np = rawget(_G, "newproxy")
  if np then
    local p = np(true)
    getmetatable(p).__gc = function() fn() end
    return p
  end
  return setmetatable({}, { __gc = function() fn() end })
end

return M
