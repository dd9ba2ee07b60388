--- llmchat.conversation.history: the stored history of a conversation (chat
-- messages, or Responses API input items), without the system prompt.
--
-- A turn builds its entries on the side and commits them only when it
-- succeeds, so the history changes in whole turns (or by the caller's own
-- append / undo / clear).
local message = require("llmchat.message")

local M = {}

local deep_copy = message.deep_copy

local History = {}
History.__index = History
History.__name = "llmchat.conversation.history"

--- An empty history. restore(entry) brings a decoded entry back to its
-- in-memory form (default: llmchat.message.restore, for chat messages).
function M.new(restore)
  return setmetatable({ items = {}, restore = restore or message.restore }, History)
end

--- The number of entries.
function History:len()
  return #self.items
end

--- Adds a copy of an entry from outside (the caller's message, a loaded
-- file): JSON nulls that decoding dropped come back.
function History:add(m)
  self.items[#self.items + 1] = self.restore(deep_copy(m))
end

--- Adds a decoded entry as it is (it becomes the history's own).
function History:adopt(m)
  self.items[#self.items + 1] = self.restore(m)
end

--- Appends a turn's entries (already the history's own).
function History:commit(entries)
  for _, m in ipairs(entries) do self.items[#self.items + 1] = m end
end

--- Copies of every entry, in a JSON array.
function History:copy_items()
  return message.copy_list(self.items)
end

--- A copy of the last entry, or nil.
function History:last()
  local m = self.items[#self.items]
  return m and deep_copy(m)
end

--- Drops the last exchange: the last user message and everything after it.
-- Returns the dropped entries, or nil when there is no user message.
function History:undo()
  local items = self.items
  for i = #items, 1, -1 do
    if items[i].role == "user" then
      local dropped = {}
      for k = i, #items do dropped[#dropped + 1] = items[k] end
      for k = #items, i, -1 do items[k] = nil end
      return dropped
    end
  end
  return nil
end

--- Forgets every entry.
function History:clear()
  self.items = {}
end

--- An independent copy.
function History:copy()
  local h = M.new(self.restore)
  h.items = message.copy_list(self.items)
  return h
end

return M
