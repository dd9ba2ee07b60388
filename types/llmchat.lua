---@meta llmchat
-- LuaCATS annotations for lua-language-server: the public API of llmchat (no code).
-- Add this directory to `workspace.library`. Reference: docs/reference/.

---@alias llmchat.Provider "openai"|"aimlapi"|"openrouter"|"segmind"|"ollama"

---@alias llmchat.ErrorKind
---| "auth"                 # HTTP 401
---| "permission"           # HTTP 403
---| "not_found"            # HTTP 404
---| "insufficient_credits" # HTTP 402 (OpenRouter), 406 (Segmind)
---| "bad_request"          # HTTP 400, 413, 422, other 4xx; a request that cannot be sent
---| "rate_limit"           # HTTP 429
---| "server"               # HTTP 5xx, an error under a 2xx, a failed response
---| "timeout"              # connect, total or idle timeout (err.timeout), a batch wait
---| "network"              # refused, reset, DNS, TLS
---| "protocol"             # a body that is not what the endpoint promises
---| "stream_error"         # an error event inside an SSE stream
---| "cancelled"            # the caller cancelled (or the batch was cancelled)
---| "expired"              # batch results: the batch expired before the request ran
---| "max_tool_rounds"      # conv:say: tools asked beyond max_tool_rounds
---| "not_ready"            # batch results asked before the batch is done
---| "batch_failed"         # the batch failed validation
---| "io"                   # a file that cannot be read or written
---| "format"               # a saved conversation in the wrong format

---@alias llmchat.TimeoutKind "connect"|"total"|"idle"|"wait"

---@alias llmchat.EventKind "content"|"reasoning"|"refusal"|"tool_call"|"event"|"done"|"error"

---@alias llmchat.Api "chat"|"responses"

---Options of `llmchat.client{}`. An unknown option raises, naming the closest known one.
---@class llmchat.ClientOptions
---@field provider? llmchat.Provider preset: base URL, key variable, auth header
---@field base_url? string e.g. "http://127.0.0.1:8080/v1" (http:// or https:// only)
---@field api_key? string default: the preset's environment variable
---@field model? string the default model of every request
---@field headers? table<string, string> extra headers for every request
---@field timeout? number seconds for a whole request (default 600)
---@field connect_timeout? number seconds to connect (default 10)
---@field idle_timeout? number seconds without a byte before the transfer ends (default 60)
---@field max_retries? integer retries after the first attempt (default 2)
---@field retry_base_delay? number first backoff in seconds, doubling (default 0.5)
---@field retry_max_delay? number longest backoff in seconds (default 8)
---@field max_retry_after? number longest Retry-After honoured, seconds (default 60)
---@field proxy? string proxy URL
---@field ca_file? string PEM CA bundle
---@field verify? boolean false turns TLS verification off (default true)
---@field max_response_size? integer largest body / streamed text in bytes (default 64 MiB)
---@field max_line? integer longest SSE line or event in bytes (default 16 MiB)
---@field accept_encoding? boolean ask for compressed answers (default false)
---@field stream_usage? boolean ask for usage in chat streams (default: true for openai, aimlapi, openrouter)
---@field log? fun(line: string) one line per request, attempt, retry and header (keys redacted)
---@field referer? string OpenRouter: HTTP-Referer
---@field http_referer? string OpenRouter: HTTP-Referer
---@field title? string OpenRouter: X-Title
---@field x_title? string OpenRouter: X-Title

---Request fields of chat / respond / stream / start / map. Every field llmchat does not own
---is sent as-is in the JSON body.
---@class llmchat.Request
---@field messages? table[] chat messages
---@field model? string default: the client's model
---@field input? string|table the Responses API's / embeddings' input
---@field instructions? string the Responses API's instructions
---@field previous_response_id? string the Responses API: continue from a response
---@field tools? table[] tool definitions, sent as-is
---@field tool_choice? string|table
---@field temperature? number
---@field seed? integer
---@field max_tokens? integer
---@field response_format? table
---@field stream? boolean ask for an SSE stream (implied by on_delta / on_event)
---@field api? llmchat.Api the endpoint of chat / stream / start / map (default "chat")
---@field on_delta? fun(text: string, ev: llmchat.Event): boolean? the answer's text; return false to cancel
---@field on_event? fun(ev: llmchat.Event): boolean? every event; return false to cancel
---@field on_done? fun(res: llmchat.Result?, err: llmchat.Error?) when the call ends
---@field headers? table<string, string> extra headers for this request
---@field timeout? number
---@field connect_timeout? number
---@field idle_timeout? number
---@field max_retries? integer
---@field max_response_size? integer
---@field schema? table a JSON schema: structured output decoded into res.data
---@field schema_name? string the schema's name (default "response")
---@field extra_body? table merged into the body last
---@field retry_base_delay? number reserved: accepted and not sent
---@field retry_max_delay? number reserved: accepted and not sent
---@field max_retry_after? number reserved: accepted and not sent
---@field decode_chunks? boolean reserved: accepted and not sent
---@field [string] any any other field goes in the body

---@class llmchat.EmbedRequest: llmchat.Request
---@field input string|string[] the text(s) to embed
---@field dimensions? integer
---@field encoding_format? "float"|"base64" default "base64" (decoded in C)

---@class llmchat.RawRequest
---@field method? string "GET" (default), "POST", "DELETE" ...
---@field path string the path under base_url, starting with /
---@field body? table sent as JSON
---@field multipart? table[] { { name =, data = } | { name =, file =, filename =, type = } }
---@field raw? boolean res.body is the body undecoded
---@field download? string a file path: a 2xx body is written there as it arrives
---@field wait? boolean false: return the call handle at once
---@field headers? table<string, string>
---@field timeout? number
---@field connect_timeout? number
---@field idle_timeout? number
---@field max_retries? integer
---@field max_response_size? integer
---@field on_done? fun(res: table?, err: llmchat.Error?)

---@class llmchat.MapOptions
---@field concurrency? integer requests in flight at once (default 8)
---@field on_result? fun(i: integer, res: llmchat.Result?, err: llmchat.Error?) as each one ends
---@field api? llmchat.Api the endpoint of every item (an item's own api wins)

---@class llmchat.Usage
---@field prompt_tokens? integer
---@field completion_tokens? integer
---@field total_tokens? integer
---@field input_tokens? integer the Responses API
---@field output_tokens? integer the Responses API
---@field [string] any provider extensions (prompt_tokens_details, cost ...)

---@class llmchat.ToolCall
---@field id string
---@field type "function"
---@field ["function"] { name: string, arguments: string }
---@field name? string the Responses API: the function name
---@field arguments? string the Responses API: the arguments JSON
---@field item_id? string the Responses API: the output item's id

---@class llmchat.Message
---@field role string
---@field content? string|table
---@field refusal? string
---@field tool_calls? llmchat.ToolCall[]
---@field tool_call_id? string
---@field name? string

---@class llmchat.Choice
---@field index integer
---@field message llmchat.Message
---@field finish_reason? string
---@field reasoning? string
---@field logprobs? table

---A chat completion (or a Responses API response, shaped the same way).
---@class llmchat.Result
---@field content? string the text of choice 1
---@field message llmchat.Message the assistant message, ready to append to a history
---@field tool_calls? llmchat.ToolCall[]
---@field reasoning? string
---@field refusal? string
---@field finish_reason? string "stop" | "length" | "tool_calls" | ...
---@field usage? llmchat.Usage
---@field model? string
---@field id? string
---@field object? string
---@field created? integer
---@field system_fingerprint? string
---@field service_tier? string
---@field choices? llmchat.Choice[] every choice (chat)
---@field status integer|string chat: the HTTP status; Responses: the response's status ("completed" ...)
---@field http_status integer the HTTP status
---@field headers table<string, string> response headers, lower-case names
---@field data? any with `schema`: the answer decoded
---@field output? table[] the Responses API: the output items
---@field [string] any every other field of the body

---@class llmchat.Embeddings
---@field vectors number[][] one vector per input, in input order
---@field vector number[] vectors[1]
---@field data table[] the items as sent
---@field usage? llmchat.Usage
---@field model? string
---@field object? string
---@field status integer
---@field http_status integer
---@field headers table<string, string>

---@class llmchat.Models
---@field data { id: string, object: string, owned_by: string? }[]
---@field object? string
---@field status integer
---@field http_status integer
---@field headers table<string, string>

---A streamed event.
---@class llmchat.Event
---@field kind llmchat.EventKind
---@field delta? string the fragment's text (tool_call: an arguments fragment)
---@field choice? integer chat: the choice (1-based)
---@field tool? integer tool_call: the call's position (1-based)
---@field id? string tool_call: the call's id (on the fragments that carry it)
---@field name? string tool_call: the function name (on the fragments that carry it)
---@field raw? string the chunk's / event's JSON text
---@field chunk? table chat: the chunk decoded (on first access)
---@field type? string the Responses API: the event type ("response.completed" ...)
---@field event? table the Responses API: the event decoded
---@field result? llmchat.Result kind "done": the result
---@field error? llmchat.Error kind "error": the error
---@field partial? llmchat.Result kind "error": what had arrived

---An error: returned as `nil, err` for failures from the network or the server.
---@class llmchat.Error
---@field kind llmchat.ErrorKind
---@field message string
---@field status? integer the HTTP status when there was a response
---@field code? string|integer the provider's error code
---@field type? string the provider's error type
---@field param? string the provider's error param
---@field error? table the provider's error object (streams, failed responses, batch lines)
---@field retry_after? number seconds, from retry-after-ms / Retry-After
---@field request_id? string x-request-id (or request-id)
---@field body? string the response body text
---@field raw? string text that could not be decoded (a structured answer)
---@field headers? table<string, string> response headers, lower-case names
---@field timeout? llmchat.TimeoutKind which timeout
---@field curl_code? integer libcurl's error number
---@field partial? table what had arrived before the failure
---@field refusal? string conv:say with a schema: the model's refusal
---@field messages? table[] conv:say: the messages the failed turn built
---@field limit? "requests"|"file_bytes"|"line_bytes"|"embedding_inputs" a batch refused before upload
---@field custom_id? string batch results: the request's custom_id
---@field index? integer batch results: the request's input position
---@field batch_status? string batch errors: the batch's status
---@field errors? table[] batch_failed: the provider's validation errors
---@field path? string io / format / bad_request errors of files: the path
---@field cause? llmchat.Error batch downloads: the underlying error
---@field last_error? llmchat.Error a batch wait that timed out: the last failed refresh

---The handle of a started call.
---@class llmchat.Call
---@field done boolean true once ended
---@field res? table the result once done
---@field err? llmchat.Error the error once done
local Call = {}

---res, err once done; nil, nil while in flight.
---@return table? res
---@return llmchat.Error? err
function Call:result() end

---Blocks (yields inside llmchat.run) until done.
---@return table? res
---@return llmchat.Error? err
function Call:wait() end

---Stops the call: it ends with an error of kind "cancelled".
function Call:cancel() end

---The same as cancel.
function Call:close() end

---The C request the call is waiting on (nil before it has one): for the scheduler.
---@return userdata?
function Call:request() end

---The iterator of client:stream.
---@class llmchat.Stream
---@field call llmchat.Call the call handle
---@field guard any internal: cancels the request when the iterator is collected
---@overload fun(): llmchat.Event?
local Stream = {}

---The next event, or nil after the last.
---@return llmchat.Event?
function Stream.next() end

---Cancels the request (if still going) and drops what is queued.
function Stream.close() end

---@class llmchat.Client
---@field provider? string
---@field base_url string
---@field model? string
---@field timeout number
---@field connect_timeout number
---@field idle_timeout number
---@field max_retries integer
---@field retry_base_delay number
---@field retry_max_delay number
---@field max_retry_after number
---@field proxy? string
---@field ca_file? string
---@field verify boolean
---@field max_response_size integer
---@field max_line? integer
---@field accept_encoding? boolean
---@field stream_usage boolean
local Client = {}

---A chat completion (api = "responses": the Responses API). Blocks; yields inside llmchat.run.
---@param params llmchat.Request
---@return llmchat.Result? res
---@return llmchat.Error? err
function Client:chat(params) end

---The Responses API (/responses).
---@param params llmchat.Request
---@return llmchat.Result? res
---@return llmchat.Error? err
function Client:respond(params) end

---Embeddings (/embeddings).
---@param params llmchat.EmbedRequest|string
---@return llmchat.Embeddings? res
---@return llmchat.Error? err
function Client:embed(params) end

---GET /models.
---@param params? llmchat.Request
---@return llmchat.Models? res
---@return llmchat.Error? err
function Client:models(params) end

---Any endpoint under base_url, through the same call path.
---@param params llmchat.RawRequest
---@return table|llmchat.Call|nil res
---@return llmchat.Error? err
function Client:request(params) end

---An iterator of events for a generic for; ends with kind "done" or "error".
---@param params llmchat.Request
---@return llmchat.Stream it
---@return nil
---@return nil
---@return llmchat.Stream closing
function Client:stream(params) end

---Starts a call and returns at once; callbacks fire from llmchat.poll.
---@param params llmchat.Request
---@return llmchat.Call
function Client:start(params) end

---Runs many requests, at most opts.concurrency in flight; results (or errors) in input order.
---@param list llmchat.Request[]
---@param opts? llmchat.MapOptions
---@return (llmchat.Result|llmchat.Error)[]
function Client:map(list, opts) end

---The provider's Batch API: uploads the requests and creates a batch.
---@param opts llmchat.BatchOptions
---@return llmchat.Batch? handle
---@return llmchat.Error? err
function Client:batch(opts) end

---A handle on an existing batch.
---@param id string
---@param opts? llmchat.BatchOptions
---@return llmchat.Batch? handle
---@return llmchat.Error? err
function Client:batch_resume(id, opts) end

---One page of batches, newest first.
---@param opts? { limit: integer?, after: string? }
---@return { data: llmchat.Batch[], has_more: boolean, first_id: string?, last_id: string? }? page
---@return llmchat.Error? err
function Client:batches(opts) end

---@class llmchat.errors
---@field Error table the metatable of errors
local errors = {}

---An error from a table of fields; `secret` is scrubbed from every string reachable from it.
---@param t table
---@param secret? string
---@return llmchat.Error
function errors.new(t, secret) end

---true for an llmchat error.
---@param v any
---@return boolean
function errors.is(v) end

---The error kind of an HTTP status.
---@param status integer
---@return llmchat.ErrorKind
function errors.kind_for_status(status) end

---s with every occurrence of secret replaced by "<redacted>".
---@param s string
---@param secret string
---@return string
function errors.scrub(s, secret) end

---The same on every string reachable from v, in place; returns v.
---@generic T
---@param v T
---@param secret string
---@return T
function errors.scrub_all(v, secret) end

---@class llmchat.sse.Event
---@field event string the event type ("message" by default)
---@field data string
---@field id? string
---@field retry? integer

---@class llmchat.sse.Parser
local SseParser = {}

---The events completed by these bytes; nil, message, events after a line over max_line.
---@param bytes string
---@return llmchat.sse.Event[]? events
---@return string? err
function SseParser:feed(bytes) end

---The end of the input: normally {} (an incomplete event is discarded).
---@return llmchat.sse.Event[]? events
---@return string? err
function SseParser:finish() end

---Frees the parser.
function SseParser:close() end

---@class llmchat.sse
local sse = {}

---A Server-Sent-Events parser.
---@param opts? { max_line: integer? }
---@return llmchat.sse.Parser
function sse.parser(opts) end

---@class llmchat
---@field version string e.g. "0.2.0"
---@field _VERSION string e.g. "llmchat 0.2.0"
---@field core table the C module (engine internals, not a stable API)
---@field json llmchat.json
---@field null lightuserdata JSON null in decoded arrays
---@field sse llmchat.sse
---@field errors llmchat.errors
---@field conversation llmchat.conversation
---@field content llmchat.content
local llmchat = {}

---A client. Raises on an unknown option, a wrong option type, a preset without its key.
---@param opts? llmchat.ClientOptions
---@return llmchat.Client
function llmchat.client(opts) end

---Advances every request, fires callbacks and timers, resumes coroutines; returns how
---many calls and coroutines are still going.
---@param timeout? number seconds to wait for activity (default 0)
---@param budget? number|false seconds of event delivery (default 0.001 for poll(0))
---@return integer
function llmchat.poll(timeout, budget) end

---Runs fn as a coroutine and drives everything until it and what it spawned are done.
---@param fn fun(...)
---@param ... any
function llmchat.run(fn, ...) end

---Starts fn as a coroutine driven by run / poll.
---@param fn fun(...)
---@param ... any
---@return thread
function llmchat.spawn(fn, ...) end

---Yields that long inside a coroutine; elsewhere drives the engine meanwhile.
---@param seconds number
function llmchat.sleep(seconds) end

---The epoll descriptor: readable means "call llmchat.poll(0)".
---@return integer
function llmchat.fd() end

---The sockets libcurl watches now.
---@return { fd: integer, read: boolean, write: boolean }[]
function llmchat.fds() end

---Seconds until llmchat wants a poll anyway; nil when nothing is scheduled.
---@return number?
function llmchat.timeout() end

---true when v is an llmchat error.
---@param v any
---@return boolean
function llmchat.is_error(v) end

---Marks t to be sent as a JSON array.
---@generic T: table
---@param t? T
---@return T
function llmchat.array(t) end

---Marks t to be sent as a JSON object.
---@generic T: table
---@param t? T
---@return T
function llmchat.object(t) end

return llmchat
