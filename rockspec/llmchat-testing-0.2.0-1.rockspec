-- Release rockspec: generated from llmchat-testing-dev-1.rockspec by `make release-rockspec`
-- (the version and the source tag differ; spec/version_spec.lua checks the rest agrees).
rockspec_format = "3.0"
package = "llmchat-testing"
version = "0.2.0-1"
source = {
  url = "git+https://github.com/llmchat/llmchat.git",
  tag = "v0.2.0",
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
-- type "none" with an explicit install list: the builtin type would also copy the
-- checkout's lua/ directory (the library itself) into this rock
build = {
  type = "none",
  install = {
    bin = { ["llmchat-server"] = "bin/llmchat-server" },
    lua = {
      ["llmchat.testing"] = "testing/llmchat/testing/init.lua",
      ["llmchat.testing.chat"] = "testing/llmchat/testing/chat.lua",
      ["llmchat.testing.embeddings"] = "testing/llmchat/testing/embeddings.lua",
      ["llmchat.testing.gzip"] = "testing/llmchat/testing/gzip.lua",
      ["llmchat.testing.http"] = "testing/llmchat/testing/http.lua",
      ["llmchat.testing.json"] = "testing/llmchat/testing/json.lua",
      ["llmchat.testing.model"] = "testing/llmchat/testing/model.lua",
      ["llmchat.testing.responses"] = "testing/llmchat/testing/responses.lua",
      ["llmchat.testing.scenario"] = "testing/llmchat/testing/scenario.lua",
      ["llmchat.testing.store"] = "testing/llmchat/testing/store.lua",
      ["llmchat.testing.util"] = "testing/llmchat/testing/util.lua",
      ["llmchat.testing.writers"] = "testing/llmchat/testing/writers.lua",
    },
  },
  copy_directories = { "docs" },
}
