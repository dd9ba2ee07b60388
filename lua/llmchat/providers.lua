--- Provider presets (from the provider documents the project was created from).
local M = {}

M.presets = {
  openai = {
    base_url = "https://api.openai.com/v1", env = "OPENAI_API_KEY", auth = "bearer",
    stream_usage = true,
  },
  aimlapi = {
    base_url = "https://api.aimlapi.com/v1", env = "AIMLAPI_API_KEY", auth = "bearer",
    stream_usage = true,
  },
  openrouter = {
    base_url = "https://openrouter.ai/api/v1", env = "OPENROUTER_API_KEY", auth = "bearer",
    stream_usage = true,
    -- optional attribution headers, from client options
    option_headers = { referer = "HTTP-Referer", http_referer = "HTTP-Referer", title = "X-Title", x_title = "X-Title" },
  },
  segmind = {
    -- POST /v1/<model>; the body carries the messages, the model is the path
    base_url = "https://api.segmind.com/v1", env = "SEGMIND_API_KEY", auth = "x-api-key",
    model_in_path = true,
  },
  ollama = {
    base_url = "http://127.0.0.1:11434/v1", auth = "none", needs_key = false,
  },
}

function M.get(name)
  if name == nil then return { auth = "bearer", needs_key = false } end
  local p = M.presets[name]
  if not p then
    local names = {}
    for k in pairs(M.presets) do names[#names + 1] = k end
    table.sort(names)
    error(("llmchat.client: unknown provider '%s' (known: %s)"):format(tostring(name),
      table.concat(names, ", ")), 3)
  end
  return p
end

return M
