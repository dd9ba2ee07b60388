-- Every ```lua block of README.md and docs/**/*.md runs against the bundled server, so the
-- docs cannot drift from the code. The blocks of a file run in order, in one child
-- interpreter (the one under test) per file; see spec/support/docs.lua for the rules
-- (markers `-- docs: no-run`, `-- docs: sketch` and `-- docs: raises`, the server in place of port 8080 and of
-- every provider). Blocks marked no-run still have to compile; they are counted and listed.
local server = require("support.server")
local docs = require("support.docs")

local root = server.root
if root:sub(1, 1) ~= "/" then
  local p = io.popen("cd '" .. root .. "' && pwd")
  root = p:read("*l")
  p:close()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- README.md, then docs/**/*.md in name order
local files = { "README.md" }
do
  local p = io.popen("cd " .. q(root) .. " && find docs -name '*.md' -type f | LC_ALL=C sort")
  for line in p:lines() do files[#files + 1] = line end
  p:close()
end

-- the C module of the interpreter under test, with absolute paths (the child runs elsewhere)
local cpath
do
  local parts = {}
  for entry in (server.child_cpath .. ";"):gmatch("([^;]*);") do
    if entry ~= "" and entry:sub(1, 1) ~= "/" then entry = root .. "/" .. entry:gsub("^%./", "") end
    parts[#parts + 1] = entry
  end
  cpath = table.concat(parts, ";")
end

-- at most this many blocks may be left unrun: the docs are meant to run
local MAX_NORUN = 14

describe("docs code blocks", function()
  local srv
  local results = {}   -- file -> { [i] = { status, message } }, run on first use
  local logs = {}

  setup(function() srv = server.start() end)
  teardown(function() if srv then srv.stop() end end)

  local function run_file(file)
    if results[file] then return results[file] end
    local tmp = os.tmpname()
    os.remove(tmp)
    assert(server.execute("mkdir -p " .. q(tmp)))
    local report, log = tmp .. "/report.txt", tmp .. "/output.txt"
    local lpath = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/spec/?.lua;"
      .. root .. "/testing/?.lua;" .. root .. "/testing/?/init.lua;;"
    local runner = ("require('support.docs').main(%q, %q, %q)"):format(root .. "/" .. file, srv.base, report)
    local cmd = "cd " .. q(tmp) .. " && LLMCHAT_BASE_URL=" .. q(srv.url) .. " LUA_PATH=" .. q(lpath)
      .. " LUA_CPATH=" .. q(cpath) .. " timeout 180 " .. server.child_lua .. " -e " .. q(runner) .. " </dev/null >" .. q(log) .. " 2>&1"
    server.execute(cmd)
    local r = {}
    local f = io.open(report, "rb")
    local finished = false
    if f then
      for line in f:lines() do
        if line == "end" then finished = true
        else
          local i, status, msg = line:match("^(%d+) (%S+) ?(.*)$")
          if i then r[tonumber(i)] = { status = status, message = msg } end
        end
      end
      f:close()
    end
    logs[file] = read(log)
    r.finished = finished
    results[file] = r
    os.execute("rm -rf " .. q(tmp))
    return r
  end

  local norun = {}
  local total = 0
  for _, file in ipairs(files) do
    local blocks = docs.blocks(read(root .. "/" .. file))
    describe(file, function()
      for i, b in ipairs(blocks) do
        total = total + 1
        local skipped = b.marker == "no-run" or b.marker == "sketch"
        if skipped then norun[#norun + 1] = ("%s:%d %s %s"):format(file, b.line, b.marker, b.reason or "") end
        local what = b.marker == "no-run" and "compiles (no-run)" or b.marker == "sketch" and "is a sketch"
          or b.marker == "raises" and "raises" or "runs"
        it(("block %d (line %d) %s"):format(i, b.line, what), function()
          local r = run_file(file)
          local got = r[i]
          if not got then
            error(("%s:%d: the block did not finish (the file's run stopped%s); output:\n%s"):format(
              file, b.line, r.finished and "" or ", timed out or crashed", logs[file] or ""))
          end
          local want = skipped and "norun" or b.marker == "raises" and "raised" or "ok"
          if got.status ~= want then
            error(("%s:%d: %s\n--- block ---\n%s\n--- output ---\n%s"):format(file, b.line,
              got.message, b.code, logs[file] or ""))
          end
        end)
      end
    end)
  end

  it("leaves only a few blocks unrun, and lists them", function()
    io.stderr:write(("\ndocs: %d lua blocks in %d files, %d not run:\n"):format(total, #files, #norun))
    for _, n in ipairs(norun) do io.stderr:write("  ", n, "\n") end
    assert.is_true(total > 20, "expected the docs to hold code")
    assert.is_true(#norun <= MAX_NORUN, ("%d blocks marked no-run (at most %d)"):format(#norun, MAX_NORUN))
  end)

  it("the README's Quick start starts the bundled server and runs as written", function()
    local readme = read(root .. "/README.md")
    local qs = readme:match("\n## Quick start\n(.-)\n## ")
    assert.is_truthy(qs, "README.md has a Quick start section")
    assert.is_truthy(qs:find("```sh\n[^`]*bin/llmchat%-server %-%-port 8080"), "the Quick start starts the server on 8080")
    local first = docs.blocks(qs)[1]
    assert.is_truthy(first, "a lua block")
    -- the first block runs as written (above, with the spec's server in place of port 8080)
    assert.is_nil(first.marker, "the Quick start's first block carries no marker")
    assert.is_truthy(first.code:find("http://127.0.0.1:8080/v1", 1, true), "it talks to the local server")
    assert.is_truthy(first.code:find('require("llmchat")', 1, true))
  end)

  it("every relative link of the docs points to a file that exists", function()
    local broken, checked = {}, 0
    for _, file in ipairs(files) do
      local text = read(root .. "/" .. file)
      local dir = file:match("^(.*)/[^/]*$") or "."
      for target in text:gmatch("%]%(([^)%s]+)%)") do
        if not target:find("^%a[%w+.-]*:") and not target:find("^#") then
          local path = target:gsub("#.*$", "")
          local full = root .. "/" .. dir .. "/" .. path
          checked = checked + 1
          local f = io.open(full, "rb")
          if f then f:close() else broken[#broken + 1] = file .. ": " .. target end
        end
      end
    end
    assert.are.same({}, broken)
    assert.is_true(checked > 30, checked .. " links checked")
  end)

  it("the block extractor sees markers and fences", function()
    local bs = docs.blocks("a\n```lua\n-- docs: no-run needs a key\nx()\n```\n```sh\nno\n```\n```lua\ny = 1\n```\n")
    assert.are.equal(2, #bs)
    assert.are.equal("no-run", bs[1].marker)
    assert.are.equal("needs a key", bs[1].reason)
    assert.are.equal(2, bs[1].line)
    assert.is_nil(bs[2].marker)
    assert.are.equal("y = 1", bs[2].code)
    assert.are.equal("c = 1\nfunction f() end\na, b = nil\n  local z = 2",
      docs.transform("local c = 1\nlocal function f() end\nlocal a, b\n  local z = 2"))
  end)
end)
