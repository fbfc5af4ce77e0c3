-- The paper's five findings tested against one run's results, each stated as "holds", "does not
-- hold" or "inconclusive" by tdrl.paper.verdict's rule (every seed agrees, or the ranges over seeds
-- are apart), with the numbers. Nothing here is written in advance.
--   C0 the control: the trained model's heads beat the same heads on the untrained model's
--      trajectory (not a claim of the paper: what training added to the code)
--   C1 heads reading the whole trajectory beat the best single point (Figure 1)
--   C2 dependence between time points is high near the diagonal and falls with |i - j| (Figure 2)
--   C3 tasks read different parts of the trajectory (Figures 3-8): at least half of the task
--      pairs' profiles differ more than one task's profiles differ between seeds
--   C4 finer granularity helps and saturates (Figure 9, the main model)
--   C5 at latent 2, granularity helps strongly (Figure 10)
local V = require 'tdrl.paper.verdict'
local heads_by_task = require('tdrl.paper.stages').heads_summary

local M = {}

local function pct(x) return string.format("%+.1f points", 100 * x) end

local function mean(xs)
  local s = 0
  for _, v in ipairs(xs) do s = s + v end
  return #xs > 0 and s / #xs or 0 / 0
end

local function mean_diff(vs)
  local d = {}
  for i, v in ipairs(vs) do d[i] = v.diff_mean end
  return mean(d)
end

local CEILING = 0.995

-- a's test accuracies against b's over seeds; inconclusive when both sit at the ceiling
local function compare_heads(a, b)
  if a.test_min >= CEILING and b.test_min >= CEILING then
    return {verdict = V.UNSURE, text = "inconclusive (both at the ceiling)", diff_mean = 0}
  end
  return V.compare(a.test, b.test)
end

--- C1 per task: the trajectory head chosen on validation against the best single point chosen on
--- validation, over head seeds
function M.c1(h)
  local by = heads_by_task(h)
  local rows, vs = {}, {}
  for _, task in ipairs(h.tasks) do
    local b = by[task]
    if b.traj and b.best then
      local v = compare_heads(b.traj, b.best)
      vs[#vs + 1] = v
      rows[#rows + 1] = {task, string.format("%.2f", b.best.t), b.best.test_mean, b.gru and b.gru.test_mean or 0 / 0,
        b.transformer and b.transformer.test_mean or 0 / 0, b.traj.head, v.diff_mean, v.verdict}
    end
  end
  return {verdict = V.all(vs), per_task = vs, rows = rows}
end

--- C2: near-diagonal minus far mean, per seed, and the first lag against the last, per seed
function M.c2(nmi)
  local lag1, lagn = {}, {}
  for s, lags in ipairs(nmi.by_lag or {}) do lag1[s], lagn[s] = lags[1], lags[#lags] end
  local zeros = {}
  for s = 1, #(nmi.near_minus_far or {}) do zeros[s] = 0 end
  local near = V.compare(nmi.near_minus_far or {}, zeros)
  local falls = V.compare(lag1, lagn)
  return {verdict = V.all({near, falls}), near = near, falls = falls}
end

--- C3: every pair of tasks' profiles differ more (JSD of the same seed) than a task's profiles
--- differ between seeds; and, where the tasks exist, location reads later than background
function M.c3(att)
  local sp = att.spread
  if not sp or #att.tasks < 2 then return {verdict = V.UNSURE, pairs = {}, text = "fewer than two tasks"} end
  local pairs_, vs = {}, {}
  for i, a in ipairs(att.tasks) do
    for j = i + 1, #att.tasks do
      local b = att.tasks[j]
      local within = {}
      for _, v in ipairs(sp.within[a]) do within[#within + 1] = v end
      for _, v in ipairs(sp.within[b]) do within[#within + 1] = v end
      local v = V.compare(sp.between[i][j], within, {paired = false})
      pairs_[#pairs_ + 1] = {a, b, mean(sp.between[i][j]), mean(within), v.verdict}
      vs[#vs + 1] = v
    end
  end
  local late
  if sp.centre.location and sp.centre.background then
    late = V.compare(sp.centre.location, sp.centre.background)
  end
  -- two tasks may well read the same part (foreground colour and shape both live mid-trajectory):
  -- the claim holds when at least half of the pairs differ, each by the every-seed rule
  local held, failed = 0, 0
  for _, v in ipairs(vs) do
    if v.verdict == V.HOLDS then held = held + 1 elseif v.verdict == V.FAILS then failed = failed + 1 end
  end
  local verdict = 2 * held >= #vs and V.HOLDS or (failed == #vs and V.FAILS or V.UNSURE)
  return {verdict = verdict, pairs = pairs_, held = held, n = #vs, late = late}
end

-- rows of a granularity sweep by task and g: {task = {g = row}}, the sorted g's
local function sweep(gr)
  local by, gs = {}, {}
  for _, r in ipairs(gr.rows) do
    by[r.task] = by[r.task] or {}
    by[r.task][r.g] = r
    gs[r.g] = true
  end
  local glist = {}
  for g in pairs(gs) do glist[#glist + 1] = g end
  table.sort(glist)
  return by, glist
end

--- C4 / C5: per task, the finest granularity against g = 1 (helps; margin for "strongly") and the
--- finest against the one before it (saturates: no further gain that every seed agrees on)
function M.granularity(gr, margin)
  local by, glist = sweep(gr)
  local tasks = {}
  for t in pairs(by) do tasks[#tasks + 1] = t end
  table.sort(tasks)
  local g1, gmax, gprev = glist[1], glist[#glist], glist[#glist - 1]
  local helps, sat, rows = {}, {}, {}
  for _, task in ipairs(tasks) do
    local a, b = by[task][gmax], by[task][g1]
    local vh = V.compare(a.test, b.test, {margin = margin})
    helps[#helps + 1] = vh
    local vs = gprev and gprev ~= g1 and V.compare(a.test, by[task][gprev].test) or nil
    sat[#sat + 1] = vs
    local r = {task}
    for _, g in ipairs(glist) do r[#r + 1] = by[task][g].test_mean end
    r[#r + 1] = vh.verdict
    rows[#rows + 1] = r
  end
  local saturates = 0
  for _, v in ipairs(sat) do if v.verdict ~= V.HOLDS then saturates = saturates + 1 end end
  local cols = {"task"}
  for _, g in ipairs(glist) do cols[#cols + 1] = "g = " .. g end
  cols[#cols + 1] = string.format("g = %d beats g = %d", gmax, g1)
  return {helps = V.all(helps), per_task = helps, saturating = saturates, n = #tasks, rows = rows, columns = cols,
    g1 = g1, gmax = gmax, gprev = gprev, gain = mean_diff(helps)}
end

--- a task's chosen head: the better on validation of the best single point and the trajectory head
function M.chosen(b)
  local pick = b.best
  if b.traj and (not pick or b.traj.val > pick.val) then pick = b.traj end
  return pick
end

--- C0 per task: the trained model's chosen head against the untrained model's (res.control, the
--- same heads on the trajectories of the model as initialised), over head seeds. Nil without it.
function M.c0(res)
  if not res.heads or not res.control then return nil end
  local tr, un = heads_by_task(res.heads), heads_by_task(res.control)
  local rows, vs = {}, {}
  for _, task in ipairs(res.heads.tasks) do
    local a, b = M.chosen(tr[task]), un[task] and M.chosen(un[task])
    if a and b then
      local v = compare_heads(a, b)
      vs[#vs + 1] = v
      rows[#rows + 1] = {task, un[task].best and un[task].best.test_mean or 0 / 0,
        un[task].traj and un[task].traj.test_mean or 0 / 0, b.test_mean, a.test_mean, v.diff_mean, v.verdict}
    end
  end
  return {verdict = V.all(vs), per_task = vs, rows = rows}
end

--- D0: is every task decoded from the trajectory at >= 3x chance? Per task the chosen head (the
--- better on validation of the best single point and the trajectory head) against res.chance[task];
--- holds when every head seed's test accuracy reaches 3x chance, does not hold when none does.
--- Without chance (results of an older run) or heads, nil.
M.FOLD = 3
function M.decodable(res)
  if not res.heads or not res.chance then return nil end
  local by = heads_by_task(res.heads)
  local rows, vs, low = {}, {}, {}
  for _, task in ipairs(res.heads.tasks) do
    local b, c = by[task], res.chance[task]
    local pick = M.chosen(b)
    if pick and c then
      local need = math.min(M.FOLD * c, 1)
      local v = pick.test_min >= need and V.HOLDS or pick.test_max < need and V.FAILS or V.UNSURE
      vs[#vs + 1] = {verdict = v}
      if v ~= V.HOLDS then low[#low + 1] = task end
      rows[#rows + 1] = {task, c, b.best and b.best.test_mean or 0 / 0, b.traj and b.traj.test_mean or 0 / 0,
        pick.test_mean / c, v}
    end
  end
  -- "every task": one task that never reaches it decides against
  local verdict = V.all(vs)
  for _, v in ipairs(vs) do if v.verdict == V.FAILS then verdict = V.FAILS end end
  return {verdict = verdict, rows = rows, low = low}
end

--- the list of findings: {id, claim, verdict, numbers}
function M.verdicts(res, cfg)
  local out = {}
  local c0 = M.c0(res)
  if c0 then
    local parts, k = {}, 0
    for _, r in ipairs(c0.rows) do
      parts[#parts + 1] = string.format("%s %.3f vs %.3f", r[1], r[5], r[4])
      if r[7] == V.HOLDS then k = k + 1 end
    end
    out[#out + 1] = {id = "C0", claim = "diffusion training adds to what the untrained encoder's trajectory holds",
      verdict = c0.verdict, numbers = string.format("holds on %d of %d tasks; trained vs untrained: %s", k, #c0.rows,
        table.concat(parts, ", "))}
  end
  local d = M.decodable(res)
  if d then
    local folds = {}
    for _, r in ipairs(d.rows) do folds[#folds + 1] = string.format("%s %.1fx", r[1], r[5]) end
    out[#out + 1] = {id = "D0", claim = string.format("every task decoded at >= %dx chance", M.FOLD),
      verdict = d.verdict, numbers = table.concat(folds, ", ") .. (#d.low > 0 and ("; below: " ..
        table.concat(d.low, ", ")) or "")}
  end
  if res.heads then
    local c = M.c1(res.heads)
    local k = 0
    for _, v in ipairs(c.per_task) do if v.verdict == V.HOLDS then k = k + 1 end end
    out[#out + 1] = {id = "C1", claim = "whole-trajectory heads beat the best single point", verdict = c.verdict,
      numbers = string.format("holds on %d of %d tasks; mean difference %s", k, #c.per_task, pct(mean_diff(c.per_task)))}
  end
  if res.nmi and res.nmi.near_minus_far then
    local c = M.c2(res.nmi)
    out[#out + 1] = {id = "C2", claim = "dependence high near the diagonal, falling with |i - j|", verdict = c.verdict,
      numbers = string.format("near %.3f vs far %.3f; near - far %s; lag 1 - last lag %s", res.nmi.near_diagonal,
        res.nmi.far_from_diagonal, c.near.text, c.falls.text)}
  end
  if res.attention and res.attention.spread then
    local c = M.c3(res.attention)
    out[#out + 1] = {id = "C3", claim = "tasks read different parts of the trajectory", verdict = c.verdict,
      numbers = string.format("%d of %d task pairs differ more than seeds do%s", c.held or 0, c.n or 0,
        c.late and ("; location's centre later than background's: " .. c.late.text) or "")}
  end
  if res.granularity_main then
    local g = M.granularity(res.granularity_main, 0)
    local verdict = g.helps == V.HOLDS and (g.saturating == g.n and V.HOLDS or V.UNSURE) or g.helps
    out[#out + 1] = {id = "C4", claim = "finer granularity helps and saturates", verdict = verdict,
      numbers = string.format("g = %d vs g = %d: %s on average, %s; no further gain from g = %s to %d on %d of %d tasks",
        g.gmax, g.g1, pct(g.gain), g.helps, tostring(g.gprev), g.gmax, g.saturating, g.n)}
  end
  if res.granularity then
    local g = M.granularity(res.granularity, 0.05)
    out[#out + 1] = {id = "C5", claim = string.format("at latent %d, granularity helps strongly (by > 5 points)",
      cfg.gran_latent), verdict = g.helps,
      numbers = string.format("g = %d vs g = %d: %s on average over tasks", g.gmax, g.g1, pct(g.gain))}
  end
  return out
end

function M.intro(res, cfg, seconds)
  return string.format("This report was written by examples/reproduce.lua (mode %s) on the %s data set; its "
    .. "stages took %.0f minutes in all. Every number below was measured in this run; the run folder holds the raw "
    .. "results (CSV and JSON), the models' checkpoints and the trajectories. A finding holds only when every seed "
    .. "agrees (paired seeds: every difference has the claimed sign; unpaired: the ranges over seeds are apart); it "
    .. "does not hold when every seed agrees the other way, and is inconclusive otherwise. The settings are listed "
    .. "at the end.", cfg.mode, cfg.dataset, seconds / 60)
end

function M.sections(res, cfg)
  local S = {}
  local verdicts = M.verdicts(res, cfg)
  local vrows = {}
  for _, v in ipairs(verdicts) do vrows[#vrows + 1] = {v.id, v.claim, v.verdict, v.numbers} end
  S[#S + 1] = {heading = "Findings", text = "The paper's claims, tested on this run.",
    table = {columns = {"", "claim", "verdict", "numbers"}, rows = vrows}}

  S[#S + 1] = {heading = "1. The diffusion models",
    text = string.format("Two models were trained with the denoising score matching loss of the paper (preset %s): "
      .. "a VDRL model (probabilistic encoder, latent 16) for the trajectory analyses and a DRL model (deterministic "
      .. "encoder, latent %d) for the granularity sweep at latent %d.", cfg.preset, cfg.gran_latent, cfg.gran_latent),
    table = {columns = {"model", "steps", "training loss", "evaluation loss", "seconds"},
      rows = {{"VDRL, latent 16", res.vdrl.steps, res.vdrl.loss, res.vdrl.eval_loss, res.vdrl.seconds},
        {"DRL, latent " .. cfg.gran_latent, res.drl.steps, res.drl.loss, res.drl.eval_loss, res.drl.seconds}}}}

  if res.heads then
    local c = M.c1(res.heads)
    local figs = {}
    for i, f in ipairs(res.heads.figures or {}) do
      figs[i] = {file = f, caption = "Accuracy of an MLP trained on the code at each t (median over seeds, band: "
        .. "min to max), and of the GRU and Transformer reading the whole trajectory (dashed)."}
    end
    S[#S + 1] = {heading = "2. C1: do whole-trajectory heads beat the best single point? (Figure 1)",
      text = string.format("Verdict: %s. Per task, the trajectory head chosen on validation (GRU or Transformer) "
        .. "against the single time point whose MLP is best on validation; test accuracies, means over head seeds, "
        .. "every head trained until its validation accuracy stopped improving.", c.verdict),
      table = {columns = {"task", "best t", "best single point", "GRU", "Transformer", "chosen", "difference",
        "verdict"}, rows = c.rows, format = "%.3f"}, figures = figs}
    local d = M.decodable(res)
    if d then
      S[#S + 1] = {heading = "2a. D0: is every task in the trajectory?",
        text = string.format("Verdict: %s. Per task, the better on validation of the best single point and the "
          .. "trajectory head (test accuracy, mean over head seeds) against chance, the share of the most frequent test class; it "
          .. "holds for a task when every head seed reaches %dx chance.", d.verdict, M.FOLD),
        table = {columns = {"task", "chance", "best single point", "trajectory head", "multiple of chance", "verdict"},
          rows = d.rows, format = "%.3f"}}
    end
    local c0 = M.c0(res)
    if c0 then
      S[#S + 1] = {heading = "2b. C0: the control, an untrained encoder",
        text = string.format("Verdict: %s. The same heads, trained the same way, on the trajectories of the VDRL "
          .. "model as initialised (the draw its training started from). A random convolutional encoder is a "
          .. "random-feature map of the image, and a probe reads much from it; only what the trained model's "
          .. "heads read beyond it was put in the code by diffusion training. Per task the chosen head (the better "
          .. "on validation of the best single point and the trajectory head); holds when every head seed of the "
          .. "trained model beats the untrained one's.", c0.verdict),
        table = {columns = {"task", "untrained: best single point", "untrained: trajectory head",
          "untrained: chosen", "trained: chosen", "difference", "verdict"}, rows = c0.rows, format = "%.3f"}}
    end
  end

  if res.nmi then
    local nmi = res.nmi
    local linfoot = nmi.measure ~= "reference"
    local text
    if nmi.near_minus_far then
      local c = M.c2(nmi)
      text = string.format("Verdict: %s. Mean %s between neighbouring time points (|i - j| = 1): %.3f; between "
        .. "points farther apart: %.3f. Near minus far, per MINE seed: %s. First lag against the last: %s.", c.verdict,
        linfoot and "Linfoot coefficient" or "NMI", nmi.near_diagonal, nmi.far_from_diagonal, c.near.text,
        c.falls.text)
    else
      text = string.format("Mean between neighbouring time points %.3f, farther apart %.3f.", nmi.near_diagonal,
        nmi.far_from_diagonal)
    end
    S[#S + 1] = {heading = "3. C2: is information local in t? (Figure 2)", text = text, figure = nmi.figure,
      caption = linfoot and "Linfoot's informational coefficient of correlation r = sqrt(1 - exp(-2 I)) between the "
        .. "codes at two times (I by MINE, trained on the training codes and read out on the test codes): 0 "
        .. "independent, 1 on the diagonal." or "NMI(i, j) = I(z_ti; z_tj) / sqrt(H_i H_j), the reference's measure."}
  end

  if res.attention then
    local att = res.attention
    local peaks = {}
    for _, task in ipairs(att.tasks) do
      local p = att.profiles[task].profile
      local best, at = -1, 1
      for i, v in ipairs(p) do if v > best then best, at = v, i end end
      peaks[#peaks + 1] = string.format("%s peaks at t = %.1f (weight %.2f)", task, att.times[at], best)
    end
    local c = M.c3(att)
    local prow = {}
    for _, p in ipairs(c.pairs) do prow[#prow + 1] = p end
    S[#S + 1] = {heading = "4. C3: which parts of the trajectory does each task read? (Figures 3-8)",
      text = string.format("Verdict: %s. Profiles: %s. A pair of tasks reads different parts when the JSD between "
        .. "their profiles (same seed) exceeds, for every seed, the JSD between two seeds of either task.%s",
        c.verdict, table.concat(peaks, "; "), c.late and (" Location's centre of attention lies later than "
        .. "background's: " .. c.late.text .. ".") or ""),
      figures = {{file = att.figures[1], caption = "Mean CLS attention over the time tokens (one analysis Transformer "
        .. "per task; band: min to max over seeds)."}, {file = att.figures[2], caption = "Jensen-Shannon divergence "
        .. "between the tasks' mean profiles (bits: 0 identical, 1 disjoint)."}},
      table = {columns = {"task", "task", "JSD between (mean)", "JSD within (mean)", "verdict"}, rows = prow,
        format = "%.3f"}}
    local arows, drops = {}, {}
    for _, task in ipairs(att.tasks) do
      local a = att.profiles[task].ablation
      if a then
        arows[#arows + 1] = {task, a.all, a.without_mid, a.only_mid}
        drops[#drops + 1] = a.all - a.without_mid
      end
    end
    if #arows > 0 then
      S[#S + 1] = {heading = "5. The t = 0.5 ablation",
        text = string.format("Hiding the time token at t = 0.5 from the analysis Transformers changes their test "
          .. "accuracy by %s on average over tasks. A small drop means the other points carry what t = 0.5 holds.",
          pct(-mean(drops))),
        table = {columns = {"task", "all tokens", "t = 0.5 hidden", "only t = 0.5"}, rows = arows, format = "%.3f"}}
    end
  end

  local function gran_section(gr, title, margin, id)
    local g = M.granularity(gr, margin)
    S[#S + 1] = {heading = title,
      text = string.format("%s: going from g = %d to g = %d changes the test accuracy by %s on average over tasks "
        .. "(%s head); it beats g = %d%s for every seed on %s. From g = %s to g = %d no further gain that every seed "
        .. "agrees on for %d of %d tasks.", id, g.g1, g.gmax, pct(g.gain), gr.head, g.g1,
        margin > 0 and string.format(" by more than %.0f points", 100 * margin) or "",
        g.helps == V.HOLDS and "every task" or "not every task", tostring(g.gprev), g.gmax, g.saturating, g.n),
      table = {columns = g.columns, rows = g.rows, format = "%.3f"}, figure = gr.figure,
      caption = "Test accuracy against granularity (g + 1 points; g = 1 is the single point t = 0.5); band: min to "
        .. "max over seeds."}
  end
  if res.granularity_main then
    gran_section(res.granularity_main, string.format("%d. C4: does a finer discretisation help? (Figure 9, VDRL, "
      .. "latent 16)", #S), 0, "C4")
  end
  if res.granularity then
    gran_section(res.granularity, string.format("%d. C5: does granularity help strongly at latent %d? (Figure 10)",
      #S, cfg.gran_latent), 0.05, "C5")
  end
  if res.learned_times then
    local lt = res.learned_times
    local rows = {}
    for _, x in ipairs(lt.summary) do
      rows[#rows + 1] = {x.task, x.K, string.format("%.3f (%.3f-%.3f)", x.uniform.mean, x.uniform.min, x.uniform.max),
        string.format("%.3f (%.3f-%.3f)", x.greedy.mean, x.greedy.min, x.greedy.max),
        string.format("%.3f (%.3f-%.3f)", x.learned.mean, x.learned.min, x.learned.max), x.learned_vs_uniform,
        x.learned_vs_greedy}
    end
    S[#S + 1] = {heading = string.format("%d. Learned query times (not in the paper)", #S),
      text = string.format("Per task and number of points K, a reader (%s) on the codes at K times chosen three "
        .. "ways: uniform (the paper's granularity K - 1), greedy (forward selection from %d + 1 grid points by a "
        .. "linear probe's validation accuracy), and learned jointly with a reader by gradient (tdrl.heads."
        .. "learned_times, on the cached grid); every method's reader is then trained alike on the encoder's "
        .. "codes at exactly its times. Test accuracy, mean "
        .. "(min-max) over %d seeds; learned beats uniform only when every seed agrees.", cfg.lt_reader, cfg.lt_grid,
        cfg.lt_seeds),
      table = {columns = {"task", "K", "uniform", "greedy", "learned", "learned > uniform", "learned > greedy"},
        rows = rows}, figure = lt.figure,
      caption = "The learned times (largest K, every seed) over each task's attention profile."}
  end
  return S
end

--- one line per finding, for the console and the README
function M.summary_text(res, cfg)
  local lines = {"findings:"}
  for _, v in ipairs(M.verdicts(res, cfg)) do
    lines[#lines + 1] = string.format("  %s %s: %s (%s)", v.id, v.claim, v.verdict, v.numbers)
  end
  return table.concat(lines, "\n")
end

return M
