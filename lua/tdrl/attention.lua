-- What each part of the trajectory is used for (sections 3.3 and 3.4 of the paper): attention
-- profiles of the analysis Transformer (one application, CLS key masked), one per task, the
-- Jensen-Shannon divergences between tasks' profiles, and the t = 0.5 masking ablation.
--
--   local A = require 'tdrl.attention'
--   local prof = A.profiles({train =, val =, test =}, {seeds = {1, 2}, epochs = 30})
--   prof.tasks.shape.profile  -- {P numbers summing to 1}: mean CLS attention per time token
--   local J = A.jsd_matrix(prof)                 -- (tasks x tasks) tensor, base-2 logarithms
local T = require 'tdrl'
local protocol = require 'tdrl.heads.protocol'

local M = {}

--- Jensen-Shannon divergence of two distributions (lists or 1-D tensors), base-2 logs:
--- 0 for identical profiles, 1 for disjoint ones
-- arguments checked up front: a wrong call names the function, not one of its lines
local function need(cond, fmt, ...) if not cond then error(string.format(fmt, ...), 3) end end

function M.jsd(a, b)
  need((type(a) == "table" or T.is_tensor(a)) and (type(b) == "table" or T.is_tensor(b)),
    "jsd: expected two distributions (lists or 1-D tensors), got %s and %s", type(a), type(b))
  if T.is_tensor(a) then a = a:totable() end
  if T.is_tensor(b) then b = b:totable() end
  if #a ~= #b then error(string.format("jsd: distributions of %d and %d bins", #a, #b), 2) end
  local sa, sb = 0, 0
  for i = 1, #a do sa = sa + a[i]; sb = sb + b[i] end
  local kl_a, kl_b = 0, 0
  for i = 1, #a do
    local p, q = a[i] / sa, b[i] / sb
    local m = (p + q) / 2
    if p > 0 then kl_a = kl_a + p * math.log(p / m, 2) end
    if q > 0 then kl_b = kl_b + q * math.log(q / m, 2) end
  end
  return 0.5 * kl_a + 0.5 * kl_b
end

--- mean CLS attention over the time tokens of a trained analysis head on trajectories
--- (B, P, latent): averaged over examples and heads -> list of P numbers summing to 1
function M.profile_of(head, tr, batch)
  need(type(head) == "table" and type(head.eval) == "function", "attention.profile_of: expected a trained head, got %s", type(head))
  need(type(tr) == "table" and T.is_tensor(tr.codes), "attention.profile_of: expected trajectories {codes =, ...}, got %s", type(tr))
  head:eval()
  local P = tr.codes:size(2)
  local sum = T.zeros(P)
  local N = tr.codes:size(1)
  batch = batch or 1024
  T.no_grad(function()
    for s = 1, N, batch do
      local n = math.min(batch, N - s + 1)
      local _, w = head(tr.codes:narrow(1, s, n), tr.times, {need_weights = true}) -- (n, heads, P)
      sum = sum + w:sum({1, 2})
    end
  end)
  head:train()
  local total = sum:sum():item()
  local out = {}
  for p = 1, P do out[p] = sum[p] / total end
  return out
end

--- profiles(sets, opts): trains the analysis Transformer per task and seed with the protocol
--- (learning rate chosen on validation) and averages the test-set profiles over seeds.
--- opts: seeds, epochs, lrs, batch, patience, standardize (as protocol.run), tasks.
--- returns {tasks = {task = {profile = {...}, band_lo = {...}, band_hi = {...}, accuracy =,
--- per_seed = {{...}, ...}, ablation = {all =, without_mid =, only_mid =, mid_time =} (test
--- accuracies averaged over seeds)}}, times = {...}, task_order = {...}}
function M.profiles(sets, opts)
  need(type(sets) == "table" and sets.train and sets.val and sets.test,
    "attention.profiles: expected {train =, val =, test =} trajectory sets, got %s", type(sets))
  need(opts == nil or type(opts) == "table", "attention.profiles: options must be a table, got %s", type(opts))
  opts = opts or {}
  local cfg = {}
  for k, v in pairs(opts) do cfg[k] = v end
  cfg.head = "transformer_analysis"
  -- standardised once here, so that the profiles and ablations read the codes the heads saw
  if cfg.standardize then
    local tr, va, te = protocol.standardize(sets.train, sets.val, sets.test)
    sets, cfg.standardize = {train = tr, val = va, test = te}, false
  end
  -- every trained head is read where it was trained (under mpirun, on any rank): its profile
  -- and ablation travel with its results, and those of the heads chosen on validation are used
  cfg.summarize = function(task, lr, seed, run)
    return {profile = M.profile_of(run.head, sets.test), ablation = M.ablation(run.head, sets.test, task)}
  end
  local res = protocol.run(sets, cfg)
  local out = {tasks = {}, times = sets.test.times:totable(), task_order = cfg.tasks or sets.train.tasks}
  for _, task in ipairs(out.task_order) do
    local r = res.tasks[task]
    local per_seed = {}
    local seeds = type(cfg.seeds) == "table" and cfg.seeds or {}
    if type(cfg.seeds) == "number" or cfg.seeds == nil then
      for s = 1, cfg.seeds or protocol.defaults.seeds do seeds[s] = s end
    end
    local abl = {all = 0, without_mid = 0, only_mid = 0}
    local chosen
    for _, e in ipairs(r.val_by_lr) do if e.lr == r.best_lr then chosen = e.runs end end
    for k in ipairs(seeds) do
      per_seed[#per_seed + 1] = chosen[k].summary.profile
      local a = chosen[k].summary.ablation
      for k in pairs(abl) do abl[k] = abl[k] + a[k] / #seeds end
      abl.mid_time = a.mid_time
    end
    local P = #per_seed[1]
    local mean, lo, hi = {}, {}, {}
    for p = 1, P do
      local s, mn, mx = 0, math.huge, -math.huge
      for _, prof in ipairs(per_seed) do s = s + prof[p]; mn = math.min(mn, prof[p]); mx = math.max(mx, prof[p]) end
      mean[p], lo[p], hi[p] = s / #per_seed, mn, mx
    end
    out.tasks[task] = {profile = mean, band_lo = lo, band_hi = hi, per_seed = per_seed, accuracy = r.test_mean,
      best_lr = r.best_lr, ablation = abl}
  end
  return out
end

--- the task x task JSD matrix of profiles (from profiles()) -> (K, K) tensor, names
function M.jsd_matrix(prof)
  need(type(prof) == "table" and type(prof.task_order) == "table" and type(prof.tasks) == "table",
    "attention.jsd_matrix: expected the result of profiles(), got %s", type(prof))
  local names = prof.task_order
  local K = #names
  local J = T.zeros(K, K)
  for i = 1, K do
    for j = 1, K do J:set(i, j, M.jsd(prof.tasks[names[i]].profile, prof.tasks[names[j]].profile)) end
  end
  return J, names
end

--- the spread of the profiles over seeds: between[i][j] = {JSD of task i's and task j's profiles
--- of the same seed, per seed}, within[task] = {JSD between the profiles of every two seeds of
--- the task}, centre[task] = {E[t] under the profile, per seed}, entropy[task] = {bits, per seed}.
--- Tasks read different parts of the trajectory when the between-task values exceed the
--- within-task ones.
function M.spread(prof)
  local names = prof.task_order
  local out = {between = {}, within = {}, centre = {}, entropy = {}}
  for i, a in ipairs(names) do
    out.between[i] = {}
    local pa = prof.tasks[a].per_seed
    for j, b in ipairs(names) do
      local pb, v = prof.tasks[b].per_seed, {}
      for s = 1, math.min(#pa, #pb) do v[s] = M.jsd(pa[s], pb[s]) end
      out.between[i][j] = v
    end
    local w = {}
    for s = 1, #pa do
      for u = s + 1, #pa do w[#w + 1] = M.jsd(pa[s], pa[u]) end
    end
    out.within[a] = w
    local c, h = {}, {}
    for s, p in ipairs(pa) do
      local m, e = 0, 0
      for k, v in ipairs(p) do
        m = m + v * prof.times[k]
        if v > 0 then e = e - v * math.log(v, 2) end
      end
      c[s], h[s] = m, e
    end
    out.centre[a], out.entropy[a] = c, h
  end
  return out
end

--- the t = 0.5 ablation: test accuracy of a trained Transformer head with all tokens, with the
--- token nearest t = 0.5 hidden, and with only that token visible
function M.ablation(head, te, task)
  need(type(head) == "table" and type(head.eval) == "function", "attention.ablation: expected a trained head, got %s", type(head))
  need(type(te) == "table" and T.is_tensor(te.times) and T.is_tensor(te.codes),
    "attention.ablation: expected test trajectories {codes =, times =, ...}, got %s", type(te))
  local times = te.times:totable()
  local mid, best = 1, math.huge
  for i, t in ipairs(times) do
    if math.abs(t - 0.5) < best then best, mid = math.abs(t - 0.5), i end
  end
  local P, N = #times, te.codes:size(1)
  local y = te.labels[task]
  local function acc(mask)
    head:eval()
    local m = mask and mask:view(1, P):expand(N, P) or nil
    local logits = T.no_grad(function() return head(te.codes, te.times, {mask = m}) end)
    head:train()
    return logits:argmax(2):eq(y):float():mean():item()
  end
  local hide_mid = T.zeros(P)
  hide_mid[mid] = 1
  local only_mid = T.ones(P)
  only_mid[mid] = 0
  return {all = acc(nil), without_mid = acc(hide_mid), only_mid = acc(only_mid), mid_time = times[mid]}
end

return M
