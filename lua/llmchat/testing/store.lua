local M = {}
function M.new() return {} end
return M
