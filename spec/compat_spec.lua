-- Lua 5.1 and LuaJIT from the same C source (compat-5.3 header) and the same
-- Lua layer: build for each, then chat, stream, retry and run a coroutine
-- against the local server.
local server = require("support.server")

-- the output and whether the command exited 0 (on 5.1 and LuaJIT, a popen'ed
-- file's close() says nothing of the exit status: the shell reports it)
local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1; echo \"exit=$?\"")
  local out = p:read("*a")
  p:close()
  local status = tonumber(out:match("exit=(%d+)\n?$"))
  return status == 0, (out:gsub("exit=%d+\n?$", ""))
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

-- Lua 5.1 reads "\x41" as "x41", and "\u{...}" and "\z" are not escapes there either: a
-- string with one means something else on 5.1 (it still loads, silently different)
describe("sources for every version", function()
  local function files()
    local out = {}
    local p = io.popen("ls " .. server.root .. "/spec/*.lua " .. server.root .. "/spec/support/*.lua "
      .. server.root .. "/lua/llmchat/*.lua " .. server.root .. "/bin/llmchat-server 2>/dev/null")
    for f in p:lines() do out[#out + 1] = f end
    p:close()
    return out
  end

  it("use no string escape that Lua 5.1 reads differently (\\x, \\u{}, \\z)", function()
    local found = {}
    local list = files()
    assert.truthy(#list > 10, "found the sources")
    for _, path in ipairs(list) do
      local n = 0
      for line in io.lines(path) do
        n = n + 1
        if not line:match("^%s*%-%-") then  -- a comment line may name them
          local init = 1
          while true do
            local s, e = line:find("\\+[xuz]", init)
            if not s then break end
            local slashes = e - s  -- an odd run of backslashes escapes the letter
            local letter = line:sub(e, e)
            if slashes % 2 == 1 and (letter ~= "u" or line:sub(e + 1, e + 1) == "{")
              and (letter ~= "x" or line:sub(e + 1, e + 2):match("^%x%x$")) then
              found[#found + 1] = ("%s:%d: %s"):format(path, n, line)
            end
            init = e + 1
          end
        end
      end
    end
    assert.same({}, found)
  end)
end)
