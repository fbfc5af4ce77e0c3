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
  it("independent variables give about zero, never below it, read out on held-out samples", function()
    local g = T.Generator(5)
    local x, y = T.randn(1000, 2, g), T.randn(1000, 2, g)
    local est, _, raw = mine.estimate(x, y, {iters = 300, lr = 1e-3, hidden = 64})
    spec.truthy(est >= 0 and est < 0.03, "estimate " .. est)
    spec.truthy(raw <= est + 1e-12, "the clamp only raises")
  end)
  it("reads out on given held-out samples", function()
    local x, y = gauss(3000, 1, 0.8, 4)
    local I = mine.estimate(x:narrow(1, 1, 2000), y:narrow(1, 1, 2000),
      {iters = 600, lr = 1e-3, hidden = 64, heldout = {x:narrow(1, 2001, 1000), y:narrow(1, 2001, 1000)}})
    local truth = -0.5 * math.log(1 - 0.64)
    spec.truthy(math.abs(I / truth - 1) < 0.15, string.format("estimate %.4f, exact %.4f", I, truth))
    spec.raises(function() mine.estimate(x, y, {heldout = {x}}) end, "heldout")
    spec.raises(function() mine.estimate(x, y, {readout_on = "test"}) end, "readout_on", "test")
  end)
  it("Linfoot's coefficient is |rho| for a Gaussian pair, 0 at I = 0, in [0, 1)", function()
    for _, rho in ipairs({0, 0.3, 0.7, 0.95}) do
      spec.near(mine.linfoot(-0.5 * math.log(1 - rho * rho)), rho, 1e-9)
    end
    spec.eq(mine.linfoot(-1), 0)
    spec.truthy(mine.linfoot(50) <= 1)
  end)
  it("the dependence matrix of codes with known structure: symmetric, in [0, 1], diagonal 1, near the truth",
    function()
    local g = T.Generator(2)
    local N, rho = 3000, 0.8
    local base = T.randn(N, 1, 2, g)
    -- point 2 = rho base + noise in each of 2 dims: I = -log(1 - rho^2), r = sqrt(1 - (1 - rho^2)^2);
    -- point 3 independent of both
    local codes = T.cat({base, base * rho + T.randn(N, 1, 2, g) * math.sqrt(1 - rho * rho), T.randn(N, 1, 2, g)}, 2)
    local R, I, H = mine.dependence_matrix(codes, {iters = 500, lr = 1e-3, hidden = 64})
    spec.eq(table.concat(R:size(), "x"), "3x3")
    spec.eq(H, nil)
    for i = 1, 3 do
      spec.eq(R:get(i, i), 1)
      for j = 1, 3 do
        spec.eq(R:get(i, j), R:get(j, i))
        spec.truthy(R:get(i, j) >= 0 and R:get(i, j) <= 1, string.format("R[%d][%d] = %g", i, j, R:get(i, j)))
      end
    end
    local truth = math.sqrt(1 - (1 - rho * rho) ^ 2)
    spec.truthy(math.abs(R:get(1, 2) - truth) < 0.06, string.format("R12 %.3f, exact %.3f", R:get(1, 2), truth))
    spec.truthy(R:get(1, 3) < 0.2 and R:get(2, 3) < 0.2, string.format("independent: %.3f %.3f", R:get(1, 3),
      R:get(2, 3)))
    spec.near(R:get(1, 2), mine.linfoot(I:get(1, 2)), 1e-6)
    -- fitted on other samples, read out on these
    local R2 = mine.dependence_matrix(codes:narrow(1, 1, 1000), {fit = codes:narrow(1, 1001, 2000), iters = 500,
      lr = 1e-3, hidden = 64})
    spec.truthy(math.abs(R2:get(1, 2) - truth) < 0.08, string.format("R12 (fit apart) %.3f", R2:get(1, 2)))
    spec.raises(function() mine.dependence_matrix(codes, {measure = "nmi"}) end, "measure", "nmi")
    spec.raises(function() mine.dependence_matrix(codes, {fit = T.randn(10, 2, 2)}) end, "fit")
    spec.raises(function() mine.dependence_matrix(T.randn(10, 2)) end, "codes")
  end)
  it("rejects inputs of different lengths", function()
    spec.raises(function() mine.estimate(T.randn(10, 2), T.randn(9, 2)) end, "10", "9")
  end)
end)
