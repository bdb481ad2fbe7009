-- make soak: periskope in production conditions for SOAK_SECONDS (default
-- 600), against local Periskope servers made hostile at random.
--
--   SOAK_SECONDS=600 lua5.4 bench/soak.lua   (from the checkout root; mk/bench.mk runs it)
--
-- What runs:
--   - an app nginx with 4 workers (bench/soak_app.lua): a client made in
--     init_by_lua on periskope.limiter.shared_dict, pinning through
--     periskope.ngx.pin from a content handler (GET /pin?id=..., asked by
--     SOAK_LANES curl lanes, one request after the other each) and from
--     timers (SOAK_CHAINS chains per worker); reloaded (HUP) every
--     SOAK_RELOAD seconds;
--   - two processes on periskope.limiter.redis (bench/soak_redis.lua): Lua
--     5.4 through pin_many (8 at a time, 4 in flight), LuaJIT through pin;
--     the Redis they share is restarted once, halfway;
--   - two local Periskope servers (spec/support/server.lua), one per
--     budget (a shared dictionary and Redis are two budgets: on one key
--     they would overrun each other's), in hostile mode: 204, 429 with
--     Retry-After, 503, hangs past the clients' timeout, connections cut
--     mid-answer, resets no window has (WEIGHTS below), every request
--     counted in the server's rate window.
--
-- What it checks, and prints (exit 1 when one fails):
--   - every pin requested is accounted for: one outcome at the caller (a
--     result or a failure kind), none dropped, none twice; each curl
--     request answered; each pin raised nothing;
--   - none sent more often than its attempts: per message id, the
--     requests the server received <= the attempts the caller was told
--     (res.attempts; for a failure, the job's "request" events);
--   - no worker crash and no [alert] in the app's error log;
--   - worker RSS growth under 1 MB after warm-up: the mean VmRSS of a
--     generation's 4 workers, each sampled SOAK_RELOAD - 0.5 s into its
--     generation, from the first generation after the warm-up to the last;
--   - no 429 the servers did not inject (their rate windows' own 429s),
--     but where a Redis process paced alone after a store failure (its
--     "limiter" event): processes that cannot reach their store do not
--     see each other's requests (README, "A store failure never fails a
--     pin"), and a window of the server's that held requests paced alone
--     may be overrun by them. So a 429 is counted apart, as the
--     fallback's, when it arrived from 0.5 s before such an event (the
--     failed operation's timeout) to 1.25 s after it (the store's rest of
--     1 s, and the request it let go last) and one server window more
--     (a window that began within that time);
--   - the run did what it says: the reloads, the Redis restart, every
--     hostile kind drawn on both servers, pins from every caller.
-- The figures of a run of 600 s or more go to the soak section of
-- bench/results.md (SOAK_RESULTS names another file; "-" none); every
-- run's to build/soak/soak.md.

package.path = "./?.lua;" .. package.path
local server = require "spec.support.server"
local redis = require "spec.support.redis"
local socket = require "socket"
local http = require "socket.http"

local sh, sq, read_file, write_file = server.sh, server.quote, server.read_file, server.write_file

local function env_num(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n <= 0 then
    io.stderr:write("soak: ", name, " must be a number > 0, got '", v, "'\n")
    os.exit(2)
  end
  return n
end

local ROOT = sh("pwd"):match("[^\n]+")
local SECONDS = env_num("SOAK_SECONDS", 600)
local CFG = {
  seconds = SECONDS,
  reload = env_num("SOAK_RELOAD", 10),
  workers = 4,
  lanes = math.floor(env_num("SOAK_LANES", 6)),
  chains = math.floor(env_num("SOAK_CHAINS", 2)),
  timeout = 1,              -- the clients' timeout per attempt, seconds
  hang = 2,                 -- a hostile hang: past the timeout
  retry_after = 1,          -- an injected 429's Retry-After
  rate_nginx = 30,          -- the app's server: 30 requests per 2 s window
  rate_redis = 20,          -- the Redis processes' server: 20 per 2 s
  window = 2,
  -- The first generation, and the first tenth of the run (10 to 60 s):
  -- workers load the module, fill their pools and caches.
  warmup = math.max(10, math.min(60, SECONDS / 10)),
  drain = 60,               -- seconds the pins in flight at the end may take
  rss_limit = 1024,         -- kB
  results = os.getenv("SOAK_RESULTS") or (SECONDS >= 600 and "bench/results.md" or "-"),
  dir = ROOT .. "/build/soak",
}
local WEIGHTS = { ok = 70, too_many = 6, unavailable = 8, hang = 4, cut = 6, far_reset = 6 }
local KINDS = { "ok", "too_many", "unavailable", "hang", "cut", "far_reset" }
local PHONE = "919874532456"

if SECONDS < 3 * CFG.reload then
  io.stderr:write(("soak: SOAK_SECONDS must be at least 3 reloads (%g s): a warm-up generation,"
    .. " one to start from and one to end with\n"):format(3 * CFG.reload))
  os.exit(2)
end

local out = {}
local function say(...)
  local line = table.concat({ ... })
  print(line)
  out[#out + 1] = line
end

local function now() return socket.gettime() end
local function sleep_until(t)
  local d = t - now()
  if d > 0 then socket.sleep(d) end
end

local function commas(n)
  local s = tostring(math.floor(n + 0.5))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

-- Raises unless fn() becomes true within seconds; checks every 50 ms.
local function wait_for(what, seconds, fn)
  local deadline = now() + seconds
  while not fn() do
    if now() > deadline then error("soak: waited " .. seconds .. " s for " .. what, 2) end
    socket.sleep(0.05)
  end
end

local function get(url)
  local body, status = http.request(url)
  if status ~= 200 then error("soak: GET " .. url .. ": " .. tostring(status) .. " " .. tostring(body), 2) end
  return body
end

------------------------------------------------------------------------------
-- Processes

local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and not stat:match("^%d+ %b() Z")
end

-- VmRSS and its parts (kB): anonymous (the heap), file (mapped files) and
-- shared memory (nginx's zones: the dictionaries).
local function memory(pid)
  local text = read_file("/proc/" .. pid .. "/status") or ""
  local m = {}
  for _, f in ipairs { "VmRSS", "RssAnon", "RssFile", "RssShmem" } do
    m[f] = tonumber((text:match(f .. ":%s*(%d+)")))
  end
  return m.VmRSS and m or nil
end

-- The app's workers serving now (not those shutting down after a reload).
local function workers(master)
  local list = {}
  for pid in sh("pgrep -P " .. master):gmatch("%d+") do
    local cmd = read_file("/proc/" .. pid .. "/cmdline") or ""
    if cmd:find("worker process", 1, true) and not cmd:find("shutting down", 1, true) then
      list[#list + 1] = tonumber(pid)
    end
  end
  table.sort(list)
  return list
end

-- The curl lanes: each asks the app for one pin after the other, writing
-- "Q <id>" before and "A <id> <curl exit> <HTTP status> <body>" after,
-- until the stop file appears or the soak is gone.
local LANE = [[
lane=$1 soak=$2 dir=$3 url=$4
i=0
while [ ! -e "$dir/stop" ] && kill -0 "$soak" 2>/dev/null; do
  i=$((i+1)); id="c$lane-$i"
  echo "Q $id" >> "$dir/lane$lane"
  code=$(curl -sS --noproxy '*' --max-time 90 -o "$dir/body$lane" -w '%{http_code}' \
    "$url/pin?id=$id" 2>>"$dir/lane$lane.err")
  rc=$?
  body=$(cat "$dir/body$lane" 2>/dev/null); rm -f "$dir/body$lane"
  echo "A $id $rc $code $body" >> "$dir/lane$lane"
  case "$body" in unavailable*|rate_limited*) sleep 0.5;; esac
done
touch "$dir/lane$lane.done"
]]

------------------------------------------------------------------------------
-- The app nginx

local function start_app(srv)
  local conf = ([[
    lua_shared_dict soak_pacing 1m;
    lua_shared_dict soak %dm;
    init_by_lua_block {
      require("bench.soak_app").init {
        api_key = %q, phone = %q, base_url = %q, timeout = %s, chains = %d,
      }
    }
    init_worker_by_lua_block { require("bench.soak_app").init_worker() }
  ]]):format(math.max(16, math.ceil(SECONDS * 15 * 2048 / 1048576)), srv.api_key, PHONE, srv.base_url,
             CFG.timeout, CFG.chains)
  return server.start {
    workers = CFG.workers,
    reuseport = true,
    lua_cpath = ROOT .. "/build/luajit/?.so",
    lua_path = ROOT .. "/lua/?.lua",
    extra_http = conf,
    extra_server = [[
      location = /pin { content_by_lua_block { require("bench.soak_app").content() } }
      location = /soak/go { content_by_lua_block { require("bench.soak_app").go() } }
      location = /soak/stop { content_by_lua_block { require("bench.soak_app").stop() } }
      location = /soak/count { content_by_lua_block { require("bench.soak_app").count() } }
      location = /soak/dump { content_by_lua_block { require("bench.soak_app").dump() } }
    ]],
  }
end

-- The app's dictionary: { q = {id -> "c|t pid"}, o = {id -> outcome},
-- s = {id -> request events}, ev = {name -> n}, double = n }.
local function dump(app)
  local d = { q = {}, o = {}, s = {}, ev = {}, n = {}, double = 0, pacing_keys = 0 }
  for key, value in get(app.url .. "/soak/dump"):gmatch("([^\t\n]+)\t([^\n]*)\n") do
    local kind, id = key:match("^(%a+):(.+)$")
    if kind == "q" or kind == "o" then
      d[kind][id] = value
    elseif kind == "s" then
      d.s[id] = tonumber(value)
    elseif kind == "ev" or kind == "n" then
      d[kind][id] = tonumber(value)
    elseif key == "double_outcomes" then
      d.double = tonumber(value)
    elseif key == "pacing_keys" then
      d.pacing_keys = tonumber(value)
    end
  end
  return d
end

------------------------------------------------------------------------------
-- The run

local state = {}           -- what cleanup must stop
local function cleanup()
  if state.dir then write_file(state.dir .. "/stop", "") end
  for _, p in ipairs(state.procs or {}) do
    if p.pid and alive(p.pid) then sh("kill -TERM " .. p.pid) end
  end
  for _, name in ipairs { "app", "srv_nginx", "srv_redis", "redis" } do
    if state[name] then pcall(state[name].stop, state[name]) end
  end
end

local function run()
  local r = { gens = {}, reloads = 0, reload_failures = 0, t_start = now() }
  sh("rm -rf " .. sq(CFG.dir) .. " && mkdir -p " .. sq(CFG.dir))
  state.dir = CFG.dir
  local records = math.max(16, math.ceil(SECONDS * 15 * 1024 * 1.5 / 1048576))
  local hostile = { weights = WEIGHTS, hang = CFG.hang, retry_after = CFG.retry_after }

  -- Each server answers one request before the soak, so that the first
  -- pins meet a worker that has loaded its code, as Periskope's has.
  for _, name in ipairs { "srv_nginx", "srv_redis" } do
    local srv = server.start { rate_limit = name == "srv_nginx" and CFG.rate_nginx or CFG.rate_redis,
                               window = CFG.window, records = records }
    state[name] = srv
    sh("curl -sS --noproxy '*' --max-time 10 -o /dev/null -X POST -H " .. sq("Authorization: Bearer " .. srv.api_key)
      .. " -H 'x-phone: " .. PHONE .. "' -H 'Content-Type: application/json' --data-binary '{\"pin\":true}' "
      .. sq(srv.base_url .. "/message/warm/pin"))
    srv:reset()
    srv:hostile(hostile)
  end
  state.redis = redis.start {}
  state.app = start_app(state.srv_nginx)
  local app = state.app

  -- The Redis processes.
  state.procs = {}
  local env = table.concat({
    "SOAK_API_KEY=" .. sq(state.srv_redis.api_key), "SOAK_BASE_URL=" .. sq(state.srv_redis.base_url),
    "SOAK_PHONE=" .. PHONE, "SOAK_REDIS_PORT=" .. state.redis.port,
  }, " ")
  for _, p in ipairs {
    { name = "lua5.4", bin = "lua5.4", build = "lua5.4", mode = "many" },
    { name = "luajit", bin = "luajit", build = "luajit", mode = "pin" },
  } do
    p.out, p.rc = CFG.dir .. "/" .. p.name .. ".out", CFG.dir .. "/" .. p.name .. ".rc"
    sh("(" .. env .. " LUA_CPATH=" .. sq(ROOT .. "/build/" .. p.build .. "/?.so;;") .. " " .. p.bin .. " "
      .. sq(ROOT .. "/bench/soak_redis.lua") .. " " .. p.name:gsub("%W", "") .. " " .. math.floor(SECONDS)
      .. " " .. p.mode .. " " .. CFG.timeout .. " $PPID >" .. sq(p.out) .. " 2>" .. sq(p.out .. ".err")
      .. "; echo $? >" .. sq(p.rc) .. ") >/dev/null 2>&1 </dev/null &")
    state.procs[#state.procs + 1] = p
  end
  for _, p in ipairs(state.procs) do
    wait_for(p.name .. " to start", 10, function()
      p.pid = tonumber(((read_file(p.out) or ""):match("^P (%d+)")))
      return p.pid ~= nil or read_file(p.rc) ~= nil
    end)
  end

  -- The curl lanes, and go.
  write_file(CFG.dir .. "/lane.sh", LANE)
  for k = 1, CFG.lanes do
    sh("sh " .. sq(CFG.dir .. "/lane.sh") .. " " .. k .. " $PPID " .. sq(CFG.dir) .. " " .. sq(app.url)
      .. " >/dev/null 2>&1 </dev/null &")
  end
  local t0 = now()
  r.t0 = t0
  get(app.url .. "/soak/go")
  local gen = { n = 0, start = t0, pids = workers(app.pid) }
  r.gens[1] = gen

  -- The schedule: a reload every CFG.reload s, each generation's workers
  -- sampled 2 s in and 0.5 s before its end, the Redis restart once,
  -- midway between two reloads near the middle of the run.
  local restart_at = CFG.reload * math.floor(SECONDS / 2 / CFG.reload) + CFG.reload / 2
  -- g[field] = the mean of each figure of memory() over g's workers.
  local function sample(g, field)
    local sum, n = {}, 0
    for _, pid in ipairs(g.pids) do
      local m = memory(pid)
      if m then
        n = n + 1
        for k, v in pairs(m) do sum[k] = (sum[k] or 0) + v end
      end
    end
    if n == 0 then return end
    for k, v in pairs(sum) do sum[k] = v / n end
    g[field] = sum
    g.master = memory(app.pid)
  end
  local k = 0
  while true do
    local next_reload = t0 + (k + 1) * CFG.reload
    local last = next_reload > t0 + SECONDS - 1
    local gen_end = last and t0 + SECONDS or next_reload
    sleep_until(gen.start + 2)
    sample(gen, "young")
    if not r.restarted and now() - t0 < restart_at and gen_end - t0 > restart_at then
      sleep_until(t0 + restart_at)
      state.redis:restart()
      r.restarted = now() - t0
    end
    sleep_until(gen_end - 0.5)
    sample(gen, "old")
    if last then break end
    sleep_until(next_reload)
    local before = {}
    for _, pid in ipairs(gen.pids) do before[pid] = true end
    sh("kill -HUP " .. app.pid)
    r.reloads = r.reloads + 1
    local ok = pcall(wait_for, "the new workers", 20, function()
      local list = workers(app.pid)
      if #list ~= CFG.workers then return false end
      for _, pid in ipairs(list) do if before[pid] then return false end end
      return true
    end)
    if not ok then r.reload_failures = r.reload_failures + 1 end
    k = k + 1
    gen = { n = k, start = now(), pids = workers(app.pid) }
    r.gens[#r.gens + 1] = gen
    local counts = get(app.url .. "/soak/count")
    io.write(("soak: %3.0f/%d s: reload %d, nginx pins %s requested, %s answered\n")
      :format(now() - t0, SECONDS, r.reloads, counts:match("^(%d+)"), counts:match("(%d+)%s*$")))
    io.flush()
  end

  -- Stop asking, and let the pins in flight end.
  r.t_stop = now()
  write_file(CFG.dir .. "/stop", "")
  get(app.url .. "/soak/stop")
  local deadline = now() + CFG.drain
  local lanes_done = pcall(wait_for, "the curl lanes", CFG.drain + 30, function()
    for lane = 1, CFG.lanes do
      if not read_file(CFG.dir .. "/lane" .. lane .. ".done") then return false end
    end
    return true
  end)
  r.lanes_stuck = not lanes_done
  for _, p in ipairs(state.procs) do
    pcall(wait_for, p.name .. " to end", CFG.drain + 30, function() return read_file(p.rc) ~= nil end)
    p.exit = tonumber(((read_file(p.rc) or ""):match("%d+")))
  end
  -- A pin without an outcome is in flight while its worker lives.
  local d
  while true do
    d = dump(app)
    local pending = 0
    for id, q in pairs(d.q) do
      if not d.o[id] and alive(tonumber(q:match("(%d+)$"))) then pending = pending + 1 end
    end
    r.pending = pending
    if pending == 0 or now() > deadline then break end
    socket.sleep(0.5)
  end
  r.drain = now() - r.t_stop
  r.dict = d

  -- What the servers saw and the logs say.
  for _, name in ipairs { "srv_nginx", "srv_redis" } do
    r[name] = { stats = state[name]:stats(), requests = state[name]:requests(),
                log = read_file(state[name].dir .. "/error.log") or "" }
  end
  r.app_log = read_file(app.dir .. "/error.log") or ""
  r.lanes = {}
  for lane = 1, CFG.lanes do r.lanes[lane] = read_file(CFG.dir .. "/lane" .. lane) or "" end
  for _, p in ipairs(state.procs) do p.text = read_file(p.out) or ""; p.err = read_file(p.out .. ".err") or "" end
  r.procs = state.procs
  r.elapsed = now() - r.t_start
  return r
end

------------------------------------------------------------------------------
-- Figures

-- Requests the server received per message id.
local function received(requests)
  local per = {}
  for _, q in ipairs(requests) do
    local id = q.uri:match("^/v1/message/([^/]+)/pin$")
    if id then per[id] = (per[id] or 0) + 1 end
  end
  return per
end

-- Outcome text "<status> <attempts> [<seconds>]" or "<kind> - [<seconds>]":
-- its label, attempts and seconds.
local function outcome_parts(text)
  local what, attempts, took = text:match("^(%S+)%s*(%S*)%s*(%S*)")
  return what, tonumber(attempts), tonumber(took)
end

-- The p-th quantile (0..1) of list, nil for none.
local function quantile(list, p)
  if #list == 0 then return nil end
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  return s[math.max(1, math.ceil(#s * p))]
end

local function sorted_keys(t, cmp)
  local list = {}
  for k in pairs(t) do list[#list + 1] = k end
  table.sort(list, cmp or function(a, b) return tostring(a) < tostring(b) end)
  return list
end

-- "204 1,234, 503 12, timeout 3" from {label -> n}: statuses first.
local function breakdown(t)
  local list = sorted_keys(t, function(a, b)
    local na, nb = tonumber(a), tonumber(b)
    if na and nb then return na < nb end
    if na or nb then return na ~= nil end
    return a < b
  end)
  local parts = {}
  for _, k in ipairs(list) do parts[#parts + 1] = k .. " " .. commas(t[k]) end
  return #parts > 0 and table.concat(parts, ", ") or "none"
end

-- The accounting of one side: requested ids, outcomes, sends and what
-- the server received.
local function account(requested, outcomes, sends, per_id)
  local a = { requested = 0, answered = 0, dropped = 0, by = {}, raised = 0, oversent = 0,
              unknown = 0, attempts_mismatch = 0, examples = {} }
  for id in pairs(requested) do
    a.requested = a.requested + 1
    local text = outcomes[id]
    if not text then
      a.dropped = a.dropped + 1
      if #a.examples < 5 then a.examples[#a.examples + 1] = id .. ": no outcome" end
    else
      a.answered = a.answered + 1
      local what, attempts = outcome_parts(text)
      if what == "raised" or what == "noresult" or what == "nokind" then a.raised = a.raised + 1 end
      a.by[what] = (a.by[what] or 0) + 1
      if attempts and sends[id] and attempts ~= sends[id] then a.attempts_mismatch = a.attempts_mismatch + 1 end
    end
    local allowed = (text and select(2, outcome_parts(text))) or sends[id] or 0
    if (per_id[id] or 0) > allowed then
      a.oversent = a.oversent + 1
      if #a.examples < 5 then
        a.examples[#a.examples + 1] = ("%s: received %d, attempts %d"):format(id, per_id[id], allowed)
      end
    end
  end
  for id in pairs(per_id) do
    if not requested[id] then a.unknown = a.unknown + 1 end
  end
  return a
end

-- The curl side: requests asked, answered 200 with an outcome, others.
local function lanes_account(r)
  local c = { asked = 0, answered = 0, unanswered = 0, mismatch = 0, examples = {} }
  for _, text in ipairs(r.lanes) do
    text = "\n" .. text
    local asked = {}
    for id in text:gmatch("\nQ (%S+)") do asked[id] = true; c.asked = c.asked + 1 end
    for id, rc, code, body in text:gmatch("\nA (%S+) (%d+) (%d+) ?([^\n]*)") do
      asked[id] = nil
      if rc == "0" and code == "200" and body ~= "" then
        c.answered = c.answered + 1
        if r.dict.o[id] ~= body then c.mismatch = c.mismatch + 1 end
      else
        c.unanswered = c.unanswered + 1
        if #c.examples < 5 then c.examples[#c.examples + 1] = ("%s: curl exit %s, HTTP %s"):format(id, rc, code) end
      end
    end
    for _ in pairs(asked) do c.unanswered = c.unanswered + 1 end  -- a lane stopped mid-request
  end
  return c
end

-- The lines of an error log at a level, their count and the most frequent
-- messages (timestamps, pids, numbers and addresses blanked).
local function log_lines(text, pattern)
  local n, freq = 0, {}
  for line in text:gmatch("[^\n]+") do
    if line:find(pattern) then
      n = n + 1
      local msg = line:gsub("^%S+ %S+ %[%a+%] %d+#%d+: ", ""):gsub("%*%d+ ", "")
        :gsub(", client: .*$", ""):gsub("0x%x+", "0x?"):gsub("%d+", "N"):sub(1, 160)
      freq[msg] = (freq[msg] or 0) + 1
    end
  end
  local list = sorted_keys(freq, function(a, b) return freq[a] > freq[b] or (freq[a] == freq[b] and a < b) end)
  local top = {}
  for i = 1, math.min(3, #list) do top[i] = ("%d × `%s`"):format(freq[list[i]], list[i]) end
  return n, top
end

-- "key=n key=n" (a process's E line) as {key -> n}.
local function parse_events(text)
  local t = {}
  for key, n in text:gmatch("(%S+)=(%d+)") do t[key] = tonumber(n) end
  return t
end

-- "p50 0.41 s, p99 3.20 s, max 5.02 s" of a list of seconds.
local function times(list)
  if #list == 0 then return "none" end
  return ("p50 %.2f s, p99 %.2f s, max %.2f s"):format(quantile(list, 0.5), quantile(list, 0.99),
    quantile(list, 1))
end

-- The first generation sampled after the warm-up and the last one, and
-- figure f's growth between them (their "old" samples), in kB.
local function rss_span(r, f)
  local from, to
  for _, g in ipairs(r.gens) do
    if g.old and g.start - r.t0 >= CFG.warmup and not from then from = g end
    if g.old then to = g end
  end
  if not (from and to and from ~= to) then return nil end
  return to.old[f] - from.old[f], from, to
end

local function report(r)
  local criteria = {}
  local function criterion(name, measured, ok)
    criteria[#criteria + 1] = { name = name, measured = measured, ok = ok }
  end

  -- nginx side.
  local d = r.dict
  local na = account(d.q, d.o, d.s, received(r.srv_nginx.requests))
  local callers = { c = 0, t = 0 }
  for _, q in pairs(d.q) do local c = q:sub(1, 1); callers[c] = (callers[c] or 0) + 1 end
  local took = { c = {}, t = {} }
  for id, text in pairs(d.o) do
    local list = took[(d.q[id] or "?"):sub(1, 1)]
    if list then list[#list + 1] = select(3, outcome_parts(text)) end
  end
  local lanes = lanes_account(r)
  -- Redis side.
  local rq, ro, rs = {}, {}, {}
  local proc_events = {}
  for _, p in ipairs(r.procs) do
    for id in p.text:gmatch("\nQ (%S+)") do rq[id] = true end
    for id, what, attempts, sent in p.text:gmatch("\nO (%S+) (%S+) (%S+) (%d+)") do
      ro[id] = what .. " " .. attempts
      rs[id] = tonumber(sent)
    end
    local samples = {}
    for t, kb in p.text:gmatch("\nM (%d+) (%d+)") do samples[#samples + 1] = { tonumber(t), tonumber(kb) } end
    local from
    for _, m in ipairs(samples) do if not from and m[1] >= CFG.warmup then from = m end end
    local to = samples[#samples]
    p.rss_from, p.rss_to = from and from[2], to and to[2]
    for key, n in pairs(parse_events(p.text:match("\nE ([^\n]*)") or "")) do
      proc_events[key] = (proc_events[key] or 0) + n
    end
  end
  local ra = account(rq, ro, rs, received(r.srv_redis.requests))
  -- When some Redis process paced alone: around each of its store
  -- failures (the header's criteria say how far).
  local alone = {}
  for _, p in ipairs(r.procs) do
    for t in p.text:gmatch("\nL (%S+)") do alone[#alone + 1] = tonumber(t) end
  end
  local function paced_alone(t)
    for _, at in ipairs(alone) do
      if t >= at - 0.5 and t <= at + 1.25 + CFG.window then return true end
    end
    return false
  end
  -- The Redis side's own 429s: those while a process paced alone, and the
  -- others (the criterion's).
  local redis_over = { alone = 0, shared = 0 }
  for _, q in ipairs(r.srv_redis.requests) do
    if q.over_limit then
      local k = paced_alone(q.time) and "alone" or "shared"
      redis_over[k] = redis_over[k] + 1
    end
  end
  -- The 429s of the servers' windows: when, from the start.
  local over = {}
  for _, name in ipairs { "srv_nginx", "srv_redis" } do
    for _, q in ipairs(r[name].requests) do
      if q.over_limit then
        over[#over + 1] = ("%s at %.1f s%s"):format(name == "srv_nginx" and "nginx's" or "Redis's", q.time - r.t0,
          name == "srv_redis" and paced_alone(q.time) and " (a process paced alone)" or "")
      end
    end
  end

  say("## Soak (`make soak`)")
  say("")
  say("<!-- Written by `make soak` (bench/soak.lua); do not edit by hand. -->")
  say("")
  -- The commit, and whether what the soak runs differs from it.
  local checkout = (sh("git rev-parse --short HEAD 2>/dev/null"):match("%S+") or "?")
    .. (sh("git status --porcelain -- src lua bench/soak.lua bench/soak_app.lua bench/soak_redis.lua"
      .. " spec/support 2>/dev/null"):find("%S") and " with uncommitted changes" or "")
  say(("Run %s UTC, checkout %s, %s cores, load average at start %s. `periskope.ngx` made %s cosockets.")
    :format(os.date("!%Y-%m-%d %H:%M", math.floor(r.t_start)), checkout, sh("nproc"):match("%d+") or "?",
      r.loadavg or "?", commas(d.n.cosocket or 0)))
  say("")
  local weights = {}
  for _, kind in ipairs(KINDS) do weights[#weights + 1] = kind .. " " .. WEIGHTS[kind] end
  say(("%d s of pins (SOAK_SECONDS), then %.1f s for the pins in flight to end; %.0f s in all. The app nginx"
    .. " (4 workers, `periskope.limiter.shared_dict`) reloaded %d times (every %g s, %d reload(s) without"
    .. " a full new generation); Redis restarted at %s. Clients: timeout %g s per attempt, retries 2,"
    .. " circuit as default. Servers: %d and %d requests per %g s window, hostile weights %s; a hang lasts %g s,"
    .. " an injected 429 says Retry-After: %d.")
    :format(SECONDS, r.drain, r.elapsed, r.reloads, CFG.reload, r.reload_failures,
      r.restarted and ("%.0f s"):format(r.restarted) or "**never**", CFG.timeout, CFG.rate_nginx, CFG.rate_redis,
      CFG.window, table.concat(weights, ", "), CFG.hang, CFG.retry_after))
  say("")
  say("| | nginx: 4 workers, shared dict, reloaded | processes on Redis (Lua 5.4 pin_many, LuaJIT pin) |")
  say("| --- | --- | --- |")
  say(("| pins requested | %s (content handler %s, timers %s) | %s |")
    :format(commas(na.requested), commas(callers.c or 0), commas(callers.t or 0), commas(ra.requested)))
  say(("| outcomes at the caller | %s | %s |"):format(breakdown(na.by), breakdown(ra.by)))
  say(("| time a pin took at the caller | content handler %s; timers %s | — |")
    :format(times(took.c), times(took.t)))
  say(("| **dropped** (no outcome) | %d | %d |"):format(na.dropped, ra.dropped))
  say(("| raised instead of an outcome | %d | %d |"):format(na.raised, ra.raised))
  say(("| outcomes twice | %d | — |"):format(d.double))
  say(("| **sent more often than its attempts** | %d | %d |"):format(na.oversent, ra.oversent))
  say(("| attempts ≠ the job's request events | %d | %d |"):format(na.attempts_mismatch, ra.attempts_mismatch))
  local function per_window(name, rate)
    return ("%.1f a window of %g s (the limit: %d)")
      :format(r[name].stats.requests / (r.t_stop - r.t0) * CFG.window, CFG.window, rate)
  end
  say(("| requests the server received | %s, %s; %d for ids never requested | %s, %s; %d |")
    :format(commas(r.srv_nginx.stats.requests), per_window("srv_nginx", CFG.rate_nginx), na.unknown,
      commas(r.srv_redis.stats.requests), per_window("srv_redis", CFG.rate_redis), ra.unknown))
  say(("| hostile answers drawn | %s | %s |"):format(breakdown(r.srv_nginx.stats.hostile),
    breakdown(r.srv_redis.stats.hostile)))
  say(("| **429s the server did not inject** | %d | %d (and %d while a process paced alone after a store failure)"
    .. " |"):format(r.srv_nginx.stats.over_limit, redis_over.shared, redis_over.alone))
  say(("| events: failures (by kind; not sent: failed without a request of its own), waits, circuit, limiter"
    .. " | %s | %s |"):format(breakdown(d.ev), breakdown(proc_events)))
  say(("| HTTP requests of the curl lanes | %s asked, %s answered with the outcome the dictionary holds"
    .. " (%d differ), **%d unanswered** | — |")
    :format(commas(lanes.asked), commas(lanes.answered), lanes.mismatch, lanes.unanswered))
  local exits = {}
  for _, p in ipairs(r.procs) do exits[#exits + 1] = p.name .. " " .. tostring(p.exit) end
  say(("| keys in the pacing dictionary at the end; process exit status | %d | %s |")
    :format(d.pacing_keys, table.concat(exits, ", ")))
  say("")
  local examples = {}
  for _, e in ipairs(na.examples) do examples[#examples + 1] = "nginx " .. e end
  for _, e in ipairs(ra.examples) do examples[#examples + 1] = "redis " .. e end
  for _, e in ipairs(lanes.examples) do examples[#examples + 1] = "curl " .. e end
  if #examples > 0 then
    say("First cases: " .. table.concat(examples, "; ") .. ".")
    say("")
  end
  if #over > 0 then
    say("429s of the servers' own windows: " .. table.concat(over, ", ", 1, math.min(#over, 10))
      .. (#over > 10 and ", ..." or "") .. ".")
    say("")
  end

  -- Error log.
  local alerts, alert_top = log_lines(r.app_log, "%[alert%]")
  local crit = log_lines(r.app_log, "%[crit%]") + log_lines(r.app_log, "%[emerg%]")
  local crashes = log_lines(r.app_log, "exited on signal")
  local errors, error_top = log_lines(r.app_log, "%[error%]")
  local warns, warn_top = log_lines(r.app_log, "%[warn%]")
  local full = log_lines(r.app_log, "soak: the dictionary")
  say(("App error log: %d [alert] (%d worker crashes, `exited on signal`), %d [crit]/[emerg], %d [error], %d [warn].")
    :format(alerts, crashes, crit, errors, warns))
  for _, t in ipairs { { "[alert]", alert_top }, { "[error]", error_top }, { "[warn]", warn_top } } do
    if #t[2] > 0 then say("- most frequent ", t[1], ": ", table.concat(t[2], "; ")) end
  end
  local srv_alerts = log_lines(r.srv_nginx.log, "%[alert%]") + log_lines(r.srv_redis.log, "%[alert%]")
  if srv_alerts > 0 then say(("- the local servers' own error logs: %d [alert]"):format(srv_alerts)) end
  say("")

  -- RSS.
  local private = rss_span(r, "VmRSS") and (rss_span(r, "RssAnon") + rss_span(r, "RssFile"))
  local growth, from, to = rss_span(r, "VmRSS")
  say(("Worker RSS (`/proc/<pid>/status`, the mean of a generation's %d workers %g s into it; warm-up: the"
    .. " first %g s):"):format(CFG.workers, CFG.reload - 0.5, CFG.warmup))
  if growth then
    local function row(g)
      return ("| %d (from %.0f s) | %s | %s | %s | %s | %s |"):format(g.n, g.start - r.t0, commas(g.old.VmRSS),
        commas(g.old.RssAnon), commas(g.old.RssFile), commas(g.old.RssShmem), commas(g.master and g.master.VmRSS or 0))
    end
    say("")
    say("| generation | VmRSS kB | anonymous | file | shared memory | master's VmRSS |")
    say("| --- | ---: | ---: | ---: | ---: | ---: |")
    say(row(from))
    say(row(to))
    say(("| growth | %+.0f | %+.0f | %+.0f | %+.0f | %+.0f |"):format(growth, rss_span(r, "RssAnon"),
      rss_span(r, "RssFile"), rss_span(r, "RssShmem"), (to.master and from.master)
        and to.master.VmRSS - from.master.VmRSS or 0))
    say("")
    local within, n = 0, 0
    for _, g in ipairs(r.gens) do
      if g.old and g.young and g.start - r.t0 >= CFG.warmup then
        within, n = within + (g.old.RssAnon + g.old.RssFile) - (g.young.RssAnon + g.young.RssFile), n + 1
      end
    end
    say(("Private (anonymous + file) growth within a generation, 2 s to %g s into it, mean over the"
      .. " generations after warm-up: %+.0f kB."):format(CFG.reload - 0.5, n > 0 and within / n or 0))
  else
    say("**not measured**: no two generations after the warm-up.")
  end
  local per = {}
  for _, g in ipairs(r.gens) do
    if g.old then
      per[#per + 1] = ("%d: %s/%s"):format(g.n, commas(g.old.VmRSS), commas(g.old.RssAnon + g.old.RssFile))
    end
  end
  say("Per generation (VmRSS/private, kB): " .. table.concat(per, ", ") .. ".")
  for _, p in ipairs(r.procs) do
    if p.rss_from and p.rss_to then
      say(("Process %s (one process all along): VmRSS %s kB after the warm-up, %s kB at the end (%+d kB).")
        :format(p.name, commas(p.rss_from), commas(p.rss_to), p.rss_to - p.rss_from))
    end
  end
  say("")

  -- Criteria.
  criterion("every nginx pin accounted for: none dropped, none twice, none raised",
    ("%d dropped, %d twice, %d raised"):format(na.dropped, d.double, na.raised),
    na.dropped == 0 and d.double == 0 and na.raised == 0)
  criterion("every curl request answered with its outcome",
    ("%d unanswered, %d differ"):format(lanes.unanswered, lanes.mismatch),
    lanes.unanswered == 0 and lanes.mismatch == 0 and not r.lanes_stuck)
  local exits_ok = true
  for _, p in ipairs(r.procs) do if p.exit ~= 0 then exits_ok = false end end
  criterion("every Redis-process pin accounted for; the processes exit 0",
    ("%d dropped, %d raised"):format(ra.dropped, ra.raised), ra.dropped == 0 and ra.raised == 0 and exits_ok)
  criterion("none sent more often than its attempts",
    ("%d nginx, %d Redis; %d + %d requests for ids never requested")
      :format(na.oversent, ra.oversent, na.unknown, ra.unknown),
    na.oversent == 0 and ra.oversent == 0 and na.unknown == 0 and ra.unknown == 0)
  criterion("no worker crash, no [alert] in the error log",
    ("%d crashes, %d [alert], %d [crit]/[emerg]"):format(crashes, alerts, crit),
    crashes == 0 and alerts == 0 and crit == 0)
  criterion(("worker RSS growth after warm-up < %d kB (private: anonymous + file)"):format(CFG.rss_limit),
    private and ("%+.0f kB (VmRSS %+.0f kB)"):format(private, growth) or "not measured",
    private ~= nil and private < CFG.rss_limit)
  criterion("no 429 the servers did not inject (but where a store failure left a process pacing alone)",
    ("%d nginx, %d Redis (%d more while a process paced alone, after %d store failure(s))")
      :format(r.srv_nginx.stats.over_limit, redis_over.shared, redis_over.alone, #alone),
    r.srv_nginx.stats.over_limit == 0 and redis_over.shared == 0)
  local drawn_ok = true
  for _, name in ipairs { "srv_nginx", "srv_redis" } do
    for _, kind in ipairs(KINDS) do
      if (r[name].stats.hostile[kind] or 0) == 0 then drawn_ok = false end
    end
    if r[name].stats.dropped > 0 then drawn_ok = false end
  end
  criterion("the run did what it says: reloads, Redis restart, every hostile kind, both callers, records kept",
    ("%d reloads (%d incomplete), restart %s, pins %d + %d, records dropped %d + %d, dictionary full %d")
      :format(r.reloads, r.reload_failures, r.restarted and "done" or "missing", na.requested, ra.requested,
        r.srv_nginx.stats.dropped, r.srv_redis.stats.dropped, full),
    r.reloads >= math.floor(SECONDS / CFG.reload) - 1 and r.reload_failures == 0 and r.restarted ~= nil
      and drawn_ok and (callers.c or 0) > 0 and (callers.t or 0) > 0 and ra.requested > 0 and full == 0)

  say("| criterion | measured | |")
  say("| --- | --- | --- |")
  local all = true
  for _, c in ipairs(criteria) do
    say(("| %s | %s | %s |"):format(c.name, c.measured, c.ok and "met" or "**missed**"))
    all = all and c.ok
  end
  say("")
  return all
end

------------------------------------------------------------------------------
-- Main

local loadavg = (read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)")
for _, so in ipairs { "build/luajit/periskope.so", "build/lua5.4/periskope.so" } do
  if not read_file(ROOT .. "/" .. so) then
    io.stderr:write("soak: ", so, " is missing: run `make soak`\n")
    os.exit(2)
  end
end
print(("soak: %d s, reloads every %g s, figures at the end"):format(SECONDS, CFG.reload))
local ok, r = pcall(run)
if not ok then
  cleanup()
  io.stderr:write(tostring(r), "\n")
  os.exit(1)
end
r.loadavg = loadavg
cleanup()
local passed = report(r)
local text = table.concat(out, "\n") .. "\n"
write_file(CFG.dir .. "/soak.md", text)
if CFG.results ~= "-" then
  -- Between the soak markers of the results file (appended when absent).
  local BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
  local old = read_file(CFG.results) or ""
  local a, b = old:find(BEGIN, 1, true), old:find(END, 1, true)
  if a and b and b > a then
    old = old:sub(1, a - 1) .. BEGIN .. "\n" .. text .. old:sub(b)
  else
    old = old .. (old ~= "" and "\n" or "") .. BEGIN .. "\n" .. text .. END .. "\n"
  end
  write_file(CFG.results, old)
  print("soak: figures in " .. CFG.results .. " and " .. CFG.dir .. "/soak.md")
else
  print("soak: figures in " .. CFG.dir .. "/soak.md")
end
print(passed and "soak: every criterion met" or "soak: FAILED: a criterion was missed")
os.exit(passed and 0 or 1)
