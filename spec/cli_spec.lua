-- bin/periskope, the command line: usage, output, exit status, ids from
-- stdin, --dry-run and where the module comes from. The API key, Ctrl-C,
-- progress and a batch at the rate limit are in spec/cli_batch_spec.lua.
local cli = require "spec.support.cli"
local periskope, server, util, sh = cli.periskope, cli.server, cli.util, cli.sh
local sq, SENTINEL, ROOT, BIN, LUA = cli.sq, cli.SENTINEL, cli.ROOT, cli.BIN, cli.LUA
local BUILD, built_so, read_file, lines = cli.BUILD, cli.built_so, cli.read_file, cli.lines
local run, json_lines, ids, args_of = cli.run, cli.json_lines, cli.ids, cli.args_of
local function temp_dir() return cli.temp_dir(finally) end
describe("periskope (the command)", function()
  local srv = cli.command_server { setup = setup, teardown = teardown, before_each = before_each }

  describe("--help and --version", function()
    it("print the usage on stdout and exit 0", function()
      for _, flag in ipairs { "--help", "-h" } do
        local r = run(srv, { flag })
        assert.equal(0, r.code)
        assert.truthy(r.out:find("usage: periskope pin MESSAGE_ID...", 1, true), r.out)
        assert.truthy(r.out:find("--key-file FILE", 1, true))
        assert.equal("", r.err)
      end
      assert.equal(0, run(srv, { "pin", "--help" }).code)
    end)

    it("name no flag that the man page does not describe", function()
      local usage = run(srv, { "--help" }).out
      local man = assert(read_file(ROOT .. "/doc/periskope.1"))
      local n = 0
      for flag in usage:gmatch("%-%-[%w%-]+") do
        n = n + 1
        local roff = flag:gsub("%-", "\\-")
        assert.truthy(man:find("\n.B[IR]? " .. roff:gsub("%p", "%%%0") .. "[ \n]"), flag)
      end
      assert.truthy(n >= 10, usage)
    end)

    it("print the module's version", function()
      local r = run(srv, { "--version" })
      assert.equal(0, r.code)
      assert.equal("periskope " .. periskope.VERSION .. "\n", r.out)
    end)
  end)

  describe("pin MESSAGE_ID...", function()
    it("pins one message: one line, exit 0, the request the server got", function()
      local r = run(srv, { "pin", "a@b" })
      assert.equal(0, r.code, r.err)
      assert.equal("", r.err)
      assert.truthy(r.out:match("^a@b  204 ok  remaining %d+  trace %x+%-[%x%-]+\n$"), r.out)
      local reqs = srv:requests()
      assert.equal(1, #reqs)
      assert.equal("/v1/message/a%40b/pin", reqs[1].uri)
      assert.equal('{"pin":true}', reqs[1].body)
      assert.equal("Bearer " .. SENTINEL, reqs[1].headers.authorization)
      assert.equal(util.PHONE, reqs[1].headers["x-phone"])
    end)

    it("pins several: one line per id, in input order", function()
      local list = ids("m", 12)
      local r = run(srv, args_of("pin", list))
      assert.equal(0, r.code, r.err)
      assert.equal("", r.err)
      local out = lines(r.out)
      assert.equal(12, #out)
      for i = 1, 12 do assert.truthy(out[i]:match("^m" .. i .. "  204 ok  remaining "), out[i]) end
      assert.equal(12, #srv:requests())
    end)

    it("takes --unpin, --time and --phone, and ids after --", function()
      assert.equal(0, run(srv, { "pin", "--unpin", "u1" }).code)
      assert.equal(0, run(srv, { "pin", "t1", "--time", "7" }).code)
      assert.equal(0, run(srv, { "pin", "--time=30", "--phone", "+1 (555) 010-9999", "p1" }).code)
      assert.equal(0, run(srv, { "pin", "--", "-dash" }).code)
      local reqs = srv:requests()
      assert.equal('{"pin":false}', reqs[1].body)
      assert.equal('{"pin":true,"time":7}', reqs[2].body)
      assert.equal('{"pin":true,"time":30}', reqs[3].body)
      assert.equal("15550109999", reqs[3].headers["x-phone"])
      assert.equal("/v1/message/-dash/pin", reqs[4].uri)
    end)

    it("honours --concurrency", function()
      local slow = server.start { api_key = SENTINEL, latency = 0.3 }
      finally(function() slow:stop() end)
      assert.equal(0, run(slow, args_of("pin", "--concurrency", "1", ids("s", 4))).code)
      local g = util.gaps(slow:requests())
      for i = 1, 3 do assert.truthy(g[i] >= 0.29, g[i]) end
      slow:reset()
      assert.equal(0, run(slow, args_of("pin", "--concurrency", "4", ids("c", 5))).code)
      -- The first goes alone to learn the budget; the other four together.
      local reqs = slow:requests()
      assert.truthy(reqs[5].time - reqs[2].time < 0.2, reqs[5].time - reqs[2].time)
    end)

    it("uses PERISKOPE_BASE_URL and PERISKOPE_PHONE; --base-url and --phone override them", function()
      local r = run(srv, { "pin", "e1", "--base-url", srv.base_url, "--phone", "phone-cli" },
        { env = { PERISKOPE_BASE_URL = "http://127.0.0.1:1/v1", PERISKOPE_PHONE = "911111111111" } })
      assert.equal(0, r.code, r.err .. r.out)
      assert.equal("phone-cli", srv:requests()[1].headers["x-phone"])
      r = run(srv, { "pin", "e2" }, { env = { PERISKOPE_PHONE = "911111111111" } })
      assert.equal(0, r.code)
      assert.equal("911111111111", srv:requests()[2].headers["x-phone"])
    end)
  end)

  describe("exit status and output", function()
    it("is 1 when an answer is not ok: '<id>  404 <error>'", function()
      srv:script { { status = 404, body = '{"message":"Message not found"}' } }
      local r = run(srv, { "pin", "--concurrency", "1", "gone", "fine" })
      assert.equal(1, r.code)
      local out = lines(r.out)
      assert.truthy(out[1]:match("^gone  404 Message not found  trace "), out[1])
      assert.truthy(out[2]:match("^fine  204 ok  "), out[2])
      assert.equal("", r.err)
    end)

    it("is 1 when no answer came: '<id>  failed: <message> (<kind>)'", function()
      local dead = "http://127.0.0.1:1/v1"
      local r = run(srv, { "pin", "x1", "x2", "--base-url", dead })
      assert.equal(1, r.code)
      local out = lines(r.out)
      assert.equal(2, #out)
      assert.truthy(out[1]:match("^x1  failed: periskope: .+ %(connect%)$"), out[1])
      assert.truthy(out[2]:match("^x2  failed: periskope: .+ %(connect%)$"), out[2])
      r = run(srv, { "pin", "x3", "--base-url", dead, "--json" })
      assert.equal(1, r.code)
      local obj = json_lines(r.out)[1]
      assert.same({ message_id = "x3", ok = false, kind = "connect", attempts = 3 },
        { message_id = obj.message_id, ok = obj.ok, kind = obj.kind, attempts = obj.attempts })
      assert.equal(1, obj.error:find("periskope: ", 1, true))
    end)

    it("--json: one cjson-decodable object per id, in input order, with the result fields", function()
      srv:script { { status = 404, body = '{"message":"Message not found"}' } }
      local r = run(srv, args_of("pin", "--json", "--concurrency", "2", ids("j", 6)))
      assert.equal(1, r.code)
      local objs = json_lines(r.out)
      assert.equal(6, #objs)
      for i, obj in ipairs(objs) do
        assert.equal("j" .. i, obj.message_id)
        assert.equal(1, obj.attempts)
        assert.equal("string", type(obj.trace_id))
        assert.equal("number", type(obj.rate_limit.remaining))
        if i == 1 then                  -- the first request goes alone: it got the 404
          assert.same({ false, 404, "Message not found" }, { obj.ok, obj.status, obj.error })
        else
          assert.same({ true, 204 }, { obj.ok, obj.status })
          assert.is_nil(obj.error)
        end
      end
    end)
  end)

  describe("usage errors", function()
    local CASES = {
      { {}, "no command given" },
      { { "unpin", "m" }, "unknown command 'unpin'" },
      { { "pin" }, "no message id given" },
      { { "pin", "m", "--frobnicate" }, "unknown option '--frobnicate'" },
      { { "pin", "m", "--phnoe=" .. SENTINEL }, "unknown option '--phnoe'" },   -- value not echoed
      { { "pin", "m", "--time", "5" }, "--time must be 1, 7 or 30 (days)" },
      { { "pin", "m", "--time" }, "--time needs a value" },
      { { "pin", "m", "--unpin", "--time", "7" }, "makes no sense with --unpin" },
      { { "pin", "m", "--concurrency", "0" }, "--concurrency must be an integer from 1 to 64" },
      { { "pin", "m", "--concurrency", "65" }, "--concurrency must be an integer from 1 to 64" },
      { { "pin", "m", "--concurrency", "x" }, "--concurrency must be an integer from 1 to 64" },
      { { "pin", "-", "m" }, "cannot be mixed with ids on the command line" },
      { { "pin", "m", "--json=yes" }, "--json takes no value" },
      { { "pin", "m", "--base-url", "http://example.com/v1" }, "--base-url: option 'base_url'" },
      { { "pin", "m", "--phone", "12" }, "--phone: option 'phone' must be 7 to 15 digits" },
      { { "pin", "m", "--key-file", "/nonexistent/key" }, "--key-file: cannot open" },
      { { "pin", "m", ".." }, "command-line id #2: field 'message_id' must not be '.' or '..'" },
      { { "pin", "m", "--limiter" }, "--limiter needs a value" },
      { { "pin", "m", "--limiter", "http://127.0.0.1:6379" }, "--limiter must be a URL redis://HOST[:PORT][/DB]" },
      { { "pin", "m", "--limiter", "redis://127.0.0.1:0" }, "port 1-65535" },
      { { "pin", "m", "--limiter", "redis://127.0.0.1/x" }, "--limiter must be a URL redis://HOST[:PORT][/DB]" },
      { { "pin", "m", "--limiter", "redis://127.0.0.1?db=1" }, "--limiter must be a URL redis://HOST[:PORT][/DB]" },
      -- refused, the password not echoed (run checks that the sentinel is in no output)
      { { "pin", "m", "--limiter", "redis://:" .. SENTINEL .. "@127.0.0.1:6379/0" },
        "--limiter: a user or password in the URL is refused, since every user of this machine can read" },
      { { "pin", "m", "--limiter", "redis://u:" .. SENTINEL .. "@[::1]/0" }, "Set PERISKOPE_REDIS_PASSWORD instead" },
    }

    it("print the problem (and the usage), exit 2 and send nothing", function()
      for _, case in ipairs(CASES) do
        local r = run(srv, case[1])
        local what = table.concat(case[1], " ")
        assert.equal(2, r.code, what)
        assert.truthy(r.err:find(case[2], 1, true), what .. ": " .. r.err)
        assert.equal("", r.out, what)
      end
      assert.truthy(run(srv, { "pin", "m", "--time", "5" }).err:find("usage: periskope", 1, true))
      assert.equal(0, srv:stats().requests)
    end)

    it("include a missing key", function()
      local r = run(srv, { "pin", "m" }, { env = { PERISKOPE_API_KEY = false } })
      assert.equal(2, r.code)
      assert.truthy(r.err:find("no API key: set PERISKOPE_API_KEY or use --key-file FILE", 1, true), r.err)
      assert.equal(0, srv:stats().requests)
    end)
  end)

  describe("--dry-run", function()
    it("prints each request, Authorization as Bearer ***, and sends nothing", function()
      local r = run(srv, { "pin", "--dry-run", "a@b", "c", "--time", "7" })
      assert.equal(0, r.code, r.err)
      assert.equal("", r.err)
      local base = srv.base_url
      local out = r.out
      assert.truthy(out:find("^POST " .. base:gsub("%p", "%%%0") .. "/message/a%%40b/pin\n"), out)
      assert.truthy(out:find("\n\nPOST " .. base .. "/message/c/pin\n", 1, true), out)
      assert.truthy(out:find("\nAuthorization: Bearer ***\n", 1, true), out)
      assert.truthy(out:find("\nx-phone: " .. util.PHONE .. "\n", 1, true), out)
      assert.truthy(out:find("\nContent-Type: application/json\n", 1, true), out)
      assert.truthy(out:find('\n\n{"pin":true,"time":7}\n', 1, true), out)
      local _, n = out:gsub("Bearer %*%*%*", "")
      assert.equal(2, n)
      assert.equal(0, srv:stats().requests)
    end)

    it("with --json prints one request object per id", function()
      local r = run(srv, { "pin", "--dry-run", "--json", "--unpin", "d1", "d2" })
      assert.equal(0, r.code, r.err)
      local objs = json_lines(r.out)
      assert.equal(2, #objs)
      for i, obj in ipairs(objs) do
        assert.equal("d" .. i, obj.message_id)
        assert.equal("POST", obj.method)
        assert.equal(srv.base_url .. "/message/d" .. i .. "/pin", obj.url)
        assert.equal("Bearer ***", obj.headers.Authorization)
        assert.equal('{"pin":false}', obj.body)
      end
      assert.equal(0, srv:stats().requests)
    end)
  end)

  describe("pin - (ids from stdin)", function()
    it("reads one id a line, blank lines and surrounding blanks ignored", function()
      local r = run(srv, { "pin", "-" }, { stdin = "x1\r\n\n  x2  \n\t\nx3" })
      assert.equal(0, r.code, r.err)
      assert.equal("", r.err)
      local out = lines(r.out)
      assert.equal(3, #out)
      for i = 1, 3 do assert.truthy(out[i]:match("^x" .. i .. "  204 ok"), out[i]) end
      assert.equal(3, #srv:requests())
    end)

    it("reads JSON objects of pin fields; flags are the defaults they override", function()
      local input = table.concat({
        '{"message_id":"j1"}',
        '{"message_id":"j2","pin":false}',
        '',
        '{"message_id":"j3","time":7,"phone":"phone-abc"}',
        'plain4',
        '{"message_id":"j5","time":null}',
      }, "\n") .. "\n"
      local r = run(srv, { "pin", "-", "--time", "1", "--json" }, { stdin = input })
      assert.equal(0, r.code, r.err)
      local objs = json_lines(r.out)
      local want_ids = { "j1", "j2", "j3", "plain4", "j5" }
      assert.equal(5, #objs)
      for i, obj in ipairs(objs) do
        assert.equal(want_ids[i], obj.message_id)
        assert.is_true(obj.ok)
      end
      local by_uri = {}
      for _, req in ipairs(srv:requests()) do by_uri[req.uri] = req end
      assert.equal('{"pin":true,"time":1}', by_uri["/v1/message/j1/pin"].body)
      assert.equal('{"pin":false}', by_uri["/v1/message/j2/pin"].body)
      assert.equal('{"pin":true,"time":7}', by_uri["/v1/message/j3/pin"].body)
      assert.equal("phone-abc", by_uri["/v1/message/j3/pin"].headers["x-phone"])
      assert.equal(util.PHONE, by_uri["/v1/message/j1/pin"].headers["x-phone"])
      assert.equal('{"pin":true,"time":1}', by_uri["/v1/message/plain4/pin"].body)
      assert.equal('{"pin":true,"time":1}', by_uri["/v1/message/j5/pin"].body)
    end)

    it("refuses invalid lines before sending anything, naming each line", function()
      local input = table.concat({
        "ok1",
        '{"message_id":"x","time":5}',
        "ok2",
        "{not json",
        '{"message_id":"y","color":"red"}',
        '{"pin":true}',
        "bad\1id",
        "ok3",
      }, "\n") .. "\n"
      local r = run(srv, { "pin", "-" }, { stdin = input })
      assert.equal(2, r.code)
      assert.equal("", r.out)
      local err = lines(r.err)
      assert.same({
        "periskope: stdin line 2: field 'time' must be 1, 7 or 30 (days), got 5",
        "periskope: stdin line 4: not a valid JSON object",
        "periskope: stdin line 5: unknown field 'color' (message_id, pin, time, phone)",
        "periskope: stdin line 6: field 'message_id' is required (a string of 1 to 1024 bytes)",
        "periskope: stdin line 7: field 'message_id' must not contain control bytes",
        "periskope: nothing was sent",
      }, err)
      assert.equal(0, srv:stats().requests)
    end)

    it("is a usage error when stdin holds no id", function()
      local r = run(srv, { "pin", "-" }, { stdin = "\n  \n" })
      assert.equal(2, r.code)
      assert.truthy(r.err:find("stdin holds no message ids", 1, true), r.err)
    end)
  end)



  describe("the module", function()
    it("comes from the checkout's build when run from elsewhere without LUA_CPATH", function()
      -- A checkout of its own (bin/ beside build/<lua>/), holding the
      -- module this run tests, whatever build directory that came from.
      local dir = temp_dir()
      sh("mkdir -p " .. sq(dir .. "/bin") .. " " .. sq(dir .. "/build/" .. BUILD)
        .. " && touch " .. sq(dir .. "/Makefile")
        .. " && cp " .. sq(BIN) .. " " .. sq(dir .. "/bin/periskope")
        .. " && cp " .. sq(built_so()) .. " " .. sq(dir .. "/build/" .. BUILD .. "/periskope.so"))
      local r = run(srv, { "pin", "--dry-run", "w1" },
        { bin = dir .. "/bin/periskope", cd = "/", env = { LUA_CPATH = false } })
      assert.equal(0, r.code, r.err)
      assert.truthy(r.out:find("Bearer ***", 1, true))
    end)

    it("run as a command, picks the Lua whose build is in the checkout", function()
      -- A checkout with this interpreter's build only: its Makefile,
      -- bin/periskope and build/<lua>/periskope.so.
      local dir = temp_dir()
      -- The command starts a plain interpreter of its choice: it gets the
      -- plain build (not an ASan one that check-asan may be testing).
      local so = require("spec.support.hosts").build(BUILD):gsub("%?", "periskope")
      sh("mkdir -p " .. sq(dir .. "/bin") .. " " .. sq(dir .. "/build/" .. BUILD)
        .. " && touch " .. sq(dir .. "/Makefile")
        .. " && cp " .. sq(BIN) .. " " .. sq(dir .. "/bin/periskope")
        .. " && cp " .. sq(so) .. " " .. sq(dir .. "/build/" .. BUILD .. "/periskope.so"))
      local r = run(srv, { "pin", "d1" }, { lua = false, bin = dir .. "/bin/periskope", cd = "/",
        env = { LUA_CPATH = false } })
      assert.equal(0, r.code, r.err)
      assert.truthy(r.out:match("^d1  204 ok"), r.out)
      -- The interpreter it chose says so in the User-Agent.
      local ua = srv:requests()[1].headers["user-agent"]
      local want = jit and "LuaJIT/" or "Lua/" .. _VERSION:match("%d+%.%d+")
      assert.truthy(ua:find(want, 1, true), ua)
      -- No build and no installed module: one line saying so, exit 1.
      sh("rm -rf " .. sq(dir .. "/build"))
      local _, installed = sh("for l in lua5.4 lua5.3 lua5.2 lua5.1 luajit lua; do env -u LUA_CPATH"
        .. " -u LUA_CPATH_5_2 -u LUA_CPATH_5_3 -u LUA_CPATH_5_4 $l -e 'require \"periskope\"'"
        .. " 2>/dev/null && exit 0; done; exit 1")
      if installed ~= 0 then
        r = run(srv, { "pin", "d2" }, { lua = false, bin = dir .. "/bin/periskope", env = { LUA_CPATH = false } })
        assert.equal(1, r.code)
        assert.equal("periskope: cannot load the periskope module: no Lua here finds it (build it with make,"
          .. " install it with make install or luarocks, or set LUA_CPATH)\n", r.err)
      end
    end)

    it("installs with make install and goes with make uninstall", function()
      local dir = temp_dir()
      local make = "make -C " .. sq(ROOT) .. " --no-print-directory LUA=" .. BUILD .. " PREFIX=" .. sq(dir)
      local out, code = sh(make .. " install 2>&1")
      assert.equal(0, code, out)
      local cmod = dir .. "/lib/lua/" .. (jit and "5.1" or _VERSION:match("%d+%.%d+"))
      for _, f in ipairs { cmod .. "/periskope.so", dir .. "/bin/periskope", dir .. "/share/man/man1/periskope.1",
                           dir .. "/share/periskope/meta/periskope.lua" } do
        assert.truthy(read_file(f), f)
      end
      -- Run by name, from elsewhere, with no LUA_CPATH: the installed
      -- script knows its interpreter and where its module is.
      local r = run(srv, { "pin", "i0" }, { lua = false, bin = dir .. "/bin/periskope", cd = "/",
        env = { LUA_CPATH = false } })
      assert.equal(0, r.code, r.err)
      assert.truthy(r.out:match("^i0  204 ok"), r.out)
      out, code = sh(make .. " uninstall 2>&1")
      assert.equal(0, code, out)
      assert.equal("", (sh("find " .. sq(dir) .. " -type f")))
    end)

    it("comes from the cpath when installed (no checkout next to the script)", function()
      local dir = temp_dir()
      local so = built_so()
      sh("mkdir -p " .. sq(dir .. "/bin") .. " " .. sq(dir .. "/lib")
        .. " && cp " .. sq(BIN) .. " " .. sq(dir .. "/bin/periskope")
        .. " && cp " .. sq(so) .. " " .. sq(dir .. "/lib/periskope.so"))
      local r = run(srv, { "pin", "i1" }, { bin = dir .. "/bin/periskope", cd = dir,
        env = { LUA_CPATH = dir .. "/lib/?.so;;" } })
      assert.equal(0, r.code, r.err)
      assert.truthy(r.out:match("^i1  204 ok"), r.out)
      -- Nowhere to be found: said so, exit 1 (unless installed system-wide).
      local _, installed = sh("env -u LUA_CPATH -u LUA_CPATH_5_2 -u LUA_CPATH_5_3 -u LUA_CPATH_5_4 "
        .. sq(LUA) .. " -e 'require \"periskope\"' 2>/dev/null")
      if installed ~= 0 then
        r = run(srv, { "pin", "i2" }, { bin = dir .. "/bin/periskope", cd = dir, env = { LUA_CPATH = false } })
        assert.equal(1, r.code)
        assert.truthy(r.err:find("cannot load the periskope module", 1, true), r.err)
      end
    end)

    it("finds the module in the LuaRocks tree it is installed in, and says where its man page is", function()
      -- LuaRocks' layout: the script in the rock's directory (run by the
      -- wrapper in <tree>/bin, which adds no path for a --tree tree), the
      -- module deployed in <tree>/lib/lua/<version>.
      local tree = temp_dir()
      local v = jit and "5.1" or _VERSION:match("%d+%.%d+")
      local rock = tree .. "/lib/luarocks/rocks-" .. v .. "/periskope/0.1.0-1"
      sh("mkdir -p " .. sq(rock .. "/bin") .. " " .. sq(rock .. "/share/man/man1") .. " "
        .. sq(tree .. "/lib/lua/" .. v)
        .. " && cp " .. sq(BIN) .. " " .. sq(rock .. "/bin/periskope")
        .. " && cp " .. sq(ROOT .. "/doc/periskope.1") .. " " .. sq(rock .. "/share/man/man1/")
        .. " && cp " .. sq(built_so()) .. " " .. sq(tree .. "/lib/lua/" .. v .. "/periskope.so"))
      local r = run(srv, { "pin", "r1" }, { bin = rock .. "/bin/periskope", cd = "/",
        env = { LUA_CPATH = false } })
      assert.equal(0, r.code, r.err)
      assert.truthy(r.out:match("^r1  204 ok"), r.out)
      r = run(srv, { "--help" }, { bin = rock .. "/bin/periskope", cd = "/", env = { LUA_CPATH = false } })
      assert.equal(0, r.code, r.err)
      local manual = r.out:match("\nThe manual: man %-M '([^']+)' periskope\n$")
      assert.equal(rock .. "/share/man", manual, r.out)
      local _, has_man = sh("command -v man >/dev/null")
      if has_man == 0 then
        local where, code = sh("man -M " .. sq(manual) .. " -w periskope")
        assert.equal(0, code, where)
        assert.equal(rock .. "/share/man/man1/periskope.1\n", where)
      end
      -- Anywhere else, man finds it on its own.
      assert.truthy(run(srv, { "--help" }).out:find("\nThe manual: man periskope\n$"))
    end)

    it("writes its PERISKOPE_DEBUG lines through, without the key", function()
      local r = run(srv, { "pin", "g1", "g2" }, { env = { PERISKOPE_DEBUG = "1" } })
      assert.equal(0, r.code)
      local _, requests = r.err:gsub("periskope: request attempt=1 method=POST", "")
      local _, responses = r.err:gsub("periskope: response attempt=1 status=204", "")
      assert.equal(2, requests, r.err)
      assert.equal(2, responses, r.err)
    end)
  end)
end)
