-- The tensor API from Lua: creation, views, broadcasting, reductions, autograd, printing, errors.
local T = require 'tdrl'

describe("creation", function()
  it("zeros/ones/full/empty take varargs or a table and a dtype", function()
    spec.eq(T.zeros(2, 3):sum():item(), 0)
    spec.eq(T.ones({2, 3}):sum():item(), 6)
    spec.eq(T.full({2, 2}, 2.5):sum():item(), 10)
    spec.eq(T.zeros(2, "int64"):dtype(), "int64")
    spec.eq(T.empty(4, 5):numel(), 20)
    spec.eq(#T.zeros(7, 2), 7)
  end)
  it("arange, linspace, eye", function()
    spec.eq(T.arange(5):sum():item(), 10)
    spec.eq(T.arange(2, 8, 2):numel(), 3)
    spec.near(T.linspace(0, 1, 5)[4], 0.75)
    spec.eq(T.eye(3):sum():item(), 3)
    spec.eq(T.eye(2, 3):size(2), 3)
  end)
  it("tensor from nested tables keeps shape and values", function()
    local t = T.tensor({{1, 2, 3}, {4, 5, 6}})
    spec.eq(t:size(1), 2); spec.eq(t:size(2), 3)
    spec.eq(t:get(2, 3), 6)
    spec.eq(T.tensor({{1, 2}}, "int64"):get(1, 2), 2)
    spec.eq(math.type(T.tensor({7}, "int64")[1]), "integer")
    spec.eq(T.tensor(3.5):item(), 3.5)
    spec.raises(function() T.tensor({{1, 2}, {3}}) end, "ragged")
    spec.raises(function() T.tensor({1, "x"}) end, "not a number")
  end)
  it("seeded generators reproduce and differ", function()
    local a = T.randn(5, T.Generator(3)); local b = T.randn(5, T.Generator(3))
    spec.eq(spec.maxdiff(a, b), 0)
    spec.truthy(spec.maxdiff(a, T.randn(5, T.Generator(4))) > 0)
    T.manual_seed(11); local c = T.rand(4); T.manual_seed(11)
    spec.eq(spec.maxdiff(c, T.rand(4)), 0)
  end)
  it("generator state saves and restores", function()
    local g = T.Generator(9)
    T.randn(3, g)
    local st = g:get_state()
    local x = T.randn(4, g)
    g:set_state(st)
    spec.eq(spec.maxdiff(x, T.randn(4, g)), 0)
  end)
  it("randn has mean 0 and std 1; rand is in [0,1); randint in range; randperm is a permutation", function()
    local x = T.randn(20000, T.Generator(1))
    spec.near(x:mean():item(), 0, 0.03); spec.near(x:std():item(), 1, 0.03)
    local u = T.rand(10000, T.Generator(2))
    spec.truthy(u:min():item() >= 0 and u:max():item() < 1)
    local r = T.randint(3, 7, {1000}, T.Generator(5))
    spec.eq(r:dtype(), "int64"); spec.eq(r:min():item(), 3); spec.eq(r:max():item(), 6)
    local p = T.randperm(50, T.Generator(1))
    spec.eq(p:float():sum():item(), 49 * 50 / 2)
    local seen = {}
    for i = 1, 50 do seen[p[i]] = true end
    for i = 0, 49 do spec.truthy(seen[i], "missing " .. i) end
  end)
end)

describe("views", function()
  it("share storage", function()
    local x = T.zeros(3, 4)
    x:view(12)[5] = 7
    spec.eq(x:get(2, 1), 7)
    x:transpose(1, 2)[{2, 3}] = 9
    spec.eq(x:get(3, 2), 9)
    x:narrow(2, 4, 1):fill_(1)
    spec.eq(x:sum(1):get(4), 3)
    x:select(1, 1):fill_(-1)
    spec.eq(x[1]:sum():item(), -4)
  end)
  it("reshape copies only when it must; view refuses", function()
    local x = T.arange(12):view(3, 4)
    local t = x:t()
    spec.truthy(not t:is_contiguous())
    spec.raises(function() t:view(12) end, "view", "reshape")
    local r = t:reshape(12)
    spec.eq(r[2], 4)
    spec.eq(x:view(2, -1):size(2), 6)
    spec.raises(function() x:view(5, -1) end, "cannot view", "3x4")
  end)
  it("permute, squeeze, unsqueeze, expand, flatten", function()
    local x = T.randn(2, 3, 4)
    local p = x:permute(3, 1, 2)
    spec.eq(table.concat(p:size(), "x"), "4x2x3")
    spec.eq(p:get(4, 2, 3), x:get(2, 3, 4))
    spec.eq(table.concat(T.zeros(1, 3, 1):squeeze():size(), "x"), "3")
    spec.eq(table.concat(T.zeros(3):unsqueeze(1):size(), "x"), "1x3")
    spec.eq(table.concat(T.zeros(3, 1):expand(2, 3, 5):size(), "x"), "2x3x5")
    spec.eq(table.concat(x:flatten(2):size(), "x"), "2x12")
  end)
  it("slicing with tables and slice()", function()
    local x = T.arange(20):view(4, 5)
    spec.eq(x[{{2, 3}, {}}]:sum():item(), (5 + 6 + 7 + 8 + 9) + (10 + 11 + 12 + 13 + 14))
    spec.eq(x[{-1, -1}]:item(), 19)
    spec.eq(x:slice(2, 1, 5, 2):size(2), 3)
    spec.eq(x:slice(1, -2):size(1), 2)
  end)
  it("cat, stack, split, chunk", function()
    local a, b = T.ones(2, 3), T.zeros(1, 3)
    spec.eq(T.cat({a, b}, 1):size(1), 3)
    spec.eq(T.stack({a, a}, 1):dim(), 3)
    local parts = T.arange(10):split(4)
    spec.eq(#parts, 3); spec.eq(parts[3]:numel(), 2)
    spec.eq(#T.arange(10):chunk(3), 3)
    spec.raises(function() T.cat({a, T.zeros(2, 2)}, 1) end, "cat", "2x2", "2x3")
  end)
  it("index_select, gather, scatter_add, masked_fill, where", function()
    local x = T.arange(12):view(3, 4)
    local s = x:index_select(1, T.tensor({2, 0}, "int64"))
    spec.eq(s:get(1, 1), 8); spec.eq(s:get(2, 4), 3)
    local g = x:gather(2, T.tensor({{3}, {0}, {1}}, "int64"))
    spec.eq(g:get(1, 1), 3); spec.eq(g:get(3, 1), 9)
    local z = T.zeros(2, 3):scatter_add(2, T.tensor({{0, 0}, {2, 1}}, "int64"), T.ones(2, 2))
    spec.eq(z:get(1, 1), 2); spec.eq(z:get(2, 3), 1)
    local m = x:masked_fill(x:gt(5), -1)
    spec.eq(m:get(3, 4), -1); spec.eq(m:get(1, 2), 1)
    local w = T.where(T.tensor({1, 0}), T.tensor({5, 5}), 7)
    spec.eq(w[1], 5); spec.eq(w[2], 7)
    spec.raises(function() x:index_select(1, T.tensor({3}, "int64")) end, "index_select", "index 3 out of range")
    spec.raises(function() x:gather(2, T.tensor({1}, "int64")) end, "gather")
  end)
  it("contiguous copies of strided views equal their elements (merged dims, rows split over threads)", function()
    local x = T.randn(6, 7, 40, 50, T.Generator(3)) -- 84,000 floats: the parallel copy
    local views = {
      ["channel slice"] = x:narrow(2, 2, 3), ["transpose of the last two"] = x:transpose(3, 4),
      ["permute"] = x:permute(4, 1, 3, 2), ["column slice"] = x:narrow(4, 5, 20),
      ["expand"] = x:narrow(2, 1, 1):expand(6, 7, 40, 50), ["unit dims"] = x:narrow(1, 2, 1):narrow(3, 4, 1),
      ["int64 transpose"] = T.arange(0, 84000):view(6, 7, 40, 50):transpose(1, 3),
    }
    for name, v in pairs(views) do
      local c = v:contiguous()
      spec.truthy(c:is_contiguous(), name)
      local a, b, bad = c:view(-1):totable(), nil, 0
      local flat = {}
      local function walk(t)
        if type(t) ~= "table" then flat[#flat + 1] = t return end
        for _, e in ipairs(t) do walk(e) end
      end
      walk(v:totable())
      b = flat
      spec.eq(#a, #b, name)
      for i = 1, #a do if a[i] ~= b[i] then bad = bad + 1 end end
      spec.eq(bad, 0, name .. ": elements differ")
    end
  end)
end)

describe("elementwise and broadcasting", function()
  it("broadcasts like NumPy", function()
    local a = T.ones(3, 1, 4) + T.arange(2):view(2, 1)
    spec.eq(table.concat(a:size(), "x"), "3x2x4")
    spec.eq(a:sum():item(), 3 * 4 * (1 + 2))
  end)
  it("broadcast and strided operands, out of place and in place, element by element", function()
    local g = T.Generator(17)
    -- (N, C, H, W) against per-(N, C) biases, per-C, per-W, scalars, transposed views
    local cases = {
      {{3, 5, 4, 6}, {3, 5, 1, 1}}, {{2, 3, 8, 8}, {1, 3, 1, 1}}, {{4, 3, 5}, {1, 1, 5}}, {{2, 7, 3}, {1}},
      {{6, 4}, {6, 1}}, {{2, 3, 4, 5}, {2, 1, 4, 1}}, {{130, 130}, {1, 130}},
    }
    for _, c in ipairs(cases) do
      local a = T.randn(c[1], g)
      local b = T.randn(c[2], g)
      local at = a:transpose(1, a:dim()):contiguous():transpose(1, a:dim()) -- same values, other strides
      for _, x in ipairs({a, at}) do
        local y = x + b
        local z = a:clone()
        z:add_(b) -- in place, broadcast source
        local ok = true
        local n = a:numel()
        local af, yf, zf = a:reshape(-1), y:contiguous():reshape(-1), z:reshape(-1)
        local bb = b:expand(table.unpack(c[1])):contiguous():reshape(-1)
        for i = 1, n, math.max(1, n // 997) do
          local want = af[i] + bb[i]
          if math.abs(yf[i] - want) > 1e-5 or math.abs(zf[i] - want) > 1e-5 then ok = false end
        end
        spec.truthy(ok, table.concat(c[1], "x") .. " + " .. table.concat(c[2], "x"))
      end
    end
    -- in place into a non-contiguous destination
    local d = T.zeros(4, 6)
    d:t():add_(T.arange(4):view(1, 4))
    spec.eq(d:sum():item(), 6 * (0 + 1 + 2 + 3))
    spec.eq(d[{3, 5}]:item(), 2)
  end)
  it("metamethods with numbers on either side", function()
    local x = T.tensor({1, 2, 3})
    spec.eq((2 * x)[3], 6); spec.eq((x / 2)[1], 0.5); spec.eq((1 - x)[3], -2)
    spec.eq((x ^ 2)[3], 9); spec.eq((-x)[2], -2); spec.eq((2 ^ x)[3], 8)
  end)
  it("maths matches Lua's", function()
    local v = {0.3, -1.2, 2.5}
    local x = T.tensor(v)
    for _, f in ipairs({"exp", "sin", "cos", "tanh", "abs"}) do
      for i = 1, 3 do spec.near(x[f](x)[i], math[f] and math[f](v[i]) or 0, 1e-5, f) end
    end
    spec.near(x:sigmoid()[2], 1 / (1 + math.exp(1.2)), 1e-6)
    spec.near(x:silu()[3], 2.5 / (1 + math.exp(-2.5)), 1e-6)
    spec.near(x:elu()[2], math.exp(-1.2) - 1, 1e-6)
    spec.eq(x:relu()[2], 0)
    spec.near(x:gelu()[1], 0.3 * 0.5 * (1 + 0.23582284), 1e-5) -- erf(0.3/sqrt 2) = 0.23582284
    spec.eq(x:clamp(-1, 1)[3], 1)
    spec.eq(x:gt(0):sum():item(), 2)
  end)
  it("integer tensors stay integral under + - *", function()
    local y = T.tensor({1, 2}, "int64")
    spec.eq((y + 1):dtype(), "int64"); spec.eq((y * y)[2], 4)
    spec.eq((y / 2):dtype(), "float32")
    spec.eq(y:eq(T.tensor({1, 5}, "int64")):sum():item(), 1)
  end)
  it("names both shapes when broadcasting fails", function()
    spec.raises(function() return T.ones(3, 4) + T.ones(5) end, "add", "3x4", "5")
  end)
end)

describe("reductions", function()
  local x = T.tensor({{1, 2, 3}, {4, 5, 6}})
  it("sum, mean over all and given dims with keepdim", function()
    spec.eq(x:sum():item(), 21)
    spec.eq(x:sum(1)[3], 9)
    spec.eq(table.concat(x:sum(2, true):size(), "x"), "2x1")
    spec.eq(x:sum({1, 2}):item(), 21)
    spec.near(x:mean(2)[2], 5)
  end)
  it("long sums stay within a few float ulps of the exact sum", function()
    local n = 10000001
    local exact = n * 0.100000001490116 -- the float nearest 0.1, n times
    local got = (T.ones(n) * 0.1):sum():item()
    spec.truthy(math.abs(got - exact) <= 4 * 0.0625, string.format("%.4f vs %.4f", got, exact)) -- ulp at 1e6: 1/16
    local r = T.rand(300001, T.Generator(3))
    local ref = 0
    for i = 1, 300001 do ref = ref + r[i] end
    for _, v in ipairs({r:sum():item(), r:view(1, -1):sum(2):item(), r:narrow(1, 2, 300000):sum():item() + r[1]}) do
      spec.truthy(math.abs(v - ref) / ref < 3e-7, string.format("%.6f vs %.6f", v, ref))
    end
  end)
  it("var and std (unbiased by default)", function()
    spec.near(x:var():item(), 3.5)
    spec.near(x:var(nil, false, 0):item(), 35 / 12, 1e-6)
    spec.near(x:std(2)[1], 1)
  end)
  it("max / min with indices, argmax", function()
    local v, i = x:max(2)
    spec.eq(v[2], 6); spec.eq(i[2], 2); spec.eq(i:dtype(), "int64")
    spec.eq(x:min():item(), 1)
    spec.eq(x:argmax():item(), 5)
    spec.eq(x:argmin(1)[3], 0)
  end)
  it("logsumexp is stable, softmax sums to one", function()
    local big = T.tensor({1000, 1000})
    spec.near(big:logsumexp():item(), 1000 + math.log(2), 1e-6)
    local s = T.randn(4, 7):softmax(2):sum(2)
    spec.tensor_near(s, T.ones(4), 1e-6)
    local l = T.randn(3, 5)
    spec.tensor_near(l:log_softmax(1):exp(), l:softmax(1), 1e-6)
  end)
  it("softmax and log_softmax on rows of vectors and a tail equal exp(x - m) / sum, -inf keys 0", function()
    local g = T.Generator(5)
    for _, L in ipairs({16, 37, 300}) do
      local x = T.randn(5, L, g) * 4
      x[2][3] = -math.huge
      x[4][L] = -math.huge
      local y, ly = x:softmax(2), x:log_softmax(2)
      local worst, lworst = 0, 0
      for r = 1, 5 do
        local m, s = -math.huge, 0
        for i = 1, L do m = math.max(m, x[r][i]) end
        for i = 1, L do s = s + math.exp(x[r][i] - m) end
        for i = 1, L do
          local want = math.exp(x[r][i] - m) / s
          worst = math.max(worst, math.abs(y[r][i] - want) / (want + 1e-30))
          if x[r][i] > -math.huge then
            lworst = math.max(lworst, math.abs(ly[r][i] - (x[r][i] - m - math.log(s))))
          else
            spec.eq(y[r][i], 0)
          end
        end
      end
      spec.truthy(worst < 1e-5 and lworst < 1e-5, string.format("L %d: softmax rel error %.2e, log_softmax %.2e", L, worst, lworst))
      -- the gradients: softmax's y (g - <g, y>), log_softmax's g - e^y sum g
      local xg = T.randn(3, L, g):requires_grad_(true)
      local w = T.randn(3, L, g)
      local p = xg:softmax(2)
      local loss = (p * w):sum()
      loss:backward()
      local want = p:detach() * (w - (w * p:detach()):sum(2, true))
      spec.tensor_near(xg.grad, want, 1e-5)
      local xl = xg:detach():requires_grad_(true)
      local lp = xl:log_softmax(2)
      local lloss = (lp * w):sum()
      lloss:backward()
      spec.tensor_near(xl.grad, w - lp:detach():exp() * w:sum(2, true), 1e-5)
    end
  end)
  it("norm", function()
    spec.near(T.tensor({3, 4}):norm():item(), 5)
    spec.near(T.tensor({3, -4}):norm(1):item(), 7)
  end)
end)

describe("matmul", function()
  it("2-D, 1-D and batched with broadcasting", function()
    local a, b = T.randn(3, 4), T.randn(4, 2)
    local c = a:matmul(b)
    local s = 0
    for k = 1, 4 do s = s + a:get(2, k) * b:get(k, 1) end
    spec.near(c:get(2, 1), s, 1e-5)
    spec.eq(T.randn(4):matmul(T.randn(4)):dim(), 0)
    spec.eq(table.concat(T.randn(5, 1, 3, 4):matmul(T.randn(2, 4, 6)):size(), "x"), "5x2x3x6")
    local bt = T.randn(2, 3, 4)
    spec.tensor_near(bt:matmul(b)[2], bt[2]:matmul(b), 1e-5)
  end)
  it("transposed operands go to BLAS without copies and stay right", function()
    local a, b = T.randn(4, 3), T.randn(5, 4)
    spec.tensor_near(a:t():matmul(b:t()), a:t():contiguous():matmul(b:t():contiguous()), 1e-5)
  end)
  it("names both shapes on a mismatch", function()
    spec.raises(function() T.randn(3, 4):matmul(T.randn(5, 6)) end, "matmul", "3x4", "5x6")
  end)
end)

describe("autograd", function()
  it("accumulates gradients until zeroed", function()
    local x = T.tensor({1, 2, 3}, {requires_grad = true})
    ;(x * x):sum():backward()
    ;(x * x):sum():backward()
    spec.tensor_near(x.grad, {4, 8, 12})
    x:zero_grad()
    spec.eq(x.grad, nil)
  end)
  it("a gradient shared by both inputs of an add stays right when one of them gets another", function()
    -- the add hands one gradient tensor to u and v; u's later contributions must not reach v's
    -- (the holders share it until a second one comes, then add out of place), in either order,
    -- and through a linear layer whose weight gradient GEMM adds into a holder it owns alone
    local a = T.tensor({1, 2, 3}, {requires_grad = true})
    local b = T.tensor({4, 5, 6}, {requires_grad = true})
    for order = 1, 3 do
      a:zero_grad(); b:zero_grad()
      local u, v = a * 1, b * 1
      local z
      if order == 1 then z = (u + v):sum() + (u * 4):sum()
      elseif order == 2 then z = (u * 4):sum() + (v + u):sum()
      else z = ((u + v) * 2):sum() + (u * u):sum() + (v * 3):sum() end
      z:backward()
      if order < 3 then
        spec.tensor_near(a.grad, {5, 5, 5}, 1e-6, "order " .. order)
        spec.tensor_near(b.grad, {1, 1, 1}, 1e-6, "order " .. order)
      else
        spec.tensor_near(a.grad, {4, 6, 8}, 1e-6)
        spec.tensor_near(b.grad, {5, 5, 5}, 1e-6)
      end
    end
    -- the adds share one gradient between w, L and v; L's linear backward then makes w's weight
    -- gradient, which must not be added into that shared buffer (v's gradient too)
    local w0 = T.tensor({{1, 2}, {3, 4}}, {requires_grad = true})
    local x, c = T.tensor({{1, 1}, {2, -1}}), T.tensor({{1, 2}, {3, 4}})
    for order = 1, 2 do
      w0:zero_grad()
      local w, v = w0 * 1, w0 * 3
      local wl = w + T.linear(x, w)
      ;((order == 1 and wl + v or v + wl) * c):sum():backward()
      spec.tensor_near(w0.grad, {{4 + 7, 8 - 2}, {12 + 10, 16 - 2}}, 1e-6, "order " .. order) -- 4c + c^T x
    end
  end)
  it("takes a gradient argument for non-scalars", function()
    local x = T.ones(2, 2):requires_grad_()
    local y = x * 3
    y:backward(T.full({2, 2}, 2))
    spec.tensor_near(x.grad, T.full({2, 2}, 6))
    local z = x * 2
    spec.raises(function() z:backward() end, "non-scalar")
  end)
  it("frees the graph after backward unless retained", function()
    local x = T.ones(3):requires_grad_()
    local y = (x:exp()):sum()
    y:backward(nil, true)
    y:backward()
    spec.near(x.grad[1], 2 * math.exp(1), 1e-5)
    spec.raises(function() y:backward() end, "already freed")
  end)
  it("no_grad and detach build no graph", function()
    local x = T.ones(2):requires_grad_()
    local y = T.no_grad(function() return x * 2 end)
    spec.eq(y.requires_grad, false)
    spec.eq((x:detach() * 2).requires_grad, false)
    spec.eq(T.is_grad_enabled(), true)
    pcall(T.no_grad, function() error("inside") end)
    spec.eq(T.is_grad_enabled(), true, "mode restored after an error")
  end)
  it("refuses in-place changes of tensors that need grad", function()
    local x = T.ones(2):requires_grad_()
    spec.raises(function() x:fill_(0) end, "fill_", "requires grad")
    T.no_grad(function() x:fill_(2) end)
    spec.eq(x[1], 2)
  end)
  it("reports grad_fn and leaves", function()
    local x = T.ones(2):requires_grad_()
    local y = x:exp()
    spec.eq(y.grad_fn, "exp"); spec.eq(y.is_leaf, false); spec.eq(x.is_leaf, true)
  end)
  it("a deep chain does not overflow the C stack", function()
    local x = T.ones(1):requires_grad_()
    local y = x
    for _ = 1, 20000 do y = y + 1 end
    y:sum():backward()
    spec.eq(x.grad[1], 1)
  end)
  it("dropping a long graph without backward does not overflow the C stack", function()
    local x = T.ones(1):requires_grad_()
    local y = x
    for _ = 1, 300000 do y = y + 1 end
    spec.eq(y[1], 300001)
    y = nil
    collectgarbage()
  end)
end)

describe("printing", function()
  it("prints small tensors whole with a footer", function()
    local s = tostring(T.tensor({{1.5, 2}, {3, 4}}))
    spec.truthy(s:find("1.5000", 1, true), s)
    spec.truthy(s:find("[float32 tensor of size 2x2]", 1, true), s)
  end)
  it("summarises large tensors", function()
    local s = tostring(T.zeros(1000, 1000))
    spec.truthy(#s < 2000, "summary too long: " .. #s)
    spec.truthy(s:find("...", 1, true))
    spec.truthy(s:find("1000x1000", 1, true))
  end)
  it("uses a common scale or scientific notation when needed", function()
    spec.truthy(tostring(T.tensor({1234.5, 2000.25})):find("1000 *", 1, true))
    spec.truthy(tostring(T.tensor({1e-9, 1e3})):find("e-09", 1, true))
  end)
  local function lines_of(s)
    local n, widest = 0, 0
    for line in (s .. "\n"):gmatch("(.-)\n") do n = n + 1; widest = math.max(widest, #line) end
    return n, widest
  end
  it("wraps wide rows to the print width in blocks of columns, as Torch7", function()
    local s = tostring(T.randn(2, 500, T.Generator(1)))
    local _, widest = lines_of(s)
    spec.truthy(widest <= 80, "a line of " .. widest .. " characters")
    spec.truthy(s:find("Columns 1 to ", 1, true) and s:find("to 500\n", 1, true), s:sub(1, 300))
    local old = T.set_printoptions{linewidth = 40}
    local ok, err = pcall(function()
      local s2 = tostring(T.randn(3, 2, 9, T.Generator(2)))
      local _, w2 = lines_of(s2)
      spec.truthy(w2 <= 40, "a line of " .. w2 .. " characters at linewidth 40")
      spec.truthy(s2:find("Columns 1 to ", 1, true), s2)
    end)
    T.set_printoptions(old)
    assert(ok, err)
    spec.eq(T.set_printoptions{}.linewidth, 80)
    spec.raises(function() T.set_printoptions{linewidth = 3} end, "set_printoptions", "linewidth")
  end)
  it("a size prints as {8, 32, 32, 16} and stays a list", function()
    local x = T.zeros(8, 32, 32, 16)
    spec.eq(tostring(x:size()), "{8, 32, 32, 16}")
    spec.eq(tostring(x.shape), "{8, 32, 32, 16}")
    spec.eq(table.concat(x:size(), "x"), "8x32x32x16")
    spec.eq(#x:size(), 4); spec.eq(x:size()[2], 32)
    spec.eq(tostring(T.tensor(3):size()), "{}")
  end)
  it("summarises long vectors", function()
    local s = tostring(T.arange(1, 1000))
    local n = lines_of(s)
    spec.truthy(n <= 10, n .. " lines")
    spec.truthy(s:find("999", 1, true) and s:find("...", 1, true) and s:find("size 999]", 1, true), s)
    local short = tostring(T.arange(1, 11))
    spec.eq((lines_of(short)), 11, "a short vector prints whole, one value a line")
  end)
  it("shows requires_grad and grad_fn", function()
    local x = T.ones(2):requires_grad_()
    spec.truthy(tostring(x):find("requires_grad", 1, true))
    spec.truthy(tostring(x * 2):find("grad_fn mul", 1, true))
  end)
end)

describe("errors", function()
  it("index out of range names the index and the shape", function()
    local x = T.zeros(2, 3)
    spec.raises(function() return x:get(3, 1) end, "get", "index 3", "2x3")
    spec.raises(function() return x[5] end, "select", "out of range")
    spec.raises(function() return x:select(3, 1) end, "select", "dimension 3")
    spec.raises(function() return x:narrow(2, 3, 2) end, "narrow")
  end)
  it("wrong types are argument errors", function()
    spec.raises(function() return T.zeros(2):add("x") end, "tensor")
    spec.raises(function() return T.zeros(2):matmul(3) end, "tensor")
    spec.raises(function() return T.zeros(2, 2, "complex") end, "dtype")
    spec.raises(function() return T.zeros(-1) end, "negative")
  end)
  it("the process survives an error and memory stays bounded", function()
    for _ = 1, 100 do pcall(function() return T.randn(100, 100):matmul(T.randn(3, 3)) end) end
    collectgarbage()
    spec.truthy(T.memory().live_bytes < 64 * 1024 * 1024)
  end)
end)

describe("memory", function()
  it("a loop of 256x256 tensors stays small (the collector sees tensor memory)", function()
    local function rss_mb()
      local fh = assert(io.open("/proc/self/statm")); local s = fh:read("l"); fh:close()
      return tonumber(s:match("%d+%s+(%d+)")) * 4096 / 2 ^ 20
    end
    collectgarbage()
    local before = rss_mb()
    for _ = 1, 30000 do local x = T.zeros(256, 256) end -- 7.5 GB in all
    for _ = 1, 500 do local x = T.randn(256, 256) end
    local grown = rss_mb() - before
    print(string.format("#   resident growth after 30500 x 256 KB tensors: %.0f MB", grown))
    spec.truthy(grown < 100, "resident size grew by " .. grown .. " MB")
  end)
  it("garbage stays within an eighth of the live tensors (plus 16 MB) however much is held", function()
    collectgarbage()
    local held = {}
    for i = 1, 64 do held[i] = T.zeros(1024, 1024) end -- 256 MB live
    local base = T.memory().live_bytes
    T.reset_peak_memory()
    for _ = 1, 400 do local x = T.zeros(1024, 1024) end -- 1.6 GB of throw-away tensors
    local extra = (T.memory().peak_bytes - base) / 2 ^ 20
    print(string.format("#   throw-away tensors beside 256 MB held: peak %.0f MB above it", extra))
    spec.truthy(extra <= 256 / 8 + 16 + 4 + 1, "garbage reached " .. extra .. " MB")
    spec.truthy(extra >= 4, "the loop's tensors were counted")
  end)
  local MB4 = 1024 * 1024 -- floats: 4 MB per tensor
  it("the graph keeps what backward needs, not every intermediate result", function()
    collectgarbage()
    local x = T.randn(MB4):requires_grad_(true)
    local live0 = T.memory().live_bytes
    local y = x
    for _ = 1, 10 do y = y + 1 end -- an add saves nothing for its backward
    collectgarbage()
    local held = (T.memory().live_bytes - live0) / (4 * MB4)
    print(string.format("#   10 adds: %.1f tensors of their size held by the graph", held))
    spec.truthy(held < 1.5, "the graph holds " .. held .. " tensors")
    y:sum():backward()
    spec.eq(x.grad:sum():item(), MB4)
  end)
  it("backward frees saved tensors as it passes them", function()
    collectgarbage()
    local x = T.randn(MB4):requires_grad_(true)
    local y = x
    for _ = 1, 10 do y = (y * 0.5):sigmoid() end -- each sigmoid saves its output
    local loss = y:sum()
    y = nil
    collectgarbage()
    local live = T.memory().live_bytes
    T.reset_peak_memory()
    loss:backward()
    local extra = (T.memory().peak_bytes - live) / (4 * MB4)
    print(string.format("#   backward through 10 saved outputs: peak %.1f tensors above the forward's", extra))
    spec.truthy(extra < 4, "backward's peak is " .. extra .. " tensors above the graph's")
    collectgarbage()
    spec.truthy(T.memory().live_bytes - live < -8 * 4 * MB4, "the saved outputs were not freed")
  end)
end)

describe("sizes and dimensions from Lua are checked, never wrapped", function()
  it("view and reshape refuse a shape whose element count wraps around 2^64", function()
    local x = T.randn(3, 4)
    -- 3*4*7*0x6DB6DB6DB6DB6DB7 is 12 modulo 2^64
    spec.raises(function() return x:view(3, 4, 7, 0x6DB6DB6DB6DB6DB7) end, "view:", "more than 2^40 elements")
    spec.raises(function() return x:reshape(3, 4, 7, 0x6DB6DB6DB6DB6DB7) end, "reshape:", "more than 2^40")
    spec.raises(function() return x:view(-1, 0x6DB6DB6DB6DB6DB7, 7) end, "view:")
    spec.raises(function() return T.zeros(1 << 21, 1 << 21) end, "zeros:", "2097152x2097152")
    spec.eq(x:view(2, 6):numel(), 12)
  end)
  it("split and chunk return every part, past 4,096", function()
    spec.eq(#T.zeros(5000, 1):split(1), 5000)
    spec.eq(#T.zeros(5000, 1):chunk(5000), 5000)
    local parts = T.arange(5000):split(1)
    spec.eq(parts[5000]:item(), 4999)
    local sizes = {}
    for i = 1, 4100 do sizes[i] = 1 end
    spec.eq(#T.zeros(4100):split(sizes), 4100)
  end)
  it("a dimension beyond any tensor's is refused before it is cast to a C int", function()
    local x = T.randn(3, 4)
    local big = (1 << 32) + 1 -- 1 once truncated to 32 bits
    spec.raises(function() return x:sum(big) end, "sum", "4294967297")
    spec.raises(function() return x:select(big, 1) end, "select", "4294967297")
    spec.raises(function() return x:transpose(big, 1) end, "transpose", "4294967297")
    spec.raises(function() return x:narrow(big, 1, 1) end, "narrow", "4294967297")
    spec.raises(function() return x:squeeze(big) end, "squeeze", "4294967297")
    spec.raises(function() return x:unsqueeze(big) end, "unsqueeze", "4294967297")
    spec.raises(function() return T.cat({x, x}, big) end, "cat", "4294967297")
    spec.raises(function() return x:softmax(big) end, "softmax", "4294967297")
    spec.raises(function() return x:min(big) end, "min", "4294967297")
    spec.raises(function() return x:argmax(big) end, "argmax", "4294967297")
    spec.raises(function() return x:permute(2, big) end, "permute", "4294967297")
    spec.raises(function() return x:permute(2, 0) end, "permute: entry 2 is 0")
  end)
  it("expand refuses negative sizes other than -1, and overflowing ones", function()
    spec.raises(function() return T.randn(1, 4):expand(-5, 4) end, "expand", "-5")
    spec.raises(function() return T.randn(1):expand(-5) end, "expand", "-5")
    spec.raises(function() return T.randn(1, 1):expand(1 << 30, 1 << 30) end, "expand", "more than 2^40")
    spec.eq(T.randn(1, 4):expand(3, -1):size(1), 3)
  end)
  it("narrow and slice with huge starts, lengths and steps are refused or exact", function()
    local x = T.arange(10)
    spec.raises(function() return x:narrow(1, 5, math.maxinteger) end, "narrow", "out of range")
    spec.eq(x:slice(1, 2, 10, math.maxinteger):numel(), 1)
    spec.eq(x:slice(1, 2, 10, math.maxinteger):item(), 1)
  end)
  it("index and split lists take integers only", function()
    local x = T.arange(20):view(5, 4)
    spec.raises(function() return x[{{1, "a"}}] end, "index: entry 1", "integers")
    spec.raises(function() return x[{{1.5, 2}}] end, "index: entry 1", "integers")
    spec.raises(function() return x[{2.5}] end, "index: entry 1 is 2.5")
    spec.raises(function() return x:split({2, "x", 3}) end, "split: size 2 is x")
    spec.raises(function() return x:split({2, 1.5, 1.5}) end, "split: size 2")
    spec.eq(x[{{2, 3}}]:size(1), 2)
  end)
end)

describe("int64 values round-trip exactly", function()
  it("integers past 2^53 and at the ends of int64's range", function()
    spec.eq(T.tensor({9007199254740993}, "int64"):item(), 9007199254740993)
    local ends = T.tensor({math.maxinteger, math.mininteger}, "int64")
    spec.eq(ends[1], math.maxinteger); spec.eq(ends[2], math.mininteger)
    spec.eq(ends:totable()[1], math.maxinteger)
    spec.eq(T.tensor(math.maxinteger, "int64"):item(), math.maxinteger)
    spec.eq(T.full({2}, math.maxinteger - 1, "int64")[2], math.maxinteger - 1)
    local x = T.zeros(3, "int64")
    x:set(2, 9007199254740993); spec.eq(x:get(2), 9007199254740993)
    x[3] = math.maxinteger; spec.eq(x[3], math.maxinteger)
    x:fill_(9007199254740995); spec.eq(x[1], 9007199254740995)
  end)
  it("a float outside int64's range is refused, not wrapped", function()
    spec.raises(function() return T.tensor({1e300}, "int64") end, "tensor: entry 1", "int64")
    spec.raises(function() return T.tensor(0/0, "int64") end, "tensor:", "int64")
    spec.raises(function() return T.zeros(2, "int64"):fill_(1e19) end, "fill_:", "int64")
    spec.eq(T.tensor({2.7}, "int64")[1], 2)
  end)
end)

describe("generators and threads refuse states they cannot run in", function()
  it("an all-zero generator state is refused (randn would loop for ever)", function()
    local g = T.Generator(1)
    spec.raises(function() g:set_state(T.zeros(7, "int64")) end, "set_state", "all zeros")
    local st = g:get_state(); st[6] = 5
    spec.raises(function() g:set_state(st) end, "set_state", "value 6")
    spec.eq(T.randn(1000, g):abs():sum():item() > 0, true) -- the generator kept its good state
  end)
  it("set_num_threads refuses counts libgomp cannot start", function()
    local n = T.get_num_threads()
    spec.raises(function() T.set_num_threads(100000) end, "set_num_threads", "100000")
    spec.raises(function() T.set_num_threads(0x7FFFFFFF) end, "set_num_threads", "2147483647")
    spec.raises(function() T.set_num_threads(0) end, "set_num_threads")
    spec.eq(T.get_num_threads(), n)
  end)
  it("TDRL_NUM_THREADS=100000 is reported and replaced at start-up", function()
    local exe = arg[-1] or "./tdrl"
    local p = io.popen("TDRL_NUM_THREADS=100000 " .. exe ..
      " -e 'local T = require \"tdrl\"; print(T.get_num_threads(), T.randn(300, 300):sum():item() == T.randn(1):item())' 2>&1")
    local out = p:read("a"); local ok = p:close()
    spec.truthy(ok, "the process died: " .. out)
    spec.truthy(out:find("TDRL_NUM_THREADS=100000", 1, true), out)
  end)
end)

describe("version counters: a saved tensor changed in place stops backward", function()
  local msg = "one of the variables needed for gradient computation has been modified by an inplace operation"
  it("fill_ under no_grad of a tensor a pending backward needs", function()
    local x = T.tensor({0.5, 1, 2}, {requires_grad = true})
    local y = x:exp()
    local z = (y * y):sum()
    T.no_grad(function() y:fill_(0) end)
    spec.raises(function() z:backward() end, msg, "fill_")
    spec.eq(x.grad, nil) -- nothing half-made
  end)
  it("every in-place writer is counted, through views and detached aliases", function()
    local writers = {
      {"add_", function(t) t:add_(1) end}, {"mul_", function(t) t:mul_(2) end},
      {"copy_", function(t) t:copy_(T.ones(3)) end}, {"set", function(t) t:set(1, 5) end},
      {"normal_", function(t) t:normal_() end}, {"fill_", function(t) t[{{1, 2}}] = 3 end},
    }
    for _, w in ipairs(writers) do
      local x = T.tensor({0.5, 1, 2}, {requires_grad = true})
      local y = x:sigmoid()
      local z = y:sum()
      T.no_grad(function() w[2](y:detach()) end)
      spec.raises(function() z:backward() end, msg, w[1])
    end
  end)
  it("an optimiser step bumps its parameters' versions", function()
    local w = T.tensor({1, 2}, {requires_grad = true})
    local loss = (w * w):sum()
    loss:backward(nil, true) -- the graph kept
    local optim = require 'tdrl.optim'
    local opt = optim.SGD({w}, {lr = 0.1})
    opt:step()
    spec.raises(function() loss:backward() end, msg, "sgd")
  end)
  it("writes before the save and to unsaved tensors are fine", function()
    local x = T.tensor({1, 2, 3}, {requires_grad = true})
    local a = T.ones(3)
    a:mul_(2)
    local z = (x * a):sum()
    local unrelated = T.zeros(3); unrelated:fill_(1)
    z:backward()
    spec.tensor_near(x.grad, {2, 2, 2})
  end)
end)

describe("dtype misuse that used to pass silently (issue 22)", function()
  it("an int64 gradient is refused", function()
    local x = T.zeros(3, {requires_grad = true})
    spec.raises(function() x.grad = T.zeros(3, "int64") end, "grad", "int64")
    x.grad = T.ones(3)
    spec.eq(x.grad:sum():item(), 3)
  end)
  it("normal_ and uniform_ on int64 are refused", function()
    spec.raises(function() T.zeros(3, "int64"):normal_() end, "normal_", "int64")
    spec.raises(function() T.zeros(3, "int64"):uniform_() end, "uniform_", "int64")
  end)
end)

describe("conversions at the ends of int64 and double (issue 22)", function()
  it("an index of math.maxinteger is refused, read as an integer", function()
    local x = T.arange(5)
    spec.raises(function() return x:index_select(1, T.tensor({math.maxinteger}, "int64")) end, "9223372036854775807")
    spec.raises(function() return x:gather(1, T.tensor({math.mininteger}, "int64")) end, "out of range")
  end)
  it("arange past 2^40 elements and float -> int64 of huge values", function()
    spec.raises(function() return T.arange(1e300) end, "arange", "at most 2^40")
    local big = T.tensor({1e30, -1e30, 0/0}):long()
    spec.eq(big[1], math.maxinteger); spec.eq(big[2], math.mininteger); spec.eq(big[3], 0)
    local w = T.where(T.tensor({1, 0}), T.tensor({math.maxinteger, 0}, "int64"), T.tensor({0, math.mininteger}, "int64"))
    spec.eq(w[1], math.maxinteger); spec.eq(w[2], math.mininteger)
  end)
end)

describe("errors after a number was made a tensor leak nothing (issue 22)", function()
  it("x.add(1, {}), T.where(c, 1, {}), x:add_(1, 'y') hold no bytes afterwards", function()
    local x = T.zeros(2)
    collectgarbage(); collectgarbage()
    local before = T.memory().live_bytes
    for _ = 1, 100 do
      spec.truthy(not pcall(x.add, 1, {}))
      spec.truthy(not pcall(T.where, x, 1, {}))
      spec.truthy(not pcall(x.add_, x, 1, "y"))
    end
    collectgarbage(); collectgarbage()
    spec.eq(T.memory().live_bytes - before, 0, "bytes held after 300 failed calls")
  end)
end)
