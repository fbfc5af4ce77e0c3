-- The variance-exploding SDE of the paper (Song et al.'s VE SDE):
--   sigma(t) = sigma_min (sigma_max / sigma_min)^t,  x_t = x_0 + sigma(t) eps,
--   g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min)),  training t ~ U(eps_t, 1).
local T = require 'tdrl'

local SDE = {}
SDE.__index = SDE

--- VESDE({sigma_min = 0.01, sigma_max = 50, eps_t = 1e-5})
function SDE.new(opts)
  opts = opts or {}
  local s = setmetatable({sigma_min = opts.sigma_min or 0.01, sigma_max = opts.sigma_max or 50,
    eps_t = opts.eps_t or 1e-5}, SDE)
  if not (s.sigma_min > 0 and s.sigma_max > s.sigma_min) then
    error(string.format("VESDE: need 0 < sigma_min < sigma_max, got %g and %g", s.sigma_min, s.sigma_max), 2)
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
  return T.rand(B, gen) * (1 - self.eps_t) + self.eps_t
end

--- x_t = x0 + sigma(t) eps; returns x_t, eps, sigma (B)
function SDE:perturb(x0, t, gen)
  local eps = T.randn(x0:size(), gen)
  local sigma = self:sigma(t)
  local B = x0:size(1)
  return x0 + sigma:view(B, 1, 1, 1) * eps, eps, sigma
end

--- a sample of the prior N(0, sigma_max^2 I)
function SDE:prior(shape, gen) return T.randn(shape, gen) * self.sigma_max end

return SDE
