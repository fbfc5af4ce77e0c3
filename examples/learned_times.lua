-- Learned query times: heads that choose where on the trajectory to look, against the uniform
-- discretisation of the paper and a greedy choice from a fine grid, at an equal number K of
-- points, per task and latent size.
--
--   ./tdrl examples/learned_times.lua                 # Synthetic, latents 2 and 16, K = 1, 2, 3, 5
--   ./tdrl examples/learned_times.lua --quick         # a smoke run
--   ./tdrl examples/learned_times.lua --dataset=cmnist --Ks=1,3 --lt_seeds=5
--
-- For each latent size a VDRL model is trained (the pipeline mode's settings) and its codes cached
-- on a fine grid (g = 50, scaled by the training split's mean and std per dimension). Per task, K
-- and seed, one reader (an MLP on the K concatenated codes by default) is trained to convergence
-- on the codes at K points chosen three ways:
--   uniform: the paper's granularity K - 1 (K = 1: t = 0.5), the nearest grid points;
--   greedy:  forward selection on the grid by the validation accuracy of a linear probe;
--   learned: K times trained with the reader (tdrl.heads.learned_times, on the cached grid), their
--            test accuracy then read with codes the encoder computes at those exact times.
-- Writes <out>/learned_times.csv (every run), learned_times.json (summary with the verdict of
-- learned against uniform per task and K: holds only when every seed agrees) and one figure per
-- latent: the learned times per task over that task's attention profile.
local T = require 'tdrl'
local P = require 'tdrl.paper'
local LT = require 'tdrl.heads.learned_times'
local traj = require 'tdrl.traj'
local protocol = require 'tdrl.heads.protocol'
local V = require 'tdrl.paper.verdict'
local nn = require 'tdrl.nn'
local optim = require 'tdrl.optim'

local cfg = P.config(arg, {latents = {2, 16}, Ks = {1, 2, 3, 5}, lt_seeds = 3, lt_reader = "mlp", lt_epochs = 300,
  lt_patience = 20, lt_time_lr = 0.02, lt_grid = 50})
for _, k in ipairs({"latents", "Ks"}) do if type(cfg[k]) ~= "table" then cfg[k] = {cfg[k]} end end
if cfg.mode == "quick" then
  cfg.latents, cfg.Ks, cfg.lt_seeds, cfg.lt_epochs, cfg.lt_patience, cfg.lt_grid = {2}, {1, 2}, 1, 3, 2, 10
end
local dir = P.run_dir(cfg.out ~= "" and cfg.out or ("runs/learned-times-" .. cfg.dataset))
local sets = P.sets(cfg)
local tasks = sets.train:task_names()
local head_kind = cfg.lt_reader == "mlp" and "mlp_concat" or cfg.lt_reader
local t_start = T.clock()

-- forward selection of K grid points for a task by a linear probe's validation accuracy (full
-- batch, 100 Adam steps): cheap enough to score every candidate at every step
local function greedy(fine, task, K, classes)
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

-- the grid points nearest to the paper's granularity K - 1 (K = 1: t = 0.5)
local function uniform(K, g)
  if K == 1 then return {g // 2 + 1} end
  local pts = {}
  for k = 0, K - 1 do pts[#pts + 1] = math.floor(k * g / (K - 1) + 0.5) + 1 end
  return pts
end

local rows = {}
local summary = {}
for _, L in ipairs(cfg.latents) do
  local name = "vdrl-latent" .. L
  local model = P.model(cfg, dir, name, {encoder = "vdrl", latent = L}, sets)
  local prov = {checkpoint = dir .. "/model-" .. name .. "/checkpoint.safetensors"}
  local raw = P.trajectories(model, sets, cfg.lt_grid, dir, name, prov)
  -- one scale for every point, so that the encoder's codes at any t can be scaled alike
  local mu = raw.train.codes:reshape(-1, L):mean(1)
  local sd = ((raw.train.codes:reshape(-1, L) - mu) ^ 2):mean(1):sqrt():clamp(1e-6)
  local fine = {}
  for _, s in ipairs({"train", "val", "test"}) do
    fine[s] = {}
    for k, v in pairs(raw[s]) do fine[s][k] = v end
    fine[s].codes = ((raw[s].codes - mu) / sd):contiguous()
  end
  local grid_t = fine.test.times:totable()
  local Xte, yte = P.images(sets.test)
  local learned = {}
  for _, task in ipairs(tasks) do
    local classes = sets.train.classes[task]
    learned[task] = {}
    -- the greedy picks in the order chosen: its first K are its choice for K points
    local gsel = P.stage(dir, string.format("greedy-%s-%s", name, task), function()
      return {points = greedy(fine, task, math.max(table.unpack(cfg.Ks)), classes)}
    end).points
    for _, K in ipairs(cfg.Ks) do
      local methods = {uniform = uniform(K, cfg.lt_grid)}
      local g = {}
      for i = 1, K do g[i] = gsel[i] end
      methods.greedy = g
      for seed = 1, cfg.lt_seeds do
        local function record(method, acc, times)
          rows[#rows + 1] = {latent = L, task = task, K = K, method = method, seed = seed, test = acc, times = times}
        end
        for _, method in ipairs({"uniform", "greedy"}) do
          local pts = methods[method]
          table.sort(pts)
          local sel = {train = traj.select_points(fine.train, pts), val = traj.select_points(fine.val, pts),
            test = traj.select_points(fine.test, pts)}
          local r = protocol.run(sel, {head = head_kind, tasks = {task}, lrs = {1e-3}, seeds = {seed},
            epochs = cfg.lt_epochs, patience = cfg.lt_patience, head_opts = {points = K}})
          local times = {}
          for i, p in ipairs(pts) do times[i] = grid_t[p] end
          record(method, r.tasks[task].test_mean, times)
        end
        local r = LT.train(nil, {train = {fine.train.codes, fine.train.labels[task]},
          val = {fine.val.codes, fine.val.labels[task]}, test = {fine.test.codes, fine.test.labels[task]}},
          {K = K, reader = cfg.lt_reader, latent = L, classes = classes, grid = cfg.lt_grid, seed = seed,
            epochs = cfg.lt_epochs, patience = cfg.lt_patience, batch = 256, time_lr = cfg.lt_time_lr})
        local exact = LT.evaluate(model.encoder, r.head, Xte, yte[task], 500, {mu, sd})
        record("learned", exact, r.times)
        if K == cfg.Ks[#cfg.Ks] then learned[task][#learned[task] + 1] = r.times end
      end
      print(string.format("latent %d, %s, K = %d done (%.0f s)", L, task, K, T.clock() - t_start))
    end
  end
  -- the attention profile of each task at granularity 10, with the learned times over it
  local tr10 = P.trajectories(model, sets, 10, dir, name, prov)
  local att = P.stage(dir, "attention-" .. name, function() return P.attention(tr10, cfg, dir, name) end)
  local series = {}
  for _, task in ipairs(tasks) do
    local p = att.profiles[task].profile
    series[#series + 1] = {label = task .. " attention", x = att.times, y = p}
    local xs, ys = {}, {}
    for _, times in ipairs(learned[task]) do
      for _, t in ipairs(times) do
        local f = t * (#p - 1) + 1
        local i = math.min(math.floor(f), #p - 1)
        xs[#xs + 1], ys[#ys + 1] = t, p[i] + (p[i + 1] - p[i]) * (f - i)
        xs[#xs + 1], ys[#ys + 1] = t, 0 / 0 -- a break: points, not a line
      end
    end
    series[#series + 1] = {label = string.format("%s learned times (K = %d)", task, cfg.Ks[#cfg.Ks]), x = xs, y = ys,
      marker = true}
  end
  require('tdrl.plot').lines({series = series}, {title = string.format("learned times over the attention profiles "
    .. "(latent %d)", L), xlabel = "diffusion time t", ylabel = "mean attention weight", legend = "outside"},
    dir .. "/learned-times-latent" .. L .. ".png")
end

-- per latent, task and K: each method's accuracies over seeds, and learned against uniform
for _, L in ipairs(cfg.latents) do
  for _, task in ipairs(tasks) do
    for _, K in ipairs(cfg.Ks) do
      local acc = {uniform = {}, greedy = {}, learned = {}}
      for _, r in ipairs(rows) do
        if r.latent == L and r.task == task and r.K == K then acc[r.method][r.seed] = r.test end
      end
      local s = {latent = L, task = task, K = K}
      for m, v in pairs(acc) do s[m] = protocol.stats(v) end
      s.learned_vs_uniform = V.compare(acc.learned, acc.uniform).text
      s.learned_vs_greedy = V.compare(acc.learned, acc.greedy).text
      summary[#summary + 1] = s
      print(string.format("latent %2d %-11s K = %d: uniform %.3f, greedy %.3f, learned %.3f; learned > uniform: %s",
        L, task, K, s.uniform.mean, s.greedy.mean, s.learned.mean, s.learned_vs_uniform))
    end
  end
end
P.write_result(dir, "learned_times", {summary = summary, config = cfg}, rows,
  {"latent", "task", "K", "method", "seed", "test", "times"})
print(string.format("learned times: %s/learned_times.csv and .json, figures learned-times-latent*.png (%.0f s)", dir,
  T.clock() - t_start))
