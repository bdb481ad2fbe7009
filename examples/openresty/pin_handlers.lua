-- Content handlers that pin WhatsApp messages from nginx (OpenResty, or
-- Debian's nginx with its Lua module), for the locations of server.conf.
-- Each answers JSON: what periskope returned (status, or kind and error
-- when no answer came), and the worker that pinned.
--
-- init() runs in init_by_lua, in the master process, before the workers
-- fork; the handlers run in the workers.

-- luacheck: globals ngx
local periskope = require "periskope"
local pnx = require "periskope.ngx"
local cjson = require "cjson"

local M = {}

-- Reads the options in the master, whose environment is still whole, and
-- checks them there: a missing key or a bad phone stops nginx at startup
-- rather than failing every pin later. The client made here opens its own
-- connections in each worker; its budget lives in the shared dictionary,
-- so all workers together keep to the key's rate limit.
function M.init()
  M.client = periskope.new {
    api_key = os.getenv("PERISKOPE_API_KEY"),
    phone = os.getenv("PERISKOPE_PHONE"),
    base_url = os.getenv("PERISKOPE_BASE_URL"),
    -- What client:pin (libcurl) verifies with; unset: the system's CAs.
    -- periskope.ngx verifies with nginx's lua_ssl_trusted_certificate.
    ca_file = os.getenv("PERISKOPE_CA_FILE"),
    timeout = 10,
    limiter = periskope.limiter.shared_dict(ngx.shared.periskope),
    -- Called in the worker, on the request's own coroutine: ngx.* works.
    on_event = function(ev)
      if ev.type == "wait" or ev.type == "failure" or ev.type == "limiter" then
        ngx.log(ngx.WARN, "periskope: ", ev.type, " ", ev.reason or ev.kind or "",
          " ", ev.seconds or ev.message or ev.error or "")
      end
    end,
  }
end

-- Sends t as the JSON answer and ends the request.
local function answer(status, t)
  t.worker = ngx.worker.pid()
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(t))
  return ngx.exit(ngx.HTTP_OK)
end

-- A raised error as the caller may see it: its text without the position
-- that LuaJIT puts first ("/srv/app/pin_handlers.lua:75: "), which would
-- tell whoever asked where the server keeps its files.
local function without_position(err)
  return (tostring(err):gsub("^[^\n]-:%d+: ", ""))
end

-- The pin's fields from ?id=...&unpin=1&time=7; nil and the reason when
-- they are not there.
local function pin_args()
  local q = ngx.req.get_uri_args()
  if type(q.id) ~= "string" then return nil, "give the message id as ?id=..." end
  return { message_id = q.id, pin = q.unpin == nil, time = tonumber(q.time) }
end

-- Pins with pin(client, args) and answers: 200 when Periskope said 2xx,
-- 502 with its status and error otherwise, 502 with kind and error when no
-- answer came, 400 when the arguments are refused (nothing is sent).
local function answer_pin(pin)
  local args, why = pin_args()
  if not args then return answer(400, { ok = false, error = why }) end
  local ok, res, err, kind = pcall(pin, M.client, args)
  if not ok then return answer(400, { ok = false, error = without_position(res) }) end
  if not res then return answer(502, { ok = false, kind = kind, error = err }) end
  return answer(res.ok and 200 or 502, {
    ok = res.ok, status = res.status, error = res.error, attempts = res.attempts,
    rate_limit = res.rate_limit, trace_id = res.trace_id,
  })
end

-- GET /pin: periskope.ngx.pin, which suspends this request's coroutine
-- (never the worker) while nginx's socket waits for Periskope and while
-- it waits for a retry or the rate limit.
function M.pin()
  return answer_pin(pnx.pin)
end

-- GET /pin/blocking: client:pin, which blocks the worker.
function M.pin_blocking()
  return answer_pin(function(client, args)
    local res, err, kind = client:pin(args)   -- no tail call: errors name 'pin'
    return res, err, kind
  end)
end

return M
