-- Adam and AdamW (PyTorch's rules; AdamW decays the weights, Adam adds weight_decay * p to
-- the gradient).
local T = require 'tdrl'
local class = require 'tdrl.class'
local Optimizer = require 'tdrl.optim.optimizer'

local function run(decoupled)
  return function(params, grads, config, state)
    if type(params) ~= "table" or type(config) ~= "table" or type(state) ~= "table" then
      error(string.format("%s(params, grads, config, state): params, config and state must be tables, got %s, %s, %s",
        decoupled and "adamw" or "adam", type(params), type(config), type(state)), 2)
    end
    local b = config.betas or {0.9, 0.999}
    T._adam_step(params, grads, state, config.lr, b[1], b[2], config.eps or 1e-8, config.weight_decay or 0,
      decoupled, config.maximize or false, config.amsgrad or false, config._reference)
    return params
  end
end

--- adam(params, grads|nil, config, state): config {lr, betas = {0.9, 0.999}, eps = 1e-8,
--- weight_decay = 0, amsgrad = false, maximize = false}; state gets step[i], exp_avg[i],
--- exp_avg_sq[i] (and max_exp_avg_sq[i])
local adam = run(false)
--- adamw: the same with decoupled weight decay (default weight_decay 1e-2 in the class)
local adamw = run(true)

local POSITIONAL = {"lr", "betas", "eps", "weight_decay", "amsgrad"}
local KNOWN = {lr = true, betas = true, eps = true, weight_decay = true, amsgrad = true, maximize = true,
               _reference = true}

local function defaults_of(opts, wd)
  return {lr = opts.lr or 1e-3, betas = opts.betas or {0.9, 0.999}, eps = opts.eps or 1e-8,
          weight_decay = opts.weight_decay or wd, amsgrad = opts.amsgrad or false, maximize = opts.maximize or false}
end

local Adam = class('Adam', Optimizer)
--- Adam(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0, amsgrad = false}),
--- or PyTorch's positional form Adam(params, lr, betas, eps, weight_decay, amsgrad)
function Adam:__init(params, ...)
  local opts = Optimizer.options("Adam", POSITIONAL, KNOWN, ...)
  Optimizer.__init(self, params, defaults_of(opts, 0), adam, "Adam")
end

function Adam:validate(group)
  Optimizer.validate(self, group)
  local b = group.betas
  if type(b) ~= "table" or not (b[1] >= 0 and b[1] < 1 and b[2] >= 0 and b[2] < 1) then
    error(self.name .. ": betas must be two numbers in [0, 1)", 4)
  end
  if group.eps < 0 then error(self.name .. ": invalid eps " .. group.eps, 4) end
  if group.weight_decay < 0 then error(self.name .. ": invalid weight_decay " .. group.weight_decay, 4) end
end

Adam.tensor_fields = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
Adam.count_fields = {"step"}

local AdamW = class('AdamW', Adam)
--- AdamW(params, {lr = 1e-3, betas, eps, weight_decay = 1e-2, amsgrad}), or positional as Adam
function AdamW:__init(params, ...)
  local opts = Optimizer.options("AdamW", POSITIONAL, KNOWN, ...)
  Optimizer.__init(self, params, defaults_of(opts, 1e-2), adamw, "AdamW")
end

return {adam = adam, adamw = adamw, Adam = Adam, AdamW = AdamW}
