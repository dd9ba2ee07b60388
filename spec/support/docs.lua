--- The docs' Lua code blocks: extraction (for spec/docs_spec.lua) and a runner (a child
-- interpreter per Markdown file, against the bundled server).
--
-- A block is a ```lua fence. Its first line may carry a marker:
--   -- docs: no-run (reason)   not run (a real provider key, a host such as LOVE); still
--                              compiled, counted and listed by the spec
--   -- docs: raises            must raise an error (it shows misuse)
--   -- docs: sketch (what)     not Lua (the shape of a table, with placeholders): neither
--                              compiled nor run; counted and listed with the no-run blocks
-- The blocks of one file run in order in one environment, as a reader reads them: a
-- top-level `local x = ...` (at column 0) becomes a variable of the file, so a later block
-- can use the client an earlier one made. In the child:
--   * `http://127.0.0.1:8080` (the server's default port in the docs) is the live server;
--   * llmchat.client{} points every provider preset at the live server, with a fake key
--     when none is given (`base_url` to elsewhere than 127.0.0.1/localhost is replaced too);
--   * LLMCHAT_BASE_URL is the live server's /v1 URL; `llmchat` is defined (required);
--   * the working directory is a fresh temporary directory (files the docs write land there).
local M = {}

M.DEFAULT_BASE = "http://127.0.0.1:8080"

--- The ```lua blocks of a Markdown text: { { line =, code =, marker = "no-run" | "raises" | nil,
-- reason = } ... } (line: the fence's line number, 1-based).
function M.blocks(text)
  local out, cur = {}, nil
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if cur then
      if line:find("^%s*```%s*$") then
        local code = table.concat(cur.lines, "\n")
        local first = code:match("^%s*([^\n]*)") or ""
        local marker, reason = first:match("^%-%-%s*docs:%s*([%w%-]+)%s*(.*)$")
        out[#out + 1] = { line = cur.line, code = code, marker = marker, reason = reason }
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    elseif line:find("^%s*```lua%s*$") then
      cur = { line = n, lines = {} }
    end
  end
  return out
end

--- A block's code as the file's environment runs it: column-0 locals become the file's.
function M.transform(code, base)
  local lines = {}
  for line in (code .. "\n"):gmatch("([^\n]*)\n") do
    local names = line:match("^local%s+([%a_][%w_]*%s*,?[%w_,%s]*)$")
    if names and not names:find("=") then
      line = names .. " = nil"
    else
      line = line:gsub("^local%s+function%s", "function "):gsub("^local%s+([%a_])", "%1")
    end
    lines[#lines + 1] = line
  end
  local out = table.concat(lines, "\n")
  if base then out = out:gsub("http://127%.0%.0%.1:8080", (base:gsub("%%", "%%%%"))) end
  return out
end

local function load_in(code, name, env)
  if setfenv then
    local f, err = loadstring(code, name)  -- luacheck: ignore 113
    if f then setfenv(f, env) end
    return f, err
  end
  return load(code, name, "t", env)
end
M.load_in = load_in

local function oneline(s) return (tostring(s):gsub("[\r\n]+", " | ")) end

--- Child side: runs every block of `md` (a path) against `base` (http://127.0.0.1:PORT),
-- writing one line per block to `report`: "<n> ok|fail|norun|raised <message>".
function M.main(md, base, report)
  local f = assert(io.open(md, "rb"))
  local text = f:read("*a")
  f:close()
  local out = assert(io.open(report, "wb"))
  out:setvbuf("line")

  local llmchat = require("llmchat")
  local real_client = llmchat.client
  llmchat.client = function(opts)
    if type(opts) ~= "table" then return real_client(opts) end
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    local url = o.base_url
    if type(url) ~= "string" or not (url:find("^https?://127%.0%.0%.1[:/]") or url:find("^https?://localhost[:/]")) then
      o.base_url = base .. "/v1"
    end
    if o.api_key == nil then o.api_key = "sk-docs-fake-0123456789" end
    return real_client(o)
  end

  local env = setmetatable({ llmchat = llmchat }, { __index = _G })
  env._G = env
  for i, b in ipairs(M.blocks(text)) do
    local name = ("=%s:%d"):format(md:match("[^/]*$"), b.line)
    local code = M.transform(b.code, base)
    local fn, lerr = load_in(code, name, env)
    local known = { ["no-run"] = true, sketch = true, raises = true }
    if b.marker and not known[b.marker] then
      out:write(i, " fail unknown marker '", b.marker, "' (no-run, sketch or raises)\n")
    elseif b.marker == "sketch" then
      out:write(i, " norun ", oneline(b.reason or ""), "\n")
    elseif b.marker == "no-run" then
      out:write(i, fn and " norun " or " fail ", oneline(fn and (b.reason or "") or lerr), "\n")
    elseif not fn then
      out:write(i, " fail ", oneline(lerr), "\n")
    else
      local ok, err = xpcall(fn, debug.traceback)
      if b.marker == "raises" then
        out:write(i, ok and " fail the block should raise and did not" or (" raised " .. oneline(err)), "\n")
      else
        out:write(i, ok and " ok" or (" fail " .. oneline(err)), "\n")
      end
    end
    io.stdout:flush()
  end
  out:write("end\n")
  out:close()
end

return M
