-- nn.functional (F): the functions layers are built from, and the losses.
--
-- Where the C core has a fused kernel (T.conv2d, T.group_norm, T.cross_entropy, ...), F.name
-- calls it; the kernels' references are plain C loops beside them (ops/nn_ref.c, ops/conv.c,
-- ops/norm.c), held to them by the C tests. The loss options the kernels do not take (weight,
-- ignore_index, label_smoothing) are composed here, around the kernels.
--
-- Conventions: images are (N, C, H, W); sizes and strides are a number or a pair {h, w};
-- label tensors are int64 holding classes counted from 0 (data, as in PyTorch); masks are
-- tensors whose nonzero entries mean "masked out" (key_padding_mask, and attn_mask when it is
-- int64) or, for a float32 attn_mask, values added to the attention scores (-inf masks).
-- Reductions: 'mean' (default), 'sum' or 'none'.
local T = require 'tdrl'

local F = {}

local function shape_str(x)
  local s = x:size()
  if #s == 0 then return "scalar" end
  return table.concat(s, "x")
end
F.shape_str = shape_str

local function pair(v, what)
  if type(v) == "table" then return v[1], v[2] or v[1] end
  if v == nil then error(what .. " is missing", 3) end
  return v, v
end
F.pair = pair

local function reduce(l, reduction, op)
  if reduction == nil or reduction == "mean" then return l:mean() end
  if reduction == "sum" then return l:sum() end
  if reduction == "none" then return l end
  error(op .. ": reduction must be 'mean', 'sum' or 'none', got '" .. tostring(reduction) .. "'", 3)
end

-- the input checked before its first method call, which fails with "attempt to index a nil value"
local function tensor_arg(x, op, what)
  if not T.is_tensor(x) then
    error(string.format("%s: %s is %s, not a tensor", op, what or "the input", x == nil and "nil" or type(x) .. " " .. tostring(x)), 3)
  end
  return x
end
F.tensor_arg = tensor_arg

-- ---- activations and simple layers --------------------------------------------------------------
function F.relu(x) return tensor_arg(x, "relu"):relu() end
function F.silu(x) return tensor_arg(x, "silu"):silu() end
function F.gelu(x) return tensor_arg(x, "gelu"):gelu() end
function F.elu(x, alpha) return tensor_arg(x, "elu"):elu(alpha or 1) end
function F.tanh(x) return tensor_arg(x, "tanh"):tanh() end
function F.sigmoid(x) return tensor_arg(x, "sigmoid"):sigmoid() end
function F.softmax(x, dim) return tensor_arg(x, "softmax"):softmax(dim or -1) end
function F.log_softmax(x, dim) return tensor_arg(x, "log_softmax"):log_softmax(dim or -1) end

--- dropout(x, p, training, generator): zeroes each element with probability p and scales the
--- rest by 1 / (1 - p) in training; the identity otherwise
function F.dropout(x, p, training, gen)
  tensor_arg(x, "dropout")
  if training == false or p == 0 then return x end
  if type(p) ~= "number" or p < 0 or p > 1 then error("dropout: probability must be in [0, 1], got " .. tostring(p), 2) end
  return T.dropout(x, p, gen) -- fused; the mask is a hash of one draw from gen (ops/dropout.c)
end

--- embedding(idx int64 (any shape), w (num, dim)) -> (idx shape..., dim)
function F.embedding(idx, w)
  tensor_arg(idx, "embedding", "the index")
  tensor_arg(w, "embedding", "the weight")
  local shape = idx:size()
  local flat = idx:reshape(-1)
  local out = w:index_select(1, flat)
  shape[#shape + 1] = w:size(2)
  return out:view(shape)
end

-- ---- padding helpers ------------------------------------------------------------------------------
-- pads (negative: crops) dims 3 and 4 of an image batch with zeros
local function pad2d(x, top, bottom, left, right)
  tensor_arg(x, "pad2d")
  local pads = {top, bottom, left, right}
  for i = 1, 4 do
    local v = pads[i]
    if math.type(v) ~= "integer" then error(string.format("pad2d: padding %d is %s, not an integer", i, tostring(v)), 2) end
  end
  local function pad_dim(t, d, a, b)
    if a < 0 then t = t:narrow(d, 1 - a, t:size(d) + a); a = 0 end
    if b < 0 then t = t:narrow(d, 1, t:size(d) + b); b = 0 end
    if a == 0 and b == 0 then return t end
    local parts = {}
    local s = t:size()
    if a > 0 then s[d] = a; parts[#parts + 1] = T.zeros(s) end
    parts[#parts + 1] = t
    if b > 0 then s = t:size(); s[d] = b; parts[#parts + 1] = T.zeros(s) end
    return T.cat(parts, d)
  end
  return pad_dim(pad_dim(x, 3, top, bottom), 4, left, right)
end
F.pad2d = pad2d

-- ---- losses with the options the kernels do not take --------------------------------------------------
-- labels (N[, d...]) with ignored entries set to class 0, and each entry's weight: weight[label],
-- times 0 where ignored (nil when neither option is given)
local function entry_weights(op, labels, opts, C)
  local w, keep = opts.weight, nil
  if opts.ignore_index ~= nil then
    keep = labels:ne(opts.ignore_index)
    labels = labels * keep:long() -- ignored entries read class 0, then count for nothing
  end
  if w then
    if w:dim() ~= 1 or w:size(1) ~= C then
      error(string.format("%s: weight of shape %s for %d classes", op, shape_str(w), C), 4)
    end
    w = w:index_select(1, labels:reshape(-1)):view(labels:size())
  end
  if keep then w = w and w * keep or keep end
  return labels, w, keep
end

-- PyTorch's rule for weighted losses: 'mean' divides l (already weighted) by the sum of the weights
local function reduce_weighted(l, w, reduction, op)
  if w and (reduction == nil or reduction == "mean") then return l:sum() / w:sum() end
  return reduce(l, reduction, op)
end

--- nll_loss with {weight=, ignore_index=}: loss_i = -weight[y_i] logp[i, y_i]; entries labelled
--- ignore_index count for nothing
local function nll_options(logp, labels, opts)
  local lab, w = entry_weights("nll_loss", labels, opts, logp:size(2))
  local l = T.nll_loss(logp, lab, "none")
  return reduce_weighted(w and l * w or l, w, opts.reduction, "nll_loss")
end

--- cross_entropy with {weight=, ignore_index=, label_smoothing=}: log_softmax + nll_loss; label
--- smoothing eps mixes in eps / C of the (class-weighted) loss against every class, as PyTorch does
local function ce_options(x, labels, opts)
  if x:dim() < 2 then error("cross_entropy: expected scores of shape (N, C) or (N, C, d...), got " .. shape_str(x), 3) end
  local logp, eps, C = x:log_softmax(2), opts.label_smoothing or 0, x:size(2)
  local nll = nll_options(logp, labels, opts)
  if eps == 0 then return nll end
  local _, w, keep = entry_weights("cross_entropy", labels, opts, C)
  if opts.weight then
    local shape = {1, C}
    for _ = 3, x:dim() do shape[#shape + 1] = 1 end
    logp = logp * opts.weight:view(shape)
  end
  local smooth = -logp:sum(2)
  if keep then smooth = smooth * keep end
  return nll * (1 - eps) + reduce_weighted(smooth, w, opts.reduction, "cross_entropy") * (eps / C)
end

--- binary_cross_entropy_with_logits with {weight=} (broadcast): the kernel's losses, weighted
local function bce_options(x, y, opts)
  local l = T.binary_cross_entropy_with_logits(x, y, {reduction = "none", pos_weight = opts.pos_weight})
  return reduce(l * opts.weight, opts.reduction, "binary_cross_entropy_with_logits")
end

-- ---- the fused kernels ---------------------------------------------------------------------------
-- F.name is the core's kernel T.name (same arguments)
for _, name in ipairs({"linear", "conv2d", "conv_transpose2d", "avg_pool2d", "upsample_nearest2d", "group_norm",
                       "group_norm_silu", "batch_norm", "batch_norm_relu", "layer_norm", "scaled_dot_product_attention",
                       "gru_cell", "mse_loss", "l1_loss", "cross_entropy", "nll_loss",
                       "binary_cross_entropy_with_logits", "gaussian_kl"}) do
  F[name] = T[name]
end

-- options the loss kernels do not take go to the compositions above
local function with_options(name, extra, composed)
  local k = T[name]
  F[name] = function(a, b, opts)
    if type(opts) == "table" then
      for _, key in ipairs(extra) do
        if opts[key] ~= nil then return composed(a, b, opts) end
      end
    end
    return k(a, b, opts)
  end
end
with_options("cross_entropy", {"weight", "ignore_index", "label_smoothing"}, ce_options)
with_options("nll_loss", {"weight", "ignore_index"}, nll_options)
with_options("binary_cross_entropy_with_logits", {"weight"}, bce_options)

-- a grouped convolution as `groups` ungrouped ones on channel slices, concatenated
local function grouped(op, x, w, b, opts, G, w_out_dim)
  local Cg = x:size(2) // G
  local Og = w:size(2) -- conv_transpose2d: output channels per group
  local outs = {}
  for gi = 0, G - 1 do
    local sub = {}
    for k, v in pairs(opts) do sub[k] = v end
    sub.groups, sub.residual, sub.scale = 1, nil, nil -- applied to the whole output below
    local xg = x:narrow(2, gi * Cg + 1, Cg)
    local wg, bg
    if w_out_dim == 1 then -- conv2d: w (OC, C/G, ...), output channels split
      local og = w:size(1) // G
      wg = w:narrow(1, gi * og + 1, og)
      bg = b and b:narrow(b:dim(), gi * og + 1, og) or nil -- (OC) or one per image (N, OC)
    else -- conv_transpose2d: w (C, OC/G, ...), input channels split
      wg = w:narrow(1, gi * Cg + 1, Cg)
      bg = b and b:narrow(1, gi * Og + 1, Og) or nil
    end
    outs[#outs + 1] = op(xg, wg, bg, sub)
  end
  local y = T.cat(outs, 2)
  if opts.residual then y = y + opts.residual end
  if opts.scale and opts.scale ~= 1 then y = y * opts.scale end
  return y
end


-- the convolution kernels take groups = 1 only: a grouped convolution runs one kernel call per group
for _, name in ipairs({"conv2d", "conv_transpose2d"}) do
  local k = T[name]
  local wdim = name == "conv2d" and 1 or 2
  local function conv(x, w, b, opts)
    if opts and (opts.groups or 1) > 1 then
      local G = opts.groups
      if x:dim() ~= 4 or x:size(2) % G ~= 0 or (wdim == 1 and (w:size(1) % G ~= 0 or w:size(2) * G ~= x:size(2)))
        or (wdim == 2 and w:size(1) ~= x:size(2)) then
        error(string.format("%s: input %s and weight %s do not fit %d groups", name, shape_str(x), shape_str(w), G), 2)
      end
      return grouped(conv, x, w, b, opts, G, wdim)
    end
    return k(x, w, b, opts)
  end
  F[name] = conv
end

return F
