-- The mock Periskope API, as an nginx content handler (OpenResty's LuaJIT,
-- ngx.*). Its one job: answer `POST /v1/message/<id>/pin` the way Periskope
-- does, record every request under /v1/ byte for byte, and replay scripted
-- faults. spec/support/server.lua writes the nginx.conf that loads it.
--
-- All state lives in two shared dicts (ngx.shared.periskope_mock for counters,
-- the script queue and the rate window; ngx.shared.periskope_mock_requests
-- for the records), changed only through atomic dict operations (incr, add,
-- rpush, lpop), so any number of workers see one server.
--
-- A pin request is recorded first, then answered by the next scripted
-- behaviour if one is queued, else as Periskope would: 401 for a wrong
-- Authorization, 400 for a bad x-phone, 404 for another path, 405 for
-- another method, 400 for a bad Content-Type or body, 429 past the rate
-- limit (only requests that got this far count), else 204. Every answer
-- carries the X-RateLimit-*, x-periskope-* and Express headers; with the
-- server option fixed_rate, the X-RateLimit-* values are always the same
-- (a stand-in replaying the OpenAPI example), whatever the window says.
--
-- A scripted behaviour is a table; every field may be left out:
--   status        answer status (default 204, or 200 when there is a body)
--   headers       name -> string, array of strings (sent once each), or
--                 false or "" (drop a default header); overrides the defaults.
--                 Content-Length = "" sends the body chunked, without one
--   body          body string; body_size = N: N bytes of "x"
--   delay         seconds to sleep first (a large value: a hung server)
--   remaining     X-RateLimit-Remaining to send
--   reset_in      X-RateLimit-Reset = the Date sent + reset_in
--   rate_headers  false: no X-RateLimit-* headers
--   date_offset   seconds to skew the server's clock by: Date and the
--                 X-RateLimit-Reset / Retry-After derived from it
--   retry_after_in  send Retry-After as the HTTP date this many seconds
--                 after the Date sent (date_offset included)
--   action        "close" (no answer), "close_mid_headers",
--                 "close_mid_body" (200, Content-Length 100, 10 bytes),
--                 "raw" (write the `raw` string as is), "drip" (200 with
--                 `drip_bytes` bytes, one per `drip_interval` seconds);
--                 all but "drip" close the connection after writing.
--
-- Hostile mode (POST /_mock/hostile, srv:hostile{...}): a pin request that
-- no scripted behaviour answers is checked and counted in the rate window as
-- the default answer does -- a refused request gets its 4xx, a request past
-- the window's limit the default's 429 (counted as over_limit: a 429 the
-- server did not inject) -- and is then answered by one behaviour drawn at
-- random by weight:
--   ok            the default answer (204 with the window's headers)
--   too_many      429 with Retry-After: retry_after seconds (injected)
--   unavailable   503, the window's headers
--   hang          204 after hang seconds (meant to outlast the client's timeout)
--   cut           the connection closed in the middle of the headers or of
--                 the body (close_mid_headers, close_mid_body), at random
--   far_reset     204 with X-RateLimit-Remaining 0 and an X-RateLimit-Reset
--                 no window has: far_reset seconds after the Date, or the
--                 Date in milliseconds, at random
-- Each draw is counted by kind (stats().hostile). srv:hostile(false) or
-- reset() turns it off.
--
-- It sets up no init_by_lua / init_worker_by_lua / lua_package_path of its
-- own: each may appear only once per http{} block, and the specs that embed
-- the periskope module through `extra_http` may need them.

-- luacheck: globals ngx

-- A private copy, so our settings stay ours. Debian's lua-cjson has no
-- encode_empty_table_as_object: the one JSON array we send (the records) is
-- joined by hand, and "{}" is right for the rest.
local cjson = require("cjson").new()
cjson.encode_number_precision(14)     -- the most it allows; ngx.now() needs 13

local M = {}

local STATE = "periskope_mock"
local RECORDS = "periskope_mock_requests"

-- Fixed ids, in Periskope's formats (see the 204 example in the OpenAPI file).
local ORG_ID = "2997dd64-89bf-48d3-9a22-b314fca017e5"
local PHONE_ID = "phone-bqzvyibhmwkaergr"

local conf             -- read from <prefix>mock.json on first use in a worker
local seeded = false   -- math.random is per worker: seed after the fork

local function config()
  if conf then return conf end
  local path = ngx.config.prefix() .. "mock.json"
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  conf = assert(cjson.decode(text))
  return conf
end

local function seed()
  if seeded then return end
  seeded = true
  math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
end

-- A fresh uuid-shaped trace id (version 4 layout), like x-periskope-trace-id.
local function trace_id()
  seed()
  local function hex(n)
    local t = {}
    for i = 1, n do t[i] = string.format("%x", math.random(0, 15)) end
    return table.concat(t)
  end
  return hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-"
    .. string.format("%x", math.random(8, 11)) .. hex(3) .. "-" .. hex(12)
end

local function read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  -- client_body_buffer_size equals client_max_body_size in the generated
  -- config, so this is only a fallback.
  local file = ngx.req.get_body_file()
  if not file then return "" end
  local f = io.open(file, "rb")
  if not f then return "" end
  body = f:read("*a")
  f:close()
  return body
end

-- Records the request before anything can fail it. A full dict drops the
-- record but still counts it, and never fails the request (benchmarks send
-- far more than the dict holds). Returns the record and its number.
local function record()
  ngx.update_time()                    -- arrival time, not the loop's cached one
  local headers = {}
  for name, value in pairs(ngx.req.get_headers(0)) do  -- 0: no limit
    if type(value) == "table" then value = table.concat(value, ", ") end
    headers[name] = value
  end
  local rec = {
    method = ngx.req.get_method(),
    uri = ngx.var.request_uri,         -- raw bytes: %40 stays %40
    request_line = ngx.var.request,    -- as sent: origin-form or absolute-form
    headers = headers,
    body = read_body(),
    time = ngx.now(),
    connection = tonumber(ngx.var.connection),
    connection_requests = tonumber(ngx.var.connection_requests),
    worker = ngx.worker.pid(),
  }
  local state = ngx.shared[STATE]
  local n = state:incr("requests", 1, 0)
  local ok, err = ngx.shared[RECORDS]:safe_set(tostring(n), cjson.encode(rec))
  if not ok then
    if state:incr("dropped", 1, 0) == 1 then
      ngx.log(ngx.WARN, "mock: request records dropped from now on: ", err)
    end
  end
  return rec, n
end

------------------------------------------------------------------------------
-- Rate limit: one fixed window per server (Periskope's budget is per API
-- key, and the mock has one key). The window opens at the whole second
-- nearest the first counted request and lasts conf.window seconds from
-- there, so its end is the X-RateLimit-Reset second itself (no rounding that
-- would make clients wait up to a second more), and a burst that opens a
-- window has at least conf.window - 0.5 s of it. "win_start" lives until the window ends (dict TTL),
-- so `add` succeeds for exactly one request per window; requests of a window
-- are counted under a key named after its start.

local function window_key(start)
  return string.format("win:%.3f", start)
end

-- Counts one request; returns the window's start and the request's number in it.
local function window_take(now)
  local c, state = config(), ngx.shared[STATE]
  local start
  for _ = 1, 5 do  -- the window may expire between a failed add and the get
    local second = math.floor(now + 0.5)
    if state:add("win_start", second, second + c.window - now) then
      start = second
      break
    end
    start = state:get("win_start")
    if start then break end
  end
  start = start or now
  return start, state:incr(window_key(start), 1, 0, c.window + 1)
end

-- The current window without counting: what an error answer reports.
local function window_peek()
  local state = ngx.shared[STATE]
  local start = state:get("win_start")
  if not start then return nil, 0 end
  return start, state:get(window_key(start)) or 0
end

local function rate_values(now, start, used)
  local c = config()
  local reset_at = (start or now) + c.window
  return {
    limit = c.rate_limit,
    remaining = math.max(0, c.rate_limit - used),
    reset = math.ceil(reset_at),
    reset_at = reset_at,
    retry_after = math.max(1, math.ceil(reset_at - now)),
  }
end

------------------------------------------------------------------------------
-- Answers

-- Headers Periskope sends on every pin answer. rate may be nil (omit them).
local function set_common_headers(rate)
  local h = ngx.header
  h["Server"] = nil                    -- Express sends none
  h["Access-Control-Allow-Origin"] = "*"
  h["X-Powered-By"] = "Express"
  local fixed = config().fixed_rate
  if rate and fixed then
    -- A stand-in that sends the same values whatever its window says.
    rate = fixed
  end
  if rate then
    h["X-RateLimit-Limit"] = tostring(rate.limit)
    h["X-RateLimit-Remaining"] = tostring(rate.remaining)
    h["X-RateLimit-Reset"] = tostring(rate.reset)
  end
  local phone = ngx.var.http_x_phone
  h["x-periskope-org-id"] = ORG_ID
  h["x-periskope-phone-id"] = (phone and phone:match("^phone%-%w+$")) and phone or PHONE_ID
  h["x-periskope-trace-id"] = trace_id()
end

-- Sends status and body (nil: none) and ends the request. keep_length: the
-- script set Content-Length itself ("" or false: none, so nginx chunks).
local function finish(status, body, keep_length)
  ngx.shared[STATE]:incr("status:" .. status, 1, 0)   -- for stats().statuses
  ngx.status = status
  if body and status ~= 204 and status ~= 304 then
    if not ngx.header["Content-Type"] then
      ngx.header["Content-Type"] = "application/json; charset=utf-8"
    end
    if not keep_length then ngx.header["Content-Length"] = #body end
    ngx.print(body)
  else
    if status ~= 204 and status ~= 304 and not keep_length then
      ngx.header["Content-Length"] = 0   -- else nginx would chunk an empty body
    end
    ngx.send_headers()
  end
  return ngx.exit(ngx.HTTP_OK)
end

-- {"message": text}, by hand: Debian's cjson writes "/" as "\/", which
-- Express never does, and messages quote paths and content types.
local function message(text)
  local escaped = text:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end)
  return '{"message":"' .. escaped .. '"}'
end

-- Writes bytes on the raw client socket, then closes the connection: the
-- faults that nginx's HTTP layer would never produce. The body must have been
-- read first (record() did), and no header sent yet.
local function raw_send(bytes)
  local sock, err = ngx.req.socket(true)
  if not sock then
    ngx.log(ngx.ERR, "mock: raw socket: ", err)
    return ngx.exit(444)
  end
  sock:send(bytes)
  -- 444 makes nginx close the connection without writing anything itself.
  return ngx.exit(444)
end

-- Checks a pin request as Periskope would. Returns nil when it is fine, else
-- status, message and extra headers.
local function check(rec)
  local c = config()
  local h = rec.headers
  if h["authorization"] ~= "Bearer " .. c.api_key then
    return 401, "Unauthorized"
  end
  local phone = h["x-phone"]
  local digits = phone and phone:match("^%d+$")
  if not phone or not (digits and #phone >= 7 and #phone <= 15
                       or phone:match("^phone%-%w+$")) then
    return 400, "x-phone header is missing or invalid"
  end
  local path = rec.uri:match("^[^?]*")
  if not path:match("^/v1/message/[^/]+/pin$") then
    return 404, "Not found"
  end
  if rec.method ~= "POST" then
    return 405, "Method not allowed", { Allow = "POST" }
  end
  local ctype = (h["content-type"] or ""):lower()
  if not (ctype == "application/json" or ctype:match("^application/json%s*;")) then
    return 400, "Content-Type must be application/json"
  end
  if not rec.body:match("^%s*{") then
    return 400, "body must be a JSON object"
  end
  -- cjson stops reading at a NUL byte; JSON.parse would reject it.
  local ok, obj = pcall(cjson.decode, rec.body)
  if not ok or type(obj) ~= "table" or rec.body:find("\0", 1, true) then
    return 400, "body is not valid JSON"
  end
  for key in pairs(obj) do
    if key ~= "pin" and key ~= "time" then
      return 400, "unknown field '" .. tostring(key) .. "'"
    end
  end
  if obj.pin == nil then return 400, "pin is required" end
  if type(obj.pin) ~= "boolean" then return 400, "pin must be a boolean" end
  local t = obj.time
  if t ~= nil and t ~= 1 and t ~= 7 and t ~= 30 then
    return 400, "time must be 1, 7 or 30"
  end
  return nil
end

-- Checks rec (record number n) as Periskope would and counts it in the
-- rate window. Returns nil and the window's rate values when it may be
-- answered 2xx; else the status, message, extra headers and rate values of
-- its answer (a refusal, uncounted, or a 429 past the limit, counted as
-- over_limit and marked so in its record).
local function judge(rec, n, now)
  local status, text, extra = check(rec)
  if status then return status, text, extra, rate_values(now, window_peek()) end
  local start, used = window_take(now)
  local rate = rate_values(now, start, used)
  if used > config().rate_limit then
    ngx.shared[STATE]:incr("over_limit", 1, 0)
    rec.over_limit = true
    ngx.shared[RECORDS]:safe_set(tostring(n), cjson.encode(rec))
    if config().retry_after then
      extra = { ["Retry-After"] = tostring(rate.retry_after) }
    end
    return 429, "Too many requests", extra, rate
  end
  return nil, nil, nil, rate
end

-- Sends the answer judge (or a hostile behaviour) settled on: 204 when
-- status is nil, else status with {"message": text}.
local function answer(status, text, extra, rate)
  set_common_headers(rate)
  for name, value in pairs(extra or {}) do ngx.header[name] = value end
  if not status then return finish(204) end
  return finish(status, message(text))
end

local function default_answer(rec, n)
  return answer(judge(rec, n, ngx.now()))
end

-- What close_mid_headers and close_mid_body write before closing.
local MID_HEADERS = "HTTP/1.1 204 No Content\r\nX-RateLimit-Li"
local MID_BODY = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
  .. "Content-Length: 100\r\n\r\n" .. string.rep("x", 10)

local function scripted_answer(b)
  if b.delay then ngx.sleep(b.delay) end
  local action = b.action
  if action == "close" then
    return ngx.exit(444)
  elseif action == "close_mid_headers" then
    return raw_send(MID_HEADERS)
  elseif action == "close_mid_body" then
    return raw_send(MID_BODY)
  elseif action == "raw" then
    return raw_send(b.raw or "")
  end

  local now = ngx.now()
  -- date_offset skews the server's whole clock: Date, X-RateLimit-Reset and
  -- Retry-After dates move together, as they would on a skewed server.
  local offset = b.date_offset or 0
  local server_now = math.floor(now + offset)  -- the Date we send
  local rate
  if b.rate_headers ~= false then
    rate = rate_values(now, window_peek())
    rate.reset = math.ceil(rate.reset_at + offset)
    if b.remaining then rate.remaining = b.remaining end
    -- Counted from the Date sent: Periskope's reset reads as "Date + 2".
    if b.reset_in then rate.reset = server_now + math.ceil(b.reset_in) end
  end
  set_common_headers(rate)
  if b.date_offset then
    -- nginx writes its own Date only when none was set (ngx_http_header_filter
    -- checks headers_out.date), so this one replaces it.
    ngx.header["Date"] = ngx.http_time(server_now)
  end
  if b.retry_after_in then
    ngx.header["Retry-After"] = ngx.http_time(server_now + math.ceil(b.retry_after_in))
  end
  local keep_length = false
  for name, value in pairs(b.headers or {}) do
    if value == false or value == "" then
      value = nil                      -- removes a default header
    elseif type(value) == "number" then
      value = tostring(value)
    end
    if name:lower() == "content-length" then keep_length = true end
    ngx.header[name] = value
  end

  local body = b.body or (b.body_size and string.rep("x", b.body_size))
  if action == "drip" then
    local n, interval = b.drip_bytes or 10, b.drip_interval or 0.1
    ngx.status = b.status or 200
    ngx.header["Content-Length"] = n
    ngx.send_headers()
    ngx.flush(true)
    for _ = 1, n do
      ngx.sleep(interval)
      local ok = ngx.print("x")
      if not ok or not ngx.flush(true) then break end  -- client went away
    end
    return ngx.exit(ngx.HTTP_OK)
  end
  return finish(b.status or (body and 200 or 204), body, keep_length)
end

------------------------------------------------------------------------------
-- Hostile mode

-- The kinds of hostile answer, in the order draw() walks them.
local HOSTILE_KINDS = { "ok", "too_many", "unavailable", "hang", "cut", "far_reset" }

-- The hostile settings as this worker last decoded them, and their text:
-- decoded again only when the text in the dict changed.
local hostile_text, hostile_conf

local function hostile()
  local text = ngx.shared[STATE]:get("hostile")
  if text ~= hostile_text then
    hostile_text, hostile_conf = text, text and cjson.decode(text)
  end
  return hostile_conf
end

-- One kind, drawn at random by weight.
local function draw(weights)
  seed()
  local x = math.random() * weights.total
  for _, kind in ipairs(HOSTILE_KINDS) do
    local w = weights[kind] or 0
    if x < w then return kind end
    x = x - w
  end
  return "ok"                          -- rounding at the very end
end

local function hostile_answer(rec, n, h)
  local now = ngx.now()
  local status, text, extra, rate = judge(rec, n, now)
  if status then return answer(status, text, extra, rate) end
  local kind = draw(h.weights)
  ngx.shared[STATE]:incr("hostile:" .. kind, 1, 0)
  if kind == "too_many" then
    return answer(429, "Too many requests", { ["Retry-After"] = tostring(h.retry_after) }, rate)
  elseif kind == "unavailable" then
    return answer(503, "Service unavailable", nil, rate)
  elseif kind == "hang" then
    ngx.sleep(h.hang)
  elseif kind == "cut" then
    return raw_send(math.random(2) == 1 and MID_HEADERS or MID_BODY)
  elseif kind == "far_reset" then
    local date = ngx.time()            -- the Date nginx sends with it
    rate.remaining = 0
    rate.reset = math.random(2) == 1 and date + h.far_reset or date * 1000
  end
  return answer(nil, nil, nil, rate)
end

-- content handler of location /v1/
function M.pin()
  local rec, n = record()
  local item = ngx.shared[STATE]:lpop("script")
  local latency = config().latency
  if latency > 0 then ngx.sleep(latency) end
  if item then return scripted_answer(cjson.decode(item)) end
  local h = hostile()
  if h then return hostile_answer(rec, n, h) end
  return default_answer(rec, n)
end

------------------------------------------------------------------------------
-- Control API (never recorded)

local FIELDS = {
  status = "number", headers = "table", body = "string", body_size = "number",
  delay = "number", reset_in = "number", remaining = "number",
  date_offset = "number", retry_after_in = "number", rate_headers = "boolean",
  action = "string",
  raw = "string", drip_bytes = "number", drip_interval = "number",
}
local ACTIONS = {
  close = true, close_mid_headers = true, close_mid_body = true, raw = true,
  drip = true,
}

-- Returns nil when behaviour i is well formed, else what is wrong with it.
local function check_behaviour(i, b)
  if type(b) ~= "table" then return "item " .. i .. " is not an object" end
  for k, v in pairs(b) do
    local want = FIELDS[k]
    if not want then return "item " .. i .. ": unknown field '" .. tostring(k) .. "'" end
    if type(v) ~= want then
      return "item " .. i .. ": field '" .. k .. "' must be a " .. want
    end
  end
  if b.action and not ACTIONS[b.action] then
    return "item " .. i .. ": unknown action '" .. b.action .. "'"
  end
  if b.status and (b.status < 100 or b.status > 599 or b.status % 1 ~= 0) then
    return "item " .. i .. ": status must be an integer in 100..599"
  end
  for name, value in pairs(b.headers or {}) do
    local t = type(value)
    local ok = type(name) == "string"
      and (t == "string" or t == "number" or t == "table" or value == false)
    for _, v in pairs(t == "table" and value or {}) do
      ok = ok and type(v) == "string"
    end
    if not ok then
      return "item " .. i .. ": headers must map names to strings, arrays of strings or false"
    end
  end
  return nil
end

-- The hostile settings of a POST /_mock/hostile body, checked and with
-- their defaults; nil and what is wrong when they are not well formed;
-- false for {} (hostile mode off).
local HOSTILE_FIELDS = { weights = "table", hang = "number", retry_after = "number",
                         far_reset = "number" }
local function check_hostile(h)
  if type(h) ~= "table" or (#h > 0) then return nil, "hostile settings must be a JSON object" end
  if next(h) == nil then return false end
  for k, v in pairs(h) do
    local want = HOSTILE_FIELDS[k]
    if not want then return nil, "unknown field '" .. tostring(k) .. "'" end
    if type(v) ~= want then return nil, "field '" .. k .. "' must be a " .. want end
  end
  if not h.weights then return nil, "field 'weights' is required" end
  local weights, total = { total = 0 }, 0
  local known = {}
  for _, kind in ipairs(HOSTILE_KINDS) do known[kind] = true end
  for kind, w in pairs(h.weights) do
    if not known[kind] then
      return nil, "weights: unknown kind '" .. tostring(kind) .. "' (ok, too_many,"
        .. " unavailable, hang, cut, far_reset)"
    end
    if type(w) ~= "number" or w < 0 or w ~= w or w == math.huge then
      return nil, "weights: '" .. kind .. "' must be a number >= 0"
    end
    weights[kind] = w
    total = total + w
  end
  if total <= 0 then return nil, "weights: at least one must be > 0" end
  weights.total = total
  local out = { weights = weights, hang = h.hang or 2, retry_after = h.retry_after or 1,
                far_reset = h.far_reset or 7200 }
  if not (out.hang > 0 and out.hang <= 3600) then return nil, "field 'hang' must be in (0, 3600]" end
  if not (out.retry_after >= 0 and out.retry_after <= 86400 and out.retry_after % 1 == 0) then
    return nil, "field 'retry_after' must be an integer in 0..86400"
  end
  if not (out.far_reset > 3600 and out.far_reset <= 1e9) then
    return nil, "field 'far_reset' must be in (3600, 1e9]: a reset no window has"
  end
  return out
end

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(body)
  return ngx.exit(ngx.HTTP_OK)
end

-- content handler of location /_mock/
function M.control()
  local state, records = ngx.shared[STATE], ngx.shared[RECORDS]
  local method, path = ngx.req.get_method(), ngx.var.uri
  if method == "POST" and path == "/_mock/script" then
    local ok, list = pcall(cjson.decode, read_body())
    if not ok or type(list) ~= "table" or (#list == 0 and next(list) ~= nil) then
      return reply(400, message("script must be a JSON array"))
    end
    for i, b in ipairs(list) do
      local problem = check_behaviour(i, b)
      if problem then return reply(400, message(problem)) end
    end
    for i, b in ipairs(list) do
      local pushed, err = state:rpush("script", cjson.encode(b))
      if not pushed then return reply(500, message("item " .. i .. ": " .. err)) end
    end
    return reply(200, cjson.encode({ queued = state:llen("script") }))
  elseif method == "POST" and path == "/_mock/hostile" then
    local ok, h = pcall(cjson.decode, read_body())
    local settings, problem
    if ok then settings, problem = check_hostile(h) else problem = "hostile settings must be a JSON object" end
    if settings == nil then return reply(400, message(problem)) end
    if settings then state:set("hostile", cjson.encode(settings)) else state:delete("hostile") end
    return reply(200, "{}")
  elseif method == "GET" and path == "/_mock/requests" then
    -- The records are stored encoded: join them instead of decoding again.
    local out = {}
    for i = 1, state:get("requests") or 0 do
      out[#out + 1] = records:get(tostring(i))  -- nil for a dropped record
    end
    return reply(200, "[" .. table.concat(out, ",") .. "]")
  elseif method == "GET" and path == "/_mock/stats" then
    local statuses, drawn = {}, {}   -- "204" -> count; cjson writes {} when empty
    for _, key in ipairs(state:get_keys(0)) do
      local code = key:match("^status:(%d+)$")
      if code then statuses[code] = state:get(key) end
      local kind = key:match("^hostile:(.+)$")
      if kind then drawn[kind] = state:get(key) end
    end
    return reply(200, cjson.encode({
      requests = state:get("requests") or 0,
      dropped = state:get("dropped") or 0,
      script = state:llen("script") or 0,
      statuses = statuses,
      over_limit = state:get("over_limit") or 0,
      hostile = drawn,
    }))
  elseif method == "POST" and path == "/_mock/reset" then
    records:flush_all()
    records:flush_expired()            -- give the memory back now
    state:flush_all()                  -- counters, script, rate window
    state:flush_expired()
    return reply(200, "{}")
  end
  return reply(404, message("Not found"))
end

return M
