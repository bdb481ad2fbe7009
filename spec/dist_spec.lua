-- make dist: the tarball and rockspec a release publishes, named after
-- the one version (PSK_VERSION in src/psk_core.h, which the module reports
-- as periskope.VERSION).
local periskope = require "periskope"
local server = require "spec.support.server"
local hosts = require "spec.support.hosts"

local sh, sq = server.sh, server.quote
local ROOT = hosts.root()

-- A rockspec (Lua assignments) as a table.
local function load_rockspec(path)
  local text = assert(server.read_file(path), path)
  local env = {}
  local chunk, err
  if setfenv then
    chunk, err = loadstring(text, "=" .. path)
    if chunk then setfenv(chunk, env) end
  else
    chunk, err = load(text, "=" .. path, "t", env)
  end
  assert(chunk, err)
  chunk()
  return env
end

-- Runs make dist in dir (a checkout) into out; returns its output.
local function make_dist(dir, out)
  local text, code = sh("make --no-print-directory -s -C " .. sq(dir) .. " dist DIST_DIR=" .. sq(out)
    .. " DIST_URL=file:///x/tarball.tar.gz 2>&1")
  assert.equal(0, code, text)
  return text
end

-- A temporary directory, removed when the test ends.
local function temp_dir()
  local dir = sh("mktemp -d"):match("[^\n]+")
  finally(function() sh("rm -rf " .. sq(dir)) end)
  return dir
end

describe("make dist", function()
  it("names the tarball and rockspec after periskope.VERSION; the rockspec is the scm one, with the tarball",
    function()
    local dir = temp_dir()
    make_dist(ROOT, dir)
    local name = "periskope-" .. periskope.VERSION
    local tarball = dir .. "/" .. name .. ".tar.gz"
    local spec = load_rockspec(dir .. "/" .. name .. "-1.rockspec")
    assert.equal(periskope.VERSION .. "-1", spec.version)
    assert.same({ url = "file:///x/tarball.tar.gz", dir = name,
      md5 = sh("md5sum " .. sq(tarball)):match("^(%x+)") }, spec.source)
    -- Everything else is the scm rockspec's: the make build, its variables.
    local scm = load_rockspec(ROOT .. "/rockspec/periskope-scm-1.rockspec")
    for _, t in ipairs { spec, scm } do t.version, t.source = nil, nil end
    assert.same(scm, spec)
    assert.equal("make", spec.build.type)
    -- The tarball holds, under one directory named after the version, the
    -- committed tree but what .gitattributes marks export-ignore.
    local listed = {}
    for f in sh("tar tzf " .. sq(tarball)):gmatch("[^\n]+") do
      assert.equal(name .. "/", f:sub(1, #name + 1))
      if not f:match("/$") then listed[#listed + 1] = f:sub(#name + 2) end
    end
    -- A file is left out when it or a directory above it is export-ignore
    -- (by the work tree's .gitattributes; git archive reads HEAD's, so a
    -- change to it fails here until it is committed).
    local tracked, paths = {}, {}
    for f in sh("git -C " .. sq(ROOT) .. " ls-tree -r --name-only HEAD"):gmatch("[^\n]+") do
      tracked[#tracked + 1] = f
      for i in f:gmatch("()/") do paths[f:sub(1, i - 1)] = true end
      paths[f] = true
    end
    local list = {}
    for path in pairs(paths) do list[#list + 1] = path end
    local ignored = {}
    for line in sh("printf '%s\\n' " .. sq(table.concat(list, "\n")) .. " | git -C " .. sq(ROOT)
        .. " check-attr --stdin export-ignore"):gmatch("[^\n]+") do
      local path, value = line:match("^(.*): export%-ignore: (%S+)$")
      ignored[path] = value == "set"
    end
    local kept = {}
    for _, f in ipairs(tracked) do
      local out = ignored[f]
      for i in f:gmatch("()/") do out = out or ignored[f:sub(1, i - 1)] end
      if not out then kept[#kept + 1] = f end
    end
    table.sort(listed)
    table.sort(kept)
    assert.same(kept, listed)
    -- That is what a user builds, not the development tree: no specs, fuzz
    -- harnesses, bench or CI; of spec/ only the local server and its runner.
    local set = {}
    for _, f in ipairs(listed) do set[f] = true end
    for _, f in ipairs { "Makefile", "src/psk_core.h", "bin/periskope", "LICENSE", "doc/periskope.1",
                         "debian/control", "meta/periskope.lua", "spec/support/server.lua",
                         "spec/support/mock.lua", "spec/support/run_with_server.lua" } do
      assert.truthy(set[f], f)
    end
    for _, f in ipairs(listed) do
      assert.falsy(f:match("^bench/") or f:match("^fuzz/") or f:match("^%.ci/") or f:match("_spec%.lua$")
        or (f:match("^spec/") and not set[f:match("^spec/support/[%a_]+%.lua$") and f]), f)
    end
    assert.is_nil(set["spec/support/util.lua"])
  end)

  it("takes the version from src/psk_core.h alone: a new PSK_VERSION there renames both", function()
    -- A checkout of what make dist reads (this tree's Makefile, mk/,
    -- rockspec/ and header, as they are now) whose header says 9.8.7.
    local copy, dir = temp_dir(), temp_dir()
    local out, code = sh("cd " .. sq(ROOT) .. " && mkdir " .. sq(copy .. "/src") .. " && cp -R Makefile mk rockspec "
      .. sq(copy) .. " && cp src/psk_core.h " .. sq(copy .. "/src") .. " 2>&1")
    assert.equal(0, code, out)
    local header = copy .. "/src/psk_core.h"
    local text, n = server.read_file(header):gsub('\n#define PSK_VERSION "[^"]*"\n',
      '\n#define PSK_VERSION "9.8.7"\n')
    assert.equal(1, n)
    server.write_file(header, text)
    out, code = sh("cd " .. sq(copy) .. " && git init -q && git add -A && git -c user.name=spec"
      .. " -c user.email=spec@localhost -c commit.gpgsign=false commit -q -m v 2>&1")
    assert.equal(0, code, out)
    make_dist(copy, dir)
    local spec = load_rockspec(dir .. "/periskope-9.8.7-1.rockspec")
    assert.equal("9.8.7-1", spec.version)
    assert.equal("periskope-9.8.7", spec.source.dir)
    local list = sh("tar tzf " .. sq(dir .. "/periskope-9.8.7.tar.gz"))
    assert.truthy(list:find("^periskope%-9%.8%.7/"), list:sub(1, 200))
    assert.equal("", (sh("ls " .. sq(dir)):gsub("periskope%-9%.8%.7%-1%.rockspec\n", "")
      :gsub("periskope%-9%.8%.7%.tar%.gz\n", "")))
  end)
end)
