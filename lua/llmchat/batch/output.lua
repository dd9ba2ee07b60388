--- llmchat.batch.output: a finished batch's output and error files, read back in input order.
--
-- The provider writes the lines of both files in any order. An "order" maps a custom_id
-- to its input position and back; results() reads both files once and places each line;
-- each() first indexes both files (position -> which file, byte offset, length: numbers,
-- never bodies), then reads the lines in input order, one at a time.
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local result = require("llmchat.result")

local M = {}

---------------------------------------------------------------------------
-- orders: custom_id <-> input position

--- Every custom_id generated ("<n>-<token>"): nothing to store.
function M.seq_order(token, count)
  local suffix = "-" .. token
  local pat = "^(%d+)%-" .. token:gsub("%p", "%%%0") .. "$"
  return {
    count = count,
    pos_of = function(cid)
      local n = tonumber(cid:match(pat))
      if n and n >= 1 and n <= count then return n end
      return nil
    end,
    cid_of = function(n) return n .. suffix end,
  }
end

--- Ids given by the caller: seen (custom_id -> position), ids (position -> custom_id, only
-- the caller's), token for the generated ones.
function M.map_order(seen, ids, token, count)
  local suffix = token and ("-" .. token)
  return {
    count = count,
    pos_of = function(cid) return seen[cid] end,
    cid_of = function(n) return ids[n] or (suffix and n .. suffix) end,
  }
end

--- The order of an input file on disk (the batch's input_file_id, downloaded): its lines'
-- custom_ids, in order.
function M.file_order(path)
  local seen, ids, count = {}, {}, 0
  local f = io.open(path, "rb")
  if f then
    for line in f:lines() do
      if line:find("%S") then
        local rec = json.decode(line)
        count = count + 1
        local cid = type(rec) == "table" and rec.custom_id
        if type(cid) == "string" and seen[cid] == nil then
          seen[cid] = count
          ids[count] = cid
        end
      end
    end
    f:close()
  end
  return M.map_order(seen, ids, nil, count)
end

---------------------------------------------------------------------------
-- one line of an output or error file -> the single call's result or error

local EXPIRED_CODES = { batch_expired = "expired", batch_cancelled = "cancelled",
  request_timeout = "timeout" }

--- res or err for a decoded line `rec`; ep: the endpoint description (or nil: the body is
-- returned as it is); secret: scrubbed from errors.
function M.shape(rec, ep, secret)
  if type(rec) ~= "table" then
    return nil, errors.new({ kind = "protocol", message = "batch: an output line is not a JSON object" }, secret)
  end
  local cid = rec.custom_id
  local resp = rec.response
  local status = type(resp) == "table" and tonumber(resp.status_code)
  if status then
    local body = resp.body
    local request_id = resp.request_id
    if status < 200 or status >= 300 then
      local text = type(body) == "table" and json.encode(body) or type(body) == "string" and body or ""
      local e = result.http_error(status, {}, text or "", secret)
      e.custom_id, e.request_id, e.headers = cid, request_id, nil
      return nil, e
    end
    if type(body) ~= "table" then
      return nil, errors.new({ kind = "protocol", status = status, custom_id = cid,
        message = "batch: the response body of this line is not a JSON object" }, secret)
    end
    local res, err
    if ep and body.error ~= nil and (not ep.error_under_2xx or ep.error_under_2xx(body)) then
      err = result.http_error(status, {}, json.encode(body) or "", secret)
      local ecode = type(body.error) == "table" and tonumber(body.error.code)
      err.kind = ecode and ecode >= 400 and ecode <= 599 and errors.kind_for_status(ecode) or "server"
    elseif ep then
      res, err = ep.result(body, { secret = secret })
    else
      res = body
    end
    if not res then
      err.custom_id, err.request_id, err.headers = cid, request_id, nil
      return nil, err
    end
    if ep and ep.status_field then res.http_status = status
    else res.status = status; res.http_status = status end
    res.headers = {}
    res.custom_id, res.request_id = cid, request_id
    return res
  end
  local e = rec.error
  if type(e) == "table" then
    local code = type(e.code) == "string" and e.code or nil
    return nil, errors.new({ kind = code and EXPIRED_CODES[code] or "server", code = code,
      message = tostring(e.message or code or "the request failed"), custom_id = cid, error = e }, secret)
  end
  return nil, errors.new({ kind = "protocol", custom_id = cid,
    message = "batch: an output line has neither a response nor an error" }, secret)
end

--- The error for a request in neither file, by the batch's final status.
function M.missing(status, cid, pos, secret)
  local kind, message
  if status == "expired" then
    kind, message = "expired", "the batch expired before this request ran"
  elseif status == "cancelled" or status == "cancelling" then
    kind, message = "cancelled", "the batch was cancelled before this request ran"
  elseif status == "failed" then
    kind, message = "batch_failed", "the batch failed before this request ran"
  else
    kind, message = "protocol", "the batch is " .. tostring(status)
      .. " but this request is in neither its output nor its error file"
  end
  return errors.new({ kind = kind, message = message, custom_id = cid, index = pos,
    batch_status = status }, secret)
end

---------------------------------------------------------------------------
-- reading the files

-- Calls fn(line, offset, length) for each non-blank line of a file (offset: of the line's
-- first byte; length without the newline). A missing file has no lines.
local function each_line(path, fn)
  if not path then return end
  local f = io.open(path, "rb")
  if not f then return end
  local off = 0
  for line in f:lines() do
    local len = #line
    if line:find("%S") then fn(line, off, len) end
    off = off + len + 1
  end
  f:close()
end
M.each_line = each_line

-- The input position of a decoded line, or nil (not ours, or a repeat); `taken` marks the
-- positions already filled; `extra` collects what could not be placed.
local function place(order, rec, taken, extra)
  local cid = type(rec) == "table" and rec.custom_id
  local pos = type(cid) == "string" and order.pos_of(cid)
  if not pos or taken[pos] then
    extra[#extra + 1] = type(cid) == "string" and cid or "?"
    return nil
  end
  taken[pos] = true
  return pos
end

--- Every result in input order: an array of order.count results or errors. o: { order,
-- ep, secret, status (the batch's), files = { output path, error path } }. Returns the
-- array and the custom_ids that matched no input position (or repeated one).
function M.read_all(o)
  local out, taken, extra = {}, {}, {}
  for _, path in ipairs(o.files) do
    each_line(path, function(line)
      local rec = json.decode(line)
      local pos = place(o.order, rec, taken, extra)
      if pos then
        local res, err = M.shape(rec, o.ep, o.secret)
        out[pos] = res or err
      end
    end)
  end
  for pos = 1, o.order.count do
    if out[pos] == nil then out[pos] = M.missing(o.status, o.order.cid_of(pos), pos, o.secret) end
  end
  return out, extra
end

--- An iterator over the results in input order that holds one at a time:
-- returns next() -> pos, res_or_err (nil at the end), and close().
function M.iterate(o)
  -- where each position's line is: loc[pos] = offset + 1 (output file) or -(offset + 1)
  -- (error file); len[pos] = its length
  local loc, len, taken, extra = {}, {}, {}, {}
  for which, path in ipairs(o.files) do
    each_line(path, function(line, off, n)
      local rec = json.decode(line)
      local pos = place(o.order, rec, taken, extra)
      if pos then
        loc[pos] = which == 1 and off + 1 or -(off + 1)
        len[pos] = n
      end
    end)
  end
  taken = nil
  local handles = {}
  local function file(which)
    local f = handles[which]
    if not f then
      f = assert(io.open(o.files[which], "rb"))
      handles[which] = f
    end
    return f
  end
  local pos, closed = 0, false
  local it = { extra = extra }
  function it.close()
    if closed then return end
    closed = true
    for _, f in pairs(handles) do f:close() end
    handles = {}
    if o.on_close then o.on_close() end
  end
  function it.next()
    if closed then return nil end
    pos = pos + 1
    if pos > o.order.count then
      it.close()
      return nil
    end
    local l = loc[pos]
    if not l then return pos, M.missing(o.status, o.order.cid_of(pos), pos, o.secret) end
    loc[pos] = nil
    local f = file(l > 0 and 1 or 2)
    f:seek("set", (l > 0 and l or -l) - 1)
    local line = f:read(len[pos])
    len[pos] = nil
    local res, err = M.shape(json.decode(line or ""), o.ep, o.secret)
    return pos, res or err
  end
  return it
end

return M
