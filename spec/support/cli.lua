-- Shared by the command's specs (spec/cli_spec.lua, spec/cli_key_spec.lua,
-- spec/cli_batch_spec.lua):
-- bin/periskope run as a child process with the interpreter of this run
-- (PERISKOPE_LUA) against the local Periskope server, whose only key is a
-- sentinel that no output may show.
local cjson = require("cjson").new()
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

local sh, sq = server.sh, server.quote

local SENTINEL = "sk-SENTINEL-c41e08"

-- The checkout, absolute: the command runs as ROOT/bin/periskope.
local ROOT = require("spec.support.hosts").root()
local BIN = ROOT .. "/bin/periskope"
local LUA = util.lua_bin()

-- build/<name> of this interpreter, as the command looks for it.
local BUILD = jit and "luajit" or "lua" .. _VERSION:match("%d+%.%d+")

-- The module this run tests: PERISKOPE_CPATH's first entry, else the
-- checkout's build for this interpreter.
local function built_so()
  local cpath = os.getenv("PERISKOPE_CPATH")
  if cpath and cpath ~= "" then return (cpath:match("^[^;]+"):gsub("%?", "periskope")) end
  return ROOT .. "/build/" .. BUILD .. "/periskope.so"
end

local read_file, write_file = server.read_file, server.write_file

local now = server.now

-- A directory that is removed when the test ends: fin is busted's finally.
local function temp_dir(fin)
  local dir = sh("mktemp -d"):match("[^\n]+")
  fin(function() sh("rm -rf " .. sq(dir)) end)
  return dir
end

local function lines(text)
  local out = {}
  for line in text:gmatch("([^\n]*)\n") do out[#out + 1] = line end
  return out
end

-- The environment of one run: the server's URL, key and phone (o.env
-- entries override them; false unsets), LUA_CPATH aimed at this run's
-- build, and nothing else of ours that could change the outcome.
local function env_words(srv, env)
  local vars = {
    PERISKOPE_BASE_URL = srv and srv.base_url or false,
    PERISKOPE_API_KEY = srv and srv.api_key or false,
    PERISKOPE_PHONE = util.PHONE,
    PERISKOPE_DEBUG = false,
  }
  local cpath = os.getenv("PERISKOPE_CPATH")
  vars.LUA_CPATH = (cpath and cpath ~= "") and (cpath .. ";;") or false
  for k, v in pairs(env or {}) do vars[k] = v end
  local unset, set = {}, {}
  for _, name in ipairs { "LUA_CPATH_5_2", "LUA_CPATH_5_3", "LUA_CPATH_5_4" } do
    unset[#unset + 1] = "-u " .. name
  end
  local names = {}
  for k in pairs(vars) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    if vars[k] == false then
      unset[#unset + 1] = "-u " .. k
    else
      set[#set + 1] = k .. "=" .. sq(vars[k])
    end
  end
  return "env " .. table.concat(unset, " ") .. " " .. table.concat(set, " ")
end

-- The shell command that runs periskope with args (an array of words);
-- o.lua == false runs the script itself, as a user does (its #! line).
local function command(srv, args, o)
  local words = {}
  for _, a in ipairs(args) do words[#words + 1] = sq(a) end
  local lua = o and o.lua
  if lua == nil then lua = LUA end
  return env_words(srv, o and o.env) .. " " .. (lua and sq(lua) .. " " or "")
    .. sq(o and o.bin or BIN) .. " " .. table.concat(words, " ")
end

-- Runs periskope; returns { out, err, code }. o.stdin: the input (else
-- /dev/null). Raises if the sentinel key shows up in stdout or stderr.
local function run(srv, args, o)
  o = o or {}
  local tmp = os.tmpname()
  local input = "/dev/null"
  if o.stdin then
    input = tmp .. ".in"
    write_file(input, o.stdin)
  end
  local _, code = sh((o.cd and ("cd " .. sq(o.cd) .. " && ") or "") .. command(srv, args, o)
    .. " <" .. sq(input) .. " >" .. sq(tmp .. ".out") .. " 2>" .. sq(tmp .. ".err"))
  local r = { out = read_file(tmp .. ".out") or "", err = read_file(tmp .. ".err") or "", code = code }
  os.remove(tmp)
  os.remove(tmp .. ".in")
  os.remove(tmp .. ".out")
  os.remove(tmp .. ".err")
  assert(not r.out:find("SENTINEL", 1, true), "the key is in stdout: " .. r.out)
  assert(not r.err:find("SENTINEL", 1, true), "the key is in stderr: " .. r.err)
  return r
end

-- The decoded --json lines of an output.
local function json_lines(out)
  local list = {}
  for _, line in ipairs(lines(out)) do list[#list + 1] = cjson.decode(line) end
  return list
end

-- A path for a key file holding text; removed by the caller's finally.
local function key_file(text)
  local path = os.tmpname()
  write_file(path, text)
  return path
end

local function ids(prefix, n)
  local out = {}
  for i = 1, n do out[i] = prefix .. i end
  return out
end

local function args_of(...)
  local out = {}
  for _, part in ipairs({ ... }) do
    if type(part) == "table" then
      for _, a in ipairs(part) do out[#out + 1] = a end
    else
      out[#out + 1] = part
    end
  end
  return out
end

-- Runs shell text cmd in the background: stdout into tmp.out, stderr
-- into tmp.err (or with stdout, when merge), and once it ends its exit
-- status into tmp.exit (a subshell waits for it). Its pid.
local function background(cmd, tmp, merge)
  sh("(" .. cmd .. " >" .. sq(tmp .. ".out") .. (merge and " 2>&1" or " 2>" .. sq(tmp .. ".err"))
    .. " </dev/null & echo $! > " .. sq(tmp .. ".pid")
    .. "; wait $!; echo $? > " .. sq(tmp .. ".exit") .. ") >/dev/null 2>&1 </dev/null &")
  util.wait_for("the command's pid", 10, function() return (read_file(tmp .. ".pid") or ""):match("%d+") end)
  return read_file(tmp .. ".pid"):match("%d+")
end

-- The exit status of a command background() started, once it has ended.
local function background_exit(tmp)
  util.wait_for("the command's exit", 20, function() return (read_file(tmp .. ".exit") or ""):match("%d+") end)
  return read_file(tmp .. ".exit"):match("%d+")
end

-- The server a command spec file shares: started by its setup, stopped by
-- its teardown and reset before each test (hooks: busted's setup, teardown
-- and before_each). What it returns reads through to the started server.
local function command_server(hooks)
  local srv, started = {}, nil
  hooks.setup(function()
    started = server.start { api_key = SENTINEL }
    setmetatable(srv, { __index = started })
  end)
  hooks.teardown(function() if started then started:stop() end end)
  hooks.before_each(function() started:reset() end)
  return srv
end

return {
  cjson = cjson, periskope = periskope, server = server, util = util, sh = sh, sq = sq,
  SENTINEL = SENTINEL, ROOT = ROOT, BIN = BIN, LUA = LUA, BUILD = BUILD, built_so = built_so,
  read_file = read_file, write_file = write_file, now = now, temp_dir = temp_dir, lines = lines,
  env_words = env_words, command = command, run = run, json_lines = json_lines, key_file = key_file,
  ids = ids, args_of = args_of, command_server = command_server, background = background,
  background_exit = background_exit,
}
