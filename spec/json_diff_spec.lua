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
--
-- The same inputs also check the C decoder core.json_decode (src/jdecode.c): it accepts
-- exactly what the scanner accepts (nil + the scanner's message otherwise), and its value
-- deep-equals core.json_normalize(cjson.decode(s)), number subtypes included (a top-level
-- number is normalised too: the reference is json_normalize({ cjson.decode(s) })[1]). The one
-- accepted difference (counted as "exact"): an integer literal beyond 2^53 that fits a
-- lua_Integer is that integer exactly, where cjson's double rounds. Targeted decoder cases
-- (depth limits, numbers, escapes, truncations, nulls) follow the differential part.
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
-- str_pool: a few strings a stream keeps repeating (its id, model, fingerprint), so that
-- chunks reuse the template's own strings, escapes included
local str_pool
local function str(body)
  if not body and str_pool then return pick(str_pool) end
  return '"' .. (body or strbody()) .. '"'
end

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

local stats = { accepted = 0, rejected = 0, D1 = 0, D2 = 0, streams = 0, chunks = 0, events = 0,
  decoded = 0, decode_rejected = 0, exact = 0 }

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

---------------------------------------------------------------------------------------------
-- the decoder (core.json_decode) against core.json_normalize(cjson.decode(s))

local decode, normalize, NULL = core.json_decode, core.json_normalize, cjson.null
local mtype = math.type or function() return "float" end
-- 5.3+: 64-bit integers. 5.1, 5.2 and LuaJIT have doubles only: the decoder reads every
-- number with strtod there, as cjson does, and no number can be "exact" beyond 2^53
local INTEGERS = math.type ~= nil
local TWO53 = 2 ^ 53

-- strict deep comparison of a decoded value (C) with the reference: same types, number
-- subtypes on 5.3+, no metatables. Returns nil or the path of the first difference.
local function ddiff(c, r, path)
  local tc, tr = type(c), type(r)
  if tc == "number" and tr == "number" then
    if c == r and mtype(c) == mtype(r) then return nil end
    -- an exact integer where cjson's double rounded
    if mtype(c) == "integer" and (c > TWO53 or c < -TWO53) and c + 0.0 == r + 0.0 then
      stats.exact = stats.exact + 1
      return nil
    end
    return ("%s: C %s (%s), reference %s (%s)"):format(path, tostring(c), mtype(c), tostring(r), mtype(r))
  end
  if tc ~= tr then return ("%s: C %s, reference %s"):format(path, tostring(c), tostring(r)) end
  if tc ~= "table" then
    if c == r then return nil end
    return ("%s: C %q, reference %q"):format(path, tostring(c), tostring(r))
  end
  if getmetatable(c) ~= nil then return path .. ": C table has a metatable" end
  for k, v in pairs(c) do
    local d = ddiff(v, r[k], path .. "." .. tostring(k))
    if d then return d end
  end
  for k, v in pairs(r) do
    if c[k] == nil then return ddiff(nil, v, path .. "." .. tostring(k)) end
  end
end

-- cj_ok: cjson accepted; scan_ok/scan_err: the scanner's (the assembler's) decision
local function check_decode(text, cj_ok, scan_ok, scan_err)
  local v, err = decode(text)
  if scan_ok then
    if v == nil then fail("decoder rejected what the scanner accepts", text, err) end
    -- wrapped: json_normalize only walks tables, the decoder normalises a top-level number too
    local d = ddiff(v, normalize({ cj.decode(text) })[1], "$")
    if d then fail("decoded value differs from normalize(cjson.decode)", text, d) end
    -- raw: the NULLs stay, floats stay floats; normalising it gives the same value
    local rv = decode(text, true)
    d = ddiff(normalize({ rv })[1], v, "$")
    if d then fail("normalize(decode(s, true)) differs from decode(s)", text, d) end
    stats.decoded = stats.decoded + 1
  else
    if v ~= nil or type(err) ~= "string" then
      fail("decoder accepted what the scanner rejects", text, scan_err)
    end
    if "invalid JSON: " .. err ~= scan_err then
      fail("decoder and scanner give different messages", text, err .. " / " .. tostring(scan_err))
    end
    if not cj_ok or documented_difference(text, err) then
      stats.decode_rejected = stats.decode_rejected + 1
    else
      fail("decoder rejected what cjson accepts", text, err)
    end
  end
end

-- feeds one chunk to both sides; returns true when both accepted it
local function feed(a, R, text)
  local ok, t = pcall(cj.decode, text)
  local deltas, err = a:chunk(text)
  check_decode(text, ok, deltas ~= nil, err)
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

  -- Chunks of one shape with new string values take the assembler's template path
  -- (src/stream.c): the same keys, numbers and nulls, byte for byte, other strings. Strings
  -- inside containers the assembler keeps whole (usage, error) move the container's end.
  local SHAPES = {
    function() return '{"id":' .. str() .. ',"object":"chat.completion.chunk","created":1744186429,"model":' ..
      str() .. ',"system_fingerprint":' .. str() .. ',"choices":[{"index":0,"delta":{"content":' .. str() ..
      '},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":' .. str() .. '}' end,
    function() return '{"id":' .. str() .. ',"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":' ..
      str() .. ',"type":"function","function":{"name":' .. str() .. ',"arguments":' .. str() .. '}}]}}]}' end,
    function() return '{"id":' .. str() .. ',"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,' ..
      '"function":{"arguments":' .. str() .. '}}]}}]}' end,
    function() return '{"choices":[{"index":0,"delta":{"content":' .. str() .. '}},{"index":1,"delta":' ..
      '{"reasoning_content":' .. str() .. '}}],"model":' .. str() .. '}' end,
    function() return '{"id":' .. str() .. ',"choices":[],"usage":{"prompt_tokens":5,"note":' .. str() ..
      ',"completion_tokens":1,"total_tokens":6}}' end,
    function() return '{"error":{"message":' .. str() .. ',"code":502,"type":' .. str() .. '}}' end,
    function() return '{"choices":[{"index":0,"delta":{"refusal":' .. str() .. '},"finish_reason":' .. str() .. '}]}' end,
    function() return ws() .. '{"choices":[{"index":0,"delta":{"content":' .. str() .. '}}]' .. ws() .. '}' end,
  }

  it("agrees on streams that repeat one shape with new strings (the chunk template)", function()
    for _ = 1, 1500 do
      local shapes = { pick(SHAPES), pick(SHAPES), pick(SHAPES) }
      local alternate = chance(0.5)  -- two shapes in turn (tool calls' fragments), or mostly one
      local a, R = core.stream.assembler(), ref_new()
      local last
      -- half the streams draw their strings from a small pool: the template's own strings
      -- come back (the same bytes and closing quote), or one that extends one of them with a
      -- character or an escape
      if chance(0.5) then
        local base = strbody()
        str_pool = { str(), '"' .. base .. '"', '"' .. base .. pick({ "x", '\\"', "\\\\", "\\n" }) .. '"',
                     '"' .. base .. '\\u0041"', str() }
      end
      for i = 1, 2 + rnd(10) do
        if alternate then
          last = chance(0.9) and shapes[i % 2 + 1]() or chance(0.5) and shapes[3]() or mutate(shapes[1]())
        else
          last = chance(0.85) and shapes[1]() or chance(0.7) and shapes[2]() or mutate(shapes[1]())
        end
        feed(a, R, last)
        stats.chunks = stats.chunks + 1
      end
      str_pool = nil
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
    assert.is_true(stats.decoded > 10000, "decoded " .. stats.decoded)
    assert.is_true(stats.decode_rejected > 3000, "decoder rejected " .. stats.decode_rejected)
  end)
end)

---------------------------------------------------------------------------------------------
-- the decoder, case by case

-- one text through the decoder differential (scanner decision from an assembler)
local function check_text(text)
  local a = core.stream.assembler()
  local deltas, err = a:chunk(text)
  a:close()
  check_decode(text, (pcall(cj.decode, text)), deltas ~= nil, err)
end

-- number spellings: digits of every length around the integer and 2^53 limits
local function rnum()
  local t = {}
  if chance(0.4) then t[#t + 1] = "-" end
  local n = pick({ 1, 1, 2, 3, 5, 9, 15, 16, 17, 18, 19, 19, 20, 21, 25, 40, 70, 320 })
  t[#t + 1] = n == 1 and tostring(rnd(10) - 1) or tostring(rnd(9))
  for _ = 2, n do t[#t + 1] = tostring(rnd(10) - 1) end
  if chance(0.3) then
    t[#t + 1] = "."
    for _ = 1, pick({ 1, 1, 2, 5, 17, 30, 80 }) do t[#t + 1] = chance(0.3) and "0" or tostring(rnd(10) - 1) end
  end
  if chance(0.25) then
    t[#t + 1] = pick({ "e", "E", "e+", "e-", "E-" })
    t[#t + 1] = tostring(rnd(pick({ 3, 20, 330, 400 })) - 1)
  end
  return concat(t)
end

local CHAT = '{"id":"chatcmpl-Bx7QmZ3kP9wLr2Tn5VyC8dHsJ4fGa","object":"chat.completion",' ..
  '"created":1754550000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":' ..
  '"assistant","content":"The ancient dragon sleeps beneath the castle.\\nBring the \\"silver\\" ' ..
  'sword, caf\\u00e9 \\ud83d\\udc09 na\195\175ve.","refusal":null,"annotations":[]},"logprobs":null,' ..
  '"finish_reason":"stop"}],"usage":{"prompt_tokens":37,"completion_tokens":19,"total_tokens":56,' ..
  '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":' ..
  '{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,' ..
  '"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_07871e2ad8"}'

local function deep(d, inner, open, close)
  return string.rep(open or "[", d) .. inner .. string.rep(close or "]", d)
end

local function rejects(text, pattern)
  local v, err = decode(text)
  assert.is_nil(v, text)
  assert.is_string(err)
  assert.matches("at character %d+$", err)
  if pattern then assert.matches(pattern, err) end
  return err
end

describe("core.json_decode", function()
  it("agrees with cjson + normalize on random numbers in every position", function()
    for _ = 1, 3000 do
      local text = pick({
        function() return rnum() end,
        function() return "[" .. rnum() .. "," .. rnum() .. "]" end,
        function() return '{"n":' .. rnum() .. ',"m":[' .. rnum() .. ']}' end,
        function() return ws() .. rnum() .. ws() end,
      })()
      check_text(text)
      check_text(mutate(text))
    end
    for _, text in ipairs({ "9007199254740991", "9007199254740992", "9007199254740993", "-9007199254740993",
      "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
      "18446744073709551615", "18446744073709551616", "99999999999999999999", "1e15", "1e16", "1e308",
      "4.9e-324", "2.2250738585072014e-308", "1e-400", "-1e-400", "0.1", "9007199254740993.0" }) do
      check_text(text)
      check_text("[" .. text .. "]")
    end
    if INTEGERS then
      assert.is_true(stats.exact > 0)
    else
      assert.equal(0, stats.exact)  -- every number the same double as cjson's, to the bit
    end
  end)

  it("rejects a non-string with a message", function()
    for _, v in ipairs({ { 5, "number" }, { {}, "table" }, { true, "boolean" } }) do
      local r, err = decode(v[1])
      assert.is_nil(r)
      assert.equal("expected a JSON string, got " .. v[2], err)
    end
    local r, err = decode()
    assert.is_nil(r)
    assert.equal("expected a JSON string, got nil", err)
    r, err = decode(nil, true)
    assert.is_nil(r)
    assert.equal("expected a JSON string, got nil", err)
  end)

  it("decodes up to 1000 levels and rejects 1001, 5000 and a million without crashing", function()
    for _, kind in ipairs({ { "[", "]" }, { '{"k":', "}" } }) do
      local v = assert(decode(deep(1000, "1", kind[1], kind[2])))
      for _ = 1, 999 do v = v[1] or v.k end
      assert.equal(1, v[1] or v.k)
      assert.truthy(decode(deep(999, "{}", kind[1], kind[2])))
      rejects(deep(1001, "1", kind[1], kind[2]), "^too many nested data structures at character")
      rejects(deep(1000, "[]", kind[1], kind[2]), "^too many nested data structures at character")
      rejects(deep(5000, "1", kind[1], kind[2]), "^too many nested data structures")
      rejects(string.rep(kind[1], 5000), "^too many nested data structures")
    end
    rejects(deep(1001, "1"), "at character 1001$")
    rejects(string.rep("[", 1000000), "^too many nested data structures")
    rejects(string.rep('{"a":[', 500) .. "1", "unexpected end of input")
  end)

  it("reads integers exactly and other numbers as strtod does", function()
    if not INTEGERS then
      -- doubles only: every number is what strtod reads, raw or not (no integer subtype to
      -- normalise to); integers beyond 2^53 round to the nearest double
      local function numis(text, want, raw)
        local v = decode(text, raw)
        assert.equal("number", type(v), text)
        assert.equal(want, v, text)
        assert.equal(tonumber(text), v, text)  -- tonumber reads the nearest double too
      end
      for _, raw in ipairs({ false, true }) do
        numis("0", 0, raw)
        numis("1.0", 1, raw)
        numis("1e2", 100, raw)
        numis("1E+2", 100, raw)
        numis("1.5", 1.5, raw)
        numis("-2.5e-3", -0.0025, raw)
        numis("9007199254740992", 2 ^ 53, raw)
        numis("9007199254740993", 2 ^ 53, raw)                          -- 2^53 + 1: rounds down
        numis("9007199254740995", 2 ^ 53 + 4, raw)                      -- ties to even
        numis("-9007199254740993", -(2 ^ 53), raw)
        numis("9223372036854775807", 2 ^ 63, raw)
        numis("-9223372036854775809", -(2 ^ 63), raw)
        numis("123456789012345678901234567890", 1.2345678901234568e29, raw)
        numis("1e400", math.huge, raw)
        numis("-1e400", -math.huge, raw)
        numis("1e-400", 0, raw)
        numis("0." .. string.rep("0", 100) .. "1", 1e-101, raw)       -- longer than 64 bytes
        numis(string.rep("9", 400), math.huge, raw)
        numis("1" .. string.rep("0", 300), 1e300, raw)
        -- a negative zero stays negative, as strtod reads it
        assert.equal(-math.huge, 1 / decode("-0", raw))
        assert.equal(-math.huge, 1 / decode("-0.0", raw))
      end
      for _, bad in ipairs({ "01", "-", "+1", ".5", "1.", "-.5", "1.e5", "1e", "1e+", "0x10", "NaN", "Infinity", "-inf" }) do
        rejects(bad)
      end
      return
    end
    local function numis(text, want, want_type, raw)
      local v = decode(text, raw)
      assert.equal(want, v, text)
      assert.equal(want_type, math.type(v), text)
    end
    numis("0", 0, "integer")
    numis("-0", 0, "integer")
    numis("-0.0", 0, "integer")
    local negz = decode("-0.0", true)
    assert.equal("float", math.type(negz))
    assert.equal(-math.huge, 1 / negz)
    numis("1.0", 1, "integer")
    numis("1.0", 1.0, "float", true)
    numis("1", 1, "integer", true)
    numis("1e2", 100, "integer")
    numis("1E+2", 100.0, "float", true)
    numis("1.5", 1.5, "float")
    numis("-2.5e-3", -0.0025, "float")
    numis("9007199254740993", 9007199254740993, "integer")           -- 2^53 + 1: exact
    numis("-9007199254740993", -9007199254740993, "integer")
    numis("9007199254740992.0", 9007199254740992, "integer")         -- 2^53: whole, in range
    numis("9007199254740994.0", 9007199254740994.0, "float")         -- beyond 2^53: a float
    numis("9223372036854775807", math.maxinteger, "integer")
    numis("-9223372036854775808", math.mininteger, "integer")
    numis("9223372036854775808", 2.0 ^ 63, "float")                  -- too big: a float, as cjson
    numis("-9223372036854775809", -(2.0 ^ 63), "float")
    numis("123456789012345678901234567890", 1.2345678901234568e29, "float")
    numis("1e400", math.huge, "float")
    numis("-1e400", -math.huge, "float")
    numis("1e-400", 0, "integer")
    numis("0." .. string.rep("0", 100) .. "1", 1e-101, "float")      -- longer than 64 bytes
    numis(string.rep("9", 400), 1e400, "float")
    numis("1" .. string.rep("0", 300), 1e300, "float")
    for _, bad in ipairs({ "01", "-", "+1", ".5", "1.", "-.5", "1.e5", "1e", "1e+", "0x10", "NaN", "Infinity", "-inf" }) do
      rejects(bad)
    end
  end)

  it("decodes every escape, surrogate pairs, \\u0000, and passes raw bytes through", function()
    assert.equal('"\\/\b\f\n\r\tA\195\169\226\130\172', decode('"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC"'))
    assert.equal("\240\159\152\128", decode('"\\ud83d\\ude00"'))
    assert.equal("\240\157\132\158x", decode('"\\uD834\\uDD1Ex"'))
    assert.equal("\244\143\191\191", decode('"\\udbff\\udfff"'))
    assert.equal("\239\191\191\237\159\191", decode('"\\uffff\\ud7ff"'))
    assert.equal("a\0b", decode('"a\\u0000b"'))
    assert.equal("\255\254\192\128\237\160\128", decode('"\255\254\192\128\237\160\128"'))
    assert.equal("\1\31\127", decode('"\1\31\127"'))
    local long = string.rep("x\\n\\u00e9", 3000) -- escaped and long: the scratch buffer
    assert.equal(string.rep("x\n\195\169", 3000), decode('"' .. long .. '"'))
    assert.equal(string.rep("y\n", 200), decode('["' .. string.rep("y\\n", 200) .. '"]')[1])
    local t = decode('{"k\\u00e9y":1,"' .. string.rep("\\t", 300) .. '":2}')
    assert.equal(1, t["k\195\169y"])
    assert.equal(2, t[string.rep("\t", 300)])
    for _, bad in ipairs({ '"\\ud800"', '"\\udc00"', '"\\ud800x"', '"\\ud800\\u0041"', '"\\udc00\\ud800"',
      '"\\ud800\\ud800"', '"\\u12"', '"\\u12g4"', '"\\x"', '"a\0b"', '"open', '"\\' }) do
      rejects(bad)
    end
  end)

  it("returns the right strings from its string cache (same length, ends, hash slot)", function()
    -- keys and values that share their length and first and last bytes, differing in one
    -- byte anywhere: each decode must return its own bytes, warm cache or cold
    for n = 1, 45 do
      for _ = 1, 2 do
        local texts = {}
        for i = 1, n do
          local b = {}
          for j = 1, n do b[j] = j == i and "y" or "x" end
          texts[#texts + 1] = concat(b)
        end
        for _, k in ipairs(texts) do
          local t = decode('{"' .. k .. '":"' .. k .. '","' .. k .. 'z":["' .. k .. '"]}')
          assert.equal(k, t[k])
          assert.equal(k, t[k .. "z"][1])
          local keys = 0
          for _ in pairs(t) do keys = keys + 1 end
          assert.equal(2, keys)
        end
      end
    end
    -- a thousand distinct short keys, twice: every slot replaced many times
    for _ = 1, 2 do
      local parts = {}
      for i = 1, 1000 do parts[i] = ('"k%d":%d'):format(i, i) end
      local t = decode("{" .. concat(parts, ",") .. "}")
      for i = 1, 1000 do assert.equal(i, t["k" .. i]) end
      local n = 0
      for _ in pairs(t) do n = n + 1 end
      assert.equal(1000, n)
    end
  end)

  it("sizes tables by what it saw before without changing what it returns", function()
    local big = {}
    for i = 1, 300 do big[i] = tostring(i) end
    local t = decode('{"a":[' .. concat(big, ",") .. '],"o":{"x":1,"y":2,"z":3,"w":4,"v":5,"u":6}}')
    assert.equal(300, #t.a)
    t = decode('{"a":[7],"o":{}}')
    assert.same({ 7 }, t.a)
    assert.same({}, t.o)
    t = decode('{"a":[],"o":{"x":null}}')
    assert.same({}, t.a)
    assert.same({}, t.o)
  end)

  it("accepts any value at the top level", function()
    assert.equal(1, decode(" 1 "))
    assert.equal("x", decode('"x"'))
    assert.is_true(decode("true"))
    assert.is_false(decode("\n false\t"))
    assert.equal(NULL, decode("null"))
    assert.equal(NULL, decode("null", true))
    local e = decode("{}")
    assert.same({}, e)
    assert.is_nil(getmetatable(e))
    assert.is_nil(getmetatable(decode("[]")))
    assert.is_nil(next(decode("[]")))
    rejects("", "^unexpected end of input")
    rejects("   ", "at character 4$")
  end)

  it("drops nulls from objects, keeps them in arrays (raw keeps them everywhere)", function()
    local text = '{"a":null,"b":[null,1,null],"c":{"d":null},"e":[]}'
    local t = decode(text)
    assert.is_nil(t.a)
    assert.equal(3, #t.b)
    assert.equal(NULL, t.b[1])
    assert.equal(1, t.b[2])
    assert.equal(NULL, t.b[3])
    assert.same({}, t.c)
    assert.same({}, t.e)
    local r = decode(text, true)
    assert.equal(NULL, r.a)
    assert.equal(NULL, r.c.d)
    assert.equal(NULL, r.b[3])
    -- duplicate keys: the last wins, and a last null removes the member
    assert.is_nil(decode('{"a":1,"a":null}').a)
    assert.is_nil(decode('{"a":{"x":1},"a":null}').a)
    assert.equal(NULL, decode('{"a":1,"a":null}', true).a)
    assert.equal(2, decode('{"a":null,"a":2}').a)
    assert.equal(3, decode('{"a":1,"b":2,"a":3}').a)
  end)

  it("rejects trailing garbage and reports 1-based positions", function()
    assert.equal("trailing garbage after the JSON value at character 4", select(2, decode("{} x")))
    rejects("[1]]", "^trailing garbage")
    rejects("1 2", "^trailing garbage")
    rejects("{}\0", "^trailing garbage after the JSON value at character 3$")
    assert.equal("invalid token, expected a value at character 4", select(2, decode("[1,x]")))
    assert.equal("expected ':' after an object key at character 6", select(2, decode('{"a" 1}')))
  end)

  it("decodes a chat.completion and rejects every truncation of it", function()
    local t = assert(decode(CHAT))
    assert.equal(1754550000, t.created)
    if INTEGERS then assert.equal("integer", math.type(t.created)) end  -- the only kind on 5.1
    local m = t.choices[1].message
    assert.equal('The ancient dragon sleeps beneath the castle.\nBring the "silver" sword, caf\195\169 ' ..
      "\240\159\144\137 na\195\175ve.", m.content)
    assert.is_nil(m.refusal)
    assert.same({}, m.annotations)
    assert.is_nil(t.choices[1].logprobs)
    assert.equal(56, t.usage.total_tokens)
    assert.equal(0, t.usage.completion_tokens_details.rejected_prediction_tokens)
    check_text(CHAT)
    for i = 0, #CHAT - 1 do
      local text = CHAT:sub(1, i)
      rejects(text)
      check_text(text)
      check_text(CHAT:sub(i + 1)) -- and every suffix
    end
  end)

  it("is what llmchat.json's decode uses", function()
    local json = require("llmchat.json")
    local t = json.decode('{"a":null,"n":[1.0,null]}')
    assert.is_nil(t.a)
    if INTEGERS then
      assert.equal("integer", math.type(t.n[1]))
    else
      assert.equal(1, t.n[1])
    end
    assert.equal(json.null, t.n[2])
    assert.equal(json.null, json.decode('{"a":null}', true).a)
    local v, err = json.decode("[1,")
    assert.is_nil(v)
    assert.equal("unexpected end of input, expected a value at character 4", err)
    v, err = json.decode(42)
    assert.is_nil(v)
    assert.equal("expected a JSON string, got number", err)
  end)

  it("does not depend on the C locale's decimal point", function()
    local old = os.setlocale(nil, "numeric")
    local set
    for _, name in ipairs({ "de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8", "de_DE", "fr_FR" }) do
      set = os.setlocale(name, "numeric")
      if set then break end
    end
    local ok, err = pcall(function()
      assert.equal(1.5, decode("1.5"))
      assert.same({ 0.25, 1e-3, 2 }, decode("[0.25, 1e-3, 2.0]"))
      assert.equal(0.5, decode("0." .. string.rep("0", 70) .. "5e70"))
    end)
    os.setlocale(old, "numeric")
    assert(ok, err)
  end)
end)
