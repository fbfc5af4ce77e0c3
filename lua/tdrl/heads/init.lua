-- tdrl.heads: downstream heads that read trajectories (B, points, latent) with their times.
--   local heads = require 'tdrl.heads'
--   local h = heads.new("gru", latent, classes, {generator = g})
--   heads.register("myhead", MyHeadClass)     -- a custom head: see examples/custom_head.lua
-- A head is any nn.Module whose forward(x (B, P, latent), times (P)) returns logits (B, C);
-- its constructor is Class(latent, classes, opts).
local M = {}

M.MLPHead = require 'tdrl.heads.mlp'
M.GRUHead = require 'tdrl.heads.gru'
M.TransformerHead = require 'tdrl.heads.transformer'

M.registry = {
  mlp = M.MLPHead,
  gru = M.GRUHead,
  transformer = M.TransformerHead,
  -- the attention-profile model of section 3.3: one application, CLS key masked
  transformer_analysis = function(latent, classes, o)
    o = o or {}
    local c = {}
    for k, v in pairs(o) do c[k] = v end
    c.applications, c.mask_cls_key = 1, true
    return M.TransformerHead(latent, classes, c)
  end,
}

--- register(name, constructor): constructor(latent, classes, opts) -> module
function M.register(name, ctor) M.registry[name] = ctor end

--- new(name or constructor, latent, classes, opts)
function M.new(kind, latent, classes, opts)
  local ctor = type(kind) == "string" and M.registry[kind] or kind
  if ctor ~= nil and type(ctor) ~= "function" and not (type(ctor) == "table" and getmetatable(ctor) and getmetatable(ctor).__call) then
    error("heads.new: a head is a registered name or a constructor, got " .. type(kind) .. " " .. tostring(kind), 2)
  end
  if ctor == nil then
    local names = {}
    for k in pairs(M.registry) do names[#names + 1] = k end
    table.sort(names)
    error("heads.new: unknown head '" .. tostring(kind) .. "' (registered: " .. table.concat(names, ", ") .. ")", 2)
  end
  return ctor(latent, classes, opts)
end

return M
