-- Central-difference gradient check (torch/nn's Jacobian.lua, in float32).
-- check(fn, inputs, opts) compares the autograd gradient of sum(fn(inputs...) * R), R a fixed
-- random tensor, with (L(x + eps) - L(x - eps)) / 2 eps for every element of every input that
-- requires grad. Returns the largest error (|num - ana| / max(1, |num|)) and a description.
local T = require 'tdrl'

local M = {}

local function loss_of(fn, inputs, R)
  local out = fn(table.unpack(inputs))
  if R == nil then return out end
  return (out * R):sum():item()
end

function M.check(fn, inputs, opts)
  if type(fn) ~= "function" then error("gradcheck.check: expected a function, got " .. type(fn), 2) end
  if type(inputs) ~= "table" then error("gradcheck.check: inputs must be a list of tensors, got " .. type(inputs), 2) end
  opts = opts or {}
  local eps = opts.eps or 1e-2
  local gen = T.Generator(opts.seed or 7)
  -- R weights each output element differently so that errors cannot cancel
  local out = fn(table.unpack(inputs))
  local R = T.randn(out:size(), gen)
  local loss = (out * R):sum()
  for _, x in ipairs(inputs) do
    if T.is_tensor(x) and x.requires_grad then x:zero_grad() end
  end
  loss:backward()
  local worst, where = 0, "none"
  for k, x in ipairs(inputs) do
    if T.is_tensor(x) and x.requires_grad then
      local ana = x.grad
      if ana == nil then return math.huge, "input " .. k .. " got no gradient" end
      local flat = x:detach():view(-1)
      local aflat = ana:contiguous():view(-1)
      for i = 1, flat:numel() do
        local v = flat[i]
        local lp, lm = T.no_grad(function()
          flat[i] = v + eps
          local a = loss_of(fn, inputs, R)
          flat[i] = v - eps
          local b = loss_of(fn, inputs, R)
          flat[i] = v
          return a, b
        end)
        local num = (lp - lm) / (2 * eps)
        local err = math.abs(num - aflat[i]) / math.max(1, math.abs(num))
        if err > worst then
          worst = err
          where = string.format("input %d element %d: numeric %.6g, autograd %.6g", k, i, num, aflat[i])
        end
      end
    end
  end
  return worst, where
end

return M
