-- Content handlers that pin WhatsApp messages from nginx (OpenResty, or
-- Debian's nginx with its Lua module), for the locations of server.conf.
-- Each answers JSON: what periskope returned, and the worker that pinned.
--
-- init() runs in init_by_lua, in the master process, before the workers
-- fork; the handlers run in the workers.

-- luacheck: globals ngx
local periskope = require "periskope"
local cjson = require "cjson"

local M = {}

-- Reads the options in the master, whose environment is still whole
-- (workers see only what an `env` directive lets through), and checks them
-- there: a missing key or a bad phone stops nginx at startup rather than
-- failing every pin later.
function M.init()
  local options = {
    api_key = os.getenv("PERISKOPE_API_KEY"),
    phone = os.getenv("PERISKOPE_PHONE"),
    base_url = os.getenv("PERISKOPE_BASE_URL"),
    timeout = 10,
  }
  -- For periskope.pin: each worker creates the default client at its first pin.
  periskope.configure(options)
  -- Made before the fork, yet safe to share: at its first pin in a worker it
  -- opens that worker's own connections instead of using the master's.
  M.client = periskope.new(options)
end

-- Sends t as the JSON answer and ends the request.
local function answer(status, t)
  t.worker = ngx.worker.pid()
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(t))
  return ngx.exit(ngx.HTTP_OK)
end

-- Answers what pin or read_response returned: 200 when Periskope said 2xx,
-- 502 otherwise, with its status and error, or why no answer came.
local function answer_result(res, err, kind)
  if not res then
    return answer(502, { ok = false, error = err, kind = kind })
  end
  return answer(res.ok and 200 or 502, {
    ok = res.ok, status = res.status, error = res.error, attempts = res.attempts,
    rate_limit = res.rate_limit, trace_id = res.trace_id,
  })
end

-- A raised error as the caller may see it: its text without the position
-- that LuaJIT puts first ("/srv/app/pin_handlers.lua:75: "), which would
-- tell whoever asked where the server keeps its files.
local function without_position(err)
  return (tostring(err):gsub("^[^\n]-:%d+: ", ""))
end

-- The ?id= argument, decoded; answers 400 without one.
local function message_id()
  local id = ngx.req.get_uri_args().id
  if type(id) ~= "string" then
    return answer(400, { ok = false, error = "give the message id as ?id=..." })
  end
  return id
end

-- Calls pin() and answers its result; a bad id raises: a 400. (The
-- callers' functions make no tail calls, so the error names the method.)
local function answer_pin(pin)
  local ok, res, err, kind = pcall(pin)
  if not ok then return answer(400, { ok = false, error = without_position(res) }) end
  return answer_result(res, err, kind)
end

-- GET /pin?id=...: periskope.pin, on the default client. Blocking: this
-- worker serves nothing else until the pin is done (timeout per attempt,
-- retries and their waits included).
function M.pin()
  local id = message_id()
  return answer_pin(function()
    local res, err, kind = periskope.pin { message_id = id }
    return res, err, kind
  end)
end

-- GET /pin/client?id=...: the same through the client made in init().
function M.pin_client()
  local id = message_id()
  return answer_pin(function()
    local res, err, kind = M.client:pin { message_id = id }
    return res, err, kind
  end)
end

-- GET /pin/nonblocking?id=...: nginx itself sends the request build_pin
-- describes, through the internal /periskope_proxy location, so this worker
-- serves other requests while Periskope answers. No retries: attempts is 1.
function M.pin_nonblocking()
  local id = message_id()
  local ok, req = pcall(function()
    local r = M.client:build_pin { message_id = id }
    return r
  end)
  if not ok then return answer(400, { ok = false, error = without_position(req) }) end
  local h = {}
  for name, value in pairs(req.headers) do h[name:lower()] = value end
  local res = ngx.location.capture("/periskope_proxy", {
    method = ngx.HTTP_POST,
    body = req.body,
    -- Declared by `set` in server.conf; /periskope_proxy sends them.
    vars = {
      periskope_url = req.url,
      periskope_authorization = h["authorization"],
      periskope_phone = h["x-phone"] or "",   -- empty: no x-phone header
      periskope_content_type = h["content-type"],
      periskope_accept = h["accept"],
      periskope_user_agent = h["user-agent"],
    },
  })
  if res.truncated then
    return answer_result(nil, "periskope: POST " .. req.url .. ": the answer was cut short", "network")
  end
  -- Periskope unreachable or silent: nginx's own 502 or 504, without trace_id.
  return answer_result(periskope.read_response(res.status, res.header, res.body))
end

return M
