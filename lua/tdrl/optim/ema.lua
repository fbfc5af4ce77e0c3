-- Exponential moving average of parameters, with the reference's (score_sde) rule:
--   n <- n + 1;  decay_n = min(decay, (1 + n) / (10 + n));  shadow -= (1 - decay_n) (shadow - p)
-- Only parameters that require gradients are tracked (as in the reference).
--
--   local ema = optim.EMA(model, {decay = 0.999})
--   ... opt:step(); ema:update()
--   ema:store(); ema:copy_to(); evaluate(model); ema:restore()
local T = require 'tdrl'
local class = require 'tdrl.class'
local Optimizer = require 'tdrl.optim.optimizer'

local EMA = class('EMA')

--- EMA(model or list of parameters, {decay = 0.999, use_num_updates = true})
function EMA:__init(src, opts)
  opts = opts or {}
  self.decay = opts.decay or 0.999
  if self.decay < 0 or self.decay > 1 then error("EMA: decay must be in [0, 1]", 2) end
  if opts.use_num_updates == false then self.num_updates = false else self.num_updates = 0 end
  self.params, self.names = {}, {}
  if Optimizer.is_module(src) then
    self.module = src
    for name, p in src:named_parameters() do
      if p.requires_grad then
        self.params[#self.params + 1] = p
        self.names[#self.names + 1] = name
      end
    end
  elseif type(src) == "table" then
    for i, p in ipairs(src) do
      if not T.is_tensor(p) then error("EMA: entry " .. i .. " is not a tensor", 2) end
      if p.requires_grad then
        self.params[#self.params + 1] = p
        self.names[#self.names + 1] = tostring(#self.names)
      end
    end
  else
    error("EMA: expected a Module or a list of parameters", 2)
  end
  self.shadow = {}
  T.no_grad(function()
    for i, p in ipairs(self.params) do self.shadow[i] = p:detach():clone() end
  end)
end

--- the decay the next update will use
function EMA:current_decay()
  if not self.num_updates then return self.decay end
  local n = self.num_updates + 1
  return math.min(self.decay, (1 + n) / (10 + n))
end

--- shadow <- shadow - (1 - decay) (shadow - params); returns the decay used
function EMA:update()
  local d = self:current_decay()
  if self.num_updates then self.num_updates = self.num_updates + 1 end
  T._ema_update(self.shadow, self.params, d)
  return d
end

local function targets(self, dst)
  if dst == nil then return self.params end
  local list = {}
  if Optimizer.is_module(dst) then
    for _, p in ipairs(dst:parameters()) do
      if p.requires_grad then list[#list + 1] = p end
    end
  else
    list = dst
  end
  if #list ~= #self.shadow then
    error(string.format("EMA: %d tensors given, %d tracked", #list, #self.shadow), 3)
  end
  return list
end

--- copies the averages into the tracked parameters (or into another module / list)
function EMA:copy_to(dst)
  local list = targets(self, dst)
  T.no_grad(function()
    for i, p in ipairs(list) do p:copy_(self.shadow[i]) end
  end)
end

--- keeps a copy of the current parameters (buffers reused between calls)
function EMA:store(src)
  local list = targets(self, src)
  self.stored = self.stored or {}
  T.no_grad(function()
    for i, p in ipairs(list) do
      local s = self.stored[i]
      if s == nil or s:numel() ~= p:numel() then self.stored[i] = p:detach():clone() else s:copy_(p) end
    end
  end)
  self.stored_valid = true
end

--- puts back the parameters kept by store()
function EMA:restore(dst)
  if not self.stored_valid then error("EMA:restore: nothing stored (call store() first)", 2) end
  local list = targets(self, dst)
  T.no_grad(function()
    for i, p in ipairs(list) do p:copy_(self.stored[i]) end
  end)
  self.stored_valid = false
end

function EMA:state_dict()
  local shadow = {}
  for i, s in ipairs(self.shadow) do shadow[self.names[i]] = s end
  return {decay = self.decay, num_updates = self.num_updates, shadow = shadow}
end

function EMA:load_state_dict(sd)
  if type(sd) ~= "table" or type(sd.shadow) ~= "table" then error("EMA:load_state_dict: expected a table from state_dict()", 2) end
  local bad = {}
  for i, name in ipairs(self.names) do
    local t = sd.shadow[name]
    if not T.is_tensor(t) then
      bad[#bad + 1] = name .. " (missing)"
    elseif table.concat(t:size(), "x") ~= table.concat(self.shadow[i]:size(), "x") then
      bad[#bad + 1] = string.format("%s (given %s, model %s)", name, table.concat(t:size(), "x"),
        table.concat(self.shadow[i]:size(), "x"))
    end
  end
  if #bad > 0 then error("EMA:load_state_dict: " .. table.concat(bad, ", "), 2) end
  T.no_grad(function()
    for i, name in ipairs(self.names) do self.shadow[i]:copy_(sd.shadow[name]) end
  end)
  self.decay = sd.decay or self.decay
  if sd.num_updates == false then self.num_updates = false
  elseif sd.num_updates ~= nil then self.num_updates = math.tointeger(sd.num_updates) or sd.num_updates end
end

return {EMA = EMA}
