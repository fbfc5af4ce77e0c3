-- tdrl.optim: optimisers (plain update functions and classes), schedules, clipping, EMA.
--   local optim = require 'tdrl.optim'
--   local opt = optim.Adam(model:parameters(), {lr = 2e-4})
--   local sched = optim.LinearWarmup(opt, {warmup = 5000})
--   local ema = optim.EMA(model, {decay = 0.999})
--   loss:backward(); optim.clip_grad_norm_(model, 1.0); opt:step(); sched:step(); ema:update()
local optim = {}

local function merge(t)
  for k, v in pairs(t) do
    if optim[k] ~= nil then error("tdrl.optim: two definitions of " .. k) end
    optim[k] = v
  end
end
optim.Optimizer = require 'tdrl.optim.optimizer'
merge(require 'tdrl.optim.sgd')
merge(require 'tdrl.optim.adam')
merge(require 'tdrl.optim.schedules')
merge(require 'tdrl.optim.clip')
merge(require 'tdrl.optim.ema')

return optim
