--- llmchat.testing.store: /v1/files and /v1/batches, in memory.
--
-- A batch moves validating -> in_progress -> finalizing -> completed over `seconds` (the
-- server's batch_seconds, or metadata.mock.seconds); its state is computed from the clock
-- whenever it is looked at. When it finishes, each line runs through the same model as the
-- single endpoints, and the output and error files are written in a shuffled order.
local socket = require("socket")
local json = require("llmchat.testing.json")
local http = require("llmchat.testing.http")
local util = require("llmchat.testing.util")
local model = require("llmchat.testing.model")
local scenario = require("llmchat.testing.scenario")
local responses = require("llmchat.testing.responses")
local embeddings = require("llmchat.testing.embeddings")
local Exchange = require("llmchat.testing.writers")

local sformat, concat = string.format, table.concat
local floor = math.floor
local gettime = socket.gettime
local is_str, is_tab, num, status_of = util.is_str, util.is_tab, util.num, util.status_of
local array, NULL = json.array, json.null

local M = {}

M.RANK = json.rank{ "error", "id", "object", "bytes", "endpoint", "errors", "input_file_id",
  "completion_window", "status", "output_file_id", "error_file_id", "created_at",
  "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
  "cancelling_at", "cancelled_at", "request_counts", "total", "completed", "failed",
  "filename", "purpose", "status_details", "metadata", "deleted", "data", "first_id",
  "last_id", "has_more", "custom_id", "response", "status_code", "request_id", "body",
  "code", "message", "param", "line", "type" }

M.ENDPOINTS = { ["/v1/chat/completions"] = true, ["/v1/responses"] = true,
  ["/v1/embeddings"] = true }
local PURPOSES = { batch = true, ["fine-tune"] = true, assistants = true, vision = true,
  user_data = true, evals = true, batch_output = true }

function M.new(opts)
  return { files = { by_id = {}, order = {} }, batches = { by_id = {}, order = {} },
    batch_seconds = opts and opts.batch_seconds or 1, files_made = 0, batches_made = 0 }
end

---------------------------------------------------------------------------------------------
-- Files
---------------------------------------------------------------------------------------------
local function add_file(store, filename, purpose, data)
  store.files_made = store.files_made + 1
  local f = { id = sformat("file-llmchat%06d", store.files_made), object = "file",
    bytes = #data, created_at = os.time(), filename = filename, purpose = purpose,
    status = "processed", expires_at = NULL, status_details = NULL }
  store.files.by_id[f.id] = { object = f, data = data }
  store.files.order[#store.files.order + 1] = f.id
  return f
end

-- The lines of a batch input file: a list of {custom_id, method, url, body, line}, or nil and
-- a message naming the line.
function M.parse_batch_lines(data)
  local lines, n = {}, 0
  for text in (data .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    text = text:gsub("\r$", "")
    if text:match("%S") then
      local obj, err = json.decode(text)
      if not is_tab(obj) then
        return nil, sformat("line %d is not a JSON object (%s)", n, err or "not an object")
      end
      if not is_str(obj.custom_id) or obj.custom_id == "" then
        return nil, sformat("line %d: 'custom_id' must be a non-empty string", n)
      end
      if obj.method ~= "POST" then return nil, sformat("line %d: 'method' must be \"POST\"", n) end
      if not is_str(obj.url) then return nil, sformat("line %d: 'url' must be a string", n) end
      if not is_tab(obj.body) then return nil, sformat("line %d: 'body' must be an object", n) end
      obj.line = n
      lines[#lines + 1] = obj
    end
  end
  if #lines == 0 then return nil, "the file has no requests" end
  return lines
end

local function file_not_found(self, id)
  return self:send_error(404, "No such File object: " .. id, "invalid_request_error", NULL, "id")
end

function Exchange:upload_file()
  local store = self.srv.store
  local parts, err = http.parse_multipart(self.req.headers["content-type"], self.req.body)
  if not parts then return self:send_error(400, "Invalid upload: " .. err, "invalid_request_error",
    "invalid_multipart") end
  local purpose, file
  for _, p in ipairs(parts) do
    if p.name == "purpose" then purpose = p.data
    elseif p.name == "file" then file = p end
  end
  if not purpose then
    return self:send_error(400, "Missing required parameter: 'purpose'.", "invalid_request_error",
      "missing_required_parameter", "purpose")
  end
  if not PURPOSES[purpose] then
    return self:send_error(400, "Invalid value for 'purpose': '" .. purpose .. "'.",
      "invalid_request_error", "invalid_value", "purpose")
  end
  if not file then
    return self:send_error(400, "Missing required parameter: 'file'.", "invalid_request_error",
      "missing_required_parameter", "file")
  end
  if purpose == "batch" then
    local _, lerr = M.parse_batch_lines(file.data)
    if lerr then
      return self:send_error(400, "Invalid file format for Batch API: " .. lerr,
        "invalid_request_error", "invalid_file_format", "file")
    end
  end
  return self:send_json(200, add_file(store, file.filename or "upload", purpose, file.data), M.RANK)
end

function Exchange:files(id, sub)
  local store, method = self.srv.store, self.req.method
  if not id then
    if method == "POST" then return self:upload_file() end
    if method ~= "GET" then return self:not_found() end
    local purpose = http.parse_query(self.req.query).purpose
    local data = array()
    for i = #store.files.order, 1, -1 do
      local f = store.files.by_id[store.files.order[i]]
      if f and (not purpose or f.object.purpose == purpose) then data[#data + 1] = f.object end
    end
    return self:send_json(200, { object = "list", data = data, has_more = false,
      first_id = data[1] and data[1].id or NULL, last_id = data[#data] and data[#data].id or NULL },
      M.RANK)
  end
  local f = store.files.by_id[id]
  if sub == "content" and method == "GET" then
    if not f then return file_not_found(self, id) end
    return self:send_full(200, f.data, "application/octet-stream")
  end
  if sub then return self:not_found() end
  if method == "GET" then
    if not f then return file_not_found(self, id) end
    return self:send_json(200, f.object, M.RANK)
  end
  if method == "DELETE" then
    if not f then return file_not_found(self, id) end
    store.files.by_id[id] = nil
    for i, fid in ipairs(store.files.order) do
      if fid == id then table.remove(store.files.order, i); break end
    end
    return self:send_json(200, { id = id, object = "file", deleted = true }, M.RANK)
  end
  return self:not_found()
end

---------------------------------------------------------------------------------------------
-- Batches: running the lines
---------------------------------------------------------------------------------------------

-- One line through the model: status code and body.
local function run_line(srv, endpoint, line, n)
  local body = line.body
  local mock = is_tab(body.mock) and body.mock or {}
  local name = is_str(mock.model) and mock.model or (is_str(body.model) and body.model)
  if mock.echo_auth == true then return 502, { error = { message = "upstream error",
    type = "upstream_error", code = 502 } } end
  if mock.error ~= nil and mock.error ~= NULL then
    local e = is_tab(mock.error) and mock.error or { message = tostring(mock.error),
      type = "server_error", code = NULL }
    return status_of(mock.status) or 500, { error = e }
  end
  local status = status_of(mock.status)
  if status and status >= 400 then return status, { error = scenario.status_error(status) } end
  local function bad(err) return 400, { error = { message = err.message,
    type = "invalid_request_error", param = err.param or NULL, code = err.code or NULL } } end
  if endpoint == "/v1/chat/completions" then
    if not is_tab(body.messages) then
      return bad{ message = "Missing required parameter: 'messages'.", param = "messages",
        code = "missing_required_parameter" }
    end
    local specs, entry = model.choice_specs(body, mock)
    return 200, model.completion({ id = sformat("chatcmpl-llmchatb%06d", n), created = os.time(),
      model = name or "llmchat-echo",
      prompt_tokens = util.tokens(model.prompt_bytes(body.messages)) }, specs, entry)
  elseif endpoint == "/v1/responses" then
    local answer, _, err = responses.answer(body, mock, { id = n, created = os.time(),
      model = name or "llmchat-echo", store = srv.responses })
    if not answer then return bad(err) end
    responses.remember(srv.responses, answer)
    return 200, answer.response, responses.RANK
  else
    local obj, _, err = embeddings.answer(body, name or "llmchat-embed")
    if not obj then return bad(err) end
    return 200, obj, embeddings.RANK
  end
end

-- Deterministic shuffle (never the identity for two lines or more).
local function shuffle(list, seed)
  local n = #list
  local before = {}
  for i = 1, n do before[i] = list[i] end
  for i = n, 2, -1 do
    local j = util.hash_int(i, seed, i) + 1
    list[i], list[j] = list[j], list[i]
  end
  if n >= 2 then
    local same = true
    for i = 1, n do if list[i] ~= before[i] then same = false; break end end
    if same then list[1], list[2] = list[2], list[1] end
  end
  return list
end

-- Which lines fail by the batch mock: fail = {custom_id = status} or {custom_id, ...},
-- fail_every = N (every Nth line, with fail_status).
local function forced_failure(mock, line, n)
  local fail = mock.fail
  if is_tab(fail) then
    local s = fail[line.custom_id]
    if s ~= nil then return status_of(s) or 500 end
    for _, id in ipairs(fail) do if id == line.custom_id then return status_of(mock.fail_status) or 500 end end
  end
  local every = num(mock.fail_every)
  if every and every >= 1 and n % floor(every) == 0 then return status_of(mock.fail_status) or 500 end
end

local RECORD_NAMES = { "id", "custom_id", "response", "status_code", "request_id", "body", "error" }

-- The outcome of line n ({status, text}), computed once: the model is deterministic, so
-- running a line early (for the progress counts) gives what the output file will hold.
local function outcome(srv, b, n)
  b.outcomes = b.outcomes or {}
  local done = b.outcomes[n]
  if done then return done end
  local line = b.lines[n]
  local forced = forced_failure(b.mock, line, n)
  local status, body, rank
  if forced then
    status, body = forced, { error = scenario.status_error(forced) }
  else
    status, body, rank = run_line(srv, b.object.endpoint, line, n)
  end
  local record = { id = sformat("batch_req_%s_%d", b.object.id:sub(7), n),
    custom_id = line.custom_id, response = { status_code = status,
      request_id = sformat("req_%s_%d", b.object.id, n), body = body }, error = NULL }
  done = { status = status, text = json.encode(record, json.rank(RECORD_NAMES, rank or json.CHAT_RANK)) }
  b.outcomes[n] = done
  return done
end

-- request_counts after the first `count` lines.
local function count_lines(srv, b, count)
  local completed, failed = 0, 0
  for n = 1, count do
    if outcome(srv, b, n).status < 400 then completed = completed + 1 else failed = failed + 1 end
  end
  b.object.request_counts = { total = #b.lines, completed = completed, failed = failed }
end

-- Run the first `count` lines and write the output and error files.
local function run_batch(srv, b, count)
  local store = srv.store
  local out, errs = {}, {}
  for n = 1, count do
    local o = outcome(srv, b, n)
    local item = { n = n, text = o.text }
    if o.status < 400 or b.mock.failed_to_output == true then out[#out + 1] = item
    else errs[#errs + 1] = item end
  end
  local function write(list, suffix)
    if #list == 0 then return NULL end
    shuffle(list, b.object.id)
    local texts = {}
    for i, r in ipairs(list) do texts[i] = r.text end
    return add_file(store, b.object.id .. suffix, "batch_output", concat(texts, "\n") .. "\n").id
  end
  b.object.output_file_id = write(out, "_output.jsonl")
  b.object.error_file_id = write(errs, "_error.jsonl")
  count_lines(srv, b, count)
  b.outcomes = nil
end

local function stamp(b, at) return b.created_at + floor(at - b.t0) end

-- How many lines an expired batch (or, cancelled = true, a cancelled one) processed.
local function partial_count(b, cancelled)
  local p = num(b.mock.partial)
  if p then return math.max(0, math.min(#b.lines, floor(p))) end
  if cancelled then return b.done_lines or 0 end
  return floor(#b.lines / 2)
end

local function expiring(b)
  return b.mock.expire ~= nil and b.mock.expire ~= false and b.mock.expire ~= NULL
end

-- Bring a batch's status up to the clock.
local function refresh(srv, b)
  local o, now, T = b.object, gettime(), b.seconds
  if b.final then return end
  local t_ip, t_fin, t_done = b.t0 + T * 0.2, b.t0 + T * 0.6, b.t0 + T
  if b.cancel_at then
    if now >= b.cancel_at + T * 0.2 then
      run_batch(srv, b, partial_count(b, true))
      o.status, o.cancelled_at = "cancelled", stamp(b, now)
      b.final = true
    end
    return
  end
  if now >= t_ip then
    if b.validation_errors then
      o.status, o.failed_at = "failed", stamp(b, t_ip)
      o.errors = { object = "list", data = b.validation_errors }
      b.final = true
      return
    end
    o.status, o.in_progress_at = "in_progress", stamp(b, t_ip)
    -- lines finish steadily while in progress (all of them by finalizing)
    local share = t_fin > t_ip and (now - t_ip) / (t_fin - t_ip) or 1
    local limit = expiring(b) and partial_count(b) or #b.lines
    b.done_lines = math.min(limit, floor(#b.lines * math.min(1, share)))
    count_lines(srv, b, b.done_lines)
  end
  if expiring(b) and now >= t_done then
    run_batch(srv, b, partial_count(b))
    o.status, o.expired_at = "expired", stamp(b, t_done)
    b.final = true
    return
  end
  if now >= t_fin and not expiring(b) then o.status, o.finalizing_at = "finalizing", stamp(b, t_fin) end
  if now >= t_done and not expiring(b) then
    run_batch(srv, b, #b.lines)
    o.status, o.completed_at = "completed", stamp(b, t_done)
    b.final = true
  end
end

-- Checks of the validating phase: errors as OpenAI lists them, or nil.
local function validate(b, mock)
  local errors = array()
  if mock.validation ~= nil and mock.validation ~= false and mock.validation ~= NULL then
    errors[1] = { code = "invalid_request", line = 1, param = NULL,
      message = is_str(mock.validation) and mock.validation or "mock validation failure" }
    return errors
  end
  local seen = {}
  for _, line in ipairs(b.lines) do
    if line.url ~= b.object.endpoint then
      errors[#errors + 1] = { code = "invalid_url", line = line.line, param = "url",
        message = "The URL provided for this request does not match the batch endpoint." }
    elseif seen[line.custom_id] then
      errors[#errors + 1] = { code = "duplicate_custom_id", line = line.line, param = "custom_id",
        message = "The custom_id for this request is a duplicate of another request." }
    end
    seen[line.custom_id] = true
  end
  if #errors > 0 then return errors end
end

local function batch_mock(metadata)
  local m = is_tab(metadata) and metadata.mock
  if is_str(m) then m = json.decode(m) end
  return is_tab(m) and m or {}
end

function Exchange:create_batch()
  local store = self.srv.store
  local body = self:json_body()
  if not body then return end
  self:resolve_mock(body)
  if self:before_response() then return end
  local function bad(message, param, code)
    return self:send_error(400, message, "invalid_request_error", code or "invalid_value", param)
  end
  if not is_str(body.input_file_id) then
    return bad("Missing required parameter: 'input_file_id'.", "input_file_id",
      "missing_required_parameter")
  end
  if not M.ENDPOINTS[body.endpoint] then
    return bad("Invalid value for 'endpoint': expected one of /v1/chat/completions, "
      .. "/v1/responses, /v1/embeddings.", "endpoint")
  end
  if body.completion_window ~= "24h" then
    return bad("Invalid value for 'completion_window': expected '24h'.", "completion_window")
  end
  if body.metadata ~= nil and body.metadata ~= NULL and not is_tab(body.metadata) then
    return bad("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
  end
  local f = store.files.by_id[body.input_file_id]
  if not f then
    return self:send_error(404, "No such File object: " .. body.input_file_id,
      "invalid_request_error", NULL, "input_file_id")
  end
  if f.object.purpose ~= "batch" then
    return bad("The input file must have purpose 'batch'.", "input_file_id")
  end
  local lines = M.parse_batch_lines(f.data) or {}
  local mock = batch_mock(body.metadata)
  store.batches_made = store.batches_made + 1
  local now = os.time()
  local o = { id = sformat("batch_llmchat%06d", store.batches_made), object = "batch",
    endpoint = body.endpoint, errors = NULL, input_file_id = body.input_file_id,
    completion_window = "24h", status = "validating", output_file_id = NULL,
    error_file_id = NULL, created_at = now, in_progress_at = NULL, expires_at = now + 86400,
    finalizing_at = NULL, completed_at = NULL, failed_at = NULL, expired_at = NULL,
    cancelling_at = NULL, cancelled_at = NULL,
    request_counts = { total = 0, completed = 0, failed = 0 },
    metadata = is_tab(body.metadata) and body.metadata or NULL }
  local b = { object = o, lines = lines, mock = mock, t0 = gettime(), created_at = now,
    seconds = math.max(0, num(mock.seconds) or store.batch_seconds) }
  b.validation_errors = validate(b, mock)
  if not b.validation_errors then o.request_counts.total = #lines end
  store.batches.by_id[o.id] = b
  store.batches.order[#store.batches.order + 1] = o.id
  refresh(self.srv, b)
  return self:send_json(200, o, M.RANK)
end

function Exchange:batches(id, sub)
  local srv, method = self.srv, self.req.method
  local store = srv.store
  if not id then
    if method == "POST" then return self:create_batch() end
    if method ~= "GET" then return self:not_found() end
    local q = http.parse_query(self.req.query)
    local limit = math.max(1, math.min(100, floor(num(q.limit) or 20)))
    local data, started = array(), q.after == nil
    local more = false
    for i = #store.batches.order, 1, -1 do
      local bid = store.batches.order[i]
      if started then
        if #data >= limit then more = true; break end
        local b = store.batches.by_id[bid]
        refresh(srv, b)
        data[#data + 1] = b.object
      elseif bid == q.after then
        started = true
      end
    end
    return self:send_json(200, { object = "list", data = data,
      first_id = data[1] and data[1].id or NULL, last_id = data[#data] and data[#data].id or NULL,
      has_more = more }, M.RANK)
  end
  local b = store.batches.by_id[id]
  if not b then
    return self:send_error(404, "No such Batch object: " .. id, "invalid_request_error", NULL, "id")
  end
  refresh(srv, b)
  if sub == "cancel" and method == "POST" then
    local o = b.object
    if b.final then
      return self:send_error(409, "Cannot cancel a batch with status '" .. o.status .. "'.",
        "invalid_request_error", "batch_not_cancellable")
    end
    if not b.cancel_at then
      b.cancel_at = gettime()
      o.status, o.cancelling_at = "cancelling", stamp(b, b.cancel_at)
    end
    refresh(srv, b)
    return self:send_json(200, o, M.RANK)
  end
  if sub or method ~= "GET" then return self:not_found() end
  return self:send_json(200, b.object, M.RANK)
end

function Exchange:store_route()
  local path = self.req.path
  local kind, id, sub = path:match("^/v1/(%a+)/?([^/]*)/?([^/]*)$")
  if id == "" then id = nil end
  if sub == "" then sub = nil end
  if kind == "batches" and not id and self.req.method == "POST" then return self:create_batch() end
  self:resolve_mock(nil)
  if self:before_response() then return end
  if kind == "files" then return self:files(id, sub) end
  return self:batches(id, sub)
end

return M
