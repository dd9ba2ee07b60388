--- llmchat.conversation.usage: token totals across calls, and their cost.
--
-- Totals count what the provider billed: every call that returned a result,
-- tool rounds included. Chat usage (prompt_tokens, completion_tokens,
-- prompt_tokens_details.cached_tokens, completion_tokens_details.reasoning_tokens)
-- and Responses usage (input_tokens, output_tokens, input_tokens_details,
-- output_tokens_details) add up into the same fields.
local errors = require("llmchat.errors")

local M = {}

local function num(v) return type(v) == "number" and v or 0 end

--- Zero totals.
function M.new()
  return { prompt_tokens = 0, completion_tokens = 0, total_tokens = 0, cached_tokens = 0,
    reasoning_tokens = 0, calls = 0 }
end

--- Adds one call's usage (a result's res.usage, possibly nil) to the totals.
function M.add(total, u)
  total.calls = total.calls + 1
  if type(u) ~= "table" then return total end
  local p = type(u.prompt_tokens) == "number" and u.prompt_tokens or num(u.input_tokens)
  local c = type(u.completion_tokens) == "number" and u.completion_tokens or num(u.output_tokens)
  total.prompt_tokens = total.prompt_tokens + p
  total.completion_tokens = total.completion_tokens + c
  total.total_tokens = total.total_tokens + (type(u.total_tokens) == "number" and u.total_tokens or p + c)
  local pd = u.prompt_tokens_details
  if type(pd) ~= "table" then pd = u.input_tokens_details end
  local cd = u.completion_tokens_details
  if type(cd) ~= "table" then cd = u.output_tokens_details end
  if type(pd) == "table" then total.cached_tokens = total.cached_tokens + num(pd.cached_tokens)
  elseif type(u.prompt_cache_hit_tokens) == "number" then  -- DeepSeek's name
    total.cached_tokens = total.cached_tokens + u.prompt_cache_hit_tokens
  end
  if type(cd) == "table" then total.reasoning_tokens = total.reasoning_tokens + num(cd.reasoning_tokens) end
  -- OpenRouter reports what the call cost, in dollars (credits)
  if type(u.cost) == "number" then total.cost = (total.cost or 0) + u.cost end
  return total
end

--- Totals back from a saved table: numbers only, over zero totals.
function M.restore(saved)
  local total = M.new()
  if type(saved) == "table" then
    for k, v in pairs(saved) do
      if type(v) == "number" then total[k] = v end
    end
  end
  return total
end

--- Dollars for the totals. prices: dollars per million tokens, { input =,
-- output =, cached_input = (default: input) }. Without prices, the cost the
-- provider reported (OpenRouter's usage.cost), or nil and an error of kind
-- "bad_request" when none was. Prices of the wrong shape raise (misuse),
-- naming `where`.
function M.cost(total, prices, where, level)
  level = (level or 1) + 1
  if prices == nil then
    if total.cost then return total.cost end
    return nil, errors.new({ kind = "bad_request",
      message = "the provider reported no cost: pass prices, e.g. conv:cost{ input = 2.5, output = 10 }" })
  end
  if type(prices) ~= "table" or type(prices.input) ~= "number" or type(prices.output) ~= "number" then
    error(where .. ": expected { input = <$ per 1M tokens>, output = <$ per 1M tokens> }", level)
  end
  local cached_price = prices.cached_input
  if cached_price == nil then
    return (total.prompt_tokens * prices.input + total.completion_tokens * prices.output) / 1e6
  end
  if type(cached_price) ~= "number" then error(where .. ": cached_input must be a number", level) end
  local cached = math.min(total.cached_tokens, total.prompt_tokens)
  return ((total.prompt_tokens - cached) * prices.input + cached * cached_price
    + total.completion_tokens * prices.output) / 1e6
end

return M
