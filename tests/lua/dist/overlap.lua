-- Run by dist_spec.lua under `mpirun -np 2`: the gradients that data_parallel sums over ranks
-- during the backward (overlap, buckets started as they fill) equal those summed after it, on a
-- model of several buckets with a parameter the graph never uses and one used twice.
--   overlap.lua  -> "rank R: overlap equals after-backward in B buckets (max diff D)"
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local class = require 'tdrl.class'
local dist = require 'tdrl.dist'
local DataParallel = require 'tdrl.data_parallel'
local r = dist.rank()
assert(dist.size() == 2, "expected 2 ranks")

local Net = class('OverlapNet', nn.Module)
function Net:__init()
  nn.Module.__init(self)
  self.fc1 = nn.Linear(8, 32)
  self.fc2 = nn.Linear(32, 32) -- applied twice: its parameters take two contributions
  self.unused = nn.Parameter(T.ones(5))
  self.fc3 = nn.Linear(32, 3)
end
function Net:forward(x) return self.fc3(self.fc2(self.fc2(self.fc1(x):tanh()):tanh())) end

T.manual_seed(100 + r) -- other initial weights per rank: broadcast_state must make them agree
local model = Net()
-- buckets of 200 values, from the last parameter back (a module's own parameters come before
-- its children's): {fc3.bias, fc3.weight, fc2.bias}, {fc2.weight} (1,024 values, larger than a
-- bucket: alone), {fc1.bias}, {fc1.weight}, {unused}: the last bucket is full first (at the
-- backward's start) and must wait for the four before it
local bucket_mb = 200 * 4 / 2 ^ 20
local over = DataParallel.new(model, {bucket_mb = bucket_mb})
local after = DataParallel.new(model, {bucket_mb = bucket_mb, overlap = false})
assert(over.reducer and not after.reducer, "overlap is the default, overlap = false turns it off")
over:broadcast_state()
local nb, sizes = over.reducer:buckets()
local layout = table.concat(sizes, " ")
assert(nb == 5 and layout == "131 1024 32 256 5", "buckets: " .. nb .. ": " .. layout)

-- the first bucket holds at most 1 MB whatever bucket_mb says, so that a model whose gradients
-- fit in one 25 MB bucket still starts sending before its backward ends: 2 MB of fc1.weight
-- goes to a second bucket behind {fc2.bias, fc2.weight, fc1.bias}
do
  local big = nn.Sequential(nn.Linear(512, 1024), nn.Linear(1024, 10))
  local nb2, sizes2 = DataParallel.new(big).reducer:buckets()
  assert(nb2 == 2 and table.concat(sizes2, " ") == "11274 524288", "default buckets: " .. nb2 .. ": "
    .. table.concat(sizes2, " "))
end

local function grads()
  local out = {}
  for i, p in ipairs(model:parameters()) do out[i] = p.grad:clone() end
  return out
end
local function step(dp, x)
  for _, p in ipairs(model:parameters()) do p.grad = nil end
  dp.weight = r == 0 and 0.25 or 0.75 -- as diffusion_batch sets it: the ranks' shares
  dp:backward((model(x) ^ 2):mean())
  return grads()
end

local worst, checks, summed = 0, 0, nil
for it = 1, 3 do -- the reducer's buffers are reused step after step
  local x = T.randn({6, 8}, T.Generator(10 * it + r))
  local a, b = step(over, x), step(after, x)
  -- this rank's own weighted gradient, to see that a sum over ranks happened
  for _, p in ipairs(model:parameters()) do p.grad = nil end
  ;((model(x) ^ 2):mean() * (r == 0 and 0.25 or 0.75)):backward()
  local own = model.fc1.weight.grad:clone()
  for i = 1, #a do
    local d = (a[i] - b[i]):abs():max():item() / (b[i]:abs():max():item() + 1e-30)
    if d > worst then worst = d end
    checks = checks + 1
  end
  local iu, i1
  for i, p in ipairs(model:parameters()) do
    if p == model.unused then iu = i elseif p == model.fc1.weight then i1 = i end
  end
  assert((a[i1] - own):abs():max():item() > 1e-6, "the gradients were summed over ranks")
  assert(a[iu]:abs():max():item() == 0 and b[iu]:abs():max():item() == 0, "the unused parameter's gradient is zeros")
  checks = checks + 2
  summed = a[i1]
  -- every bucket started inside the backward: the last ones at its last node (fc1's), the
  -- unused parameter's, full from the start, right after the four before it
  local _, _, early = over.reducer:buckets()
  assert(early == nb, string.format("%d of %d buckets started during the backward", early, nb))
  checks = checks + 1
end
assert(worst <= 1e-6, string.format("overlap differs from after-backward by %.3g relative", worst))
-- every rank holds the same sums
local g = summed
local mx = g:clone()
dist.all_reduce(mx, "max")
assert((mx - g):abs():max():item() == 0, "ranks hold the same gradients")
print(string.format("rank %d: overlap equals after-backward in %d buckets (%d checks, max diff %.3g)", r, nb,
  checks + 1, worst))
