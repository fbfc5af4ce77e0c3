-- Section 3.3 / Figures 3-5: which parts of the trajectory a Transformer reads for each task.
-- One analysis Transformer per task (one application, the CLS key masked so that CLS attends
-- only to the time tokens) is trained with the protocol; its CLS attention over the 11 time
-- tokens, averaged over test examples, heads and seeds, is the task's profile.
--
--   ./tdrl examples/attention_profiles.lua [--quick] [--dataset=cmnist] [--attn_seeds=5]
--
-- Writes attention-<name>.png (one line per task, min-max band over seeds), jsd-<name>.png and
-- attention-<name>.json, and prints the t = 0.5 ablation: test accuracy with all tokens, with the
-- t = 0.5 token hidden, and with only that token visible. examples/jsd.lua reads the same results.
local P = require 'tdrl.paper'

local cfg = P.config(arg, {encoder = "vdrl", latent = 16})
local dir = P.run_dir(cfg.out ~= "" and cfg.out or ("runs/analysis-" .. cfg.dataset))
local sets = P.sets(cfg)
local model = P.model(cfg, dir, cfg.encoder, {encoder = cfg.encoder, latent = cfg.latent}, sets)
local tr = P.trajectories(model, sets, cfg.granularity, dir, cfg.encoder)
local r = P.attention(tr, cfg, dir, cfg.encoder)
for _, task in ipairs(r.tasks) do
  local p = r.profiles[task].profile
  local cells = {}
  for i, v in ipairs(p) do cells[i] = string.format("%.2f", v) end
  print(string.format("%-12s acc %.3f  %s", task, r.profiles[task].accuracy, table.concat(cells, " ")))
end
print("\nthe t = 0.5 ablation (test accuracy: all tokens / t = 0.5 hidden / only t = 0.5):")
for _, task in ipairs(r.tasks) do
  local a = r.profiles[task].ablation
  print(string.format("%-12s %.3f / %.3f / %.3f", task, a.all, a.without_mid, a.only_mid))
end
print("figures: " .. dir .. "/" .. r.figures[1] .. ", " .. dir .. "/" .. r.figures[2])
