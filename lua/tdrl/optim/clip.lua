-- Gradient clipping.
local T = require 'tdrl'
local Optimizer = require 'tdrl.optim.optimizer'

local M = {}

local function list_of(params)
  if Optimizer.is_module(params) then return params:parameters() end
  if T.is_tensor(params) then return {params} end
  return params
end

--- clip_grad_norm_(params or module, max_norm [, norm_type = 2]) -> total norm before clipping.
--- PyTorch's rule: the gradients are scaled by max_norm / (total + 1e-6) when that is below 1.
function M.clip_grad_norm_(params, max_norm, norm_type)
  return T.clip_grad_norm_(list_of(params), max_norm, norm_type or 2)
end

--- grad_norm(params or module [, norm_type = 2]): the global gradient norm, unchanged gradients
function M.grad_norm(params, norm_type) return T.grad_norm(list_of(params), norm_type or 2) end

--- clip_grad_value_(params, v): clamps every gradient to [-v, v]
function M.clip_grad_value_(params, v)
  T.no_grad(function()
    for _, p in ipairs(list_of(params)) do
      local g = p.grad
      if g then g:copy_(g:clamp(-v, v)) end
    end
  end)
end

return M
