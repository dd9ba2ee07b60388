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
end)
