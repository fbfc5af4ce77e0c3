-- Run by dist_spec.lua under mpirun -np 2: rank 1 fails in the way arg[1] names while rank 0
-- waits for it in an all-reduce (arg[2] = "backward": in the gradient buckets' all-reduce of a
-- backward, dist.gradient_reducer); the job must end, non-zero, without hanging.
local T = require 'tdrl'
local dist = require 'tdrl.dist'
local how = arg[1]
if dist.rank() == 1 then
  if how == "raise" then error("rank one failed on purpose") end
  if how == "exit" then os.exit(3) end
  if how == "skip" then return end -- ends cleanly, never joining the all-reduce
end
local x = T.tensor({1.0}, {requires_grad = arg[2] == "backward"})
if arg[2] == "backward" then
  dist.gradient_reducer({x}):backward((x * 2):sum())
else
  dist.all_reduce(x, "sum")
end
print("rank " .. dist.rank() .. " went on past the all-reduce")
