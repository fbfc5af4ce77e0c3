-- nn.functional (F): the functions layers are built from, and the losses.
--
-- Where the C core has a fused kernel (T.conv2d, T.group_norm, T.cross_entropy, ...), F.name
-- calls it. For attention, the GRU cell, linear and the losses, F.name_ref is the same function
-- composed from basic differentiable ops (matmul, slices, softmax, ...), the kernel's test oracle
-- and the path for the loss options the kernels do not take.
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

local function red_of(opts)
  if type(opts) == "string" then return opts end
  if type(opts) == "table" then return opts.reduction end
  return nil
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

--- linear_ref(x (..., in), w (out, in), b (out) or nil) -> (..., out): composed; F.linear is the
--- fused kernel (bias written first, the GEMM adds onto it: ops/linear.c)
function F.linear_ref(x, w, b)
  local d = x:dim()
  local shape = x:size()
  shape[d] = w:size(1)
  local y = x:reshape(-1, x:size(d)):matmul(w:t()) -- one GEMM over all leading dimensions
  if b then y = y + b end
  return y:view(shape)
end

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

-- ---- attention ---------------------------------------------------------------------------------
local function is_int(t) return t:type() == "int64" end

--- scaled_dot_product_attention_ref(q (..., L, E), k (..., S, E), v (..., S, Ev),
---   {attn_mask = (L, S) or broadcastable, key_padding_mask = (N, S), scale = 1/sqrt(E)})
--- -> out (..., L, Ev), weights (..., L, S); with channels_first = true q (..., E, L),
--- k (..., E, S), v (..., Ev, S) -> out (..., Ev, L) (a feature map's (B, C, H*W) layout)
function F.scaled_dot_product_attention_ref(q, k, v, opts)
  opts = opts or {}
  if opts.channels_first then
    local o = {}
    for key, val in pairs(opts) do o[key] = val end
    o.channels_first = nil
    local out, a = F.scaled_dot_product_attention_ref(q:transpose(-2, -1), k:transpose(-2, -1), v:transpose(-2, -1), o)
    return out:transpose(-2, -1):contiguous(), a
  end
  local E = q:size(-1)
  local scale = opts.scale or 1 / math.sqrt(E)
  local s = q:matmul(k:transpose(-2, -1)) * scale
  local am = opts.attn_mask
  if am then
    if is_int(am) then s = s:masked_fill(am:ne(0), -math.huge) else s = s + am end
  end
  local kpm = opts.key_padding_mask
  if kpm then
    local shape = {kpm:size(1)}
    for _ = 2, s:dim() - 1 do shape[#shape + 1] = 1 end
    shape[#shape + 1] = kpm:size(2)
    local m = kpm:reshape(shape)
    if not is_int(m) and opts.key_padding_additive then s = s + m else s = s:masked_fill(m:ne(0), -math.huge) end
  end
  local a = s:softmax(-1)
  return a:matmul(v), a
end

-- ---- recurrent ---------------------------------------------------------------------------------
--- gru_cell_ref(x (N, in), h (N, H), w_ih (3H, in), w_hh (3H, H), b_ih, b_hh) -> h' (N, H)
--- gates in PyTorch's order r, z, n: h' = (1 - z) n + z h
function F.gru_cell_ref(x, h, w_ih, w_hh, b_ih, b_hh)
  local gi = F.linear(x, w_ih, b_ih)
  local gh = F.linear(h, w_hh, b_hh)
  local Hs = h:size(-1)
  local ir, iz, inn = gi:narrow(-1, 1, Hs), gi:narrow(-1, Hs + 1, Hs), gi:narrow(-1, 2 * Hs + 1, Hs)
  local hr, hz, hn = gh:narrow(-1, 1, Hs), gh:narrow(-1, Hs + 1, Hs), gh:narrow(-1, 2 * Hs + 1, Hs)
  local r = (ir + hr):sigmoid()
  local z = (iz + hz):sigmoid()
  local n = (inn + r * hn):tanh()
  return n + z * (h - n)
end

-- ---- losses --------------------------------------------------------------------------------------
local function check_same(op, a, b)
  if shape_str(a) ~= shape_str(b) then
    error(string.format("%s: input %s and target %s differ in shape", op, shape_str(a), shape_str(b)), 3)
  end
end

function F.mse_loss_ref(x, y, reduction)
  check_same("mse_loss", x, y)
  return reduce((x - y):square(), red_of(reduction), "mse_loss")
end

function F.l1_loss_ref(x, y, reduction)
  check_same("l1_loss", x, y)
  return reduce((x - y):abs(), red_of(reduction), "l1_loss")
end

-- (N, C, d1, ...) -> (N * d1 * ..., C) and labels (N, d1, ...) -> (N * d1 * ...)
local function flatten_classes(op, x, labels)
  if x:dim() < 2 then error(op .. ": expected scores of shape (N, C) or (N, C, d...), got " .. shape_str(x), 3) end
  if not is_int(labels) then error(op .. ": labels must be an int64 tensor of classes (from 0), got float32", 3) end
  local N, C = x:size(1), x:size(2)
  local want = {N}
  for d = 3, x:dim() do want[#want + 1] = x:size(d) end
  if table.concat(want, "x") ~= shape_str(labels) then
    error(string.format("%s: scores %s need labels of shape %s, got %s", op, shape_str(x), table.concat(want, "x"),
      shape_str(labels)), 3)
  end
  if x:dim() > 2 then
    local perm = {1}
    for d = 3, x:dim() do perm[#perm + 1] = d end
    perm[#perm + 1] = 2
    x = x:permute(perm):reshape(-1, C)
  end
  return x, labels:reshape(-1), want
end

--- nll_loss_ref(logp (N, C[, d...]), labels int64 (N[, d...]), reduction | {reduction=, weight=,
---   ignore_index=}): PyTorch's rule: loss_i = -weight[y_i] logp[i, y_i]; entries labelled
---   ignore_index count for nothing; 'mean' divides by the sum of the weights of the counted entries
function F.nll_loss_ref(logp, labels, opts)
  local red = red_of(opts)
  local o = type(opts) == "table" and opts or {}
  local lp, lab, shape = flatten_classes("nll_loss", logp, labels)
  local keep
  if o.ignore_index ~= nil then
    keep = lab:ne(o.ignore_index)
    lab = lab * keep:long() -- ignored entries read class 0, then count for nothing
  end
  local l = -lp:gather(2, lab:view(-1, 1)):view(-1)
  local wsel
  if o.weight then
    if o.weight:dim() ~= 1 or o.weight:size(1) ~= lp:size(2) then
      error(string.format("nll_loss: weight of shape %s for %d classes", shape_str(o.weight), lp:size(2)), 2)
    end
    wsel = o.weight:index_select(1, lab)
    l = l * wsel
  end
  if keep then
    l = l * keep
    wsel = wsel and wsel * keep or keep
  end
  if red == "none" then return l:view(shape) end
  if red == "sum" then return l:sum() end
  if red ~= nil and red ~= "mean" then return reduce(l, red, "nll_loss") end
  if wsel then return l:sum() / wsel:sum() end
  return l:mean()
end

--- cross_entropy_ref(x (N, C[, d...]), labels, reduction | {reduction=, weight=, ignore_index=,
---   label_smoothing=}): log_softmax + nll_loss; label smoothing eps mixes in eps / C of the
---   (weighted) loss against every class, as PyTorch does
function F.cross_entropy_ref(x, labels, opts)
  if x:dim() < 2 then error("cross_entropy: expected scores of shape (N, C) or (N, C, d...), got " .. shape_str(x), 2) end
  local logp = x:log_softmax(2)
  local o = type(opts) == "table" and opts or {}
  local eps = o.label_smoothing or 0
  local nll = F.nll_loss_ref(logp, labels, opts)
  if eps == 0 then return nll end
  local red = red_of(opts)
  local C = x:size(2)
  local lp, lab, shape = flatten_classes("cross_entropy", logp, labels)
  local smooth
  if o.weight then smooth = -(lp * o.weight:view(1, C)):sum(2) else smooth = -lp:sum(2) end
  local keep
  if o.ignore_index ~= nil then
    keep = lab:ne(o.ignore_index)
    smooth = smooth * keep
  end
  local sm
  if red == "none" then sm = smooth:view(shape)
  elseif red == "sum" then sm = smooth:sum()
  elseif o.weight then
    local safe = keep and lab * keep:long() or lab
    local ws = o.weight:index_select(1, safe)
    if keep then ws = ws * keep end
    sm = smooth:sum() / ws:sum()
  elseif keep then sm = smooth:sum() / keep:sum()
  else sm = smooth:mean() end
  return nll * (1 - eps) + sm * (eps / C)
end

--- binary_cross_entropy_with_logits_ref(x, y, {reduction=, pos_weight=, weight=})
--- max(x, 0) - x y + log(1 + exp(-|x|)); with pos_weight p: (1 - y) x + (1 + (p - 1) y) softplus(-x);
--- times weight (broadcast) when given
function F.binary_cross_entropy_with_logits_ref(x, y, opts)
  check_same("binary_cross_entropy_with_logits", x, y)
  local pw = type(opts) == "table" and opts.pos_weight or nil
  local w = type(opts) == "table" and opts.weight or nil
  local l
  if pw then
    local sp = (-x):relu() + (-x:abs()):exp():log1p() -- softplus(-x)
    l = (1 - y) * x + (1 + (pw - 1) * y) * sp
  else
    l = x:relu() - x * y + (-x:abs()):exp():log1p()
  end
  if w then l = l * w end
  return reduce(l, red_of(opts), "binary_cross_entropy_with_logits")
end

--- gaussian_kl_ref(mu (..., D), logvar (..., D), reduction): KL(N(mu, exp(logvar)) || N(0, I))
--- = -0.5 sum(1 + logvar - mu^2 - exp(logvar)) over the last dim, one value per code (as the
--- kernel); 'none' -> (...), 'mean' -> mean over the codes, 'sum' -> total
function F.gaussian_kl_ref(mu, logvar, reduction)
  check_same("gaussian_kl", mu, logvar)
  local t = (logvar + 1 - mu:square() - logvar:exp()) * -0.5
  local per = t:sum(t:dim())
  return reduce(per, red_of(reduction), "gaussian_kl")
end

-- ---- the fused kernels ---------------------------------------------------------------------------
-- F.name is the core's kernel T.name (same arguments); the plain versions above, F.name_ref, are
-- composed from basic differentiable ops and checked against it by the tests. The convolutions,
-- pooling and norms have no Lua version: their references are the C loops beside the kernels
-- (ops/conv.c, ops/norm.c), PyTorch's golden outputs and central differences.
for _, name in ipairs({"linear", "conv2d", "conv_transpose2d", "avg_pool2d", "upsample_nearest2d", "group_norm",
                       "group_norm_silu", "batch_norm", "batch_norm_relu", "layer_norm", "scaled_dot_product_attention",
                       "gru_cell", "mse_loss", "l1_loss", "cross_entropy", "nll_loss",
                       "binary_cross_entropy_with_logits", "gaussian_kl"}) do
  F[name] = T[name]
end

-- options the loss kernels do not take go to the composed versions
local function with_options(name, extra)
  local k = T[name]
  local ref = F[name .. "_ref"]
  F[name] = function(a, b, opts)
    if type(opts) == "table" then
      for _, key in ipairs(extra) do
        if opts[key] ~= nil then return ref(a, b, opts) end
      end
    end
    return k(a, b, opts)
  end
end
with_options("cross_entropy", {"weight", "ignore_index", "label_smoothing"})
with_options("nll_loss", {"weight", "ignore_index"})
with_options("binary_cross_entropy_with_logits", {"weight"})

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
