-- bin/periskope, the command line: Ctrl-C during a batch, the progress line,
-- a batch through several rate-limit windows, and --limiter (a budget
-- shared through Redis). The rest is spec/cli_spec.lua and
-- spec/cli_key_spec.lua.
local cli = require "spec.support.cli"
local server, util, sh, sq = cli.server, cli.util, cli.sh, cli.sq
local SENTINEL, read_file, lines = cli.SENTINEL, cli.read_file, cli.lines
local command, run, json_lines, ids = cli.command, cli.run, cli.json_lines, cli.ids
local args_of = cli.args_of
local function temp_dir() return cli.temp_dir(finally) end

describe("periskope (the command)", function()
  local srv = cli.command_server { setup = setup, teardown = teardown, before_each = before_each }

  describe("Ctrl-C", function()
    it("during a batch exits 130 after the line of every id that got its answer", function()
      local slow = server.start { api_key = SENTINEL, latency = 0.3 }
      local tmp = os.tmpname()
      finally(function()
        slow:stop()
        for _, x in ipairs { "", ".out", ".err", ".pid", ".exit" } do os.remove(tmp .. x) end
      end)
      -- In the background (a subshell waits for it and writes its exit
      -- status); once the server has 6 requests, SIGINT, as a terminal's
      -- Ctrl-C sends it.
      local pid = cli.background(command(slow, args_of("pin", "--concurrency", "2", ids("c", 20))), tmp)
      util.wait_for("6 requests", 20, function() return slow:stats().requests >= 6 end)
      sh("kill -INT " .. pid)
      assert.equal("130", cli.background_exit(tmp))
      local printed = lines(read_file(tmp .. ".out"))
      local err = read_file(tmp .. ".err")
      assert.falsy(err:find("SENTINEL", 1, true))
      local reqs = slow:requests()
      assert.truthy(#reqs < 20, "the batch went on: " .. #reqs)
      assert.truthy(#printed >= 4, err)     -- the first alone, then pairs: 4 done by the 6th
      local sent = {}
      for _, req in ipairs(reqs) do sent[req.uri:match("/message/([^/]+)/pin")] = true end
      for i, line in ipairs(printed) do
        -- In input order, each an id the server answered.
        local id = line:match("^(c%d+)  204 ok  remaining %d+  trace ")
        assert.equal("c" .. i, id, line)
        assert.truthy(sent[id], id)
      end
      local n, total, flying, unsent = err:match(
        "periskope: interrupted: (%d+) of (%d+) ids answered %(their lines are on stdout%), (%d+) sent but"
        .. " not answered %(they may be pinned%), (%d+) not sent\n$")
      assert.truthy(n, err)
      n, total, flying, unsent = tonumber(n), tonumber(total), tonumber(flying), tonumber(unsent)
      assert.same({ #printed, 20, 20 }, { n, total, n + flying + unsent })
      -- What reached the server and got no line is counted as in flight.
      assert.truthy(flying >= #reqs - #printed, err)
    end)
  end)

  describe("progress", function()
    local limited
    setup(function() limited = server.start { api_key = SENTINEL, rate_limit = 5, window = 1 } end)
    teardown(function() if limited then limited:stop() end end)
    before_each(function() limited:reset() end)

    it("is not shown when stderr is not a terminal: stderr stays empty", function()
      local r = run(limited, args_of("pin", ids("q", 12)))
      assert.equal(0, r.code)
      assert.equal("", r.err)
      assert.equal(12, #lines(r.out))
    end)

    it("is one line updated in place on a terminal, ending with a summary", function()
      local _, has_script = sh("command -v script >/dev/null")
      assert.equal(0, has_script, "script (util-linux / bsdutils) is required")
      local tmp = os.tmpname()
      finally(function() os.remove(tmp) end)
      -- script gives the command a pseudo-terminal; its stdout goes to a
      -- file, so what script prints is the command's stderr.
      local inner = command(limited, args_of("pin", ids("t", 12))) .. " >" .. sq(tmp)
      local tty, code = sh("script -qfec " .. sq(inner) .. " /dev/null </dev/null")
      assert.equal(0, code, tty)
      assert.equal(12, #lines(read_file(tmp)))
      assert.falsy(tty:find("SENTINEL", 1, true))
      -- Redrawn in place: carriage return, the line, clear to its end.
      local states = {}
      for done in tty:gmatch("\rperiskope: (%d+)/12  [^\r\n]-\27%[K") do states[#states + 1] = tonumber(done) end
      assert.truthy(#states >= 3, tty)
      assert.equal(0, states[1])
      for i = 2, #states do assert.truthy(states[i] >= states[i - 1], tty) end
      assert.truthy(tty:find("pins/s", 1, true), tty)
      assert.truthy(tty:find("rate%-limit wait %d+ s"), tty)
      assert.truthy(tty:find("s left", 1, true), tty)
      -- The last line is the summary, and nothing follows it.
      assert.truthy(tty:match("\rperiskope: 12 pins in [%d.]+ s: 12 ok, 0 not ok; %d+ s waiting for the rate limit"
        .. "\27%[K\r?\n$"), tty)
    end)
  end)

  describe("progress of one id", function()
    -- script gives the command a pseudo-terminal; what it prints is the
    -- command's stderr (stdout goes to a file).
    local function on_tty(args)
      local tmp = os.tmpname()
      finally(function() os.remove(tmp) end)
      local tty, code = sh("script -qfec " .. sq(command(srv, args) .. " >" .. sq(tmp)) .. " /dev/null </dev/null")
      return tty, code, read_file(tmp)
    end

    it("is not drawn when the pin need not wait: nothing on the terminal but the result", function()
      local tty, code, out = on_tty { "pin", "one-1" }
      assert.equal(0, code, tty)
      assert.truthy(out:match("^one%-1  204 ok"), out)
      assert.equal("", tty)
    end)

    it("is drawn once the pin waits, and ends with the summary", function()
      srv:script { { status = 429, headers = { ["Retry-After"] = "1" }, body = '{"message":"slow down"}' } }
      local tty, code, out = on_tty { "pin", "one-2" }
      assert.equal(0, code, tty)
      assert.truthy(out:match("^one%-2  204 ok"), out)
      assert.truthy(tty:find("\rperiskope: 0/1  ", 1, true), tty)
      assert.truthy(tty:match("\rperiskope: 1 pins in [%d.]+ s: 1 ok, 0 not ok\27%[K\r?\n$"), tty)
    end)
  end)

  -- The whole path through several rate-limit windows: ids from stdin
  -- through a server that allows 10 requests per 1 s window, so the batch
  -- must wait for three resets. Pacing must avoid every 429. (Hundreds of
  -- ids are the benchmark's and the contention runs' job.)
  it("pins 35 ids from stdin at the rate limit without one 429", function()
    local limited = server.start { api_key = SENTINEL, rate_limit = 10, window = 1 }
    finally(function() limited:stop() end)
    local list = ids("big", 35)
    local r = run(limited, { "pin", "-", "--json" }, { stdin = table.concat(list, "\n") .. "\n" })
    assert.equal(0, r.code, r.err)
    assert.equal("", r.err)
    assert.falsy(r.out:find('"status":429', 1, true))
    local objs = json_lines(r.out)
    assert.equal(#list, #objs)
    for i, obj in ipairs(objs) do
      assert.equal(list[i], obj.message_id)
      assert.is_true(obj.ok, list[i])
      assert.equal(204, obj.status)
      assert.equal(1, obj.attempts)
    end
    local st = limited:stats()
    assert.equal(#list, st.requests)   -- no retries: no 429 was drawn
    assert.is_nil(st.statuses[429])
    -- It did wait for the resets: 35 requests at 10 a window span 3 of them.
    local reqs = limited:requests()
    assert.truthy(reqs[#reqs].time - reqs[1].time >= 1.5, reqs[#reqs].time - reqs[1].time)
  end)

  describe("--limiter", function()
    local redis = require "spec.support.redis"

    -- Two commands at once, 4 ids each, on a server allowing 3 per 2 s;
    -- extra: more words for both. The server's stats and both results.
    local function two_at_once(extra, env)
      local paced = server.start { api_key = SENTINEL, rate_limit = 3, window = 2 }
      finally(function() paced:stop() end)
      local dir = temp_dir()
      local function cmd(prefix)
        local args = args_of("pin", ids(prefix, 4))
        for _, w in ipairs(extra or {}) do args[#args + 1] = w end
        return command(paced, args, { env = env }) .. " >" .. sq(dir .. "/" .. prefix .. ".out")
          .. " 2>" .. sq(dir .. "/" .. prefix .. ".err") .. " </dev/null"
      end
      sh(cmd("a") .. " &\n" .. cmd("b") .. " &\nwait")
      local r = { stats = paced:stats() }
      for _, p in ipairs { "a", "b" } do
        r[p] = { out = read_file(dir .. "/" .. p .. ".out"), err = read_file(dir .. "/" .. p .. ".err") }
        assert.falsy((r[p].out .. r[p].err):find("SENTINEL", 1, true))
      end
      return r
    end

    it("shares the key's budget with other processes through Redis: no 429 #redis", function()
      local rd = redis.start { password = "redis-pw-987" }
      finally(function() rd:stop() end)
      local r = two_at_once({ "--limiter", "redis://127.0.0.1:" .. rd.port .. "/3" },
        { PERISKOPE_REDIS_PASSWORD = "redis-pw-987" })
      assert.equal(8, r.stats.statuses[204])
      assert.is_nil(r.stats.statuses[429])
      for _, p in ipairs { "a", "b" } do
        assert.equal(4, #lines(r[p].out), r[p].err)
        assert.equal("", r[p].err)
      end
      -- One budget, in database 3, under the hash of the key.
      assert.matches("^periskope:%x+\n$", rd:cli("-n", "3", "KEYS", "*"))
      -- Without --limiter the same two draw 429s.
      local control = two_at_once()
      assert.is_true((control.stats.statuses[429] or 0) > 0, "no 429 without --limiter")
    end)

    it("a Redis that fails costs one line on stderr, never a pin or the password #redis", function()
      local rd = redis.start { password = "redis-pw-987" }
      finally(function() rd:stop() end)
      local r = run(srv, { "pin", "m1", "m2", "--limiter", "redis://localhost:" .. rd.port },
        { env = { PERISKOPE_REDIS_PASSWORD = "wrong-pw-654" } })
      assert.equal(0, r.code, r.err)
      assert.equal(2, #lines(r.out))
      local said = lines(r.err)
      assert.equal(1, #said, r.err)
      assert.matches("^periskope: %-%-limiter: redis localhost:%d+: AUTH: .*%(pacing alone until it answers%)$",
        said[1])
      assert.falsy(r.err:find("pw-654", 1, true))
    end)

    it("needs a build with hiredis, and says so", function()
      local r = run(srv, { "pin", "m", "--limiter", "redis://127.0.0.1:1" })
      if os.getenv("PERISKOPE_HIREDIS") == "no" then
        assert.equal(2, r.code)
        assert.truthy(r.err:find("this build of periskope has no Redis support", 1, true), r.err)
        assert.equal(0, srv:stats().requests)
      else
        -- Nothing listens on port 1: paced alone, said once.
        assert.equal(0, r.code, r.err)
        assert.truthy(r.err:find("--limiter: redis 127.0.0.1:1:", 1, true), r.err)
      end
    end)
  end)
end)
