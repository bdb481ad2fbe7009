-- The periskope plugin: adds :PeriskopePin and :PeriskopeUnpin at startup.
-- Nothing is loaded until the first pin (lua/periskope/nvim.lua); :help
-- periskope is the manual.

-- luacheck: globals vim
if vim.g.loaded_periskope then return end
vim.g.loaded_periskope = true

require("periskope.nvim").create_commands()
