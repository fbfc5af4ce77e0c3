-- MINE (Belghazi et al.) as the paper uses it (section 3.2): a statistics network T on
-- concat[x, y], the Donsker-Varadhan bound I = E_joint[T] - log E_marginal[exp T] and its
-- bias-corrected gradient with a moving average of E[exp T]; and the matrix of dependence
-- between the time points of a trajectory.
--
-- Two departures from the reference, both because its numbers were not measurements:
-- * The readout is taken on HELD-OUT samples with the trained network (the reference averages
--   the training batches' bounds, which a network that memorises its batches inflates: +0.08
--   nats for independent variables at N = 1,000), and clamped at 0 (I >= 0 always).
-- * The headline dependence measure is Linfoot's informational coefficient of correlation
--   r = sqrt(1 - exp(-2 I)): defined for continuous codes, in [0, 1], 1 on the diagonal, |rho|
--   for a Gaussian pair, invariant to invertible maps of either code. The reference's
--   NMI = I / sqrt(H_i H_j) with H = MINE(z, z) divides by an "entropy" that is infinite for
--   continuous codes, so it only measures where MINE's training stopped (the same Gaussian pair
--   reads 0.44, 0.25 or 0.17 as the budget grows); it stays available as measure = "reference".
--
--   local mine = require 'tdrl.mine'
--   local I = mine.estimate(X (N, d), Y (N, d), {seed = 1})                 -- nats, held-out
--   local r = mine.dependence_matrix(codes (N, P, d), {seeds = {1, 2}})     -- (P, P) Linfoot
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local optim = require 'tdrl.optim'
local dist = require 'tdrl.dist'

local M = {}

M.defaults = {hidden = 256, batch = 256, lr = 1e-4, ma_rate = 0.01, readout = 100, iters = nil, iters_per_epoch = 100,
  heldout = nil, holdout = 0.2, readout_on = "heldout", clamp = true}

--- Linfoot's informational coefficient of correlation of a mutual information I (nats)
function M.linfoot(I) return math.sqrt(1 - math.exp(-2 * math.max(I, 0))) end

-- X and Y (N, *) as 2-d float rows of one width (the narrower padded with zeros: the network
-- takes concat[x, y])
local function as_pairs(X, Y)
  local N = X:size(1)
  X, Y = X:reshape(N, -1):detach():float(), Y:reshape(N, -1):detach():float()
  local d = math.max(X:size(2), Y:size(2))
  if X:size(2) < d then X = T.cat({X, T.zeros(N, d - X:size(2))}, 2) end
  if Y:size(2) < d then Y = T.cat({Y, T.zeros(N, d - Y:size(2))}, 2) end
  return X, Y
end

--- the DV bound of net on all pairs of (X, Y) (M, d) against K shuffles of Y as the marginal
local function dv_on(net, X, Y, gen)
  local M_ = X:size(1)
  local K = math.max(1, math.ceil(8192 / M_))
  local I
  T.no_grad(function()
    local tj = net(T.cat({X, Y}, 2)):mean():item()
    local xs, ys = {}, {}
    for k = 1, K do xs[k] = X; ys[k] = Y:index_select(1, T.randperm(M_, gen)) end
    local tm = net(T.cat({T.cat(xs, 1), T.cat(ys, 1)}, 2)):view(-1)
    -- log mean exp, shifted by the max for range
    local mx = tm:max():item()
    I = tj - (math.log((tm - mx):exp():mean():item()) + mx)
  end)
  return I
end

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

--- estimate(X (N, dx), Y (N, dy), opts) -> I (nats), the list of the training batches' DV
--- estimates, and the unclamped readout. opts: iters (default 100 x floor(N / batch): MINE needs
--- that budget; at a fixed 300 it underestimated by 49-89%), batch = 256, lr = 1e-4, seed,
--- hidden = 256, ma_rate = 0.01; heldout = {X2, Y2}: the samples the readout is taken on
--- (default: a random `holdout` fraction, 0.2, of X, Y kept out of training); readout_on =
--- "train" for the reference's readout (the moving average of the last `readout` training
--- estimates); clamp = false to keep negative readouts
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
  if cfg.readout_on ~= "heldout" and cfg.readout_on ~= "train" then
    error("mine.estimate: readout_on must be 'heldout' or 'train', got " .. tostring(cfg.readout_on), 2)
  end
  X, Y = as_pairs(X, Y)
  local gen = T.Generator(cfg.seed or 1)
  local Xh, Yh
  if cfg.readout_on == "heldout" then
    if cfg.heldout then
      local h1, h2 = cfg.heldout[1], cfg.heldout[2]
      if not (T.is_tensor(h1) and T.is_tensor(h2)) or h1:size(1) ~= h2:size(1) then
        error("mine.estimate: heldout must be {X2, Y2}, two tensors with the same number of rows", 2)
      end
      Xh, Yh = as_pairs(h1, h2)
      if Xh:size(2) ~= X:size(2) then
        error(string.format("mine.estimate: held-out rows have width %d, training rows %d", Xh:size(2), X:size(2)), 2)
      end
    else
      local nh = math.floor(N * cfg.holdout)
      if nh < 2 or N - nh < 2 then
        error(string.format("mine.estimate: %d samples are too few to hold out %g of them", N, cfg.holdout), 2)
      end
      local perm = T.randperm(N, gen)
      local ih, it = perm:narrow(1, 1, nh), perm:narrow(1, nh + 1, N - nh)
      Xh, Yh = X:index_select(1, ih), Y:index_select(1, ih)
      X, Y = X:index_select(1, it), Y:index_select(1, it)
      N = N - nh
    end
  end
  local d = X:size(2)
  local B = math.min(cfg.batch, N)
  local iters = cfg.iters or cfg.iters_per_epoch * math.max(1, N // B)
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
  local raw
  if cfg.readout_on == "heldout" then
    raw = dv_on(net, Xh, Yh, gen)
  else
    local k = math.min(cfg.readout, #estimates)
    raw = 0
    for j = #estimates - k + 1, #estimates do raw = raw + estimates[j] end
    raw = raw / k
  end
  return cfg.clamp and math.max(raw, 0) or raw, estimates, raw
end

--- dependence_matrix(codes (N, P, d), opts) -> R (P, P), I (P, P) nats (its diagonal left 0 for
--- "linfoot": I(z; z) is infinite), H (P) or nil: the
--- dependence between the codes at every pair of time points, each pair estimated once per seed
--- and averaged over opts.seeds = {1}. opts.measure: "linfoot" (default) R = sqrt(1 - exp(-2 I)),
--- diagonal 1; "reference" the paper's NMI = I / sqrt(H_i H_j + 1e-8) with H_i = MINE(z_i, z_i)
--- (not a defined quantity for continuous codes: kept to compare with the paper). opts.fit: codes
--- (M, P, d) of other samples to train MINE on (the readout is then taken on all of `codes`);
--- other opts go to mine.estimate; progress = a label for a progress bar.
function M.dependence_matrix(codes, o)
  o = o or {}
  local measure = o.measure or "linfoot"
  if measure ~= "linfoot" and measure ~= "reference" then
    error("mine.dependence_matrix: measure must be 'linfoot' or 'reference', got " .. tostring(measure), 2)
  end
  if not T.is_tensor(codes) or codes:dim() ~= 3 then
    error("mine.dependence_matrix: codes must be an (N, points, latent) tensor", 2)
  end
  local fit = o.fit
  if fit and (not T.is_tensor(fit) or fit:dim() ~= 3 or fit:size(2) ~= codes:size(2) or fit:size(3) ~= codes:size(3)) then
    error("mine.dependence_matrix: fit must be an (M, points, latent) tensor like codes", 2)
  end
  local P = codes:size(2)
  local seeds = o.seeds or {1}
  local with_diag = measure == "reference"
  local I = T.zeros(P, P)
  local pts, fpts = {}, {}
  for p = 1, P do
    pts[p] = codes:select(2, p):contiguous()
    if fit then fpts[p] = fit:select(2, p):contiguous() end
  end
  -- every (pair, seed) is an independent estimate: under mpirun they are spread over the ranks
  local jobs = {}
  for i = 1, P do
    for j = with_diag and i or i + 1, P do
      for _, seed in ipairs(seeds) do jobs[#jobs + 1] = {i, j, seed} end
    end
  end
  local share = (#jobs - dist.rank() + dist.size() - 1) // dist.size()
  local bar = o.progress and dist.is_main() and require('tdrl.util.progress').new(math.max(share, 1), {label = o.progress})
  local done = 0
  local est = dist.map(#jobs, function(k)
    local i, j, seed = table.unpack(jobs[k])
    local eo = {}
    for key, v in pairs(o) do eo[key] = v end
    eo.seed = seed * 1000 + i * P + j
    eo.progress, eo.measure, eo.fit, eo.seeds = nil, nil, nil, nil
    if fit then eo.heldout = {pts[i], pts[j]} end
    local v = M.estimate(fit and fpts[i] or pts[i], fit and fpts[j] or pts[j], eo)
    done = done + 1
    if bar then bar:update(done) end
    return v
  end)
  local k = 0
  for i = 1, P do
    for j = with_diag and i or i + 1, P do
      local s = 0
      for _ in ipairs(seeds) do k = k + 1; s = s + est[k] end
      I:set(i, j, s / #seeds)
      I:set(j, i, s / #seeds)
    end
  end
  if bar then bar:finish() end
  if measure == "linfoot" then
    local R = T.zeros(P, P)
    for i = 1, P do
      for j = 1, P do R:set(i, j, i == j and 1 or M.linfoot(I:get(i, j))) end
    end
    return R, I, nil
  end
  local H = T.zeros(P)
  for p = 1, P do H[p] = I:get(p, p) end
  local denom = (H:view(P, 1) * H:view(1, P)):clamp(0) + 1e-8
  return I / denom:sqrt(), I, H
end

--- the paper's NMI matrix: dependence_matrix with measure = "reference" unless opts.measure says
--- otherwise
function M.nmi_matrix(codes, o)
  local c = {}
  for k, v in pairs(o or {}) do c[k] = v end
  c.measure = c.measure or "reference"
  return M.dependence_matrix(codes, c)
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
