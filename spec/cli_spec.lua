-- The `llmchat` command line, run as a user would: a child process of the
-- interpreter under test (server.child_lua), talking to the local server,
-- through pipes and through a pseudo-terminal (util-linux `script`, which
-- Debian always has: bsdutils is essential).
local server = require("support.server")
local json = require("cjson")
local socket = require("socket")

local root = server.root

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function has_script()
  return os.execute("command -v script >/dev/null 2>&1") == true
    or os.execute("command -v script >/dev/null 2>&1") == 0
end

describe("llmchat command line", function()
  local srv, dir
  local counter = 0

  setup(function()
    srv = server.start()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir)))
  end)

  teardown(function()
    if srv then srv.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  local function fresh(name)
    counter = counter + 1
    return ("%s/%s-%d"):format(dir, name, counter)
  end

  -- The command that runs bin/llmchat with env (a table) and argv (a list).
  local function command(args, env)
    env = env or {}
    local vars = {
      "LUA_CPATH=" .. q(server.child_cpath),
      "XDG_DATA_HOME=" .. q(env.XDG_DATA_HOME or (dir .. "/data")),
      "LLMCHAT_BASE_URL=" .. q(env.LLMCHAT_BASE_URL or srv.url),
    }
    for k, v in pairs(env) do
      if k ~= "XDG_DATA_HOME" and k ~= "LLMCHAT_BASE_URL" then vars[#vars + 1] = k .. "=" .. q(v) end
    end
    local argv = {}
    for i, a in ipairs(args) do argv[i] = q(a) end
    return "cd " .. q(root) .. " && exec env -u LLMCHAT_PROVIDER -u LLMCHAT_MODEL -u LLMCHAT_API_KEY"
      .. " -u OPENAI_API_KEY -u NO_COLOR -u LLMCHAT_LOG " .. table.concat(vars, " ") .. " "
      .. server.child_lua .. " bin/llmchat " .. table.concat(argv, " ")
  end

  --- Runs llmchat through pipes: { code, out, err }. o.stdin: text to pipe in
  -- (default: nothing, /dev/null); o.env: variables.
  local function run(args, o)
    o = o or {}
    local base = fresh("run")
    local inp = "/dev/null"
    if o.stdin then
      inp = base .. ".in"
      write_file(inp, o.stdin)
    end
    -- a hang is a failure (exit 124), not a suite that never ends
    local p = io.popen("timeout " .. (o.timeout or 60) .. " sh -c " .. q(command(args, o.env)) .. " <" .. q(inp)
      .. " >" .. q(base .. ".out") .. " 2>" .. q(base .. ".err") .. "; echo $?")
    local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
    p:close()
    return { code = code, out = read_file(base .. ".out") or "", err = read_file(base .. ".err") or "" }
  end

  local function mock(t) return "x-mock: " .. json.encode(t) end

  -- the request the server saw, from the --json output of a call with mock echo
  local function echoed(r)
    local res = json.decode(r.out)
    return json.decode(res._request.body), res
  end

  -- sessions still open after a test (it failed half-way): ended by after_each
  local sessions = {}

  --- A session on a pseudo-terminal: s.send(bytes), s.expect(text[, seconds]),
  -- s.output(), s.wait([seconds]) -> exit code.
  local function pty(args, env)
    local base = fresh("pty")
    local fifo, ts, rc, pidf = base .. ".fifo", base .. ".ts", base .. ".rc", base .. ".pid"
    assert(os.execute("mkfifo " .. q(fifo)))
    env = env or {}
    env.TERM = env.TERM or "xterm"
    -- llmchat's pid (the shell execs it), so a session a failed test left can be ended
    local inner = "echo $$ > " .. q(pidf) .. "; " .. command(args, env)
    local sh = "script -q -f -e -c " .. q(inner) .. " " .. q(ts) .. " <" .. q(fifo)
      .. " >/dev/null 2>&1; echo $? > " .. q(rc .. ".tmp") .. "; mv " .. q(rc .. ".tmp") .. " " .. q(rc)
    os.execute("sh -c " .. q(sh) .. " >/dev/null 2>&1 &")
    local w = assert(io.open(fifo, "wb"))  -- returns once script's shell has opened it
    local s, pos = {}, 1
    -- what the terminal showed, without the typescript's "Script started ...
    -- [COMMAND=...]" line (the command holds the question) and "Script done" line
    function s.output()
      local out = read_file(ts) or ""
      if out:find("^Script started") then
        local nl = out:find("\n", 1, true)
        out = nl and out:sub(nl + 1) or ""
      end
      return (out:gsub("\nScript done on [^\n]*\n?$", "\n"))
    end
    function s.send(bytes) w:write(bytes); w:flush() end
    -- what the terminal showed after the last expected text
    function s.rest() return s.output():sub(pos) end
    function s.expect(text, seconds)
      local deadline = socket.gettime() + (seconds or 15)
      while true do
        local out = s.output()
        local _, e = out:find(text, pos, true)
        if e then pos = e + 1; return true end
        if socket.gettime() > deadline then
          error(("expected %q on the terminal within %gs; got:\n%s"):format(text, seconds or 15, out:sub(pos)), 2)
        end
        socket.sleep(0.02)
      end
    end
    function s.wait(seconds)
      if w then w:close(); w = nil end
      local deadline = socket.gettime() + (seconds or 15)
      while not exists(rc) do
        if socket.gettime() > deadline then error("llmchat did not exit; terminal:\n" .. s.output(), 2) end
        socket.sleep(0.02)
      end
      return tonumber(read_file(rc))
    end
    function s.stop()
      if w then w:close(); w = nil end
      local pid = tonumber(read_file(pidf) or "")
      if pid and not exists(rc) then os.execute("kill " .. pid .. " 2>/dev/null") end
    end
    sessions[#sessions + 1] = s
    return s
  end

  after_each(function()
    for _, s in ipairs(sessions) do s.stop() end
    sessions = {}
  end)

  describe("through pipes", function()
    it("streams the answer to the question", function()
      local r = run({ "hello", "there" })
      assert.are.equal(0, r.code)
      assert.are.equal("hello there\n", r.out)
      assert.are.equal("", r.err)
    end)

    it("adds text piped on stdin to the question", function()
      local r = run({ "Summarize:" }, { stdin = "line one\nline two\n" })
      assert.are.equal(0, r.code)
      assert.are.equal("Summarize:\n\nline one\nline two\n", r.out)
    end)

    it("takes stdin alone as the question", function()
      local r = run({}, { stdin = "only stdin" })
      assert.are.equal(0, r.code)
      assert.are.equal("only stdin\n", r.out)
    end)

    it("refuses to run with nothing to ask and no terminal", function()
      local r = run({})
      assert.are.equal(2, r.code)
      assert.are.equal("", r.out)
      assert.matches("^llmchat: nothing to ask[^\n]*\n$", r.err)
    end)

    it("never writes reasoning into piped output", function()
      local r = run({ "-H", mock{ reasoning = "SECRET-THOUGHTS" }, "the answer" })
      assert.are.equal(0, r.code)
      assert.are.equal("the answer\n", r.out)
      assert.is_nil(r.err:find("SECRET", 1, true))
      r = run({ "--no-stream", "-H", mock{ reasoning = "SECRET-THOUGHTS" }, "the answer" })
      assert.are.equal("the answer\n", r.out)
    end)

    it("--no-stream asks for the whole answer at once", function()
      -- a stream with an error event fails; the same scenario without streaming does not
      local m = mock{ stream_error = { after = 1 } }
      local streamed = run({ "-H", m, "one two three four" })
      assert.are.equal(13, streamed.code)
      assert.matches("^llmchat: stream_error", streamed.err)
      local whole = run({ "--no-stream", "-H", m, "one two three four" })
      assert.are.equal(0, whole.code)
      assert.are.equal("one two three four\n", whole.out)
    end)

    it("says on stderr when the answer was cut short", function()
      local r = run({ "--max-tokens", "1", "abcdefgh" })
      assert.are.equal(0, r.code)
      assert.are.equal("abcd\n", r.out)
      assert.matches("^llmchat: note: the answer was cut short[^\n]*\n$", r.err)
    end)

    it("--json prints the whole result", function()
      local r = run({ "--json", "hi" })
      assert.are.equal(0, r.code)
      local res = json.decode(r.out)
      assert.are.equal("hi", res.content)
      assert.are.equal("stop", res.finish_reason)
      assert.are.equal("llmchat-echo", res.model)
      assert.is_number(res.usage.total_tokens)
      assert.are.equal(#r.out, (r.out:find("\n", 1, true)))  -- one line
    end)

    it("sends -m, -s, --temperature and --max-tokens", function()
      local r = run({ "--json", "-H", mock{ echo = true }, "-m", "gpt-4o", "-s", "Be terse.",
        "--temperature", "0.25", "--max-tokens", "64", "question" })
      assert.are.equal(0, r.code, r.err)
      local body = echoed(r)
      assert.are.equal("gpt-4o", body.model)
      assert.are.equal(0.25, body.temperature)
      assert.are.equal(64, body.max_tokens)
      assert.are.same({ role = "system", content = "Be terse." }, body.messages[1])
      assert.are.same({ role = "user", content = "question" }, body.messages[2])
    end)

    it("takes the model and the server from LLMCHAT_MODEL / LLMCHAT_BASE_URL; flags win", function()
      local r = run({ "--json", "-H", mock{ echo = true }, "q" }, { env = { LLMCHAT_MODEL = "from-env" } })
      assert.are.equal("from-env", (echoed(r)).model)
      r = run({ "--json", "-H", mock{ echo = true }, "-m", "from-flag", "q" }, { env = { LLMCHAT_MODEL = "from-env" } })
      assert.are.equal("from-flag", (echoed(r)).model)
      r = run({ "--base-url", srv.url, "q" }, { env = { LLMCHAT_BASE_URL = "http://127.0.0.1:1/v1" } })
      assert.are.equal(0, r.code)
      assert.are.equal("q\n", r.out)
    end)

    it("--schema sends the JSON schema and prints the structured answer", function()
      local schema = dir .. "/person.json"
      write_file(schema, '{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}')
      local r = run({ "--schema", schema, "-H", mock{ reply = '{"name":"Ann"}', echo = true }, "--json", "who?" })
      assert.are.equal(0, r.code, r.err)
      local body, res = echoed(r)
      assert.are.equal("json_schema", body.response_format.type)
      assert.are.same({ "name" }, body.response_format.json_schema.schema.required)
      assert.are.same({ name = "Ann" }, res.data)
      r = run({ "--schema", schema, "-H", mock{ reply = '{"name":"Ann"}' }, "who?" })
      assert.are.equal('{"name":"Ann"}\n', r.out)
      -- an answer that is not JSON is a protocol error
      r = run({ "--schema", schema, "-H", mock{ reply = "not json" }, "who?" })
      assert.are.equal(12, r.code)
      -- a schema file that is missing or not JSON: exit 1, one line
      r = run({ "--schema", dir .. "/none.json", "q" })
      assert.are.equal(1, r.code)
      assert.matches("^llmchat: cannot read schema[^\n]*\n$", r.err)
    end)

    it("-i attaches images as data URLs", function()
      local png = dir .. "/dot.png"
      write_file(png, "\137PNG\r\n\26\n" .. ("\0"):rep(24))
      local r = run({ "--json", "-H", mock{ echo = true }, "-i", png, "-i", png, "what is it?" })
      assert.are.equal(0, r.code, r.err)
      local body = echoed(r)
      local content = body.messages[1].content
      assert.are.same({ type = "text", text = "what is it?" }, content[1])
      assert.matches("^data:image/png;base64,", content[2].image_url.url)
      assert.are.equal(3, #content)
      r = run({ "-i", dir .. "/missing.png", "q" })
      assert.are.equal(1, r.code)
      assert.matches("^llmchat: image [^\n]*missing.png[^\n]*\n$", r.err)
    end)

    it("--models lists the models", function()
      local r = run({ "--models" })
      assert.are.equal(0, r.code)
      assert.are.equal("llmchat-echo\ngpt-4o-mini\ngpt-4o\n", r.out)
      r = run({ "--models", "--json" })
      assert.are.equal("list", json.decode(r.out).object)
    end)

    -- the Responses API and embeddings, where the bundled server serves them
    local function serves(path, body)
      local r = server.request(srv, "POST", path, body)
      return r and r.status ~= 404
    end

    it("--responses asks the Responses API, streamed or whole", function()
      if not serves("/v1/responses", { input = "x" }) then
        pending("the bundled server has no /v1/responses")
        return
      end
      local r = run({ "--responses", "hello", "responses" })
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("hello responses\n", r.out)
      r = run({ "--responses", "--no-stream", "-H", mock{ reasoning = "SECRET-THOUGHTS" }, "whole" })
      assert.are.equal("whole\n", r.out)
      r = run({ "--responses", "-H", mock{ reasoning = "SECRET-THOUGHTS" }, "streamed" })
      assert.are.equal("streamed\n", r.out)
      r = run({ "--responses", "--json", "-H", mock{ echo = true }, "-s", "Be terse.", "-m", "gpt-4o", "q" })
      assert.are.equal(0, r.code, r.err)
      local res = json.decode(r.out)
      assert.are.equal("q", res.content)
      local body = json.decode(res._request.body)
      assert.are.equal("Be terse.", body.instructions)
      assert.are.equal("gpt-4o", body.model)
      assert.are.equal("/v1/responses", res._request.path)
      r = run({ "--responses", "-H", mock{ status = 401 }, "q" })
      assert.are.equal(3, r.code)
    end)

    it("--embed prints the vector as JSON", function()
      if not serves("/v1/embeddings", { input = "x", model = "m" }) then
        pending("the bundled server has no /v1/embeddings")
        return
      end
      local r = run({ "--embed", "some text" })
      assert.are.equal(0, r.code, r.err)
      local v = json.decode(r.out)
      assert.is_true(#v > 0)
      for _, x in ipairs(v) do assert.is_number(x) end
      -- the same text, the same vector; piped text works too
      assert.are.equal(r.out, run({ "--embed" }, { stdin = "some text" }).out)
      r = run({ "--embed", "--json", "some text" })
      assert.are.same(v, json.decode(r.out).vectors[1])
      assert.are.equal(2, run({ "--embed" }).code)
    end)

    it("--help lists the options and the exit codes; --version", function()
      local r = run({ "--help" })
      assert.are.equal(0, r.code)
      for _, s in ipairs{ "--model", "--provider", "--base-url", "--system", "--temperature", "--no-stream",
          "--json", "--schema", "--image", "--responses", "--models", "--embed", "--continue",
          "batch run", "130 interrupted", "3 auth", "8 rate_limit", "13 stream_error" } do
        assert.truthy(r.out:find(s, 1, true), s)
      end
      r = run({ "--version" })
      assert.are.equal(0, r.code)
      assert.matches("^llmchat %d+%.%d+", r.out)
    end)

    it("rejects bad options with exit code 2 and one line", function()
      for _, args in ipairs{ { "--bogus" }, { "-m" }, { "--temperature", "warm", "q" },
          { "-H", "no colon here", "q" }, { "batch", "frobnicate", "x" }, { "--models", "--embed" } } do
        local r = run(args)
        assert.are.equal(2, r.code, table.concat(args, " "))
        assert.matches("^llmchat: [^\n]+\n$", r.err)
      end
    end)

    it("says how to give a model when the server wants one", function()
      local m = mock{ status = 400, error = { message = "you must provide a model parameter",
        type = "invalid_request_error" }, headers = { ["x-should-retry"] = "false" } }
      local r = run({ "-H", m, "q" })
      assert.are.equal(7, r.code)
      assert.matches("model parameter[^\n]*%(give %-m MODEL or set LLMCHAT_MODEL%)\n$", r.err)
      r = run({ "-m", "x", "-H", m, "q" })
      assert.is_nil(r.err:find("give -m", 1, true))
    end)

    it("needs a server: --base-url, -p or LLMCHAT_BASE_URL", function()
      local r = run({ "q" }, { env = { LLMCHAT_BASE_URL = "" } })
      assert.are.equal(2, r.code)
      assert.matches("^llmchat: no server to talk to", r.err)
      r = run({ "-p", "openai", "q" }, { env = { LLMCHAT_BASE_URL = "" } })
      assert.are.equal(3, r.code)
      assert.matches("OPENAI_API_KEY", r.err)
    end)

    it("exits with a code per error kind, one line on stderr", function()
      local cases = {
        { { status = 401 }, 3, "auth" }, { { status = 403 }, 4, "permission" },
        { { status = 404 }, 5, "not_found" }, { { status = 402 }, 6, "insufficient_credits" },
        { { status = 400 }, 7, "bad_request" }, { { status = 429 }, 8, "rate_limit" },
        { { status = 500 }, 9, "server" }, { { html = true, status = 200 }, 12, "protocol" },
        { { stream_error = { after = 0 } }, 13, "stream_error" },
      }
      for _, c in ipairs(cases) do
        local m = c[1]
        m.headers = { ["x-should-retry"] = "false" }
        local r = run({ "-H", mock(m), "question" })
        assert.are.equal(c[2], r.code, c[3])
        assert.matches("^llmchat: " .. c[3] .. "[^\n]*\n$", r.err)
      end
      local r = run({ "--timeout", "0.5", "--max-retries", "0", "-H", mock{ delay = 3 }, "q" })
      assert.are.equal(10, r.code)
      assert.matches("^llmchat: timeout[^\n]*\n$", r.err)
      -- a port nobody listens on
      local s = socket.bind("127.0.0.1", 0)
      local _, port = s:getsockname()
      s:close()
      r = run({ "--max-retries", "0", "q" }, { env = { LLMCHAT_BASE_URL = "http://127.0.0.1:" .. port .. "/v1" } })
      assert.are.equal(11, r.code)
      assert.matches("^llmchat: network[^\n]*\n$", r.err)
    end)

    it("never prints the API key", function()
      local key = "sk-test-VERY-secret-0123456789"
      local r = run({ "-H", mock{ auth = "another-key" }, "q" }, { env = { LLMCHAT_API_KEY = key } })
      assert.are.equal(3, r.code)
      assert.is_nil((r.out .. r.err):find(key, 1, true))
      -- even where a server repeats it back, the JSON output is scrubbed
      r = run({ "--json", "-H", mock{ echo = true }, "q" }, { env = { LLMCHAT_API_KEY = key } })
      assert.are.equal(0, r.code)
      assert.is_nil((r.out .. r.err):find(key, 1, true))
      assert.truthy(r.out:find("<redacted>", 1, true))
      -- and the key did reach the server
      r = run({ "-H", mock{ auth = key }, "q" }, { env = { LLMCHAT_API_KEY = key } })
      assert.are.equal(0, r.code)
    end)

    it("-c continues the last conversation, saved atomically under XDG_DATA_HOME", function()
      local data = fresh("xdg")
      local env = { XDG_DATA_HOME = data }
      assert.are.equal(0, run({ "-s", "Be brief.", "first question" }, { env = env }).code)
      local saved = json.decode(read_file(data .. "/llmchat/last.json"))
      assert.are.equal("Be brief.", saved.system)
      assert.are.equal(2, #saved.messages)
      local r = run({ "-c", "--json", "-H", mock{ echo = true }, "second question" }, { env = env })
      assert.are.equal(0, r.code, r.err)
      local body = echoed(r)
      assert.are.same({ "system", "user", "assistant", "user" },
        { body.messages[1].role, body.messages[2].role, body.messages[3].role, body.messages[4].role })
      assert.are.equal("first question", body.messages[2].content)
      assert.are.equal("first question", body.messages[3].content)
      saved = json.decode(read_file(data .. "/llmchat/last.json"))
      assert.are.equal(4, #saved.messages)
      -- no temporary file left beside it
      local p = io.popen("ls -A " .. q(data .. "/llmchat"))
      assert.are.equal("last.json\n", p:read("*a"))
      p:close()
      -- --no-save leaves it alone; a new question without -c starts over
      run({ "--no-save", "third" }, { env = env })
      assert.are.equal(4, #json.decode(read_file(data .. "/llmchat/last.json")).messages)
      run({ "fourth" }, { env = env })
      assert.are.equal(2, #json.decode(read_file(data .. "/llmchat/last.json")).messages)
    end)

    it("-c without a saved conversation starts a new one", function()
      local r = run({ "-c", "hello" }, { env = { XDG_DATA_HOME = fresh("xdg") } })
      assert.are.equal(0, r.code)
      assert.are.equal("hello\n", r.out)
      assert.matches("no saved conversation", r.err)
    end)
  end)

  describe("batch", function()
    -- a server of its own: batches take 1 s from validating to completed
    local bsrv
    local function ready()
      if bsrv == false then return false end
      if bsrv == nil then
        local llmchat = require("llmchat")
        local c = llmchat.client{ base_url = srv.url }
        local ok_srv
        if type(c.batch) == "function" then
          ok_srv, bsrv = pcall(server.start, { args = { "--batch-seconds", "1" } })
          if not ok_srv then bsrv = false end
        else
          bsrv = false
        end
        if bsrv then
          local r = server.request(bsrv, "GET", "/v1/batches")
          if not (r and r.status == 200) then bsrv.stop(); bsrv = false end
        end
      end
      return bsrv ~= false
    end
    teardown(function() if bsrv then bsrv.stop() end end)

    local function input(ids)
      local path = fresh("batch-in") .. ".jsonl"
      local lines = {}
      for i, id in ipairs(ids) do
        lines[i] = json.encode({ custom_id = id, method = "POST", url = "/v1/chat/completions",
          body = { model = "llmchat-echo", messages = { { role = "user", content = "prompt " .. id } } } })
      end
      write_file(path, table.concat(lines, "\n") .. "\n")
      return path
    end

    local function results(path)
      local out = {}
      for line in (read_file(path) or ""):gmatch("[^\n]+") do out[#out + 1] = json.decode(line) end
      return out
    end

    local function benv() return { LLMCHAT_BASE_URL = bsrv.url } end

    it("run: submits, shows progress lines, writes results in input order", function()
      if not ready() then pending("no client:batch or no batch endpoints in the bundled server"); return end
      local ids = { "e", "a", "d", "b", "c" }
      local out = fresh("batch-out") .. ".jsonl"
      local r = run({ "batch", "run", input(ids), "-o", out, "--interval", "0.2" }, { env = benv() })
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("", r.out)
      local id = r.err:match("^batch (%S+): submitted\n")
      assert.truthy(id, r.err)
      assert.matches("batch " .. id .. ": completed, 5/5 done\n", r.err, 1, true)
      assert.is_nil(r.err:find("\r", 1, true))   -- no bar in a pipe
      local res = results(out)
      assert.are.equal(#ids, #res)
      for i, line in ipairs(res) do
        assert.are.equal(i, line.index)
        assert.are.equal(ids[i], line.custom_id)
        assert.are.equal("prompt " .. ids[i], line.result.content)
      end
      -- no temporary file left beside the output
      local p = io.popen("ls " .. q(out) .. "*")
      assert.are.equal(out .. "\n", p:read("*a"))
      p:close()
      -- the same batch, later, from its id: status, results, list
      r = run({ "batch", "status", id }, { env = benv() })
      assert.are.equal(0, r.code, r.err)
      assert.are.equal(id .. " completed 5/5\n", r.out)
      r = run({ "batch", "results", id }, { env = benv() })
      assert.are.equal(0, r.code, r.err)
      local again = {}
      for line in r.out:gmatch("[^\n]+") do again[#again + 1] = json.decode(line) end
      assert.are.same(res, again)
      r = run({ "batch", "list" }, { env = benv() })
      assert.truthy(r.out:find(id .. " completed", 1, true), r.out)
    end)

    it("run: failed lines are error lines of their kind, exit 14", function()
      if not ready() then pending("no client:batch or no batch endpoints in the bundled server"); return end
      local out = fresh("batch-out") .. ".jsonl"
      local r = run({ "batch", "run", input{ "x", "y", "z" }, "-o", out, "--interval", "0.2",
        "--metadata", 'mock={"fail":{"y":429}}' }, { env = benv() })
      assert.are.equal(14, r.code, r.err)
      local res = results(out)
      assert.are.equal("prompt x", res[1].result.content)
      assert.are.equal("rate_limit", res[2].error.kind)
      assert.are.equal("y", res[2].custom_id)
      assert.are.equal("prompt z", res[3].result.content)
      assert.matches("1 failed", r.err)
    end)

    it("run: an expired batch keeps what ran; the rest are error lines (exit 14)", function()
      if not ready() then pending("no client:batch or no batch endpoints in the bundled server"); return end
      local out = fresh("batch-out") .. ".jsonl"
      local r = run({ "batch", "run", input{ "k1", "k2", "k3", "k4" }, "-o", out, "--interval", "0.2",
        "--metadata", 'mock={"expire":true,"partial":2}' }, { env = benv() })
      assert.are.equal(14, r.code, r.err)
      assert.matches("expired", r.err)
      local res = results(out)
      assert.are.equal(4, #res)
      assert.are.equal("prompt k1", res[1].result.content)
      assert.are.equal("prompt k2", res[2].result.content)
      assert.are.equal("expired", res[3].error.kind)
      assert.are.equal("expired", res[4].error.kind)
      assert.are.equal("k4", res[4].custom_id)
    end)

    it("run: a batch that fails validation is exit 15 with the provider's reason", function()
      if not ready() then pending("no client:batch or no batch endpoints in the bundled server"); return end
      local out = fresh("batch-out") .. ".jsonl"
      local r = run({ "batch", "run", input{ "v1" }, "-o", out, "--interval", "0.2",
        "--metadata", 'mock={"validation":"the model does not exist"}' }, { env = benv() })
      assert.are.equal(15, r.code, r.err)
      assert.matches("llmchat: batch_failed[^\n]*the model does not exist[^\n]*\n$", r.err)
      assert.is_nil(read_file(out))
    end)

    it("status / results / cancel a batch that is still running", function()
      if not ready() then pending("no client:batch or no batch endpoints in the bundled server"); return end
      local r = run({ "batch", "run", input{ "p", "q" }, "--interval", "0.2", "--timeout", "0.5",
        "--metadata", 'mock={"seconds":60}' }, { env = benv() })
      assert.are.equal(10, r.code, r.err)
      local id = r.err:match("^batch (%S+): submitted\n")
      assert.matches("goes on at the provider", r.err)
      r = run({ "batch", "status", id }, { env = benv() })
      assert.are.equal(0, r.code, r.err)
      assert.matches("^" .. id:gsub("%p", "%%%0") .. " %a+ %d+/2\n$", r.out)
      r = run({ "batch", "results", id }, { env = benv() })
      assert.are.equal(1, r.code)
      assert.matches("^llmchat: batch " .. id:gsub("%p", "%%%0") .. " is [%a_]+: its results come when it has finished", r.err)
      r = run({ "batch", "cancel", id }, { env = benv() })
      assert.are.equal(0, r.code, r.err)
      assert.matches("^" .. id:gsub("%p", "%%%0") .. " cancel", r.out)
      r = run({ "batch", "status", "batch_does_not_exist" }, { env = benv() })
      assert.are.equal(5, r.code)
      assert.matches("^llmchat: not_found[^\n]*\n$", r.err)
    end)

    it("usage errors: a missing input file, a missing id", function()
      local r = run({ "batch", "run", dir .. "/nope.jsonl" })
      assert.are.equal(1, r.code)
      assert.matches("^llmchat: cannot read [^\n]*nope.jsonl", r.err)
      assert.are.equal(2, run({ "batch", "status" }).code)
      assert.are.equal(2, run({ "batch" }).code)
    end)

    local it_pty = has_script() and it or pending

    it_pty("run on a terminal: a progress bar on stderr; Ctrl-C leaves the batch running", function()
      if not ready() then pending("no client:batch or no batch endpoints in the bundled server"); return end
      local out = fresh("batch-out") .. ".jsonl"
      local s = pty({ "batch", "run", input{ "a", "b", "c" }, "-o", out, "--interval", "0.2" }, benv())
      assert.are.equal(0, s.wait(30))
      local text = s.output()
      assert.truthy(text:find("\r\27?%[?K?batch ") or text:find("\rbatch ", 1, true), text)
      assert.truthy(text:find("[########################] 3/3 completed", 1, true), text)
      assert.are.equal(3, #results(out))
      -- Ctrl-C while waiting: exit 130, the batch goes on
      s = pty({ "batch", "run", input{ "a" }, "--interval", "0.2", "--metadata", 'mock={"seconds":60}' }, benv())
      s.expect("submitted")
      s.expect("[")
      s.send("\3")
      assert.are.equal(130, s.wait(15))
      assert.truthy(s.output():find("goes on at the provider", 1, true))
    end)
  end)

  describe("batch progress", function()
    -- in this process: the reporter writes to a file standing in for stderr
    local batch = require("llmchat.cli.batch")
    local function report(is_tty, steps)
      local path = fresh("progress")
      local f = assert(io.open(path, "wb"))
      local t = 100
      local p = batch.progress("batch_1", f, is_tty, function() return t end)
      for _, st in ipairs(steps) do
        t = t + 7
        p(st[1], st[2])
      end
      p.done()
      f:close()
      return read_file(path)
    end
    local steps = {
      { "validating", { total = 0, completed = 0, failed = 0 } },
      { "in_progress", { total = 10, completed = 2, failed = 0 } },
      { "in_progress", { total = 10, completed = 2, failed = 0 } },
      { "in_progress", { total = 10, completed = 6, failed = 1 } },
      { "completed", { total = 10, completed = 9, failed = 1 } },
    }

    it("is a bar redrawn in place on a terminal", function()
      local out = report(true, steps)
      local frames = {}
      for frame in out:gmatch("\r([^\r]*)") do frames[#frames + 1] = frame end
      assert.are.equal(5, #frames)
      assert.are.equal("batch batch_1 [------------------------] 0/0 validating 0:07\27[K", frames[1])
      assert.are.equal("batch batch_1 [#####-------------------] 2/10 in_progress 0:14\27[K", frames[2])
      assert.are.equal("batch batch_1 [#################-------] 7/10 in_progress (1 failed) 0:28\27[K", frames[4])
      assert.are.equal("batch batch_1 [########################] 10/10 completed (1 failed) 0:35\27[K\n", frames[5])
    end)

    it("is a line per change elsewhere", function()
      assert.are.equal("batch batch_1: validating, 0/0 done\n"
        .. "batch batch_1: in_progress, 2/10 done\n"
        .. "batch batch_1: in_progress, 7/10 done, 1 failed\n"
        .. "batch batch_1: completed, 10/10 done, 1 failed\n", report(false, steps))
    end)
  end)

  describe("on a terminal", function()
    local it_pty = has_script() and it or pending

    it_pty("shows reasoning dimmed, then the answer", function()
      local s = pty({ "-H", mock{ reasoning = "pondering" }, "the answer" })
      s.expect("the answer")
      assert.are.equal(0, s.wait())
      local out = s.output()
      assert.truthy(out:find("\27[2mpond", 1, true), out)
      local plain_text = out:gsub("\27%[%d*m", "")
      local r_at, a_at = plain_text:find("pondering", 1, true), plain_text:find("the answer", 1, true)
      assert.truthy(r_at and a_at and r_at < a_at, plain_text)
      -- the answer itself is not dimmed
      assert.truthy(out:find("\27[0m\r\n\r\nthe answer", 1, true), out)
    end)

    it_pty("Ctrl-C stops the answer, keeps what arrived, exits 130", function()
      local data = fresh("xdg")
      local words = {}
      for i = 1, 60 do words[i] = "w" .. i end
      local question = table.concat(words, " ")
      local t0 = socket.gettime()
      local s = pty({ "-H", mock{ chunk_delay = 0.2, chunk_size = 3 }, question }, { XDG_DATA_HOME = data })
      s.expect("w1 w2")
      s.send("\3")
      assert.are.equal(130, s.wait())
      assert.truthy(socket.gettime() - t0 < 10, "Ctrl-C did not stop the stream")
      assert.truthy(s.output():find("llmchat: interrupted", 1, true))
      local saved = json.decode(read_file(data .. "/llmchat/last.json"))
      local partial = saved.messages[2].content
      assert.matches("^w1 w2", partial)
      assert.truthy(#partial < #question, "the whole answer arrived: nothing was stopped")
    end)

    it_pty("Ctrl-C while waiting for the first byte", function()
      local key = "cli-first-byte-" .. counter
      local s = pty({ "-H", mock{ delay = 20, key = key }, "never" })
      -- once the server has the request (so the Ctrl-C is not taken by a startup fork)
      local deadline = socket.gettime() + 15
      repeat
        socket.sleep(0.05)
        local st = server.request(srv, "GET", "/_stats?key=" .. key)
      until (st and st.json and st.json.count == 1) or socket.gettime() > deadline
      local t0 = socket.gettime()
      s.send("\3")
      assert.are.equal(130, s.wait(15))
      assert.truthy(socket.gettime() - t0 < 8, "Ctrl-C did not stop the wait")
    end)

    it_pty("chats interactively: history, line editing, Ctrl-C, Ctrl-D", function()
      local data = fresh("xdg")
      local s = pty({ "-H", mock{ chunk_delay = 0.05 } }, { XDG_DATA_HOME = data })
      s.expect("> ")
      s.send("hello world\r")
      s.expect("hello world\r\n> ")
      -- line editing: two steps left, insert
      s.send("abc\27[D\27[DX\r")
      s.expect("aXbc\r\n> ")
      -- history: up twice brings back the first line
      s.send("\27[A\27[A\r")
      s.expect("hello world\r\n> ")
      -- Ctrl-C mid-answer stops it and the chat goes on
      local long = {}
      for i = 1, 80 do long[i] = "z" .. i end
      s.send(table.concat(long, " ") .. "\r")
      s.expect("\r\nz1 z2")
      s.send("\3")
      s.expect("(interrupted)")
      s.expect("> ")
      -- the request was cancelled: nothing more of that answer arrives
      socket.sleep(0.6)
      assert.are.equal("", s.rest())
      s.send("/usage\r")
      s.expect("calls")
      s.send("after\r")
      s.expect("after\r\n> ")
      s.send("\4")
      assert.are.equal(0, s.wait())
      local saved = json.decode(read_file(data .. "/llmchat/last.json"))
      local texts = {}
      for i, m in ipairs(saved.messages) do texts[i] = m.content end
      assert.are.equal("hello world", texts[1])
      assert.are.equal("aXbc", texts[3])
      assert.are.equal("hello world", texts[5])
      assert.matches("^z1 z2", texts[8])           -- the stopped answer, as far as it came
      assert.truthy(#texts[8] < #texts[7])
      assert.are.equal("after", texts[10])
      -- -c resumes it; /undo drops the last exchange (and is saved)
      s = pty({ "-c" }, { XDG_DATA_HOME = data })
      s.expect("continuing a conversation of 10 messages")
      s.expect("> ")
      s.send("/undo\r")
      s.expect("(dropped the last exchange)")
      s.send("/quit\r")
      assert.are.equal(0, s.wait())
      assert.are.equal(8, #json.decode(read_file(data .. "/llmchat/last.json")).messages)
    end)

    it_pty("scrolls a line wider than the terminal sideways", function()
      local s = pty({ "--no-save" }, { COLUMNS = "20" })
      s.expect("> ")
      s.send("abcdefghijklmnopqrstuvwxyz\r")
      -- 17 columns for the text: the start scrolls out of sight, the answer is whole
      s.expect("\r> jklmnopqrstuvwxyz\27[K")
      s.expect("\r\nabcdefghijklmnopqrstuvwxyz\r\n> ")
      s.send("\4")
      assert.are.equal(0, s.wait())
    end)

    it_pty("reads plain lines where the terminal cannot edit (TERM=dumb)", function()
      local s = pty({ "--no-save", "-H", mock{ chunk_delay = 0.05 } }, { TERM = "dumb" })
      s.expect("> ")
      s.send("plain line\r")
      s.expect("plain line\r\nplain line\r\n> ")  -- the terminal's echo, then the answer
      -- Ctrl-C stops an answer, and the next one too (not only the first)
      local long = {}
      for i = 1, 80 do long[i] = "y" .. i end
      for _ = 1, 2 do
        s.send(table.concat(long, " ") .. "\r")
        s.expect("\r\ny1 y2")
        s.send("\3")
        s.expect("(interrupted)")
        s.expect("> ")
      end
      s.send("still here\r")
      s.expect("still here\r\nstill here\r\n> ")
      assert.is_nil(s.output():find("\27[", 1, true))
      s.send("\4")
      assert.are.equal(0, s.wait())
    end)
  end)
end)
