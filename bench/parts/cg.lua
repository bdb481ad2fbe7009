-- Part 2 (cg) of make bench: client instructions per pin under callgrind,
-- (I(N2) - I(N1)) / (N2 - N1) for periskope (Lua 5.4) and the raw loop, and
-- where they differ, by library and by function; then system calls per pin,
-- counted by perf the same way.
local b = require "bench.common"

local CFG, sq, md, commas = b.CFG, b.sq, b.md, b.commas
local API_KEY, PHONE = b.API_KEY, b.PHONE

local M = {}

-- Target: periskope's instructions per pin at most this times the raw loop's.
local TARGET = 1.0

-- The sequential clients of this part: n pins with message ids <id><i>, no
-- warm-up. `through` (valgrind, say) goes between the environment and the
-- program, and ends with a space.
local function raw_cmd(srv, ua, n, id, through)
  return b.CLIENT_ENV .. through .. sq(CFG.raw) .. " " .. sq(srv.base_url) .. " " .. sq(API_KEY)
    .. " " .. sq(PHONE) .. " " .. sq(ua) .. " 0 " .. n .. " " .. id
end
local function periskope_cmd(srv, n, id, through, hook)
  return b.lua_env("lua5.4") .. through .. "lua5.4 bench/seq_periskope.lua " .. sq(srv.base_url)
    .. " " .. sq(API_KEY) .. " " .. sq(PHONE) .. " 0 " .. n .. " " .. id .. (hook and " hook" or "")
end

------------------------------------------------------------------------------
-- Reading callgrind's files

-- The Ir total of a callgrind output file.
local function cg_total(path)
  local text = b.read_file(path) or ""
  return tonumber(text:match("\ntotals:%s*(%d+)") or text:match("\nsummary:%s*(%d+)"))
end

-- callgrind_annotate's per-function Ir (inclusive or self) of a file:
-- { ["function [object]"] = Ir }. A line of a function's cost in another
-- file (inlined code) may come without its object: it takes the object the
-- same function name has elsewhere.
local function cg_functions(path, inclusive)
  local out = b.sh("callgrind_annotate --auto=no --threshold=100 "
    .. (inclusive and "--inclusive=yes " or "") .. sq(path) .. " 2>/dev/null")
  local lines, obj_of = {}, {}
  local in_list = false
  for line in out:gmatch("[^\n]+") do
    if line:match("^%s*Ir%s+file:function") then
      in_list = true
    elseif in_list then
      local num, rest = line:match("^%s*([%d,]+)%s+%([%s%d.]+%%%)%s+(.+)$")
      if num then
        local file_fn, obj = rest:match("^(.-)%s+%[(.+)%]$")
        file_fn = file_fn or rest
        local fn = file_fn:match("^.*:([^:]+)$") or file_fn
        obj = obj and obj:match("([^/]+)$")
        if obj then obj_of[fn] = obj_of[fn] or obj end
        lines[#lines + 1] = { fn, obj, tonumber((num:gsub(",", ""))) }
      end
    end
  end
  local map = {}
  for _, l in ipairs(lines) do
    local key = l[1] .. " [" .. (l[2] or obj_of[l[1]] or "?") .. "]"
    -- Self costs of one function add up; inclusive ones overlap: the largest.
    if inclusive then
      map[key] = math.max(map[key] or 0, l[3])
    else
      map[key] = (map[key] or 0) + l[3]
    end
  end
  return map
end

local function per_pin(m1, m2, dn)
  local r = {}
  for k, v2 in pairs(m2) do r[k] = (v2 - (m1[k] or 0)) / dn end
  return r
end

-- Library of a "function [object]" key, folded into a few groups.
local function lib_of(key)
  local obj = key:match("%[(.-)%]$") or "?"
  if obj:match("^libcurl") then return "libcurl" end
  if obj:match("^libc%.so") then return "libc (malloc, string, stdio)" end
  if obj:match("^lua5%.4") or obj:match("^liblua") then return "Lua 5.4 interpreter" end
  if obj:match("^periskope") then return "periskope.so" end
  if obj:match("^raw_curl") then return "raw_curl (the loop)" end
  if obj:match("^ld%-linux") then return "ld.so (symbol lookup)" end
  if obj:match("^libssl") or obj:match("^libcrypto") then return "OpenSSL" end
  return "other"
end

-- The profile of `name` with n pins.
local function vg(name, n)
  return CFG.dir .. "/cg-" .. name .. "-" .. n .. ".out"
end

------------------------------------------------------------------------------
-- The runs and the tables

-- Runs each client under callgrind with N1 and N2 pins, BENCH_CG_REPEAT
-- times each, keeping the profile with the fewest instructions: per client
-- { label, [N1] = I, [N2] = I, per_pin }, in the order run; nil when a run
-- failed (its section says so).
local function measure(srv, ua)
  local N1, N2 = CFG.cg_n1, CFG.cg_n2
  local ld = CFG.cg_libdir and ("LD_LIBRARY_PATH=" .. sq(CFG.cg_libdir) .. " ") or ""
  local function under_valgrind(name, n)
    return ld .. b.on_cpu(CFG.client_cpu) .. "valgrind --tool=callgrind --callgrind-out-file="
      .. sq(vg(name, n) .. ".run") .. " "
  end
  local progs = {
    { name = "raw", label = "raw C loop",
      cmd = function(n) return raw_cmd(srv, ua, n, "cgraw-", under_valgrind("raw", n)) end },
    { name = "periskope", label = "periskope, Lua 5.4",
      cmd = function(n) return periskope_cmd(srv, n, "cgp-", under_valgrind("periskope", n)) end },
    -- The same with an on_event hook that does nothing: what events cost
    -- when they are asked for. Without a hook no event table is built.
    { name = "hook", label = "periskope, Lua 5.4, on_event set (empty function)",
      cmd = function(n) return periskope_cmd(srv, n, "cgh-", under_valgrind("hook", n), true) end },
  }
  local res = {}
  for _, p in ipairs(progs) do
    res[p.name] = { label = p.label }
    for _, n in ipairs { N1, N2 } do
      -- The fewest instructions of BENCH_CG_REPEAT runs: libcurl's poll loop
      -- turns once more whenever the answer is not there yet, so the counts
      -- move by a percent or two with the timing; the minimum is steadier.
      for rep = 1, CFG.cg_repeat do
        b.say(("== callgrind: %s, %d pins (run %d of %d)"):format(p.label, n, rep, CFG.cg_repeat))
        local r, err = b.run_client(srv, p.cmd(n), n)
        if not r or not r.valid then
          md(("callgrind run of %s with %d pins FAILED: %s"):format(p.label, n,
            err or b.check_text({ runs = { r }, notes = {}, valid = false })))
          md("")
          return nil
        end
        local total = cg_total(vg(p.name, n) .. ".run")
        if not res[p.name][n] or total < res[p.name][n] then
          res[p.name][n] = total
          assert(os.rename(vg(p.name, n) .. ".run", vg(p.name, n)))
        else
          os.remove(vg(p.name, n) .. ".run")
        end
      end
    end
    res[p.name].per_pin = (res[p.name][N2] - res[p.name][N1]) / (N2 - N1)
  end
  return res
end

local function totals_table(res)
  local N1, N2 = CFG.cg_n1, CFG.cg_n2
  md(("Each client under `valgrind --tool=callgrind` with N1 = %s and N2 = %s pins, the"
    .. " fewest instructions of %d runs each; instructions per pin = (I(N2) − I(N1)) / (N2 − N1),"
    .. " which cancels start-up and connection set-up. Only the client process is measured."
    .. " These counts repeat to within about 2 %% here (libcurl's poll loop turns once more"
    .. " when an answer is late), so differences under ~2,000 per pin are noise.")
    :format(commas(N1), commas(N2), CFG.cg_repeat))
  if CFG.cg_libdir then
    md("")
    md("libcurl for these runs: `" .. CFG.cg_libdir .. "` (BENCH_CG_LIBDIR), a build with symbols.")
  end
  md("")
  b.table_head({ "client", "I(N1)", "I(N2)", "instructions per pin", "× raw C" }, "lrrrr")
  for _, name in ipairs { "raw", "periskope", "hook" } do
    local r = res[name]
    b.row(r.label, commas(r[N1]), commas(r[N2]), commas(r.per_pin), b.fmt(r.per_pin / res.raw.per_pin, 3))
  end
  md("")
end

-- Self instructions per pin of periskope (self_p) and the raw loop (self_r), by library.
local function by_library(self_p, self_r)
  local libs, lib_names = {}, {}
  for i, self in ipairs { self_p, self_r } do
    for key, v in pairs(self) do
      local l = lib_of(key)
      if not libs[l] then libs[l] = { 0, 0 }; lib_names[#lib_names + 1] = l end
      libs[l][i] = libs[l][i] + v
    end
  end
  table.sort(lib_names, function(x, y) return libs[x][1] - libs[x][2] > libs[y][1] - libs[y][2] end)
  md("Self instructions per pin, by library (functions under callgrind_annotate's threshold"
    .. " are left out, so the sums fall a little short of the totals):")
  md("")
  b.table_head({ "library", "periskope", "raw C", "periskope − raw" }, "lrrr")
  for _, l in ipairs(lib_names) do
    local v = libs[l]
    if math.abs(v[1]) >= 50 or math.abs(v[2]) >= 50 then
      b.row(l, commas(v[1]), commas(v[2]), commas(v[1] - v[2]))
    end
  end
  md("")
end

-- The 25 functions with the most extra self instructions per pin.
local function by_function(self_p, self_r)
  local keys = {}
  for k in pairs(self_p) do keys[#keys + 1] = k end
  for k in pairs(self_r) do if not self_p[k] then keys[#keys + 1] = k end end
  table.sort(keys, function(x, y)
    return (self_p[x] or 0) - (self_r[x] or 0) > (self_p[y] or 0) - (self_r[y] or 0)
  end)
  md("The 25 functions with the most extra self instructions per pin in periskope"
    .. " (`???:0x…` is a static function of a stripped library, by address):")
  md("")
  b.table_head({ "function [object]", "periskope", "raw C", "extra" }, "lrrr")
  for i = 1, math.min(25, #keys) do
    local k = keys[i]
    b.row("`" .. k .. "`", commas(self_p[k] or 0), commas(self_r[k] or 0),
      commas((self_p[k] or 0) - (self_r[k] or 0)))
  end
  md("")
end

-- Inclusive cost of the entry points that matter, per pin.
local WATCH = {
  "lpsk_client_pin", "do_pin", "lpsk_check_pin_args", "run_busy", "lpsk_job_step",
  "lpsk_build_request", "psk_request_build", "psk_http_perform", "prepare", "header_list",
  "take_reply", "lpsk_push_head", "read_line", "lpsk_push_result", "push_rate_limit",
  "psk_parse_http_date", "lpsk_pace_take", "psk_budget_take", "pace_settle",
  "psk_budget_settle", "psk_clock_learn", "lua_createtable", "lua_rawset", "lua_setfield",
  "lua_pushlstring", "one_run", "curl_easy_perform", "curl_multi_add_handle",
  "curl_multi_socket_action", "curl_multi_remove_handle", "singlesocket", "poll",
  "curl_easy_setopt", "curl_slist_append", "curl_slist_free_all", "curl_easy_getinfo",
  "curl_url_set", "curl_url_get", "curl_maprintf", "curl_mvaprintf", "curl_msnprintf",
  "getenv", "curl_getenv", "on_header", "on_body", "luaH_resize", "luaC_step",
  "luaH_newkey", "__vsnprintf_chk", "__snprintf_chk", "__isoc99_sscanf", "sscanf",
  "malloc", "free", "realloc", "calloc",
}

local function inclusive(incl_p, incl_r)
  local function find(map, fn)
    local best
    for k, v in pairs(map) do
      if k:match("^" .. fn:gsub("%p", "%%%0") .. " %[") and (not best or v > best) then best = v end
    end
    return best
  end
  md("Inclusive instructions per pin of selected functions (– where the function does not"
    .. " run, is inlined, or is under the threshold):")
  md("")
  b.table_head({ "function", "periskope", "raw C" }, "lrr")
  for _, fn in ipairs(WATCH) do
    local p, r = find(incl_p, fn), find(incl_r, fn)
    if (p and p >= 1) or (r and r >= 1) then
      b.row("`" .. fn .. "`", p and commas(p) or "–", r and commas(r) or "–")
    end
  end
  md("")
end

-- Section 2: { raw = instructions per pin, periskope = ... } or nil.
local function callgrind(srv, ua)
  md("### 2. Client instructions per pin (callgrind)")
  md("")
  if not b.have("valgrind") then
    md("skipped: valgrind not installed (apt-get install -y valgrind)")
    md("")
    return nil
  end
  local res = measure(srv, ua)
  if not res then return nil end
  totals_table(res)
  local result = { raw = res.raw.per_pin, periskope = res.periskope.per_pin }
  -- Where the difference is: self cost per pin by library and by function.
  if not b.have("callgrind_annotate") then return result end
  local N1, N2 = CFG.cg_n1, CFG.cg_n2
  local function annotate(name, incl)
    return per_pin(cg_functions(vg(name, N1), incl), cg_functions(vg(name, N2), incl), N2 - N1)
  end
  local self_p, self_r = annotate("periskope"), annotate("raw")
  by_library(self_p, self_r)
  by_function(self_p, self_r)
  inclusive(annotate("periskope", true), annotate("raw", true))
  md(("Profiles: `%s`, `%s` (open with callgrind_annotate or kcachegrind).")
    :format(vg("periskope", N2), vg("raw", N2)))
  md("")
  return result
end

-- System calls per pin of the raw loop and periskope (Lua 5.4), counted by
-- perf's tracepoints over N1 and N2 pins, as instructions are. Returns
-- { raw = n, periskope = n } or nil.
local function syscalls(srv, ua)
  md("System calls per pin, counted by `perf stat -e raw_syscalls:sys_enter` (and"
    .. " `syscalls:sys_enter_poll`) over the same N1 and N2 pins, without valgrind:")
  md("")
  local events = "raw_syscalls:sys_enter,syscalls:sys_enter_poll"
  local probe, probe_code = "", 1
  if b.have("perf") then probe, probe_code = b.sh("perf stat -x, -e " .. events .. " true 2>&1") end
  if probe_code ~= 0 or probe:find("not supported", 1, true) or probe:find("not counted", 1, true) then
    md("skipped: perf with tracepoints unavailable (Debian package linux-perf, run as root)")
    md("")
    return nil
  end
  local N1, N2 = CFG.cg_n1, CFG.cg_n2
  local progs = {
    { name = "raw", label = "raw C loop",
      cmd = function(n) return raw_cmd(srv, ua, n, "scraw-", "") end },
    { name = "periskope", label = "periskope, Lua 5.4",
      cmd = function(n) return periskope_cmd(srv, n, "scp-", "") end },
  }
  local res = {}
  b.table_head({ "client", "system calls per pin", "of which poll()" }, "lrr")
  for _, p in ipairs(progs) do
    local counts = {}
    for _, n in ipairs { N1, N2 } do
      b.say(("== system calls: %s, %d pins"):format(p.label, n))
      local r, err = b.run_client(srv, b.on_cpu(CFG.client_cpu) .. "perf stat -x, -e " .. events
        .. " -- " .. p.cmd(n), n)
      if not r or not r.valid then
        md(("| %s | FAILED: %s | |"):format(p.label, err or "not every pin got a 204"))
        md("")
        return nil
      end
      counts[n] = {
        all = tonumber(r.out:match("\n(%d+),[^,]*,raw_syscalls:sys_enter")),
        poll = tonumber(r.out:match("\n(%d+),[^,]*,syscalls:sys_enter_poll")),
      }
      if not (counts[n].all and counts[n].poll) then
        md(("| %s | no count in perf's output | |"):format(p.label))
        md("")
        return nil
      end
    end
    res[p.name] = (counts[N2].all - counts[N1].all) / (N2 - N1)
    b.row(p.label, b.fmt(res[p.name], 2), b.fmt((counts[N2].poll - counts[N1].poll) / (N2 - N1), 2))
  end
  md("")
  return res
end

-- Runs the part: { cg = callgrind's per-pin counts or nil, syscalls = perf's or nil }.
function M.run(ctx)
  return { cg = callgrind(ctx.srv, ctx.ua), syscalls = syscalls(ctx.srv, ctx.ua) }
end

function M.targets(result)
  local cg = result.cg
  if not cg then return end
  local x = cg.periskope / cg.raw
  b.row(("instructions per pin ≤ %.2f× raw C"):format(TARGET),
    ("%.3f× (%s vs %s)"):format(x, commas(cg.periskope), commas(cg.raw)),
    b.verdict(x <= TARGET) .. (x <= TARGET and ""
      or (": %s instructions per pin over the target"):format(commas(cg.periskope - TARGET * cg.raw))))
end

return M
