-- Wall-clock seconds for the bench scripts, at sub-millisecond resolution:
-- clock_gettime through LuaJIT's FFI, else the date command. A date call's
-- fork and exec fall partly inside the interval it measures, about one
-- call's worth in all: M.elapsed(t0) takes that (M.edge, measured at load)
-- off. Plain Lua has no finer clock than os.time and /proc/uptime (10 ms).
local M = { edge = 0 }

local ok, ffi = pcall(require, "ffi")
if ok then
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk, bench_timespec *ts);
  ]]
  local ts = ffi.new("bench_timespec")
  function M.now()
    ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end
else
  function M.now()
    local p = assert(io.popen("date +%s.%N", "r"))
    local s = p:read("*l")
    p:close()
    return assert(tonumber(s), "bench: date +%s.%N gave no number")
  end
  local best = math.huge
  for _ = 1, 3 do
    local a = M.now()
    local d = M.now() - a
    if d < best then best = d end
  end
  M.edge = best
end

-- Seconds since t0 (a M.now() value), less the clock's own cost.
function M.elapsed(t0)
  return M.now() - t0 - M.edge
end

return M
