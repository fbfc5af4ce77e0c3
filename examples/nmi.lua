-- Section 3.2 / Figure 2: how much information the codes at two times share. MINE estimates
-- I(z_ti; z_tj) for every pair of time points (trained on the training codes, read out on the test
-- codes); the matrix shows Linfoot's r = sqrt(1 - exp(-2 I)) (or, with --mine_measure=reference,
-- the paper's NMI = I / sqrt(H_i H_j) with H = MINE(z, z)). A matrix concentrated near its
-- diagonal means that each part of the trajectory holds information the far parts do not.
--
--   ./tdrl examples/nmi.lua [--quick] [--dataset=cmnist] [--mine_seeds=5] [--out=DIR]
--
-- Writes nmi-<name>.png (heatmap with a colour bar) and nmi-<name>.json (the matrix per seed and
-- averaged, MI in nats, per-lag means, the mean of the near-diagonal and of the far cells).
local P = require 'tdrl.paper'

local cfg = P.config(arg, {encoder = "vdrl", latent = 16})
local dir = P.run_dir(cfg.out ~= "" and cfg.out or ("runs/analysis-" .. cfg.dataset))
local sets = P.sets(cfg)
local model = P.model(cfg, dir, cfg.encoder, {encoder = cfg.encoder, latent = cfg.latent}, sets)
local tr = P.trajectories(model, sets, cfg.granularity, dir, cfg.encoder)
local r = P.nmi(tr, cfg, dir, cfg.encoder)
print(string.format("NMI near the diagonal (|i - j| = 1): %.3f; farther away: %.3f", r.near_diagonal, r.far_from_diagonal))
print("figure: " .. dir .. "/" .. r.figure)
