#!/usr/bin/env lua5.4
--- Ask about an image: a local file (sent inline as a base64 data URL) or a URL.
--
--   lua5.4 bin/llmchat-server --port 8080 &        # the local echo model repeats the text
--   lua5.4 examples/image.lua photo.jpg "What is in this picture?"
--   lua5.4 examples/image.lua https://example.com/cat.png "Describe it" --detail low
--   lua5.4 examples/image.lua photo.png "Describe it" --provider openai --model gpt-4o-mini
-- Without an image argument, a built-in 1x1 PNG is sent.

local root = ((arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or ".")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/?.so;" .. package.cpath

local llmchat = require("llmchat")
local content = llmchat.content

local positional, opts = {}, {}
local i = 1
while i <= #arg do
  local k = arg[i]:match("^%-%-([%w-]+)$")
  if k then opts[(k:gsub("-", "_"))] = arg[i + 1]; i = i + 2
  else positional[#positional + 1] = arg[i]; i = i + 1 end
end
local image, question = positional[1], positional[2] or "What is in this image?"

local part, err
if image == nil then
  -- a 1x1 transparent PNG
  part, err = content.image_data("\137PNG\r\n\26\n\0\0\0\rIHDR\0\0\0\1\0\0\0\1\8\6\0\0\0\31\21\196\137"
    .. "\0\0\0\rIDATx\156c\0\1\0\0\5\0\1\13\10\45\180\0\0\0\0IEND\174B`\130", { detail = opts.detail })
elseif image:find("^https?://") then
  part = content.image_url(image, { detail = opts.detail })
else
  part, err = content.image_file(image, { detail = opts.detail })  -- MIME type from the bytes
end
if not part then
  io.stderr:write(err, "\n")
  os.exit(1)
end

local client = llmchat.client{ provider = opts.provider, model = opts.model,
  base_url = opts.base_url or (not opts.provider and "http://127.0.0.1:8080/v1" or nil) }
local conv = llmchat.conversation{ client = client }
local res, cerr = conv:say({ content.text(question), part }, {
  on_delta = function(text, ev) if ev.kind == "content" then io.write(text); io.flush() end end,
})
io.write("\n")
if not res then
  io.stderr:write(tostring(cerr), "\n")
  os.exit(1)
end
print(("(%d bytes of image data URL, %d prompt tokens)"):format(#part.image_url.url, conv:usage().prompt_tokens))
