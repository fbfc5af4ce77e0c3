-- Heads with learned query times: the parametrisation, the gradient through the real encoder,
-- and convergence to where a toy encoder's code carries the label.
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local D = require 'tdrl.diffusion'
local LT = require 'tdrl.heads.learned_times'
local gc = require 'tdrl.gradcheck'

-- the real encoder, small. Its Fourier frequencies are divided by 256 for the central differences:
-- at the reference's (W ~ N(0, 16^2)) the time bias moves so fast with t that the ReLUs switch
-- every ~1e-5 in t, the code is piecewise linear on that scale and a float32 central difference
-- measures an average slope of several pieces. A lower frequency keeps every op on the path.
local function encoder(seed)
  local g = T.Generator(seed)
  local enc = D.WRNEncoder({depth = 10, widen = 1, latent = 4, probabilistic = true, channels = 3, generator = g})
  enc:eval()
  T.no_grad(function() enc.temb.W:mul_(1 / 256) end)
  return enc, g
end

-- A toy differentiable encoder: z(x, t) = 2 onehot(y) g(t) + noise, g(t) = exp(-(t - t*)^2 / (2 s^2)),
-- so the label is readable only near t* = 0.75. x holds onehot(y) and the noise side by side.
local C, TSTAR, S = 4, 0.75, 0.2
local Toy = nn.class('ToyEncoder', nn.Module)
function Toy:forward(x, t)
  local gt = ((t - TSTAR) ^ 2 * (-1 / (2 * S * S))):exp():view(-1, 1)
  return {z = x:narrow(2, 1, C) * gt * 2 + x:narrow(2, C + 1, C)}
end

-- n toy inputs (n, 2C) and their labels
local function toy_data(n, g)
  local y = T.randint(0, C, {n}, g)
  local onehot = T.zeros(n, C)
  for i = 1, n do onehot:set(i, y[i] + 1, 1) end
  return T.cat({onehot, T.randn(n, C, g)}, 2), y
end

describe("learned query times", function()
  it("keeps the times ordered inside (0, 1) whatever the logits, and starts where asked", function()
    local enc, g = encoder(1)
    local h = LT.LearnedTimesHead(enc, {K = 4, latent = 4, classes = 3, generator = g})
    local t = h:times()
    for k = 1, 4 do spec.near(t[k], k / 5, 1e-6) end
    for trial = 1, 20 do
      T.no_grad(function() h.time_logits:copy_(T.randn(5, g) * 5) end)
      local ts = h:times()
      spec.truthy(ts[1] > 0 and ts[4] < 1, "inside (0, 1)")
      for k = 2, 4 do spec.truthy(ts[k] > ts[k - 1], string.format("trial %d: t%d %g <= t%d %g", trial, k, ts[k], k - 1, ts[k - 1])) end
    end
    local h2 = LT.LearnedTimesHead(enc, {K = 3, latent = 4, classes = 3, generator = g, init = {0.1, 0.5, 0.7}})
    local t2 = h2:times()
    spec.near(t2[1], 0.1, 1e-6); spec.near(t2[2], 0.5, 1e-6); spec.near(t2[3], 0.7, 1e-6)
    spec.raises(function() LT.LearnedTimesHead(enc, {K = 0, latent = 4, classes = 3}) end, "K")
    spec.raises(function() LT.LearnedTimesHead(enc, {K = 2, latent = 4, classes = 3, init = {0.5}}) end, "init")
    spec.raises(function() LT.LearnedTimesHead(enc, {K = 2, latent = 4, classes = 3, init = {0.5, 0.4}}) end, "increasing")
    spec.eq(#h:parameters(), #h.reader:parameters() + 1, "the encoder's weights are not the head's")
  end)

  it("the time logits' gradient matches central differences", function()
    local L = LT.LearnedTimesHead(encoder(2), {K = 3, latent = 4, classes = 3}).cumsum
    local u = T.randn(4, T.Generator(3)); u:requires_grad_(true)
    local err, where = gc.check(function(a) return LT.times_of(a, L) end, {u}, {eps = 1e-3})
    spec.truthy(err < 1e-2, string.format("error %.3g at %s", err, where))
  end)

  for _, reader in ipairs({"mlp", "gru", "transformer"}) do
    it("the loss's gradient in the query times matches central differences through the real encoder (" .. reader
      .. ")", function()
      local enc, g = encoder(2)
      local h = LT.LearnedTimesHead(enc, {K = 3, reader = reader, latent = 4, classes = 3, generator = g})
      h:eval()
      local x = T.rand(3, 3, 8, 8, g)
      local t = T.tensor({0.2, 0.5, 0.8}); t:requires_grad_(true)
      local err, where = gc.check(function(a) return h(x, a) end, {t}, {eps = 1e-4})
      spec.truthy(err < 2e-2, string.format("error %.3g at %s", err, where))
      -- and through the time logits, end to end
      h:zero_grad()
      local loss = nn.F.cross_entropy(h(x), T.tensor({0, 1, 2}, "int64"))
      loss:backward()
      spec.truthy(h.time_logits.grad:abs():sum():item() > 0, "the time logits get a gradient")
    end)
  end

  it("a K = 1 head moves its time to where a toy encoder's code carries the label", function()
    -- the head starts at t = 0.5
    local g = T.Generator(5)
    local function data(n) return {toy_data(n, g)} end
    local r = LT.train(Toy(), {train = data(2000), val = data(500), test = data(500)},
      {K = 1, reader = "mlp", latent = C, classes = C, epochs = 40, patience = 40, batch = 100, time_lr = 0.05, seed = 1})
    print(string.format("#   learned t %.3f (t* = %.2f) after %d epochs; val %.3f, test %.3f", r.times[1], TSTAR,
      r.epochs, r.val, r.test))
    spec.truthy(math.abs(r.times[1] - TSTAR) < 0.05, string.format("learned t %.3f, t* %.2f", r.times[1], TSTAR))
  end)
end)

describe("learned query times on a cached grid", function()
  it("interpolates the grid's codes linearly, exact at its points", function()
    local g = T.Generator(4)
    local x = T.randn(5, 11, 3, g) -- granularity 10
    local h = LT.LearnedTimesHead(nil, {K = 2, latent = 3, classes = 2, grid = 10, generator = g})
    local z = h:codes(x, T.tensor({0.3, 0.45}))
    spec.near((z:select(2, 1) - x:select(2, 4)):abs():max():item(), 0, 1e-6)
    spec.near((z:select(2, 2) - (x:select(2, 5) + x:select(2, 6)) * 0.5):abs():max():item(), 0, 1e-6)
    local z1 = h:codes(x, T.tensor({1.0, 1.0}))
    spec.near((z1:select(2, 1) - x:select(2, 11)):abs():max():item(), 0, 1e-6)
    spec.raises(function() LT.LearnedTimesHead(nil, {K = 1, latent = 3, classes = 2}) end, "encoder or a grid")
  end)
  it("the gradient in t is the secant slope (central differences between grid points)", function()
    local g = T.Generator(6)
    local x = T.randn(4, 11, 3, g)
    local h = LT.LearnedTimesHead(nil, {K = 3, reader = "gru", latent = 3, classes = 2, grid = 10, generator = g})
    h:eval()
    local t = T.tensor({0.13, 0.52, 0.87}); t:requires_grad_(true)
    local err, where = gc.check(function(a) return h(x, a) end, {t}, {eps = 1e-3})
    spec.truthy(err < 1e-2, string.format("error %.3g at %s", err, where))
  end)
  it("a K = 1 head on a grid moves its time to where the label is, and evaluate() reads the encoder", function()
    local enc = Toy()
    local g = T.Generator(7)
    -- the toy codes at t = 0, 0.05, ..., 1
    local function data(n)
      local x, y = toy_data(n, g)
      local cols = {}
      for k = 0, 20 do cols[#cols + 1] = enc(x, T.full({n}, k / 20)).z end
      return {T.stack(cols, 2), y}, x
    end
    local tr, _ = data(2000)
    local va, _ = data(500)
    local te, xte = data(500)
    local r = LT.train(nil, {train = tr, val = va, test = te}, {K = 1, reader = "mlp", latent = C, classes = C,
      grid = 20, epochs = 40, patience = 40, batch = 100, time_lr = 0.05, seed = 1})
    print(string.format("#   learned t %.3f on the grid (t* = %.2f); test %.3f", r.times[1], TSTAR, r.test))
    spec.truthy(math.abs(r.times[1] - TSTAR) < 0.05, string.format("learned t %.3f", r.times[1]))
    local exact = LT.evaluate(enc, r.head, xte, te[2])
    spec.truthy(math.abs(exact - r.test) < 0.03, string.format("encoder %.3f, grid %.3f", exact, r.test))
  end)
end)

describe("examples/learned_times.lua", function()
  it("compares learned, greedy and uniform times per task and K, and draws them over the profiles", function()
    local dir = os.tmpname()
    os.remove(dir)
    local p = io.popen(string.format("%s examples/learned_times.lua --quick --out=%s 2>&1", arg[-1] or "./tdrl", dir))
    local out = p:read("a")
    if not p:close() then error("learned_times.lua failed:\n" .. out:sub(-3000)) end
    local csv = require('tdrl.util.fs').read(dir .. "/learned_times.csv")
    local n, methods = 0, {}
    for line in csv:gmatch("[^\n]+") do
      local L, task, K, method, seed, acc = line:match("^(%d+),(%w+),(%d+),(%w+),(%d+),([%d.]+)")
      if L then
        n = n + 1
        methods[method] = (methods[method] or 0) + 1
        spec.truthy(tonumber(acc) >= 0 and tonumber(acc) <= 1, line)
        local times = {}
        for t in line:match("^[^,]*,[^,]*,[^,]*,[^,]*,[^,]*,[^,]*,(.*)$"):gmatch("[%d.]+") do
          times[#times + 1] = tonumber(t)
        end
        spec.eq(#times, tonumber(K), "K times: " .. line)
      end
    end
    spec.eq(n, 4 * 2 * 3, "four tasks x two K x three methods")
    spec.eq(methods.learned, 8); spec.eq(methods.uniform, 8); spec.eq(methods.greedy, 8)
    spec.truthy(require('tdrl.util.fs').exists(dir .. "/learned-times-vdrl-latent2.png"), "the figure")
    spec.truthy(out:find("learned > uniform", 1, true), "the verdict is printed")
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
