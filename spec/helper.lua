-- Loaded by busted before the specs: points require "periskope" at the
-- module this run built (make test sets PERISKOPE_CPATH to
-- build/<lua>/?.so), so an installed copy never answers instead.
local cpath = os.getenv("PERISKOPE_CPATH")
if cpath and cpath ~= "" then
  package.cpath = cpath .. ";" .. package.cpath
end
