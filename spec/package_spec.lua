-- Installation as a user does it: luarocks make into a private tree, no
-- network, dependencies already installed from Debian; then the installed
-- module loads in a clean Lua 5.4.
describe("luarocks make", function()
  it("installs a module that lua5.4 loads", function()
    local tree = os.tmpname()
    os.remove(tree)
    -- built in a copy of the checkout: luarocks compiles in place, and its
    -- llmchat/core.so must not replace the one `make` built for the other specs
    local src = tree .. ".src"
    assert(os.execute(("mkdir -p %s && cp -R src lua bin docs examples rockspec %s/"):format(src, src)))
    local cmd = ("cd %s && luarocks --lua-version=5.4 make --deps-mode=none --tree %s rockspec/llmchat-dev-1.rockspec > %s.log 2>&1")
      :format(src, tree, tree)
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
    -- only the module's entry point is exported, whatever CFLAGS luarocks used
    local nm = io.popen(("nm -D --defined-only %s/lib/lua/5.4/llmchat/core.so 2>&1"):format(tree))
    local syms = nm:read("*a")
    nm:close()
    local exported = {}
    for name in syms:gmatch("%x+ [TDB] ([%w_]+)") do exported[#exported + 1] = name end
    assert.same({ "luaopen_llmchat_core" }, exported)
    os.execute("rm -rf " .. tree .. " " .. tree .. ".log " .. src)
  end)
end)
