-- Tool calling through llmchat.conversation, against the local server, whose
-- scripted model answers with entry (#assistant messages in the request) + 1.
local llmchat = require("llmchat")
local json = require("llmchat.json")
local server = require("support.server")

local function call(id, name, arguments)
  return { id = id, name = name, arguments = arguments }
end

describe("conversation tools", function()
  local srv, client

  setup(function()
    srv = server.start()
    client = llmchat.client{ base_url = srv.url, model = "llmchat-echo", max_retries = 0 }
  end)
  teardown(function() srv.stop() end)

  -- snapshots of every request body the conversation sends
  local function recorder()
    local seen = {}
    return seen, function(params) seen[#seen + 1] = json.decode(json.encode(params)) end
  end

  local dice = {
    name = "roll", description = "Roll dice",
    parameters = { type = "object", properties = { n = { type = "integer" } }, required = { "n" } },
  }

  it("sends tools in the API's shape and runs parallel calls in order", function()
    local seen, on_request = recorder()
    local order = {}
    local conv = llmchat.conversation{ client = client, system = "Game master.", on_request = on_request }
    conv:tool{ name = dice.name, description = dice.description, parameters = dice.parameters,
      handler = function(args) order[#order + 1] = "roll" .. args.n; return { total = args.n * 3 } end }
    conv:tool{ name = "say_hi", handler = function(args, c)
      order[#order + 1] = "hi:" .. c.id; return "hi " .. args.who end }
    local mock = { script = {
      { tool_calls = { call("c1", "roll", '{"n":2}'), call("c2", "say_hi", '{"who":"ann"}'),
        call("c3", "roll", '{"n":5}') } },
      { reply = "done" } } }
    local res, err = conv:say("Roll", { mock = mock })
    assert.is_nil(err)
    assert.equal("done", res.content)
    assert.equal(1, res.tool_rounds)
    assert.same({ "roll2", "hi:c2", "roll5" }, order)

    assert.equal(2, #seen)
    assert.same({ { type = "function", ["function"] = { name = "roll", description = "Roll dice",
      parameters = dice.parameters } },
      { type = "function", ["function"] = { name = "say_hi" } } }, seen[1].tools)

    local m = conv:messages()
    assert.equal(7, #m)
    assert.same({ role = "system", content = "Game master." }, m[1])
    assert.same({ role = "user", content = "Roll" }, m[2])
    assert.equal("assistant", m[3].role)
    assert.equal(json.null, m[3].content)
    assert.same({ id = "c1", type = "function", ["function"] = { name = "roll", arguments = '{"n":2}' } },
      m[3].tool_calls[1])
    assert.equal('{"n":5}', m[3].tool_calls[3]["function"].arguments)
    assert.same({ role = "tool", tool_call_id = "c1", content = '{"total":6}' }, m[4])
    assert.same({ role = "tool", tool_call_id = "c2", content = "hi ann" }, m[5])
    assert.same({ role = "tool", tool_call_id = "c3", content = '{"total":15}' }, m[6])
    assert.same({ role = "assistant", content = "done" }, m[7])

    -- the second request carried the tool-call message and all three results
    local sent = seen[2].messages
    assert.equal(6, #sent)
    assert.equal("c3", sent[6].tool_call_id)
    -- content null went out as JSON null (json.decode drops it; the key is gone, not "")
    assert.is_nil(sent[3].content)
    assert.truthy(json.encode(conv:messages()):find('"content":null', 1, true))
  end)

  it("reports bad arguments, unknown tools and raising handlers to the model, and goes on", function()
    local called = 0
    local conv = llmchat.conversation{ client = client, tools = {
      { name = "roll", parameters = dice.parameters, handler = function(args) called = called + 1; return args.n end },
      { name = "broken", handler = function() error("disk full") end },
      { name = "tabled", handler = function() error({ message = "structured failure" }) end },
      { name = "soft", handler = function() return nil, "not today" end },
    } }
    local mock = { script = {
      { tool_calls = { call("a", "roll", '{"n": 2'), call("b", "nope", "{}"),
        call("c", "broken", "{}"), call("d", "tabled", "{}"), call("e", "soft", "{}"),
        call("f", "roll", "[1,2]"), call("g", "roll", '{"n":4}') } },
      { reply = "recovered" } } }
    local res, err = conv:say("go", { mock = mock })
    assert.is_nil(err)
    assert.equal("recovered", res.content)
    assert.equal(1, called)
    local m = conv:messages()
    local by_id = {}
    for _, msg in ipairs(m) do if msg.role == "tool" then by_id[msg.tool_call_id] = msg.content end end
    assert.matches("^error: the arguments are not a valid JSON object", by_id.a)
    assert.equal("error: unknown tool 'nope'", by_id.b)
    assert.equal("error: disk full", by_id.c)
    assert.equal("error: structured failure", by_id.d)
    assert.equal("error: not today", by_id.e)
    assert.matches("^error: the arguments are not a valid JSON object", by_id.f)
    assert.equal("4", by_id.g)
    -- results are in the order of the calls
    local ids = {}
    for _, msg in ipairs(m) do if msg.role == "tool" then ids[#ids + 1] = msg.tool_call_id end end
    assert.same({ "a", "b", "c", "d", "e", "f", "g" }, ids)
  end)

  it("encodes table results as JSON and passes strings, numbers, booleans and nil", function()
    local conv = llmchat.conversation{ client = client }
    conv:tool{ name = "t", handler = function(a)
      if a.k == "table" then return { list = llmchat.array{}, name = "zoë", n = 3 } end
      if a.k == "string" then return "plain ✓" end
      if a.k == "number" then return 2.5 end
      if a.k == "bool" then return false end
      return nil
    end }
    local mock = { script = { { tool_calls = { call("1", "t", '{"k":"table"}'), call("2", "t", '{"k":"string"}'),
      call("3", "t", '{"k":"number"}'), call("4", "t", '{"k":"bool"}'), call("5", "t", '{"k":"nil"}') } },
      { reply = "ok" } } }
    assert.truthy(conv:say("x", { mock = mock }))
    local m = conv:messages()
    assert.same({ list = {}, name = "zoë", n = 3 }, json.decode(m[3].content))
    assert.truthy(m[3].content:find('"list":[]', 1, true))
    assert.equal("plain ✓", m[4].content)
    assert.equal("2.5", m[5].content)
    assert.equal("false", m[6].content)
    assert.equal("null", m[7].content)
  end)

  it("runs several rounds until the model answers", function()
    local seen, on_request = recorder()
    local conv = llmchat.conversation{ client = client, on_request = on_request }
    conv:tool{ name = "step", handler = function(a) return "step " .. a.i end }
    local mock = { script = {
      { tool_calls = { call("s1", "step", '{"i":1}') } },
      { tool_calls = { call("s2", "step", '{"i":2}') } },
      { tool_calls = { call("s3", "step", '{"i":3}') } },
      { reply = "three steps" } } }
    local res = assert(conv:say("walk", { mock = mock }))
    assert.equal("three steps", res.content)
    assert.equal(3, res.tool_rounds)
    assert.equal(4, #seen)
    assert.equal(4, conv:usage().calls)
    assert.equal(8, #conv:messages())  -- user + 3 * (call + result) + answer
  end)

  it("stops at max_tool_rounds with a clear error and leaves the history alone", function()
    local conv = llmchat.conversation{ client = client, max_tool_rounds = 2 }
    conv:tool{ name = "loop", handler = function() return "again" end }
    assert.truthy(conv:say("hello", { mock = { reply = "hi" } }))
    local before = conv:messages()
    local forever = { tool_calls = { call("x", "loop", "{}") } }
    local res, err = conv:say("spin", { mock = forever })
    assert.is_nil(res)
    assert.equal("max_tool_rounds", err.kind)
    assert.matches("max_tool_rounds = 2", tostring(err))
    assert.same(before, conv:messages())
    -- 1 call before, then the first ask + 2 tool rounds were billed
    assert.equal(4, conv:usage().calls)
    -- the per-call option wins
    res, err = conv:say("spin", { mock = forever, max_tool_rounds = 0 })
    assert.is_nil(res)
    assert.equal("max_tool_rounds", err.kind)
    assert.equal(5, conv:usage().calls)
    assert.same(before, conv:messages())
  end)

  it("lets on_tool_call approve or veto each call", function()
    local ran = {}
    local asked = {}
    local conv = llmchat.conversation{ client = client,
      on_tool_call = function(c)
        asked[#asked + 1] = c.name .. ":" .. c.arguments
        if c.args.path == "/etc/passwd" then return false, "path not allowed" end
        if c.args.path == "/quiet" then return false end
        return true
      end }
    conv:tool{ name = "read", handler = function(a) ran[#ran + 1] = a.path; return "contents" end }
    local mock = { script = { { tool_calls = { call("r1", "read", '{"path":"/tmp/a"}'),
      call("r2", "read", '{"path":"/etc/passwd"}'), call("r3", "read", '{"path":"/quiet"}') } },
      { reply = "read what I could" } } }
    assert.truthy(conv:say("read", { mock = mock }))
    assert.same({ "/tmp/a" }, ran)
    assert.same({ 'read:{"path":"/tmp/a"}', 'read:{"path":"/etc/passwd"}', 'read:{"path":"/quiet"}' }, asked)
    local m = conv:messages()
    assert.equal("contents", m[3].content)
    assert.equal("error: the call was refused: path not allowed", m[4].content)
    assert.equal("error: the call was refused", m[5].content)
  end)

  it("refuses a call when on_tool_call gives no answer (fail closed)", function()
    local ran = false
    local conv = llmchat.conversation{ client = client, on_tool_call = function() end }
    conv:tool{ name = "t", handler = function() ran = true end }
    local mock = { script = { { tool_calls = { call("1", "t", "{}") } }, { reply = "ok" } } }
    assert.truthy(conv:say("x", { mock = mock }))
    assert.is_false(ran)
    assert.equal("error: the call was refused: on_tool_call gave no answer", conv:messages()[3].content)
  end)

  it("gives ids to tool calls that come without one, and links the results", function()
    local conv = llmchat.conversation{ client = client }
    conv:tool{ name = "t", handler = function(a) return a.v end }
    local mock = { script = { { tool_calls = { call("", "t", '{"v":"a"}'), call("", "t", '{"v":"b"}') } },
      { reply = "ok" } } }
    assert.truthy(conv:say("x", { mock = mock }))
    local m = conv:messages()
    local id1, id2 = m[2].tool_calls[1].id, m[2].tool_calls[2].id
    assert.truthy(id1 ~= "" and id2 ~= "" and id1 ~= id2)
    assert.same({ role = "tool", tool_call_id = id1, content = "a" }, m[3])
    assert.same({ role = "tool", tool_call_id = id2, content = "b" }, m[4])
  end)

  it("keeps messages and tools for itself", function()
    local conv = llmchat.conversation{ client = client }
    assert.has_error(function() conv:say("x", { tools = {} }) end)
    assert.has_error(function() conv:say("x", { messages = {} }) end)
    assert.has_error(function() conv:tool{ name = "bad name!" } end)
    assert.has_error(function() conv:tool{ name = "ok", handler = 1 } end)
    conv:tool{ name = "gone", handler = function() end }
    assert.is_true(conv:remove_tool("gone"))
    assert.is_false(conv:remove_tool("gone"))
    assert.same({}, conv:tools())
  end)

  it("raises an error from the caller's own hook, and rolls the turn back", function()
    local conv = llmchat.conversation{ client = client }
    conv:tool{ name = "t", handler = function() return "x" end }
    local mock = { script = { { tool_calls = { call("1", "t", "{}") } }, { reply = "ok" } } }
    assert.has_error(function()
      conv:say("x", { mock = mock, on_tool_call = function() error("hook bug") end })
    end)
    assert.same({}, conv:messages())
    -- not left busy
    assert.truthy(conv:say("x", { mock = mock }))
  end)

  it("accepts tools in the API's own shape at construction", function()
    local seen, on_request = recorder()
    local conv = llmchat.conversation{ client = client, on_request = on_request, tools = {
      { type = "function", ["function"] = { name = "now", description = "time", parameters = { type = "object",
        properties = llmchat.object{} } }, handler = function() return { t = 1 } end } } }
    local mock = { script = { { tool_calls = { call("n", "now", "") } }, { reply = "it is 1" } } }
    local res = assert(conv:say("time?", { mock = mock }))
    assert.equal("it is 1", res.content)
    assert.equal('{"t":1}', conv:messages()[3].content)
    assert.equal("now", seen[1].tools[1]["function"].name)
    assert.same({ "now" }, conv:tools())
  end)

  it("runs the loop while streaming, with the same history", function()
    local text = {}
    local plain = llmchat.conversation{ client = client }
    local streamed = llmchat.conversation{ client = client }
    for _, c in ipairs{ plain, streamed } do
      c:tool{ name = "roll", handler = function(a) return { total = a.n } end }
    end
    local mock = { chunk_size = 3, script = {
      { tool_calls = { call("k1", "roll", '{"n":1}'), call("k2", "roll", '{"n":2}') } },
      { reply = "rolled 1 and 2" } } }
    assert.truthy(plain:say("roll", { mock = mock }))
    local res, err = streamed:say("roll", { mock = mock, on_delta = function(t, ev)
      if ev.kind == "content" then text[#text + 1] = t end
    end })
    assert.is_nil(err)
    assert.equal("rolled 1 and 2", table.concat(text))
    assert.equal("rolled 1 and 2", res.content)
    assert.same(plain:messages(), streamed:messages())
    -- usage was asked for in the stream, and counted
    assert.equal(2, streamed:usage().calls)
    assert.truthy(streamed:usage().completion_tokens > 0)
  end)

  it("keeps a failed tool round out of the history but counts the billed call", function()
    local conv = llmchat.conversation{ client = client }
    conv:tool{ name = "t", handler = function() return "ok" end }
    assert.truthy(conv:say("first", { mock = { reply = "one" } }))
    local before = conv:messages()
    -- round 1 answers with a tool call; round 2 fails with HTTP 500 (the
    -- hook swaps the scenario for the second request)
    local mock = { script = { {}, { tool_calls = { call("1", "t", "{}") } } } }
    local n = 0
    local res, err = conv:say("second", { mock = mock, on_request = function(params)
      n = n + 1
      if n == 2 then params.mock = { status = 500, error = { message = "upstream down" } } end
    end })
    assert.is_nil(res)
    assert.equal("server", err.kind)
    assert.same(before, conv:messages())
    assert.equal(3, #err.messages)   -- user, tool call, tool result: what the turn had built
    assert.equal(2, conv:usage().calls)
  end)

  it("re-attaches tool handlers by name after load", function()
    local path = os.tmpname()
    local conv = llmchat.conversation{ client = client }
    conv:tool{ name = "roll", description = "Roll dice", parameters = dice.parameters,
      handler = function() return "never saved" end }
    assert.truthy(conv:say("hi", { mock = { reply = "hello" } }))
    assert.truthy(conv:save(path))

    local mock = { script = { {}, { tool_calls = { call("z", "roll", '{"n":6}') } }, { reply = "six" } } }
    -- without handlers the definition is back, and a call is told it has none
    local bare = assert(llmchat.conversation.load(path, client))
    assert.same({ "roll" }, bare:tools())
    assert.truthy(bare:say("roll", { mock = mock }))
    assert.equal("error: tool 'roll' has no handler attached", bare:messages()[5].content)

    -- handlers by name at load time
    local loaded = assert(llmchat.conversation.load(path, client,
      { tools = { roll = function(a) return "rolled " .. a.n end } }))
    assert.truthy(loaded:say("roll", { mock = mock }))
    assert.equal("rolled 6", loaded:messages()[5].content)

    -- or later, with conv:tool{ name, handler } keeping the saved definition
    local seen, on_request = recorder()
    local later = assert(llmchat.conversation.load(path, { client = client }))
    later:tool{ name = "roll", handler = function() return "late" end }
    assert.truthy(later:say("roll", { mock = mock, on_request = on_request }))
    assert.equal("late", later:messages()[5].content)
    assert.equal("Roll dice", seen[1].tools[1]["function"].description)
    assert.same(dice.parameters, seen[1].tools[1]["function"].parameters)
    os.remove(path)
  end)
  it("keeps the same rules over the Responses API: vetoes, bad arguments, handlers after load", function()
    local path = os.tmpname()
    local asked = {}
    local conv = llmchat.conversation{ client = client, api = "responses",
      on_tool_call = function(c)
        asked[#asked + 1] = c.id
        if c.args.path == "/etc/passwd" then return false, "path not allowed" end
        return true
      end }
    conv:tool{ name = "read", description = "Reads a file", parameters = { type = "object" },
      handler = function(a) return "contents of " .. a.path end }
    local mock = { script = { { tool_calls = { call("r1", "read", '{"path":"/tmp/a"}'),
      call("r2", "read", '{"path":"/etc/passwd"}'), call("r3", "read", '{"path": ') } },
      { reply = "read what I could" } } }
    local res, err = conv:say("read", { mock = mock })
    assert.is_nil(err)
    assert.equal("read what I could", res.content)
    assert.same({ "r1", "r2" }, asked)   -- bad arguments never reach the hook
    local outputs = {}
    for _, item in ipairs(conv:messages()) do
      if item.type == "function_call_output" then outputs[item.call_id] = item.output end
    end
    assert.equal("contents of /tmp/a", outputs.r1)
    assert.equal("error: the call was refused: path not allowed", outputs.r2)
    assert.matches("^error: the arguments are not a valid JSON object", outputs.r3)

    -- saved and loaded, the definition comes back and the handler is re-attached by name
    assert.is_true(conv:save(path))
    local seen, on_request = recorder()
    local loaded = assert(llmchat.conversation.load(path, client,
      { tools = { read = function() return "late" end } }))
    assert.same({ "read" }, loaded:tools())
    local again = { script = { {}, {}, { tool_calls = { call("z", "read", '{"path":"/x"}') } }, { reply = "ok" } } }
    assert.truthy(loaded:say("again", { mock = again, on_request = on_request }))
    assert.same({ type = "function", name = "read", description = "Reads a file",
      parameters = { type = "object" } }, seen[1].tools[1])
    local m = loaded:messages()
    assert.equal("late", m[#m - 1].output)
    os.remove(path)
  end)
  it("lets a handler call the model inside llmchat.run, while other coroutines go on", function()
    local conv = llmchat.conversation{ client = client }
    conv:tool{ name = "ask", handler = function(args)
      local res, err = client:chat{ messages = { { role = "user", content = args.q } },
        mock = { chunk_delay = 0.01 }, stream = true }
      return res and res.content or tostring(err)
    end }
    local ticks, got = 0, nil
    llmchat.run(function()
      llmchat.spawn(function()
        got = conv:say("x", { mock = { script = { { tool_calls = { call("1", "ask", '{"q":"inner answer"}') } },
          { reply = "outer" } } } })
      end)
      llmchat.spawn(function()
        for _ = 1, 5 do ticks = ticks + 1; llmchat.sleep(0.005) end
      end)
    end)
    assert.equal("outer", got.content)
    assert.equal("inner answer", conv:messages()[3].content)
    assert.equal(5, ticks)
  end)
end)
