-- help(x) and the one table of the core's signatures and docs (vm/core_docs.c) behind it, the
-- kernel's inspect and docs/core.md.
local T = require 'tdrl'
local help = require 'tdrl.help'

describe("the core's docs table", function()
  it("has an entry for every function of tdrl.core and a function for every entry", function()
    local missing = {}
    for k, v in pairs(T) do
      if type(v) == "function" and k:sub(1, 1) ~= "_" and debug.getinfo(v, "S").what == "C" and not help.entry(v) then
        missing[#missing + 1] = "T." .. k
      end
    end
    for k, v in pairs(T.Tensor) do
      if type(v) == "function" and not help.entry(v) then missing[#missing + 1] = "x:" .. k end
    end
    local gen = getmetatable(T.Generator(1)).__index
    for k, v in pairs(gen) do
      if type(v) == "function" and not help.entry(v) then missing[#missing + 1] = "g:" .. k end
    end
    table.sort(missing)
    spec.eq(#missing, 0, "no docs for " .. table.concat(missing, ", "))
    local orphans = {}
    for name in pairs(T._docs) do
      local meth = name:match("^Generator:(.+)$")
      local f = meth and gen[meth] or rawget(T, name) or T.Tensor[name]
      if type(f) ~= "function" then orphans[#orphans + 1] = name end
    end
    spec.eq(#orphans, 0, "entries without a function: " .. table.concat(orphans, ", "))
    for name, e in pairs(T._docs) do
      spec.truthy(e.signature:find("(", 1, true) and #e.doc > 2, name .. " has a signature and a doc")
    end
  end)
  it("help(x) gives the signature and the doc, for functions and methods", function()
    local s = help.text(T.randn)
    spec.truthy(s:find("T.randn(size...", 1, true) and s:find("normal", 1, true), s)
    s = help.text(T.zeros(2).matmul)
    spec.truthy(s:find("x:matmul(y)", 1, true), s)
    spec.truthy(help.text("zeros"):find("T.zeros(", 1, true))
    spec.truthy(help.text(T.is_tensor):find("true when v is a tensor", 1, true), "a Lua function's doc comment")
    spec.truthy(help.text(T):find("randn", 1, true), "a module lists its functions")
    spec.truthy(help.text(nil):find("help(x)", 1, true))
  end)
  it("docs/core.md is the table's markdown (regenerate it when the table changes)", function()
    local f = assert(io.open("docs/core.md", "r"))
    local md = f:read("a")
    f:close()
    spec.truthy(md == help.markdown(), "docs/core.md is out of date: run make")
  end)
end)
