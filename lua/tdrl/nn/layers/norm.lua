-- GroupNorm, BatchNorm1d, BatchNorm2d, LayerNorm.
local T = require 'tdrl'
local class = require 'tdrl.class'
local Module = require('tdrl.nn.module').Module
local F = require 'tdrl.nn.functional'
local U = require 'tdrl.nn.layers.util'

local M = {}

local function run(m, fn, ...)
  local ok, r = pcall(fn, ...)
  if not ok then U.fail(m, "%s", tostring(r)) end
  return r
end

--- GroupNorm(num_groups, num_channels [, eps = 1e-5] [, {affine = true}])
local GroupNorm = class('GroupNorm', Module)
M.GroupNorm = GroupNorm
function GroupNorm:__init(G, C, ...)
  Module.__init(self)
  local o = U.args({"eps", "affine", layer = "GroupNorm"}, ...)
  if math.type(G) ~= "integer" or G < 1 or math.type(C) ~= "integer" or C < 1 then
    error(string.format("GroupNorm: num_groups %s and num_channels %s must be positive integers", tostring(G), tostring(C)), 2)
  end
  if C % G ~= 0 then error(string.format("GroupNorm: %d channels do not split into %d groups", C, G), 2) end
  self.num_groups, self.num_channels, self.eps = G, C, o.eps or 1e-5
  self.affine = o.affine ~= false
  self:register_parameter("weight", self.affine and T.ones(C) or nil)
  self:register_parameter("bias", self.affine and T.zeros(C) or nil)
end
function GroupNorm:extra_repr() return string.format("%d groups, %d channels, eps=%g", self.num_groups, self.num_channels, self.eps) end
function GroupNorm:forward(x)
  if x:dim() < 2 or x:size(2) ~= self.num_channels then
    U.fail(self, "expected input (N, %d, ...), got shape %s", self.num_channels, U.shape(x))
  end
  return run(self, F.group_norm, x, self.num_groups, self.weight, self.bias, self.eps)
end

--- _BatchNorm(num_features [, eps = 1e-5, momentum = 0.1, affine = true, track_running_stats = true])
--- buffers running_mean (zeros), running_var (ones), num_batches_tracked (int64 0-d);
--- momentum = false (or opts.cumulative) uses the cumulative average 1 / num_batches_tracked
local BatchNorm = class('_BatchNorm', Module)
M._BatchNorm = BatchNorm
function BatchNorm:__init(C, ...)
  Module.__init(self)
  local o = U.args({"eps", "momentum", "affine", "track_running_stats", layer = "BatchNorm",
    options = {"cumulative"}}, ...)
  U.check_ints(class.name(self), "num_features", C)
  self.num_features, self.eps = C, o.eps or 1e-5
  if o.momentum == false or o.cumulative then self.momentum = false else self.momentum = o.momentum or 0.1 end
  self.affine = o.affine ~= false
  self.track_running_stats = o.track_running_stats ~= false
  self:register_parameter("weight", self.affine and T.ones(C) or nil)
  self:register_parameter("bias", self.affine and T.zeros(C) or nil)
  if self.track_running_stats then
    self:register_buffer("running_mean", T.zeros(C))
    self:register_buffer("running_var", T.ones(C))
    self:register_buffer("num_batches_tracked", T.zeros({}, "int64"))
  end
end
function BatchNorm:extra_repr()
  return string.format("%d, eps=%g, momentum=%s", self.num_features, self.eps, tostring(self.momentum))
end
function BatchNorm:_check(x) end
local function batch_norm(self, fn, x)
  self:_check(x)
  local factor = self.momentum or 0.1
  if self.training and self.track_running_stats then
    T.no_grad(function() self.num_batches_tracked:add_(1) end)
    if self.momentum == false then factor = 1 / self.num_batches_tracked:item() end
  end
  local use_batch = self.training or not self.track_running_stats
  return run(self, fn, x, self.running_mean, self.running_var, self.weight, self.bias, use_batch, factor, self.eps)
end
function BatchNorm:forward(x) return batch_norm(self, F.batch_norm, x) end
--- relu(bn(x)) in one pass, without keeping bn(x) for backward (pre-activation ResNet blocks)
function BatchNorm:forward_relu(x) return batch_norm(self, F.batch_norm_relu, x) end

--- BatchNorm1d: input (N, C) or (N, C, L)
local BatchNorm1d = class('BatchNorm1d', BatchNorm)
M.BatchNorm1d = BatchNorm1d
function BatchNorm1d:_check(x)
  if (x:dim() ~= 2 and x:dim() ~= 3) or x:size(2) ~= self.num_features then
    U.fail(self, "expected input (N, %d) or (N, %d, L), got shape %s", self.num_features, self.num_features, U.shape(x))
  end
end

--- BatchNorm2d: input (N, C, H, W)
local BatchNorm2d = class('BatchNorm2d', BatchNorm)
M.BatchNorm2d = BatchNorm2d
function BatchNorm2d:_check(x)
  if x:dim() ~= 4 or x:size(2) ~= self.num_features then
    U.fail(self, "expected input (N, %d, H, W), got shape %s", self.num_features, U.shape(x))
  end
end

--- LayerNorm(normalized_shape (number or table) [, eps = 1e-5] [, {elementwise_affine = true}])
local LayerNorm = class('LayerNorm', Module)
M.LayerNorm = LayerNorm
function LayerNorm:__init(shape, ...)
  Module.__init(self)
  local o = U.args({"eps", "elementwise_affine", layer = "LayerNorm"}, ...)
  if type(shape) == "number" then shape = {shape} end
  if type(shape) ~= "table" or #shape == 0 then
    error("LayerNorm: normalized_shape must be a size or a list of sizes, got " .. tostring(shape), 2)
  end
  for i = 1, #shape do U.check_ints("LayerNorm", "normalized_shape[" .. i .. "]", shape[i]) end
  self.normalized_shape, self.eps = shape, o.eps or 1e-5
  self.elementwise_affine = o.elementwise_affine ~= false
  self:register_parameter("weight", self.elementwise_affine and T.ones(shape) or nil)
  self:register_parameter("bias", self.elementwise_affine and T.zeros(shape) or nil)
end
function LayerNorm:extra_repr()
  return string.format("%s, eps=%g", table.concat(self.normalized_shape, "x"), self.eps)
end
function LayerNorm:forward(x)
  local n = #self.normalized_shape
  local ok = x:dim() >= n
  for i = 1, n do
    if not ok then break end
    ok = x:size(x:dim() - n + i) == self.normalized_shape[i]
  end
  if not ok then
    U.fail(self, "input of shape %s does not end in %s", U.shape(x), table.concat(self.normalized_shape, "x"))
  end
  return run(self, F.layer_norm, x, n, self.weight, self.bias, self.eps)
end

return M
