-- One data-parallel VDRL training step of a preset (default small) at global batch 100, timed
-- in its parts: forward + backward of this rank's slice (compute), the gradients' all-reduce,
-- and clipping + Adam. Run alone or under mpirun; bench/dist.lua runs it in each layout and
-- checks the model of the step time (bench/README.md, "Many processes").
--   ./tdrl bench/dist_step.lua [preset] [steps] [batch]   -> one JSON line from rank 0
local T = require 'tdrl'
local D = require 'tdrl.diffusion'
local optim = require 'tdrl.optim'
local dist = require 'tdrl.dist'
local json = require 'tdrl.json'
local DataParallel = require 'tdrl.data_parallel'

local preset, steps, B = arg[1] or "small", tonumber(arg[2] or 3), tonumber(arg[3] or 100)
local cfg = D.presets.resolve({preset = preset, batch = B})
local gen = T.Generator(0)
local model = D.build(cfg, gen)
local opt = optim.Adam(model:parameters(), {lr = 2e-4})
local dp = DataParallel.new(model)
dp:broadcast_state()
local X = T.rand(512, 3, 32, 32, T.Generator(1)) * 2 - 1
local sums = {compute = 0, allreduce = 0, update = 0, step = 0}
local function step(record)
  local t0 = T.clock()
  local x0, draws = dp:diffusion_batch(X, B, gen, model.sde)
  opt:zero_grad()
  local loss = D.loss.dsm(model, x0, draws)
  ;(dp.size > 1 and loss * dp.weight or loss):backward()
  local t1 = T.clock()
  dist.sum_gradients(dp.params)
  local t2 = T.clock()
  optim.clip_grad_norm_(model, 1.0)
  opt:step()
  local t3 = T.clock()
  if record then
    -- the slowest rank sets the pace: maxima over ranks
    local c = dist.all_reduce(t1 - t0, "max")
    sums.compute, sums.allreduce = sums.compute + c, sums.allreduce + dist.all_reduce(t2 - t1, "max")
    sums.update, sums.step = sums.update + dist.all_reduce(t3 - t2, "max"), sums.step + dist.all_reduce(t3 - t0, "max")
  end
end
step(false) -- warm-up: the allocator's cache and the first-call costs
for _ = 1, steps do step(true) end
-- the all-reduce alone, after a barrier (no rank waiting for another's compute): its bandwidth
local ar = 0
if dist.size() > 1 then
  for _ = 1, 5 do
    dist.barrier()
    local t0 = T.clock()
    dist.sum_gradients(dp.params)
    ar = ar + dist.all_reduce(T.clock() - t0, "max") / 5
  end
end
if dist.is_main() then
  local r = {allreduce_alone = ar, preset = preset, batch = B, ranks = dist.size(), threads = T.get_num_threads(), steps = steps,
    grad_bytes = dist.gradient_bytes(dp.params)}
  for k, v in pairs(sums) do r[k] = v / steps end
  print(json.encode(r))
end
