-- Section 3.1 / Figure 1: how much of each task a single point of the trajectory holds,
-- against heads that read the whole trajectory.
--
--   ./tdrl examples/downstream.lua                    # Synthetic, tiny VDRL, ~10 min
--   ./tdrl examples/downstream.lua --quick            # a smoke run
--   ./tdrl examples/downstream.lua --dataset=cmnist --encoder=drl --out=runs/cm
--
-- Trains (or resumes) the diffusion model, extracts trajectories at granularity g (default 10:
-- t = 0, 0.1, ..., 1), then for every task trains an MLP on each single point and a GRU and a
-- Transformer on the whole trajectory (the paper's protocol: learning rate chosen on validation,
-- test accuracy at the best validation epoch, several seeds). Writes heads-<name>.csv / .json and
-- figure1-<name>-<task>.png (MLP accuracy against t with a min-max band over seeds; GRU and
-- Transformer as dashed lines) into the run folder.
local P = require 'tdrl.paper'

local cfg = P.config(arg, {encoder = "vdrl", latent = 16})
local dir = P.run_dir(cfg.out ~= "" and cfg.out or ("runs/downstream-" .. cfg.dataset))
local sets = P.sets(cfg)
local model, _, dcfg, mdir = P.model(cfg, dir, cfg.encoder, {encoder = cfg.encoder, latent = cfg.latent}, sets)
local tr = P.trajectories(model, sets, cfg.granularity, dir, cfg.encoder,
  {checkpoint = mdir .. "/checkpoint.safetensors", step = dcfg.iters, config = dcfg})
local h = P.heads(tr, cfg, dir, cfg.encoder)
P.figure1(h, dir, cfg.encoder)
print(string.format("\n%-12s %-22s %10s %10s %12s", "task", "best point (on val.)", "MLP", "GRU", "Transformer"))
for _, task in ipairs(h.tasks) do
  local b = P.heads_summary(h)[task]
  print(string.format("%-12s t = %-18.2f %10.3f %10.3f %12.3f", task, b.best.t, b.best.test_median,
    b.gru and b.gru.test_median or 0 / 0, b.transformer and b.transformer.test_median or 0 / 0))
end
print("\nresults: " .. dir .. "/heads-" .. cfg.encoder .. ".csv, figures: " .. dir .. "/figure1-*.png")
