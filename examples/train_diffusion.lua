-- Train a diffusion model with a time-conditioned encoder (section 2 of the paper).
--
--   ./tdrl examples/train_diffusion.lua                          # tiny VDRL on Synthetic
--   ./tdrl examples/train_diffusion.lua --encoder=drl --latent=2 --iters=2000
--   ./tdrl examples/train_diffusion.lua --encoder=none           # the unconditioned baseline
--   ./tdrl examples/train_diffusion.lua --preset=small --dataset=cmnist --out=runs/cm
--
-- Every preset field can be overridden (see lua/tdrl/diffusion/presets.lua). The run folder
-- (--out, default runs/diffusion-<dataset>-<encoder>) gets config.json, metrics.csv / .jsonl,
-- checkpoint.safetensors and samples.png (conditional samples: each row is a test image, then
-- samples conditioned on its code at t = 0.1, 0.5 and 0.9). Ctrl-C saves a checkpoint; running
-- the same command again resumes. `mpirun -np N ./tdrl examples/train_diffusion.lua ...` trains
-- data-parallel over N ranks (README: "On a cluster"); rank 0 writes and prints.
local T = require 'tdrl'
local D = require 'tdrl.diffusion'
local P = require 'tdrl.paper'
local trainer = require 'tdrl.diffusion.trainer'
local sampler = require 'tdrl.diffusion.sampler'
local args = require 'tdrl.util.args'
local main = require('tdrl.dist').is_main()
local print = main and print or function() end

local cfg = args.with_preset(arg, D.presets.get,
  {dataset = "synthetic", out = "", data_dir = "", samples = true, sample_steps = 200})
local out = cfg.out ~= "" and cfg.out or string.format("runs/diffusion-%s-%s", cfg.dataset, cfg.encoder)

local train, val, test = P.datasets(cfg.dataset, {data_dir = cfg.data_dir ~= "" and cfg.data_dir or nil})
local X = P.images(train)
local Xv = P.images(val)
cfg.channels, cfg.image_size = X:size(2), X:size(3)
print(string.format("%s: %d training images %s, model %s / encoder %s, latent %d, %d steps of batch %d",
  cfg.dataset, X:size(1), table.concat(X:size(), "x", 2), cfg.preset, cfg.encoder, cfg.latent, cfg.iters, cfg.batch))
local model, summary = trainer.run(cfg, {train = X, eval = Xv}, {out = out})
print(string.format("final training loss %.2f, evaluation loss (EMA weights) %.2f, %.0f s",
  summary.loss or 0, summary.eval_loss or 0, summary.seconds or 0))
if cfg.samples and model.encoder and main then
  local imgs = P.images(test):narrow(1, 1, 6)
  sampler.conditional_grid(model, imgs, {0.1, 0.5, 0.9}, out .. "/samples.png", {steps = cfg.sample_steps})
  print("conditional samples: " .. out .. "/samples.png")
end
print("run folder: " .. out)
