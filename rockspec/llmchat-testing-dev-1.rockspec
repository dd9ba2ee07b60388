rockspec_format = "3.0"
package = "llmchat-testing"
version = "dev-1"
source = {
  url = "git+https://github.com/llmchat/llmchat.git",
}
description = {
  summary = "A local OpenAI-compatible server with a deterministic model, for offline tests",
  detailed = [[
llmchat-testing is the local server llmchat's own specs run against: chat completions
(streamed too), the Responses API, embeddings, files and batches, answered by a
deterministic echo model, with scenario controls for errors, stalls, drops, broken streams,
gzip bombs and other faults (docs/server.md). Pure Lua; it does not need llmchat itself.
Start it with `llmchat-server`, or embed it with require("llmchat.testing").
]],
  license = "MIT",
  labels = { "llm", "openai", "testing", "mock", "http", "sse" },
}
dependencies = {
  "lua >= 5.3",  -- gzip answers and base64 embeddings use integer operators and string.pack
  "luasocket",
  "luasec",      -- only for --tls-cert/--tls-key
  "lua-cjson",
}
-- type "none" with an explicit list: the "builtin" type also copies the whole lua/ directory
-- (the llmchat library with it), and this rock installs only the server
build = {
  type = "none",
  install = {
    lua = {
      ["llmchat.testing"] = "lua/llmchat/testing/init.lua",
      ["llmchat.testing.chat"] = "lua/llmchat/testing/chat.lua",
      ["llmchat.testing.embeddings"] = "lua/llmchat/testing/embeddings.lua",
      ["llmchat.testing.gzip"] = "lua/llmchat/testing/gzip.lua",
      ["llmchat.testing.http"] = "lua/llmchat/testing/http.lua",
      ["llmchat.testing.json"] = "lua/llmchat/testing/json.lua",
      ["llmchat.testing.model"] = "lua/llmchat/testing/model.lua",
      ["llmchat.testing.responses"] = "lua/llmchat/testing/responses.lua",
      ["llmchat.testing.scenario"] = "lua/llmchat/testing/scenario.lua",
      ["llmchat.testing.store"] = "lua/llmchat/testing/store.lua",
      ["llmchat.testing.util"] = "lua/llmchat/testing/util.lua",
      ["llmchat.testing.writers"] = "lua/llmchat/testing/writers.lua",
    },
    bin = { ["llmchat-server"] = "bin/llmchat-server" },
  },
  copy_directories = { "docs" },
}
