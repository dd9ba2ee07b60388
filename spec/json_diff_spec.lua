-- Differential test of the C stream path (src/jscan.c + src/stream.c, through
-- core.stream.assembler) against lua-cjson in strict mode plus a reference assembler written
-- here in Lua over cjson.decode, following the rules in src/stream.h.
--
-- Inputs: random chat.completion.chunk streams (random unicode, escapes, surrogate pairs,
-- control characters, raw bytes >= 0x80, nesting, unknown fields, key orders, duplicate keys,
-- odd number spellings, wrong types), random generic JSON documents, hand-picked edge cases,
-- and mutations of all of these (byte flips, truncations, insertions, deletions).
-- For each input: the same accept/reject decision as cjson, and when accepted the same
-- events and the same assembled values. Deterministic (own PRNG, fixed seed).
--
-- The only accepted disagreements are the two documented in src/jscan.h, checked precisely:
--   D1  cjson (strtod) accepts "1.", "-.5", "1.e5"; we reject them as RFC 8259 does;
--   D2  cjson stops at a NUL byte after a complete value ("{}\0x"); we reject the NUL.
local core = require("llmchat.core")
local cjson = require("cjson")

local cj = cjson.new()
cj.decode_invalid_numbers(false) -- strict: no NaN/Infinity/hex; depth limit stays 1000
local floor = math.floor
local concat = table.concat

---------------------------------------------------------------------------------------------
-- deterministic PRNG (Park-Miller: exact in doubles, so the same on 5.1, LuaJIT and 5.4)
local seed = 20250409
local function rnd(n) -- 1..n
  seed = (seed * 48271) % 2147483647
  return seed % n + 1
end
local function chance(p) return rnd(10000) <= p * 10000 end
local function pick(t) return t[rnd(#t)] end
local function shuffle(t)
  for i = #t, 2, -1 do
    local j = rnd(i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

---------------------------------------------------------------------------------------------
-- JSON text generation

local function utf8(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64,
    0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local function u(cp) -- a \u escape, hex in either case
  local s = string.format("%04x", cp)
  if chance(0.3) then s = s:upper() end
  return "\\u" .. s
end

-- units of string content: each knows its possible encodings
local UNITS = {}
local function unit(gen) UNITS[#UNITS + 1] = gen end
for _, c in ipairs({ "a", "Z", "0", " ", "-", ".", ":", "{", "}", "[", "]", ",", "e", "n" }) do
  unit(function() return chance(0.85) and c or u(c:byte()) end)
end
unit(function() return pick({ '\\"', u(34) }) end)
unit(function() return pick({ "\\\\", u(92) }) end)
unit(function() return pick({ "/", "\\/", u(47) }) end)
for _, e in ipairs({ { "\b", "\\b" }, { "\f", "\\f" }, { "\n", "\\n" }, { "\r", "\\r" }, { "\t", "\\t" } }) do
  unit(function() return pick({ e[2], e[2], u(e[1]:byte()), e[1] }) end) -- raw too: cjson accepts
end
for _, b in ipairs({ 1, 31, 127 }) do unit(function() return pick({ string.char(b), u(b) }) end) end
unit(function() return u(0) end) -- a raw NUL is an error; \u0000 is a NUL byte
for _, cp in ipairs({ 0x80, 0xE9, 0x7FF, 0x800, 0x20AC, 0x4E2D, 0xFFFD, 0xFFFF }) do
  unit(function() return chance(0.5) and utf8(cp) or u(cp) end)
end
for _, cp in ipairs({ 0x10000, 0x1D11E, 0x1F600, 0x10FFFF }) do
  unit(function()
    if chance(0.5) then return utf8(cp) end
    local v = cp - 0x10000
    return u(0xD800 + floor(v / 1024)) .. u(0xDC00 + v % 1024)
  end)
end
for _, raw in ipairs({ "\255", "\195", "\237\160\128", "\192\128" }) do -- not UTF-8: passed through
  unit(function() return raw end)
end

local WORDS = { "Hello", " world", "!", " the", " fox", "call_1", "call_2", "get_weather",
  "assistant", "stop", "{\\\"a\\\":1}", "" }

local function strbody()
  if chance(0.5) then return pick(WORDS) end
  local t = {}
  for i = 1, rnd(6) - 1 do t[i] = pick(UNITS)() end
  return concat(t)
end
local function str(body) return '"' .. (body or strbody()) .. '"' end

local function key(name) -- sometimes spelled with an escape
  if chance(0.97) then return '"' .. name .. '"' end
  local i = rnd(#name)
  return '"' .. name:sub(1, i - 1) .. u(name:byte(i)) .. name:sub(i + 1) .. '"'
end

local NUMBERS = { "0", "-0", "7", "42", "-13", "1.5", "0.25", "-0.0", "1e3", "1E+2", "2.5e-3",
  "123456789012345678901234567890", "1e400", "-1e-400", "0e0", "3.0", "1744186429" }
local function num() return pick(NUMBERS) end

local function ws()
  if chance(0.9) then return "" end
  return pick({ " ", "\n", "\t", "\r\n", "  " })
end

local function obj(members) -- members: list of { key text, value text }
  local t = {}
  for i, m in ipairs(members) do t[i] = ws() .. m[1] .. ws() .. ":" .. ws() .. m[2] .. ws() end
  if #t == 0 then return "{" .. ws() .. "}" end
  return "{" .. concat(t, ",") .. "}"
end
local function arr(items)
  local t = {}
  for i, v in ipairs(items) do t[i] = ws() .. v .. ws() end
  if #t == 0 then return "[" .. ws() .. "]" end
  return "[" .. concat(t, ",") .. "]"
end

local junk
junk = function(depth)
  local r = rnd(10)
  if depth <= 0 or r <= 5 then
    return pick({ "null", "true", "false", num(), str(), str() })
  elseif r <= 7 then
    local t = {}
    for i = 1, rnd(4) - 1 do t[i] = junk(depth - 1) end
    return arr(t)
  else
    local t = {}
    for i = 1, rnd(4) - 1 do t[i] = { key(pick({ "a", "b", "content", "index", "x_y" })), junk(depth - 1) } end
    return obj(t)
  end
end

-- a field value: usually the right type, sometimes not
local function maybe(v, p)
  if chance(p or 0.9) then return v end
  return pick({ "null", num(), str(), "{}", "[]", "true", junk(2) })
end

local INDEXES = { "0", "0", "0", "0", "1", "1", "2", "0.0", "1e0", "-0", "10E-1", "0.1e1", "2.5",
  "-1", "1e10", '"0"', "null", "true", "1e400" }

-- members are emitted in random order, with unknown fields and the odd duplicate
local function members(list)
  local m = {}
  for _, kv in ipairs(list) do if kv[2] ~= nil then m[#m + 1] = { key(kv[1]), kv[2] } end end
  for _ = 1, (chance(0.2) and rnd(2) or 0) do m[#m + 1] = { key(pick({ "x", "logprobs", "extra" })), junk(3) } end
  if chance(0.3) then shuffle(m) end
  if #m > 0 and chance(0.05) then -- a duplicate key: the later value wins
    local d = m[rnd(#m)]
    table.insert(m, rnd(#m + 1), { d[1], junk(2) })
  end
  return obj(m)
end

local function fragment(style)
  local f = {}
  if style.index and chance(0.95) then f[#f + 1] = { "index", chance(0.9) and tostring(rnd(3) - 1) or pick(INDEXES) } end
  if chance(style.idp) then f[#f + 1] = { "id", maybe(str(pick({ "call_1", "call_2", "call_3", "call_\\u0031", "" }))) } end
  if chance(0.4) then f[#f + 1] = { "type", maybe('"function"') } end
  if chance(0.9) then
    local fn = {}
    if chance(0.4) then fn[#fn + 1] = { "name", maybe(str(pick({ "get_weather", "roll", "" }))) } end
    if chance(0.9) then fn[#fn + 1] = { "arguments", maybe(str()) } end
    f[#f + 1] = { "function", maybe(members(fn), 0.95) }
  end
  return members(f)
end

local function delta(style)
  local d = {}
  if chance(0.1) then d[#d + 1] = { "role", maybe('"assistant"') } end
  if chance(0.7) then d[#d + 1] = { "content", maybe(str(), 0.85) } end
  if chance(0.2) then d[#d + 1] = { "reasoning_content", maybe(str(), 0.8) } end
  if chance(0.2) then d[#d + 1] = { "reasoning", maybe(str(), 0.8) } end
  if chance(0.1) then d[#d + 1] = { "refusal", maybe(str(), 0.8) } end
  if chance(0.3) then
    local t = {}
    for i = 1, rnd(3) do t[i] = chance(0.95) and fragment(style) or junk(1) end
    d[#d + 1] = { "tool_calls", maybe(arr(t), 0.95) }
  end
  return members(d)
end

local function choice(style)
  local c = {}
  if chance(0.9) then c[#c + 1] = { "index", chance(0.85) and tostring(rnd(style.n) - 1) or pick(INDEXES) } end
  if chance(0.95) then c[#c + 1] = { "delta", maybe(delta(style), 0.95) } end
  if chance(0.5) then c[#c + 1] = { "logprobs", "null" } end
  if chance(0.6) then
    c[#c + 1] = { "finish_reason", pick({ "null", "null", "null", '"stop"', '"length"', '"tool_calls"', '""', '"error"', num() }) }
  end
  return members(c)
end

local function usage()
  return obj({ { '"prompt_tokens"', tostring(rnd(100)) }, { '"completion_tokens"', num() },
    { '"total_tokens"', tostring(rnd(200)) } })
end

local function chunk(style)
  local t = {}
  if chance(0.9) then t[#t + 1] = { "id", maybe(str(pick({ "chatcmpl-1", "chatcmpl-2", "", "gen-\\u00e9" })), 0.95) } end
  if chance(0.8) then t[#t + 1] = { "object", '"chat.completion.chunk"' } end
  if chance(0.8) then t[#t + 1] = { "created", maybe(pick({ "1744186429", "1744186430", "0", "1.7e9", "1744186429.5" }), 0.95) } end
  if chance(0.8) then t[#t + 1] = { "model", maybe(str(pick({ "gpt-4o", "", "deepseek-r1", "m\\u00f6del" })), 0.95) } end
  if chance(0.5) then t[#t + 1] = { "system_fingerprint", maybe(str(pick({ "fp_1", "fp_2", "" })), 0.9) } end
  if chance(0.95) then
    local cs = {}
    for i = 1, (chance(0.1) and 0 or rnd(style.n)) do cs[i] = chance(0.97) and choice(style) or junk(1) end
    t[#t + 1] = { "choices", maybe(arr(cs), 0.97) }
  end
  if chance(0.4) then t[#t + 1] = { "usage", chance(0.6) and "null" or maybe(usage(), 0.8) } end
  if chance(0.05) then t[#t + 1] = { "x_groq", obj({ { '"id"', '"req_1"' }, chance(0.6) and { '"usage"', maybe(usage(), 0.8) } or nil }) } end
  if chance(0.03) then t[#t + 1] = { "error", pick({ "null", '{"message":"upstream","code":502}', str(), "[1]", "5" }) } end
  return ws() .. members(t) .. ws()
end

---------------------------------------------------------------------------------------------
-- the reference assembler: stream.h's rules over lua-cjson's decoded table

local MAX_CHOICES, MAX_CALLS = 256, 1024

local function nonempty(v) if type(v) == "string" and v ~= "" then return v end end
local function index_of(v)
  if type(v) == "number" and v >= 0 and v <= 2147483647 and v == floor(v) then return v end
end

local function ref_new() return { chunks = 0, by_index = {}, list = {} } end

local function ref_text(ch, kind, s, raw, events)
  if type(s) ~= "string" then return end
  ch[kind] = (ch[kind] or "") .. s
  if s ~= "" then events[#events + 1] = { s, ch.index + 1, kind, nil, nil, nil, raw } end
end

local function ref_call(ch, f, raw, events)
  local ti, id, ftype = index_of(f.index), nonempty(f.id), nonempty(f.type)
  local fn = type(f["function"]) == "table" and f["function"] or {}
  local name = nonempty(fn.name)
  local args = type(fn.arguments) == "string" and fn.arguments or nil
  if not (id or ftype or name or args) then return end
  local calls, target = ch.calls, nil
  if ti then
    for k = #calls, 1, -1 do
      if calls[k].index == ti then
        if not id or not calls[k].id or calls[k].id == id then target = k end
        break
      end
    end
  elseif id then
    for k = #calls, 1, -1 do if calls[k].id == id then target = k; break end end
  else
    target = ch.last
  end
  if not target then
    if #calls >= MAX_CALLS then return end
    calls[#calls + 1] = { index = ti, args = "" }
    target = #calls
  end
  local c = calls[target]
  ch.last = target
  c.id = c.id or id
  c.type = c.type or ftype
  c.name = c.name or name
  local before = #c.args
  if args then c.args = c.args .. args end
  if id or name or #c.args > before then
    events[#events + 1] = { args or "", ch.index + 1, "tool_call", target, id and c.id, name and c.name, raw }
  end
end

local function ref_chunk(R, t, raw, events)
  R.chunks = R.chunks + 1
  if type(t) ~= "table" then return end
  R.id = R.id or nonempty(t.id)
  R.model = R.model or nonempty(t.model)
  R.system_fingerprint = R.system_fingerprint or nonempty(t.system_fingerprint)
  if not R.created and type(t.created) == "number" and t.created ~= 0 then R.created = t.created end
  local us = t.usage
  if type(us) ~= "table" then us = type(t.x_groq) == "table" and t.x_groq.usage or nil end
  if type(us) == "table" then R.usage = us end
  if type(t.error) == "table" or type(t.error) == "string" then R.error = t.error end
  if type(t.choices) ~= "table" then return end
  for _, el in ipairs(t.choices) do
    if type(el) == "table" and (el.index ~= nil or el.delta ~= nil or el.finish_reason ~= nil) then
      local idx = index_of(el.index) or 0
      local ch = R.by_index[idx]
      if not ch and #R.list < MAX_CHOICES then
        ch = { index = idx, calls = {} }
        R.by_index[idx] = ch
        R.list[#R.list + 1] = ch
      end
      if ch then
        ch.finish_reason = nonempty(el.finish_reason) or ch.finish_reason
        local d = el.delta
        if type(d) == "table" then
          ch.role = ch.role or nonempty(d.role)
          local rc, rs = d.reasoning_content, d.reasoning
          local why = nonempty(rc) or nonempty(rs) or (type(rc) == "string" and rc) or rs
          ref_text(ch, "reasoning", why, raw, events)
          ref_text(ch, "content", d.content, raw, events)
          ref_text(ch, "refusal", d.refusal, raw, events)
          if type(d.tool_calls) == "table" then
            for _, f in ipairs(d.tool_calls) do
              if type(f) == "table" then ref_call(ch, f, raw, events) end
            end
          end
        end
      end
    end
  end
end

local function ref_view(R)
  local v = { id = R.id, model = R.model, created = R.created, system_fingerprint = R.system_fingerprint,
    chunks = R.chunks, usage = R.usage, error = R.error, choices = {} }
  local list = {}
  for i, ch in ipairs(R.list) do list[i] = ch end
  table.sort(list, function(x, y) return x.index < y.index end)
  for i, ch in ipairs(list) do
    local calls
    if #ch.calls > 0 then
      calls = {}
      for k, c in ipairs(ch.calls) do
        calls[k] = { index = c.index, id = c.id, type = c.type or "function", name = c.name, arguments = c.args }
      end
    end
    v.choices[i] = { index = ch.index, finish_reason = ch.finish_reason, role = ch.role, content = ch.content,
      reasoning = ch.reasoning, refusal = ch.refusal, tool_calls = calls }
  end
  return v
end

local function c_view(r)
  local v = { id = r.id, model = r.model, created = r.created, system_fingerprint = r.system_fingerprint,
    chunks = r.chunks, usage = r.usage_json and cj.decode(r.usage_json),
    error = r.error_json and cj.decode(r.error_json), choices = {} }
  for i, c in ipairs(r.choices) do
    v.choices[i] = { index = c.index, finish_reason = c.finish_reason, role = c.role, content = c.content,
      reasoning = c.reasoning, refusal = c.refusal, tool_calls = c.tool_calls }
  end
  return v
end

local function c_events(deltas)
  local out = {}
  for i, d in ipairs(deltas) do
    local e = d[2]
    out[i] = { d[1], e.choice, e.kind, e.tool, e.id, e.name, e.raw }
  end
  return out
end

-- deep comparison; returns nil or the path of the first difference
local function diff(a, b, path)
  path = path or "$"
  if type(a) ~= "table" or type(b) ~= "table" then
    if a == b then return nil end
    return ("%s: C %s, reference %s"):format(path, tostring(a), tostring(b))
  end
  for k, v in pairs(a) do
    local d = diff(v, b[k], path .. "." .. tostring(k))
    if d then return d end
  end
  for k, v in pairs(b) do
    if a[k] == nil then return diff(nil, v, path .. "." .. tostring(k)) end
  end
end

---------------------------------------------------------------------------------------------
-- the comparison

local stats = { accepted = 0, rejected = 0, D1 = 0, D2 = 0, streams = 0, chunks = 0, events = 0 }

local function documented_difference(text, err)
  local pos = tonumber(err:match("at character (%d+)$"))
  if not pos then return nil end
  if err:find("trailing garbage", 1, true) and text:byte(pos) == 0 then return "D2" end
  if err:find("invalid number", 1, true) then
    local s = text:sub(pos)
    if s:match("^%-?%d*%.") and not s:match("^%-?%d+%.%d") then return "D1" end
  end
end

local function fail(what, text, detail)
  error(("%s\n  detail: %s\n  input: %q"):format(what, tostring(detail), text), 0)
end

-- feeds one chunk to both sides; returns true when both accepted it
local function feed(a, R, text)
  local ok, t = pcall(cj.decode, text)
  local deltas, err = a:chunk(text)
  if ok ~= (deltas ~= nil) then
    local d = ok and documented_difference(text, err) or nil
    if not d then
      fail(ok and "C rejected what cjson accepts" or "C accepted what cjson rejects", text,
        ok and err or t)
    end
    stats[d] = stats[d] + 1
    return false, true
  end
  if not ok then
    stats.rejected = stats.rejected + 1
    return false
  end
  stats.accepted = stats.accepted + 1
  local events = {}
  ref_chunk(R, t, text, events)
  local got = c_events(deltas)
  stats.events = stats.events + #got
  local d = diff(got, events, "events")
  if d then fail("events differ", text, d) end
  return true
end

local function compare_results(a, R, text)
  local d = diff(c_view(a:result()), ref_view(R), "result")
  if d then fail("results differ", text, d) end
end

local function single(text)
  local a, R = core.stream.assembler(), ref_new()
  local ok, skipped = feed(a, R, text)
  if ok then compare_results(a, R, text) end
  a:close()
  return ok, skipped
end

local MUTATION_TOKENS = { '"', "\\", "{", "}", "[", "]", ",", ":", "0", "-", ".", "e", " ", "\0",
  "u", "n", "t", "f", "x", "\255", "\\u", "\\ud800", "\\udc00", "\\udc00\\udc00", "\\udbff", "1.", "-.", "00", "\1", "\n", "\\ud83d\\ude00" }

local function mutate(text)
  for _ = 1, rnd(3) do
    local n = #text
    local pos = rnd(n + 1)
    local r = rnd(4)
    if r == 1 and n > 0 then -- flip a byte
      local b = chance(0.5) and string.char(rnd(256) - 1) or pick(MUTATION_TOKENS):sub(1, 1)
      text = text:sub(1, pos - 1) .. b .. text:sub(pos + 1)
    elseif r == 2 then -- truncate
      text = text:sub(1, pos - 1)
    elseif r == 3 then -- insert
      local ins = chance(0.5) and string.char(rnd(256) - 1) or pick(MUTATION_TOKENS)
      text = text:sub(1, pos - 1) .. ins .. text:sub(pos)
    else -- delete one byte or a short range
      text = text:sub(1, pos - 1) .. text:sub(pos + rnd(chance(0.7) and 1 or 8))
    end
  end
  return text
end

local function nest(depth, inner)
  local open, close = {}, {}
  for i = 1, depth do
    if i % 3 == 0 then open[i], close[depth - i + 1] = '{"k":', "}"
    else open[i], close[depth - i + 1] = "[", "]" end
  end
  return concat(open) .. inner .. concat(close)
end

describe("JSON differential test against lua-cjson (strict)", function()
  it("agrees on hand-picked edge cases", function()
    local cases = {
      "", " ", "{}", "[]", "1", "-0", "0.5", "1e400", "1E+2", "-0.0e-0", '"x"', "null", "true", "false",
      "01", "-01", "0x10", "-", "+1", ".5", "1e", "1.5e", "1.5.", "-inf", "nan", "NaN", "Infinity", "1 2", "[1,]",
      '{"a":1,}', '{"a" 1}', "{1:2}", '{"a":[}', "tru", "nul", "truex", "\f1", "\v1", "\239\187\191{}",
      '"\1\31\127"', '"a\0b"', '"\\x"', '"\\u12"', '"\\u12g4"', '"\\ud800"', '"\\udc00"', '"\\ud800\\udc00"',
      '"\\uDBFF\\uDFFF"', '"\\uDC00\\uD800"', '"\\udc00\\udc00"', '"\\uDFFF\\uDFFF"', '"\\ud800\\ud800"',
      '"\\uD7FF\\uE000"', '"\\ud800\\udbff"', '"\\udbff\\ue000"', '"\\ud800\\\\udc00"', '"\\ud800\\n"', '"\\ud800\\u0041"', '"\\ud800"x', '"\\u0000"',
      '"\\/\\b\\f\\n\\r\\t\\"\\\\"', '"\255\254"', '"unterminated', '"ends with backslash\\', '{"a":1}\0', "1 \0 x",
      "1.", "-.5", "1.e5", "[1.]", '{"a":01}', "[-]", "[--1]", '{"a":1}x', "[1]]", "{}}", '{"a":{"b":{}}}',
      nest(999, "1"), nest(1000, "1"), nest(1001, "1"), nest(1000, "[]"), nest(999, "{}"),
      '{"choices":' .. nest(998, "[]") .. "}", '{"choices":' .. nest(999, "[]") .. "}",
    }
    for _, text in ipairs(cases) do
      single(text)
      for _ = 1, 20 do single(mutate(text)) end
    end
  end)

  it("agrees on random chat streams, event by event", function()
    for _ = 1, 1500 do
      local style = { n = chance(0.8) and 1 or rnd(3), index = chance(0.85), idp = pick({ 0.3, 0.6, 1 }) }
      local a, R = core.stream.assembler(), ref_new()
      local last
      for _ = 1, rnd(8) do
        last = chunk(style)
        feed(a, R, last)
        stats.chunks = stats.chunks + 1
      end
      compare_results(a, R, last or "")
      a:close()
      stats.streams = stats.streams + 1
    end
  end)

  it("agrees on mutated chat chunks", function()
    for _ = 1, 6000 do
      local style = { n = rnd(3), index = chance(0.85), idp = 0.6 }
      single(mutate(chunk(style)))
    end
  end)

  it("agrees on random JSON documents and their mutations", function()
    for _ = 1, 2000 do
      local text = ws() .. junk(rnd(6)) .. ws()
      single(text)
      single(mutate(text))
    end
  end)

  it("exercised both outcomes and both documented differences", function()
    assert.is_true(stats.accepted > 10000, "accepted " .. stats.accepted)
    assert.is_true(stats.rejected > 3000, "rejected " .. stats.rejected)
    assert.is_true(stats.D1 > 0, "D1 never seen")
    assert.is_true(stats.D2 > 0, "D2 never seen")
    assert.is_true(stats.events > 5000, "events " .. stats.events)
  end)
end)
