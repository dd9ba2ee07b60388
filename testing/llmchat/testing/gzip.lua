--- llmchat.testing.gzip: gzip bodies for the test server's Content-Encoding faults.
--
-- Answers are framed as gzip with stored (uncompressed) deflate blocks: valid for any
-- decoder, written as they go (a stream is encoded chunk by chunk), no zlib binding needed.
-- Bombs need real compression: they are made once per size by the system's gzip(1).
-- Needs Lua 5.3+ (integer bit operators); the server runs on lua5.4.
local M = {}

local CRC = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if c & 1 == 1 then c = 0xEDB88320 ~ (c >> 1) else c = c >> 1 end
  end
  CRC[i] = c
end

local function crc_update(crc, s)
  crc = crc ~ 0xFFFFFFFF
  for i = 1, #s do
    crc = CRC[(crc ~ s:byte(i)) & 0xFF] ~ (crc >> 8)
  end
  return crc ~ 0xFFFFFFFF
end
M.crc32 = function(s) return crc_update(0, s) end

local HEADER = "\31\139\8\0\0\0\0\0\0\255"

--- An encoder: enc:write(bytes) and enc:finish() return the gzip bytes to send for them
-- (the first write carries the gzip header).
function M.encoder()
  local enc = { crc = 0, size = 0, started = false }
  local function blocks(data)
    local out = {}
    if not enc.started then out[1] = HEADER; enc.started = true end
    local i = 1
    while i <= #data do
      local piece = data:sub(i, i + 65534)
      out[#out + 1] = string.pack("<I1I2I2", 0, #piece, (~#piece) & 0xFFFF) .. piece
      i = i + #piece
    end
    return table.concat(out)
  end
  function enc.write(_, data)
    if data == "" then return "" end
    enc.crc = crc_update(enc.crc, data)
    enc.size = enc.size + #data
    return blocks(data)
  end
  function enc.finish(_)
    local head = enc.started and "" or HEADER
    enc.started = true
    return head .. "\1\0\0\255\255" .. string.pack("<I4I4", enc.crc, enc.size & 0xFFFFFFFF)
  end
  return enc
end

--- The whole of data as one gzip member.
function M.compress(data)
  local enc = M.encoder()
  return enc:write(data) .. enc:finish()
end

local bombs = {}

--- gzip(1) output for prefix .. fill:rep(n / #fill) .. suffix (cached per arguments):
-- a small body that inflates to n bytes and more. Returns the bytes, or nil and a message.
function M.bomb(prefix, fill, n, suffix)
  local key = table.concat({ prefix, fill, n, suffix }, "\0")
  if bombs[key] then return bombs[key] end
  local tmp = os.tmpname()
  local p = io.popen("gzip -9 -c > '" .. tmp .. "'", "w")
  if not p then return nil, "cannot run gzip" end
  p:write(prefix)
  local block = fill:rep(math.max(1, (1024 * 1024) // #fill))
  local left = n
  while left > 0 do
    local piece = left >= #block and block or block:sub(1, left)
    p:write(piece)
    left = left - #piece
  end
  p:write(suffix)
  p:close()
  local f = io.open(tmp, "rb")
  local data = f and f:read("a")
  if f then f:close() end
  os.remove(tmp)
  if not data or #data < 18 then return nil, "gzip produced no output" end
  bombs[key] = data
  return data
end

return M
