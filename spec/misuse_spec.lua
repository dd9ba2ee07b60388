-- Wrong argument types and odd values anywhere in the public API raise Lua
-- errors or return nil, err; none may crash the host process (a crash here
-- takes busted down with it, so the spec cannot pass by accident).
local server = require("support.server")
local llmchat = require("llmchat")

local VALUES = {
  nil, true, false, 0, -1, 2 ^ 63, 1e308, 0 / 0, -(1 / 0), "", "x", ("\255"):rep(3),
  {}, { 1, 2 }, { x = {} }, function() end, coroutine.create(function() end), io.stdout,
  llmchat.null,
}
local NV = 19  -- #VALUES with the nil counted

describe("misuse", function()
  local srv, c
  setup(function()
    srv = server.start()
    c = llmchat.client{ base_url = srv.url, max_retries = 0, timeout = 2 }
  end)
  teardown(function() srv.stop() end)

  local function each(fn)
    for i = 1, NV do
      for j = 1, NV do pcall(fn, VALUES[i], VALUES[j]) end
    end
  end

  it("module functions", function()
    each(function(a) return llmchat.client(a) end)
    each(function(a)
      if type(a) == "number" and a > 0.01 then a = 0 end
      return llmchat.poll(a)
    end)
    each(function(a, b) return llmchat.core.request{ url = srv.url .. "/models", timeout = a, headers = b } end)
    each(function(a, b) return llmchat.core.json_encode(a, b) end)
    each(function(a) return llmchat.core.json_normalize(a) end)
    each(function(a) return llmchat.core.base64(a) end)
    -- (a huge wait is honoured, so only small ones here; NaN must not wait at all)
    each(function(a, b)
      if type(a) == "number" and a > 0.01 then a = 0 end
      return llmchat.core.drive(a, b)
    end)
    local t0 = llmchat.core.now()
    llmchat.core.drive(0 / 0, false)
    assert.truthy(llmchat.core.now() - t0 < 1)
    assert.has_error(function() llmchat.poll(0 / 0) end)
    each(function(a) return llmchat.json.decode(a) end)
    each(function(a) return llmchat.spawn(a) end)
    assert.is_number(llmchat.poll(0))
  end)

  it("client and request methods", function()
    each(function(a, b) return c:chat{ messages = a, model = b } end)
    each(function(a, b) return c:chat{ messages = { { role = a, content = b } } } end)
    each(function(a) return c:chat(a) end)
    each(function(a) local it = c:stream{ messages = a }; it.close() end)
    each(function(a, b) local r = c:start{ messages = { { role = "user", content = "m" } }, on_done = a, n = b }; r:cancel() end)
    local r = llmchat.core.request{ url = srv.url .. "/models" }
    each(function(a) return r.status(a) end)
    each(function(a) return r.headers(a) end)
    each(function(a) return r.cancel(a) end)
    each(function(a, b) return r.handlers(r, a, b) end)
    r:close()
    each(function(a) return r:body(a) end)   -- closed: raises, never crashes
    -- (other spec files may leave requests of their own in flight: poll a little, not to zero)
    for _ = 1, 10 do llmchat.poll(0.01) end
  end)

  it("the SSE parser and the assembler", function()
    local p = llmchat.sse.parser()
    each(function(a) return p:feed(a) end)
    each(function(a) return llmchat.sse.parser(a) end)
    local a = llmchat.core.stream.assembler()
    each(function(x) return a:chunk(x) end)
    a:close()
    each(function(x) return a:chunk(x) end)
  end)

  -- The stated policy (README, "Errors"): misuse by the caller raises, with a message that
  -- names the argument or option; a failure of the world (network, server, data) returns
  -- nil, err with err.kind, and never raises.
  describe("policy", function()
    local function raises(fn, pattern)
      local ok, err = pcall(fn)
      assert.is_false(ok, "did not raise (wanted " .. pattern .. ")")
      assert.truthy(tostring(err):find(pattern), ("%q does not name %s"):format(tostring(err), pattern))
    end

    it("misuse raises, naming the argument", function()
      local m = { { role = "user", content = "x" } }
      raises(function() llmchat.client(42) end, "'opts'")
      raises(function() llmchat.client{ base_url = srv.url, timeout = "slow" } end, "'timeout'")
      raises(function() llmchat.client{ base_url = srv.url, timout = 1 } end, "did you mean 'timeout'")
      raises(function() llmchat.client{ base_url = "ftp://x" } end, "base_url")
      raises(function() llmchat.client{ provider = "nope", api_key = "k" } end, "nope")
      raises(function() llmchat.client{ base_url = srv.url, headers = { ["X-A"] = "a\r\nb" } } end, "X%-A")
      raises(function() c:chat("hello") end, "'params'")
      raises(function() c:chat{ messages = "hello" } end, "'messages'")
      raises(function() c:chat{ messages = m, on_delta = 42 } end, "'on_delta'")
      raises(function() c:chat{ messages = m, on_event = 42 } end, "'on_event'")
      raises(function() c:chat{ messages = m, on_done = "x" } end, "'on_done'")
      raises(function() c:chat{ messages = m, headers = 1 } end, "'headers'")
      raises(function() c:chat{ messages = m, api = "nope" } end, "api 'nope'")
      raises(function() c:chat{ messages = m, schema = 1 } end, "'schema'")
      raises(function() c:respond(nil) end, "'params'")
      raises(function() c:embed{} end, "'input'")
      raises(function() c:request{ path = "no-slash" } end, "'path'")
      raises(function() c:request{ path = "/x", method = "get me" } end, "'method'")
      raises(function() c:stream(7) end, "'params'")
      raises(function() c:map(7) end, "'list'")
      raises(function() c:map({}, { concurrency = 0 }) end, "'concurrency'")
      raises(function() c:map({}, { on_result = 1 }) end, "'on_result'")
      raises(function() llmchat.poll("now") end, "'timeout'")
      raises(function() llmchat.poll(0, "fast") end, "'budget'")
      raises(function() llmchat.spawn(1) end, "'fn'")
      raises(function() llmchat.run(1) end, "'fn'")
      raises(function() llmchat.conversation{ client = 1 } end, "'client'")
    end)

    it("failures of the world return nil, err and never raise", function()
      local m = { { role = "user", content = "x" } }
      local dead = llmchat.client{ base_url = "http://127.0.0.1:9/v1", max_retries = 0 }
      local cases = {
        { "network", function() return dead:chat{ messages = m } end },
        { "network", function() return dead:respond{ input = "x" } end },
        { "network", function() return dead:embed{ input = "x" } end },
        { "network", function() return dead:models() end },
        { "bad_request", function() return c:chat{ messages = { { role = "user", content = "\255" } } } end },
        { "server", function() return c:chat{ messages = m, mock = { status = 500 } } end },
        { "protocol", function() return c:chat{ messages = m, mock = { html = true, status = 200 } } end },
        { "protocol", function() return c:chat{ messages = m, mock = { body = "{not json" } } end },
        { "not_found", function() return c:request{ path = "/nowhere" } end },
        { "timeout", function() return c:chat{ messages = m, timeout = 0.2, mock = { delay = 2 } } end },
      }
      for _, case in ipairs(cases) do
        local ok, res, err = pcall(case[2])
        assert.is_true(ok, "raised: " .. tostring(res))
        assert.is_nil(res, case[1])
        assert.truthy(llmchat.is_error(err), case[1])
        assert.equal(case[1], err.kind)
        assert.is_string(tostring(err))
      end
      -- data that is not what it should be: nil and a message, not an error raised
      local v, msg = llmchat.json.decode("{nope")
      assert.is_nil(v)
      assert.is_string(msg)
    end)
  end)
end)
