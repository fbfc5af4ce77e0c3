-- Building blocks of the score network and the encoder (NCSN++ "small" as in the reference):
-- DDPM initialisation, the Fourier time embedding, BigGAN residual blocks, spatial attention
-- and the pyramid downsampler. Shapes are (B, C, H, W), batch first.
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local class = nn.class

local M = {}
local SQRT2 = math.sqrt(2)

--- DDPM default_init: U(+-sqrt(3 scale / fan_avg)), scale 0 meaning 1e-10; zero bias
function M.fan_avg_uniform_(w, scale, gen)
  scale = (scale == 0) and 1e-10 or (scale or 1)
  local s = w:size()
  local receptive = 1
  for i = 3, #s do receptive = receptive * s[i] end
  local fan_in, fan_out = s[2] * receptive, s[1] * receptive
  local bound = math.sqrt(3 * scale / ((fan_in + fan_out) / 2))
  T.no_grad(function() w:uniform_(-bound, bound, gen) end)
  return w
end

local function ddpm(m, scale, gen)
  M.fan_avg_uniform_(m.weight, scale, gen)
  if m.bias then T.no_grad(function() m.bias:zero_() end) end
  return m
end

function M.conv3x3(cin, cout, o)
  o = o or {}
  return ddpm(nn.Conv2d(cin, cout, 3, o.stride or 1, o.padding or 1, {generator = o.generator}), o.init_scale, o.generator)
end
function M.conv1x1(cin, cout, o)
  o = o or {}
  return ddpm(nn.Conv2d(cin, cout, 1, {generator = o.generator}), o.init_scale, o.generator)
end
function M.dense(cin, cout, o)
  o = o or {}
  return ddpm(nn.Linear(cin, cout, {generator = o.generator}), o.init_scale, o.generator)
end
function M.group_norm(c) return nn.GroupNorm(math.min(c // 4, 32), c, 1e-6) end

--- GroupNorm followed by SiLU (and the Dropout module drop, when given) through the fused
--- kernel: dropout in the same passes, with the mask nn.Dropout would draw
function M.gn_silu(gn, x, drop)
  local p = drop and drop.training and drop.p or 0
  if p > 0 then return T.group_norm_silu(x, gn.num_groups, gn.weight, gn.bias, gn.eps, p, drop.generator) end
  return T.group_norm_silu(x, gn.num_groups, gn.weight, gn.bias, gn.eps)
end

--- FourierTimeEmbedding(nf = 16, scale = 16): Gaussian Fourier features of log sigma ->
--- Linear(2nf, 4nf) -> SiLU -> Linear(4nf, 4nf). W ~ N(0, scale^2) is a fixed buffer.
local FTE = class('FourierTimeEmbedding', nn.Module)
M.FourierTimeEmbedding = FTE
function FTE:__init(nf, o)
  nn.Module.__init(self)
  o = o or {}
  nf = nf or 16
  self:register_buffer("W", T.randn(nf, o.generator) * (o.scale or 16))
  self.fc0 = M.dense(2 * nf, 4 * nf, o)
  self.fc1 = M.dense(4 * nf, 4 * nf, o)
  self.dim = 4 * nf
end
function FTE:forward(log_sigma) -- (B) -> (B, 4nf)
  local p = log_sigma:unsqueeze(2) * self.W:unsqueeze(1) * (2 * math.pi)
  return self.fc1(self.fc0(T.cat({p:sin(), p:cos()}, 2)):silu())
end

--- ResBlock(cin, cout, temb_dim, {up=, down=, dropout=, cond=}): BigGAN-style (ResnetBlockBigGANpp,
--- fir off). h = conv0(resample(silu(GN(x)))) + Dense(silu(temb)); h = conv1(dropout(silu(GN(h))));
--- x = resample(x), 1x1 conv when channels change or resampling; out = (x + h) / sqrt 2.
--- cond = "scale_shift" (not in the reference; ADM's use_scale_shift_norm): Dense(silu(temb)) gives
--- (scale, shift) and the second norm becomes GN(h) (1 + scale) + shift, so the code can gate
--- features (a colour where the object is) rather than only add a bias everywhere.
local ResBlock = class('ResBlock', nn.Module)
M.ResBlock = ResBlock
function ResBlock:__init(cin, cout, temb_dim, o)
  nn.Module.__init(self)
  o = o or {}
  cout = cout or cin
  self.up, self.down = o.up or false, o.down or false
  self.gn0 = M.group_norm(cin)
  self.conv0 = M.conv3x3(cin, cout, o)
  if o.cond ~= nil and o.cond ~= "bias" and o.cond ~= "scale_shift" then
    error(string.format("ResBlock: cond must be 'bias' or 'scale_shift', got %s", tostring(o.cond)), 2)
  end
  self.scale_shift = o.cond == "scale_shift" and temb_dim ~= nil
  if temb_dim then self.dense = M.dense(temb_dim, self.scale_shift and 2 * cout or cout, o) end
  self.gn1 = M.group_norm(cout)
  self.drop = nn.Dropout(o.dropout or 0.1, {generator = o.generator})
  self.conv1 = M.conv3x3(cout, cout, {init_scale = 0, generator = o.generator})
  if cin ~= cout or self.up or self.down then self.skip = M.conv1x1(cin, cout, o) end
end

local function resample(m, x)
  if m.up then return T.upsample_nearest2d(x, 2) end
  if m.down then return T.avg_pool2d(x, 2, 2) end
  return x
end

function ResBlock:forward(x, temb)
  if self.scale_shift then return self:forward_scale_shift(x, temb) end
  local h = M.gn_silu(self.gn0, x)
  -- + Dense(silu(temb)) per image and channel, added in the convolution's output pass
  h = self.conv0(resample(self, h), self.dense and self.dense(temb:silu()) or nil)
  x = resample(self, x)
  if self.skip then x = self.skip(x) end
  -- (x + conv1(...)) / sqrt 2 in conv1's output pass
  return self.conv1:forward_residual(M.gn_silu(self.gn1, h, self.drop), x, 1 / SQRT2)
end

function ResBlock:forward_scale_shift(x, temb)
  local h = self.conv0(resample(self, M.gn_silu(self.gn0, x)))     -- (B, C, H, W)
  local B, C = h:size(1), h:size(2)
  local ss = self.dense(temb:silu())                                -- (B, 2C): scale, shift
  local scale = ss:narrow(2, 1, C):view(B, C, 1, 1)
  local shift = ss:narrow(2, C + 1, C):view(B, C, 1, 1)
  h = (self.gn1(h) * (scale + 1) + shift):silu()
  x = resample(self, x)
  if self.skip then x = self.skip(x) end
  return self.conv1:forward_residual(self.drop(h), x, 1 / SQRT2)
end

--- AttnBlock(c): self-attention over the H*W positions, one head of width C, scale C^-1/2,
--- 1x1 projections (q, k, v init scale 0.1, output ~0); out = (x + proj(attn)) / sqrt 2
local AttnBlock = class('AttnBlock', nn.Module)
M.AttnBlock = AttnBlock
function AttnBlock:__init(c, o)
  nn.Module.__init(self)
  o = o or {}
  self.gn = M.group_norm(c)
  local q = {init_scale = 0.1, generator = o.generator}
  self.q, self.k, self.v = M.conv1x1(c, c, q), M.conv1x1(c, c, q), M.conv1x1(c, c, q)
  self.o = M.conv1x1(c, c, {init_scale = 0, generator = o.generator})
end
function AttnBlock:forward(x)
  local B, C, H, W = table.unpack(x:size())
  local h = self.gn(x)
  local q = self.q(h):view(B, C, H * W)
  local k = self.k(h):view(B, C, H * W)
  local v = self.v(h):view(B, C, H * W)
  -- softmax(q^T k C^-1/2) weights (B, HW, HW) applied to v, in the (B, C, HW) layout as it is
  local a = T.scaled_dot_product_attention(q, k, v, {channels_first = true, scale = C ^ -0.5}):view(B, C, H, W)
  return self.o:forward_residual(a, x, 1 / SQRT2) -- (x + o(a)) / sqrt 2 in one pass
end

--- pads right and bottom by one zero row / column: (B, C, H, W) -> (B, C, H+1, W+1)
function M.pad_right_bottom(x)
  local B, C, H, W = table.unpack(x:size())
  local r = T.cat({x, T.zeros(B, C, H, 1)}, 4)
  return T.cat({r, T.zeros(B, C, 1, W + 1)}, 3)
end

--- PyramidDown(cin, cout): progressive_input 'residual' downsampler: pad right/bottom by one,
--- conv3x3 stride 2 without padding
local PyramidDown = class('PyramidDown', nn.Module)
M.PyramidDown = PyramidDown
function PyramidDown:__init(cin, cout, o)
  nn.Module.__init(self)
  o = o or {}
  self.conv = M.conv3x3(cin, cout, {stride = 2, padding = 0, generator = o.generator})
end
function PyramidDown:forward(x) return self.conv(M.pad_right_bottom(x)) end

return M
