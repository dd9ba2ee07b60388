-- Installation as a user does it: luarocks make into a private tree, no
-- network, dependencies already installed from Debian; then the installed
-- module loads in a clean Lua 5.4.
describe("luarocks make", function()
  it("installs a module that lua5.4 loads", function()
    local tree = os.tmpname()
    os.remove(tree)
    local cmd = ("luarocks --lua-version=5.4 make --deps-mode=none --tree %s rockspec/llmchat-dev-1.rockspec > %s.log 2>&1")
      :format(tree, tree)
    local ok = os.execute(cmd)
    local f = io.open(tree .. ".log")
    local log = f and f:read("*a") or ""
    if f then f:close() end
    assert.truthy(ok == true or ok == 0, log)
    local probe = ("LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua' "
      .. "LUA_CPATH='%s/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so' "
      .. "lua5.4 -e 'local l = require\"llmchat\"; local c = l.client{base_url=\"http://127.0.0.1:9/v1\"}; "
      .. "io.write(l._VERSION, \" \", package.searchpath(\"llmchat.core\", package.cpath))'")
      :format(tree, tree, tree)
    local p = io.popen(probe .. " 2>&1")
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("^llmchat %d"), out)
    assert.truthy(out:find(tree, 1, true), out)
    assert.truthy(io.open(tree .. "/bin/llmchat-server"), "llmchat-server installed")
    os.execute("rm -rf " .. tree .. " " .. tree .. ".log")
  end)
end)
