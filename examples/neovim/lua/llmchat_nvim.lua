-- luacheck: globals vim
-- llmchat in Neovim: `:LLMChat <prompt>` streams the reply into a new buffer, <C-c> in
-- that buffer cancels it. Neovim's own event loop (libuv, through vim.uv / vim.loop) drives
-- llmchat: a poll handle on llmchat.fd(), a timer from llmchat.timeout() and an idle
-- handle while llmchat has events queued. Nothing blocks the editor and nothing busy-polls.
--
--   require("llmchat_nvim").setup{
--     base_url = "http://127.0.0.1:8080/v1",  -- any OpenAI-compatible server
--     model = "gpt-4o-mini", api_key = nil,   -- nil: the preset's environment variable
--     provider = nil,                         -- "openai", "openrouter", ... (a preset)
--     system = nil,                           -- a system message for every chat
--     params = {},                            -- extra request fields (temperature, ...)
--     window = "split",                       -- "split" | "vsplit" | "tab" | "none"
--     cancel_key = "<C-c>",
--   }
--
-- llmchat must be loadable by Neovim's LuaJIT: `luarocks --lua-version=5.1 install llmchat`,
-- or put its lua/ directory on package.path and its LuaJIT build on package.cpath.
local M = {}

local uv = vim.uv or vim.loop
local api = vim.api

local config = {
  base_url = "http://127.0.0.1:8080/v1",
  model = nil, api_key = nil, provider = nil, system = nil,
  params = {},
  window = "split",
  cancel_key = "<C-c>",
}

local llmchat, client
local chats = {}            -- buffer number -> chat
-- stats.record = true: each poll's wall time (ms); stats.cpu_clock = a function returning
-- this thread's CPU seconds: each poll's CPU time too (what preemption does not inflate)
local stats = { polls = 0, poll_time = {}, poll_cpu = {}, flush_time = {} }
M.stats = stats

local function lib()
  if not llmchat then
    local ok, mod = pcall(require, "llmchat")
    if not ok then
      error("llmchat_nvim: cannot load llmchat; install it for LuaJIT "
        .. "(luarocks --lua-version=5.1 install llmchat) or add it to package.path/cpath: "
        .. tostring(mod), 0)
    end
    llmchat = mod
  end
  return llmchat
end

function M.setup(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("llmchat_nvim.setup: expects a table of options", 2)
  end
  for k, v in pairs(opts or {}) do config[k] = v end
  client = nil
end

local function get_client()
  if not client then
    client = lib().client{ base_url = config.base_url, model = config.model,
      api_key = config.api_key, provider = config.provider }
  end
  return client
end

-- Buffer updates: llmchat's callbacks run inside libuv callbacks (a "fast event" where
-- most of the API is off limits), so they only collect text; one scheduled flush per
-- batch writes it into the buffers.
local dirty, flush_scheduled = {}, false

local function flush()
  flush_scheduled = false
  local t0 = stats.record and uv.hrtime()
  for chat in pairs(dirty) do
    dirty[chat] = nil
    local buf = chat.buf
    if api.nvim_buf_is_valid(buf) then
      if #chat.pending > 0 then
        local text = table.concat(chat.pending)
        chat.pending = {}
        -- append at the end of the last line without reading it back (a long line
        -- would be copied on every flush)
        local n = api.nvim_buf_line_count(buf)
        local col = api.nvim_buf_get_offset(buf, n) - api.nvim_buf_get_offset(buf, n - 1) - 1
        api.nvim_buf_set_text(buf, n - 1, col, n - 1, col, vim.split(text, "\n", { plain = true }))
      end
      if chat.status ~= "streaming" then
        api.nvim_buf_set_var(buf, "llmchat_status", chat.status)
        if chat.status ~= "done" and chat.status ~= "cancelled" then
          vim.notify("llmchat: " .. chat.status, vim.log.levels.WARN)
        end
      end
    end
  end
  if t0 then stats.flush_time[#stats.flush_time + 1] = (uv.hrtime() - t0) / 1e6 end
end

local function mark(chat)
  dirty[chat] = true
  if not flush_scheduled then
    flush_scheduled = true
    vim.schedule(flush)
  end
end

-- The glue between libuv and llmchat ----------------------------------------------------
-- Never a 0 ms timer re-armed from its own callback: libuv before 1.48 (Neovim 0.7-0.9)
-- runs it again in the same loop iteration, so a fast stream starved the editor (one
-- iteration took 833 ms). Queued events (timeout() == 0) get an idle handle instead,
-- which runs once per loop iteration, between the editor's own work.
local watcher, timer, idle
local step

local function stop_driving()
  if watcher then watcher:stop(); timer:stop(); idle:stop() end
end

local function rearm()
  local t = lib().timeout()
  if t == 0 then
    timer:stop()
    if not idle:is_active() then idle:start(function() step() end) end
    return
  end
  if idle:is_active() then idle:stop() end
  if t == nil or t > 0.5 then t = 0.5 end   -- a safety net
  timer:start(math.max(1, math.ceil(t * 1000)), 0, function() step() end)
end

function step()
  local t0, c0 = uv.hrtime(), stats.cpu_clock and stats.cpu_clock()
  local ok, left = pcall(lib().poll, 0)
  stats.polls = stats.polls + 1
  if stats.record then stats.poll_time[#stats.poll_time + 1] = (uv.hrtime() - t0) / 1e6 end
  if c0 then stats.poll_cpu[#stats.poll_cpu + 1] = (stats.cpu_clock() - c0) * 1e3 end
  if not ok then
    vim.schedule(function() vim.notify("llmchat: " .. tostring(left), vim.log.levels.ERROR) end)
    left = 1
  end
  if left == 0 then stop_driving() else rearm() end
end

local function drive()
  if not watcher then
    watcher = uv.new_poll(lib().fd())
    timer = uv.new_timer()
    idle = uv.new_idle()
  end
  if not watcher:is_active() then
    watcher:start("r", function(err)
      if err then
        vim.schedule(function() vim.notify("llmchat: poll handle: " .. err, vim.log.levels.ERROR) end)
        return
      end
      step()
    end)
  end
  step()
end
------------------------------------------------------------------------------------------

local function open_buffer(prompt)
  local buf = api.nvim_create_buf(true, true)
  local w = config.window
  if w == "split" or w == "vsplit" or w == "tab" then
    vim.cmd(w == "tab" and "tabnew" or (w == "vsplit" and "vnew" or "new"))
    local scratch = api.nvim_get_current_buf()
    api.nvim_win_set_buf(0, buf)
    if scratch ~= buf and api.nvim_buf_is_valid(scratch) then api.nvim_buf_delete(scratch, { force = true }) end
  end
  vim.bo[buf].bufhidden = w == "none" and "hide" or "wipe"
  vim.bo[buf].filetype = "markdown"
  api.nvim_buf_set_name(buf, ("llmchat://%d"):format(buf))
  local head = vim.split("> " .. prompt, "\n", { plain = true })
  head[#head + 1] = ""
  head[#head + 1] = ""
  api.nvim_buf_set_lines(buf, 0, -1, false, head)
  if config.cancel_key and config.cancel_key ~= "" then
    api.nvim_buf_set_keymap(buf, "n", config.cancel_key,
      "<Cmd>lua require('llmchat_nvim').cancel(" .. buf .. ")<CR>",
      { noremap = true, silent = true, desc = "cancel the llmchat reply" })
  end
  api.nvim_create_autocmd("BufWipeout", { buffer = buf, callback = function()
    M.cancel(buf)
    chats[buf] = nil
  end })
  return buf, #head   -- the reply starts on the last line (1-based: #head)
end

--- Asks the model; the reply streams into a new buffer. Returns the buffer number.
function M.chat(prompt)
  if type(prompt) ~= "string" or prompt == "" then
    error("llmchat_nvim.chat: expects a non-empty prompt", 2)
  end
  local c = get_client()
  local buf, first_line = open_buffer(prompt)
  local chat = { buf = buf, first_line = first_line, pending = {}, status = "streaming" }
  chats[buf] = chat
  api.nvim_buf_set_var(buf, "llmchat_status", "streaming")
  local messages = {}
  if config.system then messages[1] = { role = "system", content = config.system } end
  messages[#messages + 1] = { role = "user", content = prompt }
  local params = {}
  for k, v in pairs(config.params or {}) do params[k] = v end
  params.messages, params.stream = messages, true
  params.on_delta = function(text)
    chat.pending[#chat.pending + 1] = text
    mark(chat)
  end
  params.on_done = function(_, err)
    if err then
      chat.status = err.kind == "cancelled" and "cancelled" or ("error: " .. tostring(err))
    else
      chat.status = "done"
    end
    chat.req = nil
    mark(chat)
  end
  chat.req = c:start(params)
  drive()
  return buf
end

--- Cancels the reply streaming into `buf` (default: the current buffer).
function M.cancel(buf)
  if buf == nil or buf == 0 then buf = api.nvim_get_current_buf() end
  local chat = chats[buf]
  if chat and chat.req then chat.req:cancel() end
end

function M.cancel_all()
  for _, chat in pairs(chats) do
    if chat.req then chat.req:cancel() end
  end
end

--- The reply shown in `buf` so far, and its status ("streaming", "done", "cancelled",
--- "error: ...").
function M.reply(buf)
  local chat = chats[buf]
  if not chat then return nil end
  local lines = api.nvim_buf_get_lines(buf, chat.first_line - 1, -1, false)
  return table.concat(lines, "\n"), chat.status
end

--- Requests still in flight.
function M.active()
  local n = 0
  for _, chat in pairs(chats) do if chat.req then n = n + 1 end end
  return n
end

-- Leaving Neovim with replies in flight: cancel them and close the handles, so the exit
-- neither waits for the server nor leaves libuv handles behind.
api.nvim_create_autocmd("VimLeavePre", {
  callback = function()
    if llmchat then
      M.cancel_all()
      pcall(llmchat.poll, 0)
    end
    if watcher then
      stop_driving()
      watcher:close(); timer:close(); idle:close()
      watcher = nil
    end
  end,
})

return M
