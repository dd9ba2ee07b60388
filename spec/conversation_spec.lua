-- llmchat.conversation against the local server: history, rollback, helpers,
-- persistence, usage and cost, structured output and the context budget.
local llmchat = require("llmchat")
local json = require("llmchat.json")
local conversation = require("llmchat.conversation")
local server = require("support.server")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function call(id, name, arguments)
  return { id = id, name = name, arguments = arguments }
end

describe("conversation", function()
  local srv, client

  setup(function()
    srv = server.start()
    client = llmchat.client{ base_url = srv.url, model = "llmchat-echo", max_retries = 0 }
  end)
  teardown(function() srv.stop() end)

  local function recorder()
    local seen = {}
    return seen, function(params) seen[#seen + 1] = json.decode(json.encode(params)) end
  end

  describe("say", function()
    it("appends the user message and the answer, and returns the result", function()
      local conv = llmchat.conversation{ client = client, system = "You are terse." }
      local res, err = conv:say("hello there")
      assert.is_nil(err)
      assert.equal("hello there", res.content)   -- the echo model
      assert.same({
        { role = "system", content = "You are terse." },
        { role = "user", content = "hello there" },
        { role = "assistant", content = "hello there" },
      }, conv:messages())
      assert.same({ role = "assistant", content = "hello there" }, conv:last())
    end)

    it("is callable as llmchat.conversation.new too, and checks its arguments", function()
      assert.truthy(conversation.new{ client = client })
      assert.has_error(function() llmchat.conversation{} end)
      assert.has_error(function() llmchat.conversation{ client = client, max_tool_rounds = "x" } end)
      local conv = llmchat.conversation{ client = client }
      assert.has_error(function() conv:say(42) end)
      assert.has_error(function() conv:say("x", { schema = "nope" }) end)
      assert.same({}, conv:messages())
    end)

    it("blames the caller's own line for a misuse", function()
      local conv = llmchat.conversation{ client = client }
      local function raised(f)
        local ok, e = pcall(f)
        assert.is_false(ok)
        return e
      end
      assert.matches("conversation_spec%.lua:%d+: conversation:say: expected a string",
        raised(function() conv:say(42) end))
      assert.matches("conversation_spec%.lua:%d+: conversation:say: content part 1 is a number",
        raised(function() conv:say({ 1 }) end))
      assert.matches("conversation_spec%.lua:%d+: conversation:cost: expected",
        raised(function() conv:cost{ input = 1 } end))
      assert.matches("conversation_spec%.lua:%d+: conversation:tool: tool name",
        raised(function() conv:tool{ name = "bad name" } end))
      assert.matches("conversation_spec%.lua:%d+: llmchat.conversation: tool name",
        raised(function() llmchat.conversation{ client = client, tools = { { name = "bad name" } } } end))
      assert.matches("conversation_spec%.lua:%d+: llmchat.conversation: 'max_tool_rounds' must be",
        raised(function() llmchat.conversation.new{ client = client, max_tool_rounds = "x" } end))
      assert.matches("conversation_spec%.lua:%d+: llmchat.conversation: 'client' must be",
        raised(function() llmchat.conversation{} end))
      assert.matches("conversation_spec%.lua:%d+: llmchat.conversation: 'api' must be",
        raised(function() llmchat.conversation{ client = client, api = "x" } end))
      assert.matches("conversation_spec%.lua:%d+: conversation:append: expected messages with a role",
        raised(function() conv:append({}) end))
      assert.matches("conversation_spec%.lua:%d+: conversation:save: expected a file path",
        raised(function() conv:save(42) end))
    end)

    it("sends conversation and per-call request fields, the per-call ones winning", function()
      local seen, on_request = recorder()
      local conv = llmchat.conversation{ client = client, model = "gpt-4o-mini", temperature = 0.5,
        seed = 7, on_request = on_request }
      assert.truthy(conv:say("a"))
      assert.truthy(conv:say("b", { temperature = 0, model = "gpt-4o" }))
      assert.equal("gpt-4o-mini", seen[1].model)
      assert.equal(0.5, seen[1].temperature)
      assert.equal(7, seen[1].seed)
      assert.equal("gpt-4o", seen[2].model)
      assert.equal(0, seen[2].temperature)
      assert.is_nil(seen[1].tools)
      assert.is_nil(seen[1].on_request)
      -- the second request carries the whole history
      assert.equal(3, #seen[2].messages)
    end)

    it("takes content parts and whole messages", function()
      local conv = llmchat.conversation{ client = client }
      local res = assert(conv:say({ "look at ", llmchat.content.image_url("https://example.com/a.png"), "this" }))
      assert.equal("look at this", res.content)
      local m = conv:messages()[1]
      assert.same({ { type = "text", text = "look at " },
        { type = "image_url", image_url = { url = "https://example.com/a.png" } },
        { type = "text", text = "this" } }, m.content)
      res = assert(conv:say({ role = "user", name = "ann", content = "named" }))
      assert.equal("named", res.content)
      assert.equal("ann", conv:messages()[3].name)
      res = assert(conv:say(llmchat.content.text("one part")))
      assert.equal("one part", res.content)
    end)

    it("leaves the history as it was when the call fails", function()
      local conv = llmchat.conversation{ client = client, system = "s" }
      assert.truthy(conv:say("one"))
      local before = conv:messages()
      local res, err = conv:say("two", { mock = { status = 503 } })
      assert.is_nil(res)
      assert.equal("server", err.kind)
      assert.same(before, conv:messages())
      res, err = conv:say("three", { mock = { status = 401 } })
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.same(before, conv:messages())
      assert.equal(1, conv:usage().calls)
      -- and it goes on normally afterwards
      assert.equal("four", conv:say("four").content)
      assert.equal(5, #conv:messages())
    end)

    it("is not left busy when the client raises on a misuse", function()
      local conv = llmchat.conversation{ client = client }
      assert.has_error(function() conv:say("x", { headers = 5 }) end)
      assert.same({}, conv:messages())
      assert.truthy(conv:say("fine"))
    end)

    it("runs inside llmchat.run coroutines, tool loops included", function()
      local a = llmchat.conversation{ client = client }
      local b = llmchat.conversation{ client = client }
      b:tool{ name = "t", handler = function() return "r" end }
      local got = {}
      llmchat.run(function()
        llmchat.spawn(function() got.a = a:say("from a", { mock = { chunk_delay = 0.01 }, stream = true }) end)
        llmchat.spawn(function()
          got.b = b:say("from b", { mock = { script = { { tool_calls = { call("1", "t", "{}") } },
            { reply = "b done" } } } })
        end)
        llmchat.spawn(function()
          -- the same conversation cannot take a second turn while one runs
          llmchat.sleep(0)
          got.busy = select(2, pcall(a.say, a, "again"))
        end)
      end)
      assert.equal("from a", got.a.content)
      assert.equal("b done", got.b.content)
      assert.matches("already waiting", got.busy)
      assert.equal(2, #a:messages())
      assert.equal(4, #b:messages())
    end)

    it("keeps a refusal in the history", function()
      local conv = llmchat.conversation{ client = client }
      local res = assert(conv:say("do the bad thing", { mock = { refusal = "I can't help with that." } }))
      assert.equal("I can't help with that.", res.refusal)
      local m = conv:last()
      assert.equal("I can't help with that.", m.refusal)
      assert.equal(json.null, m.content)
      assert.is_nil(m.annotations)
    end)

    it("stores an empty answer as \"\" and refuses a response without choices", function()
      local conv = llmchat.conversation{ client = client }
      local res = assert(conv:say("say nothing", { mock = { reply = llmchat.null } }))
      assert.is_nil(res.content)
      assert.same({ role = "assistant", content = "" }, conv:last())
      local before = conv:messages()
      local err
      res, err = conv:say("x", { mock = { body = '{"id":"chatcmpl-1","object":"chat.completion","choices":[]}' } })
      assert.is_nil(res)
      assert.equal("protocol", err.kind)
      assert.same(before, conv:messages())
    end)

    it("streams with on_delta or stream = true, and stores the same history", function()
      local plain = llmchat.conversation{ client = client }
      local streamed = llmchat.conversation{ client = client }
      local flagged = llmchat.conversation{ client = client }
      local pieces = {}
      assert.truthy(plain:say("stream me please"))
      local res = assert(streamed:say("stream me please", { mock = { chunk_size = 2 },
        on_delta = function(t) pieces[#pieces + 1] = t end }))
      assert.truthy(#pieces > 3)
      assert.equal("stream me please", table.concat(pieces))
      assert.equal("stream me please", res.content)
      assert.truthy(flagged:say("stream me please", { stream = true }))
      assert.same(plain:messages(), streamed:messages())
      assert.same(plain:messages(), flagged:messages())
      assert.same(plain:usage(), streamed:usage())
    end)

    it("rolls back a cancelled stream", function()
      local conv = llmchat.conversation{ client = client }
      local res, err = conv:say("cancel me soon", { mock = { chunk_size = 1, chunk_delay = 0.02 },
        on_delta = function() return false end })
      assert.is_nil(res)
      assert.equal("cancelled", err.kind)
      assert.same({}, conv:messages())
    end)
  end)

  describe("helpers", function()
    local function filled()
      local conv = llmchat.conversation{ client = client, system = "sys" }
      conv:tool{ name = "t", handler = function() return "r" end }
      assert.truthy(conv:say("one"))
      assert.truthy(conv:say("two", { mock = { script = { {}, { tool_calls = { call("c", "t", "{}") } },
        { reply = "two done" } } } }))
      return conv
    end

    it("undo drops the last exchange, tool rounds included", function()
      local conv = filled()
      assert.equal(7, #conv:messages())
      local dropped = conv:undo()
      assert.equal(4, #dropped)
      assert.equal("two", dropped[1].content)
      assert.same({ { role = "system", content = "sys" }, { role = "user", content = "one" },
        { role = "assistant", content = "one" } }, conv:messages())
      assert.truthy(conv:undo())
      assert.same({ { role = "system", content = "sys" } }, conv:messages())
      assert.is_nil(conv:undo())
    end)

    it("fork makes an independent copy", function()
      local conv = filled()
      local copy = conv:fork()
      assert.same(conv:messages(), copy:messages())
      assert.same(conv:usage(), copy:usage())
      assert.truthy(copy:say("only in the copy"))
      copy:tool{ name = "extra", handler = function() end }
      assert.equal(7, #conv:messages())
      assert.equal(9, #copy:messages())
      assert.same({ "t" }, conv:tools())
      assert.same({ "t", "extra" }, copy:tools())
      assert.equal(3, conv:usage().calls)
      assert.equal(4, copy:usage().calls)
      -- editing a returned message changes nothing inside
      copy:messages()[2].content = "changed"
      assert.equal("one", copy:messages()[2].content)
    end)

    it("clear keeps the system prompt, the tools and the totals", function()
      local conv = filled()
      conv:clear()
      assert.same({ { role = "system", content = "sys" } }, conv:messages())
      assert.same({ "t" }, conv:tools())
      assert.equal(3, conv:usage().calls)
      assert.is_nil(conv:last())
      assert.equal("again", conv:say("again").content)
    end)

    it("append adds messages without a call", function()
      local conv = llmchat.conversation{ client = client,
        messages = { { role = "system", content = "from messages" }, { role = "user", content = "u" } } }
      conv:append({ role = "assistant", content = "a" })
      assert.same({ { role = "system", content = "from messages" }, { role = "user", content = "u" },
        { role = "assistant", content = "a" } }, conv:messages())
      assert.equal(0, conv:usage().calls)
    end)
  end)

  describe("save and load", function()
    local path
    before_each(function() path = os.tmpname() end)
    after_each(function() os.remove(path) end)

    local function exotic()
      local conv = llmchat.conversation{ client = client, system = "Système ✓ — 日本語", model = "gpt-4o",
        temperature = 0.25 }
      conv:tool{ name = "lookup", description = "Looks things up",
        parameters = { type = "object", properties = llmchat.object{}, required = llmchat.array{} },
        handler = function(a) return { found = a.q, empty = llmchat.array{} } end }
      local text = "emoji 😀, quotes \" and \\ backslash, tab\t, newline\n, nul-free control \1, CJK 漢字"
      assert.truthy(conv:say(text, { mock = { script = {
        { tool_calls = { call("call_ü", "lookup", '{"q":"ß ✓ \\u00e9"}'), call("c2", "lookup", "{}") } },
        { reply = "réponse 😀" } } } }))
      assert.truthy(conv:say({ llmchat.content.text("see"),
        llmchat.content.image_url("data:image/png;base64,iVBORw0KGgo=", { detail = "low" }) }))
      return conv
    end

    it("round-trips exactly: unicode, tool calls, content parts, tools and totals", function()
      local conv = exotic()
      assert.is_true(conv:save(path))
      local loaded = assert(llmchat.conversation.load(path, client))
      assert.same(conv:messages(), loaded:messages())
      assert.same(conv:usage(), loaded:usage())
      assert.same(conv:tools(), loaded:tools())
      assert.equal("gpt-4o", loaded.model)
      assert.equal(0.25, loaded.params.temperature)
      -- byte-exact unicode and the tool-call arguments string
      local m = loaded:messages()
      assert.equal("Système ✓ — 日本語", m[1].content)
      assert.truthy(m[2].content:find("emoji 😀", 1, true))
      assert.equal('{"q":"ß ✓ \\u00e9"}', m[3].tool_calls[1]["function"].arguments)
      assert.equal("call_ü", m[4].tool_call_id)
      assert.equal(json.null, m[3].content)
      -- saving the loaded copy gives the same document
      local again = os.tmpname()
      assert.is_true(loaded:save(again))
      assert.same(json.decode(read(path)), json.decode(read(again)))
      os.remove(again)
      -- and it carries on talking
      assert.equal("more", loaded:say("more").content)
    end)

    it("writes the documented JSON, with empty arrays as arrays", function()
      local conv = exotic()
      assert.is_true(conv:save(path))
      local text = read(path)
      local doc = json.decode(text)
      assert.equal(1, doc.version)
      assert.equal("gpt-4o", doc.model)
      assert.equal("Système ✓ — 日本語", doc.system)
      assert.equal(7, #doc.messages)   -- no system message inside: it is `system`
      assert.same({ name = "lookup", description = "Looks things up",
        parameters = { type = "object", properties = {}, required = {} } }, doc.tools[1])
      assert.truthy(text:find('"required":[]', 1, true))
      assert.truthy(text:find('"properties":{}', 1, true))
      assert.truthy(text:find('"content":null', 1, true))
      assert.truthy(text:find("😀", 1, true))   -- UTF-8 as is, not \u escapes
      assert.equal(3, doc.usage.calls)
      assert.equal(conv:usage().prompt_tokens, doc.usage.prompt_tokens)
      -- an empty conversation keeps [] too
      local empty = llmchat.conversation{ client = client }
      assert.is_true(empty:save(path))
      text = read(path)
      assert.truthy(text:find('"messages":[]', 1, true))
      assert.truthy(text:find('"tools":[]', 1, true))
    end)

    it("replaces the file atomically and leaves no temporary files", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert.truthy(os.execute("mkdir -p '" .. dir .. "'"))
      local file = dir .. "/conv.json"
      local conv = exotic()
      assert.is_true(conv:save(file))
      local first = read(file)
      assert.truthy(conv:say("one more"))
      assert.is_true(conv:save(file))
      assert.not_equal(first, read(file))
      local p = io.popen("ls -a '" .. dir .. "'")
      local names = p:read("*a")
      p:close()
      assert.equal(".\n..\nconv.json\n", names)
      os.execute("rm -rf '" .. dir .. "'")
    end)

    it("returns nil and an error for files it cannot write or read", function()
      local conv = llmchat.conversation{ client = client }
      local ok, err = conv:save("/nonexistent-dir/x/conv.json")
      assert.is_nil(ok)
      assert.is_true(llmchat.is_error(err))
      assert.equal("io", err.kind)
      assert.is_string(err.message)
      assert.matches("cannot save", err.message)
      local c, lerr = llmchat.conversation.load("/nonexistent-dir/conv.json", client)
      assert.is_nil(c)
      assert.equal("io", lerr.kind)
      assert.matches("cannot open", lerr.message)
      assert.matches("^llmchat: io: cannot open", tostring(lerr))
      local f = assert(io.open(path, "wb")); f:write("{ not json"); f:close()
      c, lerr = llmchat.conversation.load(path, client)
      assert.is_nil(c)
      assert.equal("format", lerr.kind)
      assert.is_string(lerr.message)
      assert.matches("cannot load", lerr.message)
      f = assert(io.open(path, "wb")); f:write('{"version": 99, "messages": []}'); f:close()
      c, lerr = llmchat.conversation.load(path, client)
      assert.is_nil(c)
      assert.equal("format", lerr.kind)
      assert.matches("version 99", lerr.message)
      f = assert(io.open(path, "wb")); f:write('"a string"'); f:close()
      c, lerr = llmchat.conversation.load(path, client)
      assert.is_nil(c)
      assert.equal("format", lerr.kind)
      assert.matches("not a saved conversation", lerr.message)
      c, lerr = llmchat.conversation.from_table({ version = 1 }, client)
      assert.is_nil(c)
      assert.equal("format", lerr.kind)
      assert.matches("no messages array", lerr.message)
      c, lerr = llmchat.conversation.from_table({ version = 1, messages = {}, max_tool_rounds = "x" }, client)
      assert.is_nil(c)
      assert.equal("format", lerr.kind)
      assert.matches("'max_tool_rounds' is a string", lerr.message)
      c, lerr = llmchat.conversation.from_table({ version = 1, messages = { 42 } }, client)
      assert.is_nil(c)
      assert.equal("format", lerr.kind)
      c, lerr = llmchat.conversation.from_table({ version = 1, messages = {}, api = "soap" }, client)
      assert.is_nil(c)
      assert.equal("format", lerr.kind)
      assert.matches("unknown api", lerr.message)
      assert.has_error(function() llmchat.conversation.load(path) end)
      assert.has_error(function() conv:save(42) end)
    end)

    it("saves request fields but not callbacks or headers", function()
      local conv = llmchat.conversation{ client = client, temperature = 0.5, headers = { ["X-Secret"] = "s3cr3t" },
        on_delta = function() end }
      assert.truthy(conv:say("streamed by default"))
      assert.is_true(conv:save(path))
      local text = read(path)
      assert.falsy(text:find("s3cr3t", 1, true))
      assert.same({ temperature = 0.5 }, json.decode(text).params)
    end)

    it("refuses to save text that is not UTF-8, and keeps the old file", function()
      local conv = llmchat.conversation{ client = client }
      assert.is_true(conv:save(path))
      conv:append({ role = "user", content = "bad \255 byte" })
      local ok, err = conv:save(path)
      assert.is_nil(ok)
      assert.equal("bad_request", err.kind)
      assert.is_string(err.message)
      assert.matches("invalid UTF%-8", err.message)
      assert.same({}, json.decode(read(path)).messages)
    end)
  end)

  describe("usage and cost", function()
    local function usage(p, c, cached, reasoning, cost)
      return { prompt_tokens = p, completion_tokens = c, total_tokens = p + c,
        prompt_tokens_details = { cached_tokens = cached },
        completion_tokens_details = { reasoning_tokens = reasoning }, cost = cost }
    end

    it("sums every call, tool rounds included", function()
      local conv = llmchat.conversation{ client = client }
      conv:tool{ name = "t", handler = function() return "r" end }
      assert.same({ prompt_tokens = 0, completion_tokens = 0, total_tokens = 0, cached_tokens = 0,
        reasoning_tokens = 0, calls = 0 }, conv:usage())
      assert.truthy(conv:say("x", { mock = { script = {
        { tool_calls = { call("1", "t", "{}") }, usage = usage(1000, 200, 100, 50) },
        { reply = "y", usage = usage(1300, 400, 0, 300) } } } }))
      assert.truthy(conv:say("z", { mock = { usage = usage(2000, 10, 1500, 0) } }))
      assert.same({ prompt_tokens = 4300, completion_tokens = 610, total_tokens = 4910,
        cached_tokens = 1600, reasoning_tokens = 350, calls = 3 }, conv:usage())
      -- gpt-4.5-preview: $75 / $150 per million tokens
      assert.near((4300 * 75 + 610 * 150) / 1e6, conv:cost{ input = 75, output = 150 }, 1e-12)
      -- cached input at its own price
      assert.near(((4300 - 1600) * 75 + 1600 * 37.5 + 610 * 150) / 1e6,
        conv:cost{ input = 75, output = 150, cached_input = 37.5 }, 1e-12)
      local none, why = conv:cost()
      assert.is_nil(none)
      assert.is_true(llmchat.is_error(why))
      assert.equal("bad_request", why.kind)
      assert.matches("no cost", why.message)
      assert.has_error(function() conv:cost{ input = 1 } end)
    end)

    it("uses the cost the provider reports (OpenRouter usage.cost)", function()
      local conv = llmchat.conversation{ client = client }
      conv:tool{ name = "t", handler = function() return "r" end }
      assert.truthy(conv:say("x", { mock = { script = {
        { tool_calls = { call("1", "t", "{}") }, usage = usage(10, 5, 0, 0, 0.00125) },
        { reply = "y", usage = usage(20, 5, 0, 0, 0.0025) } } } }))
      assert.near(0.00375, conv:cost(), 1e-12)
      assert.near(0.00375, conv:usage().cost, 1e-12)
      -- explicit prices still compute from the tokens
      assert.near((30 * 1 + 10 * 2) / 1e6, conv:cost{ input = 1, output = 2 }, 1e-15)
    end)

    it("counts streamed calls (asks for usage in the stream)", function()
      local seen, on_request = recorder()
      local conv = llmchat.conversation{ client = client, on_request = on_request }
      assert.truthy(conv:say("abcdefgh", { stream = true, mock = { usage = usage(7, 3, 0, 0) } }))
      assert.same({ include_usage = true }, seen[1].stream_options)
      assert.equal(7, conv:usage().prompt_tokens)
      assert.equal(3, conv:usage().completion_tokens)
    end)

    it("streams with on_event alone, every event kind, and counts the call", function()
      local seen = {}
      local conv = llmchat.conversation{ client = client,
        on_request = function(p) seen[#seen + 1] = { stream_options = p.stream_options } end }
      conv:tool{ name = "t", handler = function() return "r" end }
      local kinds = {}
      local res = assert(conv:say("x", { mock = { chunk_size = 2, script = {
        { tool_calls = { call("1", "t", '{"a":1}') } }, { reply = "streamed" } } },
        on_event = function(ev) kinds[ev.kind] = (kinds[ev.kind] or 0) + 1 end }))
      assert.equal("streamed", res.content)
      assert.same({ include_usage = true }, seen[1].stream_options)
      assert.truthy(kinds.tool_call and kinds.tool_call > 1)
      assert.truthy(kinds.content and kinds.content > 1)
      assert.equal(2, conv:usage().calls)
      assert.truthy(conv:usage().completion_tokens > 0)
      assert.has_error(function() conv:say("x", { on_event = 1 }) end)
    end)
  end)

  describe("structured output", function()
    local schema = { type = "object", properties = { name = { type = "string" }, age = { type = "integer" } },
      required = { "name", "age" }, additionalProperties = false }

    it("sends the schema as response_format and decodes res.data", function()
      local seen, on_request = recorder()
      local conv = llmchat.conversation{ client = client, on_request = on_request }
      local res, err = conv:say("who?", { schema = schema, schema_name = "person",
        mock = { reply = '{"name":"Zoë","age":31}' } })
      assert.is_nil(err)
      assert.same({ name = "Zoë", age = 31 }, res.data)
      assert.same({ type = "json_schema", json_schema = { name = "person", schema = schema, strict = true } },
        seen[1].response_format)
      assert.equal(2, #conv:messages())
    end)

    it("decodes the final answer after tool rounds", function()
      local conv = llmchat.conversation{ client = client }
      conv:tool{ name = "age_of", handler = function() return 31 end }
      local res = assert(conv:say("who?", { schema = schema, mock = { script = {
        { tool_calls = { call("1", "age_of", '{"name":"Zoë"}') } },
        { reply = '{"name":"Zoë","age":31}' } } } }))
      assert.same({ name = "Zoë", age = 31 }, res.data)
    end)

    it("fails with a protocol error that keeps the raw text, and rolls back", function()
      local conv = llmchat.conversation{ client = client }
      local res, err = conv:say("who?", { schema = schema, mock = { reply = "Zoë, 31" } })
      assert.is_nil(res)
      assert.equal("protocol", err.kind)
      assert.equal("Zoë, 31", err.raw)
      assert.same({}, conv:messages())
      assert.equal(1, conv:usage().calls)
    end)

    it("passes response_format through, and decodes json_object answers", function()
      local seen, on_request = recorder()
      local conv = llmchat.conversation{ client = client, on_request = on_request,
        response_format = { type = "json_object" } }
      local res = assert(conv:say("json", { mock = { reply = '{"ok":true}' } }))
      assert.same({ type = "json_object" }, seen[1].response_format)
      assert.same({ ok = true }, res.data)
    end)

    it("client:chat decodes with schema as well", function()
      local res = assert(client:chat{ messages = { { role = "user", content = "x" } }, schema = schema,
        mock = { reply = '{"name":"A","age":1}' } })
      assert.same({ name = "A", age = 1 }, res.data)
    end)
  end)

  describe("llmchat.schema", function()
    local schema_mod = require("llmchat.schema")
    local person = { type = "object", properties = { name = { type = "string" } } }

    it("builds response_format and text.format from a schema, and leaves the caller's own alone", function()
      assert.same({ type = "json_schema", json_schema = { name = "person", schema = person, strict = true } },
        schema_mod.response_format{ schema = person, schema_name = "person" })
      assert.equal("response", schema_mod.response_format{ schema = person }.json_schema.name)
      assert.is_nil(schema_mod.response_format{})
      assert.is_nil(schema_mod.response_format{ schema = person, response_format = { type = "json_object" } })
      assert.same({ verbosity = "low", format = { type = "json_schema", name = "response", schema = person,
        strict = true } }, schema_mod.text_format{ schema = person, text = { verbosity = "low" } })
      assert.is_nil(schema_mod.text_format{ schema = person, text = { format = { type = "text" } } })
      assert.is_nil(schema_mod.text_format{})
      assert.has_error(function() schema_mod.response_format{ schema = "nope" } end,
        "llmchat: 'schema' must be a table (a JSON schema)")
      assert.has_error(function() schema_mod.text_format{ schema = person, schema_name = 5 } end,
        "llmchat: 'schema_name' must be a string")
    end)

    it("decodes answers into res.data: strictly with a schema, leniently for a JSON format", function()
      local res = assert(schema_mod.decode({ content = '{"name":"A"}' }, { schema = person }))
      assert.same({ name = "A" }, res.data)
      local none, err = schema_mod.decode({ content = "A", refusal = "no", status = 200 }, { schema = person })
      assert.is_nil(none)
      assert.equal("protocol", err.kind)
      assert.equal("A", err.raw)
      assert.equal("no", err.refusal)
      assert.equal("A", err.partial.content)
      assert.matches("not the JSON the schema asks for", err.message)
      none, err = schema_mod.decode({ refusal = "I can't" }, { schema = person })
      assert.is_nil(none)
      assert.equal("protocol", err.kind)
      res = schema_mod.decode({ content = "not json" }, { response_format = { type = "json_object" } })
      assert.is_nil(res.data)
      res = schema_mod.decode({ content = '[1]' }, { response_format = { type = "json_object" } })
      assert.same({ 1 }, res.data)
      res = schema_mod.decode({ content = '{"a":1}' }, { text = { format = { type = "json_schema" } } })
      assert.same({ a = 1 }, res.data)
      res = schema_mod.decode({ content = '{"a":1}' }, {})
      assert.is_nil(res.data)
    end)
  end)

  describe("the assistant message", function()
    it("res.message is what a conversation stores; the choice keeps what the provider sent", function()
      local conv = llmchat.conversation{ client = client }
      conv:tool{ name = "t", handler = function() return "r" end }
      local first
      local res = assert(conv:say("go", { mock = { script = { { tool_calls = { call("", "t", "{}") } },
        { reply = "done" } } }, on_request = function(p)
          if not first then first = assert(client:chat{ messages = p.messages, tools = p.tools, mock = p.mock }) end
        end }))
      assert.equal("done", res.content)
      -- the tool-call answer, as client:chat gives it and as the history keeps it
      local stored = conv:messages()[2]
      assert.equal(json.null, first.message.content)
      assert.is_nil(first.content)
      assert.equal("assistant", first.message.role)
      assert.is_nil(first.message.annotations)
      assert.same({}, first.choices[1].message.annotations)   -- the provider's own fields stay on the choice
      -- ids are given to calls that came without one, the same in res.message and res.tool_calls
      local id = first.message.tool_calls[1].id
      assert.truthy(#id > 0)
      assert.equal(id, first.tool_calls[1].id)
      stored.tool_calls[1].id = id   -- each shaping numbers its own id-less calls
      assert.same(stored, first.message)
      -- a plain answer: the stored message is res.message
      assert.same(conv:last(), res.message)
      assert.same({ role = "assistant", content = "done" }, res.message)
    end)

    it("is the same streamed or not", function()
      local plain = assert(client:chat{ messages = { { role = "user", content = "x" } },
        mock = { refusal = "I can't help with that." } })
      local streamed = assert(client:chat{ messages = { { role = "user", content = "x" } }, stream = true,
        mock = { refusal = "I can't help with that." } })
      assert.same({ role = "assistant", content = json.null, refusal = "I can't help with that." }, plain.message)
      assert.same(plain.message, streamed.message)
      assert.equal("I can't help with that.", streamed.refusal)
    end)
  end)

  describe("context budget", function()
    local estimate = conversation.estimate_tokens

    local function long(n, tag) return tag .. string.rep("x", n - #tag) end

    it("documents its estimate: 4 per message + ceil(bytes / 4), 3 per request", function()
      assert.equal(4 + 3, conversation.message_tokens{ role = "user", content = "abcdefghij" })
      assert.equal(4 + 85, conversation.message_tokens{ role = "user", content = {
        { type = "image_url", image_url = { url = "https://x", detail = "low" } } } })
      assert.equal(3 + 7 + 7, estimate{ { role = "user", content = "abcdefghij" },
        { role = "assistant", content = "abcdefghij" } })
    end)

    it("drops the oldest messages so the request fits, keeping the system prompt", function()
      local seen, on_request = recorder()
      local conv = llmchat.conversation{ client = client, system = "sys", on_request = on_request }
      for i = 1, 6 do
        conv:append({ role = "user", content = long(400, "u" .. i) },
          { role = "assistant", content = long(400, "a" .. i) })
      end
      local res = assert(conv:say("now", { max_context_tokens = 500 }))
      local sent = seen[1].messages
      assert.truthy(estimate(sent) <= 500)
      assert.same({ role = "system", content = "sys" }, sent[1])
      assert.same({ role = "user", content = "now" }, sent[#sent])
      assert.equal(long(400, "a6"), sent[#sent - 1].content)  -- the newest history kept
      assert.equal(12 - (#sent - 2), res.trimmed)
      -- the history itself is never trimmed
      assert.equal(15, #conv:messages())
      -- without a budget, everything goes
      assert.truthy(conv:say("all"))
      assert.equal(16, #seen[2].messages)
    end)

    it("never separates a tool call from its results", function()
      local seen, on_request = recorder()
      local conv = llmchat.conversation{ client = client, max_context_tokens = 300, on_request = on_request }
      conv:append({ role = "user", content = long(400, "old") },
        { role = "assistant", content = json.null, tool_calls = { { id = "k", type = "function",
          ["function"] = { name = "t", arguments = "{}" } } } },
        { role = "tool", tool_call_id = "k", content = long(800, "result-1") },
        { role = "tool", tool_call_id = "k", content = long(800, "result-2") },
        { role = "assistant", content = "short" })
      assert.truthy(conv:say("q"))
      local sent = seen[1].messages
      for i, m in ipairs(sent) do
        if m.role == "tool" then
          assert.truthy(sent[i - 1].role == "tool" or sent[i - 1].tool_calls)
        end
      end
      -- the unit (call + both results) was too big, so it went whole
      assert.same({ { role = "assistant", content = "short" }, { role = "user", content = "q" } }, sent)
    end)

    it("never drops the current turn, tool rounds included", function()
      local seen, record = recorder()
      local conv = llmchat.conversation{ client = client }
      conv:tool{ name = "big", handler = function() return long(2000, "big") end }
      conv:append({ role = "user", content = "old" }, { role = "assistant", content = "old answer" })
      -- the scripted model counts assistant messages, which trimming changes:
      -- switch the scenario by hand for the second request
      local function on_request(params)
        record(params)
        if #seen == 2 then params.mock = { reply = "done" } end
      end
      local res = assert(conv:say("go", { max_context_tokens = 50, on_request = on_request,
        mock = { tool_calls = { call("b", "big", "{}") } } }))
      assert.equal("done", res.content)
      local last = seen[#seen].messages
      assert.same({ "user", "assistant", "tool" }, { last[1].role, last[2].role, last[3].role })
      assert.equal("go", last[1].content)
    end)
  end)
  describe("over the Responses API", function()
    local function responses(opts)
      opts = opts or {}
      opts.client, opts.api = client, "responses"
      return llmchat.conversation(opts)
    end

    local roll = { name = "roll", description = "Roll dice",
      parameters = { type = "object", properties = { n = { type = "integer" } }, required = { "n" } } }

    it("checks its api and that the client can respond", function()
      assert.has_error(function() llmchat.conversation{ client = client, api = "completions" } end)
      local chat_only = { chat = function() end }
      assert.has_error(function() llmchat.conversation{ client = chat_only, api = "responses" } end,
        "llmchat.conversation: api = \"responses\" needs a client with respond()")
      assert.equal("chat", llmchat.conversation{ client = client }.api)
      assert.equal("responses", responses().api)
    end)

    it("sends the system prompt as instructions and the history as input items", function()
      local seen, on_request = recorder()
      local conv = responses{ system = "You are terse.", temperature = 0.5, on_request = on_request }
      local res, err = conv:say("hello there")
      assert.is_nil(err)
      assert.equal("hello there", res.content)
      assert.equal("completed", res.status)
      assert.equal("You are terse.", seen[1].instructions)
      assert.same({ { role = "user", content = "hello there" } }, seen[1].input)
      assert.equal(0.5, seen[1].temperature)
      assert.is_nil(seen[1].messages)
      assert.is_nil(seen[1].stream_options)
      -- the history: the user's item, then the response's output items as they came
      local m = conv:messages()
      assert.equal(2, #m)
      assert.same({ role = "user", content = "hello there" }, m[1])
      assert.equal("message", m[2].type)
      assert.equal("assistant", m[2].role)
      assert.equal("hello there", m[2].content[1].text)
      assert.equal(res.output[1].id, m[2].id)
      -- the next request sends it all back
      assert.equal("again", conv:say("again").content)
      assert.equal(3, #seen[2].input)
      assert.same(m[2], seen[2].input[2])
      assert.equal(4, #conv:messages())
    end)

    it("runs tools until the model answers, with flat tools and function_call_output items", function()
      local seen, on_request = recorder()
      local order = {}
      local conv = responses{ on_request = on_request }
      conv:tool{ name = roll.name, description = roll.description, parameters = roll.parameters,
        handler = function(args) order[#order + 1] = args.n; return { total = args.n * 3 } end }
      conv:tool{ name = "broken", handler = function() error("disk full") end }
      local res, err = conv:say("Roll", { mock = { script = {
        { tool_calls = { call("c1", "roll", '{"n":2}'), call("c2", "broken", "{}"),
          call("c3", "roll", '{"n":5}'), call("c4", "nope", "{}") } },
        { reply = "rolled" } } } })
      assert.is_nil(err)
      assert.equal("rolled", res.content)
      assert.equal(1, res.tool_rounds)
      assert.same({ 2, 5 }, order)
      assert.equal(2, #seen)
      assert.same({ { type = "function", name = "roll", description = "Roll dice", parameters = roll.parameters },
        { type = "function", name = "broken" } }, seen[1].tools)
      -- user, 4 function_call items, 4 outputs in the order of the calls, the answer
      local m = conv:messages()
      assert.equal(10, #m)
      for i, id in ipairs{ "c1", "c2", "c3", "c4" } do
        assert.equal("function_call", m[1 + i].type)
        assert.equal(id, m[1 + i].call_id)
        assert.equal("function_call_output", m[5 + i].type)
        assert.equal(id, m[5 + i].call_id)
      end
      assert.equal('{"n":2}', m[2].arguments)
      assert.same({ type = "function_call_output", call_id = "c1", output = '{"total":6}' }, m[6])
      assert.equal("error: disk full", m[7].output)
      assert.equal('{"total":15}', m[8].output)
      assert.equal("error: unknown tool 'nope'", m[9].output)
      assert.equal("message", m[10].type)
      -- the second request carried the calls and their outputs
      assert.equal(9, #seen[2].input)
      assert.equal("c4", seen[2].input[9].call_id)
      -- usage adds up across rounds, from input_tokens / output_tokens
      local u = conv:usage()
      assert.equal(2, u.calls)
      assert.truthy(u.prompt_tokens > 0 and u.completion_tokens > 0)
      assert.equal(u.prompt_tokens + u.completion_tokens, u.total_tokens)
    end)

    it("sums Responses usage fields, cached and reasoning tokens included", function()
      local conv = responses()
      conv:tool{ name = "t", handler = function() return "r" end }
      assert.truthy(conv:say("x", { mock = { script = {
        { tool_calls = { call("1", "t", "{}") }, usage = { input_tokens = 1000, output_tokens = 200,
          total_tokens = 1200, input_tokens_details = { cached_tokens = 100 },
          output_tokens_details = { reasoning_tokens = 50 } } },
        { reply = "y", usage = { input_tokens = 1300, output_tokens = 400, total_tokens = 1700,
          input_tokens_details = { cached_tokens = 0 }, output_tokens_details = { reasoning_tokens = 300 } } } } } }))
      assert.same({ prompt_tokens = 2300, completion_tokens = 600, total_tokens = 2900,
        cached_tokens = 100, reasoning_tokens = 350, calls = 2 }, conv:usage())
      assert.near((2300 * 2 + 600 * 8) / 1e6, conv:cost{ input = 2, output = 8 }, 1e-12)
    end)

    it("stops at max_tool_rounds and leaves the history alone", function()
      local conv = responses{ max_tool_rounds = 1 }
      conv:tool{ name = "loop", handler = function() return "again" end }
      assert.truthy(conv:say("hi"))
      local before = conv:messages()
      local res, err = conv:say("spin", { mock = { tool_calls = { call("x", "loop", "{}") } } })
      assert.is_nil(res)
      assert.equal("max_tool_rounds", err.kind)
      assert.matches("max_tool_rounds = 1", err.message)
      assert.same(before, conv:messages())
      assert.equal(3, conv:usage().calls)
      assert.equal(4, #err.messages)   -- user, call, output, call
    end)

    it("rolls back a failed call", function()
      local conv = responses()
      assert.truthy(conv:say("one"))
      local before = conv:messages()
      local res, err = conv:say("two", { mock = { status = 503 } })
      assert.is_nil(res)
      assert.equal("server", err.kind)
      assert.same(before, conv:messages())
      assert.equal(1, conv:usage().calls)
    end)

    it("streams with on_delta and stores the same history as a plain call", function()
      local plain, streamed = responses(), responses()
      for _, c in ipairs{ plain, streamed } do
        c:tool{ name = "roll", handler = function(a) return { total = a.n } end }
      end
      local mock = { chunk_size = 3, script = {
        { tool_calls = { call("k1", "roll", '{"n":1}'), call("k2", "roll", '{"n":2}') } },
        { reply = "rolled 1 and 2" } } }
      assert.truthy(plain:say("roll", { mock = mock }))
      local text = {}
      local res, err = streamed:say("roll", { mock = mock, on_delta = function(t) text[#text + 1] = t end })
      assert.is_nil(err)
      assert.equal("rolled 1 and 2", table.concat(text))
      assert.equal("rolled 1 and 2", res.content)
      -- the same items but their ids (the server numbers each response)
      local function without_ids(items)
        for _, item in ipairs(items) do item.id = nil end
        return items
      end
      assert.same(without_ids(plain:messages()), without_ids(streamed:messages()))
      assert.equal(6, #streamed:messages())
      assert.same(plain:usage(), streamed:usage())
    end)

    it("turns content parts into input parts", function()
      local seen, on_request = recorder()
      local conv = responses{ on_request = on_request }
      local res = assert(conv:say({ "look at ", llmchat.content.image_url("https://example.com/a.png",
        { detail = "low" }), "this" }))
      assert.equal("look at this", res.content)
      assert.same({ role = "user", content = { { type = "input_text", text = "look at " },
        { type = "input_image", image_url = "https://example.com/a.png", detail = "low" },
        { type = "input_text", text = "this" } } }, seen[1].input[1])
    end)

    it("asks for structured output with text.format and decodes res.data", function()
      local seen, on_request = recorder()
      local conv = responses{ on_request = on_request }
      local schema = { type = "object", properties = { name = { type = "string" } }, required = { "name" } }
      local res = assert(conv:say("who?", { schema = schema, schema_name = "person",
        mock = { reply = '{"name":"Zoë"}' } }))
      assert.same({ name = "Zoë" }, res.data)
      assert.same({ format = { type = "json_schema", name = "person", schema = schema, strict = true } },
        seen[1].text)
      assert.is_nil(seen[1].response_format)
      local bad, err = conv:say("who?", { schema = schema, mock = { reply = "Zoë" } })
      assert.is_nil(bad)
      assert.equal("protocol", err.kind)
      assert.equal("Zoë", err.raw)
      assert.equal(2, #conv:messages())
    end)

    it("saves and loads, empty arrays and all, and carries on", function()
      local path = os.tmpname()
      local conv = responses{ system = "Système ✓", model = "gpt-4o" }
      conv:tool{ name = "t", handler = function() return "r" end }
      assert.truthy(conv:say("héllo", { mock = { script = { { tool_calls = { call("c1", "t", "{}") } },
        { reply = "réponse" } } } }))
      assert.is_true(conv:save(path))
      local text = read(path)
      local doc = json.decode(text)
      assert.equal("responses", doc.api)
      assert.equal("Système ✓", doc.system)
      assert.equal(4, #doc.messages)
      assert.truthy(text:find('"annotations":[]', 1, true))
      local loaded = assert(llmchat.conversation.load(path, client, { tools = { t = function() return "r" end } }))
      assert.equal("responses", loaded.api)
      assert.same(conv:messages(), loaded:messages())
      assert.same(conv:usage(), loaded:usage())
      local again = os.tmpname()
      assert.is_true(loaded:save(again))
      assert.same(doc, json.decode(read(again)))
      local seen, on_request = recorder()
      assert.equal("more", loaded:say("more", { on_request = on_request }).content)
      assert.equal("Système ✓", seen[1].instructions)
      assert.equal(5, #seen[1].input)   -- the 4 saved items and the new user message
      assert.truthy(json.encode(seen[1].input):find('"annotations":[]', 1, true))
      os.remove(path)
      os.remove(again)
    end)

    it("trims the oldest items to the budget, never a call without its output", function()
      local seen, on_request = recorder()
      local conv = responses{ system = "sys", on_request = on_request }
      local function long(n, tag) return tag .. string.rep("x", n - #tag) end
      conv:append({ role = "user", content = long(400, "u1") },
        { type = "function_call", call_id = "k", name = "t", arguments = "{}" },
        { type = "function_call_output", call_id = "k", output = long(800, "out") },
        { type = "message", role = "assistant", content = { { type = "output_text", text = "short" } } },
        { role = "user", content = long(400, "u2") },
        { type = "message", role = "assistant", content = { { type = "output_text", text = long(400, "a2") } } })
      local res = assert(conv:say("now", { max_context_tokens = 300 }))
      local sent = seen[1].input
      assert.same({ role = "user", content = "now" }, sent[#sent])
      for i, item in ipairs(sent) do
        if item.type == "function_call_output" then assert.equal("function_call", sent[i - 1].type) end
      end
      assert.truthy(conversation.estimate_tokens(sent) + conversation.message_tokens{ role = "system",
        content = "sys" } <= 300)
      assert.equal(6 - (#sent - 1), res.trimmed)
      assert.equal(8, #conv:messages())
      assert.has_error(function() conv:append({ content = "no role, no type" }) end)
    end)
  end)
end)
