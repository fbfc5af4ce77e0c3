-- Containers: Sequential, ModuleList, ModuleDict.
-- Sequential and ModuleList hold their children at integer fields 1..n (seq[1], ipairs(list),
-- #list) and name them 0, 1, ... in parameter and state-dict names, as PyTorch does.
-- An error raised inside a child is re-raised with where it happened:
--   "in child 3 (Conv2d) of Sequential: Conv2d(3 -> 16, ...): input of shape 2x5x8x8 ..."
-- (children counted from 1, as Lua indexes them).
local class = require 'tdrl.class'
local Module = require('tdrl.nn.module').Module

local M = {}

local function context(container, i, child, err)
  if type(err) ~= "string" then err = tostring(err) end
  return string.format("in child %s (%s) of %s: %s", tostring(i), class.name(child), class.name(container), err)
end

--- calls child(...) and prefixes any error with "in child <i> (<Class>) of <Container>: "
local function call_child(container, i, child, ...)
  local ok, a, b, c, d = pcall(child, ...)
  if not ok then error(context(container, i, child, a), 0) end
  return a, b, c, d
end
M.call_child = call_child

-- ---- Sequential ------------------------------------------------------------------------------
local Sequential = class('Sequential', Module)
M.Sequential = Sequential

--- Sequential(m1, m2, ...) or Sequential({m1, m2, ...})
function Sequential:__init(...)
  Module.__init(self)
  local mods = {...}
  if #mods == 1 and type(mods[1]) == "table" and not class.of(mods[1]) then mods = mods[1] end
  for _, m in ipairs(mods) do self:add(m) end
end

--- appends a module; returns self (torch/nn style chaining)
function Sequential:add(m)
  local n = #self + 1
  self:_add_child(tostring(n - 1), n, m)
  return self
end
Sequential.append = Sequential.add

function Sequential:__len()
  local n = 0
  while rawget(self, n + 1) ~= nil do n = n + 1 end
  return n
end

function Sequential:forward(x, ...)
  local n = #self
  if n == 0 then return x end
  x = call_child(self, 1, rawget(self, 1), x, ...)
  for i = 2, n do x = call_child(self, i, rawget(self, i), x) end
  return x
end

-- ---- ModuleList --------------------------------------------------------------------------------
local ModuleList = class('ModuleList', Module)
M.ModuleList = ModuleList

--- ModuleList({m1, m2, ...}) or ModuleList(m1, m2, ...)
function ModuleList:__init(...)
  Module.__init(self)
  local mods = {...}
  if #mods == 1 and type(mods[1]) == "table" and not class.of(mods[1]) then mods = mods[1] end
  for _, m in ipairs(mods) do self:append(m) end
end

function ModuleList:append(m)
  local n = #self + 1
  self:_add_child(tostring(n - 1), n, m)
  return self
end

function ModuleList:extend(list)
  for _, m in ipairs(list) do self:append(m) end
  return self
end

ModuleList.__len = Sequential.__len

--- calls child i (from 1) with the arguments, adding the child's place to any error
function ModuleList:call(i, ...)
  local m = rawget(self, i)
  if m == nil then error(string.format("ModuleList: no child %s (it has %d)", tostring(i), #self), 2) end
  return call_child(self, i, m, ...)
end

function ModuleList:forward()
  error("ModuleList has no forward: iterate over it (for i, m in ipairs(list)) or use list:call(i, x)", 2)
end

-- ---- ModuleDict ----------------------------------------------------------------------------------
local ModuleDict = class('ModuleDict', Module)
M.ModuleDict = ModuleDict

--- ModuleDict({name = module, ...}): children are added in sorted name order (a Lua table has
--- no order of its own); add(name, m) appends in call order. md.name or md:get(name) reads one.
function ModuleDict:__init(mods)
  Module.__init(self)
  if mods ~= nil and type(mods) ~= "table" then
    error(string.format("ModuleDict: expected a table {name = module}, got %s %s", type(mods), tostring(mods)), 3)
  end
  if mods then
    local names = {}
    for k in pairs(mods) do names[#names + 1] = k end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(names) do self:add(k, mods[k]) end
  end
end

function ModuleDict:add(name, m)
  if type(name) ~= "string" then error("ModuleDict: names must be strings, got " .. type(name), 2) end
  if ModuleDict[name] ~= nil then
    error("ModuleDict: the name '" .. name .. "' is taken by a method of ModuleDict", 2)
  end
  self:add_module(name, m)
  return self
end

function ModuleDict:get(name) return self._book.child_index[name] and rawget(self, name) or nil end

function ModuleDict:keys()
  local out = {}
  for _, e in ipairs(self:named_children_list()) do out[#out + 1] = e[1] end
  return out
end

--- for name, m in md:items() do ... end (in order)
function ModuleDict:items() return self:named_children() end

function ModuleDict:__len() return #self:keys() end

--- calls the child called name, adding its name to any error
function ModuleDict:call(name, ...)
  local m = self:get(name)
  if m == nil then error("ModuleDict: no child named '" .. tostring(name) .. "'", 2) end
  return call_child(self, "'" .. name .. "'", m, ...)
end

function ModuleDict:forward()
  error("ModuleDict has no forward: use md:call(name, x) or md.name(x)", 2)
end

return M
