-- The paper's downstream protocol (sections 3.1, 3.5, 3.6): for each task, each learning rate
-- of a sweep and each seed, train a fresh head with Adam (weight decay 1e-5, batch 256) for a
-- number of epochs, track validation accuracy every epoch and take the TEST accuracy at the
-- best VALIDATION epoch; choose the learning rate by the mean validation accuracy over seeds
-- (never by test); report the test accuracies of the seeds at that rate (mean, median, spread).
--
--   local protocol = require 'tdrl.heads.protocol'
--   local res = protocol.run({train = tr, val = va, test = te}, {head = "gru", epochs = 50})
--   res.tasks.shape.test_mean, res.tasks.shape.best_lr, ...
-- tr, va, te are trajectory tables (tdrl.traj). `point = k` trains on the k-th time point only
-- (the MLP-per-t protocol); `points = {..}` on a subset; otherwise on the whole trajectory.
-- Tasks with 2 classes use one logit and binary cross-entropy (CelebA attributes).
-- `patience = p` stops a run once p epochs pass without a better validation accuracy (epochs is
-- then the cap), so that every head trains to convergence at the cost it needs: the paper's
-- 1,500 fixed epochs are far more than an MLP needs and far more than a CPU affords for a GRU.
-- `standardize = true` feeds the heads codes scaled to zero mean and unit variance per point and
-- dimension (statistics of the training split): an affine map of the input, which the first layer
-- of every head can absorb, so it changes how fast a head learns, not what it can decode.
local T = require 'tdrl'
local optim = require 'tdrl.optim'
local heads = require 'tdrl.heads'
local traj = require 'tdrl.traj'
local dist = require 'tdrl.dist'

local M = {}

M.defaults = {
  head = "mlp", epochs = 100, batch = 256, weight_decay = 1e-5,
  lrs = {1e-3, 7.5e-4, 5e-4, 2.5e-4, 1e-4, 5e-5}, seeds = 3, clip = nil, -- clip: 1.0 for gru/transformer
  eval_batch = 2048, binary_bce = true, patience = nil, standardize = false,
  head_opts = nil, -- more options for the head's constructor ({points = K} for mlp_concat)
}

local function stats(xs)
  local n = #xs
  local s, mn, mx = 0, math.huge, -math.huge
  for _, v in ipairs(xs) do s = s + v; mn = math.min(mn, v); mx = math.max(mx, v) end
  local mean = s / n
  local var = 0
  for _, v in ipairs(xs) do var = var + (v - mean) ^ 2 end
  local sorted = {table.unpack(xs)}
  table.sort(sorted)
  local med = n % 2 == 1 and sorted[(n + 1) // 2] or (sorted[n // 2] + sorted[n // 2 + 1]) / 2
  return {mean = mean, median = med, std = n > 1 and math.sqrt(var / (n - 1)) or 0, min = mn, max = mx, n = n}
end
M.stats = stats

local function is_binary(cfg, classes) return cfg.binary_bce and classes == 2 end

local function loss_of(logits, y, binary)
  local F = require('tdrl.nn').F
  if binary then return F.binary_cross_entropy_with_logits(logits:view(-1), y:float()) end
  return F.cross_entropy(logits, y)
end

-- accuracy of head on (X, y) in eval mode
local function accuracy(head, X, y, times, binary, eb)
  head:eval()
  local correct = 0
  local N = X:size(1)
  T.no_grad(function()
    for s = 1, N, eb do
      local n = math.min(eb, N - s + 1)
      local logits = head(X:narrow(1, s, n), times)
      local pred = binary and logits:view(-1):gt(0):long() or logits:argmax(2)
      correct = correct + pred:eq(y:narrow(1, s, n)):sum():item()
    end
  end)
  head:train()
  return correct / N
end

--- train_one(d, classes, lr, seed, cfg) -> {best_val, test_at_best, best_epoch, epochs, curve, head}: one
--- head trained on d = {Xtr, ytr, Xva, yva, Xte, yte, times} (codes (N, P, latent), labels int64 (N))
function M.train_one(d, classes, lr, seed, cfg)
  local gen = T.Generator(seed)
  local binary = is_binary(cfg, classes)
  local latent = d.Xtr:size(3)
  local hopts = {generator = gen}
  for k, v in pairs(cfg.head_opts or {}) do hopts[k] = v end
  local head = heads.new(cfg.head, latent, binary and 1 or classes, hopts)
  head:train()
  local opt = optim.Adam(head:parameters(), {lr = lr, weight_decay = cfg.weight_decay})
  local N = d.Xtr:size(1)
  local B = math.min(cfg.batch, N)
  local steps = N // B -- drop_last, as the reference's loader
  local best = {val = -1, test = 0, epoch = 0}
  local curve = {}
  for epoch = 1, cfg.epochs do
    local perm = T.randperm(N, gen)
    for s = 0, steps - 1 do
      local idx = perm:narrow(1, s * B + 1, B)
      local xb, yb = d.Xtr:index_select(1, idx), d.ytr:index_select(1, idx)
      opt:zero_grad()
      local loss = loss_of(head(xb, d.times), yb, binary)
      loss:backward()
      if cfg.clip then optim.clip_grad_norm_(head, cfg.clip) end
      opt:step()
    end
    local va = accuracy(head, d.Xva, d.yva, d.times, binary, cfg.eval_batch)
    curve[epoch] = va
    if va > best.val then
      best.val, best.epoch = va, epoch
      best.test = accuracy(head, d.Xte, d.yte, d.times, binary, cfg.eval_batch)
    end
    if cfg.patience and epoch - best.epoch >= cfg.patience then break end
  end
  return {best_val = best.val, test_at_best = best.test, best_epoch = best.epoch, epochs = #curve, curve = curve,
    head = head}
end

local function restrict(tr, cfg)
  if cfg.point then return traj.select_points(tr, {cfg.point}) end
  if cfg.points then return traj.select_points(tr, cfg.points) end
  return tr
end

--- codes (N, P, d) of the three splits scaled by the training split's mean and std per (point, dim)
function M.standardize(tr, va, te)
  local mu = tr.codes:mean(1, true)                                  -- (1, P, d)
  local sd = ((tr.codes - mu) ^ 2):mean(1, true):sqrt():clamp(1e-6)  -- (1, P, d)
  local function scaled(s)
    local c = {}
    for k, v in pairs(s) do c[k] = v end
    c.codes = ((s.codes - mu) / sd):contiguous()
    return c
  end
  return scaled(tr), scaled(va), scaled(te)
end

--- run({train =, val =, test =} trajectory tables, cfg) -> {tasks = {task = result}, config = cfg}
--- cfg: the keys of M.defaults (seeds: a count or a list), and point / points (above), tasks (a
--- subset of the tasks), on_run(task, lr, seed, run), called after each run on the rank that
--- trained it, and summarize(task, lr, seed, run), a value (numbers, tables) read off the trained
--- head there, kept as run.summary. Every (task, learning rate, seed) is an independent job:
--- under mpirun the jobs are spread over the ranks (tdrl.dist.map) and every rank gets every
--- result.
--- result: best_lr, val_mean (at best_lr), test = {per-seed accuracies at best_lr}, test_mean,
--- test_median, test_std, test_min, test_max, classes, val_by_lr = {[i] = {lr =, val_mean =,
--- runs = {per seed: epochs, best_val, test_at_best, ...}}}
function M.run(sets, opts)
  if type(sets) ~= "table" or not (sets.train and sets.val and sets.test) then
    error("heads protocol: expected {train =, val =, test =} trajectory sets, got " .. type(sets), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("heads protocol: options must be a table, got " .. type(opts), 2) end
  local cfg = {}
  for k, v in pairs(M.defaults) do cfg[k] = v end
  for k, v in pairs(opts or {}) do cfg[k] = v end
  if cfg.clip == nil and (cfg.head == "gru" or cfg.head == "transformer") then cfg.clip = 1.0 end
  heads.resolve(cfg.head, 2) -- a misspelt head fails here, before any training
  local tr, va, te = restrict(sets.train, cfg), restrict(sets.val, cfg), restrict(sets.test, cfg)
  if cfg.standardize then tr, va, te = M.standardize(tr, va, te) end
  local seeds = type(cfg.seeds) == "table" and cfg.seeds or {}
  if type(cfg.seeds) == "number" then for s = 1, cfg.seeds do seeds[s] = s end end
  local tasks = cfg.tasks or tr.tasks
  local out = {tasks = {}, config = cfg}
  local data, jobs = {}, {}
  for _, task in ipairs(tasks) do
    local classes = tr.classes[task]
    if not classes then error("protocol: no class count for task '" .. tostring(task) .. "'", 2) end
    local d = {Xtr = tr.codes, ytr = tr.labels[task], Xva = va.codes, yva = va.labels[task], Xte = te.codes,
      yte = te.labels[task], times = tr.times, classes = classes}
    if not (d.ytr and d.yva and d.yte) then error("protocol: task '" .. task .. "' has no labels in every split", 2) end
    data[task] = d
    for i in ipairs(cfg.lrs) do
      for _, seed in ipairs(seeds) do jobs[#jobs + 1] = {task = task, i = i, seed = seed} end
    end
  end
  local results = dist.map(#jobs, function(j)
    local job = jobs[j]
    local lr = cfg.lrs[job.i]
    local r = M.train_one(data[job.task], data[job.task].classes, lr, job.seed, cfg)
    if cfg.on_run then cfg.on_run(job.task, lr, job.seed, r) end
    if cfg.summarize then r.summary = cfg.summarize(job.task, lr, job.seed, r) end
    r.head = nil
    return r
  end)
  local next_job = 1
  for _, task in ipairs(tasks) do
    local classes = data[task].classes
    local by_lr = {}
    local best_i, best_mean = 1, -1
    for i, lr in ipairs(cfg.lrs) do
      local runs = {}
      for _ in ipairs(seeds) do
        runs[#runs + 1] = results[next_job]
        next_job = next_job + 1
      end
      local vals = {}
      for j, r in ipairs(runs) do vals[j] = r.best_val end
      local m = stats(vals).mean
      by_lr[i] = {lr = lr, val_mean = m, runs = runs}
      if m > best_mean then best_mean, best_i = m, i end
    end
    local tests = {}
    for j, r in ipairs(by_lr[best_i].runs) do tests[j] = r.test_at_best end
    local st = stats(tests)
    out.tasks[task] = {best_lr = cfg.lrs[best_i], val_mean = best_mean, test = tests, test_mean = st.mean,
      test_median = st.median, test_std = st.std, test_min = st.min, test_max = st.max, val_by_lr = by_lr,
      classes = classes}
  end
  return out
end

return M
