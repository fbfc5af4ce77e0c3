-- Denoising score matching loss of the paper, exactly as the reference computes it:
--   L = mean over the batch of [ 0.5 sum_pixels (sigma s(x_t, z, t) + eps)^2 + lambda_z R(z) ]
-- with x_t = x0 + sigma(t) eps, t ~ U(eps_t, 1), the encoder seeing the clean x0 at the same t;
-- R = KL(N(mu, exp logvar) || N(0, I)) for VDRL, sum |z| for DRL, 0 for "none" or no encoder.
local T = require 'tdrl'

local M = {}

--- dsm(model, x0, {lambda_z = 1e-5, regulariser = "auto" | "kl" | "l1" | "none", generator = g, t = t,
---   noise = eps (B, C, H, W), code_x0 = images (B, C, H, W)}): t and noise are drawn from the generator
--- unless given; code_x0 (an analysis, not training) shows the encoder other images than the ones denoised
--- returns loss (0-d), and a table {dsm = batch mean of the score term, reg = mean R,
--- per_sample = the score term of each sample (B), t = the times used (B)}
function M.dsm(model, x0, o)
  o = o or {}
  local B = x0:size(1)
  local sde = model.sde
  local t = o.t or sde:sample_t(B, o.generator)
  local xt, eps, sigma = sde:perturb(x0, t, o.generator, o.noise)
  local out = model(xt, t, {x0 = o.code_x0 or x0, generator = o.generator})
  local r = out.output * sigma:view(B, 1, 1, 1) + eps
  local per = (r * r):view(B, -1):sum(2) * 0.5
  local kind = o.regulariser or "auto"
  local reg
  if kind ~= "none" and out.z then
    if (kind == "auto" and out.mu) or kind == "kl" then
      reg = (out.logvar + 1 - out.mu * out.mu - out.logvar:exp()):sum(2) * -0.5
    else
      reg = out.z:abs():sum(2)
    end
  end
  local lz = o.lambda_z or 1e-5
  local total = reg and (per + reg * lz):mean() or per:mean()
  return total, {dsm = per:mean():item(), reg = reg and reg:mean():item() or 0, per_sample = per:detach(), t = t}
end

return M
