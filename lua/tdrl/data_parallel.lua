-- Data-parallel training over the ranks of tdrl.dist, as PyTorch's DistributedDataParallel:
-- every rank holds the whole model, trains on its slice of each global batch, and the
-- gradients are summed over ranks before every optimiser step, so all ranks take the same step.
--
--   local dp = require('tdrl.data_parallel').new(model, {noise = "rank", sync_bn = false})
--   dp:broadcast_state({ema.shadow})                 -- rank 0's weights everywhere
--   local x0, o = dp:diffusion_batch(X, B, gen, sde)  -- this rank's slice; o: generator, t, noise
--   local loss = D.loss.dsm(model, x0, o); dp:backward(loss); opt:step()
--
-- Batches: the batch indices come from the run's generator, which every rank advances alike,
-- so the global batch is the one a single process would draw; rank r takes rows
-- [off_r, off_r + n_r) of it (n_r = B / N, the first B % N ranks one more). Noise (times,
-- Gaussian noise and the model's own draws) comes from:
--   noise = "rank" (default): a stream per rank, seeded each step from the run's generator and
--     the rank: ranks draw independent noise, and a checkpoint resumes on any number of ranks
--     (the run's generator is the only state);
--   noise = "global": every rank draws the times and noise of the whole global batch from the
--     run's generator and keeps its slice, so N ranks take exactly the steps of one process with
--     batch B (up to float rounding) when the model draws nothing itself (no dropout; DRL or no
--     encoder). The tests compare in this mode.
-- Loss: each rank's mean loss is scaled by n_r / B, so the sum over ranks of the gradients is
-- the gradient of the global batch's mean loss. BatchNorm: per rank, as DDP, with rank 0's
-- running statistics broadcast every step; sync_bn = true normalises with the statistics of the
-- global batch (sum_over_ranks, differentiable), as SyncBatchNorm.
-- Gradients: overlap = true (default) sums them over ranks during the backward, as DDP: the
-- core reports each parameter whose gradient is final, and every bucket of bucket_mb MB of
-- flattened gradients starts its all-reduce once full (dist.gradient_reducer); overlap = false
-- runs the whole backward first and then all-reduces the buckets (dist.sum_gradients), for
-- comparison and as a fallback. Both give the same sums.
local T = require 'tdrl'
local dist = require 'tdrl.dist'

local M = {}
local DP = {}
DP.__index = DP

local NOISE = {rank = true, global = true}

--- rows [off + 1, off + n] of a global batch of B for rank r of N
function M.slice(B, r, N)
  local base, extra = B // N, B % N
  local n = base + (r < extra and 1 or 0)
  local off = r * base + math.min(r, extra)
  return off, n
end

--- new(model, {noise = "rank" | "global", sync_bn = false, bucket_mb = 25, overlap = true})
function M.new(model, opts)
  opts = opts or {}
  local noise = opts.noise or "rank"
  if not NOISE[noise] then error("data_parallel: noise must be 'rank' or 'global', got " .. tostring(noise), 2) end
  if opts.overlap ~= nil and type(opts.overlap) ~= "boolean" then
    error("data_parallel: overlap must be true or false, got " .. tostring(opts.overlap), 2)
  end
  local self = setmetatable({model = model, noise = noise, rank = dist.rank(), size = dist.size(),
    bucket_mb = opts.bucket_mb or 25, overlap = opts.overlap ~= false}, DP)
  self.params = model:parameters()
  self.buffers = model:buffers()
  -- the buckets' layout and buffers, made once (no cost at all for 1 rank)
  if self.overlap and self.size > 1 then
    self.reducer = dist.gradient_reducer(self.params, {bucket_mb = self.bucket_mb})
  end
  if opts.sync_bn and self.size > 1 then M.convert_sync_batchnorm(model) end
  self.sync_bn = opts.sync_bn and true or false
  return self
end

--- every rank gets rank 0's parameters and buffers (and the extra tensor lists given)
function DP:broadcast_state(extra)
  if self.size == 1 then return end
  T.no_grad(function()
    dist.broadcast(self.params, 0)
    dist.broadcast(self.buffers, 0)
    for _, list in ipairs(extra or {}) do dist.broadcast(list, 0) end
  end)
end

--- this rank's slice of a global batch of B images of X (N, C, H, W) drawn with replacement
--- from the run's generator, and the options of
--- D.loss.dsm that make its draws: {generator =, t =, noise =}
function DP:diffusion_batch(X, B, gen, sde)
  local idx = T.randint(0, X:size(1), {B}, gen)
  if self.size == 1 then return X:index_select(1, idx), {generator = gen} end
  if B < self.size then
    error(string.format("data_parallel: a global batch of %d is smaller than the %d ranks", B, self.size), 2)
  end
  local off, n = M.slice(B, self.rank, self.size)
  local x0 = X:index_select(1, idx:narrow(1, off + 1, n))
  self.weight = n / B
  if self.noise == "global" then
    local t = sde:sample_t(B, gen)
    local shape = X:size()
    shape[1] = B
    local eps = T.randn(shape, gen)
    return x0, {generator = gen, t = t:narrow(1, off + 1, n), noise = eps:narrow(1, off + 1, n)}
  end
  -- a seed from the shared stream (the same on every rank), then the rank's own stream
  local seed = T.randint(0, 2 ^ 31 - 1, {1}, gen)[1]
  return x0, {generator = T.Generator(seed * 4099 + self.rank)}
end

--- backward of this rank's mean loss, weighted so that the ranks' gradients sum to the
--- global batch's, then summed over ranks
function DP:backward(loss)
  if self.size == 1 then return loss:backward() end
  if not self.weight then error("data_parallel: backward before diffusion_batch", 2) end
  if self.reducer then
    self.reducer:backward(loss * self.weight)
  else
    (loss * self.weight):backward()
    dist.sum_gradients(self.params, {bucket_mb = self.bucket_mb})
  end
  if not self.sync_bn and #self.buffers > 0 then
    -- per-rank BatchNorm statistics: rank 0's are the model's, as DDP's broadcast_buffers
    T.no_grad(function() dist.broadcast(self.buffers, 0) end)
  end
end

--- the global batch's mean of per-rank means (numbers), weighted by the ranks' shares
function DP:mean(...)
  local vals = {...}
  if self.size == 1 then return ... end
  local t = T.tensor(vals)
  t:mul_(self.weight)
  dist.all_reduce(t, "sum")
  local out = {}
  for i = 1, #vals do out[i] = t[i] end
  return table.unpack(out, 1, #vals)
end

--- true on every rank when flag is true on any (a stop request: all ranks stop at one step)
function DP:any(flag)
  if self.size == 1 then return flag end
  return dist.all_reduce(flag and 1 or 0, "max") > 0
end

--- bytes that one step all-reduces (the gradients, float32)
function DP:bytes_per_step() return self.size > 1 and dist.gradient_bytes(self.params) or 0 end

-- Synchronised BatchNorm: batch statistics over every rank's slice, with two sums over ranks
-- per layer (the mean, then the squared deviations: no E[x^2] - E[x]^2 cancellation); their
-- backward sums the gradients over ranks, so each rank's input gradient is the global one.
local function sync_forward(self, x, relu)
  if not self.training then
    local cls = getmetatable(self)
    return relu and cls.forward_relu(self, x) or cls.forward(self, x)
  end
  self:_check(x)
  local C = x:size(2)
  local dims, bshape = {1}, {1, C}
  for d = 3, x:dim() do dims[#dims + 1] = d; bshape[#bshape + 1] = 1 end
  local count = dist.all_reduce(x:numel() // C, "sum")
  if count < 2 then error("SyncBatchNorm: expected more than 1 value per channel over the ranks", 3) end
  local mean = dist.sum_over_ranks(x:sum(dims)) / count               -- (C)
  local xc = x - mean:view(bshape)
  local var = dist.sum_over_ranks((xc * xc):sum(dims)) / count        -- (C), biased
  if self.track_running_stats then
    T.no_grad(function()
      self.num_batches_tracked:add_(1)
      local m = self.momentum or 1 / self.num_batches_tracked:item()
      self.running_mean:mul_(1 - m):add_(mean:detach(), m)
      self.running_var:mul_(1 - m):add_(var:detach(), m * count / (count - 1))
    end)
  end
  local y = xc * (var + self.eps):rsqrt():view(bshape)
  if self.weight then y = y * self.weight:view(bshape) end
  if self.bias then y = y + self.bias:view(bshape) end
  return relu and y:relu() or y
end

--- every BatchNorm of model normalises with the global batch's statistics (in training mode)
function M.convert_sync_batchnorm(model)
  local BN = require('tdrl.nn.layers.norm')._BatchNorm
  local class = require 'tdrl.class'
  local n = 0
  for _, m in ipairs(model:modules()) do
    if class.isinstance(m, BN) then
      rawset(m, "forward", function(self, x) return sync_forward(self, x, false) end)
      rawset(m, "forward_relu", function(self, x) return sync_forward(self, x, true) end)
      n = n + 1
    end
  end
  return n
end

return M
