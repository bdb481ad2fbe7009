-- A busted output handler for spec/support/run_specs.lua: each spec file
-- runs in its own busted process, which prints one character per test as
-- it ends ("." passed, "F" failed, "E" error, "P" pending) and writes every
-- test's outcome, message and duration as JSON to the file named by
-- PERISKOPE_SPEC_OUT, for the runner to add up. Without that variable it
-- writes the JSON to stdout.
local cjson = require("cjson").new()

return function()
  local busted = require "busted"
  local handler = require("busted.outputHandlers.base")()
  local tests = {}

  local function add(element, status, message, trace)
    local where = trace and trace.short_src and (trace.short_src .. ":" .. tostring(trace.currentline))
    tests[#tests + 1] = {
      name = handler.getFullName(element),
      status = status,
      message = message ~= nil and tostring(message) or nil,
      where = where,
      traceback = trace and trace.traceback or nil,
      duration = element.duration or 0,
    }
  end

  local marks = { success = ".", failure = "F", error = "E", pending = "P" }

  -- A failure or error arrives before its test ends (and has a duration):
  -- kept here until then.
  local failed = {}

  handler.testEnd = function(element, _, status, trace)
    io.write(marks[status] or "?")
    io.flush()
    local f = failed[element]
    failed[element] = nil
    if f then
      add(element, f.status, f.message, f.trace)
    else
      add(element, status, element.message, trace)
    end
    return nil, true
  end

  handler.failureTest = function(element, _, message, trace)
    failed[element] = { status = "failure", message = message, trace = trace }
    return nil, true
  end

  handler.errorTest = function(element, _, message, trace)
    failed[element] = { status = "error", message = message, trace = trace }
    return nil, true
  end

  -- An error outside any test (a setup, a describe body, a file that does
  -- not load).
  handler.error = function(element, _, message, trace)
    if element.descriptor ~= "it" then
      tests[#tests + 1] = {
        name = handler.getFullName(element) or tostring(element.descriptor),
        status = "error", message = tostring(message), duration = 0,
        where = trace and trace.short_src and (trace.short_src .. ":" .. tostring(trace.currentline)),
        traceback = trace and trace.traceback or nil,
      }
    end
    return nil, true
  end

  handler.suiteEnd = function()
    local text = cjson.encode({ tests = tests, duration = handler.getDuration() })
    local path = os.getenv("PERISKOPE_SPEC_OUT")
    if path and path ~= "" then
      local f = assert(io.open(path, "wb"))
      f:write(text)
      f:close()
    else
      io.write("\n", text, "\n")
    end
    return nil, true
  end

  busted.subscribe({ "test", "end" }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ "failure", "it" }, handler.failureTest)
  busted.subscribe({ "error", "it" }, handler.errorTest)
  busted.subscribe({ "failure" }, handler.error)
  busted.subscribe({ "error" }, handler.error)
  busted.subscribe({ "suite", "end" }, handler.suiteEnd)
  return handler
end
