--- Errors: a table with kind, status, message, retry_after, body, headers;
-- tostring(err) is one readable line. Never holds an API key.
local M = {}

local Error = {}
Error.__index = Error
Error.__name = "llmchat.error"

function Error.__tostring(e)
  local parts = { "llmchat: ", e.kind }
  if e.status and e.status > 0 then parts[#parts + 1] = " (HTTP " .. e.status .. ")" end
  parts[#parts + 1] = ": "
  parts[#parts + 1] = (tostring(e.message or "error"):gsub("[\r\n]+", " "))
  if e.code and e.code ~= e.kind then parts[#parts + 1] = " [" .. tostring(e.code) .. "]" end
  if e.retry_after then
    parts[#parts + 1] = string.format(" (retry after %gs)", e.retry_after)
  end
  return table.concat(parts)
end

M.Error = Error

--- error kinds by HTTP status
function M.kind_for_status(status)
  if status == 401 then return "auth"
  elseif status == 403 then return "permission"
  elseif status == 404 then return "not_found"
  elseif status == 402 or status == 406 then return "insufficient_credits"
  elseif status == 429 then return "rate_limit"
  elseif status >= 500 then return "server"
  elseif status >= 400 then return "bad_request"
  end
  return "protocol"
end

local function scrub(s, secret)
  if type(s) ~= "string" or not secret or secret == "" then return s end
  local i, j = s:find(secret, 1, true)
  while i do
    s = s:sub(1, i - 1) .. "<redacted>" .. s:sub(j + 1)
    i, j = s:find(secret, i + 10, true)
  end
  return s
end
M.scrub = scrub

--- new{kind=, message=, ...}; `secret` (the API key) is scrubbed from every
-- string field and never stored.
function M.new(t, secret)
  local e = setmetatable({}, Error)
  for k, v in pairs(t) do
    if k ~= "secret" then e[k] = scrub(v, secret) end
  end
  if type(e.headers) == "table" and secret then
    for k, v in pairs(e.headers) do e.headers[k] = scrub(v, secret) end
  end
  e.kind = e.kind or "protocol"
  e.message = e.message or e.kind
  return e
end

function M.is(v) return getmetatable(v) == Error end

return M
