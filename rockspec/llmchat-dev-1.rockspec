rockspec_format = "3.0"
package = "llmchat"
version = "dev-1"
source = {
  url = "git+https://github.com/llmchat/llmchat.git",
}
description = {
  summary = "OpenAI-compatible LLM chat for Lua: a C core over libcurl, streaming, never blocking",
  detailed = [[
llmchat talks to OpenAI-compatible chat APIs (OpenAI, AI/ML API, OpenRouter, Segmind,
Ollama and any local server) from Lua 5.1-5.4 and LuaJIT. A C core does HTTP (libcurl),
Server-Sent Events and stream assembly; a Lua layer gives chat, streaming, conversations,
tools, non-blocking requests for game and editor loops, coroutines and batches.
]],
  license = "MIT",
  labels = { "llm", "openai", "http", "sse", "curl" },
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
-- keyed on the library: Debian puts curl/curl.h in a multiarch include
-- directory that LuaRocks does not search, while the compiler does
external_dependencies = {
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    ["llmchat.core"] = {
      -- one translation unit that includes every src/*.c (see src/unity.c): the hot
      -- paths inline across files, and only luaopen_llmchat_core is exported even
      -- under LuaRocks' own CFLAGS
      sources = { "src/unity.c" },
      defines = { "_GNU_SOURCE" },
      incdirs = { "src", "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      libraries = { "curl" },
    },
    ["llmchat"] = "lua/llmchat/init.lua",
    ["llmchat.batch"] = "lua/llmchat/batch.lua",
    ["llmchat.batch.input"] = "lua/llmchat/batch/input.lua",
    ["llmchat.batch.output"] = "lua/llmchat/batch/output.lua",
    ["llmchat.call"] = "lua/llmchat/call.lua",
    ["llmchat.cli"] = "lua/llmchat/cli.lua",
    ["llmchat.cli.batch"] = "lua/llmchat/cli/batch.lua",
    ["llmchat.cli.term"] = "lua/llmchat/cli/term.lua",
    ["llmchat.client"] = "lua/llmchat/client.lua",
    ["llmchat.content"] = "lua/llmchat/content.lua",
    ["llmchat.conversation"] = "lua/llmchat/conversation.lua",
    ["llmchat.conversation.api"] = "lua/llmchat/conversation/api.lua",
    ["llmchat.conversation.budget"] = "lua/llmchat/conversation/budget.lua",
    ["llmchat.conversation.history"] = "lua/llmchat/conversation/history.lua",
    ["llmchat.conversation.persist"] = "lua/llmchat/conversation/persist.lua",
    ["llmchat.conversation.tools"] = "lua/llmchat/conversation/tools.lua",
    ["llmchat.conversation.usage"] = "lua/llmchat/conversation/usage.lua",
    ["llmchat.endpoints"] = "lua/llmchat/endpoints.lua",
    ["llmchat.errors"] = "lua/llmchat/errors.lua",
    ["llmchat.json"] = "lua/llmchat/json.lua",
    ["llmchat.log"] = "lua/llmchat/log.lua",
    ["llmchat.loop"] = "lua/llmchat/loop.lua",
    ["llmchat.message"] = "lua/llmchat/message.lua",
    ["llmchat.providers"] = "lua/llmchat/providers.lua",
    ["llmchat.responses"] = "lua/llmchat/responses.lua",
    ["llmchat.result"] = "lua/llmchat/result.lua",
    ["llmchat.schema"] = "lua/llmchat/schema.lua",
  },
  install = {
    bin = { ["llmchat"] = "bin/llmchat" },
  },
  copy_directories = { "docs", "examples" },
}
test = {
  type = "busted",
}
