-- The repository as a Neovim plugin, as a user installs it: a fresh clone
-- (git clone of the checkout's committed HEAD), its build step run the way
-- lazy.nvim runs it (build.lua, sourced from another directory, which runs
-- make nvim), then `nvim --headless -u NONE -i NONE` with only the clone and
-- Neovim's own runtime on 'runtimepath', and XDG directories of its own:
-- :checkhealth periskope, :help periskope and the commands against the local
-- Periskope server (spec/support/nvim_plugin_driver.lua). Once before the
-- build step, once with a key, once without; the key is a sentinel that must
-- appear nowhere.
local server = require "spec.support.server"
local hosts = require "spec.support.hosts"
local util = require "spec.support.util"
local cjson = require("cjson").new()

local sh, sq = server.sh, server.quote

local LAZY = "examples/neovim/lazy.lua"
-- The environment's phone: a phone id, not the number the lazy.nvim spec
-- gives setup().
local PHONE = "phone-bqzvyibhmwkaergr"

describe("the Neovim plugin, from a fresh clone", function()
  local tmp, clone, srv, sentinel
  local unbuilt, built, nokey, build_log, build_code
  local sent = {}   -- how many requests the server had after each run

  -- The start of a shell command that runs nvim in tmp with the
  -- variables of env (name -> value) and none of the user's: no
  -- PERISKOPE_*, Lua paths or Neovim configuration, XDG directories in tmp.
  local function clean(env)
    local words = { "cd", sq(tmp), "&& env -u PERISKOPE_API_KEY -u PERISKOPE_PHONE -u PERISKOPE_BASE_URL",
      "-u PERISKOPE_DEBUG -u LUA_PATH -u LUA_CPATH -u VIMINIT -u NVIM -u NVIM_LISTEN_ADDRESS" }
    for _, d in ipairs { "CONFIG", "DATA", "CACHE", "STATE" } do
      words[#words + 1] = "XDG_" .. d .. "_HOME=" .. sq(tmp .. "/xdg/" .. d:lower())
    end
    for k, v in pairs(env) do words[#words + 1] = k .. "=" .. sq(v) end
    return table.concat(words, " ")
  end

  -- Runs the driver in a clean nvim with the variables of env.
  local function run_nvim(env)
    local out = tmp .. "/out.json"
    os.remove(out)
    local words = { clean(env), "PERISKOPE_PLUGIN_OUT=" .. sq(out) }
    -- timeout: a hung nvim must not outlive the spec. Only the clone and
    -- Neovim's runtime (:checkhealth, :help) on 'runtimepath'.
    words[#words + 1] = "timeout 60 nvim --headless -u NONE -i NONE -n"
      .. " --cmd " .. sq("set runtimepath=" .. clone .. ",$VIMRUNTIME")
      .. " -c " .. sq("luafile " .. hosts.root() .. "/spec/support/nvim_plugin_driver.lua")
      .. " -c 'qa!' </dev/null 2>&1"
    local log, code = sh(table.concat(words, " "))
    local f = io.open(out, "rb")
    local text = f and f:read("*a") or ""
    if f then f:close() end
    assert(code == 0 and text ~= "", ("nvim failed (exit status %s):\n%s"):format(tostring(code), log))
    local result = cjson.decode(text)
    assert(result.driver_error == nil, result.driver_error)
    return result
  end

  setup(function()
    sentinel = "sk-sentinel-" .. util.sha256_hex(tostring(os.time()) .. tostring({})):sub(1, 24)
    srv = server.start { api_key = sentinel }
    tmp = sh("mktemp -d"):match("[^\n]+")
    tmp = sh("readlink -f " .. sq(tmp)):match("[^\n]+")
    clone = tmp .. "/periskope-lua"
    local out, code = sh("git clone -q " .. sq(hosts.root()) .. " " .. sq(clone) .. " 2>&1")
    assert(code == 0, "git clone failed:\n" .. out)

    local with_key = { PERISKOPE_API_KEY = sentinel, PERISKOPE_PHONE = PHONE,
      PERISKOPE_BASE_URL = srv.base_url }
    unbuilt = run_nvim(with_key)
    sent.unbuilt = #srv:requests()

    -- The build step as lazy.nvim runs it: build.lua sourced in Neovim,
    -- whose working directory is not the plugin's.
    build_log, build_code = sh(clean {} .. " timeout 120 nvim --headless -u NONE -i NONE -n -c "
      .. sq("lua local ok, e = pcall(dofile, " .. ("%q"):format(clone .. "/build.lua")
        .. ") if not ok then io.stderr:write(tostring(e), '\\n') vim.cmd('cquit 3') end")
      .. " -c 'qa!' </dev/null 2>&1")

    with_key.PERISKOPE_PLUGIN_LAZY = clone .. "/" .. LAZY
    built = run_nvim(with_key)
    sent.built = #srv:requests()
    nokey = run_nvim { PERISKOPE_BASE_URL = srv.base_url }
    sent.nokey = #srv:requests()
  end)

  teardown(function()
    if srv then srv:stop() end
    if tmp and tmp:match("/tmp%.%w+$") then sh("rm -rf " .. sq(tmp)) end
  end)

  it("is not built by the clone: the commands exist, and say what to run", function()
    assert.equal(2, unbuilt.commands.pin)
    assert.equal(2, unbuilt.commands.unpin)
    assert.is_false(unbuilt.module.ok)
    local note = unbuilt.notes[1]
    assert.truthy(note, "no notification")
    assert.truthy(note.msg:find("run `make nvim` in the plugin's directory", 1, true), note.msg)
    assert.equal(unbuilt.error_level, note.level)
    assert.truthy(unbuilt.health:find("ERROR: the module does not load", 1, true), unbuilt.health)
    assert.truthy(unbuilt.health:find("run `make nvim`", 1, true), unbuilt.health)
    -- No doc/tags in the repository: the build step makes it.
    assert.truthy(unbuilt.help.error, "help found before the build step")
    assert.equal(0, sent.unbuilt)
  end)

  it("builds with build.lua (make nvim) from another directory, leaving git clean", function()
    assert.equal(0, build_code, build_log)
    assert.truthy(io.open(clone .. "/lua/periskope.so", "rb"), build_log)
    assert.truthy(io.open(clone .. "/doc/tags", "rb"), build_log)
    assert.equal("", sh("git -C " .. sq(clone) .. " status --porcelain"))
  end)

  it("loads the clone's module from 'runtimepath', and nothing at startup", function()
    assert.equal(clone .. ",", built.rtp:sub(1, #clone + 1))
    assert.is_false(built.loaded_at_startup)
    assert.is_true(built.module.ok)
    assert.equal("0.1.0", built.module.version)
    assert.equal(clone .. "/lua/periskope.so", built.module.file)
    assert.same({ clone .. "/lua/periskope.so" }, built.module.on_rtp)
    assert.equal("@" .. clone .. "/lua/periskope/uv.lua", built.uv_source)
  end)

  it(":checkhealth periskope: the module, libcurl, LuaJIT and the key, never its value", function()
    local h = built.health
    assert.truthy(h:find("OK: periskope 0.1.0 loaded from " .. clone .. "/lua/periskope.so\n", 1, true), h)
    assert.truthy(h:find("\n  %- OK: LuaJIT 2%.1"), h)
    assert.truthy(h:find("\n  - OK: PERISKOPE_API_KEY is set (its value is not shown)\n", 1, true), h)
    assert.truthy(h:find("OK: PERISKOPE_PHONE is set: " .. PHONE, 1, true), h)
    assert.truthy(h:find("INFO: PERISKOPE_BASE_URL is set: " .. srv.base_url .. "\n", 1, true), h)
    assert.truthy(h:find("OK: periskope.new() accepts the PERISKOPE_* variables", 1, true), h)
    assert.falsy(h:find("ERROR", 1, true), h)
    assert.falsy(h:find("WARNING", 1, true), h)
    -- libcurl's version is the one the module sent in its User-Agent.
    local curl = h:match("OK: libcurl (%S+)")
    assert.truthy(curl, h)
    local ua = srv:requests()[1].headers["user-agent"]
    assert.truthy(ua:find(" libcurl/" .. curl .. " ", 1, true), ua)
    -- Neither the key nor any 8 bytes of its random part are anywhere
    -- in the reports or the notifications.
    local secret = sentinel:match("%x+$")
    for _, run in ipairs { unbuilt, built } do
      local text = run.health .. cjson.encode(run.notes)
      for i = 1, #secret - 7 do
        assert.falsy(text:find(secret:sub(i, i + 7), 1, true), "a piece of the key: " .. text)
      end
    end
  end)

  it(":checkhealth periskope without a key says so, with advice; the command sends nothing", function()
    local h = nokey.health
    assert.truthy(h:find("WARNING: PERISKOPE_API_KEY is not set", 1, true), h)
    assert.truthy(h:find("ADVICE", 1, true), h)
    assert.falsy(h:find("OK: PERISKOPE_API_KEY", 1, true), h)
    assert.truthy(h:find("OK: periskope 0.1.0 loaded", 1, true), h)
    local note = nokey.notes[1]
    assert.truthy(note, "no notification")
    assert.equal("periskope: no API key: set PERISKOPE_API_KEY, or call require(\"periskope.nvim\").setup"
      .. " { api_key = ... } (:help periskope-setup)", note.msg)
    assert.equal(nokey.error_level, note.level)
    assert.equal(sent.built, sent.nokey)
  end)

  it(":help periskope opens the clone's doc/periskope.txt", function()
    local doc = clone .. "/doc/periskope.txt"
    assert.equal(doc, built.help.file)
    assert.truthy(built.help.line:find("*periskope*", 1, true), built.help.line)
    assert.equal(doc, built.help_cmd.file)
    assert.truthy(built.help_cmd.line:find("*:PeriskopePin*", 1, true), built.help_cmd.line)
    assert.truthy(built.help_uv.line:find("*periskope.uv.pin()*", 1, true), built.help_uv.line)
  end)

  it(":PeriskopePin and :PeriskopeUnpin pin with the environment's key, without setup, and notify", function()
    local notes = built.notes
    assert.equal("periskope: pinned plugin-1", notes[1].msg)
    assert.equal("periskope: unpinned plugin-2", notes[2].msg)
    assert.equal("periskope: usage: :PeriskopePin <message_id> [1|7|30] (the days to pin for)", notes[3].msg)
    assert.equal(built.error_level, notes[3].level)
    local reqs = srv:requests()
    assert.equal(3, sent.built)   -- plugin-1, plugin-2, and the lazy.nvim spec's plugin-4
    assert.equal("/v1/message/plugin-1/pin", reqs[1].uri)
    assert.equal('{"pin":true,"time":7}', reqs[1].body)
    assert.equal("Bearer " .. sentinel, reqs[1].headers.authorization)
    assert.equal(PHONE, reqs[1].headers["x-phone"])
    assert.equal("/v1/message/plugin-2/pin", reqs[2].uri)
    assert.equal('{"pin":false}', reqs[2].body)
  end)

  it("loads as doc/neovim.md's lazy.nvim spec says: setup(opts) from its main module", function()
    assert.is_true(hosts.readme_quotes(LAZY))
    local lazy = built.lazy
    assert.equal("make nvim", lazy.build)
    assert.same({ "PeriskopePin", "PeriskopeUnpin" }, lazy.cmd)
    assert.equal("periskope.nvim", lazy.main)
    -- setup's client, with the spec's phone, served the next command.
    assert.equal("periskope: pinned plugin-4", built.notes[4].msg)
    local r = srv:requests()[3]
    assert.equal("/v1/message/plugin-4/pin", r.uri)
    assert.equal("919874532456", r.headers["x-phone"])
  end)
end)
