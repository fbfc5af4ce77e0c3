-- The fused NN kernels (T.conv2d, T.group_norm, T.scaled_dot_product_attention, T.gru_cell, the
-- losses, ...): PyTorch golden fixtures forward AND backward (max differences printed), gradient
-- checks of every op against central differences (parameters included), fused pairs against their
-- parts, behaviour (running statistics, masks, memory), bad input. The plain references of the
-- kernels are C loops (ops/nn_ref.c, ops/norm.c, ops/conv.c), compared in tests/c/test_nn_kernels.c.
local T = require 'tdrl'
local gc = require 'tdrl.gradcheck'

local gen = T.Generator(4321)
local TOL = 2e-2 -- float32 central differences at eps 1e-2 (as tests/lua/gradcheck_spec.lua)
local FIX_TOL = 1e-4 -- against PyTorch: max |a - b| / (1 + max |b|)

local function leaf(t) return t:requires_grad_(true) end
local function randn(...) return leaf(T.randn({...}, gen)) end
local function shape(t) return table.concat(t:size(), "x") end

local function reldiff(a, b)
  if shape(a) ~= shape(b) then error("shapes differ: " .. shape(a) .. " vs " .. shape(b), 2) end
  if a:numel() == 0 then return 0 end
  local d = (a - b):abs():max():item()
  if d ~= d then return math.huge end
  return d / (1 + b:abs():max():item())
end

local function gcheck(name, fn, inputs, tol)
  it("gradcheck " .. name, function()
    local err, where = gc.check(fn, inputs)
    print(string.format("#   %-40s max error %.2e", name, err))
    if not (err <= (tol or TOL)) then error(string.format("%s: error %.3g at %s", name, err, where)) end
  end)
end

-- ---- PyTorch fixtures ------------------------------------------------------------------------------------
local FIX = "tests/fixtures/torch_ops/ops.safetensors"
local fx = T.load(FIX)

local function get(case, name)
  local t = fx[case .. "." .. name]
  if t == nil then error("fixture " .. case .. "." .. name .. " missing from " .. FIX, 2) end
  return t
end

-- Runs fn on the case's inputs (names: leaves get requires_grad and are compared with g<name>),
-- back-propagates the stored gy through the first output and compares every stored result.
local function golden(case, names, fn, outs)
  outs = outs or {"y"}
  it("matches PyTorch: " .. case, function()
    local args, leaves = {}, {}
    for i, n in ipairs(names) do
      local t = get(case, n:gsub("^%*", ""))
      if n:sub(1, 1) == "*" then -- a constant input (mask, labels, target without grad)
        args[i] = t
      elseif fx[case .. ".g" .. n] ~= nil then
        args[i] = t:clone():requires_grad_(true)
        leaves[#leaves + 1] = n
        leaves[n] = args[i]
      else
        args[i] = t
      end
    end
    local res = {fn(table.unpack(args, 1, #names))}
    local worst, report = 0, {}
    for k, o in ipairs(outs) do
      local d = reldiff(res[k], get(case, o))
      report[#report + 1] = string.format("%s %.1e", o, d)
      worst = math.max(worst, d)
    end
    res[1]:backward(get(case, "gy"))
    for _, n in ipairs(leaves) do
      local g = leaves[n].grad
      if g == nil then error("no gradient reached " .. n) end
      local d = reldiff(g, get(case, "g" .. n))
      report[#report + 1] = string.format("g%s %.1e", n, d)
      worst = math.max(worst, d)
    end
    print(string.format("#   %-20s %s", case, table.concat(report, ", ")))
    if not (worst <= FIX_TOL) then error(string.format("%s: max relative difference %.3g", case, worst)) end
  end)
end

describe("PyTorch fixtures", function()
  golden("conv_basic", {"x", "w", "b"}, function(x, w, b) return T.conv2d(x, w, b, {stride = 1, padding = 1}) end)
  golden("conv_strided", {"x", "w", "b"}, function(x, w, b)
    return T.conv2d(x, w, b, {stride = {2, 1}, padding = {1, 2}, dilation = {2, 1}})
  end)
  golden("conv_1x1_nobias", {"x", "w"}, function(x, w) return T.conv2d(x, w, nil) end)
  golden("conv_s2_k3", {"x", "w", "b"}, function(x, w, b) return T.conv2d(x, w, b, {stride = 2, padding = 1}) end)
  golden("convT_s2", {"x", "w", "b"}, function(x, w, b)
    return T.conv_transpose2d(x, w, b, {stride = 2, padding = 1, output_padding = 1})
  end)
  golden("convT_s1", {"x", "w", "b"}, function(x, w, b) return T.conv_transpose2d(x, w, b, {padding = 1}) end)
  golden("convT_mixed", {"x", "w", "b"}, function(x, w, b)
    return T.conv_transpose2d(x, w, b, {stride = {2, 3}, padding = {0, 1}, output_padding = {1, 0}, dilation = {1, 2}})
  end)
  golden("avgpool_2", {"x"}, function(x) return T.avg_pool2d(x, 2, 2) end)
  golden("avgpool_3s2", {"x"}, function(x) return T.avg_pool2d(x, {3, 2}, {2, 1}) end)
  golden("upsample_2", {"x"}, function(x) return T.upsample_nearest2d(x, 2) end)
  golden("upsample_2x3", {"x"}, function(x) return T.upsample_nearest2d(x, {2, 3}) end)
  golden("groupnorm", {"x", "w", "b"}, function(x, w, b) return T.group_norm(x, 4, w, b, 1e-5) end)
  golden("groupnorm_silu", {"x", "w", "b"}, function(x, w, b) return T.group_norm_silu(x, 2, w, b, 1e-6) end)
  golden("groupnorm_noaffine", {"x"}, function(x) return T.group_norm(x, 3, nil, nil, 1e-5) end)
  for _, c in ipairs({{"batchnorm_train4d", true}, {"batchnorm_eval4d", false}, {"batchnorm_train2d", true}}) do
    local case, training = c[1], c[2]
    local rm, rv = get(case, "rm0"):clone(), get(case, "rv0"):clone()
    golden(case, {"x", "w", "b"}, function(x, w, b) return T.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5) end)
    it("running statistics as PyTorch: " .. case, function()
      local d = math.max(reldiff(rm, get(case, "rm1")), reldiff(rv, get(case, "rv1")))
      print(string.format("#   %-20s running mean/var %.1e", case, d))
      spec.truthy(d <= FIX_TOL)
    end)
  end
  golden("layernorm_1", {"x", "w", "b"}, function(x, w, b) return T.layer_norm(x, 1, w, b, 1e-5) end)
  golden("layernorm_2", {"x", "w", "b"}, function(x, w, b) return T.layer_norm(x, {3, 4}, w, b, 1e-5) end)
  golden("attn_masks", {"q", "k", "v", "*am", "*kpm"}, function(q, k, v, am, kpm)
    return T.scaled_dot_product_attention(q, k, v, {attn_mask = am, key_padding_mask = kpm})
  end, {"y", "weights"})
  golden("attn_causal_scale", {"q", "k", "v", "*am"}, function(q, k, v, am)
    return T.scaled_dot_product_attention(q, k, v, {attn_mask = am, bool_mask = true, scale = 0.3})
  end, {"y", "weights"})
  golden("attn_cls", {"q", "k", "v", "*kpm"}, function(q, k, v, kpm)
    return T.scaled_dot_product_attention(q, k, v, {key_padding_mask = kpm:long()})
  end, {"y", "weights"})
  golden("gru", {"x", "h", "w_ih", "w_hh", "b_ih", "b_hh"}, T.gru_cell)
  for _, red in ipairs({"mean", "sum", "none"}) do
    golden("ce_" .. red, {"x", "*labels"}, function(x, l) return T.cross_entropy(x, l, {reduction = red}) end)
    golden("kl_" .. red, {"mu", "logvar"}, function(m, l) return T.gaussian_kl(m, l, red) end)
  end
  golden("nll_mean", {"x", "*labels"}, function(x, l) return T.nll_loss(x, l) end)
  golden("bce_mean", {"x", "t"}, function(x, t) return T.binary_cross_entropy_with_logits(x, t) end)
  golden("bce_none", {"x", "*t"}, function(x, t) return T.binary_cross_entropy_with_logits(x, t, "none") end)
  golden("mse_mean", {"a", "b"}, function(a, b) return T.mse_loss(a, b) end)
  golden("mse_sum", {"a", "b"}, function(a, b) return T.mse_loss(a, b, "sum") end)
  golden("l1_mean", {"a", "b"}, function(a, b) return T.l1_loss(a, b) end)
  golden("l1_none", {"a", "b"}, function(a, b) return T.l1_loss(a, b, "none") end)
end)

-- ---- gradient checks ------------------------------------------------------------------------------------
describe("gradcheck", function()
  gcheck("conv2d 3x3 pad 1 + bias", function(x, w, b) return T.conv2d(x, w, b, {padding = 1}) end,
    {randn(2, 3, 5, 4), randn(4, 3, 3, 3), randn(4)})
  gcheck("conv2d stride 2, dilation 2, pad (1,2)", function(x, w, b)
    return T.conv2d(x, w, b, {stride = 2, padding = {1, 2}, dilation = 2})
  end, {randn(2, 2, 7, 6), randn(3, 2, 2, 3), randn(3)})
  gcheck("conv2d 1x1 no bias", function(x, w) return T.conv2d(x, w) end, {randn(2, 3, 3, 3), randn(2, 3, 1, 1)})
  gcheck("conv2d 16x16 (direct layout)", function(x, w) return T.conv2d(x, w, nil, {padding = 1}) end,
    {randn(1, 1, 16, 16), randn(2, 1, 3, 3)})
  gcheck("conv_transpose2d stride 2 output_padding 1", function(x, w, b)
    return T.conv_transpose2d(x, w, b, {stride = 2, padding = 1, output_padding = 1})
  end, {randn(2, 3, 3, 3), randn(3, 2, 3, 3), randn(2)})
  gcheck("conv_transpose2d stride 1", function(x, w, b) return T.conv_transpose2d(x, w, b, {padding = 1}) end,
    {randn(1, 2, 4, 4), randn(2, 3, 3, 3), randn(3)})
  gcheck("avg_pool2d 2", function(x) return T.avg_pool2d(x, 2) end, {randn(2, 2, 4, 6)})
  gcheck("avg_pool2d 3 stride (2,1)", function(x) return T.avg_pool2d(x, 3, {2, 1}) end, {randn(1, 2, 7, 5)})
  gcheck("upsample_nearest2d {2,3}", function(x) return T.upsample_nearest2d(x, {2, 3}) end, {randn(2, 2, 3, 2)})
  gcheck("group_norm + affine", function(x, w, b) return T.group_norm(x, 2, w, b, 1e-5) end,
    {randn(2, 4, 3, 3), randn(4), randn(4)})
  gcheck("group_norm no affine, 3-D", function(x) return T.group_norm(x, 3, nil, nil, 1e-5) end, {randn(2, 6, 5)})
  gcheck("group_norm_silu", function(x, w, b) return T.group_norm_silu(x, 2, w, b, 1e-6) end,
    {randn(2, 4, 3, 2), randn(4), randn(4)})
  gcheck("batch_norm training 4-D", function(x, w, b) return T.batch_norm(x, nil, nil, w, b, true) end,
    {randn(3, 2, 3, 3), randn(2), randn(2)})
  gcheck("batch_norm training 2-D", function(x, w, b) return T.batch_norm(x, nil, nil, w, b, true) end,
    {randn(5, 3), randn(3), randn(3)})
  gcheck("batch_norm eval", function(x, w, b)
    return T.batch_norm(x, T.tensor({0.1, -0.2}), T.tensor({0.8, 1.3}), w, b, false)
  end, {randn(3, 2, 2, 2), randn(2), randn(2)})
  gcheck("batch_norm_relu training", function(x, w, b) return T.batch_norm_relu(x, nil, nil, w, b, true) end,
    {randn(3, 2, 3, 3), randn(2), randn(2)})
  gcheck("batch_norm_relu training, rows of vectors and a tail", function(x, w, b)
    return T.batch_norm_relu(x, nil, nil, w, b, true)
  end, {randn(2, 3, 5, 7), randn(3), randn(3)})
  gcheck("batch_norm_relu eval", function(x, w, b)
    return T.batch_norm_relu(x, T.tensor({0.1, -0.2}), T.tensor({0.8, 1.3}), w, b, false)
  end, {randn(3, 2, 2, 2), randn(2), randn(2)})
  gcheck("layer_norm last dim", function(x, w, b) return T.layer_norm(x, 1, w, b, 1e-5) end,
    {randn(3, 2, 5), randn(5), randn(5)})
  gcheck("layer_norm last 2 dims, no affine", function(x) return T.layer_norm(x, 2) end, {randn(2, 3, 4)})
  gcheck("attention (loops), masks", function(q, k, v)
    local am = T.tensor({{0, -0.5, 0, 1}, {0.3, 0, 0, 0}, {0, 0, 0, 0.2}})
    local kpm = T.tensor({{0, 0, 0, 1}, {1, 0, 0, 0}})
    return (T.scaled_dot_product_attention(q, k, v, {attn_mask = am, key_padding_mask = kpm}))
  end, {randn(2, 2, 3, 5), randn(2, 2, 4, 5), randn(2, 2, 4, 3)})
  gcheck("attention weights as an output (loops)", function(q, k, v)
    local _, w = T.scaled_dot_product_attention(q, k, v, {key_padding_mask = T.tensor({{0, 1, 0, 0}})})
    return w
  end, {randn(1, 2, 3, 5), randn(1, 2, 4, 5), T.randn({1, 2, 4, 3}, gen)})
  gcheck("attention out and weights together (GEMM)", function(q, k, v)
    local o, w = T.scaled_dot_product_attention(q, k, v)
    return o:sum(3) + w:sum(3) * 0 + w:narrow(3, 1, 1):squeeze(3)
  end, {randn(1, 40, 4), randn(1, 40, 4), randn(1, 40, 4)}, 3e-2)
  gcheck("attention (GEMM path: 48 tokens)", function(q, k, v)
    return (T.scaled_dot_product_attention(q, k, v, {scale = 0.2}))
  end, {randn(1, 48, 16), randn(1, 48, 16), randn(1, 48, 16)}, 3e-2)
  local am48 = T.randn({48, 48}, gen)
  gcheck("attention channels first (transposed GEMMs: 48 tokens), mask", function(q, k, v)
    return (T.scaled_dot_product_attention(q, k, v, {channels_first = true, attn_mask = am48}))
  end, {randn(2, 16, 48), randn(2, 16, 48), randn(2, 8, 48)}, 3e-2)
  gcheck("attention channels first (short: the loops on transposed copies)", function(q, k, v)
    return (T.scaled_dot_product_attention(q, k, v, {channels_first = true, key_padding_mask = T.tensor({{0, 1, 0, 0}})}))
  end, {randn(1, 5, 3), randn(1, 5, 4), randn(1, 2, 4)})
  gcheck("gru_cell", T.gru_cell, {randn(3, 4), randn(3, 5), randn(15, 4), randn(15, 5), randn(15), randn(15)})
  gcheck("gru_cell no biases", function(x, h, a, b) return T.gru_cell(x, h, a, b) end,
    {randn(2, 3), randn(2, 2), randn(6, 3), randn(6, 2)})
  local labels = T.tensor({2, 0, 3}, "int64")
  gcheck("cross_entropy mean", function(x) return T.cross_entropy(x, labels) end, {randn(3, 4)})
  gcheck("cross_entropy none (N,C,d)", function(x)
    return T.cross_entropy(x, T.tensor({{1, 0}, {2, 2}}, "int64"), "none")
  end, {randn(2, 3, 2)})
  gcheck("nll_loss sum", function(x) return T.nll_loss(x, labels, "sum") end, {randn(3, 4)})
  gcheck("bce_with_logits (both inputs)", function(x, t) return T.binary_cross_entropy_with_logits(x, t) end,
    {randn(2, 3), leaf(T.rand({2, 3}, gen))})
  gcheck("bce_with_logits pos_weight", function(x, t)
    return T.binary_cross_entropy_with_logits(x, t, {reduction = "sum", pos_weight = T.tensor({0.5, 2, 3})})
  end, {randn(2, 3), leaf(T.rand({2, 3}, gen))})
  gcheck("mse_loss", function(a, b) return T.mse_loss(a, b) end, {randn(3, 2), randn(3, 2)})
  local a = T.tensor({{1.0, -2.0, 0.5}}):requires_grad_(true)
  gcheck("l1_loss", function(x, y) return T.l1_loss(x, y, "sum") end, {a, leaf(T.tensor({{0.2, 0.4, -1.0}}))})
  gcheck("gaussian_kl", function(m, l) return T.gaussian_kl(m, l) end, {randn(3, 4), randn(3, 4)})
  gcheck("linear + bias, 3-D input", T.linear, {randn(2, 3, 4), randn(5, 4), randn(5)})
  gcheck("linear no bias, transposed weight view", function(x, w) return T.linear(x, w:t()) end,
    {randn(3, 4), randn(4, 2)})
  gcheck("dropout p = 0.4 (mask fixed by the key)", function(x)
    return T.dropout(x, 0.4, T.Generator(9))
  end, {randn(4, 6)})
  local cg = T.Generator(202) -- their own draws: the checks above keep their inputs
  local function crandn(...) return leaf(T.randn({...}, cg)) end
  gcheck("conv2d 3x3 with a bias per image (N, O)", function(x, w, b) return T.conv2d(x, w, b, {padding = 1}) end,
    {crandn(3, 2, 5, 4), crandn(4, 2, 3, 3), crandn(3, 4)})
  gcheck("avg_pool2d 2 on odd sizes (the 2x2 loops; a row and a column left out)", function(x) return T.avg_pool2d(x, 2) end,
    {crandn(2, 3, 5, 7)})
  gcheck("upsample_nearest2d 2 (the 2x2 loops)", function(x) return T.upsample_nearest2d(x, 2) end, {crandn(2, 3, 3, 5)})
  gcheck("conv2d with a residual and a scale, s (conv + b + r)", function(x, w, b, r)
    return T.conv2d(x, w, b, {padding = 1, residual = r, scale = 0.6})
  end, {crandn(2, 3, 5, 4), crandn(4, 3, 3, 3), crandn(4), crandn(2, 4, 5, 4)})
  gcheck("group_norm_silu + dropout 0.3 (the mask fixed by the generator's seed)", function(x, w, b)
    return T.group_norm_silu(x, 2, w, b, 1e-6, 0.3, T.Generator(5))
  end, {crandn(2, 4, 3, 5), crandn(4), crandn(4)})
end)

describe("linear", function()
  it("equals matmul + bias, values and all three gradients", function()
    for _, sh in ipairs({{7, 5}, {2, 3, 5}, {1, 5}}) do
      local x, w, b = randn(table.unpack(sh)), randn(4, 5), randn(4)
      local x2, w2, b2 = x:detach():clone():requires_grad_(true), w:detach():clone():requires_grad_(true),
        b:detach():clone():requires_grad_(true)
      local y1, y2 = T.linear(x, w, b), x2:matmul(w2:t()) + b2
      spec.truthy(reldiff(y1, y2) < 1e-6)
      local R = T.randn(y1:size(), gen)
      ;(y1 * R):sum():backward()
      ;(y2 * R):sum():backward()
      spec.truthy(reldiff(x.grad, x2.grad) < 1e-6 and reldiff(w.grad, w2.grad) < 1e-6 and reldiff(b.grad, b2.grad) < 1e-6)
    end
  end)
  it("computes only the gradients asked for", function()
    local x, w = T.randn(3, 4), randn(2, 4)
    T.linear(x, w):sum():backward()
    spec.truthy(x.grad == nil)
    spec.truthy(reldiff(w.grad, T.ones(2, 3):matmul(x)) < 1e-6)
  end)
  it("names the shapes on bad input", function()
    spec.raises(function() T.linear(T.randn(3, 4), T.randn(2, 5)) end, "linear", "3x4", "2x5")
    spec.raises(function() T.linear(T.randn(3, 4), T.randn(2, 4), T.randn(3)) end, "linear", "bias", "3")
    spec.raises(function() T.linear(T.randn(3, 4), T.randn(4)) end, "linear", "weight")
  end)
end)

describe("dropout", function()
  local N = 1000000
  it("keeps 1 - p of the elements, scaled by 1/(1-p), at every p", function()
    for _, p in ipairs({0.1, 0.25, 0.5, 0.9}) do
      local y = T.dropout(T.ones(N), p, T.Generator(3))
      local kept = y:ne(0):mean():item()
      -- binomial standard deviation at N = 1e6 is <= 5e-4; 6 of them
      spec.near(kept, 1 - p, 3e-3)
      spec.near(y:max():item(), 1 / (1 - p), 1e-5)
      spec.near(y:sum():item() / N, 1, 1e-2)
    end
    spec.eq(T.dropout(T.ones(100), 1, T.Generator(3)):abs():sum():item(), 0)
  end)
  it("draws neighbouring elements, rows and calls independently", function()
    local g = T.Generator(5)
    local m = T.dropout(T.ones(1000, 1000), 0.5, g):ne(0):float() - 0.5
    local function corr(a, b) return ((a * b):mean() / 0.25):item() end
    -- correlation of independent fair bits over ~1e6 pairs: sd 1e-3
    spec.truthy(math.abs(corr(m:narrow(2, 1, 999), m:narrow(2, 2, 999))) < 6e-3) -- i, i+1
    spec.truthy(math.abs(corr(m:narrow(1, 1, 999), m:narrow(1, 2, 999))) < 6e-3) -- row r, r+1
    local m2 = T.dropout(T.ones(1000, 1000), 0.5, g):ne(0):float() - 0.5
    spec.truthy(math.abs(corr(m, m2)) < 6e-3) -- the next call
    -- no element position is biased: each column's keep rate over 1000 rows stays near 1/2
    local col = (m + 0.5):mean(1)
    spec.truthy((col - 0.5):abs():max():item() < 0.08) -- sd 0.016: 5 of them
  end)
  it("repeats with the same generator state, and on any number of threads", function()
    local x = T.randn(300, 700, gen)
    local threads = T.get_num_threads()
    local a = T.dropout(x, 0.3, T.Generator(8))
    T.set_num_threads(1)
    local b = T.dropout(x, 0.3, T.Generator(8))
    T.set_num_threads(threads)
    spec.eq(spec.maxdiff(a, b), 0)
  end)
  it("passes the gradient through the kept elements only, scaled", function()
    local x = randn(50, 40)
    local y = T.dropout(x, 0.3, T.Generator(2))
    local R = T.randn(50, 40, gen)
    ;(y * R):sum():backward()
    local keep = y:detach():ne(0):float()
    spec.truthy(reldiff(x.grad, R * keep / 0.7) < 1e-6)
    spec.truthy(reldiff(y:detach(), x:detach() * keep / 0.7) < 1e-6)
  end)
  it("refuses a probability outside [0, 1] and integer input", function()
    spec.raises(function() T.dropout(T.ones(3), 1.5) end, "dropout", "probability", "1.5")
    spec.raises(function() T.dropout(T.ones(3):long(), 0.5) end, "dropout", "float32")
  end)
end)

-- ---- fused pairs against their parts -------------------------------------------------------------------------
describe("fused vs composed", function()
  it("group_norm_silu equals group_norm then silu, values and gradients", function()
    local x, w, b = randn(2, 6, 4, 4), randn(6), randn(6)
    local x2, w2, b2 = x:detach():clone():requires_grad_(true), w:detach():clone():requires_grad_(true),
      b:detach():clone():requires_grad_(true)
    local y1 = T.group_norm_silu(x, 3, w, b, 1e-6)
    local y2 = T.group_norm(x2, 3, w2, b2, 1e-6):silu()
    local d = reldiff(y1, y2)
    local R = T.randn(y1:size(), gen)
    ;(y1 * R):sum():backward()
    ;(y2 * R):sum():backward()
    d = math.max(d, reldiff(x.grad, x2.grad), reldiff(w.grad, w2.grad), reldiff(b.grad, b2.grad))
    print(string.format("#   fused vs composed: %.2e", d))
    spec.truthy(d < 1e-5)
  end)
  it("gru_cell from h = 0 (its GEMMs skipped) equals its composition, gradients included", function()
    local x, h = T.randn({4, 3}, gen), T.zeros(4, 5)
    local wi, wh, bi, bh = randn(15, 3), randn(15, 5), randn(15), randn(15)
    local R = T.randn({4, 5}, gen)
    T.sum(T.gru_cell(x, h, wi, wh, bi, bh) * R):backward()
    local got = {wh.grad:clone(), bh.grad:clone(), wi.grad:clone()}
    for _, p in ipairs({wi, wh, bi, bh}) do p:zero_grad() end
    local gi, gh = x:matmul(wi:t()) + bi, h:matmul(wh:t()) + bh
    local r = (gi:narrow(2, 1, 5) + gh:narrow(2, 1, 5)):sigmoid()
    local z = (gi:narrow(2, 6, 5) + gh:narrow(2, 6, 5)):sigmoid()
    local n = (gi:narrow(2, 11, 5) + r * gh:narrow(2, 11, 5)):tanh()
    T.sum(((1 - z) * n + z * h) * R):backward()
    spec.eq(got[1]:abs():sum():item(), 0, "W_hh's gradient from h = 0 is zero")
    local d = math.max(reldiff(got[2], bh.grad), reldiff(got[3], wi.grad))
    print(string.format("#   gru from h = 0, fused vs composed gradients: %.2e", d))
    spec.truthy(d < 1e-5)
  end)
  it("add_scaled equals (a + b) * s, fused on large dense tensors, and names bad shapes", function()
    local g = T.Generator(9)
    local a, b = T.randn(100, 16, 32, 32, g):requires_grad_(true), T.randn(100, 16, 32, 32, g):requires_grad_(true)
    local y = T.add_scaled(a, b, 1 / math.sqrt(2))
    spec.truthy(reldiff(y, (a:detach() + b:detach()) * (1 / math.sqrt(2))) < 1e-6)
    local w = T.randn(100, 16, 32, 32, g)
    local loss = (y * w):sum()
    loss:backward()
    spec.truthy(reldiff(a.grad, w * (1 / math.sqrt(2))) < 1e-6 and reldiff(b.grad, w * (1 / math.sqrt(2))) < 1e-6)
    spec.raises(function() T.add_scaled(T.zeros(2, 3), T.zeros(4), 1) end, "add")
  end)
end)

describe("behaviour", function()
  it("batch_norm: training moves the running statistics, eval reads them", function()
    local x = T.randn({8, 3, 4, 4}, gen) * 2 + 1
    local rm, rv = T.zeros(3), T.ones(3)
    local y = T.batch_norm(x, rm, rv, nil, nil, true, 0.1, 1e-5)
    local m = x:mean({1, 3, 4})
    local v = x:var({1, 3, 4}, false, 1)
    spec.truthy(reldiff(rm, m * 0.1) < 1e-6, "running mean")
    spec.truthy(reldiff(rv, v * 0.1 + 0.9) < 1e-5, "running var (unbiased)")
    spec.truthy(math.abs(y:mean():item()) < 1e-5, "normalised")
    local rm0, rv0 = rm:clone(), rv:clone()
    local ye = T.batch_norm(x, rm, rv, nil, nil, false, 0.1, 1e-5)
    spec.eq(spec.maxdiff(rm, rm0), 0)
    spec.eq(spec.maxdiff(rv, rv0), 0)
    local want = (x - rm:view(1, 3, 1, 1)) / (rv:view(1, 3, 1, 1) + 1e-5):sqrt()
    spec.truthy(reldiff(ye, want) < 1e-5)
  end)
  it("attention weights: rows sum to 1, masked keys get 0, a fully masked row is all zero", function()
    local q, k, v = T.randn({1, 2, 3, 4}, gen), T.randn({1, 2, 5, 4}, gen), T.randn({1, 2, 5, 4}, gen)
    local kpm = T.tensor({{0, 1, 0, 0, 1}}, "int64")
    local am = T.zeros(3, 5)
    am[{3}] = 1 -- row 3 fully masked (boolean reading)
    local out, w = T.scaled_dot_product_attention(q, k, v, {key_padding_mask = kpm, attn_mask = am, bool_mask = true})
    spec.eq(shape(w), "1x2x3x5")
    for h = 1, 2 do
      for i = 1, 2 do spec.near(w[1][h][i]:sum():item(), 1, 1e-6) end
      spec.eq(w[1][h][3]:abs():sum():item(), 0)
      spec.eq(w[1][h][{{1, 2}, 2}]:abs():sum():item(), 0)
      spec.eq(w[1][h][{{1, 2}, 5}]:abs():sum():item(), 0)
      spec.eq(out[1][h][3]:abs():sum():item(), 0)
    end
  end)
  it("attention: key_padding_additive adds a float mask", function()
    local q, k, v = T.randn({2, 1, 3, 4}, gen), T.randn({2, 1, 4, 4}, gen), T.randn({2, 1, 4, 4}, gen)
    local kpm = T.randn({2, 4}, gen)
    local _, w = T.scaled_dot_product_attention(q, k, v, {key_padding_mask = kpm, key_padding_additive = true})
    local s = q:matmul(k:transpose(3, 4)) * 0.5 + kpm:view(2, 1, 1, 4)
    spec.truthy(reldiff(w, s:softmax(4)) < 1e-6)
  end)
  it("conv2d fwd+bwd at training sizes allocates nothing new after the first step", function()
    local x = randn(8, 16, 16, 16)
    local w, b = randn(16, 16, 3, 3), randn(16)
    local function step()
      local y = T.conv2d(x, w, b, {padding = 1})
      y:sum():backward()
      x:zero_grad(); w:zero_grad(); b:zero_grad()
    end
    step(); collectgarbage(); collectgarbage()
    local s0, live0 = T.nn_scratch_bytes(), T.memory().live_bytes
    for _ = 1, 5 do step() end
    collectgarbage(); collectgarbage()
    local s1, live1 = T.nn_scratch_bytes(), T.memory().live_bytes
    print(string.format("#   scratch %d -> %d bytes, live %d -> %d bytes", s0, s1, live0, live1))
    spec.eq(s1, s0, "scratch grew")
    spec.truthy(live1 <= live0, "live tensor bytes grew")
  end)
  it("grad flows only where asked (conv weight only, GRU hidden only)", function()
    local x, w = T.randn({1, 2, 4, 4}, gen), randn(3, 2, 3, 3)
    T.conv2d(x, w):sum():backward()
    spec.truthy(w.grad ~= nil and x.grad == nil)
    local h = randn(2, 3)
    T.gru_cell(T.randn({2, 2}, gen), h, T.randn({9, 2}, gen), T.randn({9, 3}, gen)):sum():backward()
    spec.truthy(h.grad ~= nil)
  end)
  it("no graph under no_grad", function()
    local y = T.no_grad(function() return T.conv2d(randn(1, 1, 3, 3), randn(1, 1, 3, 3)) end)
    spec.truthy(not y.requires_grad)
  end)
end)

-- ---- bad input ---------------------------------------------------------------------------------------------
describe("bad input names the op and the shapes", function()
  local x4 = T.randn(2, 3, 8, 8)
  local cases = {
    {"conv2d 3-D input", function() T.conv2d(T.randn(3, 8, 8), T.randn(4, 3, 3, 3)) end, "conv2d", "4-D", "3x8x8"},
    {"conv2d channels", function() T.conv2d(x4, T.randn(4, 5, 3, 3)) end, "conv2d", "2x3x8x8", "4x5x3x3", "3 channels"},
    {"conv2d bias", function() T.conv2d(x4, T.randn(4, 3, 3, 3), T.randn(5)) end, "conv2d", "bias", "(5)"},
    {"conv2d too small", function() T.conv2d(T.randn(1, 3, 2, 2), T.randn(4, 3, 5, 5)) end, "conv2d", "smaller than"},
    {"conv2d option typo", function() T.conv2d(x4, T.randn(4, 3, 3, 3), nil, {strides = 2}) end,
      "conv2d", "unknown option 'strides'"},
    {"conv2d bad stride", function() T.conv2d(x4, T.randn(4, 3, 3, 3), nil, {stride = 0}) end, "conv2d", "stride"},
    {"conv2d groups", function() T.conv2d(x4, T.randn(4, 3, 3, 3), nil, {groups = 3}) end, "conv2d", "groups"},
    {"conv_transpose2d channels", function() T.conv_transpose2d(x4, T.randn(4, 2, 3, 3)) end,
      "conv_transpose2d", "2x3x8x8", "4x2x3x3"},
    {"conv_transpose2d output_padding", function()
      T.conv_transpose2d(x4, T.randn(3, 2, 3, 3), nil, {stride = 2, output_padding = 2})
    end, "conv_transpose2d", "output_padding"},
    {"avg_pool2d window", function() T.avg_pool2d(T.randn(1, 1, 2, 2), 3) end, "avg_pool2d", "1x1x2x2", "smaller"},
    {"avg_pool2d 2-D", function() T.avg_pool2d(T.randn(4, 4), 2) end, "avg_pool2d", "4-D", "4x4"},
    {"upsample scale", function() T.upsample_nearest2d(x4, 0) end, "upsample_nearest2d", "scale"},
    {"upsample fractional", function() T.upsample_nearest2d(x4, 1.5) end, "upsample_nearest2d", "integer"},
    {"group_norm groups", function() T.group_norm(x4, 2) end, "group_norm", "2 groups", "3 channels", "2x3x8x8"},
    {"group_norm weight", function() T.group_norm(x4, 3, T.ones(4)) end, "group_norm", "weight", "(4)", "2x3x8x8"},
    {"group_norm_silu 1-D", function() T.group_norm_silu(T.randn(5), 1) end, "group_norm_silu", "(5)"},
    {"batch_norm eval without stats", function() T.batch_norm(x4, nil, nil, nil, nil, false) end,
      "batch_norm", "running"},
    {"batch_norm running shape", function() T.batch_norm(x4, T.zeros(4), T.ones(4), nil, nil, true) end,
      "batch_norm", "running_mean", "(4)", "2x3x8x8"},
    {"batch_norm one value per channel", function() T.batch_norm(T.randn(1, 3), nil, nil, nil, nil, true) end,
      "batch_norm", "more than 1 value per channel", "1x3"},
    {"layer_norm weight", function() T.layer_norm(T.randn(2, 5), 1, T.ones(4)) end, "layer_norm", "weight", "2x5"},
    {"layer_norm shape table", function() T.layer_norm(T.randn(2, 5), {4}) end, "layer_norm", "2x5"},
    {"attention shapes", function() T.scaled_dot_product_attention(T.randn(2, 3, 4), T.randn(2, 5, 3), T.randn(2, 5, 4)) end,
      "scaled_dot_product_attention", "2x3x4", "2x5x3"},
    {"attention channels first", function()
      T.scaled_dot_product_attention(T.randn(2, 8, 16), T.randn(2, 7, 16), T.randn(2, 8, 16), {channels_first = true})
    end, "scaled_dot_product_attention", "2x7x16", "channels first"},
    {"attention attn_mask", function()
      T.scaled_dot_product_attention(T.randn(2, 3, 4), T.randn(2, 5, 4), T.randn(2, 5, 4), {attn_mask = T.zeros(3, 2)})
    end, "scaled_dot_product_attention", "attn_mask of shape 3x2"},
    {"attention key_padding_mask", function()
      T.scaled_dot_product_attention(T.randn(2, 3, 4), T.randn(2, 5, 4), T.randn(2, 5, 4), {key_padding_mask = T.zeros(2, 4)})
    end, "scaled_dot_product_attention", "key_padding_mask of shape 2x4, expected 2x5"},
    {"gru_cell w_ih", function() T.gru_cell(T.randn(2, 3), T.randn(2, 4), T.randn(12, 5), T.randn(12, 4)) end,
      "gru_cell", "2x3", "12x5"},
    {"gru_cell hidden", function() T.gru_cell(T.randn(2, 3), T.randn(3, 4), T.randn(12, 3), T.randn(12, 4)) end,
      "gru_cell", "3x4"},
    {"cross_entropy label range", function()
      T.cross_entropy(T.randn(4, 3), T.tensor({0, 2, 3, 1}, "int64"))
    end, "cross_entropy", "label 3 at position 3", "[0, 3)", "4x3"},
    {"cross_entropy negative label", function()
      T.cross_entropy(T.randn(2, 3), T.tensor({-1, 0}, "int64"))
    end, "cross_entropy", "label -1 at position 1"},
    {"cross_entropy float labels", function() T.cross_entropy(T.randn(3, 4), T.tensor({0, 1, 2})) end,
      "cross_entropy", "int64"},
    {"cross_entropy label count", function() T.cross_entropy(T.randn(3, 4), T.tensor({0, 1}, "int64")) end,
      "cross_entropy", "need labels of shape 3, got 2"},
    {"nll_loss 1-D", function() T.nll_loss(T.randn(4), T.tensor({0}, "int64")) end, "nll_loss", "got 4"},
    {"bce shapes", function() T.binary_cross_entropy_with_logits(T.randn(3, 4), T.rand(4, 3)) end,
      "binary_cross_entropy_with_logits", "3x4", "4x3"},
    {"bce pos_weight", function()
      T.binary_cross_entropy_with_logits(T.randn(3, 4), T.rand(3, 4), {pos_weight = T.ones(3)})
    end, "binary_cross_entropy_with_logits", "pos_weight"},
    {"mse shapes", function() T.mse_loss(T.randn(3, 4), T.randn(4, 3)) end, "mse_loss", "3x4", "4x3"},
    {"l1 reduction", function() T.l1_loss(T.randn(3), T.randn(3), "avg") end, "l1_loss", "reduction must be"},
    {"gaussian_kl shapes", function() T.gaussian_kl(T.randn(2, 3), T.randn(2, 4)) end, "gaussian_kl", "2x3", "2x4"},
    {"not a tensor", function() T.conv2d(x4, 3) end, "conv2d", "weight must be a tensor"},
  }
  for _, c in ipairs(cases) do
    it(c[1], function() spec.raises(c[2], table.unpack(c, 3)) end)
  end
end)

describe("convolution sizes in checked arithmetic", function()
  local x, w = T.randn(1, 1, 2, 2), T.randn(1, 1, 2, 2)
  it("conv_transpose2d refuses a stride whose output size wraps", function()
    spec.raises(function() return T.conv_transpose2d(x, w, nil, {stride = 1 << 62}) end, "conv_transpose2d", "4611686018427387904")
    spec.raises(function() return T.conv_transpose2d(x, w, nil, {dilation = 1 << 62}) end, "conv_transpose2d")
    spec.eq(T.conv_transpose2d(x, w, nil, {stride = 3}):size(3), 5)
  end)
  it("conv2d refuses a padding or dilation whose sums wrap", function()
    spec.raises(function() return T.conv2d(x, w, nil, {padding = 1 << 62}) end, "conv2d", "overflows")
    spec.raises(function() return T.conv2d(x, w, nil, {dilation = 1 << 62}) end, "conv2d")
    spec.eq(T.conv2d(x, w, nil, {stride = 1 << 62}):size(3), 1)
  end)
  it("upsample_nearest2d refuses a scale whose output size wraps (it wrote anywhere)", function()
    spec.raises(function() return T.upsample_nearest2d(T.randn(1, 1, 4, 4), 1 << 62) end, "upsample_nearest2d", "2^40")
    spec.eq(T.upsample_nearest2d(T.randn(1, 1, 4, 4), 3):size(4), 12)
  end)
end)
