-- Run by dist_spec.lua, under mpirun or alone: a few steps of a small diffusion model (the
-- trainer's own loop) on fixed random images; rank 0 saves the weights and buffers to SAVE.
--   train.lua SAVE encoder=none|drl sync_bn=true noise=global iters=3 out=DIR overlap=true|false
--   bucket_mb=25
local T = require 'tdrl'
local D = require 'tdrl.diffusion'
local dist = require 'tdrl.dist'
local trainer = require 'tdrl.diffusion.trainer'
local o = {encoder = "none", sync_bn = "false", noise = "global", iters = "3", out = "", overlap = "true",
  bucket_mb = "25"}
for i = 2, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  assert(k and o[k], "bad argument " .. arg[i])
  o[k] = v
end
-- GroupNorm throughout the score network; the DRL encoder adds BatchNorm (WRN-10-1)
local cfg = D.presets.resolve({preset = "tiny", encoder = o.encoder, nf = 8, ch_mult = {1, 2}, latent = 4,
  dropout = 0, iters = tonumber(o.iters), batch = 8, warmup = 0, eval_every = 0, ckpt_every = 2, log_every = 1,
  image_size = 16, dist_noise = o.noise, sync_bn = o.sync_bn == "true", dist_overlap = o.overlap == "true",
  dist_bucket_mb = tonumber(o.bucket_mb), lr = 1e-3})
local X = T.rand(32, 3, 16, 16, T.Generator(5)) * 2 - 1
local model = trainer.run(cfg, {train = X}, {quiet = true, out = o.out ~= "" and o.out or nil})
if dist.is_main() then
  local sd = {}
  for name, p in model:named_parameters() do sd[name] = p end
  for name, b in model:named_buffers() do sd["buffer." .. name] = b end
  T.save(arg[1], sd)
end
