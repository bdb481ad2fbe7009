-- The frame of make bench's report, around its parts' sections: the
-- machine it ran on, the chart of part 1 and the README's generated section.
local b = require "bench.common"

local CFG, md, commas = b.CFG, b.md, b.commas

local M = {}

-- The Machine table, given periskope's User-Agent.
function M.machine(ua)
  local cpu = (b.read_file("/proc/cpuinfo") or ""):match("model name%s*:%s*([^\n]+)") or "?"
  local rev = b.first_line("git rev-parse --short HEAD")
  local dirty = b.sh("git status --porcelain -- src 2>/dev/null")
  local notes = {
    { "date (UTC)", b.first_line("date -u '+%Y-%m-%d %H:%M'") },
    { "machine", ("%s, %s cores (nproc), %s"):format(cpu, b.first_line("nproc"),
      b.first_line("uname -sr")) },
    { "load average at start", (b.read_file("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)") or "?" },
    { "checkout", rev:match("^%x+$") and (rev .. (dirty ~= "" and " + uncommitted changes in src/" or ""))
      or "?" },
    { "periskope User-Agent", ua },
    { "Lua", b.first_line("lua5.4 -v") .. "; " .. (b.first_line("luajit -v"):gsub(" %-%- .*", "")) },
    { "server", b.first_line("nginx -v") .. " + spec/support/mock.lua, 1 worker" },
    { "node", b.have("node") and b.first_line("node --version") or "not installed" },
    { "valgrind", b.have("valgrind") and b.first_line("valgrind --version") or "not installed" },
    { "cores", b.HAVE_TASKSET and ("server on CPU %s, clients on CPU %s (taskset)")
      :format(CFG.server_cpu, CFG.client_cpu) or "not pinned (no taskset)" },
  }
  md("### Machine")
  md("")
  md("| | |")
  md("| --- | --- |")
  for _, kv in ipairs(notes) do b.row(kv[1], kv[2]) end
  md("")
end

-- bench/pins_per_second.png (BENCH_PNG) from part 1's result: each client's
-- pins/s and ratio to the raw loop, against the mock and the lean endpoint.
function M.chart(seq)
  if not b.have("gnuplot") then
    md("Chart skipped: gnuplot is not installed (apt-get install -y gnuplot-nox).")
    md("")
    return
  end
  local rows, lean_rows = seq and seq.rows or {}, seq and seq.lean_rows or {}
  -- A row's ratio as the tables give it.
  local function ratio(r, set)
    local x = r and b.ratio(r, set)
    return x and ("%.4f"):format(x) or "NaN"
  end
  local dat = {}
  for i, row in ipairs(rows) do
    local lr = lean_rows[i] and lean_rows[i].short == row.short and lean_rows[i] or nil
    local lean = lr and lr.rate
    if row.rate or lean then
      dat[#dat + 1] = ("%d \"%s\" %s %s %s %s"):format(#dat, row.short,
        row.rate and ("%.1f"):format(row.rate) or "NaN", lean and ("%.1f"):format(lean) or "NaN",
        ratio(row, rows), ratio(lr, lean_rows))
    end
  end
  local datfile = CFG.dir .. "/pins_per_second.dat"
  b.write_file(datfile, table.concat(dat, "\n") .. "\n")
  local _, code = b.sh("gnuplot -e " .. b.sq("datafile='" .. datfile .. "'; outfile='" .. CFG.png
    .. "'; subtitle='" .. b.first_line("date -u '+%Y-%m-%d'") .. ": " .. commas(CFG.pins)
    .. " pins per round on one connection (Node " .. commas(CFG.node_pins) .. ", curl command "
    .. commas(CFG.curl_pins) .. "), local server'") .. " bench/chart.gp 2>&1")
  if code == 0 then
    md("Chart: [`pins_per_second.png`](pins_per_second.png).")
  else
    md("Chart FAILED (gnuplot exit " .. tostring(code) .. ").")
  end
  md("")
end

-- Puts text between the bench markers of the README (BENCH_README;
-- appends them when absent). False when there is no README.
local BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
function M.update_readme(text)
  local readme = b.read_file(CFG.readme)
  if not readme then return false end
  local a = readme:find(BEGIN, 1, true)
  local z = readme:find(END, 1, true)
  if a and z and z > a then
    readme = readme:sub(1, a - 1) .. BEGIN .. "\n" .. text .. "\n" .. readme:sub(z)
  else
    readme = readme .. "\n" .. BEGIN .. "\n" .. text .. "\n" .. END .. "\n"
  end
  b.write_file(CFG.readme, readme)
  return true
end

return M
