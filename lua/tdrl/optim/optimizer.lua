-- The optimiser base class: parameter groups, lazily created state kept apart from the
-- configuration, zero_grad, state_dict / load_state_dict in PyTorch's layout.
--
-- The update rules themselves are plain functions in torch/optim style (optim.sgd, optim.adam,
-- optim.adamw): f(params, grads, config, state), where grads may be nil (each parameter's .grad is
-- used) and state is a table of lists the function fills on first use. The classes call them once
-- per parameter group; each call is one C call updating every tensor of the group in place.
local T = require 'tdrl'
local class = require 'tdrl.class'

local Optimizer = class('Optimizer')

local function is_module(v)
  return type(v) == "table" and type(v.parameters) == "function" and type(v.named_parameters) == "function"
end

-- params: a list of tensors, a list of groups {params = {...}, lr = ...}, or a Module
local function groups_of(params, name)
  if is_module(params) then params = params:parameters() end
  if type(params) ~= "table" then error(name .. ": expected a list of parameters, a list of groups or a Module", 3) end
  if #params == 0 then error(name .. ": got an empty parameter list", 3) end
  if T.is_tensor(params[1]) then params = {{params = params}} end
  local seen = {}
  for gi, g in ipairs(params) do
    if type(g) ~= "table" or type(g.params) ~= "table" then
      error(string.format("%s: group %d must be a table with a params list", name, gi), 3)
    end
    if is_module(g.params) then g.params = g.params:parameters() end
    for i, p in ipairs(g.params) do
      if not T.is_tensor(p) then error(string.format("%s: parameter %d of group %d is not a tensor", name, i, gi), 3) end
      if seen[p] then error(string.format("%s: a parameter appears twice (group %d, entry %d)", name, gi, i), 3) end
      seen[p] = true
    end
  end
  return params
end

--- the options of Name(params, ...) as PyTorch takes them: a table ({lr = 1e-3, ...}), or the
--- values in PyTorch's positional order (`positional`, lr first) optionally followed by a table:
--- Adam(params, 1e-2), SGD(params, 0.1, 0.9), Adam(params, 1e-3, {0.9, 0.99}, {eps = 1e-6}).
--- Unknown option names are an error (a misspelt `learnig_rate` would otherwise be ignored).
function Optimizer.options(name, positional, known, ...)
  local n = select('#', ...)
  local opts = {}
  for i = 1, n do
    local v = select(i, ...)
    local key = positional[i]
    local is_list = type(v) == "table" and v[1] ~= nil
    if type(v) == "table" and not (key == "betas" and is_list) then
      if i ~= n then error(string.format("%s: the options table must be the last argument (got one at %d)", name, i + 1), 3) end
      for k, x in pairs(v) do
        if opts[k] ~= nil then error(string.format("%s: '%s' given twice (by position and by name)", name, k), 3) end
        opts[k] = x
      end
    elseif v ~= nil then
      if key == nil then
        error(string.format("%s: too many arguments: after the parameters it takes %s and an options table", name,
          table.concat(positional, ", ")), 3)
      end
      opts[key] = v
    end
  end
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for kk in pairs(known) do if kk:sub(1, 1) ~= "_" then names[#names + 1] = kk end end
      table.sort(names)
      error(string.format("%s: unknown option '%s' (options: %s)", name, tostring(k), table.concat(names, ", ")), 3)
    end
  end
  return opts
end

-- Keys of an options table or a group that the optimiser does not take: an error, not a
-- silent default (Adam{lr = 1e-3, weight_decya = 0.1} trained without weight decay).
local function check_keys(name, t, defaults, what)
  for k in pairs(t) do
    if defaults[k] == nil and k ~= "params" and k ~= "initial_lr" then
      local known = {}
      for d in pairs(defaults) do known[#known + 1] = d end
      table.sort(known)
      error(string.format("%s: unknown option '%s' in %s (known: %s)", name, tostring(k), what,
        table.concat(known, ", ")), 4)
    end
  end
end

--- opts: the table the user gave (checked for unknown keys); defaults: every setting's value
function Optimizer:__init(params, defaults, update, name, opts)
  self.name = name or class.name(self)
  if opts ~= nil then
    if type(opts) ~= "table" then error(string.format("%s: options must be a table, got %s", self.name, type(opts)), 3) end
    check_keys(self.name, opts, defaults, "the options")
  end
  self.defaults = defaults
  self.update = update
  self.param_groups = {}
  self.state = {} -- state[gi] = {field = {list by position in the group}}
  for _, g in ipairs(groups_of(params, self.name)) do self:add_param_group(g) end
end

--- add_param_group({params = {...}, lr = ..., ...}): missing settings come from the defaults
function Optimizer:add_param_group(g)
  check_keys(self.name, g, self.defaults, "a parameter group")
  local group = {}
  for k, v in pairs(self.defaults) do group[k] = v end
  for k, v in pairs(g) do group[k] = v end
  if is_module(group.params) then group.params = group.params:parameters() end
  local p = {}
  for i, t in ipairs(group.params) do p[i] = t end
  group.params = p
  self:validate(group)
  self.param_groups[#self.param_groups + 1] = group
  self.state[#self.param_groups] = {}
  return self
end

function Optimizer:validate(group)
  if type(group.lr) ~= "number" or not (group.lr >= 0 and group.lr < math.huge) then
    error(self.name .. ": invalid learning rate " .. tostring(group.lr), 4)
  end
  -- a NaN anywhere (lr = 0/0 made every parameter NaN at the first step) or an infinity
  for k, v in pairs(group) do
    if type(v) == "number" and v ~= v or v == math.huge or v == -math.huge then
      error(string.format("%s: invalid %s %s", self.name, k, tostring(v)), 4)
    end
  end
  for i, v in ipairs(type(group.betas) == "table" and group.betas or {}) do
    if type(v) ~= "number" or v ~= v then error(string.format("%s: invalid betas[%d] %s", self.name, i, tostring(v)), 4) end
  end
end

--- one update of every parameter that has a gradient
function Optimizer:step()
  for gi, g in ipairs(self.param_groups) do self.update(g.params, nil, g, self.state[gi]) end
end

--- sets every parameter's .grad to nil
function Optimizer:zero_grad()
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do p:zero_grad() end
  end
end

-- the state fields holding tensors, and the one holding step counts
Optimizer.tensor_fields = {}
Optimizer.count_fields = {}

--- PyTorch's layout: {state = {[i] = {step = n, exp_avg = t, ...}}, param_groups = {{lr = ...,
--- params = {i, ...}}}}, i counting parameters from 0 across groups. Tensors are the live state.
function Optimizer:state_dict()
  local state, groups, idx = {}, {}, 0
  for gi, g in ipairs(self.param_groups) do
    local gs = {}
    for k, v in pairs(g) do if k ~= "params" then gs[k] = v end end
    gs.params = {}
    local st = self.state[gi]
    for i = 1, #g.params do
      gs.params[i] = idx
      local entry
      for _, f in ipairs(self.tensor_fields) do
        local t = st[f] and st[f][i]
        if t ~= nil then entry = entry or {}; entry[f] = t end
      end
      for _, f in ipairs(self.count_fields) do
        local c = st[f] and st[f][i]
        if c ~= nil then entry = entry or {}; entry[f] = c end
      end
      if entry then state[idx] = entry end
      idx = idx + 1
    end
    groups[gi] = gs
  end
  return {state = state, param_groups = groups}
end

--- restores settings and state (tensors are copied, shapes checked)
function Optimizer:load_state_dict(sd)
  local name = self.name .. ":load_state_dict"
  if type(sd) ~= "table" or type(sd.param_groups) ~= "table" then
    error(name .. ": expected a table from state_dict()", 2)
  end
  if #sd.param_groups ~= #self.param_groups then
    error(string.format("%s: %d parameter groups saved, the optimiser has %d", name, #sd.param_groups,
      #self.param_groups), 2)
  end
  local state = sd.state or {}
  local new_state, idx = {}, 0
  for gi, g in ipairs(self.param_groups) do
    local sg = sd.param_groups[gi]
    local np = sg.params and #sg.params or -1
    if np ~= #g.params then
      error(string.format("%s: group %d had %d parameters when saved, now %d", name, gi, np, #g.params), 2)
    end
    local st = {}
    for _, f in ipairs(self.tensor_fields) do st[f] = {} end
    for _, f in ipairs(self.count_fields) do st[f] = {} end
    for i, p in ipairs(g.params) do
      local e = state[idx] or state[tostring(idx)]
      if e then
        for _, f in ipairs(self.tensor_fields) do
          local t = e[f]
          if t ~= nil then
            if not T.is_tensor(t) or table.concat(t:size(), "x") ~= table.concat(p:size(), "x") then
              error(string.format("%s: state %s of parameter %d has shape %s, the parameter %s", name, f, idx,
                T.is_tensor(t) and table.concat(t:size(), "x") or type(t), table.concat(p:size(), "x")), 2)
            end
            st[f][i] = T.no_grad(function() return t:detach():clone():contiguous() end)
          end
        end
        for _, f in ipairs(self.count_fields) do
          local c = e[f]
          if c ~= nil then
            local n = type(c) == "number" and math.tointeger(c)
            if not n or n < 0 then
              error(string.format("%s: state %s of parameter %d is %s, not a non-negative integer", name, f, idx,
                type(c) == "string" and string.format("%q", c) or tostring(c)), 2)
            end
            st[f][i] = n
          end
        end
      end
      idx = idx + 1
    end
    new_state[gi] = st
  end
  for gi, g in ipairs(self.param_groups) do
    for k, v in pairs(sd.param_groups[gi]) do if k ~= "params" then g[k] = v end end
  end
  self.state = new_state
end

--- the learning rate of group 1 (or of group gi)
function Optimizer:get_lr(gi) return self.param_groups[gi or 1].lr end

function Optimizer:set_lr(lr)
  for _, g in ipairs(self.param_groups) do g.lr = lr end
end

function Optimizer:__tostring()
  local parts = {}
  for gi, g in ipairs(self.param_groups) do
    local keys = {}
    for k, v in pairs(g) do
      if k ~= "params" then
        local text = type(v) == "table" and "{" .. table.concat(v, ", ") .. "}" or tostring(v)
        keys[#keys + 1] = k .. "=" .. text
      end
    end
    table.sort(keys)
    parts[#parts + 1] = string.format("  group %d: %d tensors, %s", gi, #g.params, table.concat(keys, ", "))
  end
  return self.name .. "\n" .. table.concat(parts, "\n")
end

Optimizer.is_module = is_module
return Optimizer
