-- Shared helpers for the specs: clients aimed at the local server, and a
-- sentinel API key that the safety specs look for everywhere.
local periskope = require "periskope"

local util = {}

util.PHONE = "919874532456"

-- How much longer than usual things may take: make check-valgrind-suite
-- runs busted under valgrind (PERISKOPE_TIME_SCALE=4), which slows the
-- client several times. Upper bounds on time that a spec measures scale by
-- it; lower bounds (a wait was really waited) never do.
util.TIME_SCALE = tonumber(os.getenv("PERISKOPE_TIME_SCALE") or "") or 1

-- An upper bound of s seconds, as this run allows it.
function util.within(s) return s * util.TIME_SCALE end

-- Waits for fn() to be true, checking every 10 ms; raises naming `what`
-- after util.within(seconds).
function util.wait_for(what, seconds, fn)
  local socket = require "socket"
  local deadline = socket.gettime() + util.within(seconds)
  while not fn() do
    assert(socket.gettime() < deadline, "waited too long for " .. what)
    socket.sleep(0.01)
  end
end

-- Collects the events of a client: the list, and the hook that fills it.
function util.recorder()
  local events = {}
  return events, function(ev) events[#events + 1] = ev end
end

-- The SHA-256 of s as hex, as the sha256sum command gives it.
function util.sha256_hex(s)
  local server = require "spec.support.server"
  return (server.sh("printf '%s' " .. server.quote(s) .. " | sha256sum"):match("^(%x+)"))
end

-- A client of srv with the server's key and phone; opts override.
function util.client(srv, opts)
  local o = {
    api_key = srv.api_key,
    phone = util.PHONE,
    base_url = srv.base_url,
    timeout = 5,
    connect_timeout = 2,
  }
  for k, v in pairs(opts or {}) do o[k] = v end
  return periskope.new(o)
end

-- Raises unless fn raises an error whose message contains every string in
-- pieces (plain find); returns the message.
function util.raises(fn, ...)
  local ok, err = pcall(fn)
  assert(not ok, "expected an error, got none")
  err = tostring(err)
  for _, piece in ipairs({ ... }) do
    assert(err:find(piece, 1, true),
      ("error %q does not contain %q"):format(err, piece))
  end
  return err
end

-- Seconds between consecutive recorded requests, from server timestamps.
function util.gaps(reqs)
  local out = {}
  for i = 2, #reqs do out[#out + 1] = reqs[i].time - reqs[i - 1].time end
  return out
end

-- The events of one type (and, for waits, one reason), in order.
function util.of_type(events, t, reason)
  local out = {}
  for _, ev in ipairs(events) do
    if ev.type == t and (not reason or ev.reason == reason) then out[#out + 1] = ev end
  end
  return out
end

-- An HTTP date for epoch seconds t.
function util.http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", t)
end

-- Every string reachable from v: table keys and values (cycles followed
-- once), and tostring of userdata, for the specs that look for a sentinel
-- key everywhere.
function util.strings(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "string" then
    out[#out + 1] = v
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do
      util.strings(k, out, seen)
      util.strings(x, out, seen)
    end
  elseif type(v) == "userdata" then
    out[#out + 1] = tostring(v)
  end
  return out
end

-- The interpreter running these specs (make test names it), for child
-- processes that must load the same build of the module.
function util.lua_bin()
  return os.getenv("PERISKOPE_LUA") or "lua5.4"
end

-- A list of n pins; item i carries phone-item<i>, which the local server
-- echoes in x-periskope-phone-id, so each result can be matched to its item.
function util.list(n)
  local l = {}
  for i = 1, n do l[i] = { message_id = "m" .. i, phone = "phone-item" .. i } end
  return l
end

-- Runs Lua source in a child process of the interpreter of this run, with
-- this run's module first on package.cpath; prefix (e.g. "env -u NAME")
-- goes before the command. At most `seconds` (default 20). Returns what
-- it printed (stdout and stderr) and its exit status.
function util.run_lua(source, prefix, seconds)
  local server = require "spec.support.server"
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(("package.cpath = %q .. \";\" .. package.cpath\n"):format(os.getenv("PERISKOPE_CPATH") or ""),
    source)
  f:close()
  local out, code = server.sh((prefix or "") .. " timeout " .. (seconds or 20) .. " "
    .. server.quote(util.lua_bin()) .. " " .. server.quote(script) .. " 2>&1")
  os.remove(script)
  return out, code
end

-- A plain-Lua stand-in for ngx.shared.DICT: get, set, add, delete.
-- fail: "set" (answers false, "no memory"), "add" (raises), "locked" (the
-- lock is held by someone who never lets go).
function util.fake_dict(fail)
  local data = {}
  local d = { data = data }
  function d.get(_, k) return data[k] end
  function d.set(_, k, v)
    if fail == "set" then return false, "no memory" end
    data[k] = v
    return true
  end
  function d.add(_, k, v)
    if fail == "add" then error("dictionary broke") end
    if data[k] ~= nil or (fail == "locked" and k:find(":lock$")) then return false, "exists" end
    data[k] = v
    return true
  end
  function d.delete(_, k) data[k] = nil end
  return d
end

return util
