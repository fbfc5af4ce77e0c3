-- Heads that choose where on the trajectory to look: K learnable query times t_1 < ... < t_K in
-- (0, 1) and a reader of the K codes z(x, t_k), trained together by gradient through the frozen
-- encoder (its time enters through the Fourier embedding of log sigma(t), a differentiable
-- function of t). The codes are computed on the fly: no cached trajectory serves moving times.
--
--   local LT = require 'tdrl.heads.learned_times'
--   local head = LT.new(model.encoder, {K = 3, reader = "gru", latent = 16, classes = 5, generator = g})
--   local logits = head(images)            -- (B, classes); head:times() -> {t_1, ..., t_K}
--   local r = LT.train(model.encoder, {train = {X, y}, val = {Xv, yv}, test = {Xt, yt}}, {K = 3, ...})
--
-- grid = g (the codes' granularity) reads the codes from a cached trajectory instead: x is then
-- the (B, g + 1, latent) codes at t = 0, 1/g, ..., 1 and z(x, t) their linear interpolation, a
-- function of t whose gradient is the secant slope over 1/g. That is ~K encoder passes cheaper
-- per step, and smoother: at the reference's Fourier scale the encoder's code is piecewise linear
-- in t on a scale of ~1e-5 (its ReLUs switch as the time bias moves), so its own gradient in t
-- is a very local slope. Evaluate the learned times with the encoder afterwards (LT.evaluate).
--
-- Times: t = L w, w = GAP + (1 - (K + 1) GAP) softmax(u), u the K + 1 time logits and L the
-- (K, K + 1) lower-triangular ones, so t_k is a cumulative sum of positive gaps: ordered and inside
-- (0, 1) whatever u is, with no projection step; u = 0 starts at the uniform grid k / (K + 1). Readers: "mlp" on the
-- concatenated codes (K x latent), "gru" or "transformer" over the K codes (tdrl.heads).
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local optim = require 'tdrl.optim'
local heads = require 'tdrl.heads'

local M = {}

local LearnedTimes = nn.class('LearnedTimesHead', nn.Module)
M.LearnedTimesHead = LearnedTimes

--- LearnedTimesHead(encoder, {K, reader = "mlp" | "gru" | "transformer", latent, classes, generator,
--- init = {t_1, ..., t_K} (default the uniform grid)}). The encoder is not a child: its weights
--- are neither trained nor saved with the head, and it stays in eval mode.
function LearnedTimes:__init(encoder, o)
  nn.Module.__init(self)
  o = o or {}
  local K = o.K or 3
  if math.type(K) ~= "integer" or K < 1 then error("LearnedTimesHead: K must be a positive integer, got " .. tostring(K), 2) end
  if not (o.latent and o.classes) then error("LearnedTimesHead: give latent and classes", 2) end
  rawset(self, "encoder", encoder)
  self.K, self.reader_kind, self.grid = K, o.reader or "mlp", o.grid
  -- normalize = {mu, sd} (latent): encoder codes scaled as the grid's were, (z - mu) / sd
  self.normalize = o.normalize
  if not encoder and not o.grid then error("LearnedTimesHead: give an encoder or a grid", 2) end
  local u = T.zeros(K + 1)
  if o.init then
    if #o.init ~= K then error(string.format("LearnedTimesHead: init has %d times for K = %d", #o.init, K), 2) end
    -- gaps w_1 = t_1, w_k = t_k - t_(k-1), w_(K+1) = 1 - t_K, each GAP + (1 - (K + 1) GAP) softmax(u)_k
    local prev = 0
    for k = 1, K + 1 do
      local t = o.init[k] or 1
      if not (t - prev > M.GAP) then
        error(string.format("LearnedTimesHead: init times must be increasing inside (0, 1), at least %g apart", M.GAP), 2)
      end
      u[k] = math.log((t - prev - M.GAP) / (1 - (K + 1) * M.GAP))
      prev = t
    end
  end
  self:register_parameter("time_logits", u)
  local L = {}
  for k = 1, K do
    L[k] = {}
    for j = 1, K + 1 do L[k][j] = j <= k and 1 or 0 end
  end
  self:register_buffer("cumsum", T.tensor(L), false)
  local g = {generator = o.generator}
  if self.reader_kind == "mlp" then
    self.reader = heads.new("mlp_concat", o.latent, o.classes, {generator = o.generator, points = K})
  else
    self.reader = heads.new(self.reader_kind, o.latent, o.classes, g)
  end
end

-- the least weight of a gap: softmax weights underflow in float32 (a logit 17 below the rest
-- gives a weight under 2^-24), which would let two times meet; with this floor they stay at
-- least GAP apart, and GAP from 0 and 1
M.GAP = 1e-3

--- times_of(u (K + 1), L (K, K + 1)) -> (K): the times of time logits u
function M.times_of(u, L)
  local n = u:size(1)
  local w = u:softmax(1) * (1 - n * M.GAP) + M.GAP
  return L:matmul(w:view(-1, 1)):view(-1)
end

--- the query times as a (K) tensor, differentiable in the time logits
function LearnedTimes:time_tensor() return M.times_of(self.time_logits, self.cumsum) end

--- the query times as a Lua list
function LearnedTimes:times() return self:time_tensor():detach():totable() end

--- codes of x at the times t (K) -> (B, K, latent): the encoder's mean (VDRL) or code (DRL), or
--- with a grid the linear interpolation of x (B, g + 1, latent) between its two nearest points
function LearnedTimes:codes(x, t)
  local B = x:size(1)
  local cols = {}
  for k = 1, t:size(1) do
    local tk = t:narrow(1, k, 1)
    if self.grid then
      local g = self.grid
      local i = math.min(math.floor(tk:item() * g), g - 1)           -- left grid point, 0-based
      local a = (tk * g - i):view(1, 1)                                -- (1, 1), differentiable in t
      local left, right = x:select(2, i + 1), x:select(2, i + 2)       -- (B, latent)
      cols[k] = left + (right - left) * a
    else
      local e = self.encoder(x, tk:expand(B))
      cols[k] = e.mu or e.z
      if self.normalize then cols[k] = (cols[k] - self.normalize[1]) / self.normalize[2] end
    end
  end
  return T.stack(cols, 2)
end

--- forward(x (B, ...), times (K) or nil: the head's own) -> logits (B, classes)
function LearnedTimes:forward(x, t)
  t = t or self:time_tensor()
  return self.reader(self:codes(x, t), t:detach())
end

-- accuracy on (X, y) in eval mode
local function accuracy(head, X, y, eb)
  head:eval()
  local correct = 0
  T.no_grad(function()
    local t = head:time_tensor()
    for s = 1, X:size(1), eb do
      local n = math.min(eb, X:size(1) - s + 1)
      correct = correct + head(X:narrow(1, s, n), t):argmax(2):eq(y:narrow(1, s, n)):sum():item()
    end
  end)
  head:train()
  return correct / X:size(1)
end

--- train(encoder, data = {train = {X, y}, val = {X, y}, test = {X, y}}, opts) -> {times (learned,
--- at the best validation epoch), val, test, epoch, epochs, history = {{epoch, val, times}}}
--- encoder: nil with opts.grid (X are then cached codes at granularity grid; see the header)
--- opts: K, reader, latent, classes, seed, lr = 1e-3 (reader), time_lr = 1e-2 (time logits),
--- epochs = 100, patience = 15, batch = 128, weight_decay = 1e-5, learn_times = true (false:
--- fixed times, the baseline at equal K), init (times), eval_batch = 500
function M.train(encoder, data, o)
  o = o or {}
  local X, y = data.train[1], data.train[2]
  local gen = T.Generator(o.seed or 1)
  if encoder then
    encoder:eval()
    encoder:requires_grad_(false)
  end
  local head = LearnedTimes(encoder, {K = o.K, reader = o.reader, latent = o.latent, classes = o.classes,
    generator = gen, init = o.init, grid = o.grid})
  head:train()
  local groups = {{params = head.reader:parameters(), lr = o.lr or 1e-3, weight_decay = o.weight_decay or 1e-5}}
  if o.learn_times ~= false then groups[2] = {params = {head.time_logits}, lr = o.time_lr or 1e-2, weight_decay = 0} end
  local opt = optim.Adam(groups)
  local N, B = X:size(1), math.min(o.batch or 128, X:size(1))
  local best = {val = -1, epoch = 0}
  local history = {}
  local epoch = 0
  local eb = o.eval_batch or 500
  while epoch < (o.epochs or 100) and epoch - best.epoch < (o.patience or 15) do
    epoch = epoch + 1
    local perm = T.randperm(N, gen)
    for s = 0, N // B - 1 do
      local idx = perm:narrow(1, s * B + 1, B)
      opt:zero_grad()
      nn.F.cross_entropy(head(X:index_select(1, idx)), y:index_select(1, idx)):backward()
      opt:step()
    end
    local va = accuracy(head, data.val[1], data.val[2], eb)
    local times = head:times()
    history[epoch] = {epoch = epoch, val = va, times = times}
    if o.on_epoch then o.on_epoch(epoch, va, times) end
    if va > best.val then
      best = {val = va, epoch = epoch, times = times,
        test = data.test and accuracy(head, data.test[1], data.test[2], eb) or nil}
    end
  end
  return {times = best.times, val = best.val, test = best.test, epoch = best.epoch, epochs = epoch, history = history,
    head = head}
end

--- the accuracy of a trained head at its learned times with the codes computed by the encoder
--- itself (for a head trained on a grid): evaluate(encoder, head, X images, y)
--- normalize = {mu, sd}: how the grid's codes were scaled (they are applied to the encoder's)
function M.evaluate(encoder, head, X, y, eb, normalize)
  local grid, enc, nz = head.grid, head.encoder, head.normalize
  head.grid, head.normalize = nil, normalize
  rawset(head, "encoder", encoder)
  encoder:eval()
  local ok, acc = pcall(accuracy, head, X, y, eb or 500)
  head.grid, head.normalize = grid, nz
  rawset(head, "encoder", enc)
  if not ok then error(acc, 0) end
  return acc
end

return M
