-- Activations and Dropout.
local class = require 'tdrl.class'
local Module = require('tdrl.nn.module').Module
local F = require 'tdrl.nn.functional'
local U = require 'tdrl.nn.layers.util'

local M = {}

local function simple(name, method)
  local C = class(name, Module)
  C.forward = function(_, x) return x[method](x) end
  M[name] = C
  return C
end
simple("ReLU", "relu")
simple("SiLU", "silu")
simple("GELU", "gelu")
simple("Tanh", "tanh")
simple("Sigmoid", "sigmoid")
M.Swish = M.SiLU

--- ELU(alpha = 1)
local ELU = class('ELU', Module)
M.ELU = ELU
function ELU:__init(alpha)
  Module.__init(self)
  self.alpha = alpha or 1.0
end
function ELU:extra_repr() return "alpha=" .. self.alpha end
function ELU:forward(x) return x:elu(self.alpha) end

--- Softmax(dim = -1) / LogSoftmax(dim = -1)
local Softmax = class('Softmax', Module)
M.Softmax = Softmax
function Softmax:__init(dim) Module.__init(self); self.dim = dim or -1 end
function Softmax:extra_repr() return "dim=" .. self.dim end
function Softmax:forward(x) return x:softmax(self.dim) end

local LogSoftmax = class('LogSoftmax', Module)
M.LogSoftmax = LogSoftmax
function LogSoftmax:__init(dim) Module.__init(self); self.dim = dim or -1 end
function LogSoftmax:extra_repr() return "dim=" .. self.dim end
function LogSoftmax:forward(x) return x:log_softmax(self.dim) end

--- Dropout(p = 0.5 [, {generator = g}]): zeroes elements with probability p and scales the
--- others by 1 / (1 - p) in training mode; the identity in eval mode. Masks are drawn from
--- the generator (default: the default generator), so runs with the same seed repeat.
local Dropout = class('Dropout', Module)
M.Dropout = Dropout
function Dropout:__init(p, ...)
  Module.__init(self)
  local o = U.args({layer = "Dropout"}, ...)
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p > 1 then error("Dropout: p must be a probability in [0, 1], got " .. tostring(p), 2) end
  self.p = p
  self.generator = o.generator
end
function Dropout:extra_repr() return "p=" .. self.p end
function Dropout:forward(x) return F.dropout(x, self.p, self.training, self.generator) end

return M
