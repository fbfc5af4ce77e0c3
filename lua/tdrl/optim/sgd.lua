-- SGD with momentum, dampening, Nesterov momentum and weight decay (PyTorch's rule).
local T = require 'tdrl'
local class = require 'tdrl.class'
local Optimizer = require 'tdrl.optim.optimizer'

--- sgd(params, grads|nil, config, state): config {lr, momentum = 0, dampening = 0,
--- weight_decay = 0, nesterov = false, maximize = false}; state gets momentum_buffer[i]
local function sgd(params, grads, config, state)
  if type(params) ~= "table" or type(config) ~= "table" or type(state) ~= "table" then
    error(string.format("sgd(params, grads, config, state): params, config and state must be tables, got %s, %s, %s",
      type(params), type(config), type(state)), 2)
  end
  T._sgd_step(params, grads, state, config.lr, config.momentum or 0, config.dampening or 0,
    config.weight_decay or 0, config.nesterov or false, config.maximize or false, config._reference)
  return params
end

local SGD = class('SGD', Optimizer)

local POSITIONAL = {"lr", "momentum", "dampening", "weight_decay", "nesterov"}
local KNOWN = {lr = true, momentum = true, dampening = true, weight_decay = true, nesterov = true, maximize = true,
               _reference = true}

--- SGD(params, {lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false}), or
--- PyTorch's positional form SGD(params, lr, momentum, dampening, weight_decay, nesterov)
function SGD:__init(params, ...)
  local opts = Optimizer.options("SGD", POSITIONAL, KNOWN, ...)
  local defaults = {lr = opts.lr or 1e-3, momentum = opts.momentum or 0, dampening = opts.dampening or 0,
                    weight_decay = opts.weight_decay or 0, nesterov = opts.nesterov or false,
                    maximize = opts.maximize or false}
  Optimizer.__init(self, params, defaults, sgd, "SGD", opts)
end

function SGD:validate(group)
  Optimizer.validate(self, group)
  if group.momentum < 0 then error("SGD: invalid momentum " .. group.momentum, 4) end
  if group.weight_decay < 0 then error("SGD: invalid weight_decay " .. group.weight_decay, 4) end
  if group.nesterov and (group.momentum <= 0 or group.dampening ~= 0) then
    error("SGD: Nesterov momentum needs a momentum and zero dampening", 4)
  end
end

SGD.tensor_fields = {"momentum_buffer"}
SGD.count_fields = {}

return {sgd = sgd, SGD = SGD}
