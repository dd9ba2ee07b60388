-- Every public name of llmchat is in the reference docs (docs/reference/*.md) and in the
-- LuaCATS annotations (types/*.lua). The names are found by walking the live module tables
-- (require "llmchat" and its lazily loaded fields, the client's and the call's methods, the
-- stream iterator, errors, conversation, content, json, sse, batch), by reading what calls
-- against the bundled server return (result, event and batch handle fields), and by reading
-- the sources (every client option, every request field llmchat keeps, every error kind and
-- every error field). A name starting with `_` is private and not checked.
local server = require("support.server")
local llmchat = require("llmchat")
local clientmod = require("llmchat.client")

local root = server.root

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function list(cmd)
  local out = {}
  local p = io.popen("cd '" .. root .. "' && " .. cmd)
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

local function public(k) return type(k) == "string" and not k:find("^_") end

local function sorted_keys(t, filter)
  local out = {}
  for k, v in pairs(t) do
    if public(k) and (not filter or filter(k, v)) then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

local function is_function(_, v) return type(v) == "function" end

---------------------------------------------------------------------------
-- the reference pages

local pages = {}
for _, path in ipairs(list("ls docs/reference/*.md")) do
  pages[path:match("([^/]+)%.md$")] = read(root .. "/" .. path)
end

local function escape(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- does `page` show `name` as one of `forms` (e.g. "client:%s", "`%s`")?
local function documented(page, name, forms)
  local text = pages[page]
  if not text then return false end
  for _, form in ipairs(forms) do
    local token = form:format(name)
    local pat = escape(token)
    if token:find("[%w_]$") then pat = pat .. "%f[^%w_]" end
    if text:find(pat) then return true end
  end
  return false
end

---------------------------------------------------------------------------
-- the annotations: class -> names (fields and functions), alias -> literal values

local function parse_types()
  local classes, aliases = {}, {}
  local var_class = {}
  for _, path in ipairs(list("ls types/*.lua")) do
    local current, pending_class, alias
    for line in (read(root .. "/" .. path) .. "\n"):gmatch("([^\n]*)\n") do
      local cls = line:match("^%-%-%-@class%s+([%w_.]+)")
      local field = line:match("^%-%-%-@field%s+([%w_]+)")
      local al, inline = line:match("^%-%-%-@alias%s+([%w_.]+)%s*(.*)$")
      local alt = line:match('^%-%-%-|%s*"([^"]+)"')
      if cls then
        current, pending_class, alias = cls, cls, nil
        classes[cls] = classes[cls] or {}
      elseif field and current then
        classes[current][field] = true
      elseif al then
        alias, current = al, nil
        aliases[al] = aliases[al] or {}
        for v in inline:gmatch('"([^"]+)"') do aliases[al][v] = true end
      elseif alt and alias then
        aliases[alias][alt] = true
      elseif not line:find("^%-%-%-") then
        current, alias = nil, nil
        local var = line:match("^local%s+([%w_]+)%s*=%s*{}")
        if var and pending_class then var_class[var] = pending_class end
        pending_class = nil
        local v, fname = line:match("^function%s+([%w_]+)[.:]([%w_]+)%s*%(")
        if v and var_class[v] then classes[var_class[v]][fname] = true end
      end
    end
  end
  return classes, aliases
end
local classes, aliases = parse_types()

local function annotated(class, name)
  return classes[class] ~= nil and classes[class][name] == true
end

-- the names missing from a page and from a class, as one message (nil when none)
local function check(names, page, forms, class)
  local missing = {}
  for _, name in ipairs(names) do
    if not documented(page, name, forms) then
      missing[#missing + 1] = ("%s: not in docs/reference/%s.md"):format(name, page)
    end
    if class and not annotated(class, name) then
      missing[#missing + 1] = ("%s: not in the annotations of class %s (types/)"):format(name, class)
    end
  end
  if #missing > 0 then return table.concat(missing, "\n") end
end

local function assert_all(names, page, forms, class)
  assert.is_true(#names > 0, "no names found to check")
  local msg = check(names, page, forms, class)
  if msg then error(msg, 2) end
end

---------------------------------------------------------------------------
-- the sources

local function source(path) return read(root .. "/" .. path) end

-- the keys of `local NAME = { k = ..., }` in a source file
local function table_keys(src, name)
  local body = src:match("local%s+" .. name .. "%s*=%s*(%b{})")
  assert(body, "no table " .. name)
  local keys = {}
  for k in body:sub(2, -2):gsub("%b{}", ""):gmatch("([%a_][%w_]*)%s*=") do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- every top-level key of every errors.new{...} table, every `err.x =` / `e.x =` on an error,
-- and every kind literal
local function error_names()
  local fields, kinds = {}, {}
  for _, path in ipairs(list("find lua -name '*.lua' | LC_ALL=C sort")) do
    local s = source(path)
    local pos = 1
    while true do
      local _, b = s:find("errors%.new%(%s*{", pos)
      if not b then break end
      local body = s:match("^%b{}", b)
      if body then
        local flat = body:sub(2, -2):gsub("%b{}", "{}"):gsub("%b()", "()")
        for k in flat:gmatch("([%a_][%w_]*)%s*=[^=]") do fields[k] = true end
        for k in body:gmatch('kind%s*=%s*"([%w_]+)"') do kinds[k] = true end
      end
      pos = b + 1
    end
    -- (`e.` is not read: in some modules `e` is an event or an item, not an error)
    for _, v in ipairs({ "err" }) do
      for line in s:gmatch("[^\n]+") do
        local lhs = line:match("^%s*(" .. v .. "%.[%w_.,%s]+)=[^=]")
        if lhs then
          for k in lhs:gmatch(v .. "%.([%w_]+)") do fields[k] = true end
        end
        local kind = line:match("^%s*" .. v .. '%.kind%s*=%s*"([%w_]+)"')
        if kind then kinds[kind] = true end
      end
    end
    -- a kind chosen as `kind = cond and "a" or "b"`
    for a, b in s:gmatch('kind%s*=%s*[^\n]-and%s*"([%w_]+)"%s*or%s*"([%w_]+)"') do
      kinds[a], kinds[b] = true, true
    end
  end
  for st = 100, 599 do kinds[llmchat.errors.kind_for_status(st)] = true end
  return sorted_keys(fields), sorted_keys(kinds)
end

---------------------------------------------------------------------------

describe("public names are documented and annotated", function()
  local srv, client
  setup(function()
    srv = server.start()
    client = llmchat.client{ base_url = srv.url, api_key = "sk-test-names", model = "gpt-4o-mini",
      max_retries = 0 }
  end)
  teardown(function() srv.stop() end)

  it("finds the reference pages and the annotation files", function()
    for _, p in ipairs({ "llmchat", "client", "results", "events", "call", "stream", "errors",
      "loop", "conversation", "content", "batch", "json", "sse", "testing" }) do
      assert.is_truthy(pages[p], "docs/reference/" .. p .. ".md")
    end
    for _, c in ipairs({ "llmchat", "llmchat.Client", "llmchat.ClientOptions", "llmchat.Request",
      "llmchat.Result", "llmchat.Event", "llmchat.Error", "llmchat.Call", "llmchat.Stream",
      "llmchat.Conversation", "llmchat.conversation", "llmchat.content", "llmchat.json",
      "llmchat.Batch" }) do
      assert.is_truthy(classes[c], "types/: class " .. c)
    end
    for _, path in ipairs(list("ls types/*.lua")) do
      local src = read(root .. "/" .. path)
      assert.is_truthy(src:find("^%-%-%-@meta"), path .. " starts with ---@meta")
      assert.is_truthy(loadstring and loadstring(src) or load(src), path .. " is valid Lua")
    end
  end)

  it("the module llmchat, its lazily loaded fields included", function()
    local names = sorted_keys(llmchat)
    for _, lazy in ipairs({ "conversation", "content" }) do
      assert.is_truthy(llmchat[lazy], "llmchat." .. lazy .. " loads")
      local seen = false
      for _, n in ipairs(names) do seen = seen or n == lazy end
      if not seen then names[#names + 1] = lazy end
    end
    assert_all(names, "llmchat", { "llmchat.%s", "`%s`" }, "llmchat")
  end)

  it("the client's methods and fields", function()
    local methods = sorted_keys(getmetatable(client).__index, is_function)
    assert_all(methods, "client", { "client:%s" }, "llmchat.Client")
    assert_all(sorted_keys(client), "client", { "client.%s" }, "llmchat.Client")
  end)

  it("every client option (CLIENT_OPTS in client.lua), each one accepted", function()
    local opts = table_keys(source("lua/llmchat/client.lua"), "CLIENT_OPTS")
    assert.is_true(#opts >= 20)
    for _, k in ipairs(opts) do
      -- the option is real: a value of the wrong type is refused by name
      local ok, err = pcall(llmchat.client, { base_url = srv.url, [k] = coroutine.create(function() end) })
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("option '" .. k .. "' must be", 1, true), tostring(err))
    end
    local ok, err = pcall(llmchat.client, { base_url = srv.url, timout = 1 })
    assert.is_false(ok)
    assert.is_truthy(err:find("did you mean 'timeout'", 1, true))
    assert_all(opts, "client", { "`%s`" }, "llmchat.ClientOptions")
  end)

  it("every request field llmchat keeps (OWN), and stream", function()
    local own = sorted_keys(clientmod.OWN)
    own[#own + 1] = "stream"
    assert_all(own, "client", { "`%s`" }, "llmchat.Request")
    assert_all({ "concurrency", "on_result", "api" }, "client", { "`%s`" }, "llmchat.MapOptions")
    assert_all({ "method", "path", "body", "multipart", "raw", "download", "wait" }, "client",
      { "`%s`" }, "llmchat.RawRequest")
  end)

  it("the call handle (client:start)", function()
    local call = client:start{ messages = { { role = "user", content = "hi" } } }
    local methods = sorted_keys(getmetatable(call).__index, function(k, v)
      return type(v) == "function" and not k:find("^__")
    end)
    assert_all(methods, "call", { "call:%s" }, "llmchat.Call")
    assert.is_truthy(call:wait())
    assert_all({ "done", "res", "err" }, "call", { "call.%s" }, "llmchat.Call")
  end)

  it("the stream iterator", function()
    local it = client:stream{ messages = { { role = "user", content = "hi" } } }
    local names = sorted_keys(it)
    it.close()
    assert_all(names, "stream", { "it.%s" }, "llmchat.Stream")
  end)

  it("llmchat.errors, every error kind and every error field", function()
    assert_all(sorted_keys(llmchat.errors), "errors", { "errors.%s" }, "llmchat.errors")
    local fields, kinds = error_names()
    assert.is_true(#kinds >= 15 and #fields >= 15)
    local msg = check(fields, "errors", { "err.%s" }, "llmchat.Error")
    local missing = {}
    for _, k in ipairs(kinds) do
      if not documented("errors", k, { "| `%s`" }) then missing[#missing + 1] = k .. ": not in the kinds table" end
      if not (aliases["llmchat.ErrorKind"] or {})[k] then missing[#missing + 1] = k .. ": not in alias llmchat.ErrorKind" end
    end
    if msg then missing[#missing + 1] = msg end
    assert.are.same({}, missing)
    -- err.timeout's values
    for _, v in ipairs({ "connect", "total", "idle" }) do
      assert.is_truthy((aliases["llmchat.TimeoutKind"] or {})[v])
      assert.is_true(documented("errors", v, { '`"%s"`' }), v)
    end
  end)

  it("the fields of chat, Responses, embeddings and models results", function()
    local m = { { role = "user", content = "hi" } }
    local chat = assert(client:chat{ messages = m })
    local streamed = assert(client:chat{ messages = m, stream = true })
    local names = sorted_keys(chat)
    for _, k in ipairs(sorted_keys(streamed)) do names[#names + 1] = k end
    names[#names + 1] = "reasoning"
    names[#names + 1] = "refusal"
    names[#names + 1] = "tool_calls"
    assert_all(names, "results", { "res.%s" }, "llmchat.Result")
    assert_all(sorted_keys(chat.choices[1]), "results", { "%s =" })

    local r = assert(client:respond{ input = "hi" })
    assert_all(sorted_keys(r), "results", { "res.%s", "`%s`" })
    for _, k in ipairs({ "content", "tool_calls", "reasoning", "refusal", "usage", "status",
      "http_status", "finish_reason", "message", "output", "id", "model", "headers" }) do
      assert.is_true(annotated("llmchat.Result", k), k)
    end
    assert.is_true(documented("results", "input_tokens", { "`%s`" }))

    local e = assert(client:embed{ input = { "a", "b" } })
    assert_all(sorted_keys(e), "results", { "e.%s" }, "llmchat.Embeddings")
    local models = assert(client:models())
    assert_all(sorted_keys(models), "results", { "list.%s", "`%s`", "res.%s" }, "llmchat.Models")
  end)

  it("the fields of streamed events, chat and Responses, and the iterator's last events", function()
    local names = {}
    local function add(ev)
      for _, k in ipairs(sorted_keys(ev)) do names[k] = true end
    end
    local calls = { { id = "call_1", name = "roll", arguments = '{"n":2}' } }
    client:chat{ messages = { { role = "user", content = "hi" } }, mock = { tool_calls = calls },
      on_event = function(ev) add(ev); assert.is_table(ev.chunk) end }
    client:chat{ messages = { { role = "user", content = "hi" } }, on_event = add }
    client:respond{ input = "hi", mock = { tool_calls = calls }, on_event = add }
    client:respond{ input = "hi", on_event = add }
    names.chunk = true
    for ev in client:stream{ messages = { { role = "user", content = "hi" } } } do add(ev) end
    for ev in client:stream{ messages = { { role = "user", content = "x" } }, headers = { ["x-mock"] = '{"status":400}' } } do add(ev) end
    local list_ = sorted_keys(names)
    assert.is_true(#list_ >= 12, table.concat(list_, " "))
    assert_all(list_, "events", { "ev.%s", "%s =" }, "llmchat.Event")
    -- the kinds
    for _, k in ipairs({ "content", "reasoning", "refusal", "tool_call", "event", "done", "error" }) do
      assert.is_true(documented("events", k, { '"%s"' }), k)
      assert.is_truthy(aliases["llmchat.EventKind"][k], k)
    end
  end)

  it("llmchat.conversation: the module and a conversation's methods", function()
    local conv = llmchat.conversation{ client = client }
    assert_all(sorted_keys(llmchat.conversation), "conversation", { "conversation.%s" }, "llmchat.conversation")
    assert_all(sorted_keys(getmetatable(conv).__index, function(k, v)
      return type(v) == "function" and not k:find("^__")
    end), "conversation", { "conv:%s" }, "llmchat.Conversation")
    assert_all(sorted_keys(llmchat.conversation.OWN), "conversation", { "`%s`" }, "llmchat.ConversationOptions")
    -- a conversation's fields, every option given
    local full = llmchat.conversation{ client = client, model = "m", system = "s", system_role = "developer",
      max_tool_rounds = 3, max_context_tokens = 1000, on_tool_call = function() return true end,
      on_tool_result = function() end, on_request = function() end, stream_usage = false,
      temperature = 0.5 }
    assert_all(sorted_keys(full), "conversation",
      { "conv.%s" }, "llmchat.Conversation")
  end)

  it("llmchat.schema and llmchat.message where the split conversation has them", function()
    local n = 0
    for _, name in ipairs({ "schema", "message" }) do
      local ok, mod = pcall(require, "llmchat." .. name)
      if ok and type(mod) == "table" then
        n = n + 1
        assert_all(sorted_keys(mod), "conversation", { name .. ".%s" }, "llmchat." .. name)
      end
    end
    assert.is_true(n == 0 or n == 2)
  end)

  it("llmchat.content, llmchat.json, llmchat.sse and the SSE parser", function()
    assert_all(sorted_keys(llmchat.content), "content", { "content.%s" }, "llmchat.content")
    assert_all(sorted_keys(llmchat.json), "json", { "json.%s" }, "llmchat.json")
    assert_all(sorted_keys(llmchat.sse), "sse", { "llmchat.sse.%s" }, "llmchat.sse")
    local p = llmchat.sse.parser()
    local idx = getmetatable(p).__index
    assert.is_table(idx)
    assert_all(sorted_keys(idx, is_function), "sse", { "p:%s" }, "llmchat.sse.Parser")
    p:close()
  end)

  it("the Batch API: the module, the handle's methods and fields", function()
    local batch = require("llmchat.batch")
    assert_all(sorted_keys(batch), "batch", { "`%s`", "%s(" }, "llmchat.batch")
    assert_all(sorted_keys(batch.Batch, function(k, v)
      return type(v) == "function" and not k:find("^__")
    end), "batch", { "h:%s" }, "llmchat.Batch")
    local h = assert(client:batch{ requests = { { messages = { { role = "user", content = "one" } } } } })
    assert(h:wait{ timeout = 60 })
    assert(h:results())
    local fields = sorted_keys(h, function(_, v) return type(v) ~= "function" end)
    local skip = { client = true, request_opts = true, on_progress = true, interval = true }
    local checked = {}
    for _, k in ipairs(fields) do if not skip[k] then checked[#checked + 1] = k end end
    assert_all(checked, "batch", { "h.%s" }, "llmchat.Batch")
  end)
end)
