-- Attention profiles and Jensen-Shannon divergences.
local T = require 'tdrl'
local A = require 'tdrl.attention'

-- two tasks: one readable only from the first point, one only from the last
local function toy(n, seed)
  local g = T.Generator(seed)
  local a, b = T.randint(0, 2, {n}, g), T.randint(0, 2, {n}, g)
  local codes = T.randn(n, 5, 2, g) * 0.3
  codes[{{}, 1, 1}] = codes[{{}, 1, 1}] + a:float() * 3
  codes[{{}, 5, 2}] = codes[{{}, 5, 2}] + b:float() * 3
  return {codes = codes, times = T.linspace(0, 1, 5), labels = {first = a, last = b}, tasks = {"first", "last"},
    classes = {first = 3, last = 3}}
end

describe("Jensen-Shannon divergence", function()
  it("is 0 for identical profiles and 1 for disjoint ones (base 2)", function()
    spec.near(A.jsd({0.2, 0.3, 0.5}, {0.2, 0.3, 0.5}), 0, 1e-12)
    spec.near(A.jsd({0.5, 0.5, 0, 0}, {0, 0, 0.5, 0.5}), 1, 1e-12)
    spec.near(A.jsd(T.tensor({1, 0}), T.tensor({0.5, 0.5})), 0.311278124, 1e-6)
    spec.raises(function() A.jsd({1}, {0.5, 0.5}) end, "1 and 2")
  end)
end)

describe("attention profiles", function()
  it("put each task's attention where its information is, and their JSD is large", function()
    local sets = {train = toy(800, 1), val = toy(200, 2), test = toy(200, 3)}
    local prof = A.profiles(sets, {seeds = 1, epochs = 6, lrs = {1e-3}, batch = 64})
    local f, l = prof.tasks.first.profile, prof.tasks.last.profile
    local s = 0
    for _, v in ipairs(f) do s = s + v end
    spec.near(s, 1, 1e-5)
    print(string.format("#   first: %s", table.concat((function() local t = {} for i, v in ipairs(f) do t[i] = string.format("%.2f", v) end return t end)(), " ")))
    print(string.format("#   last:  %s", table.concat((function() local t = {} for i, v in ipairs(l) do t[i] = string.format("%.2f", v) end return t end)(), " ")))
    spec.truthy(f[1] > f[5], "task 'first' attends to the first point more than to the last")
    spec.truthy(l[5] > l[1], "task 'last' attends to the last point more than to the first")
    local J, names = A.jsd_matrix(prof)
    spec.eq(names[1], "first")
    spec.near(J:get(1, 1), 0, 1e-9)
    spec.near(J:get(1, 2), J:get(2, 1), 1e-9)
    spec.truthy(J:get(1, 2) > 0.1, "JSD between the two tasks " .. J:get(1, 2))
  end)
  it("the t = 0.5 ablation hides or isolates the middle token", function()
    local heads = require 'tdrl.heads'
    local te = toy(100, 4)
    local h = heads.new("transformer", 2, 3, {generator = T.Generator(0)})
    local r = A.ablation(h, te, "first")
    spec.eq(r.mid_time, 0.5)
    spec.truthy(r.all >= 0 and r.all <= 1 and r.only_mid >= 0 and r.without_mid <= 1)
  end)
end)
