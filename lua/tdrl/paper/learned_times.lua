-- Learned query times against the paper's uniform discretisation and a greedy choice from a fine
-- grid, at an equal number K of points, per task: a stage of the pipeline (after the trajectories
-- and the attention profiles, whose figure it draws the learned times over).
--   local LS = require 'tdrl.paper.learned_times'
--   local r = LS.study(model, sets, cfg, dir, "vdrl", attention_result)
--
-- The model's codes are cached on a fine grid (cfg.lt_grid + 1 points, scaled by the training
-- split's mean and std per dimension). Per task, K (cfg.lt_Ks) and seed (1..cfg.lt_seeds), one
-- reader (cfg.lt_reader: an MLP on the K concatenated codes, a GRU or a Transformer) is trained to
-- convergence on the codes at K points chosen three ways:
--   uniform: the paper's granularity K - 1 (K = 1: t = 0.5), the nearest grid points;
--   greedy:  forward selection on the grid by the validation accuracy of a linear probe;
--   learned: K times trained with a reader (tdrl.heads.learned_times, on the cached grid); then,
--            like the others, a fresh reader trained on the codes the encoder computes at
--            exactly those times (each row also keeps the joint head's accuracy on the grid,
--            grid_test, and on the encoder's codes, direct).
-- Each task is a resumable stage. Writes learned-times-<name>.csv (every run) and .json (per task
-- and K: each method's accuracy over seeds and the verdict of learned against uniform and greedy,
-- which holds only when every seed agrees), and learned-times-<name>.png.
local T = require 'tdrl'
local E = require 'tdrl.paper.data'
local R = require 'tdrl.paper.run'
local S = require 'tdrl.paper.stages'
local V = require 'tdrl.paper.verdict'
local LT = require 'tdrl.heads.learned_times'
local traj = require 'tdrl.traj'
local protocol = require 'tdrl.heads.protocol'
local nn = require 'tdrl.nn'
local optim = require 'tdrl.optim'

local M = {}

--- forward selection of K grid points for a task by a linear probe's validation accuracy (full
--- batch, 100 Adam steps): cheap enough to score every candidate at every step
function M.greedy(fine, task, K, classes)
  local chosen, order = {}, {}
  for _ = 1, K do
    local best, best_acc = nil, -1
    for c = 1, fine.train.codes:size(2) do
      if not chosen[c] then
        local pts = {table.unpack(order)}
        pts[#pts + 1] = c
        local function X(s) return traj.select_points(fine[s], pts).codes:reshape(fine[s].codes:size(1), -1) end
        local Xtr, Xva = X("train"), X("val")
        local lin = nn.Linear(Xtr:size(2), classes, {generator = T.Generator(1)})
        local opt = optim.Adam(lin:parameters(), {lr = 0.05})
        for _ = 1, 100 do
          opt:zero_grad()
          nn.F.cross_entropy(lin(Xtr), fine.train.labels[task]):backward()
          opt:step()
        end
        local acc = T.no_grad(function() return lin(Xva):argmax(2):eq(fine.val.labels[task]):float():mean():item() end)
        if acc > best_acc then best, best_acc = c, acc end
      end
    end
    chosen[best] = true
    order[#order + 1] = best
  end
  return order
end

--- the grid points (from 1, of a grid of g + 1) nearest to the paper's granularity K - 1
--- (K = 1: t = 0.5)
function M.uniform(K, g)
  if K == 1 then return {g // 2 + 1} end
  local pts = {}
  for k = 0, K - 1 do pts[#pts + 1] = math.floor(k * g / (K - 1) + 0.5) + 1 end
  return pts
end

-- the codes on the fine grid, scaled with one mean and std per dimension for every point, so
-- that the encoder's codes at any t can be scaled alike
local function fine_grid(model, sets, cfg, dir, name)
  local raw = S.trajectories(model, sets, cfg.lt_grid, dir, name, {checkpoint = dir .. "/model-" .. name
    .. "/checkpoint.safetensors"})
  local L = raw.train.codes:size(3)
  local mu = raw.train.codes:reshape(-1, L):mean(1)
  local sd = ((raw.train.codes:reshape(-1, L) - mu) ^ 2):mean(1):sqrt():clamp(1e-6)
  local fine = {}
  for _, s in ipairs({"train", "val", "test"}) do
    fine[s] = {}
    for k, v in pairs(raw[s]) do fine[s][k] = v end
    fine[s].codes = ((raw[s].codes - mu) / sd):contiguous()
  end
  return fine, mu, sd, L
end

-- every run of one task: {latent, task, K, method, seed, test, times}
local function task_rows(model, sets, cfg, fine, mu, sd, L, task)
  local classes = sets.train.classes[task]
  local grid_t = fine.test.times:totable()
  local Xte, yte = E.images(sets.test)
  local reader = cfg.lt_reader == "mlp" and "mlp_concat" or cfg.lt_reader
  -- the greedy picks in the order chosen: its first K are its choice for K points
  local gsel = M.greedy(fine, task, math.max(table.unpack(cfg.lt_Ks)), classes)
  local rows = {}
  for _, K in ipairs(cfg.lt_Ks) do
    local methods = {uniform = M.uniform(K, cfg.lt_grid), greedy = {table.unpack(gsel, 1, K)}}
    for seed = 1, cfg.lt_seeds do
      for _, method in ipairs({"uniform", "greedy"}) do
        local pts = methods[method]
        table.sort(pts)
        local sel = {}
        for _, s in ipairs({"train", "val", "test"}) do sel[s] = traj.select_points(fine[s], pts) end
        local r = protocol.run(sel, {head = reader, tasks = {task}, lrs = {1e-3}, seeds = {seed},
          epochs = cfg.lt_epochs, patience = cfg.lt_patience, head_opts = {points = K}})
        local times = {}
        for i, p in ipairs(pts) do times[i] = grid_t[p] end
        rows[#rows + 1] = {latent = L, task = task, K = K, method = method, seed = seed, test = r.tasks[task].test_mean,
          times = times}
      end
      local r = LT.train(nil, {train = {fine.train.codes, fine.train.labels[task]},
        val = {fine.val.codes, fine.val.labels[task]}, test = {fine.test.codes, fine.test.labels[task]}},
        {K = K, reader = cfg.lt_reader, latent = L, classes = classes, grid = cfg.lt_grid, seed = seed,
          epochs = cfg.lt_epochs, patience = cfg.lt_patience, batch = 256, time_lr = cfg.lt_time_lr})
      -- The code is rough in t below the grid's spacing (a wiggle shared by all images, from the
      -- time embedding's high frequencies), so the reader trained on interpolated grid codes
      -- misreads the encoder's codes between grid points (`direct`). The learned times are
      -- therefore read like the others: the codes at exactly those times, a reader trained on them.
      local exact = {}
      for _, s in ipairs({"train", "val", "test"}) do
        exact[s] = traj.extract(model, sets[s], {times = r.times})
        exact[s].codes = ((exact[s].codes - mu) / sd):contiguous()
      end
      local rr = protocol.run(exact, {head = reader, tasks = {task}, lrs = {1e-3}, seeds = {seed},
        epochs = cfg.lt_epochs, patience = cfg.lt_patience, head_opts = {points = K}})
      rows[#rows + 1] = {latent = L, task = task, K = K, method = "learned", seed = seed,
        test = rr.tasks[task].test_mean, times = r.times, grid_test = r.test,
        direct = LT.evaluate(model.encoder, r.head, Xte, yte[task], 500, {mu, sd})}
    end
  end
  return rows
end

--- per task and K: each method's accuracies over seeds, and learned against uniform and greedy
function M.summarise(rows)
  local groups, order = {}, {}
  for _, r in ipairs(rows) do
    local key = r.task .. "|" .. r.K
    if not groups[key] then
      groups[key] = {latent = r.latent, task = r.task, K = r.K, acc = {uniform = {}, greedy = {}, learned = {}}}
      order[#order + 1] = key
    end
    groups[key].acc[r.method][r.seed] = r.test
  end
  local out = {}
  for _, key in ipairs(order) do
    local g = groups[key]
    local s = {latent = g.latent, task = g.task, K = g.K}
    for m, v in pairs(g.acc) do s[m] = protocol.stats(v) end
    s.learned_vs_uniform = V.compare(g.acc.learned, g.acc.uniform).text
    s.learned_vs_greedy = V.compare(g.acc.learned, g.acc.greedy).text
    out[#out + 1] = s
  end
  return out
end

-- the learned times of the largest K per task over that task's attention profile
local function figure(rows, cfg, att, path, title)
  local Kmax = math.max(table.unpack(cfg.lt_Ks))
  local series = {}
  for _, task in ipairs(att.tasks) do
    local p = att.profiles[task].profile
    series[#series + 1] = {label = task .. " attention", x = att.times, y = p}
    local xs, ys = {}, {}
    for _, r in ipairs(rows) do
      if r.task == task and r.K == Kmax and r.method == "learned" then
        for _, t in ipairs(r.times) do
          local f = t * (#p - 1) + 1
          local i = math.min(math.floor(f), #p - 1)
          xs[#xs + 1], ys[#ys + 1] = t, p[i] + (p[i + 1] - p[i]) * (f - i)
          xs[#xs + 1], ys[#ys + 1] = t, 0 / 0 -- a break: points, not a line
        end
      end
    end
    series[#series + 1] = {label = string.format("%s learned times (K = %d)", task, Kmax), x = xs, y = ys, marker = true}
  end
  require('tdrl.plot').lines({series = series}, {title = title, xlabel = "diffusion time t",
    ylabel = "mean attention weight", legend = "outside"}, path)
end

--- study(model or a function returning it, sets, cfg, dir, name, attention) -> {summary, rows,
--- figure}: the comparison for one model; attention is the model's P.attention result (for the
--- figure). Each task is a stage of dir ("learned-times-<name>-<task>").
function M.study(model, sets, cfg, dir, name, attention)
  if type(cfg.lt_Ks) ~= "table" then cfg.lt_Ks = {cfg.lt_Ks} end
  local fine, mu, sd, L
  local rows = {}
  for _, task in ipairs(sets.train:task_names()) do
    local r = R.stage(dir, string.format("learned-times-%s-%s", name, task), function()
      if not fine then
        if type(model) == "function" then model = model() end
        fine, mu, sd, L = fine_grid(model, sets, cfg, dir, name)
      end
      return {rows = task_rows(model, sets, cfg, fine, mu, sd, L, task)}
    end)
    for _, row in ipairs(r.rows) do rows[#rows + 1] = row end
  end
  local summary = M.summarise(rows)
  local fig = "learned-times-" .. name .. ".png"
  figure(rows, cfg, attention, dir .. "/" .. fig, "learned times over the attention profiles (" .. name .. ")")
  R.write_result(dir, "learned-times-" .. name, {summary = summary, rows = rows}, rows,
    {"latent", "task", "K", "method", "seed", "test", "times", "grid_test", "direct"})
  return {summary = summary, rows = rows, figure = fig}
end

return M
