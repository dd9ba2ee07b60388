--- The scheduler: timers (retry backoff), polling, blocking waits and the
-- coroutines of llmchat.run / llmchat.spawn. One per Lua state, like the C
-- engine it drives.
local core = require("llmchat.core")

local M = {}

local now = core.now
local unpack = table.unpack or unpack  -- luacheck: ignore 143

-- PUC Lua 5.1 cannot yield across pcall, a metamethod or the call of a generic for's
-- iterator; LuaJIT and 5.2+ can
local OLD_YIELD = _VERSION == "Lua 5.1" and not rawget(_G, "jit")
M.OLD_YIELD = OLD_YIELD

local function pack(...) return { n = select("#", ...), ... } end

-- timers: a small binary heap ordered by due time
local heap = {}
local timer_seq = 0

local function heap_up(i)
  while i > 1 do
    local p = math.floor(i / 2)
    if heap[p].at <= heap[i].at then break end
    heap[p], heap[i] = heap[i], heap[p]
    i = p
  end
end

local function heap_down(i)
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

--- Runs fn after `delay` seconds (from poll or a blocking wait). `owner`
-- (a call) lets a blocking wait fire only its own timers. Returns the timer;
-- timer.cancelled = true stops it.
function M.after(delay, fn, owner)
  timer_seq = timer_seq + 1
  local t = { at = now() + math.max(0, delay), fn = fn, owner = owner, seq = timer_seq }
  heap[#heap + 1] = t
  heap_up(#heap)
  return t
end

local function pop_timer()
  local t = heap[1]
  local n = #heap
  heap[1] = heap[n]
  heap[n] = nil
  if n > 1 then heap_down(1) end
  return t
end

--- Seconds until the next timer (of `owner` when given), nil if none.
local function next_delay(owner)
  if heap[1] == nil then return nil end
  if owner then
    local best
    for _, t in ipairs(heap) do
      if t.owner == owner and not t.cancelled and (not best or t.at < best) then best = t.at end
    end
    return best and math.max(0, best - now())
  end
  while heap[1] and heap[1].cancelled do pop_timer() end
  return heap[1] and math.max(0, heap[1].at - now())
end

-- Fires due timers; with `owner`, only that owner's (the rest stay queued).
local function by_time(a, b) return a.at < b.at end

local function fire_timers(owner)
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
    local t = pop_timer()
    if not t.cancelled then
      t.cancelled = true
      t.fn()
    end
  end
end

-- calls started and not finished (a retry waiting on its timer counts)
local active = 0
function M.call_started() active = active + 1 end
function M.call_finished() active = active - 1 end
function M.active() return active end

---------------------------------------------------------------------------
-- coroutines

local tasks = setmetatable({}, { __mode = "k" })  -- coroutine -> task
local ready = {}                                   -- tasks to resume
local ntasks = 0

local function wake(task)
  if task and not task.queued and not task.dead then
    task.queued = true
    ready[#ready + 1] = task
  end
end
M.wake = wake

--- Calls started inside a task are tracked by it (weakly): when the task dies with an
-- error, or is killed, every call it started and did not finish is cancelled.
function M.track(task, call)
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
  if task.call and task.call.cancel and not task.call.done then task.call:cancel() end
end

local function kill_group(group)
  for co, task in pairs(tasks) do
    if task.group == group and not task.dead and co == task.co then
      task.dead = true
      ntasks = ntasks - 1
      tasks[co] = nil
      cancel_calls(task)
      if coroutine.close then pcall(coroutine.close, co) end
    end
  end
end

-- Resumes every task that was ready when it began. A task outside any group (spawned
-- outside llmchat.run) that raises does not strand the others of the batch: they are
-- resumed too, and the first such error is raised once the batch is done.
local function resume_ready()
  local batch = ready
  ready = {}
  local first_err, has_err
  for _, task in ipairs(batch) do
    task.queued = false
    -- a task waiting inside a generic for on 5.1 is running (it resumed us): it goes on
    -- when its own wait ends
    if not task.dead and coroutine.status(task.co) == "suspended" then
      local ok, err = coroutine.resume(task.co, unpack(task.args or {}))
      task.args = nil
      if coroutine.status(task.co) == "dead" then
        task.dead = true
        ntasks = ntasks - 1
        tasks[task.co] = nil
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
            kill_group(task.group)
          elseif not has_err then
            has_err, first_err = true, err
          end
        end
      end
    end
  end
  if has_err then error(first_err, 0) end
end

local current_group = nil

--- Starts fn(...) as a coroutine driven by llmchat.run / llmchat.poll.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error(("llmchat.spawn: bad argument #1 'fn' (a function expected, got %s)"):format(type(fn)), 2)
  end
  local co = coroutine.create(fn)
  local parent = tasks[coroutine.running() or false]
  local group = parent and parent.group or current_group
  local task = { co = co, args = { ... }, group = group }
  tasks[co] = task
  ntasks = ntasks + 1
  if group then group.left = group.left + 1 end
  wake(task)
  return co
end

--- The task of the running coroutine, when it is one of ours.
function M.current_task()
  local co = coroutine.running()
  return co and tasks[co]
end

--- pcall that a coroutine of ours may yield through, on every Lua version. On 5.1 the
-- function runs in a coroutine of its own (mapped to the same task) whose yields are passed
-- up to the scheduler and whose errors are caught by resume.
function M.pcall(f, ...)
  local task = OLD_YIELD and M.current_task()
  if not task then return pcall(f, ...) end
  local co = coroutine.create(f)
  tasks[co] = task
  local args = pack(...)
  while true do
    local r = pack(coroutine.resume(co, unpack(args, 1, args.n)))
    if coroutine.status(co) == "dead" then
      tasks[co] = nil
      return unpack(r, 1, r.n)
    end
    args = pack(coroutine.yield(unpack(r, 2, r.n)))
  end
end

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

---------------------------------------------------------------------------
-- polling

--- Seconds until llmchat wants llmchat.poll to run again (libcurl's timer,
-- idle checks, retry and sleep timers, ready coroutines); nil when nothing
-- is scheduled. A host loop sleeps at most this long between polls.
function M.timeout()
  if #ready > 0 then return 0 end
  local t = core.timeout()
  local nt = next_delay()
  if nt and (not t or nt < t) then t = nt end
  return t
end

local in_poll = false

-- The default frame budget of poll(0): what one call may spend moving transfers and
-- firing callbacks before it leaves the rest queued (in order) for the next poll. A 60 fps
-- frame is 16.7 ms; a millisecond of it is llmchat's.
local DEFAULT_BUDGET = 0.001
M.DEFAULT_BUDGET = DEFAULT_BUDGET

--- Advances every request in flight; fires callbacks and due timers; resumes
-- coroutines. Returns how many calls and coroutines are still going.
-- budget (seconds): stop delivering once that much time is spent (what is left stays
-- queued, in order; llmchat.timeout() is 0 then). Default: DEFAULT_BUDGET for poll(0),
-- none for a poll that may wait. false: no budget.
function M.poll(timeout, budget)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout) then
    error("llmchat.poll: 'timeout' must be a number of seconds", 2)
  end
  if budget ~= nil and budget ~= false and (type(budget) ~= "number" or budget ~= budget or budget < 0) then
    error("llmchat.poll: 'budget' must be a number of seconds (or false)", 2)
  end
  if in_poll or core.dispatching() then
    error("llmchat.poll: cannot poll from inside a callback that poll fired", 2)
  end
  if budget == nil then budget = (timeout or 0) == 0 and DEFAULT_BUDGET or 0 end
  if budget == false then budget = 0 end
  in_poll = true
  local ok, err = pcall(function()
    local wait = timeout or 0
    if #ready > 0 then wait = 0 end
    local nt = next_delay()
    if nt and nt < wait then wait = nt end
    if core.inflight() == 0 and not nt then wait = 0 end
    local _, cberr = core.drive(wait, nil, budget)
    fire_timers()
    resume_ready()
    if cberr ~= nil then error(cberr, 0) end
  end)
  in_poll = false
  if not ok then error(err, 0) end
  return active + ntasks
end

--- Sleeps `seconds`: yields inside a coroutine of ours, else drives the
-- engine meanwhile (callbacks of other requests wait for the next poll).
function M.sleep(seconds)
  local task = M.current_task()
  if task then
    local t = M.after(seconds, function() wake(task) end)
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

--- Waits until `call` is done. In a coroutine of ours: yields to the
-- scheduler. Otherwise drives the engine, dispatching only this call's
-- callbacks and timers, so a blocking call never fires another request's.
local function is_done(call) return call.done end

function M.wait(call, until_fn)
  until_fn = until_fn or is_done
  local task = M.current_task()
  if task then
    local prev = task.call
    task.call = call
    call.waiter = task
    while not until_fn(call) do coroutine.yield() end
    task.call = prev
    return
  end
  while not until_fn(call) do
    local wait = 1.0
    local nt = next_delay(call)
    if nt and nt < wait then wait = nt end
    -- only this call's callbacks; a call that never reached the network (it failed before
    -- sending) has no request: drive without dispatching anybody's
    local _, err = core.drive(wait, call.req or false)
    fire_timers(call)
    if err ~= nil then error(err, 0) end
  end
end

--- wait() for the iterator of a generic for. On 5.1 (no yield across the for's call) a
-- coroutine of ours cannot yield there: it drives the engine itself, and resumes the other
-- ready coroutines meanwhile, so they go on while it waits. Elsewhere: wait().
function M.wait_in_iterator(call, until_fn)
  local task = M.current_task()
  if not (OLD_YIELD and task) then return M.wait(call, until_fn) end
  local prev = task.call
  task.call = call
  while not until_fn(call) do
    local wait = #ready > 0 and 0 or 0.05
    local nt = next_delay()
    if nt and nt < wait then wait = nt end
    local _, err = core.drive(wait)
    fire_timers()
    resume_ready()
    if err ~= nil then error(err, 0) end
  end
  task.call = prev
end

--- Runs fn(...) as a coroutine and drives everything until it and every
-- coroutine it spawned are done. An error in one cancels the others and is
-- raised from run.
function M.run(fn, ...)
  if type(fn) ~= "function" then
    error(("llmchat.run: bad argument #1 'fn' (a function expected, got %s)"):format(type(fn)), 2)
  end
  local group = { left = 0 }
  local saved = current_group
  current_group = group
  M.spawn(fn, ...)
  current_group = saved
  local ok, err = pcall(function()
    while group.left > 0 and group.err == nil do
      if in_poll or core.dispatching() then
        error("llmchat.run: cannot run from inside a callback that poll fired", 0)
      end
      if #ready > 0 then
        in_poll = true
        local rok, rerr = pcall(resume_ready)
        in_poll = false
        if not rok then error(rerr, 0) end
      end
      if group.left > 0 and group.err == nil then M.poll(#ready > 0 and 0 or 0.05) end
    end
  end)
  if not ok and group.err == nil then group.err = err end
  if group.err ~= nil then
    kill_group(group)
    error(group.err, 0)
  end
end

return M
