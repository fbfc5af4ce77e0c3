-- The training steps the benchmarks time and profile (bench/models_tdrl.lua, bench/profile.lua):
-- each builder returns step() and what the caller may need beside it.
local T = require 'tdrl'

local M = {}

--- one VDRL training step of the preset (tiny | small) at batch B (default 100) on 32x32x3:
--- forward, backward, clipping, Adam. Returns step, model
function M.dsm(preset, B)
  B = B or 100
  local D = require 'tdrl.diffusion'
  local optim = require 'tdrl.optim'
  local g = T.Generator(0)
  local model = D.build(D.presets.resolve({preset = preset, batch = B}), g)
  local opt = optim.Adam(model:parameters(), {lr = 2e-4})
  local x0 = T.rand(B, 3, 32, 32, g)
  return function()
    opt:zero_grad()
    local loss = D.loss.dsm(model, x0, {generator = g})
    loss:backward()
    optim.clip_grad_norm_(model, 1.0)
    opt:step()
  end, model
end

--- a head (mlp | gru | transformer) on (N x 11 x 128) trajectories at batch 256, 10 classes:
--- step(xb, yb) trains on one batch (the MLP reads the first point); g seeds its initialisation.
--- Returns step, head
function M.head(kind, g)
  local heads = require 'tdrl.heads'
  local optim = require 'tdrl.optim'
  local F = require('tdrl.nn').F
  local h = heads.new(kind, 128, 10, {generator = g or T.Generator(0)})
  h:train()
  local opt = optim.Adam(h:parameters(), {lr = 1e-3, weight_decay = 1e-5})
  local times = T.linspace(0, 1, 11)
  return function(xb, yb)
    if kind == "mlp" then xb = xb:narrow(2, 1, 1) end
    opt:zero_grad()
    local loss = F.cross_entropy(h(xb, times), yb)
    loss:backward()
    if kind ~= "mlp" then optim.clip_grad_norm_(h, 1.0) end
    opt:step()
  end, h
end

return M
