-- tdrl.nn: modules, layers, initialisers and losses.
--   local nn = require 'tdrl.nn'
--   local net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
--   local loss = nn.F.cross_entropy(net(x), labels)
-- Layers and their PyTorch settings are described in the files under tdrl/nn/layers/.
local class = require 'tdrl.class'
local module = require 'tdrl.nn.module'
local containers = require 'tdrl.nn.containers'

local nn = {}
nn.class = class
nn.Module = module.Module
nn.Parameter = module.Parameter
nn.is_parameter = module.is_parameter
nn.init = require 'tdrl.nn.initializers'
nn.F = require 'tdrl.nn.functional'
nn.functional = nn.F
nn.call_child = containers.call_child

local function merge(t)
  for k, v in pairs(t) do
    if nn[k] ~= nil then error("tdrl.nn: two definitions of " .. k) end
    nn[k] = v
  end
end
merge({Sequential = containers.Sequential, ModuleList = containers.ModuleList, ModuleDict = containers.ModuleDict})
merge(require 'tdrl.nn.layers.linear')
merge(require 'tdrl.nn.layers.activation')
merge(require 'tdrl.nn.layers.conv')
merge(require 'tdrl.nn.layers.norm')
merge(require 'tdrl.nn.layers.rnn')
merge(require 'tdrl.nn.layers.attention')

-- Losses as modules: nn.MSELoss({reduction = 'sum'})(x, y), ...
local function loss_module(name, fn)
  local C = class(name, nn.Module)
  function C:__init(opts)
    nn.Module.__init(self)
    if type(opts) == "string" then opts = {reduction = opts} end
    if opts ~= nil and type(opts) ~= "table" then
      error(string.format("%s: options must be a reduction name or a table, got %s %s", name, type(opts), tostring(opts)), 3)
    end
    self.opts = opts or {}
    self.reduction = self.opts.reduction or "mean"
  end
  function C:extra_repr() return "reduction=" .. self.reduction end
  function C:forward(a, b) return nn.F[fn](a, b, self.opts) end
  nn[name] = C
end
loss_module("MSELoss", "mse_loss")
loss_module("L1Loss", "l1_loss")
loss_module("CrossEntropyLoss", "cross_entropy")
loss_module("NLLLoss", "nll_loss")
loss_module("BCEWithLogitsLoss", "binary_cross_entropy_with_logits")

return nn
