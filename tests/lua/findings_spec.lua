-- The findings' verdicts from made-up results whose answer is known.
local findings = require 'tdrl.paper.findings'

-- a heads table: an MLP at two points and a GRU, for one task, with per-seed test accuracies
local function heads(mlp1, mlp2, gru)
  local function row(head, point, test, val)
    local s, mn, mx = 0, math.huge, -math.huge
    for _, v in ipairs(test) do s = s + v; mn = math.min(mn, v); mx = math.max(mx, v) end
    return {head = head, point = point, t = point and (point - 1) or nil, task = "shape", val = val,
      test = test, test_mean = s / #test, test_min = mn, test_max = mx}
  end
  return {tasks = {"shape"}, times = {0, 1}, rows = {row("mlp", 1, mlp1, 0.5), row("mlp", 2, mlp2, 0.6),
    row("gru", nil, gru, 0.7)}}
end

describe("findings", function()
  it("C1 holds when every seed of the trajectory head beats the best point", function()
    local c = findings.c1(heads({0.5, 0.5, 0.5}, {0.60, 0.62, 0.61}, {0.70, 0.71, 0.69}))
    spec.eq(c.verdict, "holds")
    spec.near(c.per_task[1].diff_mean, 0.09, 1e-9)
  end)
  it("C1 with overlapping seeds reads inconclusive", function()
    local c = findings.c1(heads({0.5, 0.5, 0.5}, {0.60, 0.70, 0.61}, {0.70, 0.65, 0.69}))
    spec.eq(c.verdict, "inconclusive")
  end)
  it("C1 does not hold when every seed of the best point wins", function()
    spec.eq(findings.c1(heads({0.5, 0.5}, {0.70, 0.72}, {0.60, 0.61})).verdict, "does not hold")
  end)
  it("the best point is chosen on validation, not on test", function()
    -- point 1 has the better test accuracy but the worse validation accuracy
    local c = findings.c1(heads({0.9, 0.9}, {0.60, 0.62}, {0.70, 0.71}))
    spec.eq(c.rows[1][2], "1.00")
    spec.eq(c.verdict, "holds")
  end)
  it("D0: every task at 3x chance holds; one task below it on every seed decides against", function()
    -- the GRU (0.69-0.71) is the better head; chance 0.2 asks for 0.6
    local res = {heads = heads({0.5, 0.5, 0.5}, {0.60, 0.62, 0.61}, {0.70, 0.71, 0.69}), chance = {shape = 0.2}}
    local d = findings.decodable(res)
    spec.eq(d.verdict, "holds")
    spec.near(d.rows[1][5], 0.70 / 0.2, 1e-9)
    res.chance.shape = 0.235 -- 3x = 0.705: two seeds reach it, one does not
    spec.eq(findings.decodable(res).verdict, "inconclusive")
    res.chance.shape = 0.25
    d = findings.decodable(res)
    spec.eq(d.verdict, "does not hold")
    spec.eq(d.low[1], "shape")
    spec.eq(findings.verdicts(res, {})[1].id, "D0")
    spec.eq(findings.decodable({heads = res.heads}), nil, "no chance, no verdict")
  end)
  it("C0: the trained model's chosen head against the untrained model's, seed by seed", function()
    local trained = heads({0.5, 0.5, 0.5}, {0.60, 0.62, 0.61}, {0.70, 0.71, 0.69})
    local res = {heads = trained, control = heads({0.4, 0.4, 0.4}, {0.50, 0.52, 0.51}, {0.60, 0.61, 0.59})}
    local c = findings.c0(res)
    spec.eq(c.verdict, "holds")
    spec.near(c.per_task[1].diff_mean, 0.10, 1e-9)
    spec.eq(findings.verdicts(res, {})[1].id, "C0")
    -- an untrained encoder whose GRU reads more: training took information out
    res.control = heads({0.4, 0.4, 0.4}, {0.50, 0.52, 0.51}, {0.80, 0.81, 0.79})
    spec.eq(findings.c0(res).verdict, "does not hold")
    spec.eq(findings.c0({heads = trained}), nil, "no control, no verdict")
  end)
  it("C2 holds when near exceeds far and the first lag the last, for every seed", function()
    local nmi = {near_minus_far = {0.2, 0.1}, by_lag = {{0.8, 0.5, 0.3}, {0.7, 0.6, 0.4}}, near_diagonal = 0.75,
      far_from_diagonal = 0.5}
    spec.eq(findings.c2(nmi).verdict, "holds")
    nmi.near_minus_far = {0.2, -0.1}
    spec.eq(findings.c2(nmi).verdict, "inconclusive")
  end)
  it("C3 compares the tasks' profiles with the spread between seeds", function()
    local att = {tasks = {"background", "location"}, spread = {
      between = {{{0, 0}, {0.30, 0.25}}, {{0.30, 0.25}, {0, 0}}},
      within = {background = {0.02}, location = {0.05}},
      centre = {background = {0.4, 0.45}, location = {0.7, 0.8}}}}
    local c = findings.c3(att)
    spec.eq(c.verdict, "holds")
    spec.eq(c.late.verdict, "holds")
    att.spread.within.location = {0.27}
    spec.eq(findings.c3(att).verdict, "inconclusive")
  end)
  it("C5 needs a gain above the margin on every seed", function()
    local gr = {head = "gru", rows = {
      {task = "shape", g = 1, test = {0.30, 0.32}, test_mean = 0.31},
      {task = "shape", g = 5, test = {0.40, 0.42}, test_mean = 0.41},
      {task = "shape", g = 10, test = {0.41, 0.42}, test_mean = 0.415}}}
    local g = findings.granularity(gr, 0.05)
    spec.eq(g.helps, "holds")
    spec.eq(g.saturating, 1)
    spec.eq(findings.granularity(gr, 0.15).helps, "does not hold")
  end)
end)
