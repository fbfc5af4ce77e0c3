-- help(x): how to call x and what it does. The core's C functions read the one table of
-- signatures and one-line docs in vm/core_docs.c (T._docs), which also gives the kernel's
-- inspect (Shift-Tab) and docs/core.md (markdown() below, checked by a test); a Lua function
-- shows the comment above its definition; a table lists its functions one a line.
--   help(T.randn)   help(x.matmul)   help(T)   help("zeros")
local T = require 'tdrl'

local M = {}
local fmt, concat = string.format, table.concat

local by_fn -- core function value -> {name =, signature =, doc =}

local function generator_methods()
  local mt = debug.getregistry()["tdrl.Generator"]
  return mt and type(mt.__index) == "table" and mt.__index or {}
end

local function index()
  if by_fn then return by_fn end
  by_fn = {}
  for name, e in pairs(T._docs) do
    local meth = name:match("^Generator:(.+)$")
    local f = meth and generator_methods()[meth] or rawget(T, name) or T.Tensor[name]
    if type(f) == "function" then by_fn[f] = {name = name, signature = e.signature, doc = e.doc} end
  end
  return by_fn
end

--- entry(f or name) -> {name, signature, doc} of a core function, or nil
function M.entry(v)
  if type(v) == "string" then
    local e = T._docs[v]
    return e and {name = v, signature = e.signature, doc = e.doc}
  end
  return index()[v]
end

-- the comment lines just above line n of a source file
local function comment_above(src, n)
  if type(src) ~= "string" or src:sub(1, 1) ~= "@" then return nil end
  local f = io.open(src:sub(2), "r")
  if not f then return nil end
  local lines, i = {}, 0
  for line in f:lines() do
    i = i + 1
    if i >= n then break end
    lines[#lines + 1] = line
  end
  f:close()
  local doc, j = {}, #lines
  while j >= 1 and lines[j]:match("^%s*%-%-") do
    table.insert(doc, 1, (lines[j]:gsub("^%s*%-%-+%s?", "")))
    j = j - 1
  end
  return #doc > 0 and concat(doc, "\n") or nil
end

local function lua_function_text(f, name)
  local info = debug.getinfo(f, "Su")
  local params = {}
  for i = 1, info.nparams do params[i] = debug.getlocal(f, i) end
  if info.isvararg then params[#params + 1] = "..." end
  local out = {fmt("%s(%s)  -- defined at %s:%d", name or "function", concat(params, ", "), info.short_src,
    info.linedefined)}
  local doc = comment_above(info.source, info.linedefined)
  if doc then out[2] = doc end
  return concat(out, "\n")
end

-- one line about a field of a table
local function line_of(k, v)
  if type(v) == "function" then
    local e = M.entry(v)
    if e then return fmt("  %-28s %s", k, e.doc) end
    local info = debug.getinfo(v, "S")
    local doc = info.what == "Lua" and comment_above(info.source, info.linedefined)
    return fmt("  %-28s %s", k, doc and doc:match("^[^\n]*") or "function")
  end
  return fmt("  %-28s %s", k, type(v))
end

--- text(x) -> the help text of x
function M.text(v, name)
  if type(v) == "string" and T._docs[v] then v = M.entry(v) return v.signature .. "\n  " .. v.doc end
  if type(v) == "function" then
    local e = M.entry(v)
    if e then return e.signature .. "\n  " .. e.doc end
    if debug.getinfo(v, "S").what == "C" then return (name or "function") .. ": a C function without docs" end
    return lua_function_text(v, name)
  end
  if T.is_tensor(v) then
    local s = tostring(v)
    return "a tensor " .. s:match("[^\n]*$") .. "\n  its methods: help(T.Tensor); one of them: help(x.matmul)"
  end
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do if type(k) == "string" and k:sub(1, 1) ~= "_" then keys[#keys + 1] = k end end
    table.sort(keys)
    local out = {}
    for _, k in ipairs(keys) do out[#out + 1] = line_of(k, v[k]) end
    if #out == 0 then return "an empty table" end
    return concat(out, "\n")
  end
  if v == nil then
    return "help(x): how to call x and what it does (help(T.randn), help(x.matmul), help(T), help(nn.Linear))"
  end
  return fmt("a %s: %s", type(v), tostring(v))
end

--- markdown() -> docs/core.md: every core function with its signature and doc
function M.markdown()
  local groups = {{"Functions of `T = require 'tdrl'`", {}}, {"Tensor methods (`x:name(...)`, also `T.name(x, ...)`)", {}},
    {"Generator methods", {}}}
  local names = {}
  for name in pairs(T._docs) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local e = T._docs[name]
    local g = name:match("^Generator:") and 3 or (T.Tensor[name] and 2 or 1)
    local rows = groups[g][2]
    rows[#rows + 1] = fmt("| `%s` | %s |", e.signature:gsub("|", "\\|"), (e.doc:gsub("|", "\\|")))
  end
  local out = {"# The core's functions", "",
    "Generated from `vm/core_docs.c`, the table that `help(x)` at the REPL and the kernel's inspect",
    "(Shift-Tab) read: `./tdrl -e \"io.write(require('tdrl.help').markdown())\" > docs/core.md`.",
    "Dimensions and indices count from 1 (negative from the end); index tensors (gather,",
    "index_select, argmax, labels) hold 0-based int64 values, as in PyTorch.", ""}
  for _, g in ipairs(groups) do
    out[#out + 1] = "## " .. g[1]
    out[#out + 1] = ""
    out[#out + 1] = "| call | what it does |"
    out[#out + 1] = "|------|--------------|"
    for _, r in ipairs(g[2]) do out[#out + 1] = r end
    out[#out + 1] = ""
  end
  return concat(out, "\n")
end

return setmetatable(M, {__call = function(_, v) print(M.text(v)) end})
