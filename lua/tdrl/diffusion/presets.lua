-- Named model / training presets; any field can be overridden (`--latent=2 --iters=2000`).
--   small: the reference's NCSN++ small with a WRN-28-2 encoder, latent 128 (the paper's runs)
--   tiny:  for a few minutes on two CPU cores (the default for Synthetic): NCSN++ with 3 levels
--          (32, 16, 8 px), 1 block per level, no attention, nf 16, and a WRN-10-1 encoder with
--          latent 16 (the same network as the PyTorch peer's `tiny`, so benchmarks compare)
local M = {}

local common = {
  image_size = 32, channels = 3, sigma_min = 0.01, sigma_max = 50, eps_t = 1e-5,
  encoder = "vdrl",        -- vdrl | drl | none (the unconditioned baseline)
  enc_coords = false,      -- true: coordinate channels into the encoder (see wrn.lua)
  cond = "bias",           -- how temb enters a ResBlock: bias (the reference) | scale_shift (layers.lua)
  t_mid_frac = 0, t_mid_lo = 0.25, t_mid_hi = 0.65, -- > 0: more training times mid-trajectory (sde.lua)
  lambda_z = 1e-5, regulariser = "auto", -- auto: KL for vdrl, L1 for drl; "none" turns it off
  lr = 2e-4, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8, warmup = 5000, grad_clip = 1.0,
  ema = 0.999, batch = 100, seed = 0,
  eval_every = 1000, eval_batches = 4, ckpt_every = 1000, log_every = 50, sample_every = 0,
  -- under mpirun (tdrl.data_parallel): noise streams per rank ("rank") or the global batch's
  -- drawn on every rank ("global", the steps of one process), BatchNorm statistics over ranks,
  -- gradients all-reduced during the backward (false: after it) in buckets of this many MB
  dist_noise = "rank", sync_bn = false, dist_overlap = true, dist_bucket_mb = 25,
}

M.small = {
  nf = 16, ch_mult = {1, 2, 2, 2}, num_res_blocks = 2, attn_resolutions = {16}, mid_attn = true,
  dropout = 0.1, enc_depth = 28, enc_widen = 2, latent = 128, iters = 250000,
}

M.tiny = {
  nf = 16, ch_mult = {1, 2, 2}, num_res_blocks = 1, attn_resolutions = {}, mid_attn = false,
  dropout = 0.1, enc_depth = 10, enc_widen = 1, latent = 16, iters = 1500, warmup = 100,
  batch = 64, eval_every = 250, ckpt_every = 250, lr = 1e-3,
}

--- preset name -> a fresh config table (common settings + the preset's)
function M.get(name)
  local p = M[name or "tiny"]
  if type(p) ~= "table" then error("unknown preset '" .. tostring(name) .. "' (tiny or small)", 2) end
  local cfg = {preset = name or "tiny"}
  for k, v in pairs(common) do cfg[k] = v end
  for k, v in pairs(p) do cfg[k] = v end
  return cfg
end

--- the preset named by overrides.preset, with every other field of overrides applied
function M.resolve(overrides)
  local cfg = M.get(overrides and overrides.preset)
  for k, v in pairs(overrides or {}) do cfg[k] = v end
  return cfg
end

return M
