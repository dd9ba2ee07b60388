--- Debug log with redaction. Silent unless LLMCHAT_LOG=debug or a client's
-- `log` option is a function.
local scrub = require("llmchat.errors").scrub

local M = {}

local SENSITIVE = {
  authorization = true, ["proxy-authorization"] = true, ["x-api-key"] = true,
  ["api-key"] = true, cookie = true, ["set-cookie"] = true,
}
M.SENSITIVE = SENSITIVE

--- "Name: value" with the value redacted when the header is sensitive.
function M.header_line(name, value)
  if SENSITIVE[name:lower()] then value = "<redacted>" end
  return name .. ": " .. tostring(value)
end

--- The logger for a client: a function(line) or nil.
function M.for_client(opt, secret)
  local sink = opt
  if type(sink) ~= "function" then
    local env = os.getenv("LLMCHAT_LOG")
    if not (env and (env == "debug" or env == "1" or env == "true")) then return nil end
    sink = function(line) io.stderr:write(line, "\n") end
  end
  return function(line)
    sink("llmchat: " .. scrub(line, secret))
  end
end

return M
