--- llmchat.content: builders for the content parts of a chat message.
--
--   local content = require("llmchat.content")   -- or llmchat.content
--   conv:say{ content.text("What is in this picture?"),
--             content.image_file("cat.png", { detail = "low" }) }
--
-- A message's `content` is either a string or an array of parts; these helpers
-- build the parts in the shape the OpenAI chat API takes:
--   { type = "text", text = "..." }
--   { type = "image_url", image_url = { url = "https://..." | "data:image/png;base64,...",
--                                       detail = "auto" | "low" | "high" } }
-- Base64 encoding runs in the C core (llmchat.core.base64).
--
-- Failures are returned as nil and an error table (llmchat.errors): kind "io"
-- for a file that cannot be opened or read, "bad_request" for data that
-- cannot make a part (an empty file, an unknown image type). Misuse (a
-- wrong argument type, an unknown detail) raises.
local core = require("llmchat.core")
local errors = require("llmchat.errors")

local M = {}

local DETAILS = { auto = true, low = true, high = true }

local function check_detail(detail, where)
  if detail ~= nil and not DETAILS[detail] then
    error(("%s: detail must be \"auto\", \"low\" or \"high\", got %s"):format(where, tostring(detail)), 3)
  end
  return detail
end

--- A text part.
function M.text(s)
  if type(s) ~= "string" then error("llmchat.content.text: expected a string, got " .. type(s), 2) end
  return { type = "text", text = s }
end

--- An image part from a URL (http(s) or a data: URL). opts.detail: auto / low / high.
function M.image_url(url, opts)
  if type(url) ~= "string" or url == "" then
    error("llmchat.content.image_url: expected a URL string", 2)
  end
  opts = opts or {}
  local image = { url = url, detail = check_detail(opts.detail, "llmchat.content.image_url") }
  return { type = "image_url", image_url = image }
end
M.image = M.image_url

-- MIME types by extension, for the image formats the vision APIs accept.
local BY_EXTENSION = {
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", jpe = "image/jpeg",
  gif = "image/gif", webp = "image/webp",
}

--- The MIME type of image bytes from their signature, or nil.
function M.sniff_mime(bytes)
  if type(bytes) ~= "string" then return nil end
  if bytes:sub(1, 8) == "\137PNG\r\n\26\n" then return "image/png" end
  if bytes:sub(1, 3) == "\255\216\255" then return "image/jpeg" end
  local gif = bytes:sub(1, 6)
  if gif == "GIF87a" or gif == "GIF89a" then return "image/gif" end
  if bytes:sub(1, 4) == "RIFF" and bytes:sub(9, 12) == "WEBP" then return "image/webp" end
  return nil
end

--- The MIME type for a file name from its extension, or nil.
function M.mime_for_path(path)
  local ext = tostring(path):match("%.([%w]+)$")
  return ext and BY_EXTENSION[ext:lower()] or nil
end

--- "data:<mime>;base64,<...>" for raw bytes.
function M.data_url(bytes, mime)
  if type(bytes) ~= "string" then error("llmchat.content.data_url: expected a string of bytes", 2) end
  if type(mime) ~= "string" or not mime:find("^[%w.+-]+/[%w.+-]+$") then
    error("llmchat.content.data_url: expected a MIME type such as \"image/png\"", 2)
  end
  return "data:" .. mime .. ";base64," .. core.base64(bytes)
end

--- An image part from bytes in memory. opts.mime (else sniffed from the bytes),
-- opts.detail. Returns the part, or nil and an error (kind "bad_request")
-- when the type is unknown.
function M.image_data(bytes, opts)
  if type(bytes) ~= "string" then error("llmchat.content.image_data: expected a string of bytes", 2) end
  opts = opts or {}
  check_detail(opts.detail, "llmchat.content.image_data")
  local mime = opts.mime or M.sniff_mime(bytes)
  if not mime then
    return nil, errors.new({ kind = "bad_request",
      message = "unknown image type (not PNG, JPEG, GIF or WebP): pass opts.mime" })
  end
  return M.image_url(M.data_url(bytes, mime), { detail = opts.detail })
end

--- An image part from a local file, sent inline as a base64 data URL.
-- The MIME type comes from opts.mime, else the file's signature (so a mislabelled
-- file is still sent with its real type), else its extension.
-- Returns the part, or nil and an error: kind "io" (missing or unreadable
-- file), "bad_request" (an empty file, an unknown type).
function M.image_file(path, opts)
  if type(path) ~= "string" or path == "" then
    error("llmchat.content.image_file: expected a file path", 2)
  end
  opts = opts or {}
  check_detail(opts.detail, "llmchat.content.image_file")
  local f, oerr = io.open(path, "rb")
  if not f then
    return nil, errors.new({ kind = "io", path = path, message = "cannot open image: " .. tostring(oerr) })
  end
  local bytes, rerr = f:read("*a")
  f:close()
  if not bytes then
    return nil, errors.new({ kind = "io", path = path, message = "cannot read image " .. path .. ": " .. tostring(rerr) })
  end
  if bytes == "" then
    return nil, errors.new({ kind = "bad_request", path = path, message = "image file is empty: " .. path })
  end
  local mime = opts.mime or M.sniff_mime(bytes) or M.mime_for_path(path)
  if not mime then
    return nil, errors.new({ kind = "bad_request", path = path,
      message = "unknown image type for " .. path .. " (not PNG, JPEG, GIF or WebP): pass opts.mime" })
  end
  return M.image_url(M.data_url(bytes, mime), { detail = opts.detail })
end

--- A user message from a mix of strings (text parts) and parts:
-- content.message("Describe", content.image_url(u)) -> { role = "user", content = {...} }
-- opts-free; for another role use content.message_as(role, ...).
function M.message_as(role, ...)
  local parts = {}
  for i = 1, select("#", ...) do
    local p = select(i, ...)
    if type(p) == "string" then p = M.text(p) end
    if type(p) ~= "table" then
      error(("llmchat.content.message: part %d is a %s, expected a string or a part"):format(i, type(p)), 2)
    end
    parts[#parts + 1] = p
  end
  return { role = role, content = parts }
end

function M.message(...) return M.message_as("user", ...) end

--- The plain text of a content value (a string, or the text parts joined).
function M.to_text(c)
  if type(c) == "string" then return c end
  if type(c) ~= "table" then return "" end
  local out = {}
  for _, p in ipairs(c) do
    if type(p) == "table" and p.type == "text" and type(p.text) == "string" then out[#out + 1] = p.text end
  end
  return table.concat(out)
end

return M
