-- Conv2d, ConvTranspose2d, AvgPool2d, Upsample (nearest).
local T = require 'tdrl'
local class = require 'tdrl.class'
local Module = require('tdrl.nn.module').Module
local init = require 'tdrl.nn.initializers'
local F = require 'tdrl.nn.functional'
local U = require 'tdrl.nn.layers.util'

local M = {}

local function pair(v) if type(v) == "table" then return {v[1], v[2] or v[1]} end return {v, v} end

-- accepts (N, C, H, W) or one unbatched image (C, H, W); returns the batch and whether to squeeze
local function check_input(m, x, C)
  local d = x:dim()
  if d ~= 4 and d ~= 3 then
    U.fail(m, "expected an image batch (N, %d, H, W) or an image (%d, H, W), got shape %s", C, C, U.shape(x))
  end
  if x:size(d - 2) ~= C then
    U.fail(m, "expected an image batch (N, %d, H, W), got shape %s (%d channels)", C, U.shape(x), x:size(d - 2))
  end
  if d == 3 then return x:unsqueeze(1), true end
  return x, false
end

local function unbatch(y, squeeze)
  if squeeze then return y:squeeze(1) end
  return y
end

-- runs a functional op; a failure (e.g. an input smaller than the kernel) is reported with the
-- layer's name
local function run(m, fn, ...)
  local ok, r = pcall(fn, ...)
  if not ok then U.fail(m, "%s", tostring(r)) end
  return r
end

--- Conv2d(in, out, kernel_size [, stride = 1, padding = 0, dilation = 1, groups = 1] [, {bias=, generator=, ...}])
--- weight (out, in/groups, kh, kw) ~ U(+-1/sqrt(fan_in)), bias ~ U(+-1/sqrt(fan_in)), fan_in = in/groups kh kw
local Conv2d = class('Conv2d', Module)
M.Conv2d = Conv2d

function Conv2d:__init(cin, cout, k, ...)
  Module.__init(self)
  local o = U.args({"stride", "padding", "dilation", "groups", layer = "Conv2d", options = {"bias"}}, ...)
  local G = o.groups or 1
  U.check_ints("Conv2d", "in_channels", cin, "out_channels", cout, "groups", G)
  if k == nil then error("Conv2d: kernel_size is missing", 2) end
  if cin % G ~= 0 or cout % G ~= 0 then
    error(string.format("Conv2d: %d input and %d output channels do not split into %d groups", cin, cout, G), 2)
  end
  self.in_channels, self.out_channels, self.groups = cin, cout, G
  self.kernel_size = pair(k)
  self.stride, self.dilation = pair(o.stride or 1), pair(o.dilation or 1)
  -- padding: a number, a pair, 'valid' (none) or 'same' (output as large as the input, stride 1;
  -- an odd total is split with the extra row / column at the end, as PyTorch does)
  local pad = o.padding or 0
  if pad == "valid" then pad = 0 end
  if pad == "same" then
    if self.stride[1] ~= 1 or self.stride[2] ~= 1 then error("Conv2d: padding 'same' needs stride 1", 2) end
    local th = self.dilation[1] * (self.kernel_size[1] - 1)
    local tw = self.dilation[2] * (self.kernel_size[2] - 1)
    self.same = {th // 2, th - th // 2, tw // 2, tw - tw // 2}
    if th % 2 == 0 and tw % 2 == 0 then
      pad, self.same = {th // 2, tw // 2}, nil
    else
      pad = 0
    end
    self.padding_mode_text = "same"
  elseif type(pad) == "string" then
    error("Conv2d: padding must be a number, a pair, 'valid' or 'same', got '" .. pad .. "'", 2)
  end
  self.padding = pair(pad)
  self:register_parameter("weight", T.empty(cout, cin // G, self.kernel_size[1], self.kernel_size[2]))
  self:register_parameter("bias", o.bias ~= false and T.empty(cout) or nil)
  self:reset_parameters(o.generator)
end

function Conv2d:reset_parameters(gen)
  init.default_weight_(self.weight, gen)
  if self.bias then init.default_bias_(self.bias, self.weight, gen) end
end

function Conv2d:extra_repr()
  local s = string.format("%d -> %d, k=%s", self.in_channels, self.out_channels,
    U.pair_text(self.kernel_size[1], self.kernel_size[2]))
  if self.stride[1] ~= 1 or self.stride[2] ~= 1 then s = s .. ", stride=" .. U.pair_text(self.stride[1], self.stride[2]) end
  if self.padding_mode_text then
    s = s .. ", padding=" .. self.padding_mode_text
  elseif self.padding[1] ~= 0 or self.padding[2] ~= 0 then
    s = s .. ", padding=" .. U.pair_text(self.padding[1], self.padding[2])
  end
  if self.dilation[1] ~= 1 or self.dilation[2] ~= 1 then
    s = s .. ", dilation=" .. U.pair_text(self.dilation[1], self.dilation[2])
  end
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  if not self.bias then s = s .. ", no bias" end
  return s
end

-- conv(x) + bias (+ shift per image and channel), then (+ r) * scale, in one output pass
local function conv_forward(self, x, shift, r, scale)
  local sq
  x, sq = check_input(self, x, self.in_channels)
  if self.same then x = F.pad2d(x, table.unpack(self.same)) end
  local b = self.bias
  if shift then
    if sq or shift:dim() ~= 2 or shift:size(1) ~= x:size(1) or shift:size(2) ~= self.out_channels then
      U.fail(self, "shift must be (N, %d) for an input batch (N, %d, H, W), got %s for input %s", self.out_channels,
        self.in_channels, U.shape(shift), U.shape(x))
    end
    b = b and shift + b:view(1, self.out_channels) or shift
  end
  if r and sq then U.fail(self, "forward_residual takes an image batch (N, %d, H, W), got %s", self.in_channels, U.shape(x)) end
  return unbatch(run(self, F.conv2d, x, self.weight, b,
    {stride = self.stride, padding = self.padding, dilation = self.dilation, groups = self.groups, residual = r,
     scale = scale}), sq)
end

--- forward(x [, shift]): shift (N, out), when given, is added to every position of image n's
--- output channels: conv(x) + bias + shift[:, :, None, None] in the convolution's own output
--- pass (a time embedding's projection, as the diffusion blocks add it), not a second one
function Conv2d:forward(x, shift) return conv_forward(self, x, shift) end

--- forward_residual(x, r [, scale = 1, shift]): scale (conv(x) + bias + r), r of the output's
--- shape, in the convolution's output pass (a residual block's tail, (x + h) / sqrt 2, without
--- a pass of its own); its gradient reaches r as scale dy
function Conv2d:forward_residual(x, r, scale, shift) return conv_forward(self, x, shift, r, scale) end

--- ConvTranspose2d(in, out, kernel_size [, stride, padding, output_padding, groups] [, {dilation=, bias=, generator=}])
--- weight (in, out/groups, kh, kw); PyTorch's fan_in for it is out/groups kh kw
local ConvTranspose2d = class('ConvTranspose2d', Module)
M.ConvTranspose2d = ConvTranspose2d

function ConvTranspose2d:__init(cin, cout, k, ...)
  Module.__init(self)
  local o = U.args({"stride", "padding", "output_padding", "groups", layer = "ConvTranspose2d",
    options = {"bias", "dilation"}}, ...)
  local G = o.groups or 1
  U.check_ints("ConvTranspose2d", "in_channels", cin, "out_channels", cout, "groups", G)
  if k == nil then error("ConvTranspose2d: kernel_size is missing", 2) end
  if cin % G ~= 0 or cout % G ~= 0 then
    error(string.format("ConvTranspose2d: %d input and %d output channels do not split into %d groups", cin, cout, G), 2)
  end
  self.in_channels, self.out_channels, self.groups = cin, cout, G
  self.kernel_size = pair(k)
  self.stride, self.padding = pair(o.stride or 1), pair(o.padding or 0)
  self.output_padding, self.dilation = pair(o.output_padding or 0), pair(o.dilation or 1)
  self:register_parameter("weight", T.empty(cin, cout // G, self.kernel_size[1], self.kernel_size[2]))
  self:register_parameter("bias", o.bias ~= false and T.empty(cout) or nil)
  self:reset_parameters(o.generator)
end

ConvTranspose2d.reset_parameters = Conv2d.reset_parameters

function ConvTranspose2d:extra_repr()
  local s = Conv2d.extra_repr(self)
  if self.output_padding[1] ~= 0 or self.output_padding[2] ~= 0 then
    s = s .. ", output_padding=" .. U.pair_text(self.output_padding[1], self.output_padding[2])
  end
  return s
end

function ConvTranspose2d:forward(x)
  local sq
  x, sq = check_input(self, x, self.in_channels)
  return unbatch(run(self, F.conv_transpose2d, x, self.weight, self.bias,
    {stride = self.stride, padding = self.padding, output_padding = self.output_padding, dilation = self.dilation,
     groups = self.groups}), sq)
end

--- AvgPool2d(kernel_size [, stride = kernel_size]): no padding, floor mode
local AvgPool2d = class('AvgPool2d', Module)
M.AvgPool2d = AvgPool2d
function AvgPool2d:__init(k, s)
  Module.__init(self)
  self.kernel_size, self.stride = pair(k), pair(s or k)
end
function AvgPool2d:extra_repr()
  return "k=" .. U.pair_text(self.kernel_size[1], self.kernel_size[2]) ..
    ", stride=" .. U.pair_text(self.stride[1], self.stride[2])
end
function AvgPool2d:forward(x)
  if x:dim() ~= 4 and x:dim() ~= 3 then
    U.fail(self, "expected an image batch (N, C, H, W) or an image (C, H, W), got shape %s", U.shape(x))
  end
  if x:dim() == 3 then return run(self, F.avg_pool2d, x:unsqueeze(1), self.kernel_size, self.stride):squeeze(1) end
  return run(self, F.avg_pool2d, x, self.kernel_size, self.stride)
end

--- Upsample({scale_factor = 2, mode = 'nearest'}) or Upsample(nil, 2): integer scale factors
local Upsample = class('Upsample', Module)
M.Upsample = Upsample
function Upsample:__init(...)
  Module.__init(self)
  local o = U.args({"size", "scale_factor", "mode", layer = "Upsample"}, ...)
  if o.size then error("Upsample: only scale_factor is supported, not size", 2) end
  if (o.mode or "nearest") ~= "nearest" then error("Upsample: only mode 'nearest' is supported", 2) end
  local f = pair(o.scale_factor or 2)
  for i = 1, 2 do
    if math.type(f[i]) ~= "integer" and not (type(f[i]) == "number" and f[i] == math.floor(f[i])) then
      error("Upsample: the scale factor must be a whole number, got " .. tostring(f[i]), 2)
    end
    f[i] = math.tointeger(f[i])
  end
  self.scale_factor = f
  self.mode = "nearest"
end
function Upsample:extra_repr() return "scale=" .. U.pair_text(self.scale_factor[1], self.scale_factor[2]) .. ", nearest" end
function Upsample:forward(x)
  if x:dim() ~= 4 then U.fail(self, "expected an image batch (N, C, H, W), got shape %s", U.shape(x)) end
  return run(self, F.upsample_nearest2d, x, self.scale_factor)
end

return M
