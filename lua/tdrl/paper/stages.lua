-- The paper's experiments as stages, each taking what the one before returned: data (data.lua)
-- -> model -> trajectories -> heads / analyses (MINE, attention, granularity) -> findings
-- (findings.lua). Every stage writes its files in a run folder, so a rerun after Ctrl-C skips
-- what is done.
--
--   local P = require 'tdrl.paper'
--   local cfg = P.config(arg)
--   local sets = P.sets(cfg)
--   local model = P.model(cfg, dir, "vdrl", {encoder = "vdrl", latent = 16}, sets)  -- train or resume
--   local tr = P.trajectories(model, sets, 10, dir, "vdrl")    -- {train, val, test}
--   local h = P.heads(tr, cfg, dir, "vdrl")                     -- MLP per t, GRU, Transformer
--   P.figure1(h, dir, "vdrl")                                   -- figure1-vdrl-<task>.png
local T = require 'tdrl'
local C = require 'tdrl.paper.config'
local E = require 'tdrl.paper.data'
local R = require 'tdrl.paper.run'
local trainer = require 'tdrl.diffusion.trainer'
local traj = require 'tdrl.traj'
local protocol = require 'tdrl.heads.protocol'
local json = require 'tdrl.json'
local fs = require 'tdrl.util.fs'
local dist = require 'tdrl.dist'

local P = {}
-- Under mpirun every rank runs every stage (training data-parallel, sweeps spread over the
-- ranks) and rank 0 alone writes the run folder: `main` guards each write, and a decision
-- read from the folder is rank 0's (dist.broadcast), so all ranks take the same path.
local main = dist.is_main()

-- figures: drawn by rank 0; the other ranks' calls do nothing
local no_plot = setmetatable({}, {__index = function() return function() end end})
local function plot() return main and require 'tdrl.plot' or no_plot end

--- trains (or resumes, or just loads when finished) a diffusion model of config dcfg (a full
--- diffusion config: preset fields) on sets.train in folder out; returns model, summary
function P.train_model(dcfg, sets, out, label)
  local X = E.images(sets.train)
  local Xv = E.images(sets.val)
  dcfg.channels, dcfg.image_size = X:size(2), X:size(3)
  return trainer.run(dcfg, {train = X, eval = Xv}, {out = out, label = label})
end

--- trains (or resumes, or just loads when finished) a diffusion model in dir/model-<name>;
--- over: fields of the diffusion config to change (encoder, latent, iters, ...)
local function model_config(cfg, over)
  local dcfg = C.diffusion_config(cfg)
  for k, v in pairs(over or {}) do dcfg[k] = v end
  return dcfg
end

function P.model(cfg, dir, name, over, sets)
  local dcfg = model_config(cfg, over)
  sets = sets or E.sets(cfg)
  local out = dir .. "/model-" .. name
  local model, summary = P.train_model(dcfg, sets, out, "diffusion " .. name)
  return model, summary, dcfg, out
end

--- the diffusion model of P.model(cfg, dir, name, over, sets) as initialised, before any training
--- step (the same draw its training starts from), in eval mode: the control that tells what
--- training put in the code from what any convolutional feature map of the image holds
function P.untrained(cfg, over, sets)
  local dcfg = model_config(cfg, over)
  local train = (sets or E.sets(cfg)).train
  dcfg.channels, dcfg.image_size = train.channels, train.height
  local model = trainer.setup(dcfg).model
  model:eval()
  return model, dcfg
end

-- what a trajectory file records of its model: the checkpoint, and the step and config read
-- from it when not given
local function provenance_of(p)
  p = p or {}
  if not p.checkpoint or (p.step ~= nil and p.config ~= nil) or not fs.exists(p.checkpoint) then return p end
  local _, meta = T.load(p.checkpoint)
  local out = {}
  for k, v in pairs(p) do out[k] = v end
  if out.step == nil then out.step = tonumber(meta.step) end
  if out.config == nil and meta.config then out.config = json.decode(meta.config) end
  return out
end

--- trajectories at granularity g for the three splits, cached as safetensors in dir;
--- model may be a function returning the model, called only when a file must be computed;
--- provenance = {checkpoint = path} (step and config are read from the checkpoint)
function P.trajectories(model, sets, g, dir, name, provenance)
  local out = {}
  local function get_model()
    if type(model) == "function" then model = model() end
    return model
  end
  for _, split in ipairs({"train", "val", "test"}) do
    local path = string.format("%s/traj-%s-g%d-%s.safetensors", dir, name, g, split)
    if dist.broadcast(fs.exists(path)) then
      out[split] = traj.load(path)
    else
      out[split] = traj.extract(get_model(), sets[split], {granularity = g, progress = string.format("codes %s g%d %s", name, g, split)})
      provenance = provenance_of(provenance)
      if main then traj.save(path, out[split], provenance) end
    end
  end
  return out
end

local function summary_row(kind, point, time, task, r)
  return {head = kind, point = point, t = time, task = task, best_lr = r.best_lr, val = r.val_mean,
    test_mean = r.test_mean, test_median = r.test_median, test_std = r.test_std, test_min = r.test_min,
    test_max = r.test_max, seeds = #r.test, test = r.test}
end

--- the protocol options of cfg for the single-point MLPs (seq false) or the sequence heads (true)
function P.head_options(cfg, seq)
  return {epochs = seq and cfg.head_epochs_seq or cfg.head_epochs, lrs = seq and cfg.head_lrs_seq or cfg.head_lrs,
    seeds = seq and cfg.head_seeds_seq or cfg.head_seeds, batch = 256,
    patience = (cfg.head_patience or 0) > 0 and cfg.head_patience or nil, standardize = cfg.head_standardize}
end

--- the downstream table: an MLP per time point, a GRU and a Transformer, for every task.
--- Writes heads-<name>.json and heads-<name>.csv; returns {rows = {...}, tasks = {...}, times = {...}}
function P.heads(tr, cfg, dir, name)
  local rows = {}
  local times = tr.test.times:totable()
  local P_ = #times
  local kinds = {}
  for k = 1, P_ do kinds[#kinds + 1] = {"mlp", k} end
  kinds[#kinds + 1] = {"gru"}
  kinds[#kinds + 1] = {"transformer"}
  local bar = require('tdrl.util.progress').new(#kinds, {label = "heads " .. name})
  for i, kd in ipairs(kinds) do
    local c = P.head_options(cfg, kd[1] ~= "mlp")
    c.head, c.point = kd[1], kd[2]
    local res = protocol.run(tr, c)
    for _, task in ipairs(tr.train.tasks) do
      rows[#rows + 1] = summary_row(kd[1], kd[2], kd[2] and times[kd[2]], task, res.tasks[task])
    end
    bar:update(i)
  end
  bar:finish()
  local out = {rows = rows, tasks = tr.train.tasks, times = times}
  R.write_result(dir, "heads-" .. name, out, rows,
    {"head", "point", "t", "task", "best_lr", "val", "test_mean", "test_median", "test_std", "test_min", "test_max", "seeds"})
  return out
end

--- per task: {best = the MLP row with the best validation accuracy, traj = the GRU or Transformer
--- row with the better validation accuracy, mlp = {point -> row}, gru =, transformer =}
function P.heads_summary(h)
  local by = {}
  for _, task in ipairs(h.tasks) do by[task] = {mlp = {}} end
  for _, r in ipairs(h.rows) do
    local b = by[r.task]
    if r.head == "mlp" then
      b.mlp[r.point] = r
      if not b.best or r.val > b.best.val then b.best = r end
    else
      b[r.head] = r
      if not b.traj or r.val > b.traj.val then b.traj = r end
    end
  end
  return by
end

--- the accuracy of always answering the most frequent class of y (int64 (N))
local function chance_of(y)
  local counts = {}
  local best = 0
  for _, v in ipairs(y:totable()) do
    counts[v] = (counts[v] or 0) + 1
    best = math.max(best, counts[v])
  end
  return best / y:size(1)
end

--- {task = the share of the most frequent class} of a labelled data set: the accuracy of always
--- answering that class
function P.chance(ds)
  local out = {}
  for _, task in ipairs(ds.tasks) do out[task] = chance_of(ds:labels(task)) end
  return out
end

--- probe(tr, {heads = {"mlp", "gru"}, epochs = 1500, patience = 100, lr = 1e-3, seed = 1}) -> how
--- decodable each task is from the trajectories tr = {train, val, test}: every probe trained to
--- convergence (early stopping on validation, standardised codes); "mlp" is one MLP per time
--- point. The best probe of a task is chosen by VALIDATION accuracy and reported by its test
--- accuracy. Returns {tasks, times, chance = {task = p}, probes = {{head, point, t, task, val, test}},
--- best = {task = {head, point, t, val, test}}}
function P.probe(tr, o)
  o = o or {}
  local times = tr.test.times:totable()
  local base = {epochs = o.epochs or 1500, patience = o.patience or 100, lrs = {o.lr or 1e-3},
    seeds = {o.seed or 1}, batch = 256, standardize = true}
  local runs = {}
  for _, head in ipairs(o.heads or {"mlp", "gru"}) do
    if head == "mlp" then
      for k = 1, #times do runs[#runs + 1] = {head = "mlp", point = k} end
    else
      runs[#runs + 1] = {head = head}
    end
  end
  local out = {tasks = tr.train.tasks, times = times, chance = {}, probes = {}, best = {}}
  for _, task in ipairs(out.tasks) do out.chance[task] = chance_of(tr.test.labels[task]) end
  for _, r in ipairs(runs) do
    local c = {}
    for k, v in pairs(base) do c[k] = v end
    c.head, c.point = r.head, r.point
    local res = protocol.run(tr, c)
    for _, task in ipairs(out.tasks) do
      local x = res.tasks[task]
      local row = {head = r.head, point = r.point, t = r.point and times[r.point], task = task, val = x.val_mean,
        test = x.test_mean, epochs = x.val_by_lr[1].runs[1].epochs}
      out.probes[#out.probes + 1] = row
      local b = out.best[task]
      if not b or row.val > b.val then out.best[task] = row end
    end
  end
  return out
end

--- writes the probe curve of P.probe results (each with .steps and .seed) to dir: probe_curve.csv
--- and .json (every probe), curve.csv and .json (per step and task: the best probe's test
--- accuracy, mean, min and max over seeds, and chance) and probe_curve.png; returns the curve rows
function P.write_probe_curve(results, dir, title)
  local long = {}
  local by = {}   -- by[task][steps] = {best test per seed}
  local steps_set, tasks, chance = {}, nil, {}
  for _, r in ipairs(results) do
    tasks = tasks or r.tasks
    steps_set[r.steps] = true
    for _, p in ipairs(r.probes) do
      long[#long + 1] = {steps = r.steps, seed = r.seed, task = p.task, head = p.head, point = p.point, t = p.t,
        val = p.val, test = p.test, epochs = p.epochs}
    end
    for _, task in ipairs(r.tasks) do
      by[task] = by[task] or {}
      by[task][r.steps] = by[task][r.steps] or {}
      table.insert(by[task][r.steps], r.best[task].test)
      chance[task] = r.chance[task]
    end
  end
  R.write_result(dir, "probe_curve", long, long, {"steps", "seed", "task", "head", "point", "t", "val", "test", "epochs"})
  local steps = {}
  for s in pairs(steps_set) do steps[#steps + 1] = s end
  table.sort(steps)
  local rows, series = {}, {}
  for _, task in ipairs(tasks or {}) do
    local xs, ys, lo, hi = {}, {}, {}, {}
    for _, s in ipairs(steps) do
      local v = by[task][s]
      if v then
        local st = protocol.stats(v)
        rows[#rows + 1] = {steps = s, task = task, mean = st.mean, min = st.min, max = st.max, seeds = st.n,
          chance = chance[task]}
        xs[#xs + 1], ys[#ys + 1], lo[#lo + 1], hi[#hi + 1] = s, st.mean, st.min, st.max
      end
    end
    series[#series + 1] = {label = string.format("%s (chance %.2f)", task, chance[task]), x = xs, y = ys,
      band_lo = lo, band_hi = hi, marker = true}
  end
  R.write_result(dir, "curve", rows, rows, {"steps", "task", "mean", "min", "max", "seeds", "chance"})
  if #steps > 0 then
    plot().lines({series = series}, {title = "best probe against training steps (" .. title .. ")",
      xlabel = "diffusion training steps", ylabel = "test accuracy (mean, min-max over seeds)",
      xscale = #steps > 1 and "log" or nil, ylim = {0, 1}, legend = "best"}, dir .. "/probe_curve.png")
  end
  return rows
end

--- Figure 1 of the paper, one panel per task: MLP accuracy against t with a band over seeds
--- (min to max), GRU and Transformer as horizontal lines
function P.figure1(h, dir, name)
  local by = P.heads_summary(h)
  local files = {}
  for _, task in ipairs(h.tasks) do
    local b = by[task]
    local xs, ys, lo, hi = {}, {}, {}, {}
    for k, t in ipairs(h.times) do
      local r = b.mlp[k]
      xs[k], ys[k], lo[k], hi[k] = t, r.test_median, r.test_min, r.test_max
    end
    local series = {{label = "MLP at t (median, min-max band)", x = xs, y = ys, band_lo = lo, band_hi = hi}}
    if b.gru then series[#series + 1] = {label = "GRU (whole trajectory)", hline = b.gru.test_median, style = "dashed"} end
    if b.transformer then
      series[#series + 1] = {label = "Transformer (whole trajectory)", hline = b.transformer.test_median, style = "dashed"}
    end
    local file = string.format("figure1-%s-%s.png", name, task)
    plot().lines({series = series}, {title = string.format("%s: accuracy against t (%s)", task, name),
      xlabel = "diffusion time t", ylabel = "test accuracy", legend = "best"}, dir .. "/" .. file)
    files[#files + 1] = file
  end
  return files
end

--- the dependence between time points (Figure 2): MINE trained on the training codes and read
--- out on the test codes, once per seed; cfg.mine_measure "linfoot" (r = sqrt(1 - exp(-2 I)),
--- diagonal 1) or "reference" (the paper's I / sqrt(H_i H_j)). tr: {train =, test =} (a single
--- trajectory table is split by MINE itself). Writes nmi-<name>.json and a heatmap; returns
--- {nmi (mean matrix), by_seed, by_lag = mean off-diagonal value per |i - j| per seed,
--- near_diagonal, far_from_diagonal (means), near_minus_far (per seed), measure, figure}
function P.nmi(tr, cfg, dir, name)
  local mine = require 'tdrl.mine'
  local te = tr.test or tr
  local fit = tr.test and tr.train and tr.train.codes or nil
  local P_ = te.codes:size(2)
  local sum = T.zeros(P_, P_)
  local by_seed, by_lag, nmf, mis = {}, {}, {}, {}
  for s = 1, cfg.mine_seeds do
    local R, I = mine.dependence_matrix(te.codes, {seeds = {s}, fit = fit, measure = cfg.mine_measure,
      iters = (cfg.mine_iters or 0) > 0 and cfg.mine_iters or nil, lr = cfg.mine_lr,
      progress = string.format("MINE %s seed %d", name, s)})
    sum:add_(R)
    by_seed[s], mis[s] = R:totable(), I:totable()
    local near, far = mine.diagonal_concentration(R, 1)
    nmf[s] = near - far
    local lags = {}
    for lag = 1, P_ - 1 do
      local v = 0
      for i = 1, P_ - lag do v = v + R:get(i, i + lag) + R:get(i + lag, i) end
      lags[lag] = v / (2 * (P_ - lag))
    end
    by_lag[s] = lags
  end
  local nmi = sum / cfg.mine_seeds
  local near, far = mine.diagonal_concentration(nmi, 1)
  local times = te.times:totable()
  local labels = {}
  for i, t in ipairs(times) do labels[i] = string.format("%.1f", t) end
  local linfoot = cfg.mine_measure ~= "reference"
  local out = {nmi = nmi:totable(), by_seed = by_seed, mi_by_seed = mis, by_lag = by_lag, times = times,
    measure = cfg.mine_measure, near_diagonal = near, far_from_diagonal = far, near_minus_far = nmf}
  local file = "nmi-" .. name .. ".png"
  plot().heatmap(nmi, {title = (linfoot and "Linfoot dependence" or "NMI (reference)") .. " between time points ("
    .. name .. ")", row_labels = labels, col_labels = labels, xlabel = "t", ylabel = "t",
    colorbar_label = linfoot and "sqrt(1 - exp(-2 I))" or "NMI", annotate = #times <= 11,
    vmin = linfoot and 0 or nil, vmax = linfoot and 1 or nil}, dir .. "/" .. file)
  out.figure = file
  return R.write_result(dir, "nmi-" .. name, out)
end

--- attention profiles per task (Figures 3-5) and their JSD matrix (Figures 6-8)
function P.attention(tr, cfg, dir, name)
  local A = require 'tdrl.attention'
  local o = P.head_options(cfg, true)
  o.seeds = cfg.attn_seeds
  local prof = A.profiles(tr, o)
  local J, names = A.jsd_matrix(prof)
  local series = {}
  for _, task in ipairs(prof.task_order) do
    local p = prof.tasks[task]
    series[#series + 1] = {label = task, x = prof.times, y = p.profile, band_lo = p.band_lo, band_hi = p.band_hi}
  end
  local f1, f2 = "attention-" .. name .. ".png", "jsd-" .. name .. ".png"
  plot().lines({series = series}, {title = "CLS attention over time tokens (" .. name .. ")", xlabel = "diffusion time t",
    ylabel = "mean attention weight", legend = "best"}, dir .. "/" .. f1)
  plot().heatmap(J, {title = "Jensen-Shannon divergence of attention profiles (bits)", row_labels = names,
    col_labels = names, colorbar_label = "JSD", annotate = true, vmin = 0}, dir .. "/" .. f2)
  local out = {profiles = {}, jsd = J:totable(), tasks = names, times = prof.times, figures = {f1, f2},
    spread = A.spread(prof)}
  for _, task in ipairs(names) do
    local p = prof.tasks[task]
    out.profiles[task] = {profile = p.profile, band_lo = p.band_lo, band_hi = p.band_hi, per_seed = p.per_seed,
      accuracy = p.accuracy, ablation = p.ablation}
  end
  return R.write_result(dir, "attention-" .. name, out)
end

--- accuracy against granularity (Figure 9) with a whole-trajectory head (GRU by default)
function P.granularity(model, sets, cfg, dir, name, provenance)
  local rows = {}
  local head = cfg.gran_head or "gru"
  for _, g in ipairs(cfg.granularities) do
    local tr = P.trajectories(model, sets, g, dir, name, provenance)
    local o = P.head_options(cfg, true)
    o.head = g == 1 and "mlp" or head
    local res = protocol.run(tr, o)
    for _, task in ipairs(tr.train.tasks) do
      local r = res.tasks[task]
      rows[#rows + 1] = {g = g, points = #tr.test.times:totable(), task = task, test_mean = r.test_mean,
        test_median = r.test_median, test_min = r.test_min, test_max = r.test_max, best_lr = r.best_lr, test = r.test}
    end
  end
  local tasks = sets.train:task_names()
  local series = {}
  for _, task in ipairs(tasks) do
    local xs, ys, lo, hi = {}, {}, {}, {}
    for _, r in ipairs(rows) do
      if r.task == task then xs[#xs + 1], ys[#ys + 1], lo[#lo + 1], hi[#hi + 1] = r.g, r.test_median, r.test_min, r.test_max end
    end
    series[#series + 1] = {label = task, x = xs, y = ys, band_lo = lo, band_hi = hi}
  end
  local file = "granularity-" .. name .. ".png"
  plot().lines({series = series}, {title = string.format("accuracy against granularity (%s, %s head)", name, head),
    xlabel = "granularity g (g + 1 time points; g = 1: t = 0.5 only)", ylabel = "test accuracy", legend = "best"},
    dir .. "/" .. file)
  return R.write_result(dir, "granularity-" .. name, {rows = rows, figure = file, head = head}, rows,
    {"g", "points", "task", "best_lr", "test_mean", "test_median", "test_min", "test_max"})
end

return P
