-- Installation as a user does it: luarocks make into a private tree, no
-- network, dependencies already installed from Debian; then the installed
-- module loads in a clean interpreter: the one under test (`make test LUA=...`;
-- LuaJIT uses the 5.1 tree). `make rock-all` does the same for every version.
local server = require("support.server")

local function read_all(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

describe("luarocks make", function()
  -- "5.1" for lua5.1 and LuaJIT, "5.4" for lua5.4 ...
  local version = read_all(server.child_lua .. [[ -e 'io.write((_VERSION:match("%d+%.%d+")))']])

  it("installs a module that the interpreter under test loads (Lua " .. version .. " tree)", function()
    assert.matches("^5%.%d$", version)
    local tree = os.tmpname()
    os.remove(tree)
    -- built in a copy of the checkout: luarocks compiles in place, and its
    -- llmchat/core.so must not replace the one `make` built for the other specs
    local src = tree .. ".src"
    finally(function() os.execute("rm -rf " .. quote(tree) .. " " .. quote(tree .. ".log") .. " " .. quote(src)) end)
    assert.is_true(server.execute(("mkdir -p %s && cp -R src lua bin docs examples rockspec %s/")
      :format(quote(src), quote(src))))
    local ok = server.execute(("cd %s && luarocks --lua-version=%s make --deps-mode=none --tree %s "
      .. "rockspec/llmchat-dev-1.rockspec > %s 2>&1"):format(quote(src), version, quote(tree), quote(tree .. ".log")))
    local f = io.open(tree .. ".log")
    local log = f and f:read("*a") or ""
    if f then f:close() end
    assert.is_true(ok, log)
    -- from the tree (no ./llmchat/core.so to find), the tree's paths first, then the
    -- interpreter's own (cjson from Debian)
    local so = ("%s/lib/lua/%s/llmchat/core.so"):format(tree, version)
    local probe = ("cd %s && LUA_PATH=%s LUA_CPATH=%s %s -e %s"):format(quote(tree),
      quote(("%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;;"):format(tree, version, tree, version)),
      quote(("%s/lib/lua/%s/?.so;;"):format(tree, version)), server.child_lua,
      quote([[local l = require("llmchat"); local c = l.client{ base_url = "http://127.0.0.1:9/v1" }; ]]
        .. [[io.write(l._VERSION, " ", _VERSION, " ", package.loaded["llmchat.core"] and "core" or "-")]]))
    local out = read_all(probe)
    assert.truthy(out:find("^llmchat %d"), out)
    assert.truthy(out:find("Lua " .. version .. " core", 1, true), out)
    -- the core that loaded is the tree's: the loader names the file it opened
    out = read_all(("cd %s && LUA_CPATH=%s %s -e %s"):format(quote(tree), quote(tree .. "/lib/lua/" .. version .. "/?.so"),
      server.child_lua, quote([[local ok, e = pcall(require, "llmchat.core"); io.write(tostring(ok), " ", ]]
        .. [[type(e) == "table" and "table" or tostring(e))]])))
    assert.equal("true table", out)
    assert.truthy(io.open(so), "core.so installed in the " .. version .. " tree")
    -- the test server is its own rock (llmchat-testing): the library needs neither
    -- luasocket nor luasec, and installs neither the server nor llmchat.testing
    assert.falsy(io.open(tree .. "/bin/llmchat-server"), "llmchat-server installed by the library rock")
    assert.falsy(io.open(("%s/share/lua/%s/llmchat/testing/init.lua"):format(tree, version)),
      "llmchat.testing installed by the library rock")
    -- only the module's entry point is exported, whatever CFLAGS luarocks used
    local syms = read_all(("nm -D --defined-only %s"):format(quote(so)))
    local exported = {}
    for name in syms:gmatch("%x+ [TDB] ([%w_]+)") do exported[#exported + 1] = name end
    assert.same({ "luaopen_llmchat_core" }, exported)
  end)
end)
