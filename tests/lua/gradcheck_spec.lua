-- Every differentiable op against central differences, on random shapes with broadcasting.
local T = require 'tdrl'
local gc = require 'tdrl.gradcheck'

local gen = T.Generator(1234)
local TOL = 2e-2 -- float32 central differences at eps 1e-2

local function leaf(t) return t:requires_grad_(true) end
local function randn(...) return leaf(T.randn({...}, gen)) end
-- values kept away from 0 (kinks of abs, relu, ...) and of either sign
local function away(...)
  local x = T.randn({...}, gen)
  x = x:sign() * (x:abs() + 0.2)
  return leaf(x:detach())
end
local function positive(...) return leaf((T.rand({...}, gen) + 0.5):detach()) end

local function check(name, fn, inputs, tol)
  it(name, function()
    local err, where = gc.check(fn, inputs)
    print(string.format("#   %-34s max error %.2e", name, err))
    if not (err <= (tol or TOL)) then error(string.format("%s: error %.3g at %s", name, err, where)) end
  end)
end

describe("gradcheck binary", function()
  for _, op in ipairs({"add", "sub", "mul"}) do
    check(op .. " same shape", function(a, b) return a[op](a, b) end, {randn(3, 4), randn(3, 4)})
    check(op .. " broadcast (3x1x4, 2x1)", function(a, b) return a[op](a, b) end, {randn(3, 1, 4), randn(2, 1)})
    check(op .. " scalar", function(a) return a[op](a, 1.7) end, {randn(5)})
  end
  do -- its own generator: the draws of the checks after it stay as they were
    local g2 = T.Generator(77)
    local function rn(...) return leaf(T.randn({...}, g2)) end
    check("add_scaled", function(a, b) return T.add_scaled(a, b, 0.7) end, {rn(3, 4), rn(3, 4)})
    check("add_scaled broadcast (composed)", function(a, b) return T.add_scaled(a, b, -1.3) end, {rn(3, 4), rn(4)})
    check("add_scaled of a view (composed)", function(a, b) return T.add_scaled(a:t(), b, 2) end, {rn(4, 3), rn(3, 4)})
  end
  check("div", function(a, b) return a / b end, {randn(3, 4), away(3, 4)})
  check("div broadcast", function(a, b) return a / b end, {randn(2, 3), away(3)})
  check("number / tensor", function(a) return 2 / a end, {away(4)})
  check("pow tensor^tensor", function(a, b) return a ^ b end, {positive(3, 2), randn(3, 2)})
  check("pow tensor^2", function(a) return a ^ 2 end, {randn(4)})
  check("pow number^tensor", function(a) return T.pow(2, a) end, {randn(4)})
  check("maximum", function(a, b) return a:maximum(b) end, {away(6), away(6)})
  check("minimum broadcast", function(a, b) return a:minimum(b) end, {away(2, 3), away(3)})
  check("unary minus", function(a) return -a end, {randn(3)})
end)

describe("gradcheck unary", function()
  local any = {"exp", "sin", "cos", "tanh", "sigmoid", "silu", "gelu", "square", "expm1"}
  for _, op in ipairs(any) do check(op, function(a) return a[op](a) end, {randn(3, 4)}) end
  for _, op in ipairs({"abs", "relu"}) do check(op, function(a) return a[op](a) end, {away(3, 4)}) end
  for _, op in ipairs({"log", "sqrt", "rsqrt", "reciprocal", "log1p"}) do
    check(op, function(a) return a[op](a) end, {positive(3, 4)})
  end
  check("elu alpha 1", function(a) return a:elu() end, {away(3, 4)})
  check("elu alpha 0.5", function(a) return a:elu(0.5) end, {away(3, 4)})
  check("clamp", function(a) return a:clamp(-0.5, 0.5) end, {away(10)})
  check("clamp min only", function(a) return a:clamp(0.1) end, {away(10)})
end)

describe("gradcheck reductions", function()
  check("sum all", function(a) return a:sum() end, {randn(3, 4)})
  check("sum dim 2", function(a) return a:sum(2) end, {randn(3, 4, 2)})
  check("sum dims {1,3} keepdim", function(a) return a:sum({1, 3}, true) end, {randn(3, 4, 2)})
  check("mean dim -1", function(a) return a:mean(-1) end, {randn(3, 4)})
  check("var dim 2", function(a) return a:var(2) end, {randn(3, 5)})
  check("var all, correction 0", function(a) return a:var(nil, false, 0) end, {randn(3, 5)})
  check("std dim 1", function(a) return a:std(1) end, {randn(4, 3)})
  check("logsumexp dim 2", function(a) return a:logsumexp(2) end, {randn(3, 5)})
  check("logsumexp all", function(a) return a:logsumexp() end, {randn(3, 5)})
  check("norm 2", function(a) return a:norm() end, {randn(3, 4)})
  check("norm 1 dim 2", function(a) return a:norm(1, 2) end, {away(3, 4)})
  check("norm 3", function(a) return a:norm(3) end, {away(5)})
  check("max dim 2", function(a) return (a:max(2)) end, {randn(3, 5)})
  check("min dim 1 keepdim", function(a) return (a:min(1, true)) end, {randn(3, 5)})
  check("max all", function(a) return a:max() end, {randn(3, 5)})
  check("softmax dim 2", function(a) return a:softmax(2) end, {randn(3, 5)})
  check("softmax dim 1 of 3-D", function(a) return a:softmax(1) end, {randn(3, 2, 4)})
  check("log_softmax dim -1", function(a) return a:log_softmax(-1) end, {randn(2, 3, 4)})
  check("log_softmax dim 2 of 3-D", function(a) return a:log_softmax(2) end, {randn(2, 3, 4)})
end)

describe("gradcheck matmul", function()
  check("2-D", function(a, b) return a:matmul(b) end, {randn(3, 4), randn(4, 5)})
  check("1-D . 1-D", function(a, b) return a:matmul(b) end, {randn(4), randn(4)})
  check("1-D @ 2-D", function(a, b) return a:matmul(b) end, {randn(4), randn(4, 3)})
  check("2-D @ 1-D", function(a, b) return a:matmul(b) end, {randn(3, 4), randn(4)})
  check("batched", function(a, b) return a:matmul(b) end, {randn(2, 3, 4), randn(2, 4, 5)})
  check("batched @ 2-D", function(a, b) return a:matmul(b) end, {randn(2, 3, 4), randn(4, 5)})
  check("broadcast batch (2,1,3,4)@(3,4,2)", function(a, b) return a:matmul(b) end, {randn(2, 1, 3, 4), randn(3, 4, 2)})
  check("transposed operands", function(a, b) return a:t():matmul(b:t()) end, {randn(4, 3), randn(5, 4)})
end)

describe("gradcheck views and indexing", function()
  check("reshape", function(a) return a:reshape(2, 6) * 1 end, {randn(3, 4)})
  check("view -1", function(a) return a:view(-1, 3) end, {randn(4, 3)})
  check("reshape of a transpose (copy)", function(a) return a:t():reshape(12) end, {randn(3, 4)})
  check("transpose", function(a) return a:transpose(1, 3) end, {randn(2, 3, 4)})
  check("permute", function(a) return a:permute(3, 1, 2) end, {randn(2, 3, 4)})
  check("narrow", function(a) return a:narrow(2, 2, 2) end, {randn(3, 4)})
  check("slice step 2", function(a) return a:slice(1, 1, 5, 2) end, {randn(5, 2)})
  check("select", function(a) return a:select(2, 3) end, {randn(3, 4)})
  -- several slices of one intermediate: the later ones add into the gradient the first made
  check("steps of a sequence read one by one", function(a)
    local h = a * 2
    local s = h:select(2, 1) * h:select(2, 3)
    for k = 1, 4 do s = s + h:select(2, k):sin() end
    return s + h:narrow(2, 2, 2):sum(2) + h:slice(2, 1, 4, 2):exp():sum(2)
  end, {randn(3, 4)})
  check("index table x[{{1,2}, 3}]", function(a) return a[{{1, 2}, 3}] end, {randn(3, 4)})
  check("squeeze / unsqueeze", function(a) return a:squeeze(2):unsqueeze(1) end, {randn(3, 1, 4)})
  check("expand", function(a) return a:expand(2, 3, 4) end, {randn(3, 1)})
  check("contiguous of transpose", function(a) return a:t():contiguous() end, {randn(3, 4)})
  check("clone", function(a) return a:clone() end, {randn(3)})
  check("flatten", function(a) return a:flatten(2) end, {randn(2, 3, 4)})
  check("split", function(a) local p = a:split(2, 2); return p[2] * 2 + p[1] end, {randn(3, 4)})
  check("chunk", function(a) local p = a:chunk(3, 1); return T.cat(p, 2) end, {randn(6, 2)})
  check("cat dim 1", function(a, b) return T.cat({a, b}, 1) end, {randn(2, 3), randn(4, 3)})
  check("cat of six", function(a, b) return T.cat({a, b, a, b, a, b}, 2) end, {randn(2, 1), randn(2, 2)})
  check("stack dim 2", function(a, b) return T.stack({a, b}, 2) end, {randn(2, 3), randn(2, 3)})
  check("index_select", function(a) return a:index_select(1, T.tensor({2, 0, 2}, "int64")) end, {randn(3, 4)})
  check("gather", function(a) return a:gather(2, T.tensor({{0, 2}, {1, 1}, {3, 0}}, "int64")) end, {randn(3, 4)})
  check("scatter_add", function(a, s) return a:scatter_add(2, T.tensor({{0, 2}, {1, 1}}, "int64"), s) end,
    {randn(2, 3), randn(2, 2)})
  check("masked_fill", function(a) return a:masked_fill(T.tensor({{1, 0, 0}, {0, 1, 0}}), -3) end, {randn(2, 3)})
  check("where", function(a, b) return T.where(T.tensor({1, 0, 1}), a, b) end, {randn(2, 3), randn(3)})
end)

describe("gradcheck compositions", function()
  check("mlp-like chain", function(x, w, b)
    return (x:matmul(w) + b):tanh():softmax(2)
  end, {randn(4, 3), randn(3, 5), randn(5)})
  check("input used twice", function(a) return a * a:exp() + a end, {randn(5)})
end)
