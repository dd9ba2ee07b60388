-- luacheck: std +busted
-- The local server's POST /v1/embeddings: deterministic vectors a test can recompute.
local cjson = require("cjson")
local server = require("support.server")

-- docs/server.md: component j (0-based) of text t: h = j + 1; for each byte b of t,
-- h = (h * 31 + b) % 2049; the component is (h - 1024) / 1024
local function expected(text, dims)
  local v = {}
  for j = 0, dims - 1 do
    local h = j + 1
    for i = 1, #text do h = (h * 31 + text:byte(i)) % 2049 end
    v[j + 1] = (h - 1024) / 1024
  end
  return v
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function unbase64(s)
  local bits = s:gsub("=", ""):gsub(".", function(c)
    local n = B64:find(c, 1, true) - 1
    local t = {}
    for k = 5, 0, -1 do t[#t + 1] = math.floor(n / 2 ^ k) % 2 end
    return table.concat(t)
  end)
  return (bits:gsub("%d%d%d%d%d%d%d%d", function(byte) return string.char(tonumber(byte, 2)) end)
    :sub(1, math.floor(#bits / 8)))
end

-- a little-endian IEEE float32 at byte i of s, decoded by hand (no string.unpack on 5.1)
local function float32(s, i)
  local b1, b2, b3, b4 = s:byte(i, i + 3)
  local sign = b4 >= 128 and -1 or 1
  local exp = (b4 % 128) * 2 + math.floor(b3 / 128)
  local mant = (b3 % 128) * 65536 + b2 * 256 + b1
  if exp == 0 then return sign * mant * 2 ^ -149 end
  return sign * (1 + mant / 2 ^ 23) * 2 ^ (exp - 127)
end

describe("llmchat-server /v1/embeddings", function()
  local srv

  lazy_setup(function() srv = server.start() end)
  lazy_teardown(function() if srv then srv.stop() end end)

  local function post(body)
    return assert(server.request(srv, "POST", "/v1/embeddings", body))
  end

  it("returns one vector per input, in input order, by the documented formula", function()
    local res = post{ model = "text-embedding-3-small", input = { "hello", "wörld", "x" } }
    assert.equal(200, res.status)
    local j = res.json
    assert.equal("list", j.object)
    assert.equal("text-embedding-3-small", j.model)
    assert.equal(3, #j.data)
    for i, text in ipairs{ "hello", "wörld", "x" } do
      assert.equal("embedding", j.data[i].object)
      assert.equal(i - 1, j.data[i].index)
      assert.same(expected(text, 8), j.data[i].embedding)
    end
    assert.are_not.same(j.data[1].embedding, j.data[3].embedding)
    -- ceil(bytes / 4) per input: 2 + 2 + 1
    assert.same({ prompt_tokens = 5, total_tokens = 5 }, j.usage)
  end)

  it("honours dimensions, a single string and token arrays", function()
    local j = post{ input = "abc", dimensions = 20 }.json
    assert.equal(1, #j.data)
    assert.same(expected("abc", 20), j.data[1].embedding)
    for _, x in ipairs(j.data[1].embedding) do assert.is_true(x >= -1 and x <= 1) end
    j = post{ input = { 12, 345 } }.json
    assert.same(expected("12 345", 8), j.data[1].embedding)
    assert.equal(2, j.usage.prompt_tokens)
    j = post{ input = { { 1, 2 }, { 3 } } }.json
    assert.same(expected("1 2", 8), j.data[1].embedding)
    assert.same(expected("3", 8), j.data[2].embedding)
  end)

  it("encodes base64 as little-endian float32", function()
    local j = post{ input = { "hello" }, dimensions = 5, encoding_format = "base64" }.json
    local bytes = unbase64(j.data[1].embedding)
    assert.equal(20, #bytes)
    local want = expected("hello", 5)
    for i = 1, 5 do
      assert.equal(want[i], float32(bytes, 4 * i - 3))
    end
  end)

  it("refuses empty or malformed input with 400", function()
    for _, bad in ipairs{ { input = "" }, { input = {} }, { input = { "a", "" } }, { model = "m" },
      { input = { "a", 5 } }, { input = "a", dimensions = 0 }, { input = "a", dimensions = 1.5 },
      { input = "a", encoding_format = "hex" } } do
      local res = post(bad)
      assert.equal(400, res.status, cjson.encode(bad))
      assert.equal("invalid_request_error", res.json.error.type)
      assert.truthy(res.json.error.param)
    end
  end)

  it("takes the usual mock controls", function()
    local res = post{ input = "a", mock = { status = 429, headers = { ["retry-after"] = "1" } } }
    assert.equal(429, res.status)
    assert.equal("1", res.headers["retry-after"])
    res = post{ input = "a", mock = { key = "emb-ft-1", fail_times = 1, status = 503 } }
    assert.equal(503, res.status)
    res = post{ input = "a", mock = { key = "emb-ft-1", fail_times = 1, status = 503 } }
    assert.equal(200, res.status)
  end)
end)
