--- llmchat.testing.util: small helpers shared by the test server's modules.
local sbyte, srep, concat = string.byte, string.rep, table.concat
local floor, ceil = math.floor, math.ceil

local M = {}

local FILLER = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. "

function M.is_str(v) return type(v) == "string" end
function M.is_tab(v) return type(v) == "table" end
function M.num(v) return type(v) == "number" and v or tonumber(v) end

-- An HTTP status from a mock field: an integer 100..999, else nil.
function M.status_of(v)
  v = M.num(v)
  if v and v >= 100 and v <= 999 then return floor(v) end
end

function M.merge(a, b)
  local t = {}
  if type(a) == "table" then for k, v in pairs(a) do t[k] = v end end
  if type(b) == "table" then for k, v in pairs(b) do t[k] = v end end
  return t
end

function M.tokens(bytes) return ceil(bytes / 4) end

local function is_cont(s, i)
  local b = sbyte(s, i)
  return b ~= nil and b >= 0x80 and b < 0xC0
end

-- Cut s to at most n bytes without splitting a UTF-8 character.
function M.utf8_cut(s, n)
  if #s <= n then return s end
  while n > 0 and is_cont(s, n + 1) do n = n - 1 end
  return s:sub(1, n)
end

-- Pieces of at most size bytes, split on UTF-8 character boundaries (a character longer
-- than size makes a piece of its own).
function M.utf8_pieces(s, size)
  local pieces, i, len = {}, 1, #s
  size = math.max(1, floor(size))
  while i <= len do
    local j = i + size - 1
    if j < len then
      local k = j
      while k >= i and is_cont(s, k + 1) do k = k - 1 end
      if k < i then
        k = j
        while is_cont(s, k + 1) do k = k + 1 end
      end
      j = k
    end
    pieces[#pieces + 1] = s:sub(i, j)
    i = j + 1
  end
  return pieces
end

function M.filler(n)
  n = floor(n)
  if n <= 0 then return "" end
  return srep(FILLER, ceil(n / #FILLER)):sub(1, n)
end

-- The text of a message content: a string, or the text of every part, concatenated.
function M.text_of(content)
  if type(content) == "string" then return content end
  if type(content) == "table" then
    local parts = {}
    for _, part in ipairs(content) do
      if type(part) == "table" and type(part.text) == "string" then parts[#parts + 1] = part.text
      elseif type(part) == "string" then parts[#parts + 1] = part end
    end
    return concat(parts)
  end
  return ""
end

-- A deterministic pseudo-random integer in [0, n) from any number of integer seeds
-- (exact in doubles on every Lua: all intermediate values stay below 2^40).
function M.hash_int(n, ...)
  local h = 5381
  for i = 1, select("#", ...) do
    local s = tostring((select(i, ...)))
    for k = 1, #s do h = (h * 33 + sbyte(s, k)) % 2147483647 end
    h = (h * 48271) % 2147483647
  end
  h = (h * 48271) % 2147483647
  return h % n
end

return M
