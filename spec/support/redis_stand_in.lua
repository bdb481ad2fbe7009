-- A Redis stand-in with faults, for the Redis limiter's specs: it listens
-- on 127.0.0.1, a port the kernel picks, prints that port as its first
-- line, then one line "accepted" per connection it accepts. LuaSocket, one
-- thread, one select loop; started and stopped by pid through
-- spec/support/redis.lua (redis.stand_in), which runs it with lua5.4.
--
--   lua5.4 redis_stand_in.lua MODE [--upstream PORT] [--trickle S]
--     [--delay S] [--blackhole S] [--untildrop 1] [--stream BYTES]
--     [--lifetime S]
--
-- MODE:
--   proxy       every byte both ways to a real Redis on 127.0.0.1:PORT
--               (--upstream), its answers held back as told: --trickle S
--               sends them one byte every S seconds, --delay S sends each
--               chunk S seconds after it came
--   huge_array  answers the first bytes of a connection with
--               "*2000000000\r\n", then nothing more
--   huge_bulk   answers them with "$2000000000\r\n", then --stream BYTES
--               of "x" as fast as the client reads them, then nothing
--   never       reads every byte, answers none
--   close       closes each connection as soon as it is accepted
-- --blackhole S: for the first S seconds (-1: for ever) a connection
--   cannot even be made: the listen queue is one long and a connection of
--   its own fills it, so the kernel drops every SYN until the stand-in
--   accepts that connection (a client's SYN is sent again about 1 s later).
-- --untildrop 1: with --blackhole S, the queue frees only once the kernel
--   has also counted a dropped SYN (TcpExt ListenOverflows in
--   /proc/net/netstat), however long the client takes to try: the fault
--   then happens on a slow run too (valgrind). Without that file, S alone.
-- --lifetime S (default 300): exits then, whatever happens, should the
--   spec that started it never stop it.
local socket = require "socket"

local HUGE = { huge_array = "*2000000000\r\n", huge_bulk = "$2000000000\r\n" }

local mode = arg[1]
local opt = { lifetime = 300, stream = 0 }
do
  local i = 2
  while arg[i] do
    local name = arg[i]:match("^%-%-(%a+)$")
    local value = tonumber(arg[i + 1])
    assert(name and value, "usage: redis_stand_in.lua MODE [--NAME NUMBER]...")
    opt[name] = value
    i = i + 2
  end
end
assert(mode == "proxy" or mode == "never" or mode == "close" or HUGE[mode],
  "unknown mode " .. tostring(mode))
assert(mode ~= "proxy" or opt.upstream, "proxy needs --upstream PORT")

-- The kernel's count of SYNs dropped on a full listen queue, or nil.
local function listen_overflows()
  local f = io.open("/proc/net/netstat")
  if not f then return nil end
  local names, values
  for line in f:lines() do
    if line:match("^TcpExt:") then
      if names then values = line else names = line end
    end
  end
  f:close()
  if not values then return nil end
  local i, at = 0, nil
  for name in names:gmatch("%S+") do
    i = i + 1
    if name == "ListenOverflows" then at = i end
  end
  i = 0
  for value in values:gmatch("%S+") do
    i = i + 1
    if i == at then return tonumber(value) end
  end
  return nil
end

local started = socket.gettime()
local listener = assert(socket.tcp4())
assert(listener:setoption("reuseaddr", true))
assert(listener:bind("127.0.0.1", 0))
assert(listener:listen(opt.blackhole and 0 or 64))
local _, port = listener:getsockname()

-- The connection that fills the listen queue (see --blackhole).
local filler
if opt.blackhole then
  filler = assert(socket.tcp4())
  filler:settimeout(2)
  assert(filler:connect("127.0.0.1", port))
end
local overflows_at_start = opt.untildrop and listen_overflows()

io.stdout:write(port, "\n")
io.stdout:flush()
listener:settimeout(0)

local conns = {}   -- each: { c = client, u = upstream, queue = { {at, data} }, last_at, answered }

local function close_conn(conn)
  conn.c:close()
  if conn.u then conn.u:close() end
  conn.closed = true
end

-- Data from Redis (or made up) for the client, scheduled as the mode says.
local function schedule(conn, data, now)
  if opt.trickle then
    for i = 1, #data do
      conn.last_at = math.max(now, conn.last_at) + opt.trickle
      conn.queue[#conn.queue + 1] = { at = conn.last_at, data = data:sub(i, i) }
    end
  else
    conn.queue[#conn.queue + 1] = { at = now + (opt.delay or 0), data = data }
  end
end

local function accept(now)
  local c = listener:accept()
  if not c then return end
  c:settimeout(0)
  io.stdout:write("accepted\n")
  io.stdout:flush()
  if mode == "close" then
    c:close()
    return
  end
  local conn = { c = c, queue = {}, last_at = now, streamed = 0 }
  if mode == "proxy" then
    local u = assert(socket.tcp4())
    u:settimeout(2)
    assert(u:connect("127.0.0.1", opt.upstream))
    u:settimeout(0)
    conn.u = u
  end
  conns[#conns + 1] = conn
end

-- Everything a socket has now; nil when it closed.
local function drain(s)
  local data, err, partial = s:receive(65536)
  data = data or partial
  if err == "closed" then return nil end
  return data or ""
end

-- Sends what is due; huge_bulk's stream is made as it goes out.
local function flush(conn, now)
  while conn.queue[1] and conn.queue[1].at <= now do
    local item = conn.queue[1]
    local sent, err, last = conn.c:send(item.data)
    sent = sent or last
    if err == "closed" then return false end
    if sent < #item.data then
      item.data = item.data:sub(sent + 1)
      return true
    end
    table.remove(conn.queue, 1)
  end
  if mode == "huge_bulk" and conn.answered and not conn.queue[1] and conn.streamed < opt.stream then
    local n = math.min(65536, opt.stream - conn.streamed)
    conn.streamed = conn.streamed + n
    conn.queue[1] = { at = now, data = ("x"):rep(n) }
  end
  return true
end

while true do
  local now = socket.gettime()
  if now - started > opt.lifetime then break end
  local accepting = not opt.blackhole or (opt.blackhole >= 0 and now - started >= opt.blackhole)
  if filler and accepting and overflows_at_start then
    accepting = (listen_overflows() or math.huge) > overflows_at_start
  end
  if filler and accepting then
    -- The queue's own connection goes; the clients' SYNs are let in.
    local own = listener:accept()
    if own then own:close() end
    filler:close()
    filler = nil
  end
  local readers, writers = {}, {}
  if accepting then readers[1] = listener end
  local wait = 0.05
  for _, conn in ipairs(conns) do
    readers[#readers + 1] = conn.c
    if conn.u then readers[#readers + 1] = conn.u end
    local first = conn.queue[1]
    if first then
      if first.at <= now then
        writers[#writers + 1] = conn.c
      else
        wait = math.min(wait, first.at - now)
      end
    end
  end
  socket.select(readers, writers, math.max(wait, 0.001))
  now = socket.gettime()
  if accepting then accept(now) end
  for _, conn in ipairs(conns) do
    local from_client = drain(conn.c)
    if not from_client then
      close_conn(conn)
    elseif #from_client > 0 then
      if conn.u then
        conn.u:settimeout(2)
        conn.u:send(from_client)
        conn.u:settimeout(0)
      elseif HUGE[mode] and not conn.answered then
        conn.answered = true
        schedule(conn, HUGE[mode], now)
      end
    end
    if not conn.closed and conn.u then
      local from_redis = drain(conn.u)
      if not from_redis then
        close_conn(conn)
      elseif #from_redis > 0 then
        schedule(conn, from_redis, now)
      end
    end
    if not conn.closed and not flush(conn, now) then close_conn(conn) end
  end
  for i = #conns, 1, -1 do
    if conns[i].closed then table.remove(conns, i) end
  end
end
