---@meta llmchat.batch
-- LuaCATS annotations: the Batch API (docs/reference/batch.md).

---@class llmchat.BatchOptions
---@field requests? llmchat.Request[]|string an array of requests or a JSONL file path
---@field endpoint? string "/v1/chat/completions" (default), "/v1/responses", "/v1/embeddings", "chat", "responses", "embeddings"
---@field completion_window? string "24h"
---@field metadata? table<string, string>
---@field on_progress? fun(status: string, request_counts: table, handle: llmchat.Batch)
---@field interval? number seconds between polls
---@field headers? table<string, string>
---@field timeout? number
---@field connect_timeout? number
---@field max_retries? integer
---@field limits? { requests: integer?, file_bytes: integer?, line_bytes: integer?, embedding_inputs: integer? }

---@class llmchat.Batch
---@field id string
---@field status string
---@field request_counts { total: integer?, completed: integer?, failed: integer? }
---@field done boolean
---@field endpoint? string
---@field input_file_id? string
---@field output_file_id? string
---@field error_file_id? string
---@field errors? table
---@field metadata? table<string, string>
---@field object? table the last batch object
---@field file? table the uploaded input file's object
---@field last_error? llmchat.Error
---@field unmatched? string[] custom_ids of output lines that matched no request
local Batch = {}

---Never blocks: starts a refresh when due; the last known status.
---@return string status
function Batch:poll() end

---Refreshes now.
---@return string? status
---@return llmchat.Error? err
function Batch:refresh() end

---Until the batch is done.
---@param opts? { timeout: number?, interval: number?, on_progress: fun(status: string, counts: table, h: llmchat.Batch)? }
---@return string? status
---@return llmchat.Error? err
function Batch:wait(opts) end

---Asks the provider to cancel.
---@return string? status
---@return llmchat.Error? err
function Batch:cancel() end

---Every result in input order (results or errors).
---@return (llmchat.Result|llmchat.Error)[]? results
---@return llmchat.Error? err
function Batch:results() end

---The same one at a time: for i, res in h:each() do.
---@return (fun(): integer?, (llmchat.Result|llmchat.Error)?)? it
---@return llmchat.Error? err
function Batch:each() end

---@class llmchat.batch
---@field LIMITS table the default limits
---@field ORDER_KEY string "llmchat_order"
---@field TERMINAL table<string, boolean> statuses that end a batch
---@field Batch table the handle's class
---@field tmpname fun(): string the temporary-file namer
local batch = {}

---Uploads and creates a batch (use client:batch).
---@param client llmchat.Client
---@param opts llmchat.BatchOptions
---@return llmchat.Batch? handle
---@return llmchat.Error? err
function batch.create(client, opts) end

---A handle on an existing batch (use client:batch_resume).
---@param client llmchat.Client
---@param id string
---@param opts? llmchat.BatchOptions
---@return llmchat.Batch? handle
---@return llmchat.Error? err
function batch.resume(client, id, opts) end

---One page of batches (use client:batches).
---@param client llmchat.Client
---@param opts? table
---@return table? page
---@return llmchat.Error? err
function batch.list(client, opts) end

return batch
