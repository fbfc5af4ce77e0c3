-- The ceiling for the probes: the diffusion encoder's own architecture (WRN, the same depth,
-- width and input channels) trained SUPERVISED on each task's labels, on the same training
-- images, with early stopping on validation. If a task is far above the probes here, the images
-- hold it and the diffusion objective is what leaves it out of the code; if a task is low here
-- too, the architecture or the data set is the limit.
--
--   ./tdrl examples/supervised_ceiling.lua                       # WRN-10-1, every Synthetic task
--   ./tdrl examples/supervised_ceiling.lua --enc_depth=16 --enc_coords=true --tasks=shape
--
-- Writes <out>/ceiling.csv (task, depth, coords, seed, val, test, epochs).
local T = require 'tdrl'
local D = require 'tdrl.diffusion'
local P = require 'tdrl.paper'
local nn = require 'tdrl.nn'
local optim = require 'tdrl.optim'
local args = require 'tdrl.util.args'
local fs = require 'tdrl.util.fs'

local cfg = args.with_preset(arg, D.presets.get, {dataset = "synthetic", data_dir = "", out = "", tasks = "",
  epochs = 60, patience = 10, train_batch = 64, train_lr = 1e-3, seeds = {1, 2}, n_train = 4000, n_val = 500,
  n_test = 1000})
if type(cfg.seeds) ~= "table" then cfg.seeds = {cfg.seeds} end
local out = cfg.out ~= "" and cfg.out or ("runs/ceiling-" .. cfg.dataset)
fs.mkdir(out)
local sets = P.sets(cfg)
local X, Y = P.images(sets.train)
local Xv, Yv = P.images(sets.val)
local Xt, Yt = P.images(sets.test)
local tasks = {}
if cfg.tasks ~= "" then
  for t in tostring(cfg.tasks):gmatch("[^,]+") do tasks[#tasks + 1] = t end
else
  tasks = sets.train:task_names()
end

-- accuracy of the encoder's logits on (X, y) at t = 0, in eval mode
local function accuracy(enc, Xs, y)
  enc:eval()
  local correct = 0
  T.no_grad(function()
    for s = 1, Xs:size(1), 500 do
      local n = math.min(500, Xs:size(1) - s + 1)
      local logits = enc(Xs:narrow(1, s, n), T.zeros(n)).z
      correct = correct + logits:argmax(2):eq(y:narrow(1, s, n)):sum():item()
    end
  end)
  enc:train()
  return correct / Xs:size(1)
end

local rows = {}
for _, task in ipairs(tasks) do
  local classes = sets.train.classes[task]
  for _, seed in ipairs(cfg.seeds) do
    local gen = T.Generator(seed)
    -- a deterministic WRN whose "code" is the logits; t = 0 always (no noise: a plain classifier)
    local enc = D.WRNEncoder({depth = cfg.enc_depth, widen = cfg.enc_widen, latent = classes, probabilistic = false,
      channels = X:size(2), coords = cfg.enc_coords, sde = D.SDE.new(cfg), generator = gen})
    local opt = optim.Adam(enc:parameters(), {lr = cfg.train_lr})
    local best = {val = -1, test = 0, epoch = 0}
    local epoch = 0
    while epoch < cfg.epochs and epoch - best.epoch < cfg.patience do
      epoch = epoch + 1
      local perm = T.randperm(X:size(1), gen)
      for s = 1, X:size(1) - cfg.train_batch + 1, cfg.train_batch do
        local idx = perm:narrow(1, s, cfg.train_batch)
        opt:zero_grad()
        local logits = enc(X:index_select(1, idx), T.zeros(cfg.train_batch)).z
        nn.F.cross_entropy(logits, Y[task]:index_select(1, idx)):backward()
        opt:step()
      end
      local va = accuracy(enc, Xv, Yv[task])
      if va > best.val then best = {val = va, test = accuracy(enc, Xt, Yt[task]), epoch = epoch} end
    end
    print(string.format("%-11s seed %d: validation %.3f, test %.3f (best epoch %d of %d)", task, seed, best.val,
      best.test, best.epoch, epoch))
    rows[#rows + 1] = {task = task, depth = cfg.enc_depth, widen = cfg.enc_widen, coords = cfg.enc_coords, seed = seed,
      val = best.val, test = best.test, epochs = best.epoch}
  end
end
P.write_result(out, "ceiling", {config = cfg, rows = rows}, rows,
  {"task", "depth", "widen", "coords", "seed", "val", "test", "epochs"})
print("ceiling: " .. out .. "/ceiling.csv")
