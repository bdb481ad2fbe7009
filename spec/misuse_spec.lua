-- Misuse raises, one wording for every table the module reads: new's and
-- configure's options, the circuit option, pin's fields, pin_many's items
-- and options, pin_job's options, perform's request and the limiters. An
-- unknown key names itself and what is accepted; a bad value names its
-- function, its field and the rule, and says a number as Lua would write
-- it as an integer when it is one, never a string value.
local periskope = require "periskope"
local util = require "spec.support.util"

local raises = util.raises
local KEY = "test-key"
local SECRET = "sk-MISUSE-SENTINEL"
local HAVE_REDIS = os.getenv("PERISKOPE_HIREDIS") ~= "no"

local function client(opts)
  local o = { api_key = KEY }
  for k, v in pairs(opts or {}) do o[k] = v end
  -- Not a tail call: Lua 5.1 and LuaJIT would then name 'client' in the
  -- error, not 'new'.
  local c = periskope.new(o)
  return c
end

-- A request as a job's "send" holds it, with fields replaced.
local function request(fields)
  local r = { method = "POST", url = "http://127.0.0.1:1/v1/message/m/pin",
    headers = { "Authorization: Bearer k" }, body = '{"pin":true}' }
  for k, v in pairs(fields or {}) do r[k] = v end
  return r
end

describe("misuse", function()
  local c
  before_each(function() c = client() end)
  after_each(function() c:close() end)

  it("names an unknown key and lists what the table accepts, in every table", function()
    raises(function() client { timeut = 1 } end, "bad argument #1 to 'new' (unknown option 'timeut' (api_key, "
      .. "phone, base_url, timeout, connect_timeout, retries, max_body, ca_file, user_agent, max_retry_wait, "
      .. "on_event, limiter, circuit))")
    raises(function() periskope.configure { timeut = 1 } end, "unknown option 'timeut' (api_key, ")
    raises(function() client { circuit = { tries = 1 } } end,
      "bad argument #1 to 'new' (unknown option 'circuit.tries' (failures, cooldown))")
    raises(function() c:pin { message_id = "m", colour = 1 } end,
      "(unknown field 'colour' (message_id, pin, time, phone))")
    raises(function() c:pin_many { { message_id = "m" }, { message_id = "n", colour = 1 } } end,
      "(item 2: unknown field 'colour' (message_id, pin, time, phone))")
    raises(function() c:pin_many({}, { concurency = 2 }) end, "(unknown option 'concurency' (concurrency))")
    raises(function() c:pin_job({ message_id = "m" }, { oi = "send" }) end, "(unknown option 'oi' (io))")
    raises(function() periskope.perform(request { extra = 1 }) end,
      "bad argument #1 to 'perform' (unknown field 'extra' (method, url, headers, body, timeout, "
        .. "connect_timeout, max_body, ca_file))")
    if HAVE_REDIS then
      raises(function() periskope.limiter.redis { hots = "x" } end,
        "(unknown option 'hots' (host, port, password, db, prefix, timeout))")
    end
  end)

  it("says a key that is not a string by its type or number, in every table", function()
    raises(function() client { [1] = KEY } end, "(option names must be strings, got 1)")
    raises(function() client { circuit = { 5 } } end, "(option names of circuit must be strings, got 1)")
    raises(function() c:pin { message_id = "m", [true] = 1 } end, "(field names must be strings, got boolean)")
    raises(function() c:pin_job({ message_id = "m" }, { "send" }) end, "(option names must be strings, got 1)")
    raises(function() periskope.perform(request { [2.5] = 1 }) end,
      "bad argument #1 to 'perform' (field names must be strings, got 2.5)")
    if HAVE_REDIS then
      raises(function() periskope.limiter.redis { [1] = "x" } end, "(option names must be strings, got 1)")
    end
  end)

  it("writes a whole number without a fraction, whoever reads it", function()
    raises(function() client { timeout = 1e9 } end, "option 'timeout'", "got 1000000000)")
    raises(function() c:pin_many({}, { concurrency = 65.0 }) end, "option 'concurrency'", "got 65)")
    raises(function() periskope.perform(request { timeout = 86401.0 }) end, "field 'timeout'", "got 86401)")
    if HAVE_REDIS then
      local err = raises(function() periskope.limiter.redis { port = 70000 } end,
        "bad argument #1 to 'redis' (option 'port' must be an integer from 1 to 65535, got 70000)")
      assert.falsy(err:find("70000.0", 1, true), err)
      raises(function() periskope.limiter.redis { timeout = 61.0 } end, "option 'timeout'", "got 61)")
    end
  end)

  it("takes an integral float as the integer it is, and refuses a fraction, everywhere", function()
    client { retries = 2.0, max_body = 10.0, circuit = { failures = 3.0 } }:close()
    c:build_pin { message_id = "m", time = 7.0 }
    c:pin_many({}, { concurrency = 2.0 })
    raises(function() client { retries = 1.5 } end, "option 'retries' must be an integer", "got 1.5)")
    raises(function() client { circuit = { failures = 2.5 } } end, "option 'circuit.failures'", "got 2.5)")
    raises(function() c:pin_many({}, { concurrency = 2.5 }) end, "option 'concurrency'", "got 2.5)")
    raises(function() periskope.perform(request { max_body = 1.5 }) end, "field 'max_body'", "got 1.5)")
    if HAVE_REDIS then
      periskope.limiter.redis { port = 6379.0, db = 1.0 }
      raises(function() periskope.limiter.redis { db = 0.5 } end, "option 'db' must be an integer", "got 0.5)")
    end
  end)

  it("says a string value by its type only, and a secret one not even as a number", function()
    local function clean(fn, ...)
      local err = raises(fn, ...)
      assert.falsy(err:find(SECRET, 1, true), err)
    end
    clean(function() client { timeout = SECRET } end, "option 'timeout'", "got string)")
    clean(function() client { circuit = { cooldown = SECRET } } end, "option 'circuit.cooldown'", "got string)")
    clean(function() c:pin_job({ message_id = "m" }, { io = SECRET }) end, "option 'io'", "got string)")
    clean(function() periskope.perform(request { connect_timeout = SECRET }) end, "field 'connect_timeout'",
      "got string)")
    raises(function() client { api_key = 12345 } end, "option 'api_key' must be a string, got number)")
    if HAVE_REDIS then
      clean(function() periskope.limiter.redis { port = SECRET } end, "option 'port'", "got string)")
      local err = raises(function() periskope.limiter.redis { password = 271828 } end,
        "option 'password'", "got number)")
      assert.falsy(err:find("271828", 1, true), err)
    end
    clean(function() periskope.limiter.shared_dict(SECRET) end,
      "bad argument #1 to 'shared_dict' (must be an nginx shared dictionary (ngx.shared.NAME), got string)")
  end)
end)
