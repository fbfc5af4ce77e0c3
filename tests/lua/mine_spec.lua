-- MINE against a case with known mutual information: correlated Gaussians, where
-- I = -0.5 d log(1 - rho^2) nats.
local T = require 'tdrl'
local mine = require 'tdrl.mine'

local function gauss(n, d, rho, seed)
  local g = T.Generator(seed)
  local x = T.randn(n, d, g)
  return x, x * rho + T.randn(n, d, g) * math.sqrt(1 - rho * rho)
end

describe("MINE", function()
  for _, rho in ipairs({0.5, 0.9}) do
    it(string.format("estimates I of correlated Gaussians within 10%% (rho = %.1f)", rho), function()
      local d = 2
      local x, y = gauss(20000, d, rho, 1)
      local est = mine.estimate(x, y, {iters = 1500, lr = 1e-3, seed = 3, readout = 200, hidden = 128})
      local truth = -0.5 * d * math.log(1 - rho * rho)
      print(string.format("#   rho %.1f: MINE %.4f nats, exact %.4f (ratio %.3f)", rho, est, truth, est / truth))
      spec.truthy(math.abs(est / truth - 1) < 0.10, string.format("estimate %.4f, exact %.4f", est, truth))
    end)
  end
  it("independent variables give about zero", function()
    local g = T.Generator(5)
    local est = mine.estimate(T.randn(5000, 2, g), T.randn(5000, 2, g), {iters = 300, lr = 1e-3, hidden = 64})
    spec.truthy(math.abs(est) < 0.05, "estimate " .. est)
  end)
  it("the NMI matrix is symmetric with entropies from MINE(x, x) on its diagonal", function()
    local g = T.Generator(2)
    local base = T.randn(2000, 1, 2, g)
    local codes = T.cat({base, base + T.randn(2000, 1, 2, g) * 0.3, T.randn(2000, 1, 2, g)}, 2) -- (N, 3, 2)
    local nmi, I, H = mine.nmi_matrix(codes, {iters = 150, lr = 1e-3, hidden = 64})
    spec.eq(table.concat(nmi:size(), "x"), "3x3")
    spec.near(nmi:get(1, 2), nmi:get(2, 1), 1e-6)
    spec.near(nmi:get(1, 1), I:get(1, 1) / math.sqrt(H[1] * H[1] + 1e-8), 1e-5)
    spec.truthy(nmi:get(1, 2) > nmi:get(1, 3) + 0.1, "correlated points share more than independent ones")
    local near, far = mine.diagonal_concentration(nmi, 1)
    spec.truthy(near == near and far == far)
  end)
  it("rejects inputs of different lengths", function()
    spec.raises(function() mine.estimate(T.randn(10, 2), T.randn(9, 2)) end, "10", "9")
  end)
end)
