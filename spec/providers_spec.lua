-- Provider presets: URLs, auth headers, keys from the environment, Segmind's
-- model-in-path. The presets' real hosts are never contacted: base_url points
-- each preset at the local server, which echoes what it received.
local server = require("support.server")
local llmchat = require("llmchat")
local providers = require("llmchat.providers")
local cjson = require("cjson")
local CHILD = server.child()

describe("provider presets", function()
  local srv
  setup(function() srv = server.start() end)
  teardown(function() srv.stop() end)

  it("have the documented base URLs and key variables", function()
    local want = {
      openai = { "https://api.openai.com/v1", "OPENAI_API_KEY" },
      aimlapi = { "https://api.aimlapi.com/v1", "AIMLAPI_API_KEY" },
      openrouter = { "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY" },
      segmind = { "https://api.segmind.com/v1", "SEGMIND_API_KEY" },
      ollama = { "http://127.0.0.1:11434/v1", nil },
    }
    for name, w in pairs(want) do
      local c = llmchat.client{ provider = name, api_key = "sk-fake" }
      assert.equal(w[1], c.base_url)
      assert.equal(w[2], providers.presets[name].env)
    end
  end)

  it("refuse to start without a key, before any request", function()
    for _, name in ipairs{ "openai", "aimlapi", "openrouter", "segmind" } do
      local env = providers.presets[name].env
      if os.getenv(env) == nil then
        local ok, e = pcall(llmchat.client, { provider = name })
        assert.is_false(ok)
        assert.truthy(tostring(e):find(env, 1, true))
      end
    end
    assert.truthy(llmchat.client{ provider = "ollama" })  -- no key needed
  end)

  it("send Bearer auth for openai, aimlapi, openrouter", function()
    for _, name in ipairs{ "openai", "aimlapi", "openrouter" } do
      local c = llmchat.client{ provider = name, base_url = srv.url, api_key = "sk-fake-" .. name }
      local res = assert(c:chat{ model = "m", messages = { { role = "user", content = "hi" } },
        mock = { echo = true } })
      assert.equal("Bearer sk-fake-" .. name, res._request.headers.authorization)
      assert.equal("/v1/chat/completions", res._request.path)
    end
  end)

  it("send OpenRouter's optional HTTP-Referer and X-Title", function()
    local c = llmchat.client{ provider = "openrouter", base_url = srv.url, api_key = "sk-or",
      referer = "https://example.org/game", title = "My game" }
    local res = assert(c:chat{ model = "openai/gpt-4.5-preview",
      messages = { { role = "user", content = "hi" } }, mock = { echo = true } })
    assert.equal("https://example.org/game", res._request.headers["http-referer"])
    assert.equal("My game", res._request.headers["x-title"])
  end)

  it("put Segmind's model in the path, the key in x-api-key, messages in the body", function()
    local c = llmchat.client{ provider = "segmind", base_url = srv.url, api_key = "sg-fake",
      model = "gpt-4.5-preview" }
    local res = assert(c:chat{ messages = { { role = "user", content = "joke" } },
      headers = { ["x-mock"] = cjson.encode{ echo = true,
        headers = { ["x-remaining-credits"] = "123.5" } } } })
    assert.equal("/v1/gpt-4.5-preview", res._request.path)
    assert.equal("sg-fake", res._request.headers["x-api-key"])
    assert.is_nil(res._request.headers.authorization)
    local body = cjson.decode(res._request.body)
    assert.is_nil(body.model)
    assert.equal("joke", body.messages[1].content)
    assert.equal("123.5", res.headers["x-remaining-credits"])
    assert.equal("joke", res.content)
  end)

  it("map Segmind's 406 to insufficient_credits", function()
    local c = llmchat.client{ provider = "segmind", base_url = srv.url, api_key = "sg",
      model = "gpt-4.5-preview", max_retries = 0 }
    local _, err = c:chat{ messages = { { role = "user", content = "x" } },
      headers = { ["x-mock"] = '{"status":406,"error":{"message":"Not enough credits"}}' } }
    assert.equal("insufficient_credits", err.kind)
  end)

  it("take the key from the preset's environment variable", function()
    -- a child process with the variable set: the only way to set env from Lua
    local cmd = ("OPENAI_API_KEY=sk-from-env LUA_PATH='lua/?.lua;lua/?/init.lua;;' " .. CHILD .. " -e \"local c=require('llmchat').client{provider='openai', base_url='%s'}; "
      .. "local r=assert(c:chat{model='m', messages={{role='user',content='x'}}, mock={echo=true}}); "
      .. "io.write(r._request.headers.authorization)\""):format(srv.url)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    assert.equal("Bearer sk-from-env", out)
  end)
end)

describe("debug log", function()
  local srv
  setup(function() srv = server.start() end)
  teardown(function() srv.stop() end)

  it("is silent unless asked, and redacts keys", function()
    local lines = {}
    local c = llmchat.client{ base_url = srv.url, api_key = "sk-SECRET-123",
      log = function(l) lines[#lines + 1] = l end,
      headers = { Cookie = "session=abc", ["api-key"] = "azure-secret" } }
    assert(c:chat{ messages = { { role = "user", content = "x" } } })
    local all = table.concat(lines, "\n")
    assert.truthy(all:find("POST " .. srv.url .. "/chat/completions", 1, true))
    assert.truthy(all:find("200", 1, true))
    assert.truthy(all:find("Authorization: <redacted>", 1, true))
    assert.truthy(all:find("Cookie: <redacted>", 1, true))
    assert.truthy(all:find("api-key: <redacted>", 1, true))
    assert.falsy(all:find("sk-SECRET-123", 1, true))
    assert.falsy(all:find("azure-secret", 1, true))
    assert.falsy(all:find("session=abc", 1, true))
  end)

  it("writes to stderr with LLMCHAT_LOG=debug, and nothing without it", function()
    local base = ("LUA_PATH='lua/?.lua;lua/?/init.lua;;' " .. CHILD .. " -e \"local c=require('llmchat').client{base_url='%s', api_key='sk-HIDDEN', x_api=1}; "
      .. "assert(c:chat{messages={{role='user',content='x'}}, mock={status=500, fail_times=1, key='log'..os.time()..math.random(1e6)}})\" 2>&1"):format(srv.url)
    base = base:gsub("x_api=1", "retry_base_delay=0.01")
    local p = io.popen("LLMCHAT_LOG=debug " .. base)
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("llmchat: POST", 1, true))
    assert.truthy(out:find("retrying", 1, true))
    assert.truthy(out:find("<redacted>", 1, true))
    assert.falsy(out:find("sk-HIDDEN", 1, true))
    p = io.popen(base)
    out = p:read("*a")
    p:close()
    assert.equal("", out)
  end)
end)

describe("TLS", function()
  local srv
  setup(function() srv = server.start{ tls = true } end)
  teardown(function() srv.stop() end)

  it("verifies the server with ca_file", function()
    local c = llmchat.client{ base_url = srv.url, ca_file = srv.ca_file }
    local res, err = c:chat{ messages = { { role = "user", content = "over TLS" } } }
    assert.is_nil(err)
    assert.equal("over TLS", res.content)
  end)

  it("refuses an unknown certificate by default (kind network)", function()
    local c = llmchat.client{ base_url = srv.url, max_retries = 0 }
    local res, err = c:chat{ messages = { { role = "user", content = "x" } } }
    assert.is_nil(res)
    assert.equal("network", err.kind)
  end)

  it("skips verification only when told to", function()
    local c = llmchat.client{ base_url = srv.url, verify = false }
    assert(c:chat{ messages = { { role = "user", content = "x" } } })
  end)

  it("streams over TLS", function()
    local c = llmchat.client{ base_url = srv.url, ca_file = srv.ca_file }
    local got = {}
    local res = assert(c:chat{ messages = { { role = "user", content = "secure stream" } },
      on_delta = function(t) got[#got + 1] = t end })
    assert.equal("secure stream", res.content)
    assert.equal("secure stream", table.concat(got))
  end)
end)

describe("proxy option", function()
  local srv
  setup(function() srv = server.start() end)
  teardown(function() srv.stop() end)

  it("sends requests through the proxy", function()
    -- the local server answers absolute-form request targets like a forward proxy would
    local c = llmchat.client{ base_url = "http://llmchat.invalid/v1", proxy = srv.base, max_retries = 0 }
    local res, err = c:chat{ messages = { { role = "user", content = "via proxy" } }, mock = { echo = true } }
    if res then
      assert.truthy(res._request.path:find("llmchat.invalid", 1, true))
    else
      -- the request reached the proxy (not DNS for llmchat.invalid): any HTTP answer proves it
      assert.truthy(err.status, tostring(err))
    end
  end)
end)
