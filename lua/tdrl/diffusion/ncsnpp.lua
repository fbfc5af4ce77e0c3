-- NCSN++ score network for the VE SDE, conditioned on sigma(t) and on the encoder's code z
-- (the reference's "NCSN++ small" and our smaller presets). Parameter names and shapes follow
-- the PyTorch peer in ../shared/peer/models.py, module by module.
--
--   net = NCSNpp(cfg, {encoder = WRNEncoder(...)})    -- or {encoder = false}: the baseline
--   out = net(x_t, t, {x0 = x0})   -- out.output (B,C,H,W) = score; out.z, out.mu, out.logvar
--   out = net(x_t, t, {z = z})     -- conditioned on a given code (for sampling)
--
-- temb = [time embedding (4nf), Linear(z) (4nf)] feeds every residual block; z_dec =
-- SiLU-MLP(temb) reshaped to (2nf, L, L) is concatenated to the bottleneck (L: its side).
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local L = require 'tdrl.diffusion.layers'
local SDE = require 'tdrl.diffusion.sde'
local class = nn.class

local M = {}
local SQRT2 = math.sqrt(2)

local function resolutions(cfg)
  local res = {}
  for i = 1, #cfg.ch_mult do res[i] = cfg.image_size >> (i - 1) end
  return res
end

local function has(list, v)
  for _, x in ipairs(list or {}) do if x == v then return true end end
  return false
end

--- UpPath(cfg, in_ch, temb_dim, skip_chs): middle (Res, [Attn], Res), then per level
--- num_res_blocks + 1 ResBlocks (each concatenating a stored skip), [Attn], an up-ResBlock;
--- then GN, SiLU, conv3x3 to the image channels.
local UpPath = class('UpPath', nn.Module)
M.UpPath = UpPath
function UpPath:__init(cfg, in_ch, temb_dim, skip_chs, o)
  nn.Module.__init(self)
  local nf, mult, nrb = cfg.nf, cfg.ch_mult, cfg.num_res_blocks
  local res = resolutions(cfg)
  local function Rb(i, out, extra)
    local ro = {dropout = cfg.dropout, cond = cfg.cond, generator = o.generator}
    for k, v in pairs(extra or {}) do ro[k] = v end
    return L.ResBlock(i, out, temb_dim, ro)
  end
  self.mid1 = Rb(in_ch)
  if cfg.mid_attn then self.mid_attn = L.AttnBlock(in_ch, o) end
  self.mid2 = Rb(in_ch)
  local skips = {}
  for i, c in ipairs(skip_chs) do skips[i] = c end
  self.levels = nn.ModuleList()
  local ch = in_ch
  for lvl = #mult, 1, -1 do
    local m = nn.Module()
    local blocks = {}
    for _ = 1, nrb + 1 do
      local extra = table.remove(skips)
      blocks[#blocks + 1] = Rb(ch + extra, nf * mult[lvl])
      ch = nf * mult[lvl]
    end
    m.blocks = nn.ModuleList(blocks)
    if has(cfg.attn_resolutions, res[lvl]) then m.attn = L.AttnBlock(ch, o) end
    if lvl ~= 1 then m.up = Rb(ch, nil, {up = true}) end
    self.levels:append(m)
  end
  assert(#skips == 0, "UpPath: skip channels left over")
  self.gn_out = L.group_norm(ch)
  self.conv_out = L.conv3x3(ch, cfg.channels, {init_scale = 0, generator = o.generator})
end

function UpPath:forward(h, temb, hs)
  h = self.mid1(h, temb)
  if self.mid_attn then h = self.mid_attn(h) end
  h = self.mid2(h, temb)
  for _, m in ipairs(self.levels) do
    for _, b in ipairs(m.blocks) do
      h = b(T.cat({h, table.remove(hs)}, 2), temb)
    end
    if m.attn then h = m.attn(h) end
    if m.up then h = m.up(h, temb) end
  end
  return self.conv_out(L.gn_silu(self.gn_out, h))
end

local NCSNpp = class('NCSNpp', nn.Module)
M.NCSNpp = NCSNpp

--- NCSNpp(cfg, {encoder = module or false, sde = VESDE, generator = g})
--- cfg: image_size, channels, nf, ch_mult, num_res_blocks, attn_resolutions, mid_attn, dropout,
--- latent (the code size the encoder produces), cond (bias | scale_shift, layers.lua's ResBlock)
function NCSNpp:__init(cfg, o)
  nn.Module.__init(self)
  o = o or {}
  self.cfg = cfg
  self.sde = o.sde or SDE.new(cfg)
  local nf, mult, nrb, C = cfg.nf, cfg.ch_mult, cfg.num_res_blocks, cfg.channels
  local res = resolutions(cfg)
  self.temb = L.FourierTimeEmbedding(nf, {generator = o.generator})
  local temb_dim = 4 * nf
  if o.encoder then
    self.encoder = o.encoder
    self.latent_to_temb = nn.Linear(cfg.latent, 4 * nf, {generator = o.generator})
    temb_dim = temb_dim * 2
    self.L = res[#res]
    local w = 2 * nf * self.L
    self.z_dec = nn.ModuleList({nn.Linear(temb_dim, w, {generator = o.generator}),
      nn.Linear(w, w, {generator = o.generator}), nn.Linear(w, w * self.L, {generator = o.generator})})
  end
  local function Rb(i, out, extra)
    local ro = {dropout = cfg.dropout, cond = cfg.cond, generator = o.generator}
    for k, v in pairs(extra or {}) do ro[k] = v end
    return L.ResBlock(i, out, temb_dim, ro)
  end
  self.conv_in = L.conv3x3(C, nf, {generator = o.generator})
  local hs_c = {nf}
  local ch, pyr_ch = nf, C
  self.down = nn.ModuleList()
  for lvl = 1, #mult do
    local m = nn.Module()
    local blocks, attns = {}, {}
    for _ = 1, nrb do
      blocks[#blocks + 1] = Rb(ch, nf * mult[lvl])
      ch = nf * mult[lvl]
      attns[#attns + 1] = has(cfg.attn_resolutions, res[lvl]) and L.AttnBlock(ch, o) or nn.Identity()
      hs_c[#hs_c + 1] = ch
    end
    m.blocks, m.attns = nn.ModuleList(blocks), nn.ModuleList(attns)
    if lvl ~= #mult then
      m.downsample = Rb(ch, nil, {down = true})
      m.pyramid = L.PyramidDown(pyr_ch, ch, o)
      pyr_ch = ch
      hs_c[#hs_c + 1] = ch
    end
    self.down:append(m)
  end
  local mid_ch = hs_c[#hs_c] * (o.encoder and 2 or 1)
  self.up = UpPath(cfg, mid_ch, temb_dim, hs_c, o)
end

--- the code of x0 at times t: z, mu, logvar (mu, logvar nil for a deterministic encoder).
--- VDRL samples z = mu + eps exp(logvar / 2) in both modes, as the reference does, so that the
--- evaluation loss is the training objective; trajectories and conditional sampling read mu.
function NCSNpp:encode(x0, t, gen)
  local e = self.encoder(x0, t)
  local z = e.z
  if e.mu then
    z = e.mu + T.randn(e.logvar:size(), gen) * (e.logvar * 0.5):exp()
  end
  return z, e.mu, e.logvar
end

--- forward(x_t (B,C,H,W), t (B), {x0 = clean images | z = code, generator = g})
function NCSNpp:forward(x, t, o)
  o = o or {}
  local B = x:size(1)
  local log_sigma = self.sde:log_sigma(t)
  local temb = self.temb(log_sigma)
  local out = {}
  if self.encoder then
    local z = o.z
    if not z then
      if not o.x0 then error("NCSNpp: a model with an encoder needs {x0 = images} or {z = codes}", 2) end
      out.z, out.mu, out.logvar = self:encode(o.x0, t, o.generator)
      z = out.z
    else
      out.z = z
    end
    temb = T.cat({temb, self.latent_to_temb(z)}, 2)
  end
  local pyr = x
  local hs = {self.conv_in(x)}
  for _, m in ipairs(self.down) do
    local blocks, attns = m.blocks, m.attns
    for i, b in ipairs(blocks) do hs[#hs + 1] = attns[i](b(hs[#hs], temb)) end
    if m.downsample then
      local h = m.downsample(hs[#hs], temb)
      pyr = (m.pyramid(pyr) + h) * (1 / SQRT2)
      hs[#hs + 1] = pyr
    end
  end
  local h = hs[#hs]
  if self.encoder then
    local zd = temb
    for _, lin in ipairs(self.z_dec) do zd = lin(zd):silu() end
    h = T.cat({h, zd:view(B, 2 * self.cfg.nf, self.L, self.L)}, 2)
  end
  h = self.up(h, temb, hs)
  out.output = h / log_sigma:exp():view(B, 1, 1, 1)
  return out
end

return M
