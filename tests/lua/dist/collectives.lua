-- Run by dist_spec.lua under `mpirun -np 2`: every collective of tdrl.dist against values
-- worked out by hand for ranks 0 and 1. Any failed check raises, which fails the job.
local T = require 'tdrl'
local dist = require 'tdrl.dist'
local r, n = dist.rank(), dist.size()
assert(n == 2, "expected 2 ranks, got " .. n)
local checks = 0
local function eq(a, b, what)
  if math.abs(a - b) > 1e-6 * (1 + math.abs(b)) then error(string.format("%s: got %.9g, expected %.9g", what, a, b)) end
  checks = checks + 1
end

-- rank 0 holds {1, 2, 3}, rank 1 {10, 20, 30} (scaled by r); sum {11, 22, 33}, max the same as rank 1's
local x = T.tensor({1, 2, 3}) * (r == 0 and 1 or 10)
dist.all_reduce(x, "sum")
for i, v in ipairs({11, 22, 33}) do eq(x[i], v, "sum[" .. i .. "]") end
local m = T.tensor({1 + r, 5 - r})
dist.all_reduce(m, "mean")
eq(m[1], 1.5, "mean[1]"); eq(m[2], 4.5, "mean[2]")
local mx = T.tensor({1 + r, 5 - r})
dist.all_reduce(mx, "max")
eq(mx[1], 2, "max[1]"); eq(mx[2], 5, "max[2]")
local mn = T.tensor({1 + r, 5 - r})
dist.all_reduce(mn, "min")
eq(mn[1], 1, "min[1]"); eq(mn[2], 4, "min[2]")
local ints = T.tensor({3 + r, 7}, "int64")
dist.all_reduce(ints, "sum")
eq(ints[1], 7, "int64 sum[1]"); eq(ints[2], 14, "int64 sum[2]")
eq(dist.all_reduce(r + 1, "sum"), 3, "number sum")
eq(dist.all_reduce(r + 0.5, "mean"), 1, "number mean")
-- a list in buckets of 8 bytes (2 floats): 3 buckets over 2 tensors of 3 and 2 values
local a, b = T.full({3}, r + 1), T.full({2}, 2 * (r + 1))
dist.all_reduce({a, b}, "sum", {bucket_mb = 8 / 2 ^ 20})
eq(a:sum():item(), 9, "bucketed a"); eq(b:sum():item(), 12, "bucketed b")

-- broadcast from rank 1: rank 0's tensor takes rank 1's values
local bt = T.full({2, 2}, r == 1 and 7 or -1)
dist.broadcast(bt, 1)
eq(bt:sum():item(), 28, "broadcast tensor")
local tbl = dist.broadcast({name = "from " .. r, list = {r, r * 2}}, 1)
assert(tbl.name == "from 1" and tbl.list[2] == 2, "broadcast table")
checks = checks + 1

-- all_gather: rank 0 has one row of 0s, rank 1 two rows of 1s -> (3, 2) rows 0, 1, 1
local g = dist.all_gather(T.full({r + 1, 2}, r))
eq(g:size(1), 3, "gathered rows")
eq(g[1][1], 0, "row 1"); eq(g[2][2], 1, "row 2"); eq(g[3][1], 1, "row 3")
local names = dist.all_gather("rank " .. r)
assert(names[1] == "rank 0" and names[2] == "rank 1", "all_gather strings")
checks = checks + 1

-- map: job i runs on rank (i - 1) % 2, every rank gets every result in order
local ran = {}
local res = dist.map(5, function(i) ran[#ran + 1] = i; return {i = i, by = r} end)
for i = 1, 5 do eq(res[i].i, i, "map result " .. i); eq(res[i].by, (i - 1) % 2, "map rank of job " .. i) end
eq(#ran, r == 0 and 3 or 2, "jobs run here")

-- sum over ranks with a gradient: s = a0 + a1; L = sum over ranks of s . w_r with w_r = {1, 3 + r}
-- so dL/da = w_0 + w_1 = {2, 7} on both ranks
local av = T.tensor({1 + r, 2}, {requires_grad = true})
local s = dist.sum_over_ranks(av)
eq(s[1], 3, "sum_over_ranks[1]"); eq(s[2], 4, "sum_over_ranks[2]")
;(s * T.tensor({1, 3 + r})):sum():backward()
eq(av.grad[1], 2, "grad[1]"); eq(av.grad[2], 7, "grad[2]")

-- bad input names the problem, on every rank alike (no rank left waiting)
local ok, err = pcall(dist.all_reduce, x, "median")
assert(not ok and err:find("sum, mean, max or min", 1, true), tostring(err))
ok, err = pcall(dist.all_reduce, T.zeros(3, 4):t(), "sum")
assert(not ok and err:find("contiguous", 1, true), tostring(err))
ok, err = pcall(dist.broadcast, x, 2)
assert(not ok and err:find("root 2 is not a rank", 1, true), tostring(err))
checks = checks + 3
dist.barrier()
print(string.format("rank %d: %d checks passed", r, checks))
