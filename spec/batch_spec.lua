-- luacheck: std +busted
-- The provider Batch API (llmchat.batch) against the local server's /v1/files and /v1/batches:
-- upload, states over time, results in input order from shuffled files, failed lines,
-- expired and cancelled batches, failed validation, a 429 on upload, resume from another
-- client and another process, limits refused before upload, each() on a large batch.
local llmchat = require("llmchat")
local json = require("llmchat.json")
local core = require("llmchat.core")
local server = require("support.server")

-- the interpreter under test for a child process, with this build's module (make asan runs
-- busted without LUA_CPATH: the child then takes the plain build of that interpreter)
local CHILD = os.getenv("LUA_CPATH") and server.child()
  or ("LUA_CPATH='build/%s/?.so;;' %s"):format(server.child_lua, server.child_lua)

local function mock(t) return { mock = json.encode(t) } end

describe("llmchat batch", function()
  local srv, client

  lazy_setup(function()
    srv = server.start{ args = { "--batch-seconds", "0.3" } }
    client = llmchat.client{ base_url = srv.url, api_key = "sk-batch-secret-key", model = "m",
      retry_base_delay = 0.05 }
  end)
  lazy_teardown(function() if srv then srv.stop() end end)

  local function stats() return server.request(srv, "GET", "/_stats").json end

  local function chats(n, prefix, extra)
    local list = {}
    for i = 1, n do
      list[i] = { messages = { { role = "user", content = (prefix or "text ") .. i } } }
      for k, v in pairs(extra and extra(i) or {}) do list[i][k] = v end
    end
    return list
  end

  -- the custom_ids of a file as the server wrote it, in file order
  local function file_ids(file_id)
    local res = server.request(srv, "GET", "/v1/files/" .. file_id .. "/content")
    local out = {}
    for l in res.body:gmatch("[^\n]+") do out[#out + 1] = json.decode(l).custom_id end
    return out
  end

  -- the temporary files llmchat.batch makes while fn runs
  local function tmp_files(fn)
    local batch = require("llmchat.batch")
    local made, saved = {}, batch.tmpname
    batch.tmpname = function()
      local p = saved()
      made[#made + 1] = p
      return p
    end
    local ok, err = pcall(fn)
    batch.tmpname = saved
    if not ok then error(err, 0) end
    return made
  end

  local function exists(path)
    local f = io.open(path, "rb")
    if f then f:close() end
    return f ~= nil
  end

  it("runs a chat batch: states, progress, results in input order from a shuffled file", function()
    local seen = {}
    local h
    local made = tmp_files(function() h = assert(client:batch{ requests = chats(12), interval = 0.05, metadata = mock{ seconds = 2 },
      on_progress = function(status, counts, handle)
        assert.equal("table", type(counts))
        assert.equal(h, handle)
        if seen[#seen] ~= status then seen[#seen + 1] = status end
      end }) end)
    assert.equal(1, #made)  -- the JSONL, removed once uploaded
    assert.is_false(exists(made[1]))
    assert.matches("^batch_", h.id)
    assert.equal("validating", h.status)
    assert.equal("/v1/chat/completions", h.endpoint)
    assert.equal(12, h.request_counts.total)
    assert.equal("completed", h:wait{ timeout = 60 })
    assert.is_true(h.done)
    assert.same({ "in_progress", "finalizing", "completed" }, seen)
    assert.same({ total = 12, completed = 12, failed = 0 }, h.request_counts)
    -- the server wrote the output in another order than the input
    local order = file_ids(h.output_file_id)
    local input_order = {}
    for i = 1, 12 do input_order[i] = i .. "-" .. h.metadata.llmchat_order:match("^seq:(%w+):12$") end
    assert.are_not.same(input_order, order)
    local results
    made = tmp_files(function() results = assert(h:results()) end)
    assert.equal(12, #results)
    assert.equal(1, #made)  -- no error file: only the output was downloaded, and removed
    assert.is_false(exists(made[1]))
    local single = assert(client:chat{ messages = { { role = "user", content = "text 3" } } })
    for i, r in ipairs(results) do
      assert.is_false(llmchat.is_error(r))
      assert.equal("text " .. i, r.content)
      assert.equal(input_order[i], r.custom_id)
      assert.equal(200, r.status)
      assert.equal(200, r.http_status)
      assert.equal("assistant", r.message.role)
      assert.equal("string", type(r.request_id))
    end
    -- the single call's shape
    local r3 = results[3]
    assert.equal(single.content, r3.content)
    assert.same(single.message, r3.message)
    assert.equal(single.finish_reason, r3.finish_reason)
    assert.same(single.usage, r3.usage)
    assert.equal(#single.choices, #r3.choices)
  end)

  it("keeps the caller's custom_ids, generates the missing ones, refuses duplicates before upload", function()
    local list = chats(6)
    list[2].custom_id = "mine-b"
    list[5].custom_id = "mine-e"
    local h = assert(client:batch{ requests = list, interval = 0.05, metadata = mock{ seconds = 0 } })
    assert.equal("input:6", h.metadata.llmchat_order)
    h:wait{ timeout = 60 }
    local results = assert(h:results())
    for i, r in ipairs(results) do assert.equal("text " .. i, r.content) end
    assert.equal("mine-b", results[2].custom_id)
    assert.equal("mine-e", results[5].custom_id)
    assert.matches("^1%-%x+$", results[1].custom_id)

    local before = stats().requests
    list = chats(3)
    list[1].custom_id, list[3].custom_id = "same", "same"
    local none, err = client:batch{ requests = list }
    assert.is_nil(none)
    assert.equal("bad_request", err.kind)
    assert.matches("request 3: custom_id \"same\" is also the custom_id of request 1", err.message)
    list = chats(2)
    list[2].custom_id = ""
    none, err = client:batch{ requests = list }
    assert.is_nil(none)
    assert.matches("custom_id must be a non%-empty string", err.message)
    -- nothing reached the server (the stats request itself is the one more)
    assert.equal(before + 1, stats().requests)
  end)

  it("turns failed lines into errors of the status's kind, in place", function()
    local list = chats(8)
    list[2].mock = { status = 400 }
    list[4].mock = { status = 401 }
    list[5].custom_id = "five"
    local h = assert(client:batch{ requests = list, interval = 0.05,
      metadata = mock{ seconds = 0, fail = { five = 429 }, fail_every = 7, fail_status = 503 } })
    h:wait{ timeout = 60 }
    assert.same({ total = 8, completed = 4, failed = 4 }, h.request_counts)
    local r = assert(h:results())
    assert.equal(8, #r)
    local kinds = {}
    for i, x in ipairs(r) do kinds[i] = llmchat.is_error(x) and x.kind or "ok" end
    assert.same({ "ok", "bad_request", "ok", "auth", "rate_limit", "ok", "server", "ok" }, kinds)
    assert.equal(400, r[2].status)
    assert.equal("five", r[5].custom_id)
    assert.equal(429, r[5].status)
    assert.equal("mock error: HTTP 503", r[7].message)
    assert.matches("^llmchat: server %(HTTP 503%)", tostring(r[7]))
    -- the key never appears anywhere
    for _, x in ipairs(r) do
      if llmchat.is_error(x) then assert.is_nil(tostring(x):find("sk-batch-secret-key", 1, true)) end
    end
    -- failures written to the output file instead of the error file are errors all the same
    h = assert(client:batch{ requests = chats(3), interval = 0.05,
      metadata = mock{ seconds = 0, fail_every = 2, failed_to_output = true } })
    h:wait{ timeout = 60 }
    assert.is_nil(h.error_file_id)
    r = assert(h:results())
    assert.equal("text 1", r[1].content)
    assert.equal("server", r[2].kind)
    assert.equal("text 3", r[3].content)
  end)

  it("gives the requests of an expired batch that never ran an error of kind expired", function()
    local h = assert(client:batch{ requests = chats(6), interval = 0.05,
      metadata = mock{ seconds = 0.2, expire = true, partial = 2 } })
    assert.equal("expired", h:wait{ timeout = 60 })
    local r = assert(h:results())
    assert.equal(6, #r)
    local ran, expired = 0, 0
    for i, x in ipairs(r) do
      if llmchat.is_error(x) then
        expired = expired + 1
        assert.equal("expired", x.kind)
        assert.equal("expired", x.batch_status)
        assert.equal(i, x.index)
        assert.equal(i .. "-" .. h.metadata.llmchat_order:match("^seq:(%w+):"), x.custom_id)
      else
        ran = ran + 1
        assert.equal("text " .. i, x.content)
      end
    end
    assert.equal(2, ran)
    assert.equal(4, expired)
  end)

  it("cancels: cancelling, cancelled, the rest of kind cancelled", function()
    local h = assert(client:batch{ requests = chats(4), interval = 0.05,
      metadata = mock{ seconds = 3, partial = 1 } })
    assert.equal("cancelling", h:cancel())
    assert.equal("cancelled", h:wait{ timeout = 60 })
    local r = assert(h:results())
    local kinds = {}
    for i, x in ipairs(r) do kinds[i] = llmchat.is_error(x) and x.kind or "ok" end
    table.sort(kinds)
    assert.same({ "cancelled", "cancelled", "cancelled", "ok" }, kinds)
    -- a finished batch: nothing to cancel, nothing sent
    local none, err = h:cancel()
    assert.is_nil(none)
    assert.equal("bad_request", err.kind)
    assert.matches("already cancelled", err.message)
  end)

  it("reports a failed validation as kind batch_failed with the provider's errors", function()
    local h = assert(client:batch{ requests = chats(2), interval = 0.05,
      metadata = mock{ validation = "model m does not support batches" } })
    assert.equal("failed", h:wait{ timeout = 60 })
    local none, err = h:results()
    assert.is_nil(none)
    assert.equal("batch_failed", err.kind)
    assert.matches("model m does not support batches %(line 1%)", err.message)
    assert.equal(1, #err.errors)
    none, err = h:each()
    assert.is_nil(none)
    assert.equal("batch_failed", err.kind)
  end)

  it("retries a 429 on upload", function()
    local key = "batch-upload-429-" .. os.time()
    local log = {}
    local logged = llmchat.client{ base_url = srv.url, api_key = "sk-batch-secret-key", model = "m",
      log = function(line) log[#log + 1] = line end }
    local h, err = logged:batch{ requests = chats(2), interval = 0.05, metadata = mock{ seconds = 0 },
      headers = { ["x-mock"] = json.encode{ key = key, fail_times = 1, status = 429,
        headers = { ["retry-after"] = "0" } } } }
    assert.is_nil(err)
    local uploads = {}
    for _, line in ipairs(log) do
      local st = line:match("POST http://[^ ]+/v1/files %-> (%d+)")
      if st then uploads[#uploads + 1] = tonumber(st) end
    end
    assert.same({ 429, 200 }, uploads)
    h:wait{ timeout = 60 }
    local r = assert(h:results())
    assert.equal("text 2", r[2].content)
    -- without retries the 429 is the answer
    local none
    none, err = client:batch{ requests = chats(1), max_retries = 0,
      headers = { ["x-mock"] = json.encode{ key = key .. "b", fail_times = 5, status = 429 } } }
    assert.is_nil(none)
    assert.equal("rate_limit", err.kind)
  end)

  it("resumes from a second client and from another process, in input order", function()
    local list = chats(5)
    list[3].custom_id = "own"
    local h1 = assert(client:batch{ requests = chats(5), metadata = mock{ seconds = 0 } })
    local h2 = assert(client:batch{ requests = list, metadata = mock{ seconds = 0 } })
    local other = llmchat.client{ base_url = srv.url, api_key = "sk-other" }
    for _, h in ipairs{ h1, h2 } do
      local again = assert(other:batch_resume(h.id))
      assert.equal(h.id, again.id)
      assert.equal("string", type(again.status))
      again:wait{ timeout = 60, interval = 0.05 }
      local r = assert(again:results())
      assert.equal(5, #r)
      for i, x in ipairs(r) do assert.equal("text " .. i, x.content) end
    end
    -- another process: generated ids (order from metadata) and the caller's (from the input file)
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
local llmchat = require("llmchat")
local c = llmchat.client{ base_url = arg[1], api_key = "sk-child" }
for i = 2, #arg do
  local h = assert(c:batch_resume(arg[i]))
  assert(h:wait{ timeout = 60, interval = 0.05 })
  local out = {}
  for n, r in assert(h:each()) do out[#out + 1] = n .. "=" .. (r.content or r.kind) end
  print(table.concat(out, ","))
end
]])
    f:close()
    local p = io.popen(("LUA_PATH='lua/?.lua;lua/?/init.lua;;' %s %s %s %s %s 2>&1"):format(CHILD, script,
      srv.url, h1.id, h2.id))
    local text = p:read("*a")
    p:close()
    os.remove(script)
    assert.equal("1=text 1,2=text 2,3=text 3,4=text 4,5=text 5\n"
      .. "1=text 1,2=text 2,3=text 3,4=text 4,5=text 5\n", text)
  end)

  it("refuses input over the provider's limits before upload", function()
    local before = stats().requests
    -- 50,001 requests: the default count limit, refused before anything is encoded
    local none, err
    do
      local many = {}
      for i = 1, 50001 do many[i] = { input = "x" } end
      none, err = client:batch{ requests = many, endpoint = "/v1/embeddings" }
    end
    assert.is_nil(none)
    assert.equal("bad_request", err.kind)
    assert.equal("requests", err.limit)
    assert.matches("50001 requests, over the provider's limit of 50000", err.message)
    -- a line over 10 MB
    none, err = client:batch{ requests = { { messages = { { role = "user",
      content = string.rep("a", 10 * 1024 * 1024) } } } } }
    assert.is_nil(none)
    assert.equal("line_bytes", err.limit)
    assert.matches("request 1 is %d+ bytes as a JSONL line, over the limit of 10485760 bytes", err.message)
    -- the file size (a lower limit, to stay quick)
    none, err = client:batch{ requests = chats(100), limits = { file_bytes = 5000 } }
    assert.is_nil(none)
    assert.equal("file_bytes", err.limit)
    assert.matches("the input file would exceed 5000 bytes", err.message)
    -- embedding inputs across the batch
    none, err = client:batch{ endpoint = "embeddings", limits = { embedding_inputs = 5 },
      requests = { { input = { "a", "b", "c" } }, { input = { "d", "e", "f" } } } }
    assert.is_nil(none)
    assert.equal("embedding_inputs", err.limit)
    -- no request, a non-table request, invalid UTF-8
    none, err = client:batch{ requests = {} }
    assert.is_nil(none)
    assert.matches("no requests", err.message)
    none, err = client:batch{ requests = { "hello" } }
    assert.is_nil(none)
    assert.matches("request 1 is a string, not a table", err.message)
    none, err = client:batch{ requests = { { messages = { { role = "user", content = "\255" } } } } }
    assert.is_nil(none)
    assert.equal("bad_request", err.kind)
    assert.matches("request 1:", err.message)
    assert.equal(before + 1, stats().requests)
    -- misuse raises
    assert.has_error(function() client:batch{ requests = 5 } end)
    assert.has_error(function() client:batch{ requests = {}, endpoint = "chat/completions" } end)
    assert.has_error(function() client:batch{ requests = {}, interval = -1 } end)
    assert.has_error(function() client:batch{ requests = {}, limits = { lines = 3 } } end)
    assert.has_error(function() client:batch_resume(nil) end)
    assert.has_error(function() client:batch_resume("a/b") end)
  end)

  it("reads requests from a JSONL file, in either form", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(json.encode{ custom_id = "first", method = "POST", url = "/v1/chat/completions",
      body = { model = "m", messages = { { role = "user", content = "line one" } } } }, "\n")
    f:write("\n")
    f:write(json.encode{ messages = { { role = "user", content = "line two" } } }, "\r\n")
    f:write(json.encode{ body = { messages = { { role = "user", content = "line three" } } } }, "\n")
    f:close()
    local h = assert(client:batch{ requests = path, interval = 0.05, metadata = mock{ seconds = 0 } })
    h:wait{ timeout = 60 }
    local r = assert(h:results())
    assert.same({ "line one", "line two", "line three" }, { r[1].content, r[2].content, r[3].content })
    assert.equal("first", r[1].custom_id)
    -- a line that is not JSON, a line for another endpoint
    f = assert(io.open(path, "w"))
    f:write(json.encode{ messages = {} }, "\n", "{nope\n")
    f:close()
    local none, err = client:batch{ requests = path }
    assert.is_nil(none)
    assert.matches("line 2 of .* is not a JSON object", err.message)
    f = assert(io.open(path, "w"))
    f:write(json.encode{ url = "/v1/embeddings", body = { input = "x" } }, "\n")
    f:close()
    none, err = client:batch{ requests = path }
    assert.is_nil(none)
    assert.matches("url /v1/embeddings is not the batch's endpoint /v1/chat/completions", err.message)
    os.remove(path)
    none, err = client:batch{ requests = path }
    assert.is_nil(none)
    assert.matches("cannot read", err.message)
  end)

  it("shapes Responses and embeddings results as the single calls do", function()
    local h = assert(client:batch{ endpoint = "/v1/responses", interval = 0.05, metadata = mock{ seconds = 0 },
      requests = { { input = "first answer" }, { input = "second answer", instructions = "be brief" } } })
    h:wait{ timeout = 60 }
    local r = assert(h:results())
    assert.equal("first answer", r[1].content)
    assert.equal("second answer", r[2].content)
    assert.equal("completed", r[1].status)
    assert.equal(200, r[1].http_status)
    local single = assert(client:respond{ input = "first answer" })
    assert.same(single.usage, r[1].usage)
    h = assert(client:batch{ endpoint = "embeddings", interval = 0.05, metadata = mock{ seconds = 0 },
      requests = { { input = { "a", "b" }, dimensions = 4 }, { input = "c", dimensions = 3 } } })
    h:wait{ timeout = 60 }
    r = assert(h:results())
    assert.equal(2, #r[1].vectors)
    assert.equal(4, #r[1].vectors[1])
    assert.equal(3, #r[2].vector)
    local e = assert(client:embed{ input = "c", dimensions = 3 })
    for i = 1, 3 do assert.is_true(math.abs(e.vector[i] - r[2].vector[i]) < 1e-6) end
  end)

  it("polls without blocking from a llmchat.poll loop", function()
    local progress = {}
    local h = assert(client:batch{ requests = chats(3), interval = 0.05, metadata = mock{ seconds = 1 },
      on_progress = function(status) progress[#progress + 1] = status end })
    local frames, slowest = 0, 0
    local deadline = core.now() + 60
    while not h.done and core.now() < deadline do
      local t0 = core.now()
      local status = h:poll()
      assert.equal(h.status, status)
      llmchat.poll(0)
      local dt = core.now() - t0
      if dt > slowest then slowest = dt end
      frames = frames + 1
      core.drive(0.005, false)  -- the frame's own work
    end
    assert.is_true(h.done)
    assert.equal("completed", h.status)
    assert.equal("completed", progress[#progress])
    -- a second's worth of frames went by while the batch ran, none of them waited on HTTP
    assert.is_true(frames > 20, "frames: " .. frames)
    assert.is_true(slowest < 0.5, "slowest frame: " .. slowest)
    -- the downloads from a coroutine, driven by the same frame loop
    local r
    llmchat.spawn(function() r = assert(h:results()) end)
    local spins = 0
    while not r and core.now() < deadline do
      llmchat.poll(0)
      spins = spins + 1
      core.drive(0.005, false)
    end
    assert.is_true(spins >= 2, "spins: " .. spins)  -- it did not finish within one poll
    assert.equal("text 1", r[1].content)
    -- a poll after the end starts nothing
    local before = stats().requests
    assert.equal("completed", h:poll())
    llmchat.poll(0)
    assert.equal(before + 1, stats().requests)
  end)

  it("waits by yielding inside llmchat.run, other coroutines keep running", function()
    local ticks, status, results = 0, nil, nil
    llmchat.run(function()
      local h = assert(client:batch{ requests = chats(2), interval = 0.05, metadata = mock{ seconds = 0.8 } })
      local done = false
      llmchat.spawn(function()
        while not done do ticks = ticks + 1; llmchat.sleep(0.02) end
      end)
      status = h:wait{ timeout = 60 }
      results = h:results()
      done = true
    end)
    assert.equal("completed", status)
    assert.equal("text 2", results[2].content)
    assert.is_true(ticks >= 10, "ticks: " .. ticks)
    -- h:poll() from a coroutine: it starts the GET and returns; the run loop completes it
    local polls, seen = 0, {}
    llmchat.run(function()
      local h = assert(client:batch{ requests = chats(2), interval = 0.05, metadata = mock{ seconds = 0.5 } })
      local deadline = core.now() + 60
      while not h.done and core.now() < deadline do
        local st = h:poll()
        if seen[#seen] ~= st then seen[#seen + 1] = st end
        polls = polls + 1
        llmchat.sleep(0.01)
      end
      if seen[#seen] ~= h.status then seen[#seen + 1] = h.status end
      results = h:results()
    end)
    assert.equal("completed", seen[#seen])
    assert.is_true(#seen >= 3, table.concat(seen, ","))
    assert.is_true(polls > 10, "polls: " .. polls)
    assert.equal("text 1", results[1].content)
  end)

  it("reads a batch made by another tool in its input order; unmatched lines are reported", function()
    local lines = {}
    for i, id in ipairs{ "zeta", "alpha", "mid" } do
      lines[i] = json.encode{ custom_id = id, method = "POST", url = "/v1/chat/completions",
        body = { model = "m", messages = { { role = "user", content = "foreign " .. i } } } }
    end
    local body, ctype = server.multipart{ { name = "purpose", value = "batch" },
      { name = "file", filename = "in.jsonl", data = table.concat(lines, "\n") .. "\n" } }
    local file = server.request(srv, "POST", "/v1/files", body, { ["content-type"] = ctype }).json
    local function create(metadata)
      return server.request(srv, "POST", "/v1/batches", { input_file_id = file.id,
        endpoint = "/v1/chat/completions", completion_window = "24h", metadata = metadata }).json
    end
    local h = assert(client:batch_resume(create({ mock = json.encode{ seconds = 0 } }).id))
    h:wait{ timeout = 60, interval = 0.05 }
    local r = assert(h:results())
    assert.same({ "foreign 1", "foreign 2", "foreign 3" }, { r[1].content, r[2].content, r[3].content })
    assert.same({ "zeta", "alpha", "mid" }, { r[1].custom_id, r[2].custom_id, r[3].custom_id })
    -- metadata that claims generated ids the file does not have: nothing placed, nothing lost
    h = assert(client:batch_resume(create({ mock = json.encode{ seconds = 0 },
      llmchat_order = "seq:abc123:3" }).id))
    h:wait{ timeout = 60, interval = 0.05 }
    r = assert(h:results())
    assert.equal(3, #r)
    for i, x in ipairs(r) do
      assert.equal("protocol", x.kind)
      assert.equal(i .. "-abc123", x.custom_id)
      assert.matches("in neither its output nor its error file", x.message)
    end
    table.sort(h.unmatched)
    assert.same({ "alpha", "mid", "zeta" }, h.unmatched)
  end)

  it("keeps waiting through transient refresh failures, stops at permanent ones", function()
    local h = assert(client:batch{ requests = chats(2), metadata = mock{ seconds = 0.5 } })
    local key = "batch-refresh-drop-" .. os.time()
    -- every refresh of this handle: dropped connections three times (no retries of their own)
    local flaky = assert(client:batch_resume(h.id, { max_retries = 0, interval = 0.05 }))
    flaky.request_opts.headers = { ["x-mock"] = json.encode{ key = key, fail_times = 3,
      drop = "before_headers" } }
    assert.equal("completed", flaky:wait{ timeout = 60 })
    assert.is_true(server.request(srv, "GET", "/_stats?key=" .. key).json.count >= 4)
    assert.equal("text 2", assert(flaky:results())[2].content)
    -- a 401 on refresh ends the wait at once
    h = assert(client:batch{ requests = chats(1), metadata = mock{ seconds = 30 } })
    local denied = assert(client:batch_resume(h.id))
    denied.request_opts.headers = { ["x-mock"] = json.encode{ status = 401 } }
    local t0 = core.now()
    local none, err = denied:wait{ timeout = 60, interval = 0.05 }
    assert.is_nil(none)
    assert.equal("auth", err.kind)
    assert.is_true(core.now() - t0 < 30)
    -- a 200 that is not a batch object
    none, err = client:batch_resume(h.id, { headers = { ["x-mock"] = json.encode{ body = '{"foo":1}' } } })
    assert.is_nil(none)
    assert.equal("protocol", err.kind)
    assert.matches("not a batch object", err.message)
    none, err = client:batch_resume(h.id, { headers = { ["x-mock"] = json.encode{ body = "<html>" } } })
    assert.is_nil(none)
    assert.equal("protocol", err.kind)
    assert.equal("cancelling", h:cancel())
  end)

  it("removes its upload when the batch cannot be created", function()
    local function file_count() return #server.request(srv, "GET", "/v1/files").json.data end
    local before = file_count()
    local none, err = client:batch{ requests = chats(2), completion_window = "1h" }
    assert.is_nil(none)
    assert.equal("bad_request", err.kind)
    assert.equal(400, err.status)
    assert.matches("completion_window", err.message)
    assert.equal(before, file_count())
  end)

  it("times a wait out with kind timeout, and lists batches page by page", function()
    local h = assert(client:batch{ requests = chats(1), metadata = mock{ seconds = 30 } })
    local t0 = core.now()
    local none, err = h:wait{ timeout = 0.3, interval = 0.05 }
    assert.is_nil(none)
    assert.equal("timeout", err.kind)
    assert.is_true(core.now() - t0 < 10)
    assert.matches("still %a+ after 0.3 s", err.message)
    none, err = h:results()
    assert.is_nil(none)
    assert.equal("not_ready", err.kind)
    assert.equal("cancelling", h:cancel())

    local page = assert(client:batches{ limit = 2 })
    assert.equal(2, #page.data)
    assert.equal(h.id, page.data[1].id)
    assert.is_true(page.has_more)
    assert.equal("cancelling", page.data[1].status)
    local next_page = assert(client:batches{ limit = 1, after = page.data[2].id })
    assert.equal(1, #next_page.data)
    assert.are_not.equal(page.data[2].id, next_page.data[1].id)
    assert.equal("table", type(next_page.data[1].request_counts))
    local missing
    missing, err = client:batch_resume("batch_nope")
    assert.is_nil(missing)
    assert.equal("not_found", err.kind)
  end)

  it("iterates a large batch line by line with bounded Lua memory", function()
    local n = 3000
    local filler = string.rep("lorem ipsum ", 30)
    local h = assert(client:batch{ requests = chats(n, filler), interval = 0.05, metadata = mock{ seconds = 0 } })
    h:wait{ timeout = 120 }
    assert.equal(n, h.request_counts.completed)
    collectgarbage("collect")
    local base = collectgarbage("count")
    local peak, count, first = -math.huge, 0, nil
    for i, r in assert(h:each()) do
      count = count + 1
      assert.equal(count, i)
      assert.equal(filler .. i, r.content)
      if i % 250 == 0 then
        collectgarbage("collect")
        local m = collectgarbage("count") - base
        if m > peak then peak = m end
        first = first or m
      end
    end
    assert.equal(n, count)
    collectgarbage("collect")
    base = collectgarbage("count")
    local held
    do
      local all = assert(h:results())
      collectgarbage("collect")
      held = collectgarbage("count") - base
      assert.equal(n, #all)
      assert.equal(filler .. n, all[n].content)
    end
    -- each() holds an index of positions; results() holds every result
    assert.is_true(math.max(peak, 0) * 8 < held, ("each peak %.0f KB, results %.0f KB"):format(peak, held))
    -- and it does not grow as the loop goes
    assert.is_true(peak - first < 256, ("each: %.0f KB at line 250, %.0f KB at most"):format(first, peak))
    -- a loop left early: close() removes the downloaded files
    local it
    local made = tmp_files(function() it = assert(h:each()) end)
    assert.equal(1, #made)
    assert.is_true(exists(made[1]))
    local i1, r1 = it()
    assert.equal(1, i1)
    assert.equal(filler .. 1, r1.content)
    it:close()
    assert.is_false(exists(made[1]))
    assert.is_nil(it())
  end)
end)

-- The shaping of single lines, for forms the local server does not write (OpenAI's error
-- file lines for requests an expired or cancelled batch never ran, odd lines).
describe("llmchat.batch.output shapes lines", function()
  local output = require("llmchat.batch.output")
  local endpoints = require("llmchat.endpoints")

  it("maps error-file lines without a response to kinds", function()
    local cases = {
      { "batch_expired", "expired" }, { "batch_cancelled", "cancelled" },
      { "request_timeout", "timeout" }, { "something_else", "server" },
    }
    for _, c in ipairs(cases) do
      local res, err = output.shape({ id = "batch_req_1", custom_id = "x", response = json.null,
        error = { code = c[1], message = "m " .. c[1] } }, endpoints.chat, "sk-secret")
      assert.is_nil(res)
      assert.equal(c[2], err.kind)
      assert.equal(c[1], err.code)
      assert.equal("x", err.custom_id)
      assert.equal("m " .. c[1], err.message)
    end
  end)

  it("refuses lines that are not results, scrubs the key from errors", function()
    local _, err = output.shape("nope", endpoints.chat)
    assert.equal("protocol", err.kind)
    _, err = output.shape({ custom_id = "x" }, endpoints.chat)
    assert.equal("protocol", err.kind)
    assert.matches("neither a response nor an error", err.message)
    _, err = output.shape({ custom_id = "x", response = { status_code = 200, body = "text" } }, endpoints.chat)
    assert.equal("protocol", err.kind)
    _, err = output.shape({ custom_id = "x", response = { status_code = 401,
      body = { error = { message = "bad key sk-secret-123456", code = "invalid_api_key" } } } },
      endpoints.chat, "sk-secret-123456")
    assert.equal("auth", err.kind)
    assert.equal("invalid_api_key", err.code)
    assert.is_nil(tostring(err):find("sk-secret-123456", 1, true))
    -- an error object under a 2xx status is an error, as for a single call
    _, err = output.shape({ custom_id = "x", response = { status_code = 200,
      body = { error = { message = "upstream", code = 502 } } } }, endpoints.chat)
    assert.equal("server", err.kind)
    -- an endpoint llmchat does not shape: the body as it is
    local res = output.shape({ custom_id = "y", response = { status_code = 200,
      body = { results = { { flagged = false } } } } }, nil)
    assert.is_false(res.results[1].flagged)
    assert.equal("y", res.custom_id)
  end)
end)
