-- tdrl.dist: many processes, one job (MPI, Open MPI from Debian). Under `mpirun -np N ./tdrl
-- script.lua` (or `srun`) each process is a rank; run plainly, the script is rank 0 of 1 and
-- every function here is a no-op or the identity, so the same script runs either way.
--
--   local dist = require 'tdrl.dist'
--   dist.rank(), dist.size(), dist.is_main()          -- 0-based rank, number of ranks, rank 0?
--   dist.all_reduce(t, "mean")                        -- in place over ranks: sum | mean | max | min
--   dist.broadcast(t, 0)                              -- rank 0's values into every rank's t
--   local all = dist.all_gather(t)                    -- (sum of ranks' dim 1, ...): ranks in order
--   local res = dist.map(#jobs, function(i) return run(jobs[i]) end)  -- jobs spread over ranks
--
-- Failure ends the whole job, never hangs it: a script that ends in an error on any rank
-- aborts every rank, each collective waits at most TDRL_DIST_TIMEOUT seconds (default 1800),
-- and an MPI error aborts with the rank's name. Threads: each rank takes cores / (ranks on its
-- machine) unless TDRL_NUM_THREADS is set.
local T = require 'tdrl'
local json = require 'tdrl.json'

local C = T._dist
local M = {}
local rank, size, local_rank, local_size = C.init()

--- this process's rank, from 0
function M.rank() return rank end
--- the number of ranks in the job (1 without mpirun)
function M.size() return size end
--- this process's rank among those of its machine, and their number
function M.local_rank() return local_rank end
function M.local_size() return local_size end
--- true on rank 0, the rank that writes files and prints
function M.is_main() return rank == 0 end
--- true when more than one rank runs
function M.active() return size > 1 end
--- true when this binary was built with MPI
function M.available() return C.available() end

local OPS = {sum = true, mean = true, max = true, min = true}
local function check_op(op, fn)
  op = op or "sum"
  if not OPS[op] then error(string.format("%s: op must be sum, mean, max or min, got %s", fn, tostring(op)), 3) end
  return op
end

local function tensor_list(t, fn)
  local list = T.is_tensor(t) and {t} or t
  if type(list) ~= "table" then error(fn .. ": expected a tensor or a list of tensors, got " .. type(t), 3) end
  for i, x in ipairs(list) do
    if not T.is_tensor(x) then error(string.format("%s: item %d is a %s, not a tensor", fn, i, type(x)), 3) end
  end
  return list
end

--- all_reduce(t, op = "sum" [, {bucket_mb = 25}]) -> t: every rank's t (a tensor or a list of
--- tensors, contiguous, float32 or int64) replaced in place by the reduction over ranks; a
--- number gives the reduced number. A list is packed into flat buckets of bucket_mb MB.
function M.all_reduce(t, op, opts)
  op = check_op(op, "dist.all_reduce")
  if type(t) == "number" then
    local x = T.tensor({t}, math.type(t) == "integer" and op ~= "mean" and "int64" or "float32")
    M.all_reduce(x, op)
    return x[1]
  end
  local list = tensor_list(t, "dist.all_reduce")
  if size == 1 or #list == 0 then return t end
  local bucket = math.floor((opts and opts.bucket_mb or 25) * 2 ^ 20)
  C.all_reduce(list, op == "mean" and "sum" or op, bucket)
  if op == "mean" then
    T.no_grad(function() for _, x in ipairs(list) do x:mul_(1 / size) end end)
  end
  return t
end

--- broadcast(v, root = 0): a tensor (or list of tensors) gets root's values in place and is
--- returned; any other value (number, string, table of them) is returned as root's.
function M.broadcast(v, root)
  root = root or 0
  if math.type(root) ~= "integer" or root < 0 or root >= size then
    error(string.format("dist.broadcast: root %s is not a rank (0 to %d)", tostring(root), size - 1), 2)
  end
  if T.is_tensor(v) or (type(v) == "table" and T.is_tensor(v[1])) then
    for _, x in ipairs(tensor_list(v, "dist.broadcast")) do C.broadcast(x, root) end
    return v
  end
  if size == 1 then return v end
  return json.decode(C.broadcast_string(json.encode({v = v}), root)).v
end

--- all_gather(v) -> a tensor: the ranks' tensors joined along dim 1, rank 0's first (their
--- other dims must agree); any other value: the list of the ranks' values, rank 0's first.
function M.all_gather(v, opts)
  if not T.is_tensor(v) then
    local texts = C.all_gather_string(json.encode({v = v}), opts and opts.timeout)
    local out = {}
    for i, s in ipairs(texts) do out[i] = json.decode(s).v end
    return out
  end
  if size == 1 then return v:clone() end
  local shapes = M.all_gather(v:size())
  local rows, first = 0, 0
  for r, sh in ipairs(shapes) do
    if #sh ~= v:dim() then error(string.format("dist.all_gather: rank %d has %d dims, this rank %d", r - 1, #sh, v:dim()), 2) end
    for d = 2, #sh do
      if sh[d] ~= v:size(d) then
        error(string.format("dist.all_gather: rank %d's size %d in dim %d differs from this rank's %d", r - 1, sh[d], d, v:size(d)), 2)
      end
    end
    if r - 1 < rank then first = first + sh[1] end
    rows = rows + sh[1]
  end
  local shape = v:size()
  shape[1] = rows
  -- each rank fills its rows of zeros; a sum over ranks then joins them exactly (x + 0 = x)
  local out = T.zeros(shape, v:dtype())
  if v:size(1) > 0 then out:narrow(1, first + 1, v:size(1)):copy_(v) end
  C.all_reduce({out}, "sum", 25 * 2 ^ 20)
  return out
end

--- barrier(): returns when every rank has called it
function M.barrier() C.barrier() end

--- abort(message): ends every rank of the job now, naming this rank
function M.abort(msg) C.abort(tostring(msg)) end

--- sum_over_ranks(x) -> x summed over ranks, differentiable (backward: the gradient summed over
--- ranks); synchronised BatchNorm's statistics
function M.sum_over_ranks(x) return C.sum_over_ranks(x) end

--- map(n, fn [, {timeout = s}]) -> {fn(1), ..., fn(n)} on every rank: job i runs on rank
--- (i - 1) % size, and the results (numbers, strings, booleans and tables of them) are
--- gathered. Ranks that finish their share wait for the others without a time limit unless
--- timeout says so: a rank that dies still ends the job.
function M.map(n, fn, opts)
  local mine = {}
  for i = rank + 1, n, size do mine[#mine + 1] = {i, fn(i)} end
  if size == 1 then
    local out = {}
    for _, p in ipairs(mine) do out[p[1]] = p[2] end
    return out
  end
  local out = {}
  for _, list in ipairs(M.all_gather(mine, {timeout = opts and opts.timeout or 0})) do
    for _, p in ipairs(list) do out[p[1]] = p[2] end
  end
  return out
end

--- the parameters' gradients (zeros where a parameter has none, so every rank sends the
--- same buffers) summed over ranks in place, in buckets of flattened gradients
function M.sum_gradients(params, opts)
  if size == 1 then return end
  local grads = {}
  for i, p in ipairs(params) do
    if not p.grad then p.grad = T.zeros(p:size()) end
    grads[i] = p.grad
  end
  M.all_reduce(grads, "sum", opts)
end

--- gradient_reducer(params, {bucket_mb = 25}) -> r, or nil for 1 rank: r:backward(loss) runs
--- loss's backward and leaves the parameters' gradients summed over ranks, as sum_gradients
--- does after a backward, but each bucket of flattened gradients (parameters in reverse order,
--- as the backward makes them) starts its all-reduce as soon as its gradients are final, while
--- the backward goes on; r:buckets() -> their number, sizes (values), and how many the last
--- backward started before it returned
function M.gradient_reducer(params, opts)
  if size == 1 then return nil end
  tensor_list(params, "dist.gradient_reducer")
  return C.gradient_reducer(params, math.floor((opts and opts.bucket_mb or 25) * 2 ^ 20))
end

--- bytes that sum_gradients sends per step for these parameters (float32)
function M.gradient_bytes(params)
  local n = 0
  for _, p in ipairs(params) do n = n + p:numel() end
  return 4 * n
end

return M
