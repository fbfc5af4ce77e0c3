-- nn.Module: the base of every layer and model.
--
--   local Net = class('Net', nn.Module)
--   function Net:__init(n)
--     nn.Module.__init(self)
--     self.fc = nn.Linear(n, 4)            -- a Module assigned to a new field becomes a child
--     self.scale = nn.Parameter(T.ones(1)) -- a tensor wrapped by nn.Parameter becomes a parameter
--     self:register_buffer('count', T.zeros(1))
--   end
--   function Net:forward(x) return self.fc(x) * self.scale end
--   local m = Net(3); local y = m(x)        -- calling a module calls forward
--
-- Parameters, buffers and children are kept in insertion order; names are PyTorch's dotted
-- names ("encoder.blocks.0.conv1.weight"; list-like containers name their children 0, 1, ...
-- while Lua code indexes them from 1). Parameters and buffers are plain fields of the instance,
-- so `self.weight` is a table read and reassigning a registered name replaces the tensor.
local T = require 'tdrl'
local class = require 'tdrl.class'

local Module = class('Module')
Module.training = true

-- tensors marked by nn.Parameter (weak keys: marks vanish with the tensors)
local param_marks = setmetatable({}, {__mode = "k"})

local function Parameter(t, requires_grad)
  if not T.is_tensor(t) then error("Parameter: expected a tensor, got " .. type(t), 2) end
  if t.grad_fn then t = t:detach() end
  if requires_grad == nil then requires_grad = true end
  t:requires_grad_(requires_grad)
  param_marks[t] = true
  return t
end

local function fmt_shape(t)
  local s = t:size()
  if #s == 0 then return "scalar" end
  return table.concat(s, "x")
end
Module.fmt_shape = fmt_shape

-- bookkeeping tables, created on first use so that a subclass that forgets to call
-- Module.__init still works
local function book(self)
  local b = rawget(self, "_book")
  if not b then
    b = {params = {}, buffers = {}, persistent = {}, children = {}, child_keys = {}, child_index = {}}
    rawset(self, "_book", b)
  end
  return b
end

function Module:__init()
  book(self)
  rawset(self, "training", true)
end

local RESERVED = {_book = true, training = true}

local function check_name(self, name, what)
  if type(name) ~= "string" or name == "" or name:find(".", 1, true) then
    error(string.format("%s: name %s must be a non-empty string without '.'", what, tostring(name)), 3)
  end
  if RESERVED[name] or type(Module[name]) == "function" then
    error(string.format("%s: the name '%s' is reserved by Module", what, name), 3)
  end
end

local function has_name(b, name)
  for _, n in ipairs(b.params) do if n == name then return "parameter" end end
  for _, n in ipairs(b.buffers) do if n == name then return "buffer" end end
  if b.child_index[name] then return "child" end
  return nil
end

--- register_parameter(name, tensor or nil [, requires_grad = true])
function Module:register_parameter(name, t, requires_grad)
  check_name(self, name, "register_parameter")
  local b = book(self)
  local kind = has_name(b, name)
  if kind and kind ~= "parameter" then
    error("register_parameter: '" .. name .. "' is already a " .. kind .. " of " .. class.name(self), 2)
  end
  if t ~= nil then
    if not T.is_tensor(t) then error("register_parameter: '" .. name .. "' must be a tensor or nil", 2) end
    t = Parameter(t, requires_grad)
  end
  if not kind then b.params[#b.params + 1] = name end
  rawset(self, name, t)
  return t
end

--- register_buffer(name, tensor or nil [, persistent = true]): state that is not trained
function Module:register_buffer(name, t, persistent)
  check_name(self, name, "register_buffer")
  local b = book(self)
  local kind = has_name(b, name)
  if kind and kind ~= "buffer" then
    error("register_buffer: '" .. name .. "' is already a " .. kind .. " of " .. class.name(self), 2)
  end
  if t ~= nil and not T.is_tensor(t) then error("register_buffer: '" .. name .. "' must be a tensor or nil", 2) end
  if not kind then b.buffers[#b.buffers + 1] = name end
  b.persistent[name] = persistent ~= false
  rawset(self, name, t)
  return t
end

-- children: name (string used in dotted paths) and key (field of the instance)
function Module:_add_child(name, key, m)
  if not class.isinstance(m, Module) then
    error(string.format("add_module: child '%s' of %s is a %s, not a Module", name, class.name(self), class.name(m)), 3)
  end
  local b = book(self)
  local kind = has_name(b, name)
  if kind and kind ~= "child" then
    error("add_module: '" .. name .. "' is already a " .. kind .. " of " .. class.name(self), 3)
  end
  if not kind then
    b.children[#b.children + 1] = name
    b.child_keys[#b.child_keys + 1] = key
    b.child_index[name] = #b.children
  end
  rawset(self, key, m)
  return m
end

--- add_module(name, module)
function Module:add_module(name, m)
  check_name(self, name, "add_module")
  return self:_add_child(name, name, m)
end

-- assignment of a new field: Modules become children, nn.Parameter tensors parameters
function Module.__newindex(self, k, v)
  if type(k) == "string" and class.isinstance(v, Module) then
    self:add_module(k, v)
  elseif type(k) == "string" and T.is_tensor(v) and param_marks[v] then
    self:register_parameter(k, v)
  else
    rawset(self, k, v)
  end
end

function Module:forward()
  error(class.name(self) .. ": forward is not implemented", 2)
end

-- A layer called with nil (a misspelt variable) failed inside its forward with "linear.lua:37:
-- attempt to index a nil value": the input is checked here, and the error names the layer.
function Module.__call(self, ...)
  local x = ...
  local tx = type(x)
  if tx ~= "userdata" and tx ~= "table" then
    local e = self.extra_repr and self:extra_repr() or ""
    error(string.format("%s%s: the input is %s, not a tensor", class.name(self), e ~= "" and "(" .. e .. ")" or "",
      tx == "nil" and "nil" or tx .. " " .. tostring(x)), 2)
  end
  return self:forward(...)
end

-- ---- traversal ----------------------------------------------------------------------------
--- named_children(): ordered list of {name, module}
function Module:named_children_list()
  local b, out = book(self), {}
  for i, name in ipairs(b.children) do
    local m = rawget(self, b.child_keys[i])
    if m ~= nil then out[#out + 1] = {name, m} end
  end
  return out
end

local function iter(list)
  local i = 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

function Module:named_children() return iter(self:named_children_list()) end

function Module:children()
  local out = {}
  for _, e in ipairs(self:named_children_list()) do out[#out + 1] = e[2] end
  return out
end

--- every module of the tree (self first, depth first), each once
function Module:named_modules_list(prefix, out, seen)
  out, seen, prefix = out or {}, seen or {}, prefix or ""
  if seen[self] then return out end
  seen[self] = true
  out[#out + 1] = {prefix, self}
  for _, e in ipairs(self:named_children_list()) do
    e[2]:named_modules_list(prefix == "" and e[1] or prefix .. "." .. e[1], out, seen)
  end
  return out
end

function Module:named_modules() return iter(self:named_modules_list()) end

function Module:modules()
  local out = {}
  for _, e in ipairs(self:named_modules_list()) do out[#out + 1] = e[2] end
  return out
end

local function collect(self, which, prefix, out, seen, persistent_only)
  local b = book(self)
  for _, name in ipairs(b[which]) do
    local t = rawget(self, name)
    if t ~= nil and not seen[t] and not (persistent_only and not b.persistent[name]) then
      seen[t] = true
      out[#out + 1] = {prefix .. name, t}
    end
  end
end

--- ordered list of {dotted name, tensor}; a tensor shared by two modules appears once
function Module:named_parameters_list(prefix)
  local out, seen = {}, {}
  for _, e in ipairs(self:named_modules_list(prefix)) do
    collect(e[2], "params", e[1] == "" and "" or e[1] .. ".", out, seen)
  end
  return out
end

--- for name, p in m:named_parameters() do ... end
function Module:named_parameters(prefix) return iter(self:named_parameters_list(prefix)) end

--- list of the parameter tensors (what an optimiser takes)
function Module:parameters()
  local out = {}
  for _, e in ipairs(self:named_parameters_list()) do out[#out + 1] = e[2] end
  return out
end

function Module:named_buffers_list(prefix)
  local out, seen = {}, {}
  for _, e in ipairs(self:named_modules_list(prefix)) do
    collect(e[2], "buffers", e[1] == "" and "" or e[1] .. ".", out, seen)
  end
  return out
end

function Module:named_buffers(prefix) return iter(self:named_buffers_list(prefix)) end

function Module:buffers()
  local out = {}
  for _, e in ipairs(self:named_buffers_list()) do out[#out + 1] = e[2] end
  return out
end

--- number of parameter elements (trainable_only: those that require grad)
function Module:num_parameters(trainable_only)
  local n = 0
  for _, e in ipairs(self:named_parameters_list()) do
    if not trainable_only or e[2].requires_grad then n = n + e[2]:numel() end
  end
  return n
end

-- ---- modes and helpers -------------------------------------------------------------------
function Module:train(mode)
  if mode == nil then mode = true end
  for _, m in ipairs(self:modules()) do rawset(m, "training", mode and true or false) end
  return self
end

function Module:eval() return self:train(false) end

--- sets .grad of every parameter to nil (the next backward allocates it afresh)
function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p:zero_grad() end
end

--- turns gradients of every parameter on or off (freezing)
function Module:requires_grad_(on)
  if on == nil then on = true end
  for _, p in ipairs(self:parameters()) do p:requires_grad_(on) end
  return self
end

--- fn(module) on every child (recursively) and then on self; returns self
function Module:apply(fn)
  for _, c in ipairs(self:children()) do c:apply(fn) end
  fn(self)
  return self
end

-- ---- state -------------------------------------------------------------------------------
local function state_entries(self, prefix, out)
  out = out or {}
  local b = book(self)
  for _, name in ipairs(b.params) do
    local t = rawget(self, name)
    if t ~= nil then out[#out + 1] = {prefix .. name, t} end
  end
  for _, name in ipairs(b.buffers) do
    local t = rawget(self, name)
    if t ~= nil and b.persistent[name] then out[#out + 1] = {prefix .. name, t} end
  end
  for _, e in ipairs(self:named_children_list()) do state_entries(e[2], prefix .. e[1] .. ".", out) end
  return out
end

--- state_dict() -> {name = tensor} (detached views sharing storage), ordered list of names
function Module:state_dict(prefix)
  local sd, names = {}, {}
  for _, e in ipairs(state_entries(self, prefix or "")) do
    if sd[e[1]] == nil then
      sd[e[1]] = e[2]:detach()
      names[#names + 1] = e[1]
    end
  end
  return sd, names
end

local function list_text(names, limit)
  limit = limit or 12
  local shown = {}
  for i = 1, math.min(#names, limit) do shown[i] = names[i] end
  local s = table.concat(shown, ", ")
  if #names > limit then s = s .. string.format(", ... (%d more)", #names - limit) end
  return s
end

--- load_state_dict(sd [, strict = true]): copies sd's tensors into the module's parameters
--- and buffers (in place, so optimisers keep their references). Every name and shape is
--- checked before anything is copied. A mis-shaped tensor is always an error; missing or
--- unexpected names are errors when strict. Returns {missing = {...}, unexpected = {...}}.
function Module:load_state_dict(sd, strict)
  if type(sd) ~= "table" then error("load_state_dict: expected a table of name -> tensor, got " .. type(sd), 2) end
  if strict == nil then strict = true end
  local entries = state_entries(self, "")
  local expected, missing, bad, unexpected = {}, {}, {}, {}
  for _, e in ipairs(entries) do
    local name, t = e[1], e[2]
    expected[name] = true
    local v = sd[name]
    if v == nil then
      missing[#missing + 1] = name
    elseif not T.is_tensor(v) then
      bad[#bad + 1] = string.format("%s (a %s, not a tensor)", name, type(v))
    elseif fmt_shape(v) ~= fmt_shape(t) then
      bad[#bad + 1] = string.format("%s (given %s, model %s)", name, fmt_shape(v), fmt_shape(t))
    end
  end
  for k in pairs(sd) do
    if not expected[k] then unexpected[#unexpected + 1] = tostring(k) end
  end
  table.sort(unexpected)
  local parts = {}
  if #bad > 0 then parts[#parts + 1] = string.format("%d mis-shaped: %s", #bad, list_text(bad)) end
  if strict and #missing > 0 then parts[#parts + 1] = string.format("%d missing: %s", #missing, list_text(missing)) end
  if strict and #unexpected > 0 then
    parts[#parts + 1] = string.format("%d unexpected: %s", #unexpected, list_text(unexpected))
  end
  if #parts > 0 then
    error(string.format("load_state_dict (%s): %s", class.name(self), table.concat(parts, "; ")), 2)
  end
  T.no_grad(function()
    for _, e in ipairs(entries) do
      local v = sd[e[1]]
      if v ~= nil and v ~= e[2] then e[2]:copy_(v) end
    end
  end)
  return {missing = missing, unexpected = unexpected}
end

-- ---- printing -------------------------------------------------------------------------------
--- one-line description of the layer's settings (subclasses override)
function Module:extra_repr() return "" end

local function group_digits(n)
  local s = tostring(math.floor(n))
  local r = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (r:gsub("^,", ""))
end
Module.group_digits = group_digits

local function own_params_text(self)
  local b, parts = book(self), {}
  for _, name in ipairs(b.params) do
    local t = rawget(self, name)
    if t ~= nil then
      parts[#parts + 1] = name .. " " .. fmt_shape(t) .. (t.requires_grad and "" or " (frozen)")
    end
  end
  return table.concat(parts, ", ")
end

local function tree_lines(self, indent, label, out, seen)
  local head = class.name(self)
  local extra = self:extra_repr()
  if extra ~= "" then head = head .. "(" .. extra .. ")" end
  local own = own_params_text(self)
  if own ~= "" then head = head .. "  " .. own end
  local n = self:num_parameters()
  if n > 0 then head = head .. "  [" .. group_digits(n) .. "]" end
  if seen[self] then head = head .. "  (shared, listed above)" end
  out[#out + 1] = indent .. label .. head
  if seen[self] then return end
  seen[self] = true
  for _, e in ipairs(self:named_children_list()) do
    tree_lines(e[2], indent .. "  ", "(" .. e[1] .. "): ", out, seen)
  end
end

function Module:__tostring()
  local out = {}
  tree_lines(self, "", "", out, {})
  return table.concat(out, "\n")
end

return {Module = Module, Parameter = Parameter, is_parameter = function(t) return param_marks[t] == true end}
