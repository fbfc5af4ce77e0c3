-- Probe curves: decodability against training steps, resumable, and P.probe's choice of the best
-- probe on validation.
local T = require 'tdrl'
local P = require 'tdrl.paper'
local fs = require 'tdrl.util.fs'

local exe = arg[-1] or "./tdrl"
local dir = os.tmpname()
os.remove(dir)

local function run(args)
  local p = io.popen(string.format("%s examples/probe_curve.lua %s 2>&1", exe, args))
  local out = p:read("a")
  local ok = p:close()
  if not ok then error("probe_curve failed:\n" .. out:sub(-3000)) end
  return out
end

local SMALL = "--n_train=300 --n_val=100 --n_test=100 --granularity=2 --probe_epochs=3 --probe_patience=2 "
  .. "--eval_every=10 --ckpt_every=10 --batch=8 --seeds=0 --steps=10,20 --out=" .. dir

describe("probe curve", function()
  it("writes the curve per step and task, with every probe", function()
    run(SMALL)
    local curve = fs.read(dir .. "/curve.csv")
    spec.truthy(curve, "curve.csv written")
    local rows = 0
    for line in curve:gmatch("[^\n]+") do
      if line:match("^%d") then
        rows = rows + 1
        local steps, task, mean, mn, mx = line:match("^(%d+),(%w+),([%d.]+),([%d.]+),([%d.]+)")
        spec.truthy(steps == "10" or steps == "20", line)
        spec.truthy(tonumber(mn) <= tonumber(mean) and tonumber(mean) <= tonumber(mx), line)
      end
    end
    spec.eq(rows, 2 * 4, "two steps x four tasks")
    local all = fs.read(dir .. "/probe_curve.csv")
    local n = 0
    for _ in all:gmatch("\n%d+,0,%w+,mlp,") do n = n + 1 end
    spec.eq(n, 2 * 4 * 3, "an MLP per step, task and time point")
    spec.truthy(all:find(",gru,", 1, true), "the GRU probe")
    spec.truthy(fs.exists(dir .. "/probe_curve.png"), "the figure")
  end)
  it("a second run reads the finished steps back", function()
    local out = run(SMALL)
    spec.truthy(not out:find("codes vdrl", 1, true), "no codes extracted again")
    spec.truthy(not out:find("to step 20", 1, true), "no training again")
  end)
  it("probes one trained run folder", function()
    local out = run("--checkpoint=" .. dir .. "/seed0/model " .. SMALL)
    spec.truthy(out:find("step 20 shape", 1, true), out:sub(-500))
    spec.truthy(fs.exists(dir .. "/seed0/model/probe-step20/probe.json"), "probe.json written")
    os.execute("rm -rf '" .. dir .. "'")
  end)
  it("chooses a task's best probe on validation and reports its test accuracy", function()
    local g = T.Generator(1)
    -- the label is in the code at the second point only
    local function split(n)
      local y = T.randint(0, 3, {n}, g)
      local codes = T.randn(n, 2, 2, g)
      codes:select(2, 2):select(2, 1):copy_(y:float() * 3)
      return {codes = codes, times = T.tensor({0.25, 0.75}), labels = {task = y}, tasks = {"task"}, classes = {task = 3}}
    end
    local r = P.probe({train = split(300), val = split(100), test = split(100)},
      {heads = {"mlp"}, epochs = 30, patience = 5})
    spec.eq(r.best.task.point, 2)
    spec.near(r.best.task.t, 0.75, 1e-6)
    spec.truthy(r.best.task.test > 0.9, "test " .. r.best.task.test)
    spec.eq(#r.probes, 2)
  end)
end)
