-- Section 3.4 / Figures 6-8: how differently tasks use the trajectory. The Jensen-Shannon
-- divergence (base 2: 0 for identical, 1 for disjoint) between every two tasks' attention
-- profiles, as a task x task heatmap. Reuses attention-<name>.json when
-- examples/attention_profiles.lua has run in the same folder; computes it otherwise.
--
--   ./tdrl examples/jsd.lua [--quick] [--dataset=cmnist] [--out=DIR]
local T = require 'tdrl'
local P = require 'tdrl.paper'
local json = require 'tdrl.json'
local fs = require 'tdrl.util.fs'

local cfg = P.config(arg, {encoder = "vdrl", latent = 16})
local dir = P.run_dir(cfg.out ~= "" and cfg.out or ("runs/analysis-" .. cfg.dataset))
local saved = fs.read(dir .. "/attention-" .. cfg.encoder .. ".json")
local r
if saved then
  r = json.decode(saved)
  local J = T.tensor(r.jsd)
  require('tdrl.plot').heatmap(J, {title = "Jensen-Shannon divergence of attention profiles (bits)",
    row_labels = r.tasks, col_labels = r.tasks, colorbar_label = "JSD", annotate = true, vmin = 0},
    dir .. "/jsd-" .. cfg.encoder .. ".png")
else
  local sets = P.sets(cfg)
  local model = P.model(cfg, dir, cfg.encoder, {encoder = cfg.encoder, latent = cfg.latent}, sets)
  r = P.attention(P.trajectories(model, sets, cfg.granularity, dir, cfg.encoder), cfg, dir, cfg.encoder)
end
io.write(string.format("%-12s", ""))
for _, t in ipairs(r.tasks) do io.write(string.format("%12s", t)) end
io.write("\n")
for i, a in ipairs(r.tasks) do
  io.write(string.format("%-12s", a))
  for j = 1, #r.tasks do io.write(string.format("%12.3f", r.jsd[i][j])) end
  io.write("\n")
end
print("figure: " .. dir .. "/jsd-" .. cfg.encoder .. ".png")
