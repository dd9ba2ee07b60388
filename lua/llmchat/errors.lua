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

-- Top-level fields whose values are the module's own vocabulary: a short key must not turn
-- kind "network" into "networ<redacted>". A server can put text in `code` too, so these are
-- scrubbed as well once the secret is long enough to be a real key (8 bytes or more).
local FIXED = { kind = true, code = true, timeout = true, status = true, type = true,
  curl_code = true, retry_after = true }

--- Every string reachable from v (table values, nested tables included) with the secret
-- replaced, in place; keys are left as they are. Each table is visited once.
local function scrub_deep(v, secret, seen, fixed)
  if type(v) == "string" then
    if fixed and #secret < 8 then return v end
    return scrub(v, secret)
  end
  if type(v) ~= "table" or seen[v] then return v end
  seen[v] = true
  for k, x in pairs(v) do
    local y = scrub_deep(x, secret, seen, type(k) == "string" and FIXED[k] and v == seen.root)
    if y ~= x then v[k] = y end
  end
  return v
end

--- Scrubs the secret from every string reachable from v; returns v.
function M.scrub_all(v, secret)
  if not secret or secret == "" then return v end
  local seen = { root = v }
  return scrub_deep(v, secret, seen, false)
end

--- new{kind=, message=, ...}; `secret` (the API key) is scrubbed from every string
-- reachable from the error (nested tables, partial results and headers included) and
-- never stored.
function M.new(t, secret)
  local e = setmetatable({}, Error)
  for k, v in pairs(t) do
    if k ~= "secret" then e[k] = v end
  end
  e.kind = e.kind or "protocol"
  e.message = e.message or e.kind
  if secret and secret ~= "" then M.scrub_all(e, secret) end
  return e
end

function M.is(v) return getmetatable(v) == Error end

return M
