-- luacheck: std +busted
-- The local server's /v1/files and /v1/batches: upload, states over time, shuffled output,
-- failed and missing lines, cancel, expiry, failed validation, a 429 on upload.
local cjson = require("cjson")
local socket = require("socket")
local server = require("support.server")

describe("llmchat-server files and batches", function()
  local srv

  lazy_setup(function() srv = server.start{ args = { "--batch-seconds", "0.4" } } end)
  lazy_teardown(function() if srv then srv.stop() end end)

  local function line(id, text, extra, url)
    local body = { model = "m", messages = { { role = "user", content = text } } }
    for k, v in pairs(extra or {}) do body[k] = v end
    return cjson.encode{ custom_id = id, method = "POST", url = url or "/v1/chat/completions",
      body = body }
  end

  local function upload(lines, purpose, headers)
    local body, ctype = server.multipart{ { name = "purpose", value = purpose or "batch" },
      { name = "file", filename = "in.jsonl", data = table.concat(lines, "\n") .. "\n" } }
    local h = { ["content-type"] = ctype }
    for k, v in pairs(headers or {}) do h[k] = v end
    return assert(server.request(srv, "POST", "/v1/files", body, h))
  end

  local function create(file_id, endpoint, mock)
    return assert(server.request(srv, "POST", "/v1/batches", { input_file_id = file_id,
      endpoint = endpoint or "/v1/chat/completions", completion_window = "24h",
      metadata = { job = "spec", mock = mock and cjson.encode(mock) or nil } }))
  end

  local function get(path) return assert(server.request(srv, "GET", path)) end

  -- poll until the batch reaches one of the statuses (generous bound for loaded machines)
  local progress -- request_counts.completed + failed seen while in_progress, by wait_for
  local function wait_for(id, statuses, timeout)
    local seen = {}
    progress = {}
    local deadline = socket.gettime() + (timeout or 30)
    while socket.gettime() < deadline do
      local b = get("/v1/batches/" .. id).json
      if seen[#seen] ~= b.status then seen[#seen + 1] = b.status end
      if b.status == "in_progress" then
        progress[#progress + 1] = b.request_counts.completed + b.request_counts.failed
      end
      for _, s in ipairs(statuses) do if b.status == s then return b, seen end end
      socket.sleep(0.05)
    end
    error("batch " .. id .. " never reached " .. table.concat(statuses, "/") .. "; saw "
      .. table.concat(seen, ","))
  end

  local function jsonl(file_id)
    if file_id == cjson.null then return {} end
    local res = get("/v1/files/" .. file_id .. "/content")
    assert.equal(200, res.status)
    local out = {}
    for l in res.body:gmatch("[^\n]+") do out[#out + 1] = cjson.decode(l) end
    return out
  end

  it("uploads, lists, reads and deletes files", function()
    local res = upload{ line("a", "one") }
    assert.equal(200, res.status)
    local f = res.json
    assert.matches("^file%-", f.id)
    assert.equal("file", f.object)
    assert.equal("batch", f.purpose)
    assert.equal("in.jsonl", f.filename)
    assert.equal(#line("a", "one") + 1, f.bytes)
    assert.equal(math.floor(f.created_at), f.created_at)
    assert.same(f, get("/v1/files/" .. f.id).json)
    assert.equal(line("a", "one") .. "\n", get("/v1/files/" .. f.id .. "/content").body)
    local list = get("/v1/files").json
    assert.equal("list", list.object)
    local found = false
    for _, x in ipairs(list.data) do if x.id == f.id then found = true end end
    assert.is_true(found)
    local del = assert(server.request(srv, "DELETE", "/v1/files/" .. f.id))
    assert.same({ id = f.id, object = "file", deleted = true }, del.json)
    assert.equal(404, get("/v1/files/" .. f.id).status)
    assert.equal(404, get("/v1/files/" .. f.id .. "/content").status)
  end)

  it("refuses malformed uploads", function()
    local res = upload{ "not json" }
    assert.equal(400, res.status)
    assert.equal("invalid_file_format", res.json.error.code)
    res = upload{ cjson.encode{ custom_id = "a", method = "GET", url = "/v1/chat/completions", body = {} } }
    assert.equal(400, res.status)
    res = upload{ cjson.encode{ method = "POST", url = "/v1/chat/completions", body = {} } }
    assert.equal(400, res.status)
    assert.matches("custom_id", res.json.error.message)
    res = upload({ line("a", "x") }, "nonsense")
    assert.equal(400, res.status)
    assert.equal("purpose", res.json.error.param)
    res = assert(server.request(srv, "POST", "/v1/files", "{}"))
    assert.equal(400, res.status)
  end)

  it("answers a 429 on upload through the x-mock header, then accepts it", function()
    local mock = cjson.encode{ key = "upload-429", fail_times = 1, status = 429,
      headers = { ["retry-after"] = "1" } }
    local res = upload({ line("a", "x") }, "batch", { ["x-mock"] = mock })
    assert.equal(429, res.status)
    assert.equal("1", res.headers["retry-after"])
    res = upload({ line("a", "x") }, "batch", { ["x-mock"] = mock })
    assert.equal(200, res.status)
  end)

  it("runs a batch through validating, in_progress, finalizing to completed", function()
    local lines = {}
    for i = 1, 12 do lines[i] = line("req-" .. i, "text " .. i) end
    lines[13] = line("bad-1", "x", { mock = { status = 400 } })
    lines[14] = line("bad-2", "x", { mock = { status = 500 } })
    local f = upload(lines).json
    local res = create(f.id, nil, { seconds = 3 })
    assert.equal(200, res.status)
    local b = res.json
    assert.matches("^batch_", b.id)
    assert.equal("batch", b.object)
    assert.equal("validating", b.status)
    assert.equal(f.id, b.input_file_id)
    assert.equal("24h", b.completion_window)
    assert.equal("spec", b.metadata.job)
    assert.equal(14, b.request_counts.total)
    assert.equal(cjson.null, b.output_file_id)
    local done, seen = wait_for(b.id, { "completed" })
    assert.same({ "validating", "in_progress", "finalizing", "completed" }, seen)
    assert.same({ total = 14, completed = 12, failed = 2 }, done.request_counts)
    -- the counts grew while in progress, never backwards
    local between = false
    for i, n in ipairs(progress) do
      if i > 1 then assert.is_true(n >= progress[i - 1]) end
      if n > 0 and n < 14 then between = true end
    end
    assert.is_true(between, table.concat(progress, ","))
    for _, k in ipairs{ "in_progress_at", "finalizing_at", "completed_at" } do
      assert.is_true(done[k] >= done.created_at, k)
    end
    local out, errs = jsonl(done.output_file_id), jsonl(done.error_file_id)
    assert.equal(12, #out)
    assert.equal(2, #errs)
    local order, by_id = {}, {}
    for i, r in ipairs(out) do
      order[i] = r.custom_id
      by_id[r.custom_id] = r
      assert.matches("^batch_req_", r.id)
      assert.equal(200, r.response.status_code)
      assert.equal(cjson.null, r.error)
    end
    local input_order = {}
    for i = 1, 12 do input_order[i] = "req-" .. i end
    assert.are_not.same(input_order, order) -- shuffled
    for i = 1, 12 do
      assert.equal("text " .. i, by_id["req-" .. i].response.body.choices[1].message.content)
    end
    local failed = {}
    for _, r in ipairs(errs) do failed[r.custom_id] = r.response.status_code end
    assert.same({ ["bad-1"] = 400, ["bad-2"] = 500 }, failed)
    -- and the list endpoint shows it, newest first
    local list = get("/v1/batches?limit=1").json
    assert.equal("list", list.object)
    assert.equal(1, #list.data)
  end)

  it("runs responses and embeddings batches", function()
    local f = upload{ cjson.encode{ custom_id = "r1", method = "POST", url = "/v1/responses",
      body = { model = "m", input = "via responses" } } }.json
    local b = wait_for(create(f.id, "/v1/responses", { seconds = 0 }).json.id, { "completed" })
    local r = jsonl(b.output_file_id)[1]
    assert.equal("via responses", r.response.body.output[1].content[1].text)
    f = upload{ cjson.encode{ custom_id = "e1", method = "POST", url = "/v1/embeddings",
      body = { model = "m", input = { "a", "b" }, dimensions = 4 } } }.json
    b = wait_for(create(f.id, "/v1/embeddings", { seconds = 0 }).json.id, { "completed" })
    r = jsonl(b.output_file_id)[1]
    assert.equal(2, #r.response.body.data)
    assert.equal(4, #r.response.body.data[1].embedding)
  end)

  it("fails lines chosen by the batch mock", function()
    local lines = {}
    for i = 1, 6 do lines[i] = line("l" .. i, "t" .. i) end
    local f = upload(lines).json
    local b = wait_for(create(f.id, nil, { seconds = 0, fail = { l2 = 429 }, fail_every = 3 }).json.id,
      { "completed" })
    assert.same({ total = 6, completed = 3, failed = 3 }, b.request_counts)
    local failed = {}
    for _, r in ipairs(jsonl(b.error_file_id)) do failed[r.custom_id] = r.response.status_code end
    assert.same({ l2 = 429, l3 = 500, l6 = 500 }, failed)
    -- failed_to_output: the failures go to the output file instead
    b = wait_for(create(f.id, nil, { seconds = 0, fail = { "l1" }, failed_to_output = true }).json.id,
      { "completed" })
    assert.equal(cjson.null, b.error_file_id)
    assert.equal(6, #jsonl(b.output_file_id))
  end)

  it("expires with partial output, lines missing from both files", function()
    local lines = {}
    for i = 1, 6 do lines[i] = line("l" .. i, "t" .. i) end
    local f = upload(lines).json
    local b = wait_for(create(f.id, nil, { seconds = 0.3, expire = true, partial = 2 }).json.id,
      { "expired", "completed" })
    assert.equal("expired", b.status)
    assert.is_true(b.expired_at >= b.created_at)
    assert.equal(cjson.null, b.completed_at)
    assert.equal(2, #jsonl(b.output_file_id) + #jsonl(b.error_file_id))
    assert.same({ total = 6, completed = 2, failed = 0 }, b.request_counts)
  end)

  it("cancels: cancelling, then cancelled with partial output", function()
    local lines = {}
    for i = 1, 4 do lines[i] = line("l" .. i, "t" .. i) end
    local f = upload(lines).json
    local b = create(f.id, nil, { seconds = 3, partial = 1 }).json
    local res = assert(server.request(srv, "POST", "/v1/batches/" .. b.id .. "/cancel", ""))
    assert.equal(200, res.status)
    assert.equal("cancelling", res.json.status)
    assert.is_true(res.json.cancelling_at >= b.created_at)
    local done = wait_for(b.id, { "cancelled" })
    assert.equal(1, #jsonl(done.output_file_id))
    assert.same({ total = 4, completed = 1, failed = 0 }, done.request_counts)
    -- by default, a cancelled batch keeps the lines done when it was cancelled
    local many = {}
    for i = 1, 40 do many[i] = line("m" .. i, "t" .. i) end
    f = upload(many).json
    b = create(f.id, nil, { seconds = 4 }).json
    local counts
    repeat
      socket.sleep(0.05)
      counts = get("/v1/batches/" .. b.id).json.request_counts
    until counts.completed > 0
    res = assert(server.request(srv, "POST", "/v1/batches/" .. b.id .. "/cancel", ""))
    local at_cancel = res.json.request_counts.completed
    assert.is_true(at_cancel > 0 and at_cancel < 40, tostring(at_cancel))
    local cancelled = wait_for(b.id, { "cancelled" })
    assert.equal(at_cancel, #jsonl(cancelled.output_file_id))
    assert.equal(at_cancel, cancelled.request_counts.completed)
    -- a finished batch cannot be cancelled
    res = assert(server.request(srv, "POST", "/v1/batches/" .. b.id .. "/cancel", ""))
    assert.equal(409, res.status)
  end)

  it("fails validation: status failed with errors.data", function()
    local f = upload{ line("a", "x"), line("a", "y"), line("c", "z", nil, "/v1/embeddings") }.json
    local b = wait_for(create(f.id).json.id, { "failed", "completed" })
    assert.equal("failed", b.status)
    assert.is_true(b.failed_at >= b.created_at)
    local codes = {}
    for _, e in ipairs(b.errors.data) do codes[#codes + 1] = string.format("%s@%d", e.code, e.line) end
    assert.same({ "duplicate_custom_id@2", "invalid_url@3" }, codes)
    assert.equal(cjson.null, b.output_file_id)
    f = upload{ line("a", "x") }.json
    b = wait_for(create(f.id, nil, { validation = "bad model" }).json.id, { "failed", "completed" })
    assert.equal("failed", b.status)
    assert.equal("bad model", b.errors.data[1].message)
  end)

  it("refuses bad batch requests", function()
    local f = upload{ line("a", "x") }.json
    local function post(body) return assert(server.request(srv, "POST", "/v1/batches", body)) end
    assert.equal(400, post{ endpoint = "/v1/chat/completions", completion_window = "24h" }.status)
    assert.equal(404, post{ input_file_id = "file-nope", endpoint = "/v1/chat/completions",
      completion_window = "24h" }.status)
    assert.equal(400, post{ input_file_id = f.id, endpoint = "/v1/nope", completion_window = "24h" }.status)
    assert.equal(400, post{ input_file_id = f.id, endpoint = "/v1/chat/completions",
      completion_window = "1h" }.status)
    assert.equal(404, get("/v1/batches/batch_nope").status)
  end)

  it("pages the batch list with limit and after", function()
    local f = upload{ line("a", "x") }.json
    local ids = {}
    for i = 1, 3 do ids[i] = create(f.id, nil, { seconds = 0 }).json.id end
    local page = get("/v1/batches?limit=2").json
    assert.same({ ids[3], ids[2] }, { page.data[1].id, page.data[2].id })
    assert.is_true(page.has_more)
    assert.equal(ids[2], page.last_id)
    page = get("/v1/batches?limit=1&after=" .. ids[2]).json
    assert.equal(ids[1], page.data[1].id)
  end)
end)
