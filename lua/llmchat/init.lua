--- llmchat: OpenAI-compatible chat for Lua, from a C core over libcurl.
-- See README.md for the API.
local core = require("llmchat.core")
local client = require("llmchat.client")
local loop = require("llmchat.loop")
local json = require("llmchat.json")
local errors = require("llmchat.errors")

local M = {
  _VERSION = "llmchat " .. core.version,
  version = core.version,
  core = core,
  json = json,
  null = json.null,
  array = json.array,
  object = json.object,
  sse = core.sse,
}

--- llmchat.client{ provider =, base_url =, api_key =, model =, ... }
function M.client(opts) return client.new(opts) end

--- llmchat.poll(timeout): advances every request in flight, fires their
-- callbacks, returns how many calls (and coroutines) are still going.
M.poll = loop.poll
M.run = loop.run
M.spawn = loop.spawn
M.sleep = loop.sleep

--- The descriptor a host loop can watch (readable = call llmchat.poll(0)),
-- and the seconds until llmchat wants a poll anyway.
M.fd = core.fd
M.fds = core.fds
M.timeout = loop.timeout

--- true when v is an llmchat error
M.is_error = errors.is
M.errors = errors

-- Loaded on first use, so a script that only chats pays for nothing else.
setmetatable(M, {
  __index = function(t, k)
    if k == "conversation" then
      local conv = require("llmchat.conversation")
      rawset(t, k, conv)
      return conv
    elseif k == "content" then
      local c = require("llmchat.content")
      rawset(t, k, c)
      return c
    end
  end,
})

return M
