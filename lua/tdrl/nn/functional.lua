-- nn.functional (F): the functions layers are built from, and the losses.
--
-- Where the C core has a fused kernel (T.conv2d, T.group_norm, T.cross_entropy, ...), F.name
-- calls it; F.name_ref is the same function composed from basic differentiable ops (matmul,
-- slices, softmax, ...), kept as the kernel's specification and test oracle. When a kernel is
-- absent from the binary, F.name is the composed version.
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

local function kernel(name)
  local k = rawget(T, name)
  if type(k) == "function" then return k end
  return nil
end
F.kernel = kernel

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

local function check_image(op, x)
  if x:dim() ~= 4 then error(op .. ": expected an image batch (N, C, H, W), got shape " .. shape_str(x), 3) end
end

-- ---- convolution ------------------------------------------------------------------------------
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

--- conv2d_ref(x (N,C,H,W), w (OC,C/groups,KH,KW), b (OC), (N,OC) (one bias per image) or nil,
---   {stride=, padding=, dilation=, groups=, residual=, scale=}): scale (conv + b + residual)
--- composed: strided slices of the padded input stacked into columns, one batched matmul
function F.conv2d_ref(x, w, b, opts)
  opts = opts or {}
  check_image("conv2d", x)
  local G = opts.groups or 1
  if G > 1 then
    if x:size(2) % G ~= 0 or w:size(1) % G ~= 0 or w:size(2) * G ~= x:size(2) then
      error(string.format("conv2d: input %s and weight %s do not fit %d groups", shape_str(x), shape_str(w), G), 2)
    end
    return grouped(F.conv2d_ref, x, w, b, opts, G, 1)
  end
  local sh, sw = pair(opts.stride or 1, "stride")
  local ph, pw = pair(opts.padding or 0, "padding")
  local dh, dw = pair(opts.dilation or 1, "dilation")
  local N, C, H, W = x:size(1), x:size(2), x:size(3), x:size(4)
  local OC, KC, KH, KW = w:size(1), w:size(2), w:size(3), w:size(4)
  if KC ~= C then
    error(string.format("conv2d: input %s has %d channels, weight %s expects %d", shape_str(x), C, shape_str(w), KC), 2)
  end
  local OH = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
  local OW = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
  if OH < 1 or OW < 1 then
    error(string.format("conv2d: input %s is smaller than the kernel %dx%d (padding %d,%d dilation %d,%d)",
      shape_str(x), KH, KW, ph, pw, dh, dw), 2)
  end
  local xp = (ph > 0 or pw > 0) and pad2d(x, ph, ph, pw, pw) or x
  local cols = {}
  for i = 0, KH - 1 do
    for j = 0, KW - 1 do
      local r0, c0 = 1 + i * dh, 1 + j * dw
      cols[#cols + 1] = xp:slice(3, r0, r0 + (OH - 1) * sh, sh):slice(4, c0, c0 + (OW - 1) * sw, sw)
    end
  end
  local col = T.stack(cols, 3):reshape(N, C * KH * KW, OH * OW)
  local y = w:reshape(OC, C * KH * KW):matmul(col)
  if b then y = y + (b:dim() == 2 and b:view(N, OC, 1) or b:view(1, OC, 1)) end
  y = y:view(N, OC, OH, OW)
  if opts.residual then y = y + opts.residual end
  if opts.scale and opts.scale ~= 1 then y = y * opts.scale end
  return y
end

--- conv_transpose2d_ref(x (N,Cin,H,W), w (Cin,Cout/groups,KH,KW), b, {stride=, padding=, output_padding=,
---   dilation=, groups=})
--- composed: zeros inserted between input pixels, padding, then a stride-1 convolution with
--- the flipped, transposed kernel
function F.conv_transpose2d_ref(x, w, b, opts)
  opts = opts or {}
  check_image("conv_transpose2d", x)
  local G = opts.groups or 1
  if G > 1 then
    if x:size(2) % G ~= 0 or w:size(1) ~= x:size(2) then
      error(string.format("conv_transpose2d: input %s and weight %s do not fit %d groups", shape_str(x), shape_str(w), G), 2)
    end
    return grouped(F.conv_transpose2d_ref, x, w, b, opts, G, 2)
  end
  local sh, sw = pair(opts.stride or 1, "stride")
  local ph, pw = pair(opts.padding or 0, "padding")
  local oph, opw = pair(opts.output_padding or 0, "output_padding")
  local dh, dw = pair(opts.dilation or 1, "dilation")
  local N, C, H, W = x:size(1), x:size(2), x:size(3), x:size(4)
  local KC, OC, KH, KW = w:size(1), w:size(2), w:size(3), w:size(4)
  if KC ~= C then
    error(string.format("conv_transpose2d: input %s has %d channels, weight %s expects %d", shape_str(x), C,
      shape_str(w), KC), 2)
  end
  local xd = x
  if sh > 1 then
    xd = T.cat({xd:unsqueeze(4), T.zeros(N, C, H, sh - 1, W)}, 4):reshape(N, C, H * sh, W):narrow(3, 1, (H - 1) * sh + 1)
  end
  if sw > 1 then
    local H2 = xd:size(3)
    xd = T.cat({xd:unsqueeze(5), T.zeros(N, C, H2, W, sw - 1)}, 5):reshape(N, C, H2, W * sw):narrow(4, 1, (W - 1) * sw + 1)
  end
  local eh, ew = dh * (KH - 1) - ph, dw * (KW - 1) - pw
  xd = pad2d(xd, eh, eh + oph, ew, ew + opw)
  local rh = T.arange(KH - 1, -1, -1):long()
  local rw = T.arange(KW - 1, -1, -1):long()
  local wf = w:index_select(3, rh):index_select(4, rw):transpose(1, 2)
  return F.conv2d_ref(xd, wf, b, {stride = 1, padding = 0, dilation = {dh, dw}})
end

--- avg_pool2d_ref(x, kernel, stride = kernel): mean over each window (no padding)
function F.avg_pool2d_ref(x, k, s)
  check_image("avg_pool2d", x)
  local kh, kw = pair(k, "kernel size")
  local sh, sw = pair(s or k, "stride")
  local H, W = x:size(3), x:size(4)
  local OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
  if OH < 1 or OW < 1 then
    error(string.format("avg_pool2d: input %s is smaller than the window %dx%d", shape_str(x), kh, kw), 2)
  end
  local acc
  for i = 0, kh - 1 do
    for j = 0, kw - 1 do
      local sl = x:slice(3, 1 + i, 1 + i + (OH - 1) * sh, sh):slice(4, 1 + j, 1 + j + (OW - 1) * sw, sw)
      acc = acc and acc + sl or sl
    end
  end
  return acc * (1 / (kh * kw))
end

--- upsample_nearest2d_ref(x, scale): every pixel repeated scale x scale times (integer scale)
function F.upsample_nearest2d_ref(x, scale)
  check_image("upsample_nearest2d", x)
  local fh, fw = pair(scale, "scale factor")
  local N, C, H, W = x:size(1), x:size(2), x:size(3), x:size(4)
  return x:view(N, C, H, 1, W, 1):expand(N, C, H, fh, W, fw):reshape(N, C, H * fh, W * fw)
end

-- ---- normalisation ------------------------------------------------------------------------------
--- group_norm_ref(x (N, C, ...), G, w (C) or nil, b (C) or nil, eps)
function F.group_norm_ref(x, G, w, b, eps)
  local N, C = x:size(1), x:size(2)
  if C % G ~= 0 then error(string.format("group_norm: %d channels do not split into %d groups", C, G), 2) end
  local xs = x:reshape(N, G, -1)
  local mean = xs:mean(3, true)
  local var = xs:var(3, true, 0)
  local y = ((xs - mean) * (var + (eps or 1e-5)):rsqrt()):view(x:size())
  local bshape = {1, C}
  for _ = 3, x:dim() do bshape[#bshape + 1] = 1 end
  if w then y = y * w:view(bshape) end
  if b then y = y + b:view(bshape) end
  return y
end

function F.group_norm_silu_ref(x, G, w, b, eps) return F.group_norm_ref(x, G, w, b, eps):silu() end

--- batch_norm_relu_ref(...): batch_norm_ref(...) then ReLU (the kernel does both in one pass)
function F.batch_norm_relu_ref(...)
  return F.batch_norm_ref(...):relu()
end

--- batch_norm_ref(x (N, C, ...), running_mean, running_var, w, b, training, momentum, eps):
--- training normalises by the batch statistics (biased variance) and moves the running
--- statistics in place: r = (1 - momentum) r + momentum * batch (unbiased variance)
function F.batch_norm_ref(x, rm, rv, w, b, training, momentum, eps)
  eps = eps or 1e-5
  local C = x:size(2)
  local dims = {1}
  for d = 3, x:dim() do dims[#dims + 1] = d end
  local bshape = {1, C}
  for _ = 3, x:dim() do bshape[#bshape + 1] = 1 end
  local mean, var
  if training or rm == nil then
    mean = x:mean(dims, true)
    var = x:var(dims, true, 0)
    if training and rm ~= nil then
      local n = x:numel() // C
      if n < 2 then
        error(string.format("batch_norm: expected more than 1 value per channel when training, got input %s",
          shape_str(x)), 2)
      end
      T.no_grad(function()
        local m = momentum or 0.1
        rm:mul_(1 - m):add_(mean:detach():view(C), m)
        rv:mul_(1 - m):add_(var:detach():view(C), m * n / (n - 1))
      end)
    end
  else
    mean = rm:view(bshape)
    var = rv:view(bshape)
  end
  local y = (x - mean) * (var + eps):rsqrt()
  if w then y = y * w:view(bshape) end
  if b then y = y + b:view(bshape) end
  return y
end

--- layer_norm_ref(x, n_last_dims, w, b, eps): normalises over the last n dims
function F.layer_norm_ref(x, n, w, b, eps)
  local dims = {}
  for d = x:dim() - n + 1, x:dim() do dims[#dims + 1] = d end
  local mean = x:mean(dims, true)
  local var = x:var(dims, true, 0)
  local y = (x - mean) * (var + (eps or 1e-5)):rsqrt()
  if w then y = y * w end
  if b then y = y + b end
  return y
end

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

-- ---- kernel dispatch -------------------------------------------------------------------------------
-- F.name = T.name when the binary has the fused kernel, else F.name_ref. The kernels take the
-- same arguments as the _ref versions.
local dispatch = {"linear", "conv2d", "conv_transpose2d", "avg_pool2d", "upsample_nearest2d", "group_norm", "group_norm_silu",
                  "batch_norm", "batch_norm_relu", "layer_norm", "scaled_dot_product_attention", "gru_cell", "mse_loss", "l1_loss",
                  "cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "gaussian_kl"}
F.fused = {}
for _, name in ipairs(dispatch) do
  local k = kernel(name)
  F.fused[name] = k ~= nil
  F[name] = k or F[name .. "_ref"]
end

-- options the loss kernels do not take go to the composed versions
local function with_options(name, extra)
  local k = kernel(name)
  if not k then return end
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

-- the convolution kernels take groups = 1 only: a grouped convolution runs one kernel call per group
for _, name in ipairs({"conv2d", "conv_transpose2d"}) do
  local k = kernel(name)
  if k then
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
end

return F
