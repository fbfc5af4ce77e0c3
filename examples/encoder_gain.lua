-- What the code buys at each noise level: the DSM loss of trained models (run folders of
-- examples/train_diffusion.lua) on the same held-out images, the same times and the same noise,
-- in bins of t. With an encoder the score network is told about x0; the baseline must guess it.
--
--   ./tdrl examples/encoder_gain.lua --runs=runs/diffusion-synthetic-drl,runs/diffusion-synthetic-none
--
-- Prints one row per bin (t range, sigma range, each run's mean loss term 0.5 |sigma s + eps|^2,
-- and the first run's relative difference to the last) and writes encoder-gain.json and
-- encoder-gain.png into the first run's folder (--out to choose). EMA weights are used, as in
-- the trainer's evaluation.
local T = require 'tdrl'
local json = require 'tdrl.json'
local args = require 'tdrl.util.args'
local trainer = require 'tdrl.diffusion.trainer'
local checkpoint = require 'tdrl.checkpoint'
local D = require 'tdrl.diffusion'
local P = require 'tdrl.paper'
local plot = require 'tdrl.plot'

local o = args.parse(arg, {runs = "runs/diffusion-synthetic-drl,runs/diffusion-synthetic-none", n = 512,
  bins = 10, batch = 128, seed = 11, out = ""})
local dirs = {}
for d in o.runs:gmatch("[^,]+") do dirs[#dirs + 1] = d end
if #dirs < 1 then error("encoder_gain: --runs names no run folder") end

local function load_run(dir)
  local f = io.open(dir .. "/config.json")
  if not f then error("encoder_gain: " .. dir .. "/config.json not found (a run folder of train_diffusion.lua?)", 0) end
  local cfg = json.decode(f:read("a"))
  f:close()
  local s = trainer.setup(cfg)
  local ck = checkpoint.load(dir .. "/checkpoint.safetensors", {model = s.model, ema = s.ema})
  s.ema:copy_to()
  s.model:eval()
  return {dir = dir, cfg = cfg, model = s.model, step = ck.step}
end

local runs = {}
for i, d in ipairs(dirs) do runs[i] = load_run(d) end
local cfg = runs[1].cfg
local _, val = P.datasets(cfg.dataset or "synthetic", {data_dir = cfg.data_dir ~= "" and cfg.data_dir or nil})
local X = P.images(val)
local n = math.min(o.n, X:size(1))
X = X:narrow(1, 1, n)
local sde = runs[1].model.sde

local rows = {}
T.no_grad(function()
  for b = 1, o.bins do
    local lo, hi = (b - 1) / o.bins, b / o.bins
    local row = {t_lo = lo, t_hi = hi, sigma_lo = sde:sigma_of(math.max(lo, cfg.eps_t)), sigma_hi = sde:sigma_of(hi), loss = {}}
    for r, run in ipairs(runs) do
      local g = T.Generator(o.seed * 1000 + b) -- the same t and noise for every run
      local total = 0
      for s = 1, n, o.batch do
        local x0 = X:narrow(1, s, math.min(o.batch, n - s + 1))
        local t = T.rand({x0:size(1)}, g) * (hi - lo) + lo
        t = t:clamp(cfg.eps_t, 1)
        local _, parts = D.loss.dsm(run.model, x0, {t = t, generator = g, regulariser = "none"})
        total = total + parts.per_sample:sum():item()
      end
      row.loss[r] = total / n
    end
    rows[b] = row
  end
end)

local names = {}
for i, r in ipairs(runs) do names[i] = string.format("%s (%s, step %d)", r.dir, r.cfg.encoder, r.step) end
print("mean 0.5 |sigma s + eps|^2 per image, " .. n .. " held-out images, the same t and noise for every run:")
for i, nm in ipairs(names) do print(string.format("  [%d] %s", i, nm)) end
local head = {"t", "sigma"}
for i = 1, #runs do head[#head + 1] = "[" .. i .. "]" end
if #runs > 1 then head[#head + 1] = "[1] vs [" .. #runs .. "]" end
print(table.concat(head, "\t"))
for _, row in ipairs(rows) do
  local cells = {string.format("%.1f-%.1f", row.t_lo, row.t_hi), string.format("%.3g-%.3g", row.sigma_lo, row.sigma_hi)}
  for _, v in ipairs(row.loss) do cells[#cells + 1] = string.format("%.3f", v) end
  if #runs > 1 then
    row.relative = row.loss[1] / row.loss[#runs] - 1
    cells[#cells + 1] = string.format("%+.1f%%", 100 * row.relative)
  end
  print(table.concat(cells, "\t"))
end

local out = o.out ~= "" and o.out or runs[1].dir
local series = {}
for i, nm in ipairs(names) do
  local x, y = {}, {}
  for b, row in ipairs(rows) do x[b], y[b] = (row.t_lo + row.t_hi) / 2, row.loss[i] end
  series[i] = {label = runs[i].cfg.encoder, x = x, y = y, marker = true}
end
plot.lines({series = series}, {title = "DSM loss by noise level", xlabel = "t (bin centre)",
  ylabel = "0.5 |sigma s + eps|^2 per image"}, out .. "/encoder-gain.png")
P.write_result(out, "encoder-gain", {runs = names, images = n, bins = rows})
print("wrote " .. out .. "/encoder-gain.json and encoder-gain.png")
