-- luacheck: std +busted
-- The local server's POST /v1/responses (the OpenAI Responses API), over real HTTP.
local cjson = require("cjson")
local server = require("support.server")

describe("llmchat-server /v1/responses", function()
  local srv

  lazy_setup(function() srv = server.start() end)
  lazy_teardown(function() if srv then srv.stop() end end)

  local function post(body, headers)
    return assert(server.request(srv, "POST", "/v1/responses", body, headers))
  end

  -- decoded events of a stream: list of { name, data }; checks the framing on the way
  local function events_of(res)
    local out = {}
    for i, e in ipairs(server.sse_events(res.body)) do
      local d = cjson.decode(e.data)
      assert.equal(e.event, d.type)
      assert.equal(i - 1, d.sequence_number)
      out[#out + 1] = { e.event, d }
    end
    assert.is_nil(res.body:find("[DONE]", 1, true))
    return out
  end

  local function names(events)
    local t = {}
    for i, e in ipairs(events) do t[i] = e[1] end
    return t
  end

  it("echoes the input in a response object", function()
    local res = post{ model = "gpt-x", input = "hello there", instructions = "be brief" }
    assert.equal(200, res.status)
    local r = res.json
    assert.matches("^resp_", r.id)
    assert.equal("response", r.object)
    assert.equal("completed", r.status)
    assert.equal("gpt-x", r.model)
    assert.equal("be brief", r.instructions)
    assert.equal(cjson.null, r.error)
    assert.equal(cjson.null, r.incomplete_details)
    assert.equal(math.floor(r.created_at), r.created_at)
    assert.equal(1, #r.output)
    local msg = r.output[1]
    assert.equal("message", msg.type)
    assert.matches("^msg_", msg.id)
    assert.equal("assistant", msg.role)
    assert.equal("completed", msg.status)
    assert.same({ type = "output_text", text = "hello there" },
      { type = msg.content[1].type, text = msg.content[1].text })
    -- ceil(bytes / 4): "be brief" + "hello there" = 19 bytes -> 5; "hello there" -> 3
    assert.same({ input_tokens = 5, output_tokens = 3, total_tokens = 8 },
      { input_tokens = r.usage.input_tokens, output_tokens = r.usage.output_tokens,
        total_tokens = r.usage.total_tokens })
    assert.equal(0, r.usage.output_tokens_details.reasoning_tokens)
    assert.matches('"tools":%[%]', res.body)
  end)

  it("takes an array of items and echoes the last user text", function()
    local r = post{ input = {
      { role = "user", content = "first" },
      { type = "message", role = "assistant", content = { { type = "output_text", text = "a" } } },
      { type = "message", role = "user", content = { { type = "input_text", text = "sec" },
        { type = "input_text", text = "ond" } } } } }.json
    assert.equal("second", r.output[1].content[1].text)
  end)

  it("answers function calls, several in parallel, and continues after their outputs", function()
    local mock = { script = {
      { tool_calls = { { id = "call_a", name = "roll", arguments = '{"n":1}' },
                       { id = "call_b", name = "roll", arguments = '{"n":2}' } } },
      { reply = "rolled" } } }
    local r = post{ input = "roll twice", tools = { { type = "function", name = "roll",
      parameters = { type = "object" } } }, mock = mock }.json
    assert.equal(2, #r.output)
    for i, id in ipairs{ "call_a", "call_b" } do
      local fc = r.output[i]
      assert.equal("function_call", fc.type)
      assert.matches("^fc_", fc.id)
      assert.equal(id, fc.call_id)
      assert.equal("roll", fc.name)
      assert.equal(cjson.encode({ n = i }), fc.arguments)
    end
    assert.equal("function", r.tools[1].type)
    -- the client sends the calls and their outputs back: the script's second entry answers
    local r2 = post{ input = { { role = "user", content = "roll twice" }, r.output[1], r.output[2],
      { type = "function_call_output", call_id = "call_a", output = "4" },
      { type = "function_call_output", call_id = "call_b", output = "6" } }, mock = mock }.json
    assert.equal("rolled", r2.output[1].content[1].text)
    -- or through previous_response_id: the server remembers its answer
    local r3 = post{ previous_response_id = r.id, input = {
      { type = "function_call_output", call_id = "call_a", output = "4" } }, mock = mock }.json
    assert.equal("rolled", r3.output[1].content[1].text)
    assert.equal(r.id, r3.previous_response_id)
  end)

  it("remembers earlier answers for previous_response_id", function()
    local r1 = post{ input = "remember me" }.json
    local r2 = post{ previous_response_id = r1.id, input = "and me too",
      mock = { script = { { reply = "never" }, { reply = "second turn" } } } }.json
    assert.equal("second turn", r2.output[1].content[1].text)
    -- the earlier input and output count as input tokens: 11 + 11 + 10 bytes
    assert.equal(8, r2.usage.input_tokens)
    local bad = post{ previous_response_id = "resp_nope", input = "x" }
    assert.equal(400, bad.status)
    assert.equal("previous_response_not_found", bad.json.error.code)
    assert.equal("previous_response_id", bad.json.error.param)
  end)

  it("gives reasoning summaries and refusals", function()
    local r = post{ input = "x", reasoning = { effort = "low", summary = "auto" },
      mock = { reasoning = "thinking hard", refusal = "I can't", reply = cjson.null } }.json
    assert.equal("reasoning", r.output[1].type)
    assert.matches("^rs_", r.output[1].id)
    assert.same({ { type = "summary_text", text = "thinking hard" } }, r.output[1].summary)
    assert.same({ type = "refusal", refusal = "I can't" }, r.output[2].content[1])
    assert.equal(4, r.usage.output_tokens_details.reasoning_tokens)
    assert.same({ effort = "low", summary = "auto" }, r.reasoning)
  end)

  it("stops at max_output_tokens with status incomplete", function()
    local r = post{ input = "abcdefghijklmnop", max_output_tokens = 2 }.json
    assert.equal("incomplete", r.status)
    assert.same({ reason = "max_output_tokens" }, r.incomplete_details)
    assert.equal("abcdefgh", r.output[1].content[1].text)
    assert.equal("incomplete", r.output[1].status)
    local forced = post{ input = "x", mock = { incomplete = "content_filter" } }.json
    assert.same({ reason = "content_filter" }, forced.incomplete_details)
  end)

  it("reports a failed response", function()
    local r = post{ input = "x", mock = { failed = { code = "server_error", message = "boom" } } }.json
    assert.equal("failed", r.status)
    assert.same({ code = "server_error", message = "boom" }, r.error)
    assert.same({}, r.output)
  end)

  it("answers bad requests and mock errors like OpenAI", function()
    local res = post{ model = "m" }
    assert.equal(400, res.status)
    assert.equal("missing_required_parameter", res.json.error.code)
    assert.equal("input", res.json.error.param)
    res = post{ input = 42 }
    assert.equal(400, res.status)
    assert.equal("invalid_type", res.json.error.code)
    res = post("{nope")
    assert.equal(400, res.status)
    assert.equal("invalid_json", res.json.error.code)
    res = post{ input = "x", mock = { status = 429, headers = { ["retry-after"] = "3" } } }
    assert.equal(429, res.status)
    assert.equal("3", res.headers["retry-after"])
    assert.equal("rate_limit_exceeded", res.json.error.code)
    res = assert(server.request(srv, "GET", "/v1/responses"))
    assert.equal(405, res.status)
    -- fail_times: two failures then the answer
    local mock = { key = "resp-ft-1", fail_times = 2, status = 500 }
    assert.equal(500, post{ input = "x", mock = mock }.status)
    assert.equal(500, post{ input = "x", mock = mock }.status)
    assert.equal(200, post{ input = "x", mock = mock }.status)
  end)

  describe("streams", function()
    it("send typed events in OpenAI's order, ending with response.completed", function()
      local res = post{ input = "héllo wörld", stream = true, mock = { chunk_size = 3 } }
      assert.equal(200, res.status)
      assert.matches("^text/event%-stream", res.headers["content-type"])
      local ev = events_of(res)
      local n = names(ev)
      assert.same({ "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added" }, { n[1], n[2], n[3], n[4] })
      assert.same({ "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed" }, { n[#n - 3], n[#n - 2], n[#n - 1], n[#n] })
      assert.equal("in_progress", ev[1][2].response.status)
      assert.same({}, ev[1][2].response.output)
      local text = {}
      for _, e in ipairs(ev) do
        if e[1] == "response.output_text.delta" then
          assert.equal(ev[3][2].item.id, e[2].item_id)
          assert.equal(0, e[2].output_index)
          assert.equal(0, e[2].content_index)
          text[#text + 1] = e[2].delta
        end
      end
      assert.is_true(#text > 2)
      assert.equal("héllo wörld", table.concat(text))
      assert.equal("héllo wörld", ev[#ev - 3][2].text)
      local final = ev[#ev][2].response
      assert.equal("completed", final.status)
      assert.equal("héllo wörld", final.output[1].content[1].text)
      assert.equal(final.usage.input_tokens + final.usage.output_tokens, final.usage.total_tokens)
    end)

    it("stream parallel function calls, reasoning summaries and refusals", function()
      local res = post{ input = "x", stream = true, reasoning = { summary = "auto" }, mock = {
        reasoning = "think", refusal = "no", reply = cjson.null, chunk_size = 2,
        tool_calls = { { id = "call_1", name = "f", arguments = '{"a":1}' },
                       { id = "call_2", name = "g", arguments = "{}" } } } }
      local ev = events_of(res)
      local summary, refusal, args, done_args = {}, {}, {}, {}
      for _, e in ipairs(ev) do
        local d = e[2]
        if e[1] == "response.reasoning_summary_text.delta" then summary[#summary + 1] = d.delta
        elseif e[1] == "response.refusal.delta" then refusal[#refusal + 1] = d.delta
        elseif e[1] == "response.function_call_arguments.delta" then
          args[d.output_index] = (args[d.output_index] or "") .. d.delta
        elseif e[1] == "response.function_call_arguments.done" then
          done_args[d.output_index] = d.arguments
        elseif e[1] == "response.output_item.added" and d.item.type == "function_call" then
          assert.equal("", d.item.arguments)
          assert.truthy(d.item.call_id)
        end
      end
      assert.equal("think", table.concat(summary))
      assert.equal("no", table.concat(refusal))
      assert.same({ [2] = '{"a":1}', [3] = "{}" }, args)
      assert.same(args, done_args)
      local n = names(ev)
      assert.truthy(table.concat(n, " "):find("response.reasoning_summary_text.done", 1, true))
      assert.truthy(table.concat(n, " "):find("response.refusal.done", 1, true))
      local final = ev[#ev][2].response
      assert.same({ "reasoning", "message", "function_call", "function_call" },
        { final.output[1].type, final.output[2].type, final.output[3].type, final.output[4].type })
    end)

    it("end with an error event mid-stream", function()
      local ev = events_of(post{ input = "abcdefghijkl", stream = true,
        mock = { error_event = { after = 2, code = "server_error", message = "overloaded" } } })
      local last = ev[#ev]
      assert.equal("error", last[1])
      assert.equal("overloaded", last[2].message)
      assert.equal("server_error", last[2].code)
      local deltas = 0
      for _, e in ipairs(ev) do
        if e[1] == "response.output_text.delta" then deltas = deltas + 1 end
        assert.is_nil(e[1]:find("completed", 1, true))
      end
      assert.equal(2, deltas)
    end)

    it("end with response.failed and response.incomplete", function()
      local ev = events_of(post{ input = "abcdefgh", stream = true,
        mock = { failed = { message = "model crashed", after = 1 } } })
      assert.equal("response.failed", ev[#ev][1])
      assert.equal("failed", ev[#ev][2].response.status)
      assert.equal("model crashed", ev[#ev][2].response.error.message)
      assert.equal("response.output_text.delta", ev[#ev - 1][1])
      ev = events_of(post{ input = "abcdefghijkl", stream = true, max_output_tokens = 1 })
      assert.equal("response.incomplete", ev[#ev][1])
      assert.same({ reason = "max_output_tokens" }, ev[#ev][2].response.incomplete_details)
    end)

    it("replay a recorded stream byte for byte", function()
      local f = assert(io.open("spec/fixtures/responses.sse", "rb"))
      local raw = f:read("*a")
      f:close()
      local res = post{ input = "x", stream = true, mock = { raw = raw, write_split = 100,
        split_delay = 0 } }
      assert.equal(raw, res.body)
      assert.equal("response.completed", server.sse_events(res.body)[16].event)
    end)

    it("split events mid-line, drop mid-stream and keep the connection after a stream", function()
      local body = cjson.encode{ input = "abcdefgh", stream = true,
        mock = { write_split = 5, split_delay = 0 } }
      local c = server.connect(srv.port)
      server.send_request(c, "POST", "/v1/responses", body)
      local res = assert(server.read_response(c))
      local ev = events_of(res)
      assert.equal("response.completed", ev[#ev][1])
      server.send_request(c, "POST", "/v1/responses", cjson.encode{ input = "again" })
      local res2 = assert(server.read_response(c))
      assert.equal(res.headers["x-connection-id"], res2.headers["x-connection-id"])
      c:close()

      c = server.connect(srv.port)
      server.send_request(c, "POST", "/v1/responses", cjson.encode{ input = "abcdefghijkl",
        stream = true, mock = { drop = "mid_body" } })
      local all = c:receive("*a")
      c:close()
      assert.truthy(all:find("response.output_text.delta", 1, true))
      assert.is_nil(all:find("response.completed", 1, true))
    end)
  end)
end)
