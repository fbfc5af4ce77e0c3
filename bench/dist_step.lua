-- One data-parallel VDRL training step of a preset (default small) at global batch 100, timed
-- in its parts: forward + backward of this rank's slice (compute), the gradients' all-reduce,
-- and clipping + Adam. Run alone or under mpirun; bench/dist.lua runs it in each layout and
-- checks the model of the step time (bench/README.md, "Many processes").
--   ./tdrl bench/dist_step.lua [preset] [steps] [batch] [compare]   -> one JSON line from rank 0
-- The parts are timed with the all-reduce after the backward (data_parallel's overlap = false).
-- With "compare", whole trainer steps (dp:backward) alternate between that and the all-reduce
-- overlapped with the backward (overlap = true, the default), so that both see the same
-- machine load; the JSON then gives step_after, step_overlap (25 MB buckets) and
-- step_overlap_1mb (seconds per step).
local T = require 'tdrl'
local D = require 'tdrl.diffusion'
local optim = require 'tdrl.optim'
local dist = require 'tdrl.dist'
local json = require 'tdrl.json'
local DataParallel = require 'tdrl.data_parallel'

local preset, steps, B = arg[1] or "small", tonumber(arg[2] or 3), tonumber(arg[3] or 100)
local compare = arg[4] == "compare"
local cfg = D.presets.resolve({preset = preset, batch = B})
local gen = T.Generator(0)
local model = D.build(cfg, gen)
local opt = optim.Adam(model:parameters(), {lr = 2e-4})
local dp = DataParallel.new(model, {overlap = false})
dp:broadcast_state()
local dp_overlap = compare and DataParallel.new(model, {overlap = true})
-- 1 MB buckets: the small model's 10 MB in 10, the first started early in the backward (with
-- the default 25 MB they make one bucket, which can start only when the backward ends)
local dp_overlap_1mb = compare and DataParallel.new(model, {overlap = true, bucket_mb = 1})
local X = T.rand(512, 3, 32, 32, T.Generator(1)) * 2 - 1
local sums = {compute = 0, allreduce = 0, update = 0, step = 0}
local modes = {overlap = 0, overlap_1mb = 0, after = 0}
-- the trainer's step through dp:backward (the all-reduce inside it), timed whole
local function whole_step(d)
  local t0 = T.clock()
  local x0, draws = d:diffusion_batch(X, B, gen, model.sde)
  opt:zero_grad()
  d:backward(D.loss.dsm(model, x0, draws))
  optim.clip_grad_norm_(model, 1.0)
  opt:step()
  return dist.all_reduce(T.clock() - t0, "max")
end
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
if compare then
  whole_step(dp) -- warm-up: the allocator's cache and the first-call costs
  whole_step(dp_overlap)
  whole_step(dp_overlap_1mb)
  for _ = 1, steps do
    modes.after = modes.after + whole_step(dp)
    modes.overlap = modes.overlap + whole_step(dp_overlap)
    modes.overlap_1mb = modes.overlap_1mb + whole_step(dp_overlap_1mb)
  end
else
  step(false) -- warm-up
  for _ = 1, steps do step(true) end
end
-- the all-reduce alone, after a barrier (no rank waiting for another's compute): its bandwidth
local ar = 0
if dist.size() > 1 and not compare then
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
  if compare then
    r.step_overlap, r.step_overlap_1mb = modes.overlap / steps, modes.overlap_1mb / steps
    r.step_after = modes.after / steps
    if dp_overlap.reducer then -- 2 ranks or more
      r.buckets, r.buckets_1mb = dp_overlap.reducer:buckets(), dp_overlap_1mb.reducer:buckets()
    end
  else for k, v in pairs(sums) do r[k] = v / steps end end
  print(json.encode(r))
end
