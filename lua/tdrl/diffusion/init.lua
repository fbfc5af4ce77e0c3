-- tdrl.diffusion: diffusion-based representation learning (section 2 of the paper).
--   local D = require 'tdrl.diffusion'
--   local cfg = D.presets.resolve({preset = "tiny", latent = 2, encoder = "drl"})
--   local model = D.build(cfg)          -- NCSN++ score net with a WRN encoder (or none)
--   local loss = D.loss.dsm(model, x0, {lambda_z = cfg.lambda_z})
local D = {}
D.SDE = require 'tdrl.diffusion.sde'
D.layers = require 'tdrl.diffusion.layers'
D.NCSNpp = require('tdrl.diffusion.ncsnpp').NCSNpp
D.WRNEncoder = require('tdrl.diffusion.wrn').WRNEncoder
D.loss = require 'tdrl.diffusion.loss'
D.presets = require 'tdrl.diffusion.presets'

--- build(cfg [, generator]) -> the score model; cfg.encoder: "vdrl" | "drl" | "none"
function D.build(cfg, gen)
  if type(cfg) ~= "table" then error("diffusion.build: expected a configuration table, got " .. type(cfg), 2) end
  local sde = D.SDE.new(cfg)
  local enc
  if cfg.encoder ~= "none" and cfg.encoder ~= false then
    if cfg.encoder ~= "vdrl" and cfg.encoder ~= "drl" then
      error("build: encoder must be vdrl, drl or none, got " .. tostring(cfg.encoder), 2)
    end
    enc = D.WRNEncoder({depth = cfg.enc_depth, widen = cfg.enc_widen, latent = cfg.latent,
      probabilistic = cfg.encoder == "vdrl", channels = cfg.channels, coords = cfg.enc_coords, sde = sde,
      generator = gen})
  end
  return D.NCSNpp(cfg, {encoder = enc, sde = sde, generator = gen})
end

return D
