-- luacheck: globals vim
-- :LLMChat <prompt>   streams a reply into a new buffer (<C-c> in it cancels)
-- :LLMChatCancel[!]   cancels the current buffer's reply (! : every reply)
-- Configure with require("llmchat_nvim").setup{ base_url = ..., model = ..., ... }
if vim.g.loaded_llmchat_nvim then return end
vim.g.loaded_llmchat_nvim = true

vim.api.nvim_create_user_command("LLMChat", function(opts)
  require("llmchat_nvim").chat(opts.args)
end, { nargs = "+", desc = "Ask the model; the reply streams into a new buffer" })

vim.api.nvim_create_user_command("LLMChatCancel", function(opts)
  local m = require("llmchat_nvim")
  if opts.bang then m.cancel_all() else m.cancel() end
end, { bang = true, desc = "Cancel the reply streaming into this buffer (! : all)" })
