---@meta periskope
-- LuaLS (lua-language-server) annotations for the periskope C module:
-- types, completion and hover text for require "periskope". Not loaded
-- at run time; point LuaLS at the directory holding this file
-- ("Lua.workspace.library"). spec/meta_spec.lua checks it against the
-- module: every name here exists there, and the other way round.

---@class periskope
---@field VERSION string The module's version, e.g. "0.1.0".
---@field limiter periskope.limiters Shared pacing stores for the `limiter` option.
local periskope = {}

---A new client. Raises on an unknown option, a wrong type or a value out of
---range, naming the option and what it accepts; and when no API key is given
---here nor in PERISKOPE_API_KEY.
---@param options? periskope.Options
---@return periskope.Client
function periskope.new(options) end

---Sets the options of the default client that `periskope.pin` uses; checks
---them all and changes nothing if one is bad; opens nothing.
---@param options? periskope.Options
function periskope.configure(options) end

---`Client:pin` on the default client, created at the first call.
---@param args periskope.PinArgs
---@return periskope.Result? result when the server answered, whatever the status
---@return string? message when no answer came: "periskope: ..."
---@return periskope.FailureKind? kind when no answer came
function periskope.pin(args) end

---Sans-I/O: turns a response you obtained yourself into the result table
---`pin` returns. Header names in any case; a string or an array of strings each.
---@param status integer
---@param headers? table<string, string|string[]>
---@param body? string
---@return periskope.Result
function periskope.read_response(status, headers, body) end

---Makes the one exchange a pin job's "send" step asks for, blocking, in
---whatever Lua state calls it (a thread), through connections that state
---keeps; its results are what the next `job:step` takes.
---@param request periskope.SendRequest
---@return integer|nil status nil when no answer came
---@return string head_or_message the response head, or "periskope: ..."
---@return string body_or_kind the response body, or the kind of failure
---@return number elapsed seconds
function periskope.perform(request) end

---The line PERISKOPE_DEBUG=1 writes for an event, without its newline:
---"periskope: <type>", then attempt, method, url, status, elapsed, trace_id,
---kind, seconds, reason, error, message and index as key=value when present
---(never the headers). For a hook that logs what the module would.
---@param event periskope.Event
---@return string
function periskope.debug_line(event) end

---@class periskope.limiters
local limiters = {}

---Pacing shared by every nginx worker using the same dictionary and key.
---@param dict table an nginx shared dictionary, ngx.shared.NAME
---@return periskope.Limiter
function limiters.shared_dict(dict) end

---Pacing shared by every process, on every host, using the same Redis and
---key. Raises in a build of periskope without hiredis.
---@param options? periskope.RedisOptions
---@return periskope.Limiter
function limiters.redis(options) end

---A pacing store, for the `limiter` option.
---@class periskope.Limiter: userdata

---@class periskope.RedisOptions
---@field host? string Default "127.0.0.1".
---@field port? integer 1-65535, default 6379.
---@field password? string Sent with AUTH; never shown.
---@field db? integer Selected with SELECT, default 0.
---@field prefix? string 1-64 bytes, default "periskope:".
---@field timeout? number Seconds one store operation may take in all, connect included, > 0 and <= 60, default 1.

---@class periskope.Options
---@field api_key? string Sent as `Authorization: Bearer <api_key>`; default PERISKOPE_API_KEY.
---@field phone? string Sent as `x-phone`; default PERISKOPE_PHONE.
---@field base_url? string Default PERISKOPE_BASE_URL, else "https://api.periskope.app/v1".
---@field timeout? number Seconds per attempt, default 30.
---@field connect_timeout? number Seconds, default 10.
---@field retries? integer Extra attempts after a retryable failure, 0-10, default 2.
---@field max_retry_wait? number Seconds; a retry that needs a longer wait is not made. Default 60.
---@field max_body? integer Bytes of response body kept, default 1048576.
---@field ca_file? string PEM bundle to verify the server with; default the system store.
---@field user_agent? string Default "periskope-lua/<VERSION> libcurl/<v> Lua/<v>".
---@field on_event? fun(ev: periskope.Event) Called once per event, between transfers.
---@field limiter? periskope.Limiter Where the pacing budget lives; default in the client.
---@field circuit? periskope.Circuit|boolean When to stop sending during an outage; false: never.

---After `failures` calls in a row got no answer, new calls fail at once
---("unavailable") for `cooldown` seconds; then one probe goes.
---@class periskope.Circuit
---@field failures? integer 1-1000, default 5.
---@field cooldown? number Seconds, > 0 and <= 86400, default 10.

---@class periskope.PinArgs
---@field message_id string The message_id or queue_id, 1-1024 bytes.
---@field pin? boolean true pins (the default), false unpins.
---@field time? 1|7|30 Days; not sent when absent (Periskope then pins for 30 days).
---@field phone? string Overrides the client's `x-phone` for this call.

---@class periskope.RateLimit
---@field limit? integer
---@field remaining? integer
---@field reset? integer An epoch second on the server's clock.

---@class periskope.Result
---@field ok boolean true for a 2xx status.
---@field status integer The HTTP status.
---@field headers table<string, string> Keys lower-cased; looked up in any case.
---@field body string "" when empty.
---@field rate_limit? periskope.RateLimit From the X-RateLimit-* headers, when present.
---@field trace_id? string The x-periskope-trace-id header, when present.
---@field error? string When not ok: the JSON body's message, else "HTTP <status>".
---@field attempts integer Requests made for this call.

---An item of `pin_many` that got no answer.
---@class periskope.Failure
---@field ok false
---@field error string "periskope: ..."
---@field kind periskope.FailureKind
---@field attempts integer

---What kept an answer away: the exchange's kinds, then those of a call that
---sent nothing on purpose (rate_limited, unavailable), then the asynchronous
---drivers' (closed, cancelled).
---@alias periskope.FailureKind
---| "timeout"
---| "connect"
---| "resolve"
---| "tls"
---| "network"
---| "too_large"
---| "rate_limited"
---| "unavailable"
---| "closed"
---| "cancelled"

---@class periskope.Request
---@field method "POST"
---@field url string
---@field headers table<string, string>
---@field body string

---@class periskope.PinManyOptions
---@field concurrency? integer Requests in flight, 1-64, default 4.

---@class periskope.Event
---@field type "request"|"response"|"failure"|"wait"|"limiter"|"circuit"
---@field index? integer The item of a pin_many.
---@field attempt? integer request, response, failure.
---@field method? string request.
---@field url? string request.
---@field headers? table<string, string> request; Authorization shown as "Bearer ***".
---@field status? integer response.
---@field elapsed? number response: seconds.
---@field trace_id? string response.
---@field rate_limit? periskope.RateLimit response.
---@field kind? periskope.FailureKind failure.
---@field message? string failure.
---@field seconds? number wait.
---@field reason? "retry-after"|"rate-limit"|"backoff" wait.
---@field error? string limiter: why the shared store failed.
---@field state? "open"|"closed" circuit.
---@field failures? integer circuit: calls in a row that got no answer.

---What a pin job's "send" step hands over: plain values, to cross to
---another Lua state (periskope.perform).
---@class periskope.SendRequest
---@field method "POST"
---@field url string
---@field headers string[] "Name: value" lines; Authorization carries the key.
---@field body string
---@field timeout number seconds per attempt
---@field connect_timeout number seconds
---@field max_body integer bytes
---@field ca_file? string

---One pin as steps, for a host that must not block (periskope.ngx,
---periskope.uv, a cqueues loop drive it): each step says what to do next.
---@class periskope.PinJob: userdata
local PinJob = {}

---Advances the job: first with no arguments; after "send", with what
---periskope.perform returned (status, head, body, elapsed; or nil, message,
---kind, elapsed); after "watch" or "wait", with no arguments; after a socket
---call ("connect", "handshake", "write", "read", "release"), with what the
---socket call returned. Events, pacing and retries happen here, on the
---caller's thread.
---@return "send"|"watch"|"wait"|"connect"|"handshake"|"write"|"read"|"release"|"done" action
---@return any value the request to send, the descriptor to watch, the seconds to wait,
---  the socket call's argument, or pin's first result
---@return any more "watch": "r"; a socket call's seconds; "done" without an answer: "periskope: ..."
---@return any last "watch": seconds or nil; "done" without an answer: the kind
function PinJob:step(...) end

---Ends the job between steps (its request dropped, its slot given back) and
---closes it; from a hook of its own step, that step returns "cancelled".
---@return true
function PinJob:cancel() end

---Closes the descriptor a "watch" job kept for its loop (once the loop stopped
---watching it), ending the job if it is not over.
---@return true
function PinJob:close() end

---@class periskope.Client
local Client = {}

---Pins or unpins one message.
---@param args periskope.PinArgs
---@return periskope.Result? result when the server answered, whatever the status
---@return string? message when no answer came: "periskope: ..."
---@return periskope.FailureKind? kind when no answer came
function Client:pin(args) end

---Pins many messages over the client's connections, paced by the rate limit.
---Every item is checked before anything is sent.
---@param list periskope.PinArgs[]
---@param opts? periskope.PinManyOptions
---@return (periskope.Result|periskope.Failure)[] results in input order
function Client:pin_many(list, opts) end

---Sans-I/O: checks args as `pin` does and returns the request it would send.
---@param args periskope.PinArgs
---@return periskope.Request
function Client:build_pin(args) end

---Checks args as `pin` does and returns the pin as a job whose steps its
---caller drives (the non-blocking hosts: periskope.ngx, periskope.uv).
---@param args periskope.PinArgs
---@param opts? { io?: "send"|"watch"|"bytes" } How its exchange runs: another
---  thread's perform, libcurl behind a descriptor the caller's loop watches, or
---  the caller's sockets (nginx's cosockets); default "send".
---@return periskope.PinJob
function Client:pin_job(args, opts) end

---Releases the client's connections; can be called again.
---@return true
function Client:close() end

return periskope
