-- One version string for everything that ships: the C module (core.version, set by
-- LLMCHAT_VERSION in src/core.c), the Lua layer, the release rockspec (its file name,
-- version and tag), the CHANGELOG, the bundled test server and the `llmchat` command.
local support = require("support.server")

local core = require("llmchat.core")
local llmchat = require("llmchat")

local root = support.root
local V = core.version

local function read(path)
  local f = io.open(root .. "/" .. path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- runs a rockspec (plain Lua assignments) in an empty environment; returns its globals
local function load_rockspec(path)
  local src = assert(read(path), "cannot read " .. path)
  local env = {}
  local chunk, err
  local setfenv, loadstring = rawget(_G, "setfenv"), rawget(_G, "loadstring")
  if setfenv and loadstring then -- Lua 5.1, LuaJIT
    chunk, err = loadstring(src, "@" .. path)
    if chunk then setfenv(chunk, env) end
  else
    chunk, err = load(src, "@" .. path, "t", env)
  end
  assert(chunk, err)
  chunk()
  return env
end

local function exists(path)
  local f = io.open(root .. "/" .. path, "rb")
  if f then f:close() end
  return f ~= nil
end

describe("the version", function()
  it("is one semantic version, carried by the Lua layer", function()
    assert.is_string(V)
    assert.truthy(V:match("^%d+%.%d+%.%d+$"), "core.version is " .. tostring(V))
    assert.equal(V, llmchat.version)
    assert.equal("llmchat " .. V, llmchat._VERSION)
  end)

  -- every rock with a dev rockspec has a release rockspec: the library and the test server
  for _, rock in ipairs({ "llmchat", "llmchat-testing" }) do
    local dev_path = "rockspec/" .. rock .. "-dev-1.rockspec"
    local rel_path = "rockspec/" .. rock .. "-" .. V .. "-1.rockspec"
    if exists(dev_path) then
      it("names " .. rock .. "'s release rockspec, whose version and tag agree", function()
        assert.truthy(exists(rel_path), rel_path .. " is missing: `make release-rockspec` writes it")
        local spec = load_rockspec(rel_path)
        assert.equal(rock, spec.package)
        assert.equal(V .. "-1", spec.version)
        assert.is_table(spec.source)
        assert.equal("v" .. V, spec.source.tag)
      end)

      it("has a release rockspec of " .. rock .. " that builds what its dev rockspec builds", function()
        local dev = load_rockspec(dev_path)
        local rel = load_rockspec(rel_path)
        local hint = " differs between " .. dev_path .. " and " .. rel_path .. ": run `make release-rockspec`"
        for _, key in ipairs({ "package", "rockspec_format", "description", "dependencies",
                               "external_dependencies", "build", "test", "build_dependencies",
                               "test_dependencies" }) do
          assert.same(dev[key], rel[key], key .. hint)
        end
        assert.equal(dev.source.url, rel.source.url, "source.url" .. hint)
      end)
    end
  end

  it("has a CHANGELOG section and a LICENSE", function()
    local log = assert(read("CHANGELOG.md"), "CHANGELOG.md is missing")
    local heading = "\n## " .. V:gsub("%.", "%%.") .. "[ %(]"
    assert.truthy(log:find(heading), "CHANGELOG.md has no '## " .. V .. " (...)' section")
    local license = assert(read("LICENSE"), "LICENSE is missing")
    assert.truthy(license:find("MIT License", 1, true))
    assert.truthy(license:find("Copyright (c) 2026 the llmchat authors", 1, true))
    local rel = load_rockspec("rockspec/llmchat-" .. V .. "-1.rockspec")
    assert.equal("MIT", rel.description.license)
  end)

  it("is the rock the README's install lines name", function()
    local readme = assert(read("README.md"))
    local rock = "build/dist/llmchat-" .. V .. "-1.src.rock"
    assert.truthy(readme:find("install --local --deps-mode=none " .. rock, 1, true),
      "README.md does not install " .. rock)
    for other in readme:gmatch("llmchat%-([%d%.]+)%-1%.src%.rock") do
      assert.equal(V, other, "README.md names llmchat-" .. other .. "-1.src.rock")
    end
  end)

  it("is the bundled test server's", function()
    -- the server is llmchat.testing (it was llmchat.server); it does not load the C core,
    -- so it carries its own copy of the string
    local name = "llmchat.testing"
    local server = require(name)
    assert.equal(V, server._VERSION, name .. "._VERSION must be " .. V)
  end)

  it("is what `llmchat --version` prints", function()
    if not exists("bin/llmchat") then
      pending("bin/llmchat is not there yet")
      return
    end
    local cmd = ("cd '%s' && LUA_PATH='lua/?.lua;lua/?/init.lua;;' %s bin/llmchat --version 2>&1")
      :format(root, support.child())
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find(V, 1, true), "llmchat --version printed: " .. out)
  end)
end)
