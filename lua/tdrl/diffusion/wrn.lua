-- The time-conditioned Wide-ResNet encoder of the paper: every input x0 and time t map to a
-- code z(x0, t), so each input has a trajectory of codes over t in [0, 1].
--
--   enc = WRNEncoder({depth = 28, widen = 2, latent = 128, probabilistic = true})
--   e = enc(x0, t)   -- e.z (B, latent); VDRL also e.mu, e.logvar; e.feat (B, 64k)
--
-- widths [16, 16k, 32k, 64k] (k = 0: [16, 32, 64, 2]), (depth - 4) / 6 blocks per stage,
-- strides 1, 2, 2; block BN-ReLU-conv3x3 (+ Dense(silu(temb)) bias) - dropout - BN-ReLU-
-- conv3x3 with the stride on the SECOND conv (as in the reference); shortcut 1x1 conv when the
-- shape changes; head BN (momentum 0.9) -> ReLU -> global mean. DRL: z = feat, or
-- Linear(feat, latent) when latent differs from the feature width (so that any latent size
-- works: the reference hard-codes it); VDRL: Linear(feat, 2 latent) -> mu, logvar.
-- coords = true (not in the reference) appends two channels holding each pixel's column and
-- row in [-1, 1] to the input (CoordConv, Liu et al. 2018): the global mean pool keeps no
-- position otherwise, so where an object is can reach the code only through the zero padding's
-- edge effects, which a shallow encoder's receptive field (19 px for WRN-10) does not even see
-- from the image's centre. With the coordinates, a filter can weigh an object's response by
-- its position and the pool returns that position.
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local L = require 'tdrl.diffusion.layers'
local SDE = require 'tdrl.diffusion.sde'
local class = nn.class

local M = {}

local WideBlock = class('WideBlock', nn.Module)
M.WideBlock = WideBlock
function WideBlock:__init(cin, cout, stride, temb_dim, o)
  nn.Module.__init(self)
  local g = {generator = o.generator}
  self.bn1 = nn.BatchNorm2d(cin)
  self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, g)
  self.dense = L.dense(temb_dim, cout, g)
  self.drop = nn.Dropout(o.dropout or 0, g)
  self.bn2 = nn.BatchNorm2d(cout)
  self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, g)
  if stride ~= 1 or cin ~= cout then self.shortcut = nn.Conv2d(cin, cout, 1, stride, 0, g) end
end
function WideBlock:forward(x, temb)
  local h = self.conv1(self.bn1:forward_relu(x), self.dense(temb:silu())) -- + the time's projection per image
  -- + the shortcut in conv2's output pass
  return self.conv2:forward_residual(self.bn2:forward_relu(self.drop(h)), self.shortcut and self.shortcut(x) or x)
end

local WRN = class('WRNEncoder', nn.Module)
M.WRNEncoder = WRN
function WRN:__init(o)
  nn.Module.__init(self)
  o = o or {}
  local depth, k = o.depth or 28, o.widen or 2
  if (depth - 4) % 6 ~= 0 then error("WRNEncoder: depth must be 6n + 4 (10, 16, 22, 28, ...), got " .. depth, 2) end
  local n = (depth - 4) // 6
  local widths = k == 0 and {16, 32, 64, 2} or {16, 16 * k, 32 * k, 64 * k}
  local latent = o.latent or widths[4]
  if latent < 1 then error("WRNEncoder: latent size must be at least 1, got " .. latent, 2) end
  self.latent, self.probabilistic, self.feat_dim = latent, o.probabilistic ~= false, widths[4]
  self.sde = o.sde or SDE.new(o)
  local g = {generator = o.generator}
  self.temb = L.FourierTimeEmbedding(16, g)
  self.coords = o.coords and true or false
  self.conv1 = nn.Conv2d((o.channels or 3) + (self.coords and 2 or 0), widths[1], 3, 1, 1, g)
  local blocks, cin = {}, widths[1]
  for s = 1, 3 do
    for i = 1, n do
      blocks[#blocks + 1] = WideBlock(cin, widths[s + 1], i == 1 and (s == 1 and 1 or 2) or 1, self.temb.dim,
        {dropout = o.dropout, generator = o.generator})
      cin = widths[s + 1]
    end
  end
  self.blocks = nn.ModuleList(blocks)
  self.bn = nn.BatchNorm2d(widths[4], 1e-5, 0.9)
  if self.probabilistic then
    self.head = nn.Linear(widths[4], 2 * latent, g)
  elseif latent ~= widths[4] then
    self.head = nn.Linear(widths[4], latent, g)
  end
end

-- (B, 2, H, W): column and row of every pixel in [-1, 1]
local function coord_planes(B, H, W)
  local xs = T.linspace(-1, 1, W):view(1, 1, 1, W):expand(B, 1, H, W)
  local ys = T.linspace(-1, 1, H):view(1, 1, H, 1):expand(B, 1, H, W)
  return T.cat({xs, ys}, 2)
end

function WRN:forward(x, t)
  local temb = self.temb(self.sde:log_sigma(t))
  if self.coords then
    -- the planes depend only on the batch's shape: made once per shape, not every step
    local B, H, W = x:size(1), x:size(3), x:size(4)
    local c = rawget(self, "_coord_cache")
    if not (c and c.B == B and c.H == H and c.W == W) then
      c = {B = B, H = H, W = W, planes = coord_planes(B, H, W):contiguous()}
      rawset(self, "_coord_cache", c)
    end
    x = T.cat({x, c.planes}, 2)
  end
  local h = self.conv1(x)
  for _, b in ipairs(self.blocks) do h = b(h, temb) end
  local feat = self.bn:forward_relu(h):mean({3, 4})
  if self.probabilistic then
    local p = self.head(feat):chunk(2, 2)
    return {z = p[1], mu = p[1], logvar = p[2], feat = feat}
  end
  return {z = self.head and self.head(feat) or feat, feat = feat}
end

return M
