-- periskope in lazy.nvim's plugin spec: a file of ~/.config/nvim/lua/plugins/.
return {
  "periskope/periskope-lua",
  build = "make nvim",                          -- the module into lua/periskope.so (build.lua does the same)
  cmd = { "PeriskopePin", "PeriskopeUnpin" },   -- loaded at the first of them
  main = "periskope.nvim",                      -- lazy.nvim calls require("periskope.nvim").setup(opts)
  opts = { phone = "919874532456" },            -- periskope.new's options; the key from PERISKOPE_API_KEY
}
