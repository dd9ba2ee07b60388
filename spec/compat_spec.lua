-- Lua 5.1 and LuaJIT from the same C source (compat-5.3 header) and the same
-- Lua layer: build for each, then chat, stream, retry and run a coroutine
-- against the local server.
local server = require("support.server")

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  local ok = p:close()
  return ok, out
end

local SCRIPT = [[
package.path = "../../lua/?.lua;../../lua/?/init.lua;" .. package.path
local llmchat = require("llmchat")
local c = llmchat.client{ base_url = arg[1], max_retries = 1, retry_base_delay = 0.01 }
local res = assert(c:chat{ messages = { { role = "user", content = "hi" } }, seed = 12345 })
io.write(res.content, ";")
local parts = {}
res = assert(c:chat{ messages = { { role = "user", content = "stream ok" } },
  on_delta = function(t) parts[#parts + 1] = t end })
io.write(table.concat(parts), ";")
res = assert(c:chat{ messages = { { role = "user", content = "retried" } },
  mock = { status = 503, fail_times = 1, key = arg[2] } })
io.write(res.content, ";")
llmchat.run(function()
  local r = assert(c:chat{ messages = { { role = "user", content = "co" } } })
  io.write(r.content, ";")
end)
]]

describe("Lua 5.1 and LuaJIT", function()
  local srv
  setup(function() srv = server.start() end)
  teardown(function() srv.stop() end)

  for _, lua in ipairs{ "lua5.1", "luajit" } do
    it("builds and works on " .. lua, function()
      local ok, out = sh(("make -s LUA=%s BUILD=build/%s MODULE=build/%s/llmchat/core.so"):format(lua, lua, lua))
      assert.truthy(ok, out)
      local f = assert(io.open("build/" .. lua .. "/probe.lua", "w"))
      f:write(SCRIPT)
      f:close()
      ok, out = sh(("cd build/%s && %s probe.lua %s key-%s-%d"):format(lua, lua, srv.url, lua, os.time()))
      assert.truthy(ok, out)
      assert.equal("hi;stream ok;retried;co;", out)
    end)
  end
end)
