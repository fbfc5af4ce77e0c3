-- What a workload of bench/models_tdrl.lua spends its time on, op by op (tdrl.profile):
--   ./tdrl bench/profile.lua dsm small [steps]     a VDRL training step (tiny | small), batch 100
--   ./tdrl bench/profile.lua head gru [steps]      a head's training step (mlp | gru | transformer)
-- Warm steps first (allocation, thread start-up), then `steps` (default 3) profiled; prints the
-- top rows per step.
local T = require 'tdrl'
local profile = require 'tdrl.profile'

local kind, which, steps = arg[1] or "dsm", arg[2] or "small", tonumber(arg[3] or "3")

local function dsm_step(preset)
  local D = require 'tdrl.diffusion'
  local optim = require 'tdrl.optim'
  local g = T.Generator(0)
  local model = D.build(D.presets.resolve({preset = preset, batch = 100}), g)
  local opt = optim.Adam(model:parameters(), {lr = 2e-4})
  local x0 = T.rand(100, 3, 32, 32, g)
  return function()
    opt:zero_grad()
    local loss = D.loss.dsm(model, x0, {generator = g})
    loss:backward()
    optim.clip_grad_norm_(model, 1.0)
    opt:step()
  end
end

local function head_step(name)
  local heads = require 'tdrl.heads'
  local optim = require 'tdrl.optim'
  local F = require('tdrl.nn').F
  local g = T.Generator(0)
  local X, y = T.randn(256, 11, 128, g), T.randint(0, 10, {256}, g)
  local h = heads.new(name, 128, 10, {generator = g})
  h:train()
  local opt = optim.Adam(h:parameters(), {lr = 1e-3, weight_decay = 1e-5})
  local times = T.linspace(0, 1, 11)
  local xb = name == "mlp" and X:narrow(2, 1, 1) or X
  return function()
    opt:zero_grad()
    F.cross_entropy(h(xb, times), y):backward()
    if name ~= "mlp" then optim.clip_grad_norm_(h, 1.0) end
    opt:step()
  end
end

local step
if kind == "dsm" then step = dsm_step(which)
elseif kind == "head" then step = head_step(which)
else error("usage: bench/profile.lua dsm tiny|small [steps] | head mlp|gru|transformer [steps]") end

for _ = 1, 2 do step() end
local report = profile.run(function() for _ = 1, steps do step() end end)
print(string.format("%s %s: %d steps, %.1f ms per step", kind, which, steps, report.wall * 1e3 / steps))
print(report:format({top = tonumber(os.getenv("TOP") or "30")}))
