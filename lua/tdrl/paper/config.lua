-- The pipeline's settings: one complete table per mode, overridable from the command line.
--   local C = require 'tdrl.paper.config'
--   local cfg = C.config(arg)              -- --quick, --full, --mode=standard, --head_epochs=50
--   local dcfg = C.diffusion_config(cfg)   -- the preset with cfg's diffusion_<k> fields applied
local D = require 'tdrl.diffusion'

local P = {}

-- Settings of the whole pipeline, one complete table per mode: a mode is exactly what its table
-- says (no key falls through from another mode), and any key can be overridden on the command
-- line (--head_epochs=50). Keys diffusion_<k> set field k of the diffusion preset (iters, batch,
-- lr, warmup, enc_depth, ...). head_patience 0 and mine_iters 0 mean: no early stopping, and
-- MINE's own budget (100 x N / 256 iterations).
--   quick:    a smoke run of every stage (<= 3 min)
--   default:  the recipe scaled to <= 30 min on 2 cores (what `make reproduce` runs); the
--             encoder gets coordinate channels, without which location stays at chance
--             (docs/science.md)
--   standard: <= 4 hours on 2 cores, resumable, aiming at all five findings
--   full:     the reference's settings (days on a CPU)
-- lt_*: the learned query times study (tdrl.paper.learned_times), a stage of reproduce.lua where
-- learned_times is true (not in default: its heads do not fit the 30 minutes).
-- control: the heads again on the trajectories of the VDRL model as initialised (C0: what training
-- added to the code; docs/science.md shows that an untrained encoder's features already hold
-- foreground, location and shape). Not in default: a second heads stage does not fit the 30
-- minutes (--control=true adds it).
local ALL_LRS = {1e-3, 7.5e-4, 5e-4, 2.5e-4, 1e-4, 5e-5}
P.modes = {
  quick = {preset = "tiny", diffusion_iters = 40, diffusion_batch = 16, diffusion_lr = 1e-3, diffusion_warmup = 10,
    diffusion_eval_every = 20, diffusion_ckpt_every = 20, diffusion_enc_depth = 10, diffusion_enc_coords = false,
    n_train = 600, n_val = 200, n_test = 200, granularity = 10,
    head_epochs = 3, head_epochs_seq = 2, head_patience = 0, head_standardize = true, head_lrs = {1e-3},
    head_lrs_seq = {1e-3}, head_seeds = 1, head_seeds_seq = 1,
    mine_iters = 15, mine_lr = 1e-3, mine_seeds = 1, mine_measure = "linfoot", attn_seeds = 1,
    lt_Ks = {1, 2}, lt_seeds = 1, lt_reader = "mlp", lt_epochs = 3, lt_patience = 2, lt_time_lr = 0.02, lt_grid = 10,
    learned_times = true, control = true,
    granularities = {1, 2, 5}, gran_latent = 2},
  default = {preset = "tiny", diffusion_iters = 2000, diffusion_batch = 32, diffusion_lr = 1e-3, diffusion_warmup = 100,
    diffusion_eval_every = 250, diffusion_ckpt_every = 250, diffusion_enc_depth = 10, diffusion_enc_coords = true,
    n_train = 4000, n_val = 500, n_test = 1000, granularity = 10,
    head_epochs = 300, head_epochs_seq = 100, head_patience = 15, head_standardize = true, head_lrs = {1e-3},
    head_lrs_seq = {1e-3}, head_seeds = 2, head_seeds_seq = 2,
    mine_iters = 400, mine_lr = 1e-3, mine_seeds = 2, mine_measure = "linfoot", attn_seeds = 2,
    lt_Ks = {1, 2, 3, 5}, lt_seeds = 3, lt_reader = "mlp", lt_epochs = 300, lt_patience = 20, lt_time_lr = 0.02,
    lt_grid = 50, learned_times = false, control = false,
    granularities = {1, 2, 5, 10}, gran_latent = 2},
  standard = {preset = "tiny", diffusion_iters = 8000, diffusion_batch = 32, diffusion_lr = 1e-3, diffusion_warmup = 100,
    diffusion_eval_every = 500, diffusion_ckpt_every = 250, diffusion_enc_depth = 10, diffusion_enc_coords = true,
    n_train = 4000, n_val = 500, n_test = 1000, granularity = 10,
    head_epochs = 1500, head_epochs_seq = 600, head_patience = 100, head_standardize = true, head_lrs = {1e-3, 3e-4},
    head_lrs_seq = {1e-3}, head_seeds = 3, head_seeds_seq = 3,
    mine_iters = 0, mine_lr = 1e-3, mine_seeds = 3, mine_measure = "linfoot", attn_seeds = 3,
    lt_Ks = {1, 2, 3, 5}, lt_seeds = 3, lt_reader = "mlp", lt_epochs = 1500, lt_patience = 50, lt_time_lr = 0.02,
    lt_grid = 50, learned_times = true, control = true,
    granularities = {1, 2, 5, 10, 25, 50}, gran_latent = 2},
  full = {preset = "small", diffusion_iters = 250000, diffusion_batch = 100, diffusion_lr = 2e-4, diffusion_warmup = 5000,
    diffusion_eval_every = 1000, diffusion_ckpt_every = 1000, diffusion_enc_depth = 28, diffusion_enc_coords = false,
    n_train = 4000, n_val = 500, n_test = 1000, granularity = 10,
    head_epochs = 1500, head_epochs_seq = 1500, head_patience = 0, head_standardize = false, head_lrs = ALL_LRS,
    head_lrs_seq = ALL_LRS, head_seeds = 3, head_seeds_seq = 5,
    mine_iters = 0, mine_lr = 1e-4, mine_seeds = 5, mine_measure = "reference", attn_seeds = 5,
    lt_Ks = {1, 2, 3, 5}, lt_seeds = 5, lt_reader = "mlp", lt_epochs = 1500, lt_patience = 50, lt_time_lr = 0.02,
    lt_grid = 50, learned_times = true, control = true,
    granularities = {2, 5, 7, 10, 17, 25, 37, 50}, gran_latent = 2},
}

--- the settings of a mode with command-line overrides (argv): cfg, positional arguments.
--- The mode is --quick, --full or --mode=<name>; every other option must be a key of the modes.
function P.config(argv, extra)
  local args = require 'tdrl.util.args'
  local mode = "default"
  local rest = {}
  for _, a in ipairs(argv or {}) do
    local m = a:match("^%-%-mode=(%w+)$")
    if a == "--quick" then mode = "quick" elseif a == "--full" then mode = "full"
    elseif m then mode = m
    else rest[#rest + 1] = a end
  end
  if not P.modes[mode] then
    local names = {}
    for k in pairs(P.modes) do names[#names + 1] = k end
    table.sort(names)
    error("unknown mode '" .. mode .. "' (" .. table.concat(names, ", ") .. ")", 0)
  end
  local defaults = {dataset = "synthetic", data_dir = "", out = "", seed = 0}
  for k, v in pairs(extra or {}) do defaults[k] = v end
  for k, v in pairs(P.modes[mode]) do defaults[k] = v end
  local cfg, pos = args.parse(rest, defaults)
  cfg.mode = mode
  return cfg, pos
end

--- the diffusion config of cfg's preset with cfg's diffusion_<k> fields applied
function P.diffusion_config(cfg)
  local dcfg = D.presets.get(cfg.preset)
  for k in pairs(D.presets.get(cfg.preset)) do
    if cfg["diffusion_" .. k] ~= nil then dcfg[k] = cfg["diffusion_" .. k] end
  end
  return dcfg
end

return P
