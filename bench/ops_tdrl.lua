-- Fused NN kernels at the paper's model sizes (./tdrl bench/ops_tdrl.lua): conv2d 3x3 forward and
-- forward + backward at the two peer shapes and the small encoder's 64 channels at 16x16, GroupNorm(8) and GroupNorm + SiLU at (100,32,16,16),
-- attention over the heads' 11 tokens (B 256, 4 heads of 64), a GRU step (B 256, 128 -> 256).
-- One JSON line per workload: name, value = median seconds, unit "s", gflops where GEMM-shaped
-- (2 x multiply-adds; forward + backward counted as 3 x forward, as the peer does). A convolution's
-- are the direct convolution's: layers that run Winograd F(2x2, 3x3) do 2.25x fewer multiply-adds,
-- so their rate is the model's work per second and can pass the sgemm ceiling.
-- bench/ops_torch.py runs the same workloads in PyTorch, under the same names.
--   ./tdrl bench/ops_tdrl.lua [min_seconds_per_workload]
-- TDRL_BENCH_CLOCK=cpu times with the process's CPU time instead of the wall clock: on a machine
-- shared with other work, at TDRL_NUM_THREADS=1, it still measures the op (both scripts honour it).
local T = require 'tdrl'
local json = require 'tdrl.json'

local MIN_TIME = tonumber(arg and arg[1]) or 1.0
local gen = T.Generator(0)
local clock = os.getenv("TDRL_BENCH_CLOCK") == "cpu" and os.clock or T.clock

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

-- median seconds per call: 3 warm-up calls, then at least 7 timed calls and MIN_TIME seconds
local function timed(fn)
  for _ = 1, 3 do fn() end
  collectgarbage()
  local times, total = {}, 0
  while #times < 7 or total < MIN_TIME do
    local t0 = clock()
    fn()
    local dt = clock() - t0
    times[#times + 1] = dt
    total = total + dt
  end
  return median(times), #times
end

local function emit(name, fn, flop)
  local t, n = timed(fn)
  local row = {name = name, value = t, unit = "s", higher = false, n = n}
  if flop then row.gflops = flop / t / 1e9 end
  print(json.encode(row))
  io.stdout:flush()
end

local function leaf(...) return T.randn({...}, gen):requires_grad_(true) end

-- ---- conv2d 3x3, padding 1 ------------------------------------------------------------------------------
for _, s in ipairs({{100, 16, 32, 32, 16}, {100, 32, 16, 16, 32}, {100, 64, 16, 16, 64}}) do
  local B, C, H, W, O = table.unpack(s)
  local x, w, b = leaf(B, C, H, W), leaf(O, C, 3, 3), leaf(O)
  local gy = T.randn({B, O, H, W}, gen)
  local fl = 2 * B * O * H * W * C * 9
  local tag = string.format("conv2d 3x3 (%d,%d,%d,%d)->%d", B, C, H, W, O)
  emit(tag .. " fwd", function()
    T.no_grad(function() return T.conv2d(x, w, b, {padding = 1}) end)
  end, fl)
  emit(tag .. " fwd+bwd", function()
    T.conv2d(x, w, b, {padding = 1}):backward(gy)
    x:zero_grad(); w:zero_grad(); b:zero_grad()
  end, 3 * fl)
end

-- ---- GroupNorm(8 groups, 32 channels), eps 1e-6, affine ------------------------------------------------------
do
  local x, g, bb = leaf(100, 32, 16, 16), leaf(32), leaf(32)
  local gy = T.randn({100, 32, 16, 16}, gen)
  emit("group_norm (8 groups) (100,32,16,16) fwd+bwd", function()
    T.group_norm(x, 8, g, bb, 1e-6):backward(gy)
    x:zero_grad(); g:zero_grad(); bb:zero_grad()
  end)
  emit("group_norm+silu (8 groups) (100,32,16,16) fwd+bwd", function()
    T.group_norm_silu(x, 8, g, bb, 1e-6):backward(gy)
    x:zero_grad(); g:zero_grad(); bb:zero_grad()
  end)
end

-- ---- attention: 11 tokens, B 256, 4 heads of 64 -----------------------------------------------------------------
do
  local B, H, L, D = 256, 4, 11, 64
  local q, k, v = leaf(B, H, L, D), leaf(B, H, L, D), leaf(B, H, L, D)
  local gy = T.randn({B, H, L, D}, gen)
  local fl = 2 * 2 * B * H * L * L * D
  emit("attention 11 tokens (256,4,11,64) fwd", function()
    T.no_grad(function() return T.scaled_dot_product_attention(q, k, v) end)
  end, fl)
  emit("attention 11 tokens (256,4,11,64) fwd+bwd", function()
    local out = T.scaled_dot_product_attention(q, k, v)
    out:backward(gy)
    q:zero_grad(); k:zero_grad(); v:zero_grad()
  end, 3 * fl)
end

-- ---- GRU cell step: B 256, 128 -> 256 --------------------------------------------------------------------------
do
  local B, I, Hd = 256, 128, 256
  local x, h = T.randn({B, I}, gen), leaf(B, Hd)
  local wih, whh, bih, bhh = leaf(3 * Hd, I), leaf(3 * Hd, Hd), leaf(3 * Hd), leaf(3 * Hd)
  local gy = T.randn({B, Hd}, gen)
  local fl = 2 * B * 3 * Hd * (I + Hd)
  emit("gru_cell (256, 128->256) fwd", function()
    T.no_grad(function() return T.gru_cell(x, h, wih, whh, bih, bhh) end)
  end, fl)
  emit("gru_cell (256, 128->256) fwd+bwd", function()
    T.gru_cell(x, h, wih, whh, bih, bhh):backward(gy)
    h:zero_grad(); wih:zero_grad(); whh:zero_grad(); bih:zero_grad(); bhh:zero_grad()
  end, 3 * fl)
end
