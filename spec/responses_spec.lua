-- The Responses API (issue 11): client:respond blocking and streamed (callback, iterator),
-- start and map forms, the result's chat shape, typed events, errors, against the local
-- server's /v1/responses; and a recorded OpenAI stream replayed at random split points.
local server = require("support.server")
local llmchat = require("llmchat")
local endpoints = require("llmchat.endpoints")
local cjson = require("cjson")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local CALLS = {
  { name = "get_weather", arguments = '{"city":"Paris","unit":"celsius"}' },
  { name = "roll_dice", arguments = '{"sides":20,"count":3}' },
}

describe("Responses API", function()
  local srv, c
  setup(function()
    srv = server.start()
    c = llmchat.client{ base_url = srv.url, api_key = "sk-test-responses", model = "gpt-4.1",
      max_retries = 2, retry_base_delay = 0.01, retry_max_delay = 0.02 }
  end)
  teardown(function() srv.stop() end)

  it("answers in the chat result's shape", function()
    local res = assert(c:respond{ input = "hello there", instructions = "be terse" })
    assert.equal("hello there", res.content)
    assert.equal("completed", res.status)
    assert.equal(200, res.http_status)
    assert.equal("stop", res.finish_reason)
    assert.equal("response", res.object)
    assert.truthy(res.id:find("^resp_"))
    assert.equal("gpt-4.1", res.model)
    assert.is_table(res.output)
    assert.equal("message", res.output[1].type)
    assert.equal(res.usage.input_tokens, res.usage.prompt_tokens)
    assert.equal(res.usage.output_tokens, res.usage.completion_tokens)
    assert.equal(res.usage.input_tokens + res.usage.output_tokens, res.usage.total_tokens)
    assert.equal("assistant", res.message.role)
    assert.equal("hello there", res.message.content)
    assert.equal("x-request-id", (function() for k in pairs(res.headers) do if k == "x-request-id" then return k end end end)())
  end)

  it("streams: on_delta gets the answer's text only, joined it is res.content", function()
    local deltas, kinds = {}, {}
    local res = assert(c:respond{ input = "stream this answer, é ✓", stream = true,
      mock = { reasoning = "thinking first", chunk_size = 3 },
      on_delta = function(t, ev)
        assert.equal("content", ev.kind)
        deltas[#deltas + 1] = t
      end,
      on_event = function(ev) kinds[ev.type] = (kinds[ev.type] or 0) + 1 end })
    assert.equal("stream this answer, é ✓", res.content)
    assert.equal(res.content, table.concat(deltas))
    assert.equal("thinking first", res.reasoning)
    assert.truthy(kinds["response.created"] == 1)
    assert.truthy(kinds["response.completed"] == 1)
    assert.truthy(kinds["response.output_text.delta"] > 1)
    assert.truthy(kinds["response.reasoning_summary_text.delta"] >= 1)
  end)

  it("parallel function calls: tool_calls from function_call items, in order", function()
    for _, stream in ipairs({ false, true }) do
      local frags = {}
      local res = assert(c:respond{ input = "use tools", stream = stream,
        tools = { { type = "function", name = "get_weather", parameters = { type = "object" } } },
        mock = { tool_calls = CALLS, chunk_size = 4 },
        on_event = stream and function(ev)
          if ev.kind == "tool_call" then
            frags[ev.tool] = (frags[ev.tool] or "") .. ev.delta
            if ev.name then assert.equal(CALLS[ev.tool].name, ev.name) end
          end
        end or nil })
      assert.equal("tool_calls", res.finish_reason)
      assert.equal(#CALLS, #res.tool_calls)
      for i, want in ipairs(CALLS) do
        local tc = res.tool_calls[i]
        assert.equal(want.name, tc.name)
        assert.equal(want.arguments, tc.arguments)
        assert.same(cjson.decode(want.arguments), cjson.decode(tc.arguments))
        assert.truthy(tc.id:find("^call_"))
        assert.equal(tc.name, tc["function"].name)
        if stream then assert.equal(want.arguments, frags[i]) end
      end
      assert.is_nil(res.content)
    end
  end)

  it("an error event mid-stream is a stream_error with what had arrived", function()
    local res, err = c:respond{ input = "abcdefghijkl", stream = true,
      mock = { chunk_size = 2, error_event = { after = 2, code = "server_error", message = "boom" } } }
    assert.is_nil(res)
    assert.equal("stream_error", err.kind)
    assert.equal("boom", err.message)
    assert.equal("server_error", err.code)
    assert.equal("abcd", err.partial.content)
  end)

  it("response.failed is a stream_error with err.partial", function()
    local res, err = c:respond{ input = "abcdef", stream = true,
      mock = { failed = { after = 1, code = "server_error", message = "model crashed" } } }
    assert.is_nil(res)
    assert.equal("stream_error", err.kind)
    assert.truthy(err.message:find("crashed", 1, true) or err.message ~= "")
    assert.is_table(err.partial)
    assert.equal("failed", err.partial.status)
  end)

  it("response.incomplete is a result with status incomplete", function()
    for _, stream in ipairs({ false, true }) do
      local res = assert(c:respond{ input = "a long answer that gets cut", stream = stream,
        max_output_tokens = 2 })
      assert.equal("incomplete", res.status)
      assert.equal("length", res.finish_reason)
    end
  end)

  it("retries a 429 like every call", function()
    local key = "resp429-" .. os.time() .. "-" .. math.random(1e6)
    local res = assert(c:respond{ input = "after a 429",
      mock = { fail_times = 1, key = key, status = 429, headers = { ["retry-after-ms"] = "20" } } })
    assert.equal("after a 429", res.content)
    local _, err = c:respond{ input = "x", max_retries = 0, mock = { status = 429 } }
    assert.equal("rate_limit", err.kind)
  end)

  it("an error status is an error table of the right kind", function()
    local _, err = c:respond{ input = "x", mock = { status = 401 } }
    assert.equal("auth", err.kind)
    assert.equal(401, err.status)
  end)

  it("start, iterator and map forms", function()
    local done
    local call = c:start{ api = "responses", input = "started", on_done = function(r) done = r end }
    while not call.done do llmchat.poll(0.01) end
    assert.equal("started", done.content)

    local text, last = {}, nil
    for ev in c:stream{ api = "responses", input = "iterated text" } do
      if ev.kind == "content" then text[#text + 1] = ev.delta end
      last = ev
    end
    assert.equal("iterated text", table.concat(text))
    assert.equal("done", last.kind)
    assert.equal("iterated text", last.result.content)

    local results = c:map({ { input = "one" }, { input = "two" }, { api = "chat",
      messages = { { role = "user", content = "three" } } } }, { api = "responses", concurrency = 2 })
    assert.equal("one", results[1].content)
    assert.equal("two", results[2].content)
    assert.equal("three", results[3].content)
    assert.equal("completed", results[1].status)
  end)

  it("previous_response_id continues a conversation on the server", function()
    local r1 = assert(c:respond{ input = "first" })
    local r2 = assert(c:respond{ input = "second", previous_response_id = r1.id })
    assert.equal("second", r2.content)
    assert.equal(r1.id, r2.previous_response_id)
  end)

  it("never puts the key in an error, even when the server echoes it in the stream", function()
    local _, err = c:respond{ input = "x", stream = true, mock = { echo_auth = true } }
    assert.equal("stream_error", err.kind)
    local seen = {}
    local function walk(v)
      if type(v) == "string" then assert.falsy(v:find("sk-test-responses", 1, true), v)
      elseif type(v) == "table" and not seen[v] then
        seen[v] = true
        for k, x in pairs(v) do walk(k); walk(x) end
      end
    end
    walk(err)
    assert.falsy(tostring(err):find("sk-test-responses", 1, true))
  end)
end)

describe("a recorded Responses stream", function()
  local srv, c
  setup(function()
    srv = server.start()
    c = llmchat.client{ base_url = srv.url, api_key = "sk-test", max_retries = 0 }
  end)
  teardown(function() srv.stop() end)

  -- the fixture's bytes, written verbatim by the server (its raw control) in pieces of
  -- `split` bytes, read through the Responses endpoint's assembler
  local function replay(raw, split)
    local deltas = {}
    local call = c:_call(endpoints.responses, { input = "x", messages = { { role = "user", content = "x" } },
      mock = { raw = raw, write_split = split, split_delay = 0 } },
      { stream = true, path = "/chat/completions",
        on_delta = function(t) deltas[#deltas + 1] = t end })
    call:wait()
    return call.res, call.err, table.concat(deltas)
  end

  it("assembles the same result at the original and at random split points", function()
    local raw = read(server.root .. "/spec/fixtures/responses.sse")
    math.randomseed(7)
    for _, split in ipairs({ nil, 1, 2, 3, 7, 64, math.random(1, 40), math.random(1, 400) }) do
      local res, err, text = replay(raw, split)
      assert.is_nil(err, tostring(err))
      assert.equal("Hi there! How can I help?", res.content)
      assert.equal(res.content, text)
      assert.equal("completed", res.status)
      assert.equal("resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", res.id)
    end
  end)

  it("a stream cut before response.completed is a protocol error with the partial text", function()
    local raw = read(server.root .. "/spec/fixtures/responses.sse")
    local cut = raw:sub(1, raw:find("event: response.output_text.done", 1, true) - 1)
    local res, err = replay(cut, 5)
    assert.is_nil(res)
    assert.equal("protocol", err.kind)
    assert.equal("Hi there! How can I help?", err.partial.content)
  end)
end)

describe("embeddings", function()
  local srv, c
  setup(function()
    srv = server.start()
    c = llmchat.client{ base_url = srv.url, api_key = "sk-test", model = "text-embedding-3-small" }
  end)
  teardown(function() srv.stop() end)

  it("returns the vectors in input order, base64 decoded in C or plain floats", function()
    local inputs = { "alpha", "beta", "gamma ✓" }
    local b = assert(c:embed{ input = inputs, dimensions = 16 })
    local f = assert(c:embed{ input = inputs, dimensions = 16, encoding_format = "float" })
    assert.equal(3, #b.vectors)
    for i = 1, 3 do
      assert.equal(16, #b.vectors[i])
      for j = 1, 16 do
        assert.is_number(b.vectors[i][j])
        -- the server's values are exact in float32: both encodings give the same numbers
        assert.equal(f.vectors[i][j], b.vectors[i][j])
      end
    end
    assert.is_number(b.usage.prompt_tokens)
    assert.equal(b.vectors[1], b.vector)
    local one = assert(c:embed("alpha"))
    local list = assert(c:embed{ input = { "alpha" } })
    assert.same(list.vectors[1], one.vector)
  end)

  it("errors are error tables", function()
    local _, err = c:embed{ input = "x", mock = { status = 400 } }
    assert.equal("bad_request", err.kind)
    assert.has_error(function() c:embed{} end)
  end)
end)

describe("models", function()
  it("lists, and is retried like every call", function()
    local srv = server.start()
    local c = llmchat.client{ base_url = srv.url, retry_base_delay = 0.01, retry_max_delay = 0.02 }
    local m = assert(c:models())
    assert.is_table(m.data)
    assert.truthy(#m.data > 0)
    assert.equal(200, m.status)
    local key = "models-" .. os.time() .. "-" .. math.random(1e6)
    assert(c:models{ headers = { ["x-mock"] = cjson.encode({ status = 503, fail_times = 1, key = key }) } })
    srv.stop()
  end)
end)
