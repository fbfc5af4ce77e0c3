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
  -- the codes of all points concatenated (opts.points of them)
  mlp_concat = function(latent, classes, o)
    if not (o and o.points) then
      error("heads.new: mlp_concat needs opts.points, the number of points it reads (protocol: head_opts = "
        .. "{points = P})", 3)
    end
    local c = {}
    for k, v in pairs(o or {}) do c[k] = v end
    c.concat = true
    return M.MLPHead(latent, classes, c)
  end,
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

--- resolve(name or constructor) -> constructor; an unknown name is an error that lists the
--- registered heads (`level` as error's, for the caller's line)
function M.resolve(kind, level)
  local ctor = kind
  if type(kind) == "string" then ctor = M.registry[kind] end
  local mt = getmetatable(ctor)
  if type(ctor) ~= "function" and not (mt and mt.__call) then
    local names = {}
    for k in pairs(M.registry) do names[#names + 1] = k end
    table.sort(names)
    local what = type(kind) == "string" and ("unknown head '" .. kind .. "'")
      or ("a head is a registered name or a constructor, got a " .. type(kind))
    error("heads.new: " .. what .. " (registered: " .. table.concat(names, ", ") .. ")", (level or 1) + 1)
  end
  return ctor
end

--- new(name or constructor, latent, classes, opts)
function M.new(kind, latent, classes, opts)
  return M.resolve(kind, 2)(latent, classes, opts)
end

return M
