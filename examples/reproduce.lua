-- The paper's story end to end on one data set (default: the built-in Synthetic data, no
-- download), written up as runs/<name>/report.html with the numbers this run measured.
--
--   ./tdrl examples/reproduce.lua                 # <= 30 min on 2 cores (what `make reproduce` runs)
--   ./tdrl examples/reproduce.lua --quick         # a smoke run of every stage, <= 3 min
--   ./tdrl examples/reproduce.lua --mode=standard # <= 4 hours on 2 cores, resumable
--   ./tdrl examples/reproduce.lua --full          # the reference's settings (days on a CPU)
--   ./tdrl examples/reproduce.lua --dataset=cmnist --out=runs/cmnist
--
-- Stages: (1) train the VDRL model (latent 16) and (2) the DRL model at latent 2; (3) extract
-- the VDRL trajectories at granularity 10; (4) train heads to convergence: an MLP per time point,
-- a GRU and a Transformer per task (Figure 1, C1), and (4b, where control is set) the same heads
-- on the trajectories of the VDRL model as initialised (C0); (5) the dependence between time points (Figure
-- 2, C2); (6) attention profiles per task and their JSD matrix (Figures 3-8, C3); (7) accuracy
-- against granularity at latent 2 (Figure 10, C5) and (8) with the VDRL model (Figure 9, C4);
-- (9) learned query times against uniform and greedy ones at equal K (tdrl.paper.learned_times;
-- not in default mode); (10) the report, each finding stated as holds / does not hold /
-- inconclusive over seeds.
-- Ctrl-C stops at a safe point; running the same command again skips the finished stages and
-- resumes training from its checkpoint.
-- `mpirun -np N ./tdrl examples/reproduce.lua` runs every stage on N ranks (README: "On a
-- cluster"); rank 0 writes the run folder and prints.
local T = require 'tdrl'
local P = require 'tdrl.paper'
local report = require 'tdrl.report'
local dist = require 'tdrl.dist'
local main = dist.is_main()
local print = main and print or function() end

local cfg = P.config(arg)
local dir = P.run_dir(cfg.out ~= "" and cfg.out or ("runs/" .. cfg.dataset .. (cfg.mode ~= "default" and ("-" .. cfg.mode) or "")))
P.write_result(dir, "pipeline", cfg)
print(string.format("tdrl reproduce: %s, mode %s, run folder %s (%d threads%s)", cfg.dataset, cfg.mode, dir,
  T.get_num_threads(), dist.active() and string.format(" on each of %d ranks", dist.size()) or ""))
local t_start = T.clock()

local sets = P.sets(cfg)
local res = {chance = P.chance(sets.test)}

-- (1, 2) the two diffusion models
local vdrl, drl
res.vdrl = P.stage(dir, "1-train-vdrl", function()
  local _, s = P.model(cfg, dir, "vdrl", {encoder = "vdrl", latent = 16}, sets)
  return {loss = s.loss, eval_loss = s.eval_loss, steps = s.steps, seconds = s.seconds}
end)
res.drl = P.stage(dir, "2-train-drl-latent2", function()
  local _, s = P.model(cfg, dir, "drl-latent2", {encoder = "drl", latent = cfg.gran_latent}, sets)
  return {loss = s.loss, eval_loss = s.eval_loss, steps = s.steps, seconds = s.seconds}
end)
local function model_of(name, over)
  return (P.model(cfg, dir, name, over, sets)) -- loads the finished checkpoint
end

-- each trajectory file records the checkpoint it came from (with its step and config)
local function ckpt_of(name) return dir .. "/model-" .. name .. "/checkpoint.safetensors" end

-- (3) trajectories, extracted once and cached in the run folder (a later run reads the files;
-- the model is loaded only when a file must be computed)
local function vdrl_model()
  vdrl = vdrl or model_of("vdrl", {encoder = "vdrl", latent = 16})
  return vdrl
end
local tr = P.trajectories(vdrl_model, sets, cfg.granularity, dir, "vdrl", {checkpoint = ckpt_of("vdrl")})
res.trajectories = {points = tr.test.codes:size(2), latent = tr.test.codes:size(3), train = tr.train.codes:size(1)}

-- (4) heads, (4b) the untrained control; (5) dependence between time points; (6) attention and JSD; (7, 8) granularity
res.heads = P.stage(dir, "4-heads", function()
  local h = P.heads(tr, cfg, dir, "vdrl")
  h.figures = P.figure1(h, dir, "vdrl")
  return h
end)
-- (4b) the control: the same heads on the trajectories of the VDRL model as initialised
if cfg.control then
  local untrained, ucfg = P.untrained(cfg, {encoder = "vdrl", latent = 16}, sets)
  local tr0 = P.trajectories(untrained, sets, cfg.granularity, dir, "vdrl-untrained", {step = 0, config = ucfg})
  res.control = P.stage(dir, "4b-control", function() return P.heads(tr0, cfg, dir, "vdrl-untrained") end)
end
res.nmi = P.stage(dir, "5-nmi", function() return P.nmi(tr, cfg, dir, "vdrl") end)
res.attention = P.stage(dir, "6-attention", function() return P.attention(tr, cfg, dir, "vdrl") end)
res.granularity = P.stage(dir, "7-granularity", function()
  drl = drl or model_of("drl-latent2", {encoder = "drl", latent = cfg.gran_latent})
  return P.granularity(drl, sets, cfg, dir, "drl-latent2", {checkpoint = ckpt_of("drl-latent2")})
end)
res.granularity_main = P.stage(dir, "8-granularity-vdrl", function()
  return P.granularity(vdrl_model, sets, cfg, dir, "vdrl", {checkpoint = ckpt_of("vdrl")})
end)

-- (9) learned query times against uniform and greedy ones (standard and full modes)
if cfg.learned_times then
  res.learned_times = P.stage(dir, "9-learned-times", function()
    return require('tdrl.paper.learned_times').study(vdrl_model, sets, cfg, dir, "vdrl", res.attention)
  end)
end

-- (10) the findings, each tested over seeds, with this run's numbers
local findings = P.findings
local sections = findings.sections(res, cfg)
local total = P.total_stage_seconds()
if not main then return end
local html = report.html(dir, {title = "tdrl: trajectory representations on " .. cfg.dataset .. " (" .. cfg.mode .. " run)",
  intro = findings.intro(res, cfg, total), sections = sections, config = cfg})
report.markdown(dir, {title = "tdrl: trajectory representations on " .. cfg.dataset, intro = findings.intro(res, cfg,
  total), sections = sections, config = cfg})
print("\n" .. findings.summary_text(res, cfg))
print(string.format("\nreport: %s  (summary: %s/summary.md; this run %.0f s, all stages %.0f s)", html, dir,
  T.clock() - t_start, total))
