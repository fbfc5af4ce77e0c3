-- MINE (Belghazi et al.) as the paper uses it (section 3.2): a statistics network T on
-- concat[x, y], the Donsker-Varadhan bound I = E_joint[T] - log E_marginal[exp T], its
-- bias-corrected gradient with a moving average of E[exp T], and the NMI matrix over the time
-- points of a trajectory file, with entropies estimated as MINE(x, x).
--
--   local mine = require 'tdrl.mine'
--   local I = mine.estimate(X (N, d), Y (N, d), {iters = 1000, seed = 1})   -- nats
--   local nmi = mine.nmi_matrix(codes (N, P, d), {seeds = {1, 2}})          -- (P, P) tensor
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local optim = require 'tdrl.optim'

local M = {}

M.defaults = {hidden = 256, batch = 256, lr = 1e-4, ma_rate = 0.01, readout = 100, iters = nil, iters_per_epoch = 100}

--- the statistics network: Linear(2d, 256) - ELU - Linear(256, 256) - ELU - Linear(256, 1),
--- Xavier-uniform weights and zero biases
-- arguments checked up front, so that a wrong call names the function, not a line of it
local function need(cond, fmt, ...) if not cond then error(string.format(fmt, ...), 3) end end

function M.network(d, o)
  need(math.type(d) == "integer" and d >= 1, "mine.network: the code width must be a positive integer, got %s", tostring(d))
  need(o == nil or type(o) == "table", "mine.network: options must be a table, got %s", type(o))
  o = o or {}
  local g = o.generator
  local h = o.hidden or 256
  local net = nn.Sequential(nn.Linear(2 * d, h, {generator = g}), nn.ELU(), nn.Linear(h, h, {generator = g}), nn.ELU(),
    nn.Linear(h, 1, {generator = g}))
  for _, i in ipairs({1, 3, 5}) do
    nn.init.xavier_uniform_(net[i].weight, {generator = g})
    T.no_grad(function() net[i].bias:zero_() end)
  end
  return net
end

--- estimate(X (N, dx), Y (N, dy), opts) -> I (nats, the moving average of the last `readout`
--- DV estimates), and the list of all estimates. opts: iters (default 100 x floor(N / batch)),
--- batch = 256, lr = 1e-4, seed, hidden = 256, ma_rate = 0.01
function M.estimate(X, Y, o)
  need(T.is_tensor(X) and T.is_tensor(Y) and X:dim() >= 1 and Y:dim() >= 1,
    "mine.estimate: X and Y must be tensors of samples, got %s and %s", type(X), type(Y))
  need(o == nil or type(o) == "table", "mine.estimate: options must be a table, got %s", type(o))
  local cfg = {}
  for k, v in pairs(M.defaults) do cfg[k] = v end
  for k, v in pairs(o or {}) do cfg[k] = v end
  local N = X:size(1)
  if Y:size(1) ~= N then
    error(string.format("mine.estimate: X has %d samples and Y %d", N, Y:size(1)), 2)
  end
  X, Y = X:reshape(N, -1):detach(), Y:reshape(N, -1):detach()
  if X:size(2) ~= Y:size(2) then
    -- the network takes concat[x, y]: pad the narrower one with zeros
    local d = math.max(X:size(2), Y:size(2))
    if X:size(2) < d then X = T.cat({X, T.zeros(N, d - X:size(2))}, 2) end
    if Y:size(2) < d then Y = T.cat({Y, T.zeros(N, d - Y:size(2))}, 2) end
  end
  local d = X:size(2)
  local B = math.min(cfg.batch, N)
  local iters = cfg.iters or cfg.iters_per_epoch * math.max(1, N // B)
  local gen = T.Generator(cfg.seed or 1)
  local net = M.network(d, {generator = gen, hidden = cfg.hidden})
  local opt = optim.Adam(net:parameters(), {lr = cfg.lr})
  local ma = 1.0
  local estimates = {}
  for it = 1, iters do
    local i = T.randint(0, N, {B}, gen)
    local i1, i2 = T.randint(0, N, {B}, gen), T.randint(0, N, {B}, gen)
    -- joint pairs (x_i, y_i) and shuffled pairs (x_i1, y_i2) through the network as one batch
    -- of 2B rows: the same values as two passes, in half the GEMM calls
    local both = net(T.cat({X:index_select(1, T.cat({i, i1}, 1)), Y:index_select(1, T.cat({i, i2}, 1))}, 2))
    local joint, marg = both:narrow(1, 1, B), both:narrow(1, B + 1, B)
    local tj = joint:mean()
    local et = marg:exp():mean()
    -- the DV bound of this batch, reported; the gradient uses the moving average of E[exp T]
    local mi = tj:item() - math.log(et:item())
    ma = (1 - cfg.ma_rate) * ma + cfg.ma_rate * et:item()
    local loss = -(tj - et / ma)
    opt:zero_grad()
    loss:backward()
    opt:step()
    estimates[it] = mi
    if cfg.on_iter then cfg.on_iter(it, mi) end
  end
  local k = math.min(cfg.readout, #estimates)
  local s = 0
  for j = #estimates - k + 1, #estimates do s = s + estimates[j] end
  return s / k, estimates
end

--- nmi_matrix(codes (N, P, d), {seeds = {1}, iters =, progress = label, ...}) -> NMI (P, P),
--- I (P, P) and the entropies H (P): I(i, j) by MINE on the points' codes, H_i = MINE(x_i, x_i),
--- NMI(i, j) = I(i, j) / sqrt(H_i H_j + 1e-8), each averaged over the seeds. Symmetric: each
--- pair is estimated once.
function M.nmi_matrix(codes, o)
  o = o or {}
  local P = codes:size(2)
  local seeds = o.seeds or {1}
  local I = T.zeros(P, P)
  local bar = o.progress and require('tdrl.util.progress').new(#seeds * P * (P + 1) // 2, {label = o.progress})
  local done = 0
  local pts = {}
  for p = 1, P do pts[p] = codes:select(2, p):contiguous() end
  for i = 1, P do
    for j = i, P do
      local s = 0
      for _, seed in ipairs(seeds) do
        local eo = {}
        for k, v in pairs(o) do eo[k] = v end
        eo.seed = seed * 1000 + i * P + j
        eo.progress = nil
        s = s + M.estimate(pts[i], pts[j], eo)
        done = done + 1
        if bar then bar:update(done) end
      end
      I:set(i, j, s / #seeds)
      I:set(j, i, s / #seeds)
    end
  end
  if bar then bar:finish() end
  local H = T.zeros(P)
  for p = 1, P do H[p] = I:get(p, p) end
  local denom = (H:view(P, 1) * H:view(1, P)):clamp(0) + 1e-8
  local nmi = I / denom:sqrt()
  return nmi, I, H
end

--- mean of the cells with |i - j| <= band (off the diagonal) and of those farther away:
--- how concentrated the matrix is near its diagonal
function M.diagonal_concentration(m, band)
  need(T.is_tensor(m) and m:dim() == 2, "mine.diagonal_concentration: expected a (P, P) matrix, got %s",
    T.is_tensor(m) and table.concat(m:size(), "x") or type(m))
  need(band == nil or type(band) == "number", "mine.diagonal_concentration: band must be a number, got %s", type(band))
  band = band or 1
  local P = m:size(1)
  local near, nn_, far, nf = 0, 0, 0, 0
  for i = 1, P do
    for j = 1, P do
      local d = math.abs(i - j)
      if d >= 1 and d <= band then near = near + m:get(i, j); nn_ = nn_ + 1
      elseif d > band then far = far + m:get(i, j); nf = nf + 1 end
    end
  end
  return near / math.max(1, nn_), far / math.max(1, nf)
end

return M
