-- The foundation: blocking chat against the local server over real HTTP.
local server = require("support.server")
local llmchat = require("llmchat")
local cjson = require("cjson")

local KEY = "sk-test-FAKE-0123456789abcdef"

describe("client:chat", function()
  local srv, c
  setup(function()
    srv = server.start()
    c = llmchat.client{ base_url = srv.url, model = "echo-1", api_key = KEY,
      retry_base_delay = 0.01, retry_max_delay = 0.05 }
  end)
  teardown(function() srv.stop() end)

  local function user(text) return { { role = "user", content = text } } end

  -- Lua 5.3+ has 64-bit integers; on 5.1, 5.2 and LuaJIT every number is a double, so a
  -- literal beyond 2^53 is already the nearest double when the encoder sees it
  local INTEGERS = math.type ~= nil

  it("returns the result fields of the contract", function()
    local res, err = c:chat{ messages = user("hello there") }
    assert.is_nil(err)
    assert.equal("hello there", res.content)
    assert.equal("assistant", res.message.role)
    assert.equal("hello there", res.message.content)
    assert.equal("stop", res.finish_reason)
    assert.equal("echo-1", res.model)
    assert.truthy(res.id:find("^chatcmpl%-"))
    assert.equal(200, res.status)
    assert.equal("application/json", res.headers["content-type"])
    assert.equal(1, #res.choices)
    assert.is_nil(res.refusal)           -- refusal: null in the body
    assert.is_nil(res.reasoning)
  end)

  it("gives token counts as Lua integers", function()
    local res = assert(c:chat{ messages = user("count me") })
    for _, k in ipairs{ "prompt_tokens", "completion_tokens", "total_tokens" } do
      assert.equal("number", type(res.usage[k]))
      if INTEGERS then
        assert.equal("integer", math.type(res.usage[k]))
      else
        assert.equal(math.floor(res.usage[k]), res.usage[k])  -- whole, in the only number type
      end
    end
    assert.equal(res.usage.prompt_tokens + res.usage.completion_tokens, res.usage.total_tokens)
  end)

  it("never leaks cjson.null as a truthy value", function()
    local res = assert(c:chat{ messages = user("x") })
    assert.is_nil(res.message.refusal)
    assert.is_nil(res.system_fingerprint == cjson.null and true or nil)
    assert.is_nil(res.choices[1].logprobs)
  end)


  it("passes every field it does not own through to the body unchanged", function()
    local res = assert(c:chat{
      messages = user("é ✓ 🎲 \0 nul \"q\" \\ \n"), seed = 9007199254740993, temperature = 0.2,
      top_p = 1, n = 1, max_tokens = 100, stop = { "\n\n" }, logprobs = false,
      tools = {}, tool_choice = "auto", response_format = { type = "json_object" },
      provider = { order = { "a", "b" } }, transforms = {}, metadata = {},
      mock = { echo = true },
    })
    local raw = res._request.body
    if INTEGERS then
      assert.truthy(raw:find('"seed":9007199254740993', 1, true))
    else
      assert.truthy(raw:find('"seed":9007199254740992', 1, true))  -- the double 2^53 + 1 rounds to
    end
    assert.truthy(raw:find('"temperature":0.2', 1, true))
    assert.truthy(raw:find('"tools":[]', 1, true))
    assert.truthy(raw:find('"transforms":[]', 1, true))
    assert.truthy(raw:find('"metadata":{}', 1, true))
    assert.truthy(raw:find('"stop":["\\n\\n"]', 1, true))
    assert.truthy(raw:find('"model":"echo-1"', 1, true))
    assert.truthy(raw:find("é ✓ 🎲", 1, true))            -- UTF-8 untouched, not \u-escaped
    assert.truthy(raw:find('\\u0000 nul \\"q\\" \\\\ \\n', 1, true))
    local sent = cjson.decode(raw)
    assert.equal("json_object", sent.response_format.type)
    assert.equal("auto", sent.tool_choice)
    assert.same({ "a", "b" }, sent.provider.order)
    assert.is_nil(sent.on_delta)
    assert.equal("Bearer " .. KEY, res._request.headers["authorization"])
    assert.equal("application/json", res._request.headers["content-type"])
  end)

  it("sends integers exactly up to 2^53 and beyond, and floats round-trip", function()
    local res = assert(c:chat{ messages = user("n"), seed = 9007199254740992,
      x_big = 123456789012345678, x_float = 0.1, x_neg = -42, x_third = 1 / 3, x_pow = 2 ^ 60,
      mock = { echo = true } })
    local raw = res._request.body
    assert.truthy(raw:find('"seed":9007199254740992', 1, true))
    if INTEGERS then
      assert.truthy(raw:find('"x_big":123456789012345678', 1, true))
    else
      -- a double's integral value goes out digit for digit, as an integer (never in exponent
      -- form, which a Go server such as Ollama will not read into an integer field): the
      -- double nearest 123456789012345678 is 123456789012345680
      assert.truthy(raw:find('"x_big":123456789012345680', 1, true), raw)
      assert.truthy(raw:find('"x_pow":1152921504606846976', 1, true), raw)  -- a seed of 2^60
    end
    assert.truthy(raw:find('"x_float":0.1', 1, true))
    assert.truthy(raw:find('"x_neg":-42', 1, true))
    assert.equal(1 / 3, tonumber(raw:match('"x_third":([%d.e-]+)')))
  end)

  it("marks arrays explicitly with llmchat.array and objects with llmchat.object", function()
    local res = assert(c:chat{ messages = user("m"), x_list = llmchat.array{},
      tools = llmchat.object{}, mock = { echo = true } })
    assert.truthy(res._request.body:find('"x_list":[]', 1, true))
    assert.truthy(res._request.body:find('"tools":{}', 1, true))
  end)

  it("returns invalid UTF-8 in a request as a bad_request error, sending nothing", function()
    local res, err = c:chat{ messages = user("bad \255\254 bytes") }
    assert.is_nil(res)
    assert.equal("bad_request", err.kind)
    assert.truthy(tostring(err):find("UTF%-8"))
  end)

  it("raises on misuse", function()
    assert.has_error(function() c:chat("hello") end)
    assert.has_error(function() c:chat{ messages = "hello" } end)
    assert.has_error(function() c:chat{ messages = user("x"), on_delta = 42 } end)
    assert.has_error(function() c:chat{ messages = user("x"), x = function() end } end)
    assert.has_error(function() llmchat.client(42) end)
    assert.has_error(function() llmchat.client{ base_url = srv.url, timeout = "slow" } end)
    assert.has_error(function() llmchat.client{ provider = "nope", api_key = "k" } end)
  end)

  it("refuses header injection", function()
    assert.has_error(function()
      llmchat.client{ base_url = srv.url, headers = { ["X-Evil"] = "a\r\nInjected: 1" } }
    end)
    assert.has_error(function()
      llmchat.client{ base_url = srv.url, headers = { ["X-Evil\r\nA"] = "b" } }
    end)
    assert.has_error(function()
      c:chat{ messages = user("x"), headers = { ["X-Title"] = "a\nb" } }
    end)
    assert.has_error(function()
      llmchat.client{ base_url = srv.url, api_key = "sk\r\nX-Injected: 1" }
    end)
  end)

  it("only allows http and https", function()
    assert.has_error(function() llmchat.client{ base_url = "file:///etc/passwd" } end)
    assert.has_error(function() llmchat.client{ base_url = "ftp://127.0.0.1/v1" } end)
    assert.has_error(function() llmchat.client{ base_url = "gopher://127.0.0.1/v1" } end)
    assert.has_error(function() llmchat.core.request{ url = "file:///etc/passwd" } end)
    assert.has_error(function() llmchat.core.request{ url = "dict://127.0.0.1:1/" } end)
  end)

  it("sends custom and per-call headers", function()
    local cc = llmchat.client{ base_url = srv.url, headers = { ["X-Title"] = "My game" } }
    local res = assert(cc:chat{ messages = user("h"), headers = { ["X-Call"] = "1" },
      mock = { echo = true } })
    assert.equal("My game", res._request.headers["x-title"])
    assert.equal("1", res._request.headers["x-call"])
    assert.equal("application/json", res._request.headers["accept"])
    assert.is_nil(res._request.headers["authorization"])  -- no key, no auth header
    -- the per-call header went to that call only (the client's list is shared, not grown)
    local again = assert(cc:chat{ messages = user("h"), mock = { echo = true } })
    assert.is_nil(again._request.headers["x-call"])
    assert.equal("My game", again._request.headers["x-title"])
  end)

  it("gives n > 1 choices, decoded", function()
    local res = assert(c:chat{ messages = user("twice"), n = 2 })
    assert.equal(2, #res.choices)
    assert.equal("twice", res.choices[2].message.content)
  end)
end)

describe("client:models", function()
  local srv
  setup(function() srv = server.start() end)
  teardown(function() srv.stop() end)

  it("lists the models, and maps errors like chat", function()
    local c = llmchat.client{ base_url = srv.url, api_key = "sk-models", max_retries = 0 }
    local res, err = c:models()
    assert.is_nil(err)
    assert.equal("list", res.object)
    assert.truthy(#res.data > 0 and res.data[1].id)
    assert.equal(200, res.status)
    local cc = llmchat.client{ base_url = srv.url, api_key = "sk-models", max_retries = 0,
      headers = { ["x-mock"] = '{"status":401,"error":{"message":"bad key"}}' } }
    res, err = cc:models()
    assert.is_nil(res)
    assert.equal("auth", err.kind)
    local dead = llmchat.client{ base_url = "http://127.0.0.1:1/v1", max_retries = 0 }
    res, err = dead:models()
    assert.is_nil(res)
    assert.equal("network", err.kind)
  end)
end)

describe("keep-alive", function()
  local srv
  setup(function() srv = server.start() end)
  teardown(function() srv.stop() end)

  it("rides one TCP connection for N sequential requests", function()
    local c = llmchat.client{ base_url = srv.url }
    local ids = {}
    for i = 1, 10 do
      local res = assert(c:chat{ messages = { { role = "user", content = "k" .. i } } })
      ids[#ids + 1] = res.headers["x-connection-id"]
    end
    for i = 2, 10 do assert.equal(ids[1], ids[i]) end
  end)
end)

describe("errors", function()
  local srv, c
  setup(function()
    srv = server.start()
    c = llmchat.client{ base_url = srv.url, api_key = KEY, max_retries = 0 }
  end)
  teardown(function() srv.stop() end)

  local function fail(mock, params)
    params = params or {}
    params.messages = params.messages or { { role = "user", content = "e" } }
    params.mock = mock
    local res, err = c:chat(params)
    assert.is_nil(res)
    assert.is_table(err)
    return err
  end

  local cases = {
    { 401, "auth" }, { 403, "permission" }, { 404, "not_found" },
    { 402, "insufficient_credits" }, { 406, "insufficient_credits" },
    { 400, "bad_request" }, { 413, "bad_request" }, { 422, "bad_request" }, { 418, "bad_request" },
    { 429, "rate_limit" }, { 500, "server" }, { 502, "server" }, { 503, "server" },
  }
  for _, case in ipairs(cases) do
    it(("maps HTTP %d to %s"):format(case[1], case[2]), function()
      local err = fail{ status = case[1], error = { message = "boom " .. case[1], type = "t", code = "c" } }
      assert.equal(case[2], err.kind)
      assert.equal(case[1], err.status)
      assert.equal("boom " .. case[1], err.message)
      assert.equal("c", err.code)
      assert.truthy(err.body:find("boom", 1, true))
      assert.is_table(err.headers)
      local line = tostring(err)
      assert.falsy(line:find("\n"))
      assert.truthy(line:find(case[2], 1, true))
      assert.truthy(line:find(tostring(case[1]), 1, true))
    end)
  end

  it("reads retry_after from retry-after-ms, Retry-After seconds and HTTP dates", function()
    assert.equal(1.5, fail{ status = 429, headers = { ["retry-after-ms"] = "1500" } }.retry_after)
    assert.equal(7, fail{ status = 429, headers = { ["retry-after"] = "7" } }.retry_after)
    local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 30)
    local ra = fail{ status = 429, headers = { ["retry-after"] = date } }.retry_after
    assert.truthy(ra >= 25 and ra <= 31, tostring(ra))
  end)

  it("explains an HTML error page", function()
    local err = fail{ status = 502, html = true }
    assert.equal("server", err.kind)
    assert.truthy(err.message:find("HTML", 1, true))
    assert.truthy(err.body:find("<", 1, true))
  end)

  it("gives protocol for a 200 that is not JSON", function()
    local err = fail{ status = 200, body = "<html><title>Proxy</title></html>", content_type = "text/html" }
    assert.equal("protocol", err.kind)
    assert.truthy(err.message:find("HTML", 1, true))
    err = fail{ status = 200, body = '{"id": "x", "choices": [', content_type = "application/json" }
    assert.equal("protocol", err.kind)
    assert.equal('{"id": "x", "choices": [', err.body)
  end)

  it("gives network for a refused connection", function()
    local dead = llmchat.client{ base_url = "http://127.0.0.1:1/v1", max_retries = 0 }
    local res, err = dead:chat{ messages = { { role = "user", content = "x" } } }
    assert.is_nil(res)
    assert.equal("network", err.kind)
  end)

  it("gives network for a connection dropped before the headers", function()
    assert.equal("network", fail{ drop = "before_headers" }.kind)
  end)

  it("gives network for a body cut short", function()
    assert.equal("network", fail{ drop = "mid_body" }.kind)
  end)

  it("gives timeout for the total timeout", function()
    local err = fail({ delay = 3 }, { timeout = 0.3 })
    assert.equal("timeout", err.kind)
    assert.equal("total", err.timeout)
  end)

  it("gives timeout when no byte arrives for idle_timeout seconds", function()
    local err = fail({ delay = 4 }, { idle_timeout = 1, timeout = 10 })
    assert.equal("timeout", err.kind)
    assert.equal("idle", err.timeout)
  end)

  it("ends a runaway body at max_response_size", function()
    local err = fail({ size = 200000 }, { max_response_size = 50000 })
    assert.equal("protocol", err.kind)
    assert.truthy(err.message:find("max_response_size", 1, true))
  end)

  it("never shows the API key in an error", function()
    local err = fail{ status = 401, error = { message = "Incorrect API key provided: " .. KEY } }
    assert.equal("auth", err.kind)
    assert.falsy(tostring(err):find(KEY, 1, true))
    assert.falsy(err.message:find(KEY, 1, true))
    assert.falsy(err.body:find(KEY, 1, true))
  end)
end)

describe("retries", function()
  local srv
  setup(function() srv = server.start() end)
  teardown(function() srv.stop() end)

  local function client(opts)
    opts = opts or {}
    opts.base_url = srv.url
    opts.retry_base_delay = opts.retry_base_delay or 0.01
    opts.retry_max_delay = opts.retry_max_delay or 0.05
    return llmchat.client(opts)
  end
  local n = 0
  local function key() n = n + 1; return "k" .. n .. "-" .. os.time() end
  local function hits(k) return server.request(srv, "GET", "/_stats").json.keys[k] end

  for _, status in ipairs{ 408, 409, 429, 500, 502, 503 } do
    it("retries " .. status .. " and succeeds", function()
      local res, err = client():chat{ messages = { { role = "user", content = "again" } },
        mock = { fail_times = 2, key = key(), status = status } }
      assert.is_nil(err)
      assert.equal("again", res.content)
    end)
  end

  it("stops after max_retries", function()
    local k = key()
    local res, err = client{ max_retries = 1 }:chat{ messages = { { role = "user", content = "x" } },
      mock = { fail_times = 5, key = k, status = 500 } }
    assert.is_nil(res)
    assert.equal("server", err.kind)
    assert.equal(2, hits(k))
  end)

  it("does not retry 400, 401, 404", function()
    for _, st in ipairs{ 400, 401, 404 } do
      local k = key()
      local _, err = client():chat{ messages = { { role = "user", content = "x" } },
        mock = { fail_times = 1, key = k, status = st } }
      assert.equal(st, err.status)
      assert.equal(1, hits(k))
    end
  end)

  it("retries connection drops", function()
    local res = assert(client():chat{ messages = { { role = "user", content = "d" } },
      mock = { fail_times = 1, key = key(), drop = "before_headers" } })
    assert.equal("d", res.content)
  end)

  it("honours Retry-After (seconds) and retry-after-ms", function()
    local t0 = llmchat.core.now()
    assert(client():chat{ messages = { { role = "user", content = "w" } },
      mock = { fail_times = 1, key = key(), status = 429, headers = { ["retry-after"] = "1" } } })
    local dt = llmchat.core.now() - t0
    assert.truthy(dt >= 0.9, "waited " .. dt)
    t0 = llmchat.core.now()
    assert(client():chat{ messages = { { role = "user", content = "w" } },
      mock = { fail_times = 1, key = key(), status = 429, headers = { ["retry-after-ms"] = "300" } } })
    dt = llmchat.core.now() - t0
    assert.truthy(dt >= 0.28 and dt < 2, "waited " .. dt)
  end)

  it("does not wait longer than max_retry_after: a later Retry-After is not retried", function()
    -- the server said "not before then"; retrying sooner (with the backoff) would ignore it
    -- (issue 14): the error comes back at once and keeps retry_after
    local t0 = llmchat.core.now()
    local k = key()
    local res, err = client{ max_retry_after = 0.5 }:chat{ messages = { { role = "user", content = "w" } },
      mock = { fail_times = 1, key = k, status = 503, headers = { ["retry-after"] = "3600" } } }
    assert.is_nil(res)
    assert.equal("server", err.kind)
    assert.equal(3600, err.retry_after)
    assert.equal(1, hits(k))
    assert.truthy(llmchat.core.now() - t0 < 2)
  end)

  it("honours x-should-retry", function()
    local k = key()
    local _, err = client():chat{ messages = { { role = "user", content = "x" } },
      mock = { fail_times = 1, key = k, status = 503, headers = { ["x-should-retry"] = "false" } } }
    assert.equal("server", err.kind)
    assert.equal(1, hits(k))
    assert(client():chat{ messages = { { role = "user", content = "x" } },
      mock = { fail_times = 1, key = key(), status = 400, headers = { ["x-should-retry"] = "true" } } })
  end)

  it("does not retry a 429 insufficient_quota", function()
    local k = key()
    local _, err = client():chat{ messages = { { role = "user", content = "x" } },
      mock = { fail_times = 1, key = k, status = 429,
        error = { message = "You exceeded your current quota", code = "insufficient_quota" } } }
    assert.equal("rate_limit", err.kind)
    assert.equal("insufficient_quota", err.code)
    assert.equal(1, hits(k))
  end)

  it("backs off exponentially with jitter", function()
    local t0 = llmchat.core.now()
    assert(client{ retry_base_delay = 0.1, retry_max_delay = 1 }:chat{
      messages = { { role = "user", content = "b" } },
      mock = { fail_times = 2, key = key(), status = 500 } })
    local dt = llmchat.core.now() - t0
    -- 0.1 then 0.2, each shortened by at most a quarter: at least 0.225 s
    assert.truthy(dt >= 0.2 and dt < 1.5, "waited " .. dt)
  end)
end)
