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
--
--   ./tdrl examples/encoder_gain.lua --runs=runs/probe/seed0/model --swap=shape,location,foreground
--
-- --swap asks which factors the first run's code carries in a form the score network uses,
-- without a probe: each held-out image is denoised once with its own code and once with the code
-- of a training image that has the same labels but for that factor (same t, noise and code
-- noise), and the loss increase is reported per bin ("same" pairs a training image with every
-- label equal, the floor: what the jitter within a cell and the image's own details add).
local T = require 'tdrl'
local json = require 'tdrl.json'
local args = require 'tdrl.util.args'
local trainer = require 'tdrl.diffusion.trainer'
local checkpoint = require 'tdrl.checkpoint'
local D = require 'tdrl.diffusion'
local P = require 'tdrl.paper'
local plot = require 'tdrl.plot'

local o = args.parse(arg, {runs = "runs/diffusion-synthetic-drl,runs/diffusion-synthetic-none", n = 512,
  bins = 10, batch = 128, seed = 11, out = "", swap = ""})
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
local X, Lv = P.images(val)
local n = math.min(o.n, X:size(1))
X = X:narrow(1, 1, n)
local sde = runs[1].model.sde

-- partners for --swap: for each held-out image, a training image whose labels equal its own but
-- for `task` (task "same": all equal); {rows = held-out positions (int64), partner = (m, C, H, W)}
local swaps = {}
if o.swap ~= "" then
  local train = P.datasets(cfg.dataset or "synthetic", {data_dir = cfg.data_dir ~= "" and cfg.data_dir or nil})
  local Xt, Lt = P.images(train)
  local tasks = train.tasks
  local function key(L, i, skip)
    local parts = {}
    for _, task in ipairs(tasks) do
      if task ~= skip then parts[#parts + 1] = tostring(L[task]:get(i)) end
    end
    return table.concat(parts, ",")
  end
  for task in ("same," .. o.swap):gmatch("[^,]+") do
    if task ~= "same" and not Lt[task] then
      error(string.format("encoder_gain: --swap names '%s', not a task of %s (%s)", task, cfg.dataset,
        table.concat(tasks, ", ")), 0)
    end
    local skip = task ~= "same" and task or nil
    local pool = {}
    for i = 1, Xt:size(1) do
      local k = key(Lt, i, skip)
      pool[k] = pool[k] or {}
      table.insert(pool[k], i)
    end
    local rows, partners = {}, {}
    for i = 1, n do
      for _, j in ipairs(pool[key(Lv, i, skip)] or {}) do
        if not skip or Lt[skip]:get(j) ~= Lv[skip]:get(i) then
          rows[#rows + 1], partners[#partners + 1] = i - 1, j - 1
          break
        end
      end
    end
    if #rows == 0 then error("encoder_gain: no training image pairs with a held-out one for --swap=" .. task, 0) end
    local r = T.tensor(rows, "int64")
    swaps[#swaps + 1] = {task = task, x = X:index_select(1, r), partner = Xt:index_select(1, T.tensor(partners, "int64"))}
  end
end

-- mean loss term of run over images x (same t and noise for a given bin b), the encoder seeing code_x
local function bin_loss(run, x, b, lo, hi, code_x)
  local g = T.Generator(o.seed * 1000 + b)
  local total = 0
  for s = 1, x:size(1), o.batch do
    local m = math.min(o.batch, x:size(1) - s + 1)
    local x0 = x:narrow(1, s, m)
    local t = (T.rand({m}, g) * (hi - lo) + lo):clamp(cfg.eps_t, 1)
    local _, parts = D.loss.dsm(run.model, x0, {t = t, generator = g, regulariser = "none",
      code_x0 = code_x and code_x:narrow(1, s, m)})
    total = total + parts.per_sample:sum():item()
  end
  return total / x:size(1)
end

local rows = {}
T.no_grad(function()
  for b = 1, o.bins do
    local lo, hi = (b - 1) / o.bins, b / o.bins
    local row = {t_lo = lo, t_hi = hi, sigma_lo = sde:sigma_of(math.max(lo, cfg.eps_t)), sigma_hi = sde:sigma_of(hi), loss = {}}
    for r, run in ipairs(runs) do row.loss[r] = bin_loss(run, X, b, lo, hi) end
    row.swap = {}
    for _, sw in ipairs(swaps) do
      row.swap[sw.task] = bin_loss(runs[1], sw.x, b, lo, hi, sw.partner) - bin_loss(runs[1], sw.x, b, lo, hi)
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
if #swaps > 0 then
  local head2 = {"t"}
  for _, sw in ipairs(swaps) do head2[#head2 + 1] = string.format("%s (%d)", sw.task, sw.x:size(1)) end
  print("loss increase of [1] when its encoder sees a partner differing in one factor (images paired):")
  print(table.concat(head2, "\t"))
  for _, row in ipairs(rows) do
    local cells = {string.format("%.1f-%.1f", row.t_lo, row.t_hi)}
    for _, sw in ipairs(swaps) do cells[#cells + 1] = string.format("%+.3f", row.swap[sw.task]) end
    print(table.concat(cells, "\t"))
  end
end

local out = o.out ~= "" and o.out or runs[1].dir
require("tdrl.util.fs").mkdir(out)
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
