-- luacheck: std +busted
-- The test server's own rock, installed as a user does it (luarocks make into a private
-- tree, no network, dependencies from Debian), and its independence from llmchat itself.
local socket = require("socket")
local server = require("support.server")

-- system tools run without the sanitizer runtime `make asan` preloads (ps deadlocks in it)
local function run(cmd)
  local p = io.popen("LD_PRELOAD= " .. cmd .. " 2>&1")
  local out = p:read("*a")
  local ok = p:close()
  return ok, out
end

describe("llmchat-testing rock", function()
  it("installs llmchat-server and the llmchat.testing modules, which serve", function()
    local tree = os.tmpname()
    os.remove(tree)
    local src = tree .. ".src"
    assert(os.execute(("mkdir -p %s && cp -R lua testing bin docs rockspec %s/"):format(src, src)))
    local ok, log = run(("cd %s && luarocks --lua-version=5.4 make --deps-mode=none --tree %s "
      .. "rockspec/llmchat-testing-dev-1.rockspec"):format(src, tree))
    assert.truthy(ok, log)
    local bin = tree .. "/bin/llmchat-server"
    assert.truthy(io.open(bin), "llmchat-server installed")
    assert.truthy(io.open(tree .. "/share/lua/5.4/llmchat/testing.lua")
      or io.open(tree .. "/share/lua/5.4/llmchat/testing/init.lua"))
    assert.truthy(io.open(tree .. "/share/lua/5.4/llmchat/testing/responses.lua"))
    -- only the server: none of the library's modules
    assert.is_nil(io.open(tree .. "/share/lua/5.4/llmchat/init.lua"))
    assert.is_nil(io.open(tree .. "/share/lua/5.4/llmchat/server.lua"))

    local port_file = tree .. ".port"
    -- a private tree is not on luarocks' default path: point LUA_PATH at it, as
    -- `luarocks path --tree` would
    os.execute(("cd / && LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;;' "
      .. "%s --port 0 --port-file %s --quiet --parent %d > %s.log 2>&1 &")
      :format(tree, tree, bin, port_file, server.self_pid(), tree))
    local port
    local deadline = socket.gettime() + 20
    while socket.gettime() < deadline and not port do
      local f = io.open(port_file)
      port = f and tonumber(f:read("*a"))
      if f then f:close() end
      if not port then socket.sleep(0.05) end
    end
    if not port then
      local f = io.open(tree .. ".log")
      error("the installed server did not start: " .. (f and f:read("*a") or ""))
    end
    local srv = { base = "http://127.0.0.1:" .. port }
    local res = assert(server.request(srv, "POST", "/v1/responses", { input = "from the rock" }))
    assert.equal("from the rock", res.json.output[1].content[1].text)
    local pid_out = select(2, run("ps -eo pid,args | grep -F -- '--port-file " .. port_file
      .. "' | grep -v grep"))
    for pid in pid_out:gmatch("^%s*(%d+)") do os.execute("kill " .. pid) end
    for pid in pid_out:gmatch("\n%s*(%d+)") do os.execute("kill " .. pid) end
    os.execute("rm -rf " .. tree .. " " .. src .. " " .. port_file .. " " .. tree .. ".log")
  end)

  it("never loads llmchat or its C core", function()
    local script = [[
      package.path = "testing/?.lua;testing/?/init.lua;lua/?.lua;lua/?/init.lua;" .. package.path
      for _, name in ipairs{ "llmchat", "llmchat.core", "llmchat.client", "llmchat.json" } do
        package.preload[name] = function() error("llmchat.testing loaded " .. name) end
      end
      local testing = require("llmchat.testing")
      local srv = assert(testing.new{ port = 0, quiet = true })
      srv:close()
      io.write("ok")
    ]]
    local ok, out = run("lua5.4 -e " .. ("%q"):format(script):gsub("\\\n", "\n"):gsub("%$", "\\$"))
    assert.truthy(ok, out)
    assert.equal("ok", out)
  end)
end)
