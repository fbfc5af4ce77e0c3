-- tdrl.profile: op rows for the forward calls and the backward nodes, exclusive times that add
-- up to the wall time, functions restored afterwards (also after an error).
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local profile = require 'tdrl.profile'

local function row(report, name)
  for _, r in ipairs(report.rows) do if r.name == name then return r end end
end

describe("profile", function()
  it("counts each forward call and each backward node of a small network", function()
    local g = T.Generator(0)
    local conv = nn.Conv2d(3, 8, 3, 1, 1, {generator = g})
    local x = T.randn(4, 3, 16, 16, g)
    local report = profile.run(function()
      for _ = 1, 3 do
        local y = conv(x):silu()
        local loss = (y * y):mean()
        loss:backward()
      end
    end)
    spec.eq(row(report, "conv2d").calls, 3)
    spec.eq(row(report, "silu").calls, 3)
    spec.eq(row(report, "mul").calls, 3, "x * y through the metamethod")
    spec.eq(row(report, "conv2d (backward)").calls, 3)
    spec.eq(row(report, "silu (backward)").calls, 3)
    spec.truthy(row(report, "backward (graph)"), "the walk beside the nodes")
    local sum = 0
    for _, r in ipairs(report.rows) do
      spec.truthy(r.seconds >= 0, r.name .. " has negative time " .. r.seconds)
      sum = sum + r.seconds
    end
    spec.near(sum, report.wall, 1e-3 * report.wall + 1e-4, "rows add up to the wall time")
    local text = report:format{top = 5}
    spec.truthy(text:find("conv2d") and text:find("wall"), text)
  end)
  it("times a call exclusive of the wrapped calls inside it", function()
    local a = T.randn(400, 400)
    local report = profile.run(function()
      -- T.no_grad is not wrapped; the matmul inside it is, once
      T.no_grad(function() local c = a:matmul(a) end)
    end)
    spec.eq(row(report, "matmul").calls, 1)
    spec.eq(row(report, "no_grad"), nil, "control functions are not rows")
  end)
  it("restores the functions, also when the work fails", function()
    local F = nn.F
    local function holds_kernel(f) -- F.conv2d's closure keeps T.conv2d as an upvalue
      for i = 1, 20 do
        local name, v = debug.getupvalue(f, i)
        if not name then return false end
        if v == T.conv2d then return true end
      end
    end
    spec.truthy(holds_kernel(F.conv2d), "F.conv2d's upvalue before")
    local conv2d, exp, add = T.conv2d, T.Tensor.exp, getmetatable(T.zeros(1)).__add
    spec.raises(function() profile.run(function() T.zeros(2):matmul(T.zeros(3)) end) end, "matmul")
    spec.eq(profile.running(), false)
    spec.eq(T.conv2d, conv2d)
    spec.eq(T.Tensor.exp, exp)
    spec.eq(getmetatable(T.zeros(1)).__add, add)
    spec.truthy(holds_kernel(F.conv2d), "F.conv2d's upvalue restored")
    spec.eq(T.profile_backward(false), false, "backward timing off")
  end)
  it("refuses a second start and a stop without a start", function()
    profile.start()
    spec.raises(function() profile.start() end, "already running")
    profile.stop()
    spec.raises(function() profile.stop() end, "no profile is running")
  end)
end)
