---@meta llmchat.content
-- LuaCATS annotations: llmchat.content (docs/reference/content.md).

---@alias llmchat.content.Detail "auto"|"low"|"high"

---@class llmchat.content.Part
---@field type "text"|"image_url"
---@field text? string
---@field image_url? { url: string, detail: llmchat.content.Detail? }

---@class llmchat.content.ImageOptions
---@field detail? llmchat.content.Detail
---@field mime? string

---@class llmchat.content
local content = {}

---A text part.
---@param s string
---@return llmchat.content.Part
function content.text(s) end

---An image part from a URL (http(s) or data:).
---@param url string
---@param opts? llmchat.content.ImageOptions
---@return llmchat.content.Part
function content.image_url(url, opts) end

---The same as image_url.
---@param url string
---@param opts? llmchat.content.ImageOptions
---@return llmchat.content.Part
function content.image(url, opts) end

---An image part from bytes in memory; nil, err for an unknown type.
---@param bytes string
---@param opts? llmchat.content.ImageOptions
---@return llmchat.content.Part? part
---@return llmchat.Error? err
function content.image_data(bytes, opts) end

---An image part from a file, inline as a data URL; nil, err for a missing or unknown file.
---@param path string
---@param opts? llmchat.content.ImageOptions
---@return llmchat.content.Part? part
---@return llmchat.Error? err
function content.image_file(path, opts) end

---"data:<mime>;base64,<...>".
---@param bytes string
---@param mime string
---@return string
function content.data_url(bytes, mime) end

---The image MIME type from the bytes' signature, or nil.
---@param bytes string
---@return string?
function content.sniff_mime(bytes) end

---The image MIME type for a file name's extension, or nil.
---@param path string
---@return string?
function content.mime_for_path(path) end

---A user message from strings (text parts) and parts.
---@param ... string|llmchat.content.Part
---@return llmchat.Message
function content.message(...) end

---A message with another role from strings and parts.
---@param role string
---@param ... string|llmchat.content.Part
---@return llmchat.Message
function content.message_as(role, ...) end

---The plain text of a content value.
---@param c string|llmchat.content.Part[]
---@return string
function content.to_text(c) end

return content
