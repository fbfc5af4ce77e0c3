-- Learned query times: heads that choose where on the trajectory to look, against the uniform
-- discretisation of the paper and a greedy choice from a fine grid, at an equal number K of
-- points, per task and latent size (tdrl.paper.learned_times says how each is chosen).
--
--   ./tdrl examples/learned_times.lua                 # Synthetic, latents 2 and 16, K = 1, 2, 3, 5
--   ./tdrl examples/learned_times.lua --quick         # a smoke run
--   ./tdrl examples/learned_times.lua --dataset=cmnist --lt_Ks=1,3 --lt_seeds=5
--
-- For each latent size a VDRL model is trained with the pipeline mode's settings (default: the
-- `make reproduce` recipe), and the analysis Transformer's attention profiles are measured
-- (--lt_attn_seeds, default 1, at most --lt_attn_epochs, default 30) as the backdrop of the
-- figure: reproduce.lua's attention stage measures them with the mode's full budget. Writes, per latent L,
-- learned-times-vdrl-latentL.csv / .json / .png, and learned_times.csv / .json over all latents.
-- Every task of every latent is a stage: a rerun after Ctrl-C resumes.
local T = require 'tdrl'
local P = require 'tdrl.paper'
local LS = require 'tdrl.paper.learned_times'

local cfg = P.config(arg, {latents = {2, 16}, lt_attn_seeds = 1, lt_attn_epochs = 30})
if type(cfg.latents) ~= "table" then cfg.latents = {cfg.latents} end
if cfg.mode == "quick" then cfg.latents = {2} end
local dir = P.run_dir(cfg.out ~= "" and cfg.out or ("runs/learned-times-" .. cfg.dataset))
local sets = P.sets(cfg)
local t_start = T.clock()

local rows, summary = {}, {}
for _, L in ipairs(cfg.latents) do
  local name = "vdrl-latent" .. L
  local model = P.model(cfg, dir, name, {encoder = "vdrl", latent = L}, sets)
  local tr = P.trajectories(model, sets, cfg.granularity, dir, name,
    {checkpoint = dir .. "/model-" .. name .. "/checkpoint.safetensors"})
  local acfg = setmetatable({attn_seeds = cfg.lt_attn_seeds, head_epochs_seq = math.min(cfg.lt_attn_epochs,
    cfg.head_epochs_seq)}, {__index = cfg})
  local att = P.stage(dir, "attention-" .. name, function() return P.attention(tr, acfg, dir, name) end)
  local r = LS.study(model, sets, cfg, dir, name, att)
  for _, row in ipairs(r.rows) do rows[#rows + 1] = row end
  for _, s in ipairs(r.summary) do
    summary[#summary + 1] = s
    print(string.format("latent %2d %-11s K = %d: uniform %.3f, greedy %.3f, learned %.3f; learned > uniform: %s",
      L, s.task, s.K, s.uniform.mean, s.greedy.mean, s.learned.mean, s.learned_vs_uniform))
  end
end
P.write_result(dir, "learned_times", {summary = summary, config = cfg}, rows,
  {"latent", "task", "K", "method", "seed", "test", "times"})
print(string.format("learned times: %s/learned_times.csv and .json, figures learned-times-vdrl-latent*.png (%.0f s)",
  dir, T.clock() - t_start))
