--- The `llmchat` command line, built on llmchat's public API only.
-- See docs/cli.md. `require("llmchat.cli").main(arg)` returns the exit code.
local llmchat = require("llmchat")
local term = require("llmchat.cli.term")

local M = {}

M.EXIT = {
  ok = 0, failure = 1, usage = 2,
  auth = 3, permission = 4, not_found = 5, insufficient_credits = 6, bad_request = 7,
  rate_limit = 8, server = 9, timeout = 10, network = 11, protocol = 12, stream_error = 13,
  batch_incomplete = 14, batch_failed = 15,
  cancelled = 130, interrupted = 130,
}
local EXIT = M.EXIT

--- The exit code for an llmchat error (or an error kind).
function M.exit_code(err)
  local kind = type(err) == "table" and err.kind or err
  return EXIT[kind] or EXIT.failure
end

M.HELP = [[
usage: llmchat [options] [question ...]
       llmchat [options]                      interactive chat (stdin a terminal)
       llmchat batch run IN.jsonl -o OUT.jsonl [--endpoint PATH] [--interval S] [--timeout S]
       llmchat batch status|results|cancel ID [-o OUT.jsonl]
       llmchat batch list

Asks a model and streams the answer to stdout. Text piped on stdin is added to
the question (after a blank line), or is the question when none is given.

options:
  -m, --model NAME        model (default: $LLMCHAT_MODEL, else the server's)
  -p, --provider NAME     openai | aimlapi | openrouter | segmind | ollama
                          (default: $LLMCHAT_PROVIDER); the key comes from the
                          provider's variable (OPENAI_API_KEY ...) or $LLMCHAT_API_KEY
      --base-url URL      any OpenAI-compatible server (default: $LLMCHAT_BASE_URL)
  -s, --system TEXT       system prompt
      --temperature T     sampling temperature
      --max-tokens N      cap the answer's length
      --no-stream         wait for the whole answer, then print it
      --json              print the whole result as JSON (no streaming)
      --schema FILE       structured output: the answer follows this JSON schema
  -i, --image FILE        attach an image (PNG, JPEG, GIF, WebP); repeatable
      --responses         use the Responses API (/v1/responses)
      --models            list the server's models
      --embed             print the embedding vector of the text as JSON
  -c, --continue          continue the last conversation
      --no-save           do not save this conversation as the last one
      --timeout S         give up on a request after S seconds
      --max-retries N     retries on 429, 5xx and network failures (default 2)
  -H, --header 'N: V'     send this HTTP header too; repeatable
  -o, --output FILE       batch: where the results go (default stdout)
      --endpoint PATH     batch: /v1/chat/completions (default), /v1/responses,
                          /v1/embeddings
      --interval S        batch: seconds between status checks (default 10)
      --metadata K=V      batch: a metadata pair for the provider; repeatable
  -h, --help              this help
      --version           llmchat's version

Conversations are saved in $XDG_DATA_HOME/llmchat/last.json
(default ~/.local/share/llmchat/). Reasoning is shown dimmed on a terminal and
never in piped output. Ctrl-C stops the answer and keeps what arrived.

interactive commands: /help /quit /clear /undo /usage /model NAME /save FILE

exit codes:
   0 success                     8 rate_limit (HTTP 429)
   1 other failure (a file ...)  9 server (HTTP 5xx)
   2 usage (bad options)        10 timeout
   3 auth (HTTP 401, no key)    11 network
   4 permission (HTTP 403)      12 protocol (not what the API promises)
   5 not_found (HTTP 404)       13 stream_error
   6 insufficient_credits       14 batch finished with failed or missing lines
   7 bad_request (HTTP 4xx)     15 batch failed (validation: nothing ran)
                               130 interrupted (Ctrl-C)
]]

---------------------------------------------------------------------------
-- small helpers

local function one_line(s)
  return (tostring(s):gsub("[\r\n]+", " "))
end

-- "file:line: message" -> "message" (errors raised by the library's misuse checks)
local function strip_position(s)
  return (tostring(s):gsub("^[^:\n]*:%d+: ", ""))
end

-- the API key in use: never printed (errors and JSON output are scrubbed)
local secret

local function scrub(s)
  if not secret or type(s) ~= "string" then return s end
  local out, i = {}, 1
  while true do
    local a, b = s:find(secret, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = "<redacted>"
    i = b + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

--- Writes one line on stderr, prefixed with "llmchat: " unless it already is.
local function warn(msg)
  msg = scrub(one_line(msg))
  if not msg:find("^llmchat: ") then msg = "llmchat: " .. msg end
  io.stderr:write(msg, "\n")
  io.stderr:flush()
end
M.warn = warn

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- An error raised to stop the request in flight (Ctrl-C in interactive mode).
local INTERRUPT = setmetatable({}, { __tostring = function() return "interrupted" end })

--- true for the "interrupted!" error that the standalone interpreter raises on
-- SIGINT (lua.c and luajit.c install a hook that raises it at the next
-- instruction), and for our own.
local function is_interrupt(e)
  return e == INTERRUPT or (type(e) == "string" and e:find("interrupted!", 1, true) ~= nil)
end
M.is_interrupt = is_interrupt

--- A deep copy of v that JSON can hold (no functions, cycles or foreign userdata).
local function plain(v, seen)
  local t = type(v)
  if t == "table" then
    if seen[v] then return nil end
    seen[v] = true
    local out = {}
    for k, x in pairs(v) do
      local kt = type(k)
      if kt == "string" or kt == "number" then
        local y = plain(x, seen)
        if y ~= nil then out[k] = y end
      end
    end
    seen[v] = nil
    return out
  elseif t == "string" or t == "number" or t == "boolean" then
    return v
  elseif v == llmchat.null then
    return v
  end
  return nil
end

--- v as one line of JSON (a result, an error, a vector)
function M.to_json(v)
  local ok, text, err = pcall(llmchat.json.encode, plain(v, {}))
  if ok and text then return scrub(text) end
  return nil, tostring(err or text)
end

--- An error as a JSON-ready table (never headers or a body: they may be long)
function M.error_table(e)
  return { kind = e.kind, message = e.message, status = e.status, code = e.code,
    retry_after = e.retry_after }
end

---------------------------------------------------------------------------
-- arguments

local FLAGS = {
  ["-m"] = "model", ["--model"] = "model",
  ["-p"] = "provider", ["--provider"] = "provider",
  ["--base-url"] = "base_url",
  ["-s"] = "system", ["--system"] = "system",
  ["--temperature"] = "temperature",
  ["--max-tokens"] = "max_tokens",
  ["--schema"] = "schema",
  ["-i"] = "image", ["--image"] = "image",
  ["--timeout"] = "timeout",
  ["--max-retries"] = "max_retries",
  ["-H"] = "header", ["--header"] = "header",
  -- batch
  ["-o"] = "output", ["--output"] = "output",
  ["--endpoint"] = "endpoint",
  ["--interval"] = "interval",
  ["--metadata"] = "metadata",
}
local SWITCHES = {
  ["--no-stream"] = "no_stream", ["--json"] = "json", ["--responses"] = "responses",
  ["--models"] = "models", ["--embed"] = "embed", ["-c"] = "continue",
  ["--continue"] = "continue", ["-h"] = "help", ["--help"] = "help",
  ["--version"] = "version", ["--no-save"] = "no_save",
}
local REPEATED = { image = true, header = true, metadata = true }
local NUMBERS = { temperature = true, max_tokens = true, timeout = true, interval = true, max_retries = true }

--- Parses argv: returns opts, words; or nil and a usage message.
function M.parse(argv)
  local opts, words = { image = {}, header = {}, metadata = {} }, {}
  local i, n = 1, #argv
  local only_words = false
  while i <= n do
    local a = argv[i]
    if only_words or a == "-" or not a:find("^%-") then
      words[#words + 1] = a
    elseif a == "--" then
      only_words = true
    else
      local name, value = a:match("^(%-%-[^=]+)=(.*)$")
      name = name or a
      local key = FLAGS[name]
      if key then
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then return nil, "option " .. name .. " needs a value" end
        end
        if NUMBERS[key] then
          local num = tonumber(value)
          if not num or num ~= num then return nil, ("option %s expects a number, got '%s'"):format(name, value) end
          value = num
        end
        if REPEATED[key] then opts[key][#opts[key] + 1] = value else opts[key] = value end
      elseif SWITCHES[name] and value == nil then
        opts[SWITCHES[name]] = true
      else
        return nil, "unknown option " .. name .. " (llmchat --help lists them)"
      end
    end
    i = i + 1
  end
  return opts, words
end

---------------------------------------------------------------------------
-- the client

--- The client from options and the environment: client, or nil, message, exit code.
function M.client(opts)
  local provider = opts.provider or os.getenv("LLMCHAT_PROVIDER")
  if provider == "" then provider = nil end
  local base_url = opts.base_url or os.getenv("LLMCHAT_BASE_URL")
  if base_url == "" then base_url = nil end
  if not provider and not base_url then
    return nil, "no server to talk to: give -p PROVIDER (openai, openrouter ...: the key from $OPENAI_API_KEY ...)"
      .. " or --base-url URL, or set LLMCHAT_PROVIDER / LLMCHAT_BASE_URL", EXIT.usage
  end
  local model = opts.model or os.getenv("LLMCHAT_MODEL")
  if model == "" then model = nil end
  local key = os.getenv("LLMCHAT_API_KEY")
  if key == "" then key = nil end
  local preset_env = provider and ({ openai = "OPENAI_API_KEY", aimlapi = "AIMLAPI_API_KEY",
    openrouter = "OPENROUTER_API_KEY", segmind = "SEGMIND_API_KEY" })[provider]
  secret = key or (preset_env and os.getenv(preset_env)) or nil
  if secret and #secret < 4 then secret = nil end  -- too short to find without false hits
  local headers
  for _, h in ipairs(opts.header or {}) do
    local name, value = h:match("^%s*([^:%s]+)%s*:%s*(.-)%s*$")
    if not name then return nil, "option --header expects 'Name: value', got '" .. h .. "'", EXIT.usage end
    headers = headers or {}
    headers[name] = value
  end
  local copts = { provider = provider, base_url = base_url, model = model, api_key = key,
    timeout = opts.timeout, headers = headers, max_retries = opts.max_retries }
  local ok, client = pcall(llmchat.client, copts)
  if not ok then
    local msg = strip_position(client)
    if msg:find("needs an API key", 1, true) then return nil, msg, EXIT.auth end
    return nil, msg, EXIT.usage
  end
  return client
end

---------------------------------------------------------------------------
-- where conversations live

function M.data_dir()
  local base = os.getenv("XDG_DATA_HOME")
  if not base or base == "" then
    local home = os.getenv("HOME")
    if not home or home == "" then return nil end
    base = home .. "/.local/share"
  end
  return base .. "/llmchat"
end

function M.last_path()
  local dir = M.data_dir()
  return dir and (dir .. "/last.json")
end

-- Saves conv as the last conversation (atomic: conv:save writes a temporary
-- file and renames it). Failures are a warning: the answer was printed.
local function save_last(conv)
  local dir = M.data_dir()
  if not dir then warn("warning: not saved: neither XDG_DATA_HOME nor HOME is set"); return end
  local f = io.open(dir .. "/.", "rb")
  -- conversations are private: the directory is the user's alone
  if f then f:close() else os.execute("mkdir -p -m 700 " .. quote(dir) .. " 2>/dev/null") end
  local ok, err = conv:save(dir .. "/last.json")
  if not ok then warn("warning: conversation not saved: " .. tostring(err)) end
end

---------------------------------------------------------------------------
-- printing answers

--- Where an answer goes: stdout. Reasoning only on a terminal, dimmed.
local function new_printer()
  local p = { tty = term.isatty(1), content = {}, wrote = false, last = "" }
  p.styles = p.tty and term.styles_ok()
  function p.write(kind, text)
    if type(text) ~= "string" or text == "" then return end
    if kind == "reasoning" then
      if not p.tty then return end
      io.stdout:write(p.styles and (term.DIM .. text .. term.RESET) or text)
      p.in_reasoning = true
    elseif kind == "content" or kind == "refusal" then
      if p.in_reasoning then
        io.stdout:write(p.last:find("\n$") and "\n" or "\n\n")
        p.in_reasoning = false
      end
      io.stdout:write(text)
      if kind == "content" then p.content[#p.content + 1] = text end
    else
      return
    end
    p.wrote, p.last = true, text
    io.stdout:flush()
  end
  -- the answer of a call that did not stream
  function p.result(res)
    p.write("reasoning", res.reasoning)
    if type(res.content) == "string" then p.write("content", res.content)
    elseif type(res.refusal) == "string" then p.write("refusal", res.refusal) end
  end
  function p.finish()
    if p.wrote and not p.last:find("\n$") then io.stdout:write("\n") end
    p.wrote, p.last, p.in_reasoning = false, "", false
    io.stdout:flush()
  end
  function p.text() return table.concat(p.content) end
  return p
end
M.new_printer = new_printer

--- The streaming fields of a call: every event goes to on_event, typed by
-- ev.kind; the text of content, reasoning and refusal events is handed to
-- printer.write(kind, text) (tool-call fragments and the Responses API's other
-- events are not shown: the command line runs no tools).
local function stream_into(params, printer)
  params.stream = true
  params.on_event = function(ev)
    if type(ev) ~= "table" then return end
    local kind = ev.kind
    if kind == "content" or kind == "reasoning" or kind == "refusal" then
      printer.write(kind, ev.delta or ev.text)
    end
  end
  return params
end

--- Runs fn() inside llmchat.run. A Ctrl-C (the interpreter's "interrupted!"
-- error, or one byte 3 read by `watch_stdin` in polling mode) stops it: the
-- request in flight is cancelled (llmchat.run cancels the calls of the
-- coroutines it stops). Returns fn's results, or nil, nil, true when interrupted.
function M.run_guarded(fn, watch_stdin)
  local r1, r2
  local done = false
  local ok, e = pcall(llmchat.run, function()
    if watch_stdin then
      llmchat.spawn(function()
        while not done do
          llmchat.sleep(0.05)
          if not done and term.ctrl_c_pending() then error(INTERRUPT, 0) end
        end
      end)
    end
    r1, r2 = fn()
    done = true
  end)
  done = true
  if ok then return r1, r2 end
  if is_interrupt(e) then return nil, nil, true end
  error(e, 0)
end

---------------------------------------------------------------------------
-- one question

-- The text of the question: the words, and what stdin brings when it is not a terminal.
local function question_text(words)
  local q = table.concat(words, " ")
  if not term.isatty(0) then
    local piped = io.stdin:read("*a") or ""
    if piped:find("%S") then
      q = q:find("%S") and (q .. "\n\n" .. piped) or piped
    end
  end
  if not q:find("%S") then return nil end
  return q
end

local function load_schema(path)
  local text, err = read_file(path)
  if not text then return nil, "cannot read schema: " .. tostring(err) end
  local s, derr = llmchat.json.decode(text)
  if type(s) ~= "table" then return nil, "schema " .. path .. " is not a JSON object: " .. tostring(derr) end
  -- OpenAI's json_schema wrapper { name =, schema = {...} } is taken too
  if type(s.schema) == "table" and type(s.name) == "string" then return s.schema, s.name end
  return s
end

local function image_parts(paths)
  local parts = {}
  for _, path in ipairs(paths) do
    local part, err = llmchat.content.image_file(path)
    if not part then return nil, "image " .. path .. ": " .. tostring(err) end
    parts[#parts + 1] = part
  end
  return parts
end

--- The conversation to talk in: a new one, or the last one (-c).
local function open_conversation(client, opts)
  if opts.continue then
    local path = M.last_path()
    local f = path and io.open(path, "rb")
    if f then
      f:close()
      local conv, err = llmchat.conversation.load(path, client)
      if not conv then return nil, err end
      if opts.system then conv.system = opts.system end
      return conv, nil, true
    end
    warn("no saved conversation to continue (" .. tostring(path) .. "): starting a new one")
  end
  return llmchat.conversation{ client = client, system = opts.system }
end

local function request_fields(opts)
  return { model = opts.model, temperature = opts.temperature, max_tokens = opts.max_tokens }
end

-- Keeps what a stopped turn had received: the question and the partial answer.
local function keep_partial(conv, input, text)
  if text and text ~= "" then
    conv:append({ role = "user", content = input }, { role = "assistant", content = text })
    return true
  end
  return false
end

-- A line on stderr when an answer is not all there: cut at max_tokens, or only tool calls.
local function note_incomplete(res)
  if type(res) ~= "table" then return end
  if res.finish_reason == "length" then
    warn("note: the answer was cut short (finish_reason length: raise --max-tokens)")
  end
  local m = res.message
  if type(m) == "table" and type(m.tool_calls) == "table" and #m.tool_calls > 0 and res.content == nil then
    warn("note: the model asked to call tools; llmchat runs none")
  end
end

local function report_error(err, printer, client)
  if printer then printer.finish() end
  local line = tostring(err)
  -- a 400 with no model anywhere is most often that: say how to give one
  if type(err) == "table" and err.kind == "bad_request" and client and not client.model
      and line:lower():find("model", 1, true) then
    line = line .. " (give -m MODEL or set LLMCHAT_MODEL)"
  end
  warn(line)
  return M.exit_code(err)
end

local function chat_once(client, opts, question)
  local input = question
  if #opts.image > 0 then
    local parts, err = image_parts(opts.image)
    if not parts then warn(err); return EXIT.failure end
    input = { question }
    for _, p in ipairs(parts) do input[#input + 1] = p end
  end
  local sayopts = request_fields(opts)
  if opts.schema then
    local schema, name = load_schema(opts.schema)
    if not schema then warn(name); return EXIT.failure end
    sayopts.schema, sayopts.schema_name = schema, name
  end
  local conv, cerr = open_conversation(client, opts)
  if not conv then warn(cerr); return EXIT.failure end
  local printer = new_printer()
  local stream = not opts.no_stream and not opts.json
  if stream then stream_into(sayopts, printer) end

  local res, err, interrupted = M.run_guarded(function() return conv:say(input, sayopts) end)
  if interrupted then
    printer.finish()
    if term.isatty(2) then io.stderr:write("\n") end  -- after the terminal's ^C
    warn("interrupted")
    if keep_partial(conv, input, printer.text()) and not opts.no_save then save_last(conv) end
    return EXIT.interrupted
  end
  if not res then return report_error(err, printer, not opts.model and not conv.model and client) end
  if opts.json then
    io.stdout:write(assert(M.to_json(res)), "\n")
  elseif not stream then
    printer.result(res)
  elseif not printer.wrote then
    -- an answer with nothing streamed (a refusal in one piece, a server that ignored stream)
    printer.result(res)
  end
  printer.finish()
  note_incomplete(res)
  if not opts.no_save then save_last(conv) end
  return EXIT.ok
end

local function respond_once(client, opts, question)
  if #opts.image > 0 then warn("--image does not go with --responses"); return EXIT.usage end
  if opts.continue then warn("--continue does not go with --responses"); return EXIT.usage end
  if type(client.respond) ~= "function" then
    warn("this llmchat has no Responses API (client:respond)")
    return EXIT.failure
  end
  local printer = new_printer()
  local params = request_fields(opts)
  params.input, params.instructions = question, opts.system
  if params.max_tokens then params.max_output_tokens, params.max_tokens = params.max_tokens, nil end
  if opts.schema then
    local schema, name = load_schema(opts.schema)
    if not schema then warn(name); return EXIT.failure end
    params.schema, params.schema_name = schema, name
  end
  local stream = not opts.no_stream and not opts.json
  if stream then stream_into(params, printer) end
  local res, err, interrupted = M.run_guarded(function() return client:respond(params) end)
  if interrupted then printer.finish(); warn("interrupted"); return EXIT.interrupted end
  if not res then return report_error(err, printer, not opts.model and client) end
  if opts.json then io.stdout:write(assert(M.to_json(res)), "\n")
  elseif not printer.wrote then printer.result(res) end
  printer.finish()
  note_incomplete(res)
  return EXIT.ok
end

local function embed(client, opts, question)
  if type(client.embed) ~= "function" then
    warn("this llmchat has no embeddings (client:embed)")
    return EXIT.failure
  end
  local res, err, interrupted = M.run_guarded(function()
    return client:embed{ input = question, model = opts.model }
  end)
  if interrupted then warn("interrupted"); return EXIT.interrupted end
  if not res then return report_error(err) end
  if opts.json then
    io.stdout:write(assert(M.to_json(res)), "\n")
  else
    local v = res.vectors and res.vectors[1]
    if type(v) ~= "table" then warn("the answer has no vector"); return EXIT.protocol end
    io.stdout:write(assert(M.to_json(llmchat.array(v))), "\n")
  end
  return EXIT.ok
end

local function list_models(client, opts)
  local res, err, interrupted = M.run_guarded(function() return client:models() end)
  if interrupted then warn("interrupted"); return EXIT.interrupted end
  if not res then return report_error(err) end
  if opts.json then
    io.stdout:write(assert(M.to_json(res)), "\n")
    return EXIT.ok
  end
  for _, m in ipairs(type(res.data) == "table" and res.data or {}) do
    if type(m) == "table" and m.id then io.stdout:write(tostring(m.id), "\n") end
  end
  return EXIT.ok
end

---------------------------------------------------------------------------
-- interactive chat

local function text_of(m)
  local c = m and m.content
  if type(c) == "string" then return c end
  if type(c) == "table" then return llmchat.content.to_text(c) end
  return (m and m.refusal) or ""
end

local function interactive(client, opts)
  local conv, cerr, resumed = open_conversation(client, opts)
  if not conv then warn(cerr); return EXIT.failure end
  local out_tty = term.isatty(1)
  -- stty works: Ctrl-C is read as a byte while an answer streams (signals off),
  -- so every answer can be stopped; line editing also needs a capable terminal
  local can_stty = term.save_mode()
  local editing = can_stty and out_tty and term.can_edit() and term.raw_mode()
  local editor = term.editor(io.stdout)
  local styles = out_tty and term.styles_ok()
  local function note(s)
    io.stdout:write(styles and (term.DIM .. s .. term.RESET) or s, "\n")
    io.stdout:flush()
  end
  local model = opts.model
  for _, m in ipairs(conv:messages()) do
    if m.role == "user" then editor:add_history(text_of(m)) end
  end
  note(("llmchat %s, %s%s. /help for commands, Ctrl-D to leave."):format(llmchat.version,
    client.base_url, (model or client.model) and (", " .. (model or client.model)) or ""))
  if resumed then note(("(continuing a conversation of %d messages)"):format(#conv:messages())) end

  local function read_line()
    if editing then return editor:read("> ") end
    io.stdout:write("> ")
    io.stdout:flush()
    return io.stdin:read("*l")
  end

  local commands = {}
  function commands.help()
    note("/quit           leave (also Ctrl-D)\n/clear          forget the conversation (keeps the system prompt)\n"
      .. "/undo           forget the last exchange\n/usage          tokens used so far\n"
      .. "/model NAME     talk to another model\n/save FILE      save the conversation to FILE (JSON)\n"
      .. "Ctrl-C stops an answer and keeps what arrived.")
  end
  local function saved()
    if not opts.no_save then save_last(conv) end
  end
  function commands.clear() conv:clear(); saved(); note("(cleared)") end
  function commands.undo()
    if conv:undo() then saved(); note("(dropped the last exchange)") else note("(nothing to undo)") end
  end
  function commands.usage()
    local u = conv:usage()
    note(("%d calls, %d prompt + %d completion = %d tokens"):format(u.calls or 0, u.prompt_tokens or 0,
      u.completion_tokens or 0, u.total_tokens or 0))
  end
  function commands.model(name)
    if name and name ~= "" then model = name; note("(model " .. name .. ")")
    else note("(model " .. tostring(model or client.model or "default") .. ")") end
  end
  function commands.save(file)
    if not file or file == "" then note("(usage: /save FILE)"); return end
    local ok, err = conv:save(file)
    note(ok and ("(saved to " .. file .. ")") or ("(not saved: " .. tostring(err) .. ")"))
  end

  local code = EXIT.ok
  while true do
    local line = read_line()
    if line == nil then break end
    if line == false then
      note("(Ctrl-D or /quit to leave)")
    elseif line:find("%S") then
      editor:add_history(line)
      local cmd, rest = line:match("^/(%a+)%s*(.-)%s*$")
      if cmd == "quit" or cmd == "exit" then break end
      if cmd and commands[cmd] then
        commands[cmd](rest)
      elseif cmd then
        note("(unknown command /" .. cmd .. "; /help)")
      else
        local printer = new_printer()
        local sayopts = request_fields(opts)
        sayopts.model = model
        if not opts.no_stream then stream_into(sayopts, printer) end
        local watch = can_stty and term.polling_mode()
        local ok, res, err, interrupted = pcall(M.run_guarded, function() return conv:say(line, sayopts) end,
          watch)
        if editing then term.raw_mode() elseif watch then term.restore_mode() end
        if not ok then error(res, 0) end
        if interrupted then
          printer.finish()
          note("(interrupted)")
          -- llmchat.run stopped the turn's coroutine inside conv:say, which
          -- leaves that conversation marked busy; a fork is the same history, idle
          conv = conv:fork()
          keep_partial(conv, line, printer.text())
        elseif res then
          if opts.no_stream or not printer.wrote then printer.result(res) end
          printer.finish()
          note_incomplete(res)
        else
          printer.finish()
          warn(tostring(err))
        end
        saved()
      end
    end
  end
  if can_stty then term.restore_mode() end
  return code
end

---------------------------------------------------------------------------
-- main

function M.version_line()
  local core = llmchat.core
  local lua = _VERSION
  if type(jit) == "table" and jit.version then lua = jit.version end  -- luacheck: ignore 113
  return ("llmchat %s (%s, libcurl %s)"):format(llmchat.version, lua, tostring(core.curl_version))
end

local function main(argv)
  local opts, words = M.parse(argv)
  if not opts then
    warn(words)
    return EXIT.usage
  end
  if opts.help then io.stdout:write(M.HELP); return EXIT.ok end
  if opts.version then io.stdout:write(M.version_line(), "\n"); return EXIT.ok end

  if words[1] == "batch" then
    local client, msg, code = M.client(opts)
    if not client then warn(msg); return code end
    return require("llmchat.cli.batch").main(M, client, opts, words)
  end

  local modes = 0
  for _, k in ipairs{ "models", "embed", "responses" } do if opts[k] then modes = modes + 1 end end
  if modes > 1 then warn("--models, --embed and --responses go one at a time"); return EXIT.usage end

  local client, msg, code = M.client(opts)
  if not client then warn(msg); return code end
  if opts.models then return list_models(client, opts) end

  local question = question_text(words)
  if opts.embed then
    if not question then warn("--embed needs text (an argument or stdin)"); return EXIT.usage end
    return embed(client, opts, question)
  end
  if question then
    if opts.responses then return respond_once(client, opts, question) end
    return chat_once(client, opts, question)
  end
  if not term.isatty(0) then
    warn("nothing to ask: give a question, pipe text on stdin, or run on a terminal for a chat")
    return EXIT.usage
  end
  if opts.responses then warn("--responses takes a question (no interactive mode)"); return EXIT.usage end
  return interactive(client, opts)
end

--- Runs the command line; returns the exit code. Never raises: an unexpected
-- error is one line on stderr and exit code 1; Ctrl-C anywhere is 130.
function M.main(argv)
  local ok, code = xpcall(function() return main(argv or {}) end, function(e)
    if is_interrupt(e) then return INTERRUPT end
    return { e = e, tb = debug.traceback(tostring(e), 2) }
  end)
  if ok then return code end
  term.restore_mode()
  if code == INTERRUPT then
    io.stdout:flush()
    warn("interrupted")
    return EXIT.interrupted
  end
  warn("internal error: " .. strip_position(code.e))
  if os.getenv("LLMCHAT_DEBUG") then io.stderr:write(code.tb, "\n") end
  return EXIT.failure
end

return M
