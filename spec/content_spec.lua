-- llmchat.content: content parts, images from URLs and local files (base64 in C).
local llmchat = require("llmchat")
local content = require("llmchat.content")
local json = require("llmchat.json")
local server = require("support.server")

-- A plain-Lua base64 decoder, to check the C encoder's output independently.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function unbase64(s)
  local val = {}
  for i = 1, #B64 do val[B64:sub(i, i)] = i - 1 end
  local out, bits, nbits = {}, 0, 0
  for c in s:gmatch("[^=]") do
    bits = bits * 64 + assert(val[c], "bad base64 character " .. c)
    nbits = nbits + 6
    if nbits >= 8 then
      nbits = nbits - 8
      local byte = math.floor(bits / 2 ^ nbits)
      out[#out + 1] = string.char(byte)
      bits = bits - byte * 2 ^ nbits
    end
  end
  return table.concat(out)
end

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local PNG = "\137PNG\r\n\26\n\0\0\0\rIHDR\0\0\0\1\0\0\0\1\8\6\0\0\0\31\21\196\137"
local JPEG = "\255\216\255\224\0\16JFIF\0\1\1\0\0\1\0\1\0\0\255\217"
local GIF = "GIF89a\1\0\1\0\128\0\0\255\255\255\0\0\0!\249\4\0\0\0\0\0,\0\0\0\0\1\0\1\0\0\2\2D\1\0;"
local WEBP = "RIFF\26\0\0\0WEBPVP8L\13\0\0\0/\0\0\0\16\7\16\17\17\136\136\254\7\0"

describe("llmchat.content", function()
  local dir
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert.truthy(os.execute("mkdir -p '" .. dir .. "'"))
  end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("is reachable as llmchat.content", function()
    assert.equal(content, llmchat.content)
  end)

  it("builds text and image_url parts", function()
    assert.same({ type = "text", text = "hi" }, content.text("hi"))
    assert.same({ type = "image_url", image_url = { url = "https://x/y.png" } },
      content.image_url("https://x/y.png"))
    assert.same({ type = "image_url", image_url = { url = "https://x/y.png", detail = "low" } },
      content.image_url("https://x/y.png", { detail = "low" }))
    assert.same({ type = "image_url", image_url = { url = "https://x/y.png", detail = "high" } },
      content.image("https://x/y.png", { detail = "high" }))
    assert.has_error(function() content.image_url("https://x", { detail = "huge" }) end)
    assert.has_error(function() content.text(1) end)
    assert.has_error(function() content.image_url("") end)
  end)

  it("encodes bytes as a data URL with base64 from the C core", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local bytes = table.concat(all)
    for _, n in ipairs{ 0, 1, 2, 3, 4, 5, 255, 256 } do
      local s = bytes:sub(1, n)
      local url = content.data_url(s, "image/png")
      local b64 = url:match("^data:image/png;base64,(.*)$")
      assert.truthy(b64)
      assert.equal(s, unbase64(b64))
      assert.equal(math.ceil(n / 3) * 4, #b64)
    end
    assert.equal("data:text/plain;base64,aGVsbG8=", content.data_url("hello", "text/plain"))
    assert.has_error(function() content.data_url("x", "not a mime") end)
  end)

  it("reads image files with the MIME type of their signature", function()
    for name, case in pairs{ png = { PNG, "image/png" }, jpg = { JPEG, "image/jpeg" },
        gif = { GIF, "image/gif" }, webp = { WEBP, "image/webp" } } do
      -- no extension: the signature decides
      local path = dir .. "/" .. name .. "-noext"
      write(path, case[1])
      local part = assert(content.image_file(path, { detail = "low" }))
      assert.equal("image_url", part.type)
      assert.equal("low", part.image_url.detail)
      local mime, b64 = part.image_url.url:match("^data:([^;]+);base64,(.*)$")
      assert.equal(case[2], mime)
      assert.equal(case[1], unbase64(b64))
    end
  end)

  it("falls back to the extension when the bytes have no known signature", function()
    for ext, mime in pairs{ png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", JPG = "image/jpeg",
        gif = "image/gif", webp = "image/webp" } do
      local path = dir .. "/opaque." .. ext
      write(path, "not really an image")
      local part = assert(content.image_file(path))
      assert.equal(mime, part.image_url.url:match("^data:([^;]+);"))
      assert.is_nil(part.image_url.detail)
    end
    -- a signature beats a wrong extension
    write(dir .. "/actually-png.jpg", PNG)
    assert.matches("^data:image/png;", content.image_file(dir .. "/actually-png.jpg").image_url.url)
    -- opts.mime beats both
    assert.matches("^data:image/avif;", content.image_file(dir .. "/actually-png.jpg",
      { mime = "image/avif" }).image_url.url)
  end)

  it("returns nil and an error for missing, empty or unknown files", function()
    local part, err = content.image_file(dir .. "/missing.png")
    assert.is_nil(part)
    assert.is_true(llmchat.is_error(err))
    assert.equal("io", err.kind)
    assert.matches("cannot open", err.message)
    assert.equal(dir .. "/missing.png", err.path)
    write(dir .. "/empty.png", "")
    part, err = content.image_file(dir .. "/empty.png")
    assert.is_nil(part)
    assert.equal("bad_request", err.kind)
    assert.matches("empty", err.message)
    write(dir .. "/mystery.bin", "plain text")
    part, err = content.image_file(dir .. "/mystery.bin")
    assert.is_nil(part)
    assert.equal("bad_request", err.kind)
    assert.matches("unknown image type", err.message)
    part, err = content.image_file(dir)   -- a directory cannot be read as a file
    assert.is_nil(part)
    assert.equal("io", err.kind)
    assert.is_string(err.message)
  end)

  it("builds parts from bytes in memory", function()
    local part = assert(content.image_data(GIF, { detail = "auto" }))
    assert.matches("^data:image/gif;base64,", part.image_url.url)
    assert.equal("auto", part.image_url.detail)
    local none, err = content.image_data("???")
    assert.is_nil(none)
    assert.equal("bad_request", err.kind)
    assert.matches("unknown image type", err.message)
  end)

  it("builds messages from strings and parts, and reads their text back", function()
    local m = content.message("What is this?", content.image_url("https://x/a.png"))
    assert.same({ role = "user", content = { { type = "text", text = "What is this?" },
      { type = "image_url", image_url = { url = "https://x/a.png" } } } }, m)
    assert.equal("What is this?", content.to_text(m.content))
    assert.equal("plain", content.to_text("plain"))
    assert.equal("system", content.message_as("system", "x").role)
  end)

  describe("with a conversation", function()
    local srv, client
    setup(function()
      srv = server.start()
      client = llmchat.client{ base_url = srv.url, max_retries = 0 }
    end)
    teardown(function() srv.stop() end)

    it("sends an image file as content parts, and saves and reloads them", function()
      local path = dir .. "/photo.png"
      write(path, PNG)
      local sent
      local conv = llmchat.conversation{ client = client,
        on_request = function(p) sent = json.encode(p.messages) end }
      local res, err = conv:say({ content.text("Describe: "), assert(content.image_file(path, { detail = "high" })) })
      assert.is_nil(err)
      assert.equal("Describe: ", res.content)   -- the echo model repeats the text parts
      assert.truthy(sent:find('"type":"image_url"', 1, true))
      assert.truthy(sent:find("data:image/png;base64,", 1, true))
      local file = dir .. "/conv.json"
      assert.is_true(conv:save(file))
      local loaded = assert(llmchat.conversation.load(file, client))
      assert.same(conv:messages(), loaded:messages())
      assert.equal(PNG, unbase64(loaded:messages()[1].content[2].image_url.url:match("base64,(.*)$")))
    end)
  end)
end)
