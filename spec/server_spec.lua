-- luacheck: std +busted
-- Specs of the local OpenAI-compatible server itself, spoken to with luasocket (raw TCP or
-- socket.http), not with llmchat.
local socket = require("socket")
local cjson = require("cjson")
local server = require("support.server")
local process_alive = require("llmchat.testing").process_alive

-- Raw HTTP/1.1 over one TCP socket, to see keep-alive and framing as they are on the wire.
local function connect(port)
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(5)
  return c
end

local function send_request(c, method, path, body, headers)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  assert(c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")))
end

local function read_response(c)
  local status_line, err = c:receive("*l")
  if not status_line then return nil, err end
  local res = { status = tonumber(status_line:match("^HTTP/1%.%d (%d+)")), headers = {} }
  while true do
    local line = assert(c:receive("*l"))
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    res.headers[k:lower()] = v
  end
  if res.headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local size = tonumber(assert(c:receive("*l")), 16)
      if size == 0 then assert(c:receive("*l")); break end
      parts[#parts + 1] = assert(c:receive(size))
      assert(c:receive("*l"))
    end
    res.body = table.concat(parts)
  else
    local n = tonumber(res.headers["content-length"] or "0")
    res.body = n > 0 and assert(c:receive(n)) or ""
  end
  return res
end

local function chat_body(text, extra)
  local body = { model = "test-model", messages = { { role = "user", content = text } } }
  for k, v in pairs(extra or {}) do body[k] = v end
  return cjson.encode(body)
end

describe("llmchat-server", function()
  local srv

  lazy_setup(function() srv = server.start() end)
  lazy_teardown(function() if srv then srv.stop() end end)

  it("echoes the last user message in the OpenAI chat.completion shape", function()
    local res = assert(server.request(srv, "POST", "/v1/chat/completions", chat_body("hello there")))
    assert.equal(200, res.status)
    assert.truthy(res.headers["x-connection-id"])
    assert.truthy(res.headers["x-request-id"])
    local j = res.json
    assert.matches("^chatcmpl%-", j.id)
    assert.equal("chat.completion", j.object)
    assert.equal("test-model", j.model)
    assert.equal(math.floor(j.created), j.created)
    local choice = j.choices[1]
    assert.equal(0, choice.index)
    assert.equal("assistant", choice.message.role)
    assert.equal("hello there", choice.message.content)
    assert.equal(cjson.null, choice.message.refusal)
    assert.equal(cjson.null, choice.logprobs)
    assert.equal("stop", choice.finish_reason)
    assert.matches('"annotations":%[%]', res.body)
    assert.same({ prompt_tokens = 3, completion_tokens = 3, total_tokens = 6 },
      { prompt_tokens = j.usage.prompt_tokens, completion_tokens = j.usage.completion_tokens,
        total_tokens = j.usage.total_tokens })
    assert.matches('"prompt_tokens":3,', res.body) -- integers, not 3.0
  end)

  it("joins text parts, honours n, max_tokens and stop", function()
    local res = server.request(srv, "POST", "/v1/chat/completions", {
      model = "m", n = 2, max_tokens = 2, stop = "Z",
      messages = { { role = "user", content = { { type = "text", text = "abcd" },
        { type = "image_url", image_url = { url = "x" } }, { type = "text", text = "efghZij" } } } } })
    assert.equal(2, #res.json.choices)
    assert.equal("abcdefgh", res.json.choices[2].message.content)
    assert.equal("stop", res.json.choices[2].finish_reason)
    res = server.request(srv, "POST", "/v1/chat/completions", chat_body("0123456789", { max_tokens = 2 }))
    assert.equal("01234567", res.json.choices[1].message.content)
    assert.equal("length", res.json.choices[1].finish_reason)
  end)

  it("keeps the connection alive across requests", function()
    local c = connect(srv.port)
    send_request(c, "POST", "/v1/chat/completions", chat_body("one"))
    local a = assert(read_response(c))
    send_request(c, "POST", "/v1/chat/completions", chat_body("two", { stream = true }))
    local b = assert(read_response(c))
    send_request(c, "GET", "/v1/models")
    local m = assert(read_response(c))
    c:close()
    assert.equal(200, a.status)
    assert.equal("chunked", b.headers["transfer-encoding"])
    assert.equal(a.headers["x-connection-id"], b.headers["x-connection-id"])
    assert.equal(a.headers["x-connection-id"], m.headers["x-connection-id"])
    assert.are_not.equal(a.headers["x-request-id"], b.headers["x-request-id"])
    assert.equal("list", cjson.decode(m.body).object)
    local other = server.request(srv, "GET", "/v1/models")
    assert.are_not.equal(a.headers["x-connection-id"], other.headers["x-connection-id"])
  end)

  it("serves several clients at once", function()
    local slow, fast = connect(srv.port), connect(srv.port)
    local t0 = socket.gettime()
    send_request(slow, "POST", "/v1/chat/completions", chat_body("slow"), { ["x-mock"] = '{"delay":0.6}' })
    send_request(fast, "POST", "/v1/chat/completions", chat_body("fast"))
    local f = assert(read_response(fast))
    local t_fast = socket.gettime() - t0
    local s = assert(read_response(slow))
    local t_slow = socket.gettime() - t0
    slow:close(); fast:close()
    assert.equal("fast", cjson.decode(f.body).choices[1].message.content)
    assert.equal("slow", cjson.decode(s.body).choices[1].message.content)
    assert.is_true(t_fast < 0.4, "fast request waited " .. t_fast)
    assert.is_true(t_slow >= 0.55, "slow request took only " .. t_slow)
  end)

  it("answers a malformed request with 400 and keeps serving", function()
    local c = connect(srv.port)
    assert(c:send("THIS IS NOT HTTP\r\n\r\n"))
    local res = assert(read_response(c))
    c:close()
    assert.equal(400, res.status)
    assert.equal("invalid_request_error", cjson.decode(res.body).error.type)
    res = server.request(srv, "POST", "/v1/chat/completions", "{not json")
    assert.equal(400, res.status)
    assert.equal("invalid_request_error", res.json.error.type)
    res = server.request(srv, "GET", "/v1/nothing/here")
    assert.equal(404, res.status)
    assert.equal("unknown_url", res.json.error.code)
    assert.equal(200, server.request(srv, "GET", "/v1/models").status)
  end)

  it("reads chunked request bodies and answers Expect: 100-continue", function()
    local c = connect(srv.port)
    local body = chat_body("chunky")
    local head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
      .. "Expect: 100-continue\r\n\r\n"
    assert(c:send(head))
    assert.equal("HTTP/1.1 100 Continue", c:receive("*l"))
    assert.equal("", c:receive("*l"))
    local half = math.floor(#body / 2)
    assert(c:send(string.format("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", half, body:sub(1, half),
      #body - half, body:sub(half + 1))))
    local res = assert(read_response(c))
    c:close()
    assert.equal("chunky", cjson.decode(res.body).choices[1].message.content)
  end)

  it("serves Segmind-style POST /v1/<model> with the mock in a header", function()
    local res = server.request(srv, "POST", "/v1/llama-v3p1-8b-instruct",
      { messages = { { role = "user", content = "hi" } } },
      { ["x-mock"] = '{"status":406,"error":{"message":"Not enough credits"}}' })
    assert.equal(406, res.status)
    assert.equal("Not enough credits", res.json.error.message)
    res = server.request(srv, "POST", "/v1/llama-v3p1-8b-instruct",
      { messages = { { role = "user", content = "hi" } } })
    assert.equal("llama-v3p1-8b-instruct", res.json.model)
    assert.equal("hi", res.json.choices[1].message.content)
  end)

  it("sends the scripted status, error and headers", function()
    local res = server.request(srv, "POST", "/v1/chat/completions", chat_body("x", { mock = {
      status = 429, headers = { ["retry-after"] = "2" },
      error = { message = "slow down", type = "requests", code = "rate_limit_exceeded" } } }))
    assert.equal(429, res.status)
    assert.equal("2", res.headers["retry-after"])
    assert.same({ message = "slow down", type = "requests", code = "rate_limit_exceeded" }, res.json.error)
    res = server.request(srv, "POST", "/v1/chat/completions", chat_body("x", { mock = { status = 502, html = true } }))
    assert.equal(502, res.status)
    assert.matches("^text/html", res.headers["content-type"])
    assert.matches("<html>", res.body)
  end)

  it("fails the first fail_times requests of a key, then succeeds", function()
    local key = "retry-" .. tostring(socket.gettime())
    local mock = { key = key, fail_times = 2, status = 503, headers = { ["retry-after"] = "0" } }
    local statuses = {}
    for i = 1, 3 do
      local res = server.request(srv, "POST", "/v1/chat/completions", chat_body("again", { mock = mock }))
      statuses[i] = res.status
      if i == 3 then assert.equal("again", res.json.choices[1].message.content) end
    end
    assert.same({ 503, 503, 200 }, statuses)
    local stats = server.request(srv, "GET", "/_stats?key=" .. key).json
    assert.equal(3, stats.count)
    assert.equal(3, stats.keys[key])
    assert.is_true(stats.requests >= 3 and stats.connections >= 3)
  end)

  it("echoes back exactly what it received", function()
    local raw = '{"model":"m","messages":[{"role":"user","content":"caf\\u00e9 \\"q\\""}],"mock":{"echo":true}}'
    local res = server.request(srv, "POST", "/v1/chat/completions", raw, { ["X-Title"] = "My game" })
    local r = res.json._request
    assert.equal("POST", r.method)
    assert.equal("/v1/chat/completions", r.path)
    assert.equal(raw, r.body)
    assert.equal("My game", r.headers["x-title"])
    assert.equal('café "q"', res.json.choices[1].message.content)
  end)

  it("runs a multi-round tool conversation from a script", function()
    local mock = { script = {
      { tool_calls = { { id = "call_a", name = "roll", arguments = '{"n":2}' } } },
      { reply = "You rolled 7" } } }
    local messages = { { role = "user", content = "roll" } }
    local res = server.request(srv, "POST", "/v1/chat/completions", { model = "m", messages = messages, mock = mock })
    local msg = res.json.choices[1].message
    assert.equal("tool_calls", res.json.choices[1].finish_reason)
    assert.equal(cjson.null, msg.content)
    assert.same({ id = "call_a", type = "function", ["function"] = { name = "roll", arguments = '{"n":2}' } },
      msg.tool_calls[1])
    messages[2] = msg
    messages[3] = { role = "tool", tool_call_id = "call_a", content = "7" }
    res = server.request(srv, "POST", "/v1/chat/completions", { model = "m", messages = messages, mock = mock })
    assert.equal("You rolled 7", res.json.choices[1].message.content)
    assert.equal("stop", res.json.choices[1].finish_reason)
  end)

  describe("streams", function()
    local function stream(text, extra)
      local res = assert(server.request(srv, "POST", "/v1/chat/completions",
        chat_body(text, extra)))
      return res, server.sse_data(res.body)
    end

    it("follow OpenAI's chunk shape and end with [DONE]", function()
      local res, events = stream("héllo wörld", { stream = true, stream_options = { include_usage = true } })
      assert.equal(200, res.status)
      assert.matches("^text/event%-stream", res.headers["content-type"])
      assert.equal("chunked", res.headers["transfer-encoding"])
      assert.equal("[DONE]", events[#events])
      local first = cjson.decode(events[1])
      assert.equal("chat.completion.chunk", first.object)
      assert.same({ role = "assistant", content = "", refusal = cjson.null }, first.choices[1].delta)
      assert.equal(cjson.null, first.usage)
      local text, finish = {}, nil
      for i = 2, #events - 2 do
        local c = cjson.decode(events[i])
        local piece = c.choices[1].delta.content
        if piece then
          assert.is_true(#piece <= 4 or not piece:find("^[\128-\191]"))
          text[#text + 1] = piece
        end
        finish = finish or (c.choices[1].finish_reason ~= cjson.null and c.choices[1].finish_reason)
      end
      assert.equal("héllo wörld", table.concat(text))
      assert.equal("stop", finish)
      local last = cjson.decode(events[#events - 1])
      assert.same({}, last.choices)
      assert.equal(last.usage.prompt_tokens + last.usage.completion_tokens, last.usage.total_tokens)
    end)

    it("stream tool calls in fragments", function()
      local _, events = stream("x", { stream = true, mock = { chunk_size = 3, tool_calls = {
        { id = "c1", name = "f", arguments = '{"a":1}' }, { id = "c2", name = "g", arguments = '{}' } } } })
      local calls = {}
      for i = 1, #events - 1 do
        local delta = cjson.decode(events[i]).choices[1].delta
        for _, tc in ipairs(delta.tool_calls or {}) do
          local call = calls[tc.index + 1]
          if not call then
            assert.truthy(tc.id)
            call = { id = tc.id, name = tc["function"].name, arguments = "" }
            calls[tc.index + 1] = call
          else
            assert.is_nil(tc.id)
          end
          call.arguments = call.arguments .. tc["function"].arguments
        end
      end
      assert.same({ { id = "c1", name = "f", arguments = '{"a":1}' },
        { id = "c2", name = "g", arguments = "{}" } }, calls)
      assert.equal("tool_calls", cjson.decode(events[#events - 1]).choices[1].finish_reason)
    end)

    it("send an OpenRouter-style error event", function()
      local _, events = stream("abcdefghijkl", { stream = true, mock = {
        stream_error = { after = 1, error = { message = "upstream died", code = 502 } } } })
      assert.equal(3, #events) -- role, one content chunk, the error
      local e = cjson.decode(events[3])
      assert.equal("upstream died", e.error.message)
      assert.equal("error", e.choices[1].finish_reason)
    end)

    it("write events split mid-line and replay raw bytes", function()
      local raw = 'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
      local c = connect(srv.port)
      send_request(c, "POST", "/v1/chat/completions", chat_body("x", { stream = true,
        mock = { raw = raw, write_split = 7, split_delay = 0 } }))
      local res = assert(read_response(c))
      c:close()
      assert.equal(raw, res.body)
    end)

    it("produce long streams", function()
      local _, events = stream("x", { stream = true, mock = { long_stream = 5000, chunk_size = 8 } })
      assert.equal(5000 + 3, #events)
      assert.equal(8, #cjson.decode(events[2]).choices[1].delta.content)
    end)
  end)

  it("drops the connection mid-body when asked", function()
    local c = connect(srv.port)
    send_request(c, "POST", "/v1/chat/completions", chat_body("some text", { mock = { drop = "mid_body" } }))
    local status_line = c:receive("*l")
    assert.matches("^HTTP/1%.1 200", status_line)
    local rest, err, partial = c:receive("*a")
    c:close()
    rest = rest or partial
    local n = tonumber(rest:match("[Cc]ontent%-[Ll]ength: (%d+)"))
    local body = rest:match("\r\n\r\n(.*)$")
    assert.is_true(#body < n, err)
  end)

  it("exits when its --parent process is gone", function()
    local pid_file = os.tmpname()
    os.execute("sh -c 'echo $$ > " .. pid_file .. "; exec sleep 0.3' &")
    local parent
    for _ = 1, 100 do
      local f = io.open(pid_file)
      parent = f and tonumber(f:read("*a"))
      if f then f:close() end
      if parent then break end
      socket.sleep(0.01)
    end
    os.remove(pid_file)
    local child = server.start{ parent = parent }
    local gone = false
    for _ = 1, 60 do
      if not process_alive(child.pid) then gone = true; break end
      socket.sleep(0.05)
    end
    child.stop()
    assert.is_true(gone, "server outlived its parent")
  end)

  it("serves HTTPS with a generated certificate", function()
    local tls = server.start{ tls = true }
    local ok, err = pcall(function()
      assert.matches("^https://127%.0%.0%.1:%d+/v1$", tls.url)
      assert.truthy(tls.ca_file)
      local res = assert(server.request(tls, "POST", "/v1/chat/completions", chat_body("secure")))
      assert.equal("secure", res.json.choices[1].message.content)
      local streamed = assert(server.request(tls, "POST", "/v1/chat/completions",
        chat_body("secure", { stream = true })))
      local events = server.sse_data(streamed.body)
      assert.equal("[DONE]", events[#events])
      assert.equal("secu", cjson.decode(events[2]).choices[1].delta.content)
    end)
    tls.stop()
    assert(ok, err)
  end)
end)
