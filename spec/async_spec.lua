-- Never block (issue 5): client:start + llmchat.poll, cancel, callback errors, GC,
-- coroutines (llmchat.run / spawn) and client:map, against the local server.
local server = require("support.server")
local llmchat = require("llmchat")

local now = llmchat.core.now

local function user(text) return { { role = "user", content = text } } end

local key_seq = 0
local function fresh_key(name)
  key_seq = key_seq + 1
  return ("%s-%d-%d-%d"):format(name, os.time(), math.random(1e9), key_seq)
end

-- polls until pred() is true (or `limit` seconds pass); returns the number of poll calls
local function poll_until(pred, limit)
  local deadline = now() + (limit or 10)
  local n = 0
  while not pred() do
    if now() > deadline then error("poll_until: timed out", 2) end
    llmchat.poll(0.01)
    n = n + 1
  end
  return n
end

local function drain(limit)
  local deadline = now() + (limit or 10)
  while llmchat.poll(0.01) > 0 do
    if now() > deadline then error("drain: timed out", 2) end
  end
end

describe("non-blocking calls", function()
  local srv, c
  setup(function()
    srv = server.start()
    c = llmchat.client{ base_url = srv.url, model = "async-model", api_key = "sk-test",
      retry_base_delay = 0.01, retry_max_delay = 0.05 }
  end)
  teardown(function() srv.stop() end)
  after_each(function()
    -- nothing may be left running for the next test
    pcall(drain, 5)
  end)

  local function stats() return server.request(srv, "GET", "/_stats").json end

  describe("start and poll", function()
    -- Timing bounds here are fractions of the server's own delays (seconds), never absolute
    -- milliseconds: they hold under ASan, valgrind and a loaded machine, and still fail if a
    -- call blocked until the answer.
    it("start returns at once even against a slow server", function()
      local done_res
      local t0 = now()
      local req = c:start{ messages = user("slow"), mock = { delay = 3 },
        on_done = function(res) done_res = res end }
      local dt = now() - t0
      assert.truthy(dt < 1, ("start took %.3f s (the server answers after 3 s)"):format(dt))
      assert.is_false(req.done)
      assert.is_nil((req:result()))
      -- a streaming start too
      t0 = now()
      local sreq = c:start{ messages = user("slow stream"), stream = true, mock = { delay = 3 },
        on_delta = function() end }
      assert.truthy(now() - t0 < 1)
      -- poll(0) returns at once while both wait for headers
      for _ = 1, 5 do
        t0 = now()
        local left = llmchat.poll(0)
        assert.truthy(now() - t0 < 0.5, ("poll(0) took %.3f s"):format(now() - t0))
        assert.equal(2, left)
      end
      poll_until(function() return req.done and sreq.done end)
      assert.equal("slow", done_res.content)
      assert.equal("slow", req:result().content)
      assert.equal("slow stream", sreq:result().content)
      assert.equal(0, llmchat.poll(0))
    end)

    it("poll(0) with nothing in flight returns 0 at once", function()
      local t0 = now()
      assert.equal(0, llmchat.poll(0))
      assert.equal(0, llmchat.poll())
      assert.truthy(now() - t0 < 0.5)
    end)

    it("poll(timeout) waits at most about timeout when nothing arrives", function()
      local req = c:start{ messages = user("x"), mock = { delay = 3 } }
      local t0 = now()
      llmchat.poll(0.1)
      local dt = now() - t0
      assert.truthy(dt < 1.5, ("poll(0.1) took %.3f s (the answer comes after 3 s)"):format(dt))
      assert.is_false(req.done)
      req:cancel()
    end)

    it("poll rejects a timeout that is not a number", function()
      assert.has_error(function() llmchat.poll("soon") end)
    end)

    it("16 concurrent streams all complete correctly from a poll loop", function()
      local N = 16
      local reqs, texts, order_ok, done = {}, {}, true, 0
      local t0 = now()
      for i = 1, N do
        texts[i] = {}
        local want = ("stream number %02d says: %s"):format(i, ("abc"):rep(i))
        reqs[i] = c:start{ messages = user(want), stream = true,
          mock = { chunk_size = 3, chunk_delay = 0.03 },
          on_delta = function(t, ev)
            if ev.choice ~= 1 then order_ok = false end
            texts[i][#texts[i] + 1] = t
          end,
          on_done = function(res, err)
            done = done + 1
            assert(res, err)
            assert(res.content == want)
          end }
        reqs[i].want = want
      end
      local polls = poll_until(function() return done == N end)
      local dt = now() - t0
      assert.is_true(order_ok)
      for i = 1, N do
        assert.equal(reqs[i].want, table.concat(texts[i]))
        local res, err = reqs[i]:result()
        assert.is_nil(err)
        assert.equal(reqs[i].want, res.content)
      end
      -- concurrent: the time is about the longest stream's, not the sum of all of them
      local sequential = 0
      for i = 1, N do sequential = sequential + math.ceil(#reqs[i].want / 3) * 0.03 end
      assert.truthy(dt < sequential / 2, ("took %.2f s; one after another: %.2f s"):format(dt, sequential))
      assert.truthy(polls > 1)
    end)

    it("reuses connections across concurrent requests (keep-alive pool)", function()
      local function wave(n)
        local ids, left = {}, n
        for i = 1, n do
          c:start{ messages = user("wave " .. i), stream = (i % 2 == 0), mock = { delay = 0.05 },
            on_done = function(res, err)
              assert(res, err)
              ids[res.headers["x-connection-id"]] = true
              left = left - 1
            end }
        end
        poll_until(function() return left == 0 end)
        return ids
      end
      local first = wave(8)
      local before = stats().connections
      local second = wave(8)
      local third = wave(8)
      local after = stats().connections
      -- no new TCP connection for the later waves (the stats request itself uses its own)
      assert.truthy(after - before <= 1, ("%d new connections"):format(after - before))
      local n1 = 0
      for _ in pairs(first) do n1 = n1 + 1 end
      assert.truthy(n1 >= 2, "first wave ran on " .. n1 .. " connection(s)")
      for id in pairs(second) do assert.is_true(first[id], "new connection " .. id) end
      for id in pairs(third) do assert.is_true(first[id], "new connection " .. id) end
    end)
  end)

  describe("retries", function()
    it("wait on timers: another stream's deltas keep arriving during a retry-after wait", function()
      local key = fresh_key("retry-timer")
      local a_done_at, a_res, a_err
      local b_times = {}
      local t0 = now()
      local a = c:start{ messages = user("retried"), max_retries = 2,
        mock = { key = key, fail_times = 1, status = 429, headers = { ["retry-after-ms"] = "1000" } },
        on_done = function(res, err) a_res, a_err, a_done_at = res, err, now() end }
      local b = c:start{ messages = user(("b"):rep(60)), stream = true,
        mock = { chunk_size = 2, chunk_delay = 0.02 },
        on_delta = function() b_times[#b_times + 1] = now() end }
      poll_until(function() return a.done and b.done end)
      assert.is_nil(a_err)
      assert.equal("retried", a_res.content)
      assert.truthy(a_done_at - t0 >= 0.95, ("retried after %.3f s"):format(a_done_at - t0))
      assert.equal(2, server.request(srv, "GET", "/_stats?key=" .. key).json.count)
      -- b's deltas kept coming while a waited: many of them between 0.05 s and 0.95 s
      local during = 0
      for _, t in ipairs(b_times) do
        if t - t0 > 0.05 and t - t0 < 0.95 then during = during + 1 end
      end
      assert.truthy(during >= 5, ("%d deltas during the wait"):format(during))
      assert.equal(("b"):rep(60), b:result().content)
    end)

    it("poll does not sleep through a retry timer", function()
      local key = fresh_key("retry-poll")
      local t0 = now()
      local r = c:start{ messages = user("soon"), max_retries = 1,
        mock = { key = key, fail_times = 1, status = 503, headers = { ["retry-after-ms"] = "100" } } }
      -- one long poll at a time: each returns near the timer, not after 2 s
      while not r.done do
        local p0 = now()
        llmchat.poll(2)
        assert.truthy(now() - p0 < 1.0)
      end
      assert.equal("soon", r:result().content)
      assert.truthy(now() - t0 < 1.5)
    end)
  end)

  describe("cancel", function()
    it("req:cancel() mid-stream: on_done gets kind cancelled with the partial", function()
      local got, done_err, deltas_after = {}, nil, 0
      local cancelled = false
      local req
      req = c:start{ messages = user(("z"):rep(200)), stream = true,
        mock = { chunk_size = 2, chunk_delay = 0.005 },
        on_delta = function(t)
          if cancelled then deltas_after = deltas_after + 1 end
          got[#got + 1] = t
        end,
        on_done = function(res, err) assert(res == nil); done_err = err end }
      poll_until(function() return #got >= 3 end)
      req:cancel()
      cancelled = true
      assert.is_true(req.done)
      assert.equal("cancelled", done_err.kind)
      assert.equal("cancelled", select(2, req:result()).kind)
      assert.is_table(done_err.partial)
      assert.truthy(#(done_err.partial.content or "") >= 6)
      for _ = 1, 5 do llmchat.poll(0.01) end
      assert.equal(0, deltas_after)
      assert.equal(0, llmchat.poll(0))
      req:cancel()  -- twice is harmless
    end)

    for _, how in ipairs({ "cancel", "close" }) do
      it(("call:%s() from inside on_delta, with more deltas of the same dispatch still to come"):format(how), function()
        -- no delay between chunks: one dispatch holds many deltas, and the callback ends
        -- (and frees) its own request in the middle of them
        local got, done_err = 0, nil
        local call
        call = c:start{ messages = user(("q"):rep(300)), stream = true, mock = { chunk_size = 1 },
          on_delta = function()
            got = got + 1
            if got == 5 then call[how](call) end
          end,
          on_done = function(_, err) done_err = err end }
        poll_until(function() return call.done end)
        assert.equal(5, got)
        assert.equal("cancelled", done_err.kind)
        for _ = 1, 3 do llmchat.poll(0.01) end
        assert.equal(5, got)
        assert.equal(0, llmchat.poll(0))  -- nothing left in flight
      end)
    end

    it("cancel before any byte arrived", function()
      local err_
      local req = c:start{ messages = user("x"), mock = { delay = 0.3 },
        on_done = function(_, e) err_ = e end }
      llmchat.poll(0)
      req:cancel()
      assert.equal("cancelled", err_.kind)
      assert.equal(0, llmchat.poll(0))
    end)

    it("cancel during a retry wait stops the timer", function()
      local key = fresh_key("cancel-retry")
      local done_count, err_ = 0, nil
      local req = c:start{ messages = user("x"), max_retries = 3,
        mock = { key = key, fail_times = 5, status = 429, headers = { ["retry-after-ms"] = "300" } },
        on_done = function(_, e) done_count = done_count + 1; err_ = e end }
      poll_until(function()
        return server.request(srv, "GET", "/_stats?key=" .. key).json.count >= 1 and req.timer ~= nil
      end)
      req:cancel()
      assert.equal("cancelled", err_.kind)
      local t0 = now()
      while now() - t0 < 0.5 do llmchat.poll(0.05) end
      assert.equal(1, done_count)
      assert.equal(1, server.request(srv, "GET", "/_stats?key=" .. key).json.count)
    end)

    it("cancel after the transfer ended but before its callbacks fired still cancels", function()
      local dones = {}
      local a = c:start{ messages = user("tiny"), stream = true, on_delta = function() end,
        on_done = function(res, err) dones[#dones + 1] = res and "result" or err.kind end }
      -- waiting on another request drives the engine but dispatches only that one:
      -- a's transfer finishes meanwhile, its completion stays queued
      local b = c:start{ messages = user("slow"), mock = { delay = 0.2 } }
      b:wait()
      assert.is_false(a.done)
      a:cancel()
      assert.is_true(a.done)
      drain()
      assert.equal(1, #dones)
      if dones[1] ~= "cancelled" then
        pending("BUG: req:cancel() on a request whose transfer had finished (completion not yet "
          .. "dispatched) delivers the full result: Call:cancel (lua/llmchat/client.lua) calls "
          .. "req:cancel(), which r_cancel (src/core.c) ignores unless state == REQ_RUNNING, then "
          .. "complete() reads outcome 'ok'; cancel should mark the request cancelled (reason "
          .. "REASON_CANCELLED) when it is done but not dispatched, or finish the call with kind "
          .. "cancelled directly")
        return
      end
      assert.equal("cancelled", select(2, a:result()).kind)
    end)

    it("req:wait() blocks for one request", function()
      local req = c:start{ messages = user("waited"), stream = true }
      local res, err = req:wait()
      assert.is_nil(err)
      assert.equal("waited", res.content)
    end)
  end)

  describe("callbacks", function()
    it("an error in a callback reaches poll's caller and only affects its request", function()
      local bad_err, good_res
      local bad_deltas = 0
      local bad = c:start{ messages = user(("e"):rep(40)), stream = true,
        mock = { chunk_size = 2, chunk_delay = 0.003 },
        on_delta = function()
          bad_deltas = bad_deltas + 1
          if bad_deltas == 2 then error("callback exploded") end
        end,
        on_done = function(_, e) bad_err = e end }
      local good_text = {}
      local good = c:start{ messages = user(("g"):rep(40)), stream = true,
        mock = { chunk_size = 2, chunk_delay = 0.003 },
        on_delta = function(t) good_text[#good_text + 1] = t end,
        on_done = function(r) good_res = r end }
      local raised = {}
      local deadline = now() + 5
      while not (bad.done and good.done) and now() < deadline do
        local ok, e = pcall(llmchat.poll, 0.01)
        if not ok then raised[#raised + 1] = e end
      end
      assert.equal(1, #raised)
      assert.truthy(tostring(raised[1]):find("callback exploded", 1, true))
      assert.equal(2, bad_deltas)  -- no delta after the error
      assert.is_true(bad.done)
      assert.equal("cancelled", bad_err.kind)
      assert.equal(("g"):rep(40), table.concat(good_text))
      assert.equal(("g"):rep(40), good_res.content)
      -- the engine is fine afterwards
      assert.equal("still fine", assert(c:chat{ messages = user("still fine") }).content)
    end)

    it("an error in on_done reaches poll's caller", function()
      local req = c:start{ messages = user("x"), on_done = function() error("on_done failed") end }
      local ok, e = true, nil
      local deadline = now() + 5
      while ok and now() < deadline do ok, e = pcall(llmchat.poll, 0.01) end
      assert.is_false(ok)
      assert.truthy(tostring(e):find("on_done failed", 1, true))
      assert.is_true(req.done)
    end)

    it("poll inside a callback fired by poll raises a clear error", function()
      local msgs = {}
      local req = c:start{ messages = user("abcdef"), stream = true,
        on_delta = function()
          local ok, e = pcall(llmchat.poll, 0)
          if not ok then msgs[#msgs + 1] = e end
        end,
        on_done = function()
          local ok, e = pcall(llmchat.poll, 0)
          if not ok then msgs[#msgs + 1] = e end
        end }
      poll_until(function() return req.done end)
      assert.is_true(#msgs >= 2)
      for _, m in ipairs(msgs) do
        assert.truthy(tostring(m):find("cannot poll from inside a callback", 1, true), tostring(m))
      end
      assert.equal("abcdef", req:result().content)
    end)

    it("llmchat.run inside a callback raises a clear error", function()
      local msg
      local req = c:start{ messages = user("x"),
        on_done = function()
          local ok, e = pcall(llmchat.run, function() end)
          if not ok then msg = e end
        end }
      poll_until(function() return req.done end)
      assert.truthy(tostring(msg):find("callback", 1, true), tostring(msg))
    end)
  end)

  describe("garbage collection", function()
    it("requests whose handles are dropped still complete; collectgarbage in flight is safe", function()
      local done, ok_count = 0, 0
      local before = stats().requests
      for i = 1, 24 do
        c:start{ messages = user("gc " .. i), stream = (i % 2 == 0),
          mock = { chunk_delay = 0.002, delay = (i % 3) * 0.02 },
          on_done = function(res) done = done + 1; if res and res.content == "gc " .. i then ok_count = ok_count + 1 end end }
      end
      -- no handle kept; collect hard while they run
      local deadline = now() + 10
      while done < 24 and now() < deadline do
        collectgarbage("collect")
        collectgarbage("collect")
        llmchat.poll(0.005)
      end
      assert.equal(24, done)
      assert.equal(24, ok_count)
      assert.equal(before + 24 + 1, stats().requests)  -- +1: the stats request
    end)

    it("requests without a handle and without on_done: collected in flight does not crash", function()
      for i = 1, 20 do
        c:start{ messages = user("orphan " .. i), stream = true, mock = { chunk_delay = 0.002 } }
      end
      local deadline = now() + 10
      repeat
        collectgarbage("collect")
      until llmchat.poll(0.005) == 0 or now() > deadline
      assert.equal(0, llmchat.poll(0))
      assert.equal(0, llmchat.core.inflight())
      collectgarbage("collect")
      assert.equal("after orphans", assert(c:chat{ messages = user("after orphans") }).content)
    end)

    it("a dropped client with requests in flight is not freed under libcurl", function()
      local done = 0
      do
        local c2 = llmchat.client{ base_url = srv.url, api_key = "k" }
        for i = 1, 8 do
          c2:start{ messages = user("c2 " .. i), stream = true, mock = { chunk_delay = 0.002 },
            on_done = function(res) if res then done = done + 1 end end }
        end
      end
      collectgarbage("collect")
      collectgarbage("collect")
      drain()
      assert.equal(8, done)
    end)
  end)

  describe("coroutines", function()
    it("llmchat.run: two spawned chats run concurrently (time = max, not sum)", function()
      local r1, r2
      local t0 = now()
      llmchat.run(function()
        llmchat.spawn(function() r1 = assert(c:chat{ messages = user("one"), mock = { delay = 2 } }) end)
        llmchat.spawn(function() r2 = assert(c:chat{ messages = user("two"), mock = { delay = 2 } }) end)
      end)
      local dt = now() - t0
      assert.equal("one", r1.content)
      assert.equal("two", r2.content)
      -- one after the other would take 4 s
      assert.truthy(dt >= 1.9 and dt < 3.5, ("took %.2f s"):format(dt))
    end)

    it("run returns only when every spawned coroutine is done; spawn passes arguments", function()
      local out = {}
      llmchat.run(function(a, b)
        out[#out + 1] = a .. b
        for i = 1, 3 do
          llmchat.spawn(function(k)
            llmchat.sleep(0.01 * k)
            local content = assert(c:chat{ messages = user("k" .. k) }).content
            out[#out + 1] = content  -- (not out[#out + 1] = chat(): #out is taken before the yield)
          end, i)
        end
      end, "x", "y")
      table.sort(out)
      assert.same({ "k1", "k2", "k3", "xy" }, out)
    end)

    it("client:stream inside a coroutine interleaves with another coroutine", function()
      local log = {}
      llmchat.run(function()
        llmchat.spawn(function()
          for ev in c:stream{ messages = user("abcdefgh"), mock = { chunk_size = 1, chunk_delay = 0.02 } } do
            if ev.kind == "content" then log[#log + 1] = "s:" .. ev.delta end
          end
        end)
        llmchat.spawn(function()
          for i = 1, 4 do
            llmchat.sleep(0.03)
            log[#log + 1] = "t" .. i
          end
        end)
      end)
      local s, first_t, last_s = {}, nil, nil
      for i, e in ipairs(log) do
        if e:sub(1, 2) == "s:" then s[#s + 1] = e:sub(3); last_s = i
        elseif not first_t then first_t = i end
      end
      assert.equal("abcdefgh", table.concat(s))
      assert.truthy(first_t < last_s, "the other coroutine ran while the stream was going")
    end)

    it("client:stream in a slow coroutine loses no event when several dispatches queue up", function()
      -- the consumer sleeps after every event, so the other coroutine's polls dispatch
      -- new batches of this stream before the last one is drained
      local text = ("0123456789"):rep(6)
      local got, kinds = {}, {}
      llmchat.run(function()
        llmchat.spawn(function()
          for ev in c:stream{ messages = user(text), mock = { chunk_size = 1, chunk_delay = 0.002 } } do
            if ev.kind == "content" then got[#got + 1] = ev.delta end
            kinds[#kinds + 1] = ev.kind
            if #got % 7 == 0 then llmchat.sleep(0.03) end
          end
        end)
        llmchat.spawn(function()
          for _ = 1, 40 do llmchat.sleep(0.005) end
        end)
      end)
      assert.equal(text, table.concat(got))
      assert.equal("done", kinds[#kinds])
    end)

    it("chat with on_delta inside a coroutine", function()
      local got, res = {}, nil
      llmchat.run(function()
        res = c:chat{ messages = user("coro delta"), on_delta = function(t) got[#got + 1] = t end }
      end)
      assert.equal("coro delta", table.concat(got))
      assert.equal("coro delta", res.content)
    end)

    it("an error in one coroutine cancels the others and is raised by run", function()
      local other_finished = false
      local t0 = now()
      local ok, e = pcall(llmchat.run, function()
        llmchat.spawn(function()
          c:chat{ messages = user("long"), mock = { delay = 3 } }
          other_finished = true
        end)
        llmchat.spawn(function()
          for _ in c:stream{ messages = user(("s"):rep(100)), mock = { chunk_delay = 0.05 } } do end
          other_finished = true
        end)
        llmchat.spawn(function()
          llmchat.sleep(0.1)
          error("coroutine failed")
        end)
      end)
      local dt = now() - t0
      assert.is_false(ok)
      assert.truthy(tostring(e):find("coroutine failed", 1, true))
      -- the others would take 3 s and more: they were cancelled, not waited for
      assert.truthy(dt < 2.5, ("took %.2f s"):format(dt))
      assert.is_false(other_finished)
      assert.equal(0, llmchat.core.inflight())
      assert.equal(0, llmchat.poll(0))
      -- everything still works
      llmchat.run(function() assert(c:chat{ messages = user("ok") }) end)
    end)

    it("an error raised in on_delta of a chat inside run is raised by run", function()
      local ok, e = pcall(llmchat.run, function()
        c:chat{ messages = user("abcdef"), on_delta = function() error("delta failed in coroutine") end }
      end)
      assert.is_false(ok)
      assert.truthy(tostring(e):find("delta failed in coroutine", 1, true))
      assert.equal(0, llmchat.core.inflight())
    end)

    it("poll drives spawned coroutines without run", function()
      local res
      llmchat.spawn(function() res = c:chat{ messages = user("spawned") } end)
      poll_until(function() return res ~= nil end)
      assert.equal("spawned", res.content)
      assert.equal(0, llmchat.poll(0))
    end)
  end)

  describe("client:map", function()
    it("40 requests, concurrency 4, some 429 + retry-after: all results in order, max 4 in flight", function()
      local N, CONC = 40, 4
      local base = fresh_key("map")
      local list = {}
      for i = 1, N do
        local item = { messages = user("item " .. i), mock = { delay = 0.01 } }
        if i % 6 == 0 then
          item.mock = { key = base .. "-" .. i, fail_times = 1, status = 429,
            headers = { ["retry-after-ms"] = "30" } }
        end
        list[i] = item
      end
      -- count the calls in flight by wrapping this client's start (map calls self:start)
      local mc = llmchat.client{ base_url = srv.url, api_key = "k", retry_base_delay = 0.01 }
      local inflight, max_inflight, seen = 0, 0, {}
      local Client_start = getmetatable(mc).__index.start
      mc.start = function(self, p, ...)
        inflight = inflight + 1
        if inflight > max_inflight then max_inflight = inflight end
        local user_done = p.on_done
        p.on_done = function(...)
          inflight = inflight - 1
          if user_done then return user_done(...) end
        end
        return Client_start(self, p, ...)
      end
      local before = stats().requests
      local t0 = now()
      local results = mc:map(list, { concurrency = CONC, on_result = function(i, res, err)
        assert(not seen[i], "result " .. i .. " twice")
        seen[i] = true
        assert(res or err)
      end })
      local dt = now() - t0
      assert.equal(N, #results)
      for i = 1, N do
        assert.is_true(seen[i])
        assert.is_nil(results[i].kind, tostring(results[i].message))
        assert.equal("item " .. i, results[i].content)
      end
      assert.truthy(max_inflight <= CONC, "max in flight " .. max_inflight)
      assert.equal(CONC, max_inflight)
      -- 40 answers + 6 rate-limited first attempts (+ this stats request)
      assert.equal(before + N + 6 + 1, stats().requests)
      for i = 6, N, 6 do
        assert.equal(2, server.request(srv, "GET", "/_stats?key=" .. base .. "-" .. i).json.count)
      end
      assert.truthy(dt < 10)
    end)

    it("map keeps errors in place (a failure is a result, never lost)", function()
      local list = {
        { messages = user("a") },
        { messages = user("b"), max_retries = 0, mock = { status = 400 } },
        { messages = user("c"), stream = true },
        "not a table",
        { messages = user("e"), max_retries = 0, mock = { status = 401 } },
      }
      local results = c:map(list, { concurrency = 2 })
      assert.equal(5, #results)
      assert.equal("a", results[1].content)
      assert.equal("bad_request", results[2].kind)
      assert.equal("c", results[3].content)
      assert.equal("bad_request", results[4].kind)
      assert.equal("auth", results[5].kind)
    end)

    it("map inside llmchat.run yields instead of blocking", function()
      local results, ticks = nil, 0
      llmchat.run(function()
        llmchat.spawn(function()
          local list = {}
          for i = 1, 8 do list[i] = { messages = user("m" .. i), mock = { delay = 0.05 } } end
          results = c:map(list, { concurrency = 2 })
        end)
        llmchat.spawn(function()
          while not results do ticks = ticks + 1; llmchat.sleep(0.01) end
        end)
      end)
      for i = 1, 8 do assert.equal("m" .. i, results[i].content) end
      assert.truthy(ticks >= 5, "ticks " .. ticks)
    end)
  end)
end)
