-- Shared pacing under contention: many processes, one API key, one budget
-- of 10 requests per 2 s window on the local Periskope server (429 past
-- it). The processes run examples/shared/ as the README shows it:
--   - an nginx with 4 workers using periskope.limiter.shared_dict;
--   - an nginx with 2 workers, a Lua 5.4 process and a LuaJIT process,
--     all using periskope.limiter.redis.
-- Each pins 100 ids in all. With the shared limiter: every pin ok, the
-- server answered no 429, and the batch took at most 1.25x the 20 s the
-- limit allows. The control runs, the same without a limiter (and 40
-- ids: enough to overrun the budget), draw 429s: the test tells the two
-- apart. Fairness, each pin's own wait, is contention_fair_spec's.
--
-- Tagged "contention" (each run takes ~20 s, a control ~8 s): make
-- test-contention, which runs this file beside contention_fair_spec.
local server = require "spec.support.server"
local redis = require "spec.support.redis"
local hosts = require "spec.support.hosts"
local util = require "spec.support.util"
local cjson = require("cjson").new()

local sh, sq = server.sh, server.quote

local EX = "examples/shared/"
local IDS = 100
local IDEAL = 20        -- seconds: 100 pins at 10 per 2 s
local BOUND = 1.25 * IDEAL
local CONTROL_IDS = 40  -- four windows' worth

local now = server.now

local function example(file)
  return hosts.read_file(hosts.root() .. "/" .. EX .. file)
end

-- The same text without its limiter: the control run.
local function without_limiter(text)
  local out, n = text:gsub("\n%s*limiter = periskope%.limiter%.[%w_]+%s*(%b{}),", "")
  if n == 0 then
    out, n = text:gsub("\n%s*limiter = periskope%.limiter%.[%w_]+%b(),", "")
  end
  assert(n == 1, "no limiter in:\n" .. text)
  return out
end

-- An "app" nginx in front of the Periskope server, running the example.
local function start_app(periskope_srv, workers, http_conf, env)
  local e = {
    PERISKOPE_API_KEY = periskope_srv.api_key,
    PERISKOPE_BASE_URL = periskope_srv.base_url,
    PERISKOPE_PHONE = util.PHONE,
  }
  for k, v in pairs(env or {}) do e[k] = v end
  return server.start {
    workers = workers,
    lua_cpath = hosts.cpath(),
    env = e,
    extra_http = http_conf,
    extra_server = example("server.conf"),
    -- The kernel spreads curl's 8 connections over the workers: without
    -- it, one busy worker's accept can take them all, and one worker
    -- alone paces itself (the control then draws no 429).
    reuseport = true,
  }
end

-- Shell text that GETs /pin?id=<prefix><i> for i = first..last from the
-- app, 8 at a time, each answer into dir/<prefix><i>.
local function curl_pins(app, dir, prefix, first, last)
  local args = {}
  for i = first, last do
    args[#args + 1] = sq(app.url .. "/pin?id=" .. prefix .. i) .. " -o " .. sq(dir .. "/" .. prefix .. i)
  end
  return "curl -sS --noproxy '*' --max-time 120 --parallel --parallel-immediate --parallel-max 8 "
    .. table.concat(args, " ")
end

-- The answers of the app for prefix..first..last: decoded JSON objects.
local function app_answers(dir, prefix, first, last)
  local out = {}
  for i = first, last do
    local text = server.read_file(dir .. "/" .. prefix .. i) or ""
    local ok, t = pcall(cjson.decode, text)
    out[#out + 1] = ok and type(t) == "table" and t or { ok = false, error = text }
  end
  return out
end

local function count_ok(list)
  local n = 0
  for _, r in ipairs(list) do
    if r.ok == true and r.status == 204 then n = n + 1 end
  end
  return n
end

-- One line per run on stderr, for the record (the README quotes them).
local function report(name, r)
  local first, last = math.huge, 0
  for _, q in ipairs(r.requests) do
    if q.time < first then first = q.time end
    if q.time > last then last = q.time end
  end
  io.stderr:write(("\ncontention: %s: %d of %d ok, %d answered 429, %.3f s"
    .. " (first to last request %.3f s)\n")
    :format(name, count_ok(r.answers), #r.answers, r.stats.statuses[429] or 0, r.elapsed,
            last - first))
  if os.getenv("PERISKOPE_CONTENTION_TRACE") then
    for _, q in ipairs(r.requests) do
      io.stderr:write(("%.3f %s\n"):format(q.time - first, q.uri))
    end
  end
end


describe("shared pacing under contention #contention", function()
  local dir

  setup(function()
    dir = sh("mktemp -d \"${TMPDIR:-/tmp}/periskope-contention.XXXXXX\""):match("[^\n]+")
  end)

  teardown(function()
    if dir then sh("rm -rf " .. sq(dir)) end
  end)

  -- 4 workers pin n ids through the dictionary example (or its control).
  local function dict_run(http_conf, n)
    local result = {}
    server.with({ rate_limit = 10, window = 2 }, function(periskope_srv)
      local app = start_app(periskope_srv, 4, http_conf)
      local ok, err = pcall(function()
        local t0 = now()
        local out, code = sh(curl_pins(app, dir, "d", 1, n) .. " 2>&1")
        result.elapsed = now() - t0
        assert(code == 0, "curl: " .. out)
        result.answers = app_answers(dir, "d", 1, n)
        result.stats = periskope_srv:stats()
        result.requests = periskope_srv:requests()
        -- Which app workers pinned: the Periskope server saw their
        -- connections (one client per worker).
        local conns = {}
        for _, r in ipairs(periskope_srv:requests()) do conns[r.connection] = true end
        result.connections = 0
        for _ in pairs(conns) do result.connections = result.connections + 1 end
      end)
      app:stop()
      assert(ok, err)
    end)
    return result
  end

  it("runs the files the README quotes", function()
    for _, file in ipairs { "nginx_dict.conf", "server.conf", "nginx_redis.conf", "batch.lua" } do
      assert.is_true(hosts.readme_quotes(EX .. file), file)
    end
  end)

  it("4 nginx workers on one shared_dict: 100 pins, no 429, near the ideal time", function()
    local r = dict_run(example("nginx_dict.conf"), IDS)
    report("shared_dict, 4 workers", r)
    assert.equal(IDS, count_ok(r.answers))
    assert.is_nil(r.stats.statuses[429])
    assert.equal(IDS, r.stats.statuses[204])
    assert.is_true(r.connections >= 2, "only " .. r.connections .. " worker(s) pinned")
    assert.is_true(r.elapsed <= BOUND, ("took %.1f s, more than %.1f s"):format(r.elapsed, BOUND))
    assert.is_true(r.elapsed >= IDEAL - 4, ("took %.1f s: faster than the limit allows"):format(r.elapsed))
  end)

  it("the same 4 workers without it draw 429s (control)", function()
    local r = dict_run(without_limiter(example("nginx_dict.conf")), CONTROL_IDS)
    report("no limiter, 4 workers", r)
    assert.is_true(r.connections >= 2, "only " .. r.connections .. " worker(s) pinned")
    assert.is_true((r.stats.statuses[429] or 0) > 0, "no 429 without the shared limiter")
  end)

  -- 2 nginx workers (half the ids), a Lua 5.4 and a LuaJIT process (a
  -- quarter each), all at once, through Redis (or the control, without).
  local function redis_run(control, n)
    local half, three_quarters = math.floor(n / 2), math.floor(n * 3 / 4)
    local result = {}
    local batch = example("batch.lua")
    local http_conf = example("nginx_redis.conf")
    if control then
      batch = without_limiter(batch)
      http_conf = without_limiter(http_conf)
    end
    server.write_file(dir .. "/batch.lua", batch)
    local cpath54, cpathjit = hosts.build("lua5.4"), hosts.build("luajit")
    redis.with({}, function(rd)
      server.with({ rate_limit = 10, window = 2 }, function(periskope_srv)
        local env = { PERISKOPE_REDIS_PORT = tostring(rd.port) }
        local app = start_app(periskope_srv, 2, http_conf, env)
        local ok, err = pcall(function()
          local envs = table.concat({
            "PERISKOPE_API_KEY=" .. sq(periskope_srv.api_key),
            "PERISKOPE_BASE_URL=" .. sq(periskope_srv.base_url),
            "PERISKOPE_PHONE=" .. sq(util.PHONE),
            "PERISKOPE_REDIS_PORT=" .. rd.port,
          }, " ")
          local function lua_batch(bin, cpath, first, last, out)
            local ids = {}
            for i = first, last do ids[#ids + 1] = "r" .. i end
            return envs .. " LUA_CPATH=" .. sq(cpath .. ";;") .. " " .. bin .. " "
              .. sq(dir .. "/batch.lua") .. " " .. table.concat(ids, " ")
              .. " >" .. sq(dir .. "/" .. out) .. " 2>&1"
          end
          local t0 = now()
          local out = sh(table.concat({
            curl_pins(app, dir, "r", 1, half) .. " >" .. sq(dir .. "/curl.out") .. " 2>&1 &",
            lua_batch("lua5.4", cpath54, half + 1, three_quarters, "lua54.out") .. " &",
            lua_batch("luajit", cpathjit, three_quarters + 1, n, "luajit.out") .. " &",
            "wait",
          }, "\n"))
          result.elapsed = now() - t0
          result.shell = out
          result.answers = app_answers(dir, "r", 1, half)
          for _, f in ipairs { "lua54.out", "luajit.out" } do
            for id, status in (server.read_file(dir .. "/" .. f) or ""):gmatch("(r%d+)%s+(%S+)\n") do
              result.answers[#result.answers + 1] = { ok = status == "204", status = tonumber(status), id = id }
            end
          end
          result.stats = periskope_srv:stats()
          result.requests = periskope_srv:requests()
          result.keys = rd:cli("KEYS", "*")
        end)
        app:stop()
        assert(ok, err)
      end)
    end)
    return result
  end

  it("2 nginx workers, Lua 5.4 and LuaJIT on one Redis: 100 pins, no 429, near the ideal time", function()
    local r = redis_run(false, IDS)
    report("redis, 2 workers + lua5.4 + luajit", r)
    assert.equal(IDS, #r.answers)
    assert.equal(IDS, count_ok(r.answers))
    assert.is_nil(r.stats.statuses[429])
    assert.equal(IDS, r.stats.statuses[204])
    assert.is_true(r.elapsed <= BOUND, ("took %.1f s, more than %.1f s"):format(r.elapsed, BOUND))
    assert.is_true(r.elapsed >= IDEAL - 4, ("took %.1f s: faster than the limit allows"):format(r.elapsed))
    -- One budget, stored under the hash of the key, never the key.
    assert.matches("^periskope:%x+\n$", r.keys)
  end)

  it("the same processes without it draw 429s (control)", function()
    local r = redis_run(true, CONTROL_IDS)
    report("no limiter, 2 workers + lua5.4 + luajit", r)
    assert.is_true((r.stats.statuses[429] or 0) > 0, "no 429 without the shared limiter")
  end)
end)
