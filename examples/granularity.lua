-- Sections 3.5-3.6 / Figures 9-10: does a finer discretisation of the trajectory help?
-- A model with a small code (latent 2 by default, where one point holds little) is discretised
-- at each granularity g (g + 1 points; g = 1 is the single point t = 0.5) and a GRU head is
-- trained on each; accuracy against g, per task.
--
--   ./tdrl examples/granularity.lua [--quick] [--granularities=1,2,5,10,25] [--gran_latent=2]
--   ./tdrl examples/granularity.lua --latents=2,4,8     # Figure 10: one model per latent size
--
-- Writes granularity-<name>.png / .json (and granularity-latents.png with --latents).
local P = require 'tdrl.paper'

local cfg = P.config(arg, {latents = {}, gran_encoder = "drl"})
local dir = P.run_dir(cfg.out ~= "" and cfg.out or ("runs/granularity-" .. cfg.dataset))
local sets = P.sets(cfg)
local latents = #cfg.latents > 0 and cfg.latents or {cfg.gran_latent}
local per_latent = {}
for _, L in ipairs(latents) do
  local name = string.format("%s-latent%d", cfg.gran_encoder, L)
  local model = P.model(cfg, dir, name, {encoder = cfg.gran_encoder, latent = L}, sets)
  local r = P.granularity(model, sets, cfg, dir, name)
  per_latent[#per_latent + 1] = {latent = L, rows = r.rows}
  print(string.format("latent %d:", L))
  for _, row in ipairs(r.rows) do
    print(string.format("  g = %-3d %-12s %.3f", row.g, row.task, row.test_median))
  end
end
if #latents > 1 then
  -- Figure 10: mean accuracy over tasks against g, one line per latent size
  local series = {}
  for _, pl in ipairs(per_latent) do
    local sum, cnt, xs = {}, {}, {}
    for _, row in ipairs(pl.rows) do
      if not sum[row.g] then sum[row.g], cnt[row.g] = 0, 0; xs[#xs + 1] = row.g end
      sum[row.g], cnt[row.g] = sum[row.g] + row.test_median, cnt[row.g] + 1
    end
    local ys = {}
    for i, g in ipairs(xs) do ys[i] = sum[g] / cnt[g] end
    series[#series + 1] = {label = "latent " .. pl.latent, x = xs, y = ys}
  end
  require('tdrl.plot').lines({series = series}, {title = "mean accuracy over tasks: latent size x granularity",
    xlabel = "granularity g", ylabel = "test accuracy", legend = "best"}, dir .. "/granularity-latents.png")
  print("figure: " .. dir .. "/granularity-latents.png")
end
