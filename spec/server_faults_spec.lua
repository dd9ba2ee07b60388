-- luacheck: std +busted
-- The local server's fault controls for the hardening work: gzip answers and bombs, trailing
-- bytes on a kept-alive connection, echoed credentials, duplicate and many headers, garbage
-- instead of HTTP, and the seeded random-fault mode. Spoken to over raw sockets.
local cjson = require("cjson")
local socket = require("socket")
local server = require("support.server")

local function chat(text, extra)
  local body = { model = "m", messages = { { role = "user", content = text } } }
  for k, v in pairs(extra or {}) do body[k] = v end
  return cjson.encode(body)
end

-- gunzip with the system's gzip: returns the bytes (or the decoded size with count = true)
local function gunzip(data, count)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(data)
  f:close()
  local p = io.popen("gzip -dc < '" .. tmp .. "'" .. (count and " | wc -c" or "") .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  os.remove(tmp)
  return count and tonumber(out) or out
end

describe("llmchat-server faults", function()
  local srv

  lazy_setup(function() srv = server.start() end)
  lazy_teardown(function() if srv then srv.stop() end end)

  local function exchange(path, body, headers)
    local c = server.connect(srv.port)
    server.send_request(c, "POST", path, body, headers)
    local res, err = server.read_response(c)
    c:close()
    return assert(res, err)
  end

  describe("gzip", function()
    it("encodes JSON answers when the client accepts gzip, and only then", function()
      local res = exchange("/v1/chat/completions", chat("squeeze me", { mock = { gzip = true } }),
        { ["Accept-Encoding"] = "gzip" })
      assert.equal("gzip", res.headers["content-encoding"])
      assert.equal("\31\139", res.body:sub(1, 2))
      assert.equal("squeeze me", cjson.decode(gunzip(res.body)).choices[1].message.content)
      res = exchange("/v1/chat/completions", chat("plain", { mock = { gzip = true } }))
      assert.is_nil(res.headers["content-encoding"])
      assert.equal("plain", cjson.decode(res.body).choices[1].message.content)
      res = exchange("/v1/chat/completions", chat("forced", { mock = { gzip = "always" } }))
      assert.equal("gzip", res.headers["content-encoding"])
    end)

    it("encodes chat and Responses streams", function()
      local res = exchange("/v1/chat/completions", chat("streamed text", { stream = true,
        mock = { gzip = true } }), { ["Accept-Encoding"] = "gzip, deflate" })
      assert.equal("gzip", res.headers["content-encoding"])
      assert.equal("chunked", res.headers["transfer-encoding"])
      local events = server.sse_data(gunzip(res.body))
      assert.equal("[DONE]", events[#events])
      res = exchange("/v1/responses", cjson.encode{ input = "streamed", stream = true,
        mock = { gzip = true } }, { ["Accept-Encoding"] = "gzip" })
      local ev = server.sse_events(gunzip(res.body))
      assert.equal("response.completed", ev[#ev].event)
    end)

    it("sends a gzip bomb: a small body that inflates past 100 MiB", function()
      local res = exchange("/v1/chat/completions", chat("x", { mock = { gzip_bomb = 101 } }),
        { ["Accept-Encoding"] = "gzip" })
      assert.equal(200, res.status)
      assert.equal("gzip", res.headers["content-encoding"])
      assert.is_true(#res.body < 1024 * 1024, #res.body)
      assert.is_true(gunzip(res.body, true) > 101 * 1024 * 1024)
      res = exchange("/v1/chat/completions", chat("x", { stream = true, mock = { gzip_bomb = 101 } }))
      assert.matches("^text/event%-stream", res.headers["content-type"])
      assert.is_true(#res.body < 1024 * 1024)
      local head = gunzip(res.body):sub(1, 200)
      assert.matches("^data: {", head)
    end)
  end)

  describe("trailing bytes", function()
    local function run(mock)
      local c = server.connect(srv.port)
      server.send_request(c, "POST", "/v1/chat/completions", chat("first", { mock = mock }))
      local r1 = assert(server.read_response(c))
      server.send_request(c, "POST", "/v1/chat/completions", chat("second"))
      local r2 = assert(server.read_response(c)) -- what a naive client takes for answer 2
      local r3 = assert(server.read_response(c))
      c:close()
      return r1, r2, r3
    end

    it("writes a forged response right after a complete one, in the same write", function()
      local r1, r2, r3 = run{ trailing = true }
      assert.equal("first", cjson.decode(r1.body).choices[1].message.content)
      assert.equal("1", r2.headers["x-forged"])
      assert.equal("forged", cjson.decode(r2.body).choices[1].message.content)
      assert.equal("second", cjson.decode(r3.body).choices[1].message.content)
    end)

    it("writes them after a delay, and after a stream", function()
      local _, r2, r3 = run{ trailing = true, trailing_delay = 0.2 }
      assert.equal("1", r2.headers["x-forged"])
      assert.equal("second", cjson.decode(r3.body).choices[1].message.content)
      local _, s2 = run{ trailing = true, stream = true }
      assert.equal("1", s2.headers["x-forged"])
    end)
  end)

  describe("echoed credentials", function()
    local key = "sk-spec-SECRET-4242"
    local auth = { Authorization = "Bearer " .. key, ["x-api-key"] = key }

    local function count(s) local _, n = s:gsub(key:gsub("%-", "%%-"), ""); return n end

    it("nests them in a chat stream error event", function()
      local res = exchange("/v1/chat/completions", chat("abcdefgh", { stream = true,
        mock = { echo_auth = true } }), auth)
      local data = server.sse_data(res.body)
      local e = cjson.decode(data[#data]).error
      assert.truthy(e.message:find(key, 1, true))
      assert.truthy(e.metadata.raw:find(key, 1, true))
      assert.equal("Bearer " .. key, e.metadata.headers.authorization)
      assert.equal(key, e.metadata.deep[1].nested.list[2])
      assert.is_true(count(res.body) >= 5)
    end)

    it("nests them in a Responses stream error event and in plain error bodies", function()
      local res = exchange("/v1/responses", cjson.encode{ input = "abcdefgh", stream = true,
        mock = { echo_auth = true } }, auth)
      local ev = server.sse_events(res.body)
      assert.equal("error", ev[#ev].event)
      local e = cjson.decode(ev[#ev].data)
      assert.truthy(e.message:find(key, 1, true))
      assert.truthy(e.metadata.raw:find(key, 1, true))
      assert.truthy(e.error.metadata.headers.authorization:find(key, 1, true))
      res = exchange("/v1/chat/completions", chat("x", { mock = { echo_auth = true } }), auth)
      assert.equal(502, res.status)
      e = cjson.decode(res.body).error
      assert.truthy(e.message:find(key, 1, true))
      assert.truthy(e.metadata.raw:find(key, 1, true))
      res = exchange("/v1/responses", cjson.encode{ input = "x", mock = { echo_auth = true,
        status = 500 } }, auth)
      assert.equal(500, res.status)
      assert.truthy(cjson.decode(res.body).error.metadata.headers["x-api-key"] == key)
    end)
  end)

  it("repeats a header N times and sends many distinct headers", function()
    local res = exchange("/v1/chat/completions", chat("x", { mock = { dup_headers = 500,
      dup_header_name = "x-ratelimit-remaining", many_headers = 2000 } }))
    assert.equal(200, res.status)
    local dups, many = 0, 0
    for _, h in ipairs(res.header_list) do
      if h[1] == "x-ratelimit-remaining" then dups = dups + 1 end
      if h[1]:match("^x%-many%-%d+$") then many = many + 1 end
    end
    assert.equal(500, dups)
    assert.equal(2000, many)
    assert.equal("x", cjson.decode(res.body).choices[1].message.content)
  end)

  it("answers garbage instead of HTTP and closes", function()
    local c = server.connect(srv.port)
    server.send_request(c, "POST", "/v1/chat/completions", chat("x", { mock = { garbage = true } }))
    local all, _, partial = c:receive("*a")
    c:close()
    all = all or partial
    assert.is_true(#all > 0)
    assert.is_nil(all:find("^HTTP/"))
    c = server.connect(srv.port)
    server.send_request(c, "POST", "/v1/chat/completions", chat("x", { mock = { garbage = "HELLO" } }))
    all, _, partial = c:receive("*a")
    c:close()
    assert.equal("HELLO", all or partial)
  end)

  describe("random faults", function()
    -- what a client sees: "eof"/"closed" (reset or hang-up before an answer), "garbage", a
    -- status, "stalled", "truncated" (an answer without its end), "ok"
    local function outcome(mock, stream)
      local m = { fault = "random", fault_stall = 0.3 }
      for k, v in pairs(mock) do m[k] = v end
      local c = server.connect(srv.port)
      local t0 = socket.gettime()
      server.send_request(c, "POST", "/v1/chat/completions", chat("abcdefghijklmnop",
        { stream = stream, mock = m }), { Connection = "close" })
      local all, err, partial = c:receive("*a")
      c:close()
      all = all or partial or ""
      local took = socket.gettime() - t0
      if all == "" then return err == "closed" and "eof" or err end
      if not all:find("^HTTP/1%.1 ") then return "garbage" end
      local status = all:match("^HTTP/1%.1 (%d+)")
      local fault = all:match("\r\n[Xx]%-[Ff]ault: ([%w_]+)")
      if status ~= "200" then return status, fault end
      if took >= 0.3 then return "stalled", fault end
      if stream and not all:find("[DONE]", 1, true) then return "truncated", fault end
      if not stream and not all:find('"finish_reason":"stop"', 1, true) then return "truncated", fault end
      return "ok", fault
    end

    it("are deterministic per seed and request index, and cover every kind", function()
      local kinds, first = {}, {}
      for i = 1, 45 do
        local o = outcome({ seed = "spec-seed", fault_index = i }, true)
        first[i] = o
        kinds[o] = true
      end
      for i = 1, 45 do
        assert.equal(first[i], (outcome({ seed = "spec-seed", fault_index = i }, true)))
      end
      for _, k in ipairs{ "ok", "500", "429", "garbage", "stalled", "truncated" } do
        assert.is_true(kinds[k] or false, k .. " never drawn")
      end
      assert.is_true(kinds.eof or kinds.closed or false, "no reset drawn")
      local other = {}
      for i = 1, 45 do other[i] = outcome({ seed = "another-seed", fault_index = i }, true) end
      assert.are_not.same(first, other)
    end)

    it("hit Responses streams and embeddings too, and the server stays healthy", function()
      local seen = {}
      for i = 1, 30 do
        for _, req in ipairs{
          { "/v1/responses", { input = "abcdefghijklmnop", stream = true } },
          { "/v1/embeddings", { input = { "a", "b" } } } } do
          local body = req[2]
          body.mock = { fault = "random", seed = "storm", fault_index = i, fault_stall = 0.2 }
          local c = server.connect(srv.port)
          server.send_request(c, "POST", req[1], cjson.encode(body), { Connection = "close" })
          local all, _, partial = c:receive("*a")
          c:close()
          all = all or partial or ""
          seen[all:match("^HTTP/1%.1 (%d+)") or (all == "" and "nothing" or "garbage")] = true
        end
      end
      for _, k in ipairs{ "200", "500", "429", "nothing", "garbage" } do
        assert.is_true(seen[k] or false, k)
      end
      local res = assert(server.request(srv, "POST", "/v1/responses", { input = "still here" }))
      assert.equal("still here", res.json.output[1].content[1].text)
    end)

    it("count requests per seed when no index is given, and can be restricted", function()
      local seed = "count-" .. math.floor(socket.gettime() * 1000)
      local by_index, by_counter = {}, {}
      for i = 1, 15 do by_index[i] = outcome({ seed = seed, fault_index = i }, false) end
      for i = 1, 15 do by_counter[i] = outcome({ seed = seed }, false) end
      assert.same(by_index, by_counter)
      local stats = assert(server.request(srv, "GET", "/_stats?key=fault:" .. seed)).json
      assert.equal(15, stats.count)
      local seen = {}
      for i = 1, 12 do
        local o, name = outcome({ seed = "restricted", fault_index = i,
          faults = { "status_500", "none" } }, false)
        assert.is_true(o == "500" or o == "ok", o)
        seen[o] = true
        assert.is_true(name == "status_500" or name == "none")
      end
      assert.is_true(seen["500"] and seen.ok)
    end)
  end)
end)
