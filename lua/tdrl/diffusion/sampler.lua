-- Samplers of the reverse VE SDE: the reverse-diffusion predictor with a Langevin corrector
-- (Song et al.'s PC sampler) and Euler-Maruyama; unconditional, or conditioned on the code
-- of given images at a chosen time t (the reference's sampler never passed the code, so its
-- conditional samples ignored the encoder).
--
--   local S = require 'tdrl.diffusion.sampler'
--   local x = S.sample(model, {n = 16, steps = 500, method = "pc", z = codes, generator = g})
--   S.conditional_grid(model, images, {0.1, 0.5, 0.9}, "samples.png")
local T = require 'tdrl'

local M = {}

local function score(model, x, t, z)
  local B = x:size(1)
  return model(x, T.full({B}, t), {z = z}).output
end

-- per-sample L2 norms of (B, ...) -> (B)
local function norms(x) return x:view(x:size(1), -1):norm(2, 2) end

--- sample(model, {n =, steps = 500, method = "pc" | "em", snr = 0.16, corrector_steps = 1,
--- z = codes (n, latent) or nil, shape = {C, H, W}, eps = 1e-3, generator = g}) -> images (n, C, H, W)
function M.sample(model, o)
  o = o or {}
  local cfg, sde = model.cfg, model.sde
  local n = o.n or (o.z and o.z:size(1)) or 16
  local steps, eps = o.steps or 500, o.eps or 1e-3
  local gen = o.generator or T.Generator(0)
  local shape = o.shape or {cfg.channels, cfg.image_size, cfg.image_size}
  if model.encoder and not o.z then
    error("sample: this model has an encoder; pass {z = codes} (see conditional_grid), or use a model without one", 2)
  end
  local was_training = model.training
  model:eval()
  local x_mean
  T.no_grad(function()
    local x = sde:prior({n, shape[1], shape[2], shape[3]}, gen)
    x_mean = x
    for i = 1, steps do
      local t = 1 - (1 - eps) * (i - 1) / (steps - 1 > 0 and steps - 1 or 1)
      if o.method == "em" then
        local dt = -(1 - eps) / steps
        local g = sde:g(t)
        x_mean = x - score(model, x, t, o.z) * (g * g * dt)
        x = x_mean + T.randn(x:size(), gen) * (g * math.sqrt(-dt))
      else
        -- corrector: Langevin steps with the step size set by the signal-to-noise ratio
        for _ = 1, o.corrector_steps or 1 do
          local s = score(model, x, t, o.z)
          local noise = T.randn(x:size(), gen)
          local ratio = norms(noise) / norms(s):clamp(1e-12)
          local step = (ratio * (o.snr or 0.16)) ^ 2 * 2 -- (B), alpha = 1 for the VE SDE
          step = step:view(n, 1, 1, 1)
          x_mean = x + s * step
          x = x_mean + noise * (step * 2):sqrt()
        end
        -- predictor: reverse diffusion, G^2 = sigma(t_i)^2 - sigma(t_{i+1})^2
        local t_next = i < steps and 1 - (1 - eps) * i / (steps - 1) or nil
        local sig = sde:sigma_of(t)
        local sig_next = t_next and sde:sigma_of(t_next) or 0
        local G2 = sig * sig - sig_next * sig_next
        x_mean = x + score(model, x, t, o.z) * G2
        x = x_mean + T.randn(x:size(), gen) * math.sqrt(G2)
      end
    end
  end)
  model:train(was_training)
  return x_mean
end

--- the codes of images at time t (eval mode: VDRL gives its mean)
function M.codes(model, images, t)
  local was_training = model.training
  model:eval()
  local z = T.no_grad(function()
    local e = model.encoder(images, T.full({images:size(1)}, t))
    return e.mu or e.z
  end)
  model:train(was_training)
  return z
end

--- conditional_grid(model, images (k,C,H,W), times, path, opts): one row per image: the image,
--- then for each t in times a sample conditioned on the image's code at t. What stays the same
--- along a row is what the code at that t keeps. Returns the (k, 1 + #times, C, H, W) tensor.
function M.conditional_grid(model, images, times, path, opts)
  opts = opts or {}
  local k = images:size(1)
  local cols = {images:clamp(0, 1)}
  for j, t in ipairs(times) do
    local z = M.codes(model, images, t)
    local x = M.sample(model, {z = z, steps = opts.steps or 200, generator = T.Generator((opts.seed or 0) + j),
      method = opts.method})
    cols[#cols + 1] = x:clamp(0, 1)
  end
  local grid = T.stack(cols, 2) -- (k, 1 + #times, C, H, W)
  if path then
    local data = require 'tdrl.data'
    local C, H, W = images:size(2), images:size(3), images:size(4)
    data.save_grid(grid:reshape(k * (1 + #times), C, H, W), path, {nrow = 1 + #times})
  end
  return grid
end

--- unconditional samples (a model without an encoder) or samples conditioned on random data
--- codes, saved as a grid (used by the trainer's sample_every)
function M.grid(model, X, cfg, path)
  local n = math.min(16, X:size(1))
  local imgs = X:narrow(1, 1, n)
  if model.encoder then
    return M.conditional_grid(model, imgs:narrow(1, 1, math.min(4, n)), {0.25, 0.5, 0.75}, path, {steps = 100})
  end
  local x = M.sample(model, {n = n, steps = 100}):clamp(0, 1)
  require('tdrl.data').save_grid(x, path, {nrow = 4})
  return x
end

return M
