-- The stream iterator on every Lua version (issue 12): it yields inside llmchat.run on 5.1
-- too, an abandoned iterator costs bounded memory and is cancelled when collected or
-- closed, and a conversation-style pcall can yield (loop.pcall).
local server = require("support.server")
local llmchat = require("llmchat")
local loop = require("llmchat.loop")

local function user(text) return { { role = "user", content = text } } end

describe("stream iterator", function()
  local srv, c
  setup(function()
    srv = server.start()
    c = llmchat.client{ base_url = srv.url, api_key = "sk-test" }
  end)
  teardown(function() srv.stop() end)

  it("runs inside llmchat.run coroutines side by side with other calls", function()
    local out, order = {}, {}
    llmchat.run(function()
      for i = 1, 3 do
        llmchat.spawn(function()
          local t = {}
          for ev in c:stream{ messages = user("stream " .. i), mock = { chunk_size = 2, chunk_delay = 0.005 } } do
            if ev.kind == "content" then t[#t + 1] = ev.delta end
            if ev.kind == "done" then order[#order + 1] = i end
          end
          out[i] = table.concat(t)
        end)
      end
      out[4] = assert(c:chat{ messages = user("plain") }).content
    end)
    assert.same({ "stream 1", "stream 2", "stream 3", "plain" }, out)
    assert.equal(3, #order)
    assert.equal(0, llmchat.core.inflight())
  end)

  it("an error inside one cancels what it started", function()
    local ok, err = pcall(llmchat.run, function()
      llmchat.spawn(function()
        for ev in c:stream{ messages = user("x"), mock = { long_stream = 100000 } } do
          if ev.kind == "content" then error("stop here") end
        end
      end)
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("stop here", 1, true))
    for _ = 1, 20 do llmchat.poll(0.005) end
    assert.equal(0, llmchat.core.inflight())
  end)

  it("costs bounded memory after a break, and is cancelled when collected", function()
    collectgarbage()
    collectgarbage()
    local base = collectgarbage("count")
    do
      local n = 0
      for _ in c:stream{ messages = user("x"), mock = { long_stream = 200000 } } do
        n = n + 1
        if n == 10 then break end
      end
    end
    local peak = 0
    for _ = 1, 200 do
      llmchat.poll(0.002)
      local kb = collectgarbage("count") - base
      if kb > peak then peak = kb end
    end
    -- the request is held: its records wait in C and the transfer is paused (a queue that
    -- kept growing reached 34 MB on LuaJIT)
    assert.truthy(peak < 2048, ("Lua heap grew %.0f KB"):format(peak))
    collectgarbage()
    collectgarbage()
    for _ = 1, 50 do llmchat.poll(0.002) end
    assert.equal(0, llmchat.core.inflight())
  end)

  it("close() is the portable way to stop", function()
    local it = c:stream{ messages = user("x"), mock = { long_stream = 100000 } }
    local n = 0
    for ev in it do
      n = n + 1
      if ev.kind == "content" and n > 5 then break end
    end
    it.close()
    assert.is_true(it.call.done)
    assert.equal("cancelled", it.call.err.kind)
    assert.equal(0, llmchat.core.inflight())
  end)

  it("loop.pcall lets a coroutine yield through it and catches errors", function()
    local got, caught
    llmchat.run(function()
      local ok, res = loop.pcall(function() return c:chat{ messages = user("inside pcall") } end)
      assert(ok, res)
      got = res.content
      local ok2, e = loop.pcall(function()
        c:chat{ messages = user("y") }
        error("after a yield")
      end)
      assert(not ok2)
      caught = e
    end)
    assert.equal("inside pcall", got)
    assert.truthy(tostring(caught):find("after a yield", 1, true))
  end)

  it("conv:say (chat and Responses conversations) yields inside llmchat.run", function()
    local out = {}
    llmchat.run(function()
      for i = 1, 2 do
        llmchat.spawn(function()
          local conv = llmchat.conversation{ client = c, system = "s" }
          out[i] = assert(conv:say("conv " .. i)).content
          local rconv = llmchat.conversation{ client = c, api = "responses", system = "s" }
          out[i + 2] = assert(rconv:say("resp " .. i)).content
        end)
      end
    end)
    assert.same({ "conv 1", "conv 2", "resp 1", "resp 2" }, out)
  end)
end)
