-- A stub DNS server for the specs: nginx's resolver (which a cosocket's
-- connect to a host name goes through) asks DNS only, never /etc/hosts,
-- and the machine has no DNS server. It answers A queries for the names
-- it is given with their addresses, and NXDOMAIN for any other name; no
-- AAAA (the resolver is told ipv6=off). Plain Lua 5.1-5.4 with LuaSocket.
--
--   local dns = require "spec.support.dns"
--   local d = dns.start { localhost = "127.0.0.1" }   -- d.port, d.pid
--   -- nginx.conf: resolver 127.0.0.1:<d.port> ipv6=off;
--   d:stop()
--
-- Run as a script (`lua5.4 dns.lua NAME=ADDR...`), it serves: it prints
-- its port on the first line, then answers until killed.

local M = {}

local function serve(names)
  local socket = require "socket"
  local udp = assert(socket.udp())
  assert(udp:setsockname("127.0.0.1", 0))
  local _, port = udp:getsockname()
  io.stdout:write(port, "\n")
  io.stdout:flush()
  while true do
    local q, ip, p = udp:receivefrom()
    if q and #q >= 12 then
      -- The question: labels from byte 13, then type and class.
      local labels, i = {}, 13
      while i <= #q and q:byte(i) ~= 0 do
        local n = q:byte(i)
        labels[#labels + 1] = q:sub(i + 1, i + n)
        i = i + n + 1
      end
      local qend = i + 4                        -- the zero byte, type, class
      local name = table.concat(labels, "."):lower()
      local qtype = q:byte(i + 1) * 256 + q:byte(i + 2)
      local addr = names[name]
      local answer, rcode, count = "", addr and 0 or 3, 0
      if addr and qtype == 1 then
        local a, b, c, d = addr:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
        -- A pointer to the question's name, A, IN, TTL 60, 4 bytes.
        answer = "\192\12\0\1\0\1\0\0\0\60\0\4"
          .. string.char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
        count = 1
      end
      local header = q:sub(1, 2) .. string.char(0x81, 0x80 + rcode)
        .. "\0\1" .. string.char(0, count) .. "\0\0\0\0"
      udp:sendto(header .. q:sub(13, qend) .. answer, ip, p)
    end
  end
end

-- Starts the server in a child process; returns { port, pid, stop }.
function M.start(names)
  local server = require "spec.support.server"
  local args = {}
  for name, addr in pairs(names) do args[#args + 1] = server.quote(name .. "=" .. addr) end
  local here = debug.getinfo(1, "S").source:match("^@(.*)$")
  local out = os.tmpname()
  local pid = server.sh("lua5.4 " .. server.quote(here) .. " " .. table.concat(args, " ")
    .. " > " .. server.quote(out) .. " 2>&1 & echo $!"):match("%d+")
  local port
  for _ = 1, 200 do
    local f = io.open(out, "r")
    port = f and tonumber(f:read("*l") or "")
    if f then f:close() end
    if port then break end
    server.sh("sleep 0.01")
  end
  os.remove(out)
  assert(port, "the stub DNS server did not start")
  return {
    port = port, pid = tonumber(pid),
    stop = function(self)
      if self.pid then server.sh("kill " .. self.pid .. " 2>/dev/null") end
      self.pid = nil
    end,
  }
end

if arg and arg[0] and arg[0]:match("dns%.lua$") and not package.loaded["spec.support.server"] then
  local names = {}
  for _, a in ipairs(arg) do
    local name, addr = a:match("^([^=]+)=(.+)$")
    if name then names[name:lower()] = addr end
  end
  serve(names)
end

return M
