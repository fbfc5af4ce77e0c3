-- Model-level workloads of the paper for tdrl (bench/models_torch.py is the same in PyTorch):
--   dsm_tiny, dsm_small   one VDRL training step at batch 100 on 32x32x3 (forward, backward,
--                         clipping, Adam), s/step; dsm_tiny_b32, dsm_small_b64, ...: at batch 32, 64
--   traj_tiny, traj_small trajectory extraction at granularity 10 (11 points), images/s
--   head_mlp, head_gru, head_tsf   one training epoch of a head on (N x 11 x 128) trajectories,
--                         batch 256 (an epoch of 45,000 as the peer: timed on fewer steps), s/epoch
--   mine                  MINE iterations per second at d = 128, batch 256
-- `./tdrl bench/models_tdrl.lua NAME` runs one workload and prints one JSON line (with the
-- process's peak resident memory); `--list` prints the names. bench/run.lua runs each in its
-- own process.
local T = require 'tdrl'
local json = require 'tdrl.json'

local function peak_mb()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local kb = s:match("VmHWM:%s*(%d+)")
  return kb and tonumber(kb) / 1024
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

local function timed(fn, warm, reps)
  for _ = 1, warm do fn() end
  local ts = {}
  for i = 1, reps do
    local t0 = T.clock()
    fn()
    ts[i] = T.clock() - t0
  end
  return median(ts)
end

local W = {}
local order = {}
local function workload(name, fn) W[name] = fn; order[#order + 1] = name end

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path -- bench/steps.lua
local steps_of = require 'steps'

local function dsm(preset, warm, reps, B)
  local optim = require 'tdrl.optim'
  local step, model = steps_of.dsm(preset, B)
  local ema = optim.EMA(model, {decay = 0.999})
  local allocs
  local s = timed(step, warm, reps)
  allocs = T.memory().allocations
  step()
  local per_step_allocs = T.memory().allocations - allocs
  local e = timed(function() ema:update() end, 2, 10)
  return {value = s, unit = "s/step", higher = false, note = string.format("EMA %.2g s; %d mallocs in a warm step",
    e, per_step_allocs), gflops = (preset == "tiny" and 62 or 220) * (B or 100) / 100 / s}
end
workload("dsm_tiny", function() return dsm("tiny", 2, 6) end)
workload("dsm_small", function() return dsm("small", 1, 3) end)
-- the batch sizes runs on 2 cores use, where the fixed costs per op weigh more
for _, B in ipairs({32, 64}) do
  workload("dsm_tiny_b" .. B, function() return dsm("tiny", 3, 8, B) end)
  workload("dsm_small_b" .. B, function() return dsm("small", 2, 5, B) end)
end

local function trajw(preset, passes)
  local D = require 'tdrl.diffusion'
  local traj = require 'tdrl.traj'
  local cfg = D.presets.resolve({preset = preset})
  local model = D.build(cfg, T.Generator(0))
  local X = T.rand(1000, 3, 32, 32, T.Generator(1))
  local s = timed(function() traj.extract(model, X, {granularity = 10, batch = 1000}) end, 1, passes)
  return {value = 1000 / s, unit = "img/s", higher = true, note = string.format("%.0f encodings/s", 11000 / s)}
end
workload("traj_tiny", function() return trajw("tiny", 3) end)
workload("traj_small", function() return trajw("small", 1) end)

local function head(kind, steps)
  local g = T.Generator(0)
  local N = 256 * steps
  local X = T.randn(N, 11, 128, g)
  local y = T.randint(0, 10, {N}, g)
  local train = steps_of.head(kind, g)
  local function epoch()
    local perm = T.randperm(N, g)
    for s = 0, steps - 1 do
      local idx = perm:narrow(1, s * 256 + 1, 256)
      train(X:index_select(1, idx), y:index_select(1, idx))
    end
  end
  local s = timed(epoch, 1, 3)
  return {value = s * 175 / steps, unit = "s/epoch", higher = false, note = string.format("%.4f s/step", s / steps)}
end
workload("head_mlp", function() return head("mlp", 175) end)
workload("head_gru", function() return head("gru", 20) end)
workload("head_tsf", function() return head("transformer", 10) end)

workload("mine", function()
  local mine = require 'tdrl.mine'
  local g = T.Generator(0)
  local X, Y = T.randn(10000, 128, g), T.randn(10000, 128, g)
  local s = timed(function() mine.estimate(X, Y, {iters = 100, seed = 1}) end, 1, 3)
  return {value = 100 / s, unit = "iters/s", higher = true}
end)

local NAMES = {
  dsm_tiny = "dsm_step tiny (VDRL, b100)", dsm_small = "dsm_step small (VDRL, b100)",
  dsm_tiny_b32 = "dsm_step tiny (VDRL, b32)", dsm_small_b32 = "dsm_step small (VDRL, b32)",
  dsm_tiny_b64 = "dsm_step tiny (VDRL, b64)", dsm_small_b64 = "dsm_step small (VDRL, b64)",
  traj_tiny = "trajectories tiny (1000 img x 11 t)", traj_small = "trajectories small (1000 img x 11 t)",
  head_mlp = "head MLP epoch (45000 x 11 x 128, b256)", head_gru = "head GRU epoch (45000 x 11 x 128, b256)",
  head_tsf = "head Transformer epoch (45000 x 11 x 128, b256)", mine = "MINE (d=128, b256)",
}

if arg[1] == "--list" then
  for _, n in ipairs(order) do print(n) end
  return
end
for _, name in ipairs(arg[1] and {arg[1]} or order) do
  if not W[name] then error("unknown workload " .. name) end
  local r = W[name]()
  r.name, r.peak_mb = NAMES[name], peak_mb()
  print(json.encode(r))
  io.stdout:flush()
end
