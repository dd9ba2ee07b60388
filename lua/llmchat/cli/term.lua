--- The terminal side of the llmchat command line: is a descriptor a terminal,
-- styles, raw mode through stty(1), a small line editor with history, and a
-- non-blocking check for Ctrl-C while a request runs.
--
-- Nothing here needs a C module: `test -t` and `stty` come with every POSIX
-- system (coreutils on Debian). Where they fail (no terminal, TERM=dumb), the
-- callers fall back to plain line reading.
local M = {}

local function ok_of(a, _, c)
  -- os.execute: true/nil, "exit", code on 5.2+; the status number on 5.1/LuaJIT
  if type(a) == "number" then return a == 0 end
  return a == true and (c == nil or c == 0)
end

local tty_cache = {}

--- true when file descriptor fd (0, 1 or 2) is a terminal
function M.isatty(fd)
  if tty_cache[fd] == nil then
    -- the shell inherits our descriptors, so `test -t` asks about ours
    tty_cache[fd] = ok_of(os.execute("test -t " .. math.floor(fd)))
  end
  return tty_cache[fd]
end

--- true when ANSI styles may be written to a terminal (NO_COLOR and TERM=dumb turn them off)
function M.styles_ok()
  local term = os.getenv("TERM")
  local no_color = os.getenv("NO_COLOR")
  return term ~= nil and term ~= "" and term ~= "dumb" and (no_color == nil or no_color == "")
end

--- true when the terminal can take the line editor's cursor moves (TERM set, not dumb)
function M.can_edit()
  local term = os.getenv("TERM")
  return term ~= nil and term ~= "" and term ~= "dumb"
end

M.DIM, M.RESET, M.CLEAR_EOL = "\27[2m", "\27[0m", "\27[K"

---------------------------------------------------------------------------
-- raw mode

local saved_mode

local function stty(args)
  -- stty works on its standard input: ours, the terminal
  return ok_of(os.execute("stty " .. args .. " 2>/dev/null"))
end

--- Saves the terminal's mode (to restore at exit); false when stdin is no terminal.
function M.save_mode()
  if saved_mode then return true end
  local p = io.popen("stty -g 2>/dev/null")
  if not p then return false end
  local mode = p:read("*l")
  p:close()
  if not mode or not mode:find("^[%w:=%-]+$") then return false end
  saved_mode = mode
  return true
end

--- Puts the terminal back as it was.
function M.restore_mode()
  if saved_mode then stty(saved_mode) end
end

--- Keys one by one, no echo, Ctrl-C as a byte (no SIGINT); reads block for one byte.
function M.raw_mode()
  return stty("-icanon -echo -isig -ixon min 1 time 0")
end

--- Same, but a read returns at once when nothing was typed (for polling).
function M.polling_mode()
  return stty("-icanon -echo -isig -ixon min 0 time 0")
end

--- The terminal's width in columns (80 when unknown).
function M.columns()
  local n = tonumber(os.getenv("COLUMNS") or "")
  if n and n > 0 then return n end
  local p = io.popen("stty size 2>/dev/null")
  if p then
    local s = p:read("*l")
    p:close()
    n = s and tonumber(s:match("%d+%s+(%d+)"))
    if n and n > 0 then return n end
  end
  return 80
end

-- keys typed while an answer streamed: the next line starts with them
local typeahead = {}

--- In polling mode: true when Ctrl-C was typed since the last check (other
-- keys are kept for the next line; Ctrl-C drops them).
function M.ctrl_c_pending()
  while true do
    local c = io.stdin:read(1)
    if c == nil or c == "" then return false end
    if c == "\3" then
      typeahead = {}
      return true
    end
    typeahead[#typeahead + 1] = c
  end
end

---------------------------------------------------------------------------
-- the line editor

-- The characters of a UTF-8 string (a broken byte stands for itself).
local function chars_of(s)
  local t = {}
  for ch in s:gmatch("[%z\1-\127\194-\244][\128-\191]*") do t[#t + 1] = ch end
  return t
end

local Editor = {}
Editor.__index = Editor

--- A line editor writing to `out` (io.stdout); history kept in memory.
function M.editor(out)
  return setmetatable({ out = out or io.stdout, history = {} }, Editor)
end

function Editor:add_history(line)
  if line:find("%S") and self.history[#self.history] ~= line then
    self.history[#self.history + 1] = line
  end
end

local function read_byte()
  if typeahead[1] then return table.remove(typeahead, 1) end
  return io.stdin:read(1)
end

-- The rest of an escape sequence after ESC: returns a key name or nil.
local function escape_key()
  local b = read_byte()
  if b ~= "[" and b ~= "O" then return nil end
  local seq = ""
  while true do
    local c = read_byte()
    if not c then return nil end
    seq = seq .. c
    if c:find("[%a~]") or #seq > 8 then break end
  end
  local keys = {
    A = "up", B = "down", C = "right", D = "left", H = "home", F = "end",
    ["1~"] = "home", ["7~"] = "home", ["4~"] = "end", ["8~"] = "end", ["3~"] = "delete",
  }
  return keys[seq] or keys[seq:sub(-1)]
end

--- Reads one line with editing. Returns the line, or nil at end of input
-- (Ctrl-D on an empty line), or false when Ctrl-C abandoned the line.
-- The terminal must be in raw mode.
function Editor:read(prompt)
  local out = self.out
  local buf, pos = {}, 0          -- characters, cursor after buf[pos]
  local hist_i = #self.history + 1
  local draft
  -- a line wider than the terminal scrolls sideways: buf[scroll + 1 ..] is shown
  local avail = math.max(8, (self.columns or M.columns()) - #prompt - 1)
  local scroll = 0
  local function redraw()
    if pos < scroll then scroll = pos end
    if pos > scroll + avail then scroll = pos - avail end
    local last = math.min(#buf, scroll + avail)
    out:write("\r", prompt, table.concat(buf, "", scroll + 1, last), "\27[K")
    local back = last - pos
    if back > 0 then out:write(("\27[%dD"):format(back)) end
    out:flush()
  end
  local function set(text)
    buf = chars_of(text)
    pos = #buf
  end
  out:write(prompt)
  out:flush()
  while true do
    local c = read_byte()
    if c == nil then
      if #buf == 0 then out:write("\n"); return nil end
      out:write("\n")
      return table.concat(buf)
    end
    local key
    if c == "\27" then key = escape_key()
    elseif c == "\r" or c == "\n" then key = "enter"
    elseif c == "\127" or c == "\8" then key = "backspace"
    elseif c == "\1" then key = "home"
    elseif c == "\5" then key = "end"
    elseif c == "\2" then key = "left"
    elseif c == "\6" then key = "right"
    elseif c == "\16" then key = "up"
    elseif c == "\14" then key = "down"
    elseif c == "\3" then key = "ctrl-c"
    elseif c == "\4" then key = "ctrl-d"
    elseif c == "\11" then key = "kill-end"
    elseif c == "\21" then key = "kill-start"
    elseif c == "\23" then key = "kill-word"
    elseif c == "\12" then key = "clear"
    elseif c:byte() >= 32 then
      -- a character, UTF-8 continuation bytes included
      local ch = c
      local b = c:byte()
      local more = b >= 240 and 3 or b >= 224 and 2 or b >= 192 and 1 or 0
      for _ = 1, more do ch = ch .. (read_byte() or "") end
      table.insert(buf, pos + 1, ch)
      pos = pos + 1
      if pos == #buf and pos - scroll <= avail then out:write(ch); out:flush() else redraw() end
    end
    if key == "enter" then
      out:write("\n")
      out:flush()
      return table.concat(buf)
    elseif key == "ctrl-c" then
      out:write("^C\n")
      out:flush()
      return false
    elseif key == "ctrl-d" then
      if #buf == 0 then out:write("\n"); out:flush(); return nil end
      if pos < #buf then table.remove(buf, pos + 1); redraw() end
    elseif key == "backspace" then
      if pos > 0 then table.remove(buf, pos); pos = pos - 1; redraw() end
    elseif key == "delete" then
      if pos < #buf then table.remove(buf, pos + 1); redraw() end
    elseif key == "left" then
      if pos > 0 then pos = pos - 1; redraw() end
    elseif key == "right" then
      if pos < #buf then pos = pos + 1; redraw() end
    elseif key == "home" then pos = 0; redraw()
    elseif key == "end" then pos = #buf; redraw()
    elseif key == "kill-end" then
      for i = #buf, pos + 1, -1 do buf[i] = nil end
      redraw()
    elseif key == "kill-start" then
      for _ = 1, pos do table.remove(buf, 1) end
      pos = 0
      redraw()
    elseif key == "kill-word" then
      local i = pos
      while i > 0 and buf[i]:find("^%s$") do i = i - 1 end
      while i > 0 and not buf[i]:find("^%s$") do i = i - 1 end
      for _ = i + 1, pos do table.remove(buf, i + 1) end
      pos = i
      redraw()
    elseif key == "clear" then
      out:write("\27[H\27[2J")
      redraw()
    elseif key == "up" then
      if hist_i > 1 then
        if hist_i == #self.history + 1 then draft = table.concat(buf) end
        hist_i = hist_i - 1
        set(self.history[hist_i])
        redraw()
      end
    elseif key == "down" then
      if hist_i <= #self.history then
        hist_i = hist_i + 1
        set(self.history[hist_i] or draft or "")
        redraw()
      end
    end
  end
end

return M
