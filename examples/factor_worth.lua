-- What each factor of the data is worth to the score network, by noise level. Score networks are
-- trained conditioned on an oracle code (the one-hot labels of the data's factors, in place of an
-- encoder's code), once with every factor and once with each named factor left out (its slots
-- zeroed, so that every variant has the same network). Their DSM losses on the same held-out
-- images, times and noise show what knowing the factor saves at each t. A factor that saves
-- nothing gives an encoder trained by DSM no gradient to code it: no training budget will make
-- the trajectory hold it. This is the "why" behind a factor a probe cannot read (docs/science.md).
--
--   ./tdrl examples/factor_worth.lua                          # Synthetic: all, -shape, -location, none
--   ./tdrl examples/factor_worth.lua --variants=-shape --iters=8000
--   ./tdrl examples/factor_worth.lua --quick                  # a smoke run
--
-- Variants: "all", "-<task>" (every factor but that one) and "none" (a zero code). Each variant
-- trains in <out>/<variant>/ with a checkpoint at every evaluation, so a rerun resumes, and
-- variants can run as separate processes on the same --out. The summary (factor_worth.csv,
-- factor_worth.json and a figure) covers the variants that have reached the last evaluation, and
-- a paired measure on the "all" network alone (swap-<task>: its loss when told another image's
-- value of the factor), free of the spread between separately trained networks.
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local optim = require 'tdrl.optim'
local D = require 'tdrl.diffusion'
local data = require 'tdrl.data'
local checkpoint = require 'tdrl.checkpoint'
local json = require 'tdrl.json'
local args = require 'tdrl.util.args'
local fs = require 'tdrl.util.fs'
local progress = require 'tdrl.util.progress'

local o = args.parse(arg, {dataset = "synthetic", variants = "all,-shape,-location,none", iters = 4000,
  batch = 32, lr = 1e-3, warmup = 100, preset = "tiny", eval_every = 1000, bins = 10, n_eval = 500, seed = 0,
  out = "runs/factor-worth-synthetic", quick = false})
if o.quick then o.iters, o.eval_every, o.n_eval, o.variants = 20, 10, 40, "all,-shape" end
if o.iters < 1 or o.eval_every < 1 or o.bins < 1 or o.n_eval < 1 then
  error("factor_worth: --iters, --eval_every, --bins and --n_eval must be positive", 0)
end

local ctor = data[o.dataset]
if type(ctor) ~= "function" then error(string.format("factor_worth: unknown --dataset %q", o.dataset), 0) end
local sets = {train = ctor({split = "train"}), val = ctor({split = "val"})}
local tasks = sets.train:task_names()
local classes = sets.train.classes

-- one-hot codes of every factor, side by side: (N, sum of classes), and each task's slots
local width, slots = 0, {}
for _, task in ipairs(tasks) do
  slots[task] = {width + 1, width + classes[task]}
  width = width + classes[task]
end
local function codes_of(ds)
  local x, y = ds:tensors()
  local parts = {}
  for i, task in ipairs(tasks) do parts[i] = T.eye(classes[task]):index_select(1, y[task]) end
  return x, T.cat(parts, 2):contiguous()
end
local Xtr, Ctr = codes_of(sets.train)
local Xev, Cev = codes_of(sets.val)
Xev, Cev = Xev:narrow(1, 1, math.min(o.n_eval, Xev:size(1))), Cev:narrow(1, 1, math.min(o.n_eval, Cev:size(1)))

--- the mask (width) of a variant: 1 on the slots of the factors it is told
local function mask_of(variant)
  if variant == "none" then return T.zeros(width) end
  if variant == "all" then return T.ones(width) end
  local task = variant:match("^%-(.+)$")
  if not task or not slots[task] then
    error(string.format("factor_worth: unknown variant %q (all, none, or -<task> with task one of %s)", variant,
      table.concat(tasks, ", ")), 0)
  end
  local keep = {}
  for i = 1, width do keep[i] = (i >= slots[task][1] and i <= slots[task][2]) and 0 or 1 end
  return T.tensor(keep)
end

-- the oracle "encoder": the code of the current batch, whatever x0 and t are
local Oracle = nn.class('OracleCode', nn.Module)
function Oracle:__init() nn.Module.__init(self) end
function Oracle:forward() return {z = self.code} end

local cfg = D.presets.resolve({preset = o.preset, encoder = "drl", latent = width, regulariser = "none",
  batch = o.batch, lr = o.lr, warmup = o.warmup, seed = o.seed})

-- held-out losses at bin-centre times, every image at every time with one fixed noise draw:
-- {bin -> mean 0.5 |sigma s + eps|^2} and the bins' t
local function evaluate(model, oracle, mask, codes)
  codes = codes or Cev
  model:eval()
  local gen = T.Generator(o.seed + 104729)
  local n, B = Xev:size(1), 100
  local sums = {}
  for b = 1, o.bins do sums[b] = 0 end
  T.no_grad(function()
    for i = 1, n, B do
      local m = math.min(B, n - i + 1)
      local x0 = Xev:narrow(1, i, m)
      oracle.code = codes:narrow(1, i, m) * mask:view(1, -1)
      for b = 1, o.bins do
        local t = T.full({m}, (b - 0.5) / o.bins)
        local _, parts = D.loss.dsm(model, x0, {t = t, generator = gen, regulariser = "none"})
        sums[b] = sums[b] + parts.per_sample:sum():item()
      end
    end
  end)
  model:train()
  local out = {}
  for b = 1, o.bins do out[b] = sums[b] / n end
  return out
end

local function run_variant(variant)
  local dir = o.out .. "/" .. variant
  fs.mkdir(dir)
  local mask = mask_of(variant)
  local gen = T.Generator(cfg.seed)
  local oracle = Oracle()
  local model = D.NCSNpp(cfg, {encoder = oracle, sde = D.SDE.new(cfg), generator = gen})
  local opt = optim.Adam(model:parameters(), {lr = cfg.lr, betas = {cfg.beta1, cfg.beta2}, eps = cfg.adam_eps})
  local sched = cfg.warmup > 0 and optim.LinearWarmup(opt, {warmup = cfg.warmup}) or nil
  local ck_path, ev_path = dir .. "/checkpoint.safetensors", dir .. "/eval.json"
  local step, evals = 0, {}
  if fs.exists(ck_path) then
    step = checkpoint.load(ck_path, {model = model, optimizer = opt, schedule = sched, generators = {run = gen}}).step
    evals = json.decode(fs.read(ev_path))
  end
  local bar = progress.new(o.iters, {label = "factor worth " .. variant, first = step})
  model:train()
  while step < o.iters do
    local idx = T.randint(0, Xtr:size(1), {cfg.batch}, gen)
    oracle.code = Ctr:index_select(1, idx) * mask:view(1, -1)
    opt:zero_grad()
    local loss = D.loss.dsm(model, Xtr:index_select(1, idx), {generator = gen, regulariser = "none"})
    loss:backward()
    optim.clip_grad_norm_(model, cfg.grad_clip)
    opt:step()
    if sched then sched:step() end
    step = step + 1
    bar:update(step, {loss = loss:item()})
    if step % o.eval_every == 0 or step == o.iters then
      evals[#evals + 1] = {step = step, loss = evaluate(model, oracle, mask)}
      -- the evaluations first: a checkpoint never runs ahead of the losses recorded for it
      fs.write(ev_path, json.encode(evals) .. "\n")
      checkpoint.save(ck_path, {model = model, optimizer = opt, schedule = sched, generators = {run = gen}, step = step})
    end
  end
  bar:finish({})
  return evals, model, oracle, mask
end

-- The variants are trained apart, so their differences carry the spread between training runs.
-- A paired measure on one network: the "all" network's loss when one factor's code is taken
-- from another image (a fixed permutation of the evaluation images) against its loss with the
-- true code, at the same times and noise. It says how much that network relies on the factor.
local function ablations(model, oracle, mask)
  local path = o.out .. "/all/ablation.json"
  if fs.exists(path) then return json.decode(fs.read(path)) end
  local perm = T.randperm(Cev:size(1), T.Generator(o.seed + 15485863))
  local out = {}
  for _, task in ipairs(tasks) do
    local lo, hi = slots[task][1], slots[task][2]
    local keep = {}
    for i = 1, width do keep[i] = (i >= lo and i <= hi) and 0 or 1 end
    keep = T.tensor(keep):view(1, -1)
    local swapped = Cev * keep + Cev:index_select(1, perm) * (1 - keep)
    out[task] = evaluate(model, oracle, mask, swapped)
  end
  fs.write(path, json.encode(out) .. "\n")
  return out
end

local variants = {}
for v in o.variants:gmatch("[^,]+") do mask_of(v); variants[#variants + 1] = v end
local results = {}
local ablation
for _, v in ipairs(variants) do
  local evals, model, oracle, mask = run_variant(v)
  results[v] = evals
  if v == "all" and evals[#evals].step == o.iters then ablation = ablations(model, oracle, mask) end
end
if not ablation and fs.exists(o.out .. "/all/ablation.json") then ablation = json.decode(fs.read(o.out .. "/all/ablation.json")) end

-- the summary over every variant in the folder that reached the last evaluation
local known = {"all", "none"}
for _, task in ipairs(tasks) do known[#known + 1] = "-" .. task end
for _, name in ipairs(known) do
  local p = o.out .. "/" .. name .. "/eval.json"
  if not results[name] and fs.exists(p) then results[name] = json.decode(fs.read(p)) end
end
local final = {}
for v, evals in pairs(results) do
  if evals[#evals] and evals[#evals].step == o.iters then final[v] = evals[#evals].loss end
end
if not final.all then
  print("factor_worth: the variant 'all' has not finished; no summary yet")
  return
end
-- the paired ablations of the "all" network read as variants "swap-<task>"
for task, loss in pairs(ablation or {}) do final["swap-" .. task] = loss end
local rows = {}
local names = {}
for v in pairs(final) do names[#names + 1] = v end
table.sort(names)
local sde = D.SDE.new(cfg)
print(string.format("\nDSM loss on %d held-out images after %d steps, per t bin; a factor's worth = loss without it "
  .. "- loss with every factor (-task: a network trained without it; swap-task: the 'all' network told another "
  .. "image's value)", Xev:size(1), o.iters))
for b = 1, o.bins do
  local lo, hi = (b - 1) / o.bins, b / o.bins
  local line = {string.format("t %.1f-%.1f (sigma %6.3f-%6.2f)  all %8.2f", lo, hi, sde:sigma_of(lo), sde:sigma_of(hi),
    final.all[b])}
  for _, v in ipairs(names) do
    local worth = final[v][b] - final.all[b]
    rows[#rows + 1] = {variant = v, bin = b, t_lo = lo, t_hi = hi, sigma_lo = sde:sigma_of(lo),
      sigma_hi = sde:sigma_of(hi), loss = final[v][b], worth = worth}
    if v ~= "all" then line[#line + 1] = string.format("%s %+8.2f", v, worth) end
  end
  print(table.concat(line, "  "))
end
require('tdrl.paper.run').write_result(o.out, "factor_worth", {config = o, rows = rows, evals = results}, rows,
  {"variant", "bin", "t_lo", "t_hi", "sigma_lo", "sigma_hi", "loss", "worth"})
local series = {}
for _, v in ipairs(names) do
  if v ~= "all" then
    local xs, ys = {}, {}
    for b = 1, o.bins do xs[b], ys[b] = (b - 0.5) / o.bins, final[v][b] - final.all[b] end
    local label = v == "none" and "every factor (none told)" or v:match("^swap%-(.+)$") and
      (v:sub(6) .. " (all network, told another image's)") or (v:sub(2) .. " (trained without)")
    series[#series + 1] = {label = label, x = xs, y = ys}
  end
end
require('tdrl.plot').lines({series = series}, {title = "what knowing a factor saves the score network",
  xlabel = "diffusion time t", ylabel = "DSM loss without it - with it"}, o.out .. "/factor_worth.png")
print(string.format("factor worth: %s/factor_worth.csv, .json and .png", o.out))
