#!/usr/bin/env lua5.4
-- Writes the canned response bodies the benchmark's nginx serves, into DIR:
--   chat.json     a non-streamed chat.completion (~600 bytes)
--   stream60.sse  a 60-chunk chat.completion.chunk stream
--   long.sse      a 20,000-chunk stream (~6 MB)
--   tools.sse     two parallel tool calls, arguments in small interleaved fragments
--   paced.sse     the 60-chunk stream again; nginx serves it rate-limited
-- Deterministic: the same bytes on every run and machine (a fixed LCG, no os.time),
-- so every client always parses exactly the same input.
-- Usage: lua5.4 bench/gen_bodies.lua DIR [long_chunks]

local dir = arg[1] or error("usage: gen_bodies.lua DIR [long_chunks]")
local LONG = tonumber(arg[2] or "20000")

-- Park-Miller LCG: deterministic across Lua builds (integer arithmetic only).
local seed = 20250101
local function rand(n)
  seed = (seed * 48271) % 2147483647
  return seed % n + 1
end

local words = {
  "the", "a", "model", "stream", "token", "of", "and", "to", "in", "is", "that",
  "for", "it", "with", "as", "was", "on", "be", "at", "by", "this", "from",
  "or", "an", "are", "which", "not", "but", "all", "were", "when", "we", "there",
  "can", "chunk", "server", "client", "request", "latency", "engine", "frame",
  "render", "player", "quest", "dragon", "castle", "sword", "ancient", "whisper",
  "library", "benchmark", "throughput", "assembled", "delta", "connection",
}
-- Occasional pieces that exercise JSON escapes and multi-byte UTF-8, as real
-- model output does (newlines, quotes, accents, an emoji).
local specials = { ".\\n\\n", ",", " \\\"quoted\\\"", " café", " naïve", " 🐉", ":\\n-", "!" }

local function piece()
  if rand(12) == 1 then return specials[rand(#specials)] end
  return " " .. words[rand(#words)]
end

local ID = "chatcmpl-Bx7QmZ3kP9wLr2Tn5VyC8dHsJ4fGa"
local CREATED = 1754550000
local MODEL = "gpt-4o-2024-08-06"
local FP = "fp_07871e2ad8"

local function obfuscation()
  -- OpenAI pads each streamed chunk with a random-length "obfuscation" string.
  local n = rand(12) + 2
  local alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
  local t = {}
  for i = 1, n do
    local k = rand(#alphabet)
    t[i] = alphabet:sub(k, k)
  end
  return table.concat(t)
end

local function chunk(delta_json, finish)
  return string.format(
    'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":"%s",' ..
    '"service_tier":"default","system_fingerprint":"%s","choices":[{"index":0,' ..
    '"delta":%s,"logprobs":null,"finish_reason":%s}],"usage":null,"obfuscation":"%s"}\n\n',
    ID, CREATED, MODEL, FP, delta_json, finish and ('"' .. finish .. '"') or "null",
    obfuscation())
end

local function usage_chunk(prompt, completion)
  return string.format(
    'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":"%s",' ..
    '"service_tier":"default","system_fingerprint":"%s","choices":[],"usage":' ..
    '{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,' ..
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},' ..
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,' ..
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"%s"}\n\n',
    ID, CREATED, MODEL, FP, prompt, completion, prompt + completion, obfuscation())
end

-- A text stream of exactly n data events before [DONE]:
-- role chunk, n-3 content chunks, the finish chunk, the usage chunk.
local function text_stream(n)
  local out = { chunk('{"role":"assistant","content":"","refusal":null}') }
  for _ = 1, n - 3 do
    out[#out + 1] = chunk('{"content":"' .. piece() .. '"}')
  end
  out[#out + 1] = chunk("{}", "stop")
  out[#out + 1] = usage_chunk(37, n - 3)
  out[#out + 1] = "data: [DONE]\n\n"
  return table.concat(out)
end

local function json_escape(s)
  return (s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\"
    elseif c == "\n" then return "\\n" else return string.format("\\u%04x", c:byte()) end
  end))
end

-- Two parallel tool calls whose argument strings arrive in 2-6 byte fragments,
-- the two calls' fragments interleaved (the hardest order for an assembler).
local function tools_stream()
  local calls = {
    { id = "call_Qm3vX8kLp2Rt9YwZ4nB7cD1e", name = "get_weather",
      args = '{"location":"Paris, France","unit":"celsius","days":3}' },
    { id = "call_Hs6Jf0aTg5Ku8Wq2Ez7Lr4Ny", name = "get_weather",
      args = '{"location":"Tokyo, Japan","unit":"celsius","days":3}' },
  }
  local out = {}
  for i, c in ipairs(calls) do
    local delta = string.format(
      '{%s"tool_calls":[{"index":%d,"id":"%s","type":"function","function":{"name":"%s","arguments":""}}]}',
      i == 1 and '"role":"assistant","content":null,"refusal":null,' or "", i - 1, c.id, c.name)
    out[#out + 1] = chunk(delta)
  end
  local pos = { 1, 1 }
  while pos[1] <= #calls[1].args or pos[2] <= #calls[2].args do
    for i, c in ipairs(calls) do
      if pos[i] <= #c.args then
        local n = rand(5) + 1
        local frag = c.args:sub(pos[i], pos[i] + n - 1)
        pos[i] = pos[i] + n
        out[#out + 1] = chunk(string.format(
          '{"tool_calls":[{"index":%d,"function":{"arguments":"%s"}}]}', i - 1, json_escape(frag)))
      end
    end
  end
  out[#out + 1] = chunk("{}", "tool_calls")
  out[#out + 1] = usage_chunk(84, 48)
  out[#out + 1] = "data: [DONE]\n\n"
  return table.concat(out)
end

local function chat_json()
  return string.format(
    '{"id":"%s","object":"chat.completion","created":%d,"model":"%s","choices":[{"index":0,' ..
    '"message":{"role":"assistant","content":"The ancient dragon sleeps beneath the castle. ' ..
    'Bring the silver sword and speak softly at the gate.","refusal":null,"annotations":[]},' ..
    '"logprobs":null,"finish_reason":"stop"}],' ..
    '"usage":{"prompt_tokens":37,"completion_tokens":19,"total_tokens":56,' ..
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},' ..
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,' ..
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},' ..
    '"service_tier":"default","system_fingerprint":"%s"}\n', ID, CREATED, MODEL, FP)
end

local function write(name, body)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(body)
  f:close()
  return #body
end

local sizes = {}
sizes[#sizes + 1] = { "chat.json", write("chat.json", chat_json()) }
local s60 = text_stream(60)
sizes[#sizes + 1] = { "stream60.sse", write("stream60.sse", s60) }
sizes[#sizes + 1] = { "paced.sse", write("paced.sse", s60) }
sizes[#sizes + 1] = { "long.sse", write("long.sse", text_stream(LONG)) }
sizes[#sizes + 1] = { "tools.sse", write("tools.sse", tools_stream()) }
for _, s in ipairs(sizes) do
  io.stderr:write(string.format("  %-13s %9d bytes\n", s[1], s[2]))
end
