-- Gradient clipping.
local T = require 'tdrl'
local Optimizer = require 'tdrl.optim.optimizer'

local M = {}

local function list_of(params, op)
  if Optimizer.is_module(params) then return params:parameters() end
  if T.is_tensor(params) then return {params} end
  if type(params) ~= "table" then
    error(string.format("%s: parameters must be a tensor, a list of tensors or a Module, got %s", op, type(params)), 3)
  end
  return params
end

--- clip_grad_norm_(params or module, max_norm [, norm_type = 2]) -> total norm before clipping.
--- PyTorch's rule: the gradients are scaled by max_norm / (total + 1e-6) when that is below 1.
function M.clip_grad_norm_(params, max_norm, norm_type)
  return T.clip_grad_norm_(list_of(params, "clip_grad_norm_"), max_norm, norm_type or 2)
end

--- grad_norm(params or module [, norm_type = 2]): the global gradient norm, unchanged gradients
function M.grad_norm(params, norm_type) return T.grad_norm(list_of(params, "grad_norm"), norm_type or 2) end

--- clip_grad_value_(params, v): clamps every gradient to [-v, v]
function M.clip_grad_value_(params, v)
  if type(v) ~= "number" or v ~= v then error("clip_grad_value_: the clip value is " .. tostring(v) .. ", not a number", 2) end
  local list = list_of(params, "clip_grad_value_")
  T.no_grad(function()
    for _, p in ipairs(list) do
      local g = p.grad
      if g then g:copy_(g:clamp(-v, v)) end
    end
  end)
end

return M
