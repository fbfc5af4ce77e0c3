-- Run by dist_spec.lua, under mpirun or alone: the heads protocol, MINE's dependence matrix and
-- the attention profiles on small fixed trajectories; rank 0 writes their results as JSON to
-- arg[1], so that the runs on 1 and 2 ranks can be compared.
local T = require 'tdrl'
local dist = require 'tdrl.dist'
local json = require 'tdrl.json'
local protocol = require 'tdrl.heads.protocol'
local mine = require 'tdrl.mine'
local attention = require 'tdrl.attention'
local g = T.Generator(11)
-- codes (N, 3 points, 4 dims) whose first dims carry the labels of two tasks, plus noise
local function split(N)
  local ya, yb = T.randint(0, 3, {N}, g), T.randint(0, 2, {N}, g)
  local codes = T.randn(N, 3, 4, g) * 0.5
  codes:select(3, 1):add_(ya:float():view(N, 1):expand(N, 3))
  codes:select(3, 2):add_(yb:float():view(N, 1):expand(N, 3))
  return {codes = codes:contiguous(), times = T.tensor({0.1, 0.5, 0.9}), tasks = {"a", "b"},
    classes = {a = 3, b = 2}, labels = {a = ya, b = yb}}
end
local sets = {train = split(96), val = split(48), test = split(48)}
local heads = protocol.run(sets, {head = "gru", epochs = 3, batch = 32, lrs = {1e-2, 1e-3}, seeds = 2})
local by_task = {}
for task, r in pairs(heads.tasks) do
  by_task[task] = {best_lr = r.best_lr, test = r.test, val_by_lr = r.val_by_lr}
end
local R = mine.dependence_matrix(sets.train.codes, {seeds = {1, 2}, iters = 30, batch = 32, hidden = 16, readout = 10})
local att = attention.profiles(sets, {epochs = 2, batch = 32, lrs = {1e-2, 1e-3}, seeds = 2})
local prof = {}
for task, p in pairs(att.tasks) do prof[task] = {profile = p.profile, ablation = p.ablation, best_lr = p.best_lr} end
if dist.is_main() then
  local f = assert(io.open(arg[1], "w"))
  f:write(json.encode({heads = by_task, mine = R:totable(), attention = prof}), "\n")
  f:close()
end
