-- Learning-rate schedules, PyTorch's LambdaLR style: a schedule remembers each group's base
-- learning rate and sets lr = base * factor(step). It applies factor(0) when created; call
-- :step() after each optimiser step (as with PyTorch's schedulers), so the k-th optimiser step
-- (from 0) runs at factor(k).
--
--   local sched = optim.LinearWarmup(opt, {warmup = 5000})   -- lr * min(step / 5000, 1)
--   for it = 1, n do ...; opt:step(); sched:step() end
--
-- With warmup = 5000 the first step has lr 0, exactly as the reference (score_sde) does.
local class = require 'tdrl.class'

local Schedule = class('Schedule')

function Schedule:__init(optimizer, factor)
  if type(optimizer) ~= "table" or type(optimizer.param_groups) ~= "table" then
    error(class.name(self) .. ": the first argument must be an optimiser", 3)
  end
  self.optimizer = optimizer
  self.factor = factor
  self.base_lrs = {}
  for i, g in ipairs(optimizer.param_groups) do
    g.initial_lr = g.initial_lr or g.lr
    self.base_lrs[i] = g.initial_lr
  end
  self.last_step = 0
  self:_apply()
end

function Schedule:_apply()
  local f = self:factor_at(self.last_step)
  for i, g in ipairs(self.optimizer.param_groups) do g.lr = self:lr_at(self.base_lrs[i], f, self.last_step) end
end

function Schedule:factor_at(step) return self.factor(step) end
function Schedule:lr_at(base, f) return base * f end

--- advances one step (or to `step` when given) and sets the groups' learning rates
function Schedule:step(step)
  self.last_step = step or self.last_step + 1
  self:_apply()
  return self:get_lr()
end

--- the current learning rate of group 1 (all groups as a list with `all`)
function Schedule:get_lr(all)
  if all then
    local out = {}
    for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
    return out
  end
  return self.optimizer.param_groups[1].lr
end

function Schedule:state_dict() return {last_step = self.last_step, base_lrs = self.base_lrs} end

function Schedule:load_state_dict(sd)
  if type(sd) ~= "table" or sd.last_step == nil then
    error(class.name(self) .. ":load_state_dict: expected a table from state_dict()", 2)
  end
  self.last_step = math.tointeger(sd.last_step) or sd.last_step
  if sd.base_lrs then
    for i, v in ipairs(sd.base_lrs) do self.base_lrs[i] = v end
  end
  self:_apply()
end

local M = {Schedule = Schedule}

--- LambdaLR(optimizer, fn): lr = base * fn(step)
local LambdaLR = class('LambdaLR', Schedule)
M.LambdaLR = LambdaLR
function LambdaLR:__init(opt, fn) Schedule.__init(self, opt, fn) end

--- LinearWarmup(optimizer, {warmup = steps, start_factor = 0}):
--- factor = start + (1 - start) * min(step / warmup, 1)
local LinearWarmup = class('LinearWarmup', Schedule)
M.LinearWarmup = LinearWarmup
function LinearWarmup:__init(opt, opts)
  if type(opts) == "number" then opts = {warmup = opts} end
  opts = opts or {}
  local w, s = opts.warmup or 0, opts.start_factor or 0
  self.warmup, self.start_factor = w, s
  Schedule.__init(self, opt, function(step)
    if w <= 0 then return 1 end
    return s + (1 - s) * math.min(step / w, 1)
  end)
end

--- CosineAnnealingLR(optimizer, {T_max = steps, eta_min = 0, warmup = 0, hold = false}):
--- lr = eta_min + (base - eta_min) (1 + cos(pi t / T_max)) / 2 (t, T_max counted after the
--- optional linear warm-up from 0). Past T_max the cosine goes on (up again), as PyTorch's
--- does; hold = true keeps eta_min from T_max on.
local Cosine = class('CosineAnnealingLR', Schedule)
M.CosineAnnealingLR = Cosine
M.CosineLR = Cosine
function Cosine:__init(opt, opts)
  if type(opts) == "number" then opts = {T_max = opts} end
  opts = opts or {}
  if not opts.T_max or opts.T_max <= 0 then error("CosineAnnealingLR: T_max (steps) is required", 2) end
  self.T_max, self.eta_min, self.warmup = opts.T_max, opts.eta_min or 0, opts.warmup or 0
  self.hold = opts.hold == true
  Schedule.__init(self, opt, nil)
end
function Cosine:factor_at(step) return step end
function Cosine:lr_at(base, step)
  local w = self.warmup
  if w > 0 and step < w then return base * step / w end
  local t = step - w
  if self.hold then t = math.min(t, self.T_max - w) end
  local span = self.T_max - w
  if span <= 0 then return self.eta_min end
  return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t / span)) / 2
end

--- StepLR(optimizer, {step_size = n, gamma = 0.1}): lr = base * gamma^floor(step / step_size)
local StepLR = class('StepLR', Schedule)
M.StepLR = StepLR
function StepLR:__init(opt, opts)
  opts = opts or {}
  local n, gamma = opts.step_size, opts.gamma or 0.1
  if not n or n <= 0 then error("StepLR: step_size is required", 2) end
  self.step_size, self.gamma = n, gamma
  Schedule.__init(self, opt, function(step) return gamma ^ (step // n) end)
end

return M
