--- llmchat.testing.model: the test server's deterministic model.
--
-- Pure functions, no I/O: what a request is answered with (the echo of the last user text,
-- or what the mock scripts), shaped as chat completions, Responses API objects or
-- embeddings. The batch runner calls the same functions as the single endpoints.
local json = require("llmchat.testing.json")
local util = require("llmchat.testing.util")

local sformat, sbyte, concat = string.format, string.byte, table.concat
local floor = math.floor
local is_str, is_tab, num, merge, tokens = util.is_str, util.is_tab, util.num, util.merge, util.tokens
local text_of, utf8_cut = util.text_of, util.utf8_cut
local array, NULL = json.array, json.null

local M = {}

---------------------------------------------------------------------------------------------
-- Chat completions
---------------------------------------------------------------------------------------------
function M.last_user_text(messages)
  if not is_tab(messages) then return "" end
  for i = #messages, 1, -1 do
    local m = messages[i]
    if is_tab(m) and m.role == "user" then return text_of(m.content) end
  end
  return ""
end

function M.prompt_bytes(messages)
  local n = 0
  if not is_tab(messages) then return 0 end
  for _, m in ipairs(messages) do
    if is_tab(m) then
      n = n + #text_of(m.content)
      if is_tab(m.tool_calls) then
        for _, tc in ipairs(m.tool_calls) do
          local fn = is_tab(tc) and tc["function"]
          if is_tab(fn) then
            n = n + #(is_str(fn.name) and fn.name or "") + #(is_str(fn.arguments) and fn.arguments or "")
          end
        end
      end
    end
  end
  return n
end

local function count_assistant(messages)
  local n = 0
  if is_tab(messages) then
    for _, m in ipairs(messages) do
      if is_tab(m) and m.role == "assistant" then n = n + 1 end
    end
  end
  return n
end

function M.normalize_tool_calls(list)
  local calls = {}
  if not is_tab(list) then return calls end
  for i, tc in ipairs(list) do
    if is_tab(tc) then
      local fn = is_tab(tc["function"]) and tc["function"] or tc
      local args = fn.arguments
      if args == nil or args == NULL then args = "{}"
      elseif not is_str(args) then args = json.encode(args) end
      calls[#calls + 1] = { id = is_str(tc.id) and tc.id or ("call_" .. i),
        name = tostring(fn.name or "tool"), arguments = args }
    end
  end
  return calls
end

-- Cut the reply at the earliest stop sequence.
local function apply_stop(content, stop)
  if is_str(stop) then stop = { stop } end
  if not is_tab(stop) then return content, false end
  local cut
  for _, s in ipairs(stop) do
    if is_str(s) and s ~= "" then
      local at = content:find(s, 1, true)
      if at and (not cut or at < cut) then cut = at end
    end
  end
  if cut then return content:sub(1, cut - 1), true end
  return content, false
end

--- What one answer says: content, reasoning, refusal, tool calls, finish_reason, token
-- counts. echo: the text repeated when the mock scripts nothing; limit: max output tokens.
function M.answer_spec(e, echo, stop, limit)
  local spec = { tool_calls = M.normalize_tool_calls(e.tool_calls) }
  if e.reply ~= nil then
    spec.content = is_str(e.reply) and e.reply or (e.reply ~= NULL and tostring(e.reply) or nil)
  elseif num(e.size) then
    spec.content = util.filler(math.min(num(e.size), 2^30))
  elseif #spec.tool_calls == 0 and not is_str(e.refusal) then
    spec.content = echo
  end
  if is_str(e.refusal) then spec.refusal = e.refusal end
  if is_str(e.reasoning) then spec.reasoning = e.reasoning end
  local finish = #spec.tool_calls > 0 and "tool_calls" or "stop"
  if spec.content then
    spec.content = apply_stop(spec.content, stop)
    if limit and #spec.content > 4 * limit then
      spec.content = utf8_cut(spec.content, 4 * math.max(0, floor(limit)))
      finish = "length"
    end
  end
  if is_str(e.finish_reason) then finish = e.finish_reason end
  spec.finish_reason = finish
  local bytes = #(spec.content or "") + #(spec.reasoning or "") + #(spec.refusal or "")
  for _, tc in ipairs(spec.tool_calls) do bytes = bytes + #tc.name + #tc.arguments end
  spec.completion_tokens = tokens(bytes)
  spec.reasoning_tokens = tokens(#(spec.reasoning or ""))
  return spec
end

-- The script entry for the turn'th answer (1-based), merged over the mock.
function M.script_entry(mock, turn)
  if is_tab(mock.script) and #mock.script > 0 then
    return merge(mock, mock.script[math.min(turn, #mock.script)])
  end
  return mock
end

--- The specs of a chat request's choices, and the mock entry they came from.
function M.choice_specs(body, mock)
  local entry = M.script_entry(mock, count_assistant(body.messages) + 1)
  local per = is_tab(entry.choices) and entry.choices or {}
  local n = floor(num(body.n) or #per)
  n = math.min(math.max(n, 1), 128)
  local echo = M.last_user_text(body.messages)
  local limit = num(body.max_completion_tokens) or num(body.max_tokens)
  local specs = {}
  for i = 1, n do
    specs[i] = M.answer_spec(per[i] and merge(entry, per[i]) or entry, echo, body.stop, limit)
  end
  return specs, entry
end

function M.make_usage(prompt, completion, reasoning)
  return { prompt_tokens = prompt, completion_tokens = completion,
    total_tokens = prompt + completion,
    prompt_tokens_details = { cached_tokens = 0, audio_tokens = 0 },
    completion_tokens_details = { reasoning_tokens = reasoning, audio_tokens = 0,
      accepted_prediction_tokens = 0, rejected_prediction_tokens = 0 } }
end

function M.total_usage(prompt_tokens, specs, entry)
  if is_tab(entry.usage) then return entry.usage end
  local completion, reasoning = 0, 0
  for _, s in ipairs(specs) do
    completion = completion + s.completion_tokens
    reasoning = reasoning + s.reasoning_tokens
  end
  return M.make_usage(prompt_tokens, completion, reasoning)
end

local function tool_call_object(tc)
  return { id = tc.id, type = "function", ["function"] = { name = tc.name, arguments = tc.arguments } }
end

--- A chat.completion object. ctx: id, created, model, prompt_tokens.
function M.completion(ctx, specs, entry)
  local field = is_str(entry.reasoning_field) and entry.reasoning_field or "reasoning_content"
  local choices = array()
  for i, s in ipairs(specs) do
    local msg = { role = "assistant", content = s.content or NULL,
      refusal = s.refusal or NULL, annotations = array() }
    if s.reasoning then msg[field] = s.reasoning end
    if #s.tool_calls > 0 then
      msg.tool_calls = array()
      for j, tc in ipairs(s.tool_calls) do msg.tool_calls[j] = tool_call_object(tc) end
    end
    choices[i] = { index = i - 1, message = msg, logprobs = NULL, finish_reason = s.finish_reason }
  end
  return { id = ctx.id, object = "chat.completion", created = ctx.created,
    model = ctx.model, choices = choices, usage = M.total_usage(ctx.prompt_tokens, specs, entry),
    service_tier = "default", system_fingerprint = "fp_llmchat" }
end

--- The stream deltas of one choice, in order; each is { delta = table, bytes = n }.
function M.choice_deltas(s, entry, size)
  local field = is_str(entry.reasoning_field) and entry.reasoning_field or "reasoning_content"
  local pieces = util.utf8_pieces
  local list = { { delta = { role = "assistant", content = "", refusal = NULL }, role = true } }
  local function add(delta, bytes) list[#list + 1] = { delta = delta, bytes = bytes } end
  if s.reasoning then
    for _, p in ipairs(pieces(s.reasoning, size)) do add({ [field] = p }, #p) end
  end
  if s.content then
    for _, p in ipairs(pieces(s.content, size)) do add({ content = p }, #p) end
  end
  if s.refusal then
    for _, p in ipairs(pieces(s.refusal, size)) do add({ refusal = p }, #p) end
  end
  local mode = entry.tool_index_mode
  local function fragment(i, tc, first, piece)
    local call = { ["function"] = { arguments = piece } }
    if mode == "zero" then call.index = 0 elseif mode ~= "omit" then call.index = i - 1 end
    if first then
      call.id, call.type, call["function"].name = tc.id, "function", tc.name
    end
    return { tool_calls = array{ call } }
  end
  local per_call = {}
  for i, tc in ipairs(s.tool_calls) do
    local frags = { { delta = fragment(i, tc, true, ""), bytes = #tc.name } }
    for _, p in ipairs(pieces(tc.arguments, size)) do
      frags[#frags + 1] = { delta = fragment(i, tc, false, p), bytes = #p }
    end
    per_call[i] = frags
  end
  if entry.parallel_interleave == true then
    local k = 1
    while true do
      local any = false
      for _, frags in ipairs(per_call) do
        if frags[k] then list[#list + 1] = frags[k]; any = true end
      end
      if not any then break end
      k = k + 1
    end
  else
    for _, frags in ipairs(per_call) do
      for _, f in ipairs(frags) do list[#list + 1] = f end
    end
  end
  return list
end

---------------------------------------------------------------------------------------------
-- Embeddings
---------------------------------------------------------------------------------------------

--- Component j (0-based) of the vector of text t: h = j + 1, then for each byte b of t
-- h = (h * 31 + b) % 2049; the component is (h - 1024) / 1024 (exact in float32).
function M.embedding(text, dims)
  local v = array()
  for j = 0, dims - 1 do
    local h = j + 1
    for i = 1, #text do h = (h * 31 + sbyte(text, i)) % 2049 end
    v[j + 1] = (h - 1024) / 1024
  end
  return v
end

--- The text a token array stands for: its integers joined by single spaces.
function M.token_text(list)
  local parts = {}
  for i, t in ipairs(list) do parts[i] = sformat("%d", t) end
  return concat(parts, " ")
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = sbyte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1, c2 = floor(n / 262144) % 64, floor(n / 4096) % 64
    local c3, c4 = floor(n / 64) % 64, n % 64
    out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1)
      .. (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
  end
  return concat(out)
end

--- A vector as base64 of little-endian float32 values (Lua 5.3+: string.pack).
function M.float32_base64(v)
  local parts = {}
  for i, x in ipairs(v) do parts[i] = string.pack("<f", x) end
  return M.base64(concat(parts))
end

return M
