-- bin/periskope, the command line: the API key, never on argv, from a key
-- file or the environment, never in any output. The rest is
-- spec/cli_spec.lua and spec/cli_batch_spec.lua.
local cli = require "spec.support.cli"
local server, util, sh, sq = cli.server, cli.util, cli.sh, cli.sq
local SENTINEL, read_file, write_file, now = cli.SENTINEL, cli.read_file, cli.write_file, cli.now
local command, run, json_lines, key_file = cli.command, cli.run, cli.json_lines, cli.key_file
local function temp_dir() return cli.temp_dir(finally) end

describe("periskope (the command)", function()
  local srv = cli.command_server { setup = setup, teardown = teardown, before_each = before_each }

  describe("the API key", function()
    it("is refused on the command line, saying why, before anything is sent", function()
      for _, case in ipairs {
        { "--key", { "pin", "m", "--key", SENTINEL } },
        { "--key", { "pin", "--key=" .. SENTINEL, "m" } },
        { "--api-key", { "pin", "m", "--api-key", SENTINEL } },
        { "--key", { "pin", "--help", "--key", SENTINEL } },     -- refused before --help answers
      } do
        local flag, args = case[1], case[2]
        local r = run(srv, args)
        assert.equal(2, r.code, flag)
        assert.truthy(r.err:find(flag .. " is refused", 1, true), r.err)
        assert.truthy(r.err:find("every user of this machine can read a command's arguments (ps", 1, true))
        assert.truthy(r.err:find("Set PERISKOPE_API_KEY or use --key-file FILE", 1, true))
        assert.equal("", r.out)
      end
      assert.equal(0, srv:stats().requests)
    end)

    it("comes from --key-file: its first line, trailing whitespace dropped, before PERISKOPE_API_KEY", function()
      local path = key_file(SENTINEL .. " \t\r\nthe second line is not read\n")
      finally(function() os.remove(path) end)
      local r = run(srv, { "pin", "k1", "--key-file", path }, { env = { PERISKOPE_API_KEY = false } })
      assert.equal(0, r.code, r.err)
      r = run(srv, { "pin", "k2", "--key-file", path, "--json" }, { env = { PERISKOPE_API_KEY = "not-the-key" } })
      assert.equal(0, r.code, r.err)
      assert.is_true(json_lines(r.out)[1].ok)
      for _, req in ipairs(srv:requests()) do
        assert.equal("Bearer " .. SENTINEL, req.headers.authorization)
      end
      -- A failing run shows no key either (run checks every output).
      r = run(srv, { "pin", "k3", "--key-file", path, "--base-url", "http://127.0.0.1:1/v1" })
      assert.equal(1, r.code)
    end)

    it("is masked in what a server sends back", function()
      local body = '{"message":"bad key Bearer ' .. SENTINEL .. '"}'
      srv:script { { status = 401, body = body }, { status = 401, body = body } }
      local r = run(srv, { "pin", "m1" })
      assert.equal(1, r.code)
      assert.truthy(r.out:match("^m1  401 bad key Bearer %*%*%*  trace "), r.out)
      r = run(srv, { "pin", "m2", "--json" })
      assert.equal("bad key Bearer ***", json_lines(r.out)[1].error)
    end)

    it("from a --key-file that holds none, or cannot be read, is a usage error", function()
      local empty = key_file("  \n" .. SENTINEL .. "\n")
      local ctl = key_file("sk-\1-bad\n")
      finally(function() os.remove(empty); os.remove(ctl) end)
      local r = run(srv, { "pin", "m", "--key-file", empty })
      assert.equal(2, r.code)
      assert.truthy(r.err:find("holds no key", 1, true), r.err)
      r = run(srv, { "pin", "m", "--key-file", "/" })
      assert.equal(2, r.code)
      assert.truthy(r.err:find("--key-file", 1, true), r.err)
      r = run(srv, { "pin", "m", "--key-file", ctl })
      assert.equal(2, r.code)
      assert.truthy(r.err:find("--key-file: the key must not contain control bytes", 1, true), r.err)
      -- The cause, not the path the user gave.
      r = run(srv, { "pin", "m", "--key-file", "/nonexistent/key" })
      assert.truthy(r.err:find("--key-file: cannot open it: No such file or directory\n", 1, true), r.err)
      assert.falsy(r.err:find("/nonexistent", 1, true), r.err)
      assert.equal(0, srv:stats().requests)
    end)

    it("reads at most what a key can be: 4,096 bytes and a line end", function()
      local exact = key_file(SENTINEL .. ("k"):rep(4096 - #SENTINEL) .. "\r\n" .. ("x"):rep(100000))
      local over = key_file(SENTINEL .. ("k"):rep(4097 - #SENTINEL) .. "\n")
      local huge = os.tmpname()
      finally(function() os.remove(exact); os.remove(over); os.remove(huge) end)
      -- 20 MB on one line, and /dev/zero, which has no end: both refused
      -- after the first 4,098 bytes, at once.
      sh("head -c 20000000 /dev/zero | tr '\\0' k > " .. sq(huge))
      for _, path in ipairs { huge, "/dev/zero", over } do
        local t0 = now()
        local r = run(srv, { "pin", "m", "--key-file", path }, { env = { PERISKOPE_API_KEY = false } })
        assert.equal(2, r.code, path)
        assert.truthy(r.err:find("--key-file: its first line is longer than an API key can be (4096 bytes)",
          1, true), r.err)
        assert.truthy(now() - t0 < 5, path)
      end
      assert.equal(0, srv:stats().requests)
      local r = run(srv, { "pin", "k4096", "--key-file", exact }, { env = { PERISKOPE_API_KEY = false } })
      assert.equal(1, r.code)                    -- the server knows another key: 401
      assert.truthy(r.out:match("^k4096  401 "), r.out)
      assert.equal("Bearer " .. SENTINEL .. ("k"):rep(4096 - #SENTINEL), srv:requests()[1].headers.authorization)
    end)

    it("from a FIFO: waits for its writer, PERISKOPE_KEY_WAIT seconds at most", function()
      local dir = temp_dir()
      local fifo = dir .. "/key"
      assert.equal(0, select(2, sh("mkfifo " .. sq(fifo))))
      local t0 = now()
      local r = run(srv, { "pin", "f1", "--key-file", fifo },
        { env = { PERISKOPE_API_KEY = false, PERISKOPE_KEY_WAIT = "0.5" } })
      assert.equal(2, r.code)
      assert.truthy(r.err:find("--key-file: it is a FIFO and nothing wrote a line to it within 0.5 s", 1, true), r.err)
      assert.truthy(now() - t0 < 5)
      assert.equal(0, srv:stats().requests)
      -- A writer that comes (and one that keeps the FIFO open past its
      -- line); under timeout, so that none outlives the test.
      local src = dir .. "/src"
      write_file(src, SENTINEL .. "\n")
      for _, writer in ipairs { 'cat "$1" > "$2"', '{ cat "$1"; sleep 2; } > "$2"' } do
        sh("timeout 10 sh -c " .. sq(writer) .. " _ " .. sq(src) .. " " .. sq(fifo) .. " >/dev/null 2>&1 &")
        r = run(srv, { "pin", "f2", "--key-file", fifo },
          { env = { PERISKOPE_API_KEY = false, PERISKOPE_KEY_WAIT = "1" } })
        assert.equal(0, r.code, r.err)
      end
      assert.equal(2, srv:stats().requests)
    end)

    it("is not in the process's arguments or environment while a pin is in flight", function()
      local slow = server.start { api_key = SENTINEL, latency = 1.5 }
      local path = key_file(SENTINEL .. "\n")
      local tmp = os.tmpname()
      finally(function()
        slow:stop()
        os.remove(path)
        for _, s in ipairs { "", ".out", ".pid", ".exit" } do os.remove(tmp .. s) end
      end)
      -- Started in the background (a subshell waits for it and writes its
      -- exit status); once the server has the request (it answers 1.5 s
      -- later), the process's /proc entries are read.
      local pid = cli.background(command(slow, { "pin", "--key-file", path, "inflight" },
        { env = { PERISKOPE_API_KEY = false } }), tmp, true)
      util.wait_for("the request", 20, function() return slow:stats().requests >= 1 end)
      local cmdline = (read_file("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
      local environ = (read_file("/proc/" .. pid .. "/environ") or ""):gsub("%z", "\n")
      assert.is_nil(read_file(tmp .. ".exit"), "the pin was over before its answer")
      assert.equal("0", cli.background_exit(tmp))
      assert.truthy(cmdline:find("--key-file " .. path .. " inflight", 1, true), cmdline)
      assert.falsy(cmdline:find("SENTINEL", 1, true), cmdline)
      assert.truthy(environ:find("PERISKOPE_BASE_URL=", 1, true))
      assert.falsy(environ:find("SENTINEL", 1, true))
      local result = read_file(tmp .. ".out")
      assert.truthy(result:match("^inflight  204 ok  "), result)
      assert.falsy(result:find("SENTINEL", 1, true))
      -- --key in argv never gets that far: refused before a request.
      slow:reset()
      local r = run(slow, { "pin", "--key", SENTINEL, "inflight" })
      assert.equal(2, r.code)
      assert.equal(0, slow:stats().requests)
    end)
  end)
end)
