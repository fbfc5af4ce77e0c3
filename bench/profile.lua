-- What a workload of bench/models_tdrl.lua spends its time on, op by op (tdrl.profile):
--   ./tdrl bench/profile.lua dsm small [steps] [batch]   a VDRL training step (tiny | small), batch 100
--   ./tdrl bench/profile.lua head gru [steps]      a head's training step (mlp | gru | transformer)
-- Warm steps first (allocation, thread start-up), then `steps` (default 3) profiled; prints the
-- top rows per step.
local T = require 'tdrl'
local profile = require 'tdrl.profile'

local kind, which, steps, batch = arg[1] or "dsm", arg[2] or "small", tonumber(arg[3] or "3"), tonumber(arg[4])

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path -- bench/steps.lua
local steps_of = require 'steps'
local step
if kind == "dsm" then
  step = steps_of.dsm(which, batch)
elseif kind == "head" then
  local g = T.Generator(1)
  local X, y, train = T.randn(256, 11, 128, g), T.randint(0, 10, {256}, g), steps_of.head(which)
  step = function() train(X, y) end
else
  error("usage: bench/profile.lua dsm tiny|small [steps] | head mlp|gru|transformer [steps]")
end

for _ = 1, 2 do step() end
local report = profile.run(function() for _ = 1, steps do step() end end)
print(string.format("%s %s: %d steps, %.1f ms per step", kind, which, steps, report.wall * 1e3 / steps))
print(report:format({top = tonumber(os.getenv("TOP") or "30")}))
