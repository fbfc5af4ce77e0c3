-- How decodable each factor is as diffusion training goes on: a probe curve per task.
-- For every model seed the diffusion model is trained to each step count in turn (resuming from
-- the previous one), its trajectories are extracted, and probe heads trained to convergence
-- (early stopping on validation) read them: an MLP at every time point and a GRU over the whole
-- trajectory. The curve is the best probe's test accuracy per task, with its spread over seeds.
--
--   ./tdrl examples/probe_curve.lua                                   # VDRL, latent 16, 2 seeds
--   ./tdrl examples/probe_curve.lua --encoder=drl --steps=1000,2000,4000,8000,16000,32000
--   ./tdrl examples/probe_curve.lua --enc_depth=16 --out=runs/probe-wrn16   # any preset field
--   ./tdrl examples/probe_curve.lua --checkpoint=runs/diffusion-synthetic-vdrl  # probe a trained run
--                                   [--ema_weights]   # with the EMA of its weights
--
-- Writes <out>/probe_curve.csv (one row per step, seed, task and probe), <out>/curve.csv (per step
-- and task: the best probe's mean, min and max over seeds, and chance) and <out>/probe_curve.png.
-- Everything is resumable: rerun the same command after an interruption and finished steps are
-- read back from <out>/seed<s>/step<n>/probe.json.
local T = require 'tdrl'
local D = require 'tdrl.diffusion'
local P = require 'tdrl.paper'
local args = require 'tdrl.util.args'
local json = require 'tdrl.json'
local fs = require 'tdrl.util.fs'

local cfg = args.with_preset(arg, D.presets.get, {dataset = "synthetic", out = "", data_dir = "",
  steps = {1000, 2000, 4000, 8000}, seeds = {0, 1}, granularity = 10, probe_heads = {"mlp", "gru"},
  probe_epochs = 1500, probe_patience = 100, probe_lr = 1e-3, n_train = 4000, n_val = 500, n_test = 1000,
  checkpoint = "", ema_weights = false})
if type(cfg.steps) ~= "table" then cfg.steps = {cfg.steps} end
if type(cfg.seeds) ~= "table" then cfg.seeds = {cfg.seeds} end
if type(cfg.probe_heads) ~= "table" then cfg.probe_heads = {cfg.probe_heads} end
table.sort(cfg.steps)
local out = cfg.out ~= "" and cfg.out or string.format("runs/probe-%s-%s-latent%d", cfg.dataset, cfg.encoder, cfg.latent)
fs.mkdir(out)
P.write_result(out, "probe_config", cfg)
local sets = P.sets(cfg)
print(string.format("probe curve: %s, %s encoder (WRN-%d-%d), latent %d, batch %d, steps %s, seeds %s -> %s",
  cfg.dataset, cfg.encoder, cfg.enc_depth, cfg.enc_widen, cfg.latent, cfg.batch, table.concat(cfg.steps, ","),
  table.concat(cfg.seeds, ","), out))

local pcfg = {heads = cfg.probe_heads, epochs = cfg.probe_epochs, patience = cfg.probe_patience, lr = cfg.probe_lr}

local function print_probe(r, label)
  for _, task in ipairs(r.tasks) do
    local b = r.best[task]
    print(string.format("  %s %-11s best %.3f (%s%s) chance %.3f", label, task, b.test, b.head,
      b.t and string.format(" at t = %.2f", b.t) or "", r.chance[task]))
  end
end

-- one trained run folder (config.json + checkpoint.safetensors), probed where it stands
if cfg.checkpoint ~= "" then
  local dcfg = json.decode(assert(fs.read(cfg.checkpoint .. "/config.json"), "no config.json in " .. cfg.checkpoint))
  dcfg.iters = require('tdrl.checkpoint').load(cfg.checkpoint .. "/checkpoint.safetensors").step
  local model, summary = P.train_model(dcfg, sets, cfg.checkpoint, "load")
  -- the reference extracts codes with the raw weights; --ema_weights reads the EMA's instead
  if cfg.ema_weights then summary.ema:copy_to() end
  local pdir = string.format("%s/probe-step%d%s", cfg.checkpoint, dcfg.iters, cfg.ema_weights and "-ema" or "")
  fs.mkdir(pdir)
  local tr = P.trajectories(model, sets, cfg.granularity, pdir, dcfg.encoder,
    {checkpoint = cfg.checkpoint .. "/checkpoint.safetensors"})
  local r = P.probe(tr, pcfg)
  r.steps = dcfg.iters
  P.write_result(pdir, "probe", r)
  print_probe(r, string.format("step %d", dcfg.iters))
  print("probe: " .. pdir .. "/probe.json")
  return
end
local results = {}
-- step-major: every seed reaches a step count before any goes further, so an interrupted run has
-- the early part of the curve for all seeds
for _, steps in ipairs(cfg.steps) do
  for _, seed in ipairs(cfg.seeds) do
    local sdir = string.format("%s/seed%d", out, seed)
    local pdir = string.format("%s/step%d", sdir, steps)
    local marker = pdir .. "/probe.json"
    local r = fs.exists(marker) and json.decode(fs.read(marker))
    if not r then
      local dcfg = {}
      for k in pairs(D.presets.get(cfg.preset)) do dcfg[k] = cfg[k] end
      dcfg.iters, dcfg.seed = steps, seed
      local model = P.train_model(dcfg, sets, sdir .. "/model", string.format("seed %d to step %d", seed, steps))
      fs.mkdir(pdir)
      local tr = P.trajectories(model, sets, cfg.granularity, pdir, cfg.encoder,
        {checkpoint = sdir .. "/model/checkpoint.safetensors"})
      r = P.probe(tr, pcfg)
      r.steps, r.seed = steps, seed
      P.write_result(pdir, "probe", r)
      -- the codes are the bulky part and are recomputable from the curve's checkpoints
      for _, split in ipairs({"train", "val", "test"}) do
        os.remove(string.format("%s/traj-%s-g%d-%s.safetensors", pdir, cfg.encoder, cfg.granularity, split))
      end
    end
    results[#results + 1] = r
    print_probe(r, string.format("step %6d seed %d", steps, seed))
  end
end
P.write_probe_curve(results, out, string.format("%s %s, latent %d", cfg.dataset, cfg.encoder, cfg.latent))
print("probe curve: " .. out .. "/probe_curve.png")
