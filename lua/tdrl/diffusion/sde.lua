-- The variance-exploding SDE of the paper (Song et al.'s VE SDE):
--   sigma(t) = sigma_min (sigma_max / sigma_min)^t,  x_t = x_0 + sigma(t) eps,
--   g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min)),  training t ~ U(eps_t, 1).
local T = require 'tdrl'

local SDE = {}
SDE.__index = SDE

--- VESDE({sigma_min = 0.01, sigma_max = 50, eps_t = 1e-5, t_mid_frac = 0, t_mid_lo = 0.25, t_mid_hi = 0.65})
--- t_mid_frac > 0 (not in the reference) draws that fraction of the training times from
--- U(t_mid_lo, t_mid_hi) instead of U(eps_t, 1): the middle of the trajectory, where noise hides
--- an object's shape and place but not yet the scene, is where a code of x0 helps the score
--- network most, so the encoder learns to code them in fewer steps.
function SDE.new(opts)
  opts = opts or {}
  local s = setmetatable({sigma_min = opts.sigma_min or 0.01, sigma_max = opts.sigma_max or 50,
    eps_t = opts.eps_t or 1e-5, t_mid_frac = opts.t_mid_frac or 0, t_mid_lo = opts.t_mid_lo or 0.25,
    t_mid_hi = opts.t_mid_hi or 0.65}, SDE)
  if not (s.sigma_min > 0 and s.sigma_max > s.sigma_min) then
    error(string.format("VESDE: need 0 < sigma_min < sigma_max, got %g and %g", s.sigma_min, s.sigma_max), 2)
  end
  if not (s.t_mid_frac >= 0 and s.t_mid_frac <= 1 and s.t_mid_lo >= 0 and s.t_mid_hi <= 1 and s.t_mid_lo < s.t_mid_hi) then
    error(string.format("VESDE: need 0 <= t_mid_frac <= 1 and 0 <= t_mid_lo < t_mid_hi <= 1, got %g, %g, %g",
      s.t_mid_frac, s.t_mid_lo, s.t_mid_hi), 2)
  end
  s.log_ratio = math.log(s.sigma_max / s.sigma_min)
  return s
end

--- log sigma(t) for a tensor t (B): log sigma_min + t ln(sigma_max / sigma_min)
function SDE:log_sigma(t) return t * self.log_ratio + math.log(self.sigma_min) end
function SDE:sigma(t) return self:log_sigma(t):exp() end
function SDE:sigma_of(t) return self.sigma_min * (self.sigma_max / self.sigma_min) ^ t end -- a number
--- diffusion coefficient g(t) (tensor or number)
function SDE:g(t)
  local c = math.sqrt(2 * self.log_ratio)
  if type(t) == "number" then return self:sigma_of(t) * c end
  return self:sigma(t) * c
end

--- training times t ~ U(eps_t, 1), (B)
function SDE:sample_t(B, gen)
  local u = T.rand(B, gen)
  local t = u * (1 - self.eps_t) + self.eps_t
  if self.t_mid_frac <= 0 then return t end
  local mid = T.rand(B, gen):lt(self.t_mid_frac):float()
  return t + mid * (u * (self.t_mid_hi - self.t_mid_lo) + self.t_mid_lo - t)
end

--- x_t = x0 + sigma(t) eps; returns x_t, eps, sigma (B); eps drawn from gen unless given
function SDE:perturb(x0, t, gen, eps)
  eps = eps or T.randn(x0:size(), gen)
  local sigma = self:sigma(t)
  local B = x0:size(1)
  return x0 + sigma:view(B, 1, 1, 1) * eps, eps, sigma
end

--- a sample of the prior N(0, sigma_max^2 I)
function SDE:prior(shape, gen) return T.randn(shape, gen) * self.sigma_max end

return SDE
