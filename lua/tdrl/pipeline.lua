-- The paper's experiments as stages that examples/*.lua and examples/reproduce.lua compose.
-- Every stage reads and writes files in a run folder, so a rerun after Ctrl-C skips what is done.
--
--   local P = require 'tdrl.pipeline'
--   local model = P.model(cfg, dir, {encoder = "vdrl", latent = 16})   -- train or resume
--   local tr = P.trajectories(model, sets, 10, dir, "vdrl")          -- {train, val, test}
--   local res = P.heads(tr, cfg, dir, "vdrl")                         -- MLP per t, GRU, Transformer
--   P.figure1(res, dir .. "/figure1.png")
local T = require 'tdrl'
local D = require 'tdrl.diffusion'
local E = require 'tdrl.experiment'
local trainer = require 'tdrl.diffusion.trainer'
local traj = require 'tdrl.traj'
local protocol = require 'tdrl.heads.protocol'
local json = require 'tdrl.json'
local fs = require 'tdrl.util.fs'

local P = {}

-- Settings of the whole pipeline. quick: a smoke run (~3 min); default: ~20 min on 2 cores;
-- full: the reference's settings (days on a CPU). Any field can be overridden (--head_epochs=50).
local ALL_LRS = {1e-3, 7.5e-4, 5e-4, 2.5e-4, 1e-4, 5e-5}
P.modes = {
  quick = {preset = "tiny", diffusion_iters = 40, diffusion_batch = 16, diffusion_warmup = 10, diffusion_eval_every = 20,
    diffusion_ckpt_every = 20, n_train = 600, n_val = 200, n_test = 200, granularity = 10, head_epochs = 3,
    head_epochs_seq = 2, head_lrs = {1e-3}, head_lrs_seq = {1e-3}, head_seeds = 1, mine_iters = 15, mine_seeds = 1,
    attn_seeds = 1,
    granularities = {1, 2, 5}, gran_latent = 2},
  -- sized for ~20 minutes on 2 cores: a Transformer-head step costs ~50 MLP steps, so the
  -- sequence heads get one learning rate and fewer epochs than the MLPs
  default = {preset = "tiny", diffusion_iters = 700, diffusion_batch = 32, diffusion_warmup = 100,
    diffusion_eval_every = 100, diffusion_ckpt_every = 100, n_train = 4000, n_val = 500, n_test = 1000,
    granularity = 10, head_epochs = 20, head_epochs_seq = 8, head_lrs = {1e-3, 3e-4}, head_lrs_seq = {1e-3},
    head_seeds = 2, head_seeds_seq = 2, mine_iters = 300, mine_seeds = 1, attn_seeds = 2,
    granularities = {1, 2, 5, 10}, gran_latent = 2},
  full = {preset = "small", diffusion_iters = 250000, diffusion_batch = 100, n_train = 4000, n_val = 500,
    n_test = 1000, granularity = 10, head_epochs = 1500, head_lrs = ALL_LRS, head_lrs_seq = ALL_LRS, head_seeds = 3,
    head_seeds_seq = 5,
    mine_iters = nil, mine_seeds = 5, attn_seeds = 5, granularities = {2, 5, 7, 10, 17, 25, 37, 50}, gran_latent = 2},
}

--- the settings of a mode with command-line overrides (argv): cfg, positional arguments
function P.config(argv, extra)
  local args = require 'tdrl.util.args'
  local mode = "default"
  for _, a in ipairs(argv or {}) do
    if a == "--quick" then mode = "quick" elseif a == "--full" then mode = "full" end
    local m = a:match("^%-%-mode=(%w+)$")
    if m then mode = m end
  end
  if not P.modes[mode] then error("unknown mode '" .. mode .. "' (quick, default or full)", 0) end
  local defaults = {mode = mode, quick = false, full = false, dataset = "synthetic", data_dir = "", out = "",
    seed = 0}
  for k, v in pairs(P.modes.default) do defaults[k] = v end
  for k, v in pairs(P.modes.full) do if defaults[k] == nil then defaults[k] = v end end
  for k, v in pairs(extra or {}) do defaults[k] = v end
  local opts, pos, given = args.parse(argv, defaults)
  local cfg = {}
  for k, v in pairs(defaults) do cfg[k] = v end
  for k, v in pairs(P.modes[mode]) do cfg[k] = v end
  for k in pairs(given) do cfg[k] = opts[k] end
  cfg.mode = mode
  return cfg, pos
end

local function plot() return require 'tdrl.plot' end

--- the data sets of cfg.dataset as {train =, val =, test =} views
function P.sets(cfg)
  local train, val, test = E.datasets(cfg.dataset, {data_dir = cfg.data_dir ~= "" and cfg.data_dir or nil,
    image_size = cfg.image_size, n = cfg.n_train, n_val = cfg.n_val, n_test = cfg.n_test})
  return {train = train, val = val, test = test}
end

--- trains (or resumes, or just loads when finished) a diffusion model in dir/model-<name>;
--- over: fields of the diffusion config to change (encoder, latent, iters, ...)
function P.model(cfg, dir, name, over, sets)
  local dcfg = D.presets.get(cfg.preset)
  for _, k in ipairs({"iters", "batch", "lr", "warmup", "seed", "eval_every", "ckpt_every", "latent", "encoder"}) do
    if cfg["diffusion_" .. k] ~= nil then dcfg[k] = cfg["diffusion_" .. k] end
  end
  for k, v in pairs(over or {}) do dcfg[k] = v end
  sets = sets or P.sets(cfg)
  local X = E.images(sets.train)
  local Xv = E.images(sets.val)
  dcfg.channels, dcfg.image_size = X:size(2), X:size(3)
  local out = dir .. "/model-" .. name
  local model, summary = trainer.run(dcfg, {train = X, eval = Xv}, {out = out, label = "diffusion " .. name})
  return model, summary, dcfg, out
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
    if fs.exists(path) then
      out[split] = traj.load(path)
    else
      out[split] = traj.extract(get_model(), sets[split], {granularity = g, progress = string.format("codes %s g%d %s", name, g, split)})
      provenance = provenance_of(provenance)
      traj.save(path, out[split], provenance)
    end
  end
  return out
end

local function summary_row(kind, point, time, task, r)
  return {head = kind, point = point, t = time, task = task, best_lr = r.best_lr, val = r.val_mean,
    test_mean = r.test_mean, test_median = r.test_median, test_std = r.test_std, test_min = r.test_min,
    test_max = r.test_max, seeds = #r.test}
end

--- the downstream table: an MLP per time point, a GRU and a Transformer, for every task.
--- Writes heads-<name>.json and heads-<name>.csv; returns {rows = {...}, tasks = {...}, times = {...}}
function P.heads(tr, cfg, dir, name)
  local rows = {}
  local base = {epochs = cfg.head_epochs, lrs = cfg.head_lrs, seeds = cfg.head_seeds, batch = 256}
  local times = tr.test.times:totable()
  local P_ = #times
  local kinds = {}
  for k = 1, P_ do kinds[#kinds + 1] = {"mlp", k} end
  kinds[#kinds + 1] = {"gru"}
  kinds[#kinds + 1] = {"transformer"}
  local bar = require('tdrl.util.progress').new(#kinds, {label = "heads " .. name})
  for i, kd in ipairs(kinds) do
    local c = {}
    for k, v in pairs(base) do c[k] = v end
    c.head, c.point = kd[1], kd[2]
    if kd[1] ~= "mlp" then
      c.seeds, c.epochs = cfg.head_seeds_seq or cfg.head_seeds, cfg.head_epochs_seq or cfg.head_epochs
      c.lrs = cfg.head_lrs_seq or cfg.head_lrs
    end
    local res = protocol.run(tr, c)
    for _, task in ipairs(tr.train.tasks) do
      rows[#rows + 1] = summary_row(kd[1], kd[2], kd[2] and times[kd[2]], task, res.tasks[task])
    end
    bar:update(i)
  end
  bar:finish()
  local out = {rows = rows, tasks = tr.train.tasks, times = times}
  fs.write(dir .. "/heads-" .. name .. ".json", json.encode(out, "  ") .. "\n")
  local csv = {"head,point,t,task,best_lr,val,test_mean,test_median,test_std,test_min,test_max,seeds"}
  for _, r in ipairs(rows) do
    csv[#csv + 1] = string.format("%s,%s,%s,%s,%g,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%d", r.head, r.point or "",
      r.t and string.format("%.3f", r.t) or "", r.task, r.best_lr, r.val, r.test_mean, r.test_median, r.test_std,
      r.test_min, r.test_max, r.seeds)
  end
  fs.write(dir .. "/heads-" .. name .. ".csv", table.concat(csv, "\n") .. "\n")
  return out
end

--- per task: best single point (its t and accuracy), GRU and Transformer accuracies
function P.heads_summary(h)
  local by = {}
  for _, task in ipairs(h.tasks) do by[task] = {mlp = {}} end
  for _, r in ipairs(h.rows) do
    local b = by[r.task]
    if r.head == "mlp" then
      b.mlp[r.point] = r
      if not b.best or r.test_mean > b.best.test_mean then b.best = r end
    else
      b[r.head] = r
    end
  end
  return by
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

--- the NMI matrix of the test trajectories (Figure 2); writes nmi-<name>.json and a heatmap
function P.nmi(te, cfg, dir, name)
  local mine = require 'tdrl.mine'
  local seeds = {}
  for s = 1, cfg.mine_seeds do seeds[s] = s end
  local nmi, I, H = mine.nmi_matrix(te.codes, {seeds = seeds, iters = cfg.mine_iters, progress = "MINE " .. name})
  local near, far = mine.diagonal_concentration(nmi, 1)
  local times = te.times:totable()
  local labels = {}
  for i, t in ipairs(times) do labels[i] = string.format("%.1f", t) end
  local out = {nmi = nmi:totable(), mi = I:totable(), entropy = H:totable(), times = times, near_diagonal = near,
    far_from_diagonal = far}
  fs.write(dir .. "/nmi-" .. name .. ".json", json.encode(out, "  ") .. "\n")
  local file = "nmi-" .. name .. ".png"
  plot().heatmap(nmi, {title = "NMI between time points (" .. name .. ")", row_labels = labels, col_labels = labels,
    xlabel = "t", ylabel = "t", colorbar_label = "NMI", annotate = #times <= 11}, dir .. "/" .. file)
  out.figure = file
  return out
end

--- attention profiles per task (Figures 3-5) and their JSD matrix (Figures 6-8)
function P.attention(tr, cfg, dir, name)
  local A = require 'tdrl.attention'
  local prof = A.profiles(tr, {seeds = cfg.attn_seeds, epochs = cfg.head_epochs_seq or cfg.head_epochs,
    lrs = cfg.attn_lrs or cfg.head_lrs_seq or cfg.head_lrs, batch = 256})
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
  local out = {profiles = {}, jsd = J:totable(), tasks = names, times = prof.times, figures = {f1, f2}}
  for _, task in ipairs(names) do
    local p = prof.tasks[task]
    out.profiles[task] = {profile = p.profile, band_lo = p.band_lo, band_hi = p.band_hi, accuracy = p.accuracy,
      ablation = p.ablation}
  end
  fs.write(dir .. "/attention-" .. name .. ".json", json.encode(out, "  ") .. "\n")
  return out
end

--- accuracy against granularity (Figure 9) with a whole-trajectory head (GRU by default)
function P.granularity(model, sets, cfg, dir, name, provenance)
  local rows = {}
  local head = cfg.gran_head or "gru"
  for _, g in ipairs(cfg.granularities) do
    local tr = P.trajectories(model, sets, g, dir, name, provenance)
    local res = protocol.run(tr, {head = g == 1 and "mlp" or head, epochs = cfg.head_epochs_seq or cfg.head_epochs,
      lrs = cfg.head_lrs_seq or cfg.head_lrs, seeds = cfg.head_seeds_seq or cfg.head_seeds, batch = 256})
    for _, task in ipairs(tr.train.tasks) do
      local r = res.tasks[task]
      rows[#rows + 1] = {g = g, points = #tr.test.times:totable(), task = task, test_mean = r.test_mean,
        test_median = r.test_median, test_min = r.test_min, test_max = r.test_max, best_lr = r.best_lr}
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
  local out = {rows = rows, figure = file, head = head}
  fs.write(dir .. "/granularity-" .. name .. ".json", json.encode(out, "  ") .. "\n")
  return out
end

return P
