-- tdrl.optim: optimisers against PyTorch training runs (tests/fixtures/torch_nn/train_*), the fused
-- C updates against their reference loops, schedules, clipping, EMA, state round trips, and a
-- training loop whose memory stays flat.
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local optim = require 'tdrl.optim'
local json = require 'tdrl.checkpoint'

local DIR = "tests/fixtures/torch_nn/"

local function shape(t) return table.concat(t:size(), "x") end
local function reldiff(a, b)
  if shape(a) ~= shape(b) then error("shapes differ: " .. shape(a) .. " vs " .. shape(b), 2) end
  return (a:detach() - b):abs():max():item() / math.max(b:abs():max():item(), 1e-3)
end

local function load_run(name)
  local t, meta = T.load(DIR .. name .. ".safetensors")
  local r = {state = {}, final = {}, data = {}}
  for k, v in pairs(t) do
    local pre, rest = k:match("^(%a+)%.(.+)$")
    r[pre][rest] = v
  end
  r.losses = json.json_decode(meta.losses)
  r.norms = json.json_decode(meta.norms)
  return r
end

local function mlp()
  return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
end
local function convnet()
  return nn.Sequential(nn.Conv2d(3, 8, 3, {padding = 1}), nn.GroupNorm(2, 8), nn.SiLU(),
    nn.Conv2d(8, 8, 3, {stride = 2, padding = 1}), nn.GroupNorm(4, 8), nn.SiLU(), nn.AvgPool2d(2), nn.Flatten(),
    nn.Linear(8 * 2 * 2, 4))
end

local runs = {
  {"train_mlp_adam", mlp, function(p) return optim.Adam(p, {lr = 1e-2}) end},
  {"train_mlp_adam_clip_wd", mlp, function(p) return optim.Adam(p, {lr = 1e-2, weight_decay = 1e-3}) end, 0.5, 4},
  {"train_mlp_adamw", mlp, function(p) return optim.AdamW(p, {lr = 1e-2, weight_decay = 0.1}) end},
  {"train_mlp_adam_amsgrad", mlp,
   function(p) return optim.Adam(p, {lr = 1e-2, betas = {0.8, 0.99}, eps = 1e-6, amsgrad = true}) end},
  {"train_mlp_adamw_amsgrad", mlp, function(p) return optim.AdamW(p, {lr = 1e-2, amsgrad = true}) end},
  {"train_mlp_sgd_wd", mlp, function(p) return optim.SGD(p, {lr = 0.05, weight_decay = 1e-2}) end},
  {"train_mlp_sgd_nesterov", mlp,
   function(p) return optim.SGD(p, {lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 1e-3}) end},
  {"train_mlp_sgd_dampening", mlp, function(p) return optim.SGD(p, {lr = 0.1, momentum = 0.5, dampening = 0.3}) end},
  {"train_conv_adam", convnet, function(p) return optim.Adam(p, {lr = 5e-3}) end},
}

describe("PyTorch parity of 10 training steps", function()
  for _, e in ipairs(runs) do
    it(e[1], function()
      local r = load_run(e[1])
      local m = e[2]()
      m:load_state_dict(r.state)
      local opt = e[3](m:parameters())
      local sched = e[5] and optim.LinearWarmup(opt, {warmup = e[5]})
      local worst_loss, worst_norm = 0, 0
      for step = 1, #r.losses do
        opt:zero_grad()
        local loss = nn.F.cross_entropy(m(r.data.x), r.data.y)
        loss:backward()
        if e[4] then
          local n = optim.clip_grad_norm_(m, e[4])
          worst_norm = math.max(worst_norm, math.abs(n - r.norms[step]) / math.abs(r.norms[step]))
        end
        opt:step()
        if sched then sched:step() end
        worst_loss = math.max(worst_loss, math.abs(loss:item() - r.losses[step]) / math.abs(r.losses[step]))
      end
      local worst_w, where = 0, ""
      local sd = m:state_dict()
      for name, t in pairs(r.final) do
        local d = reldiff(sd[name], t)
        if d > worst_w then worst_w, where = d, name end
      end
      print(string.format("#   %-26s losses %.2e, final weights %.2e (%s)%s", e[1], worst_loss, worst_w, where,
        e[4] and string.format(", clip norms %.2e", worst_norm) or ""))
      spec.truthy(worst_loss < 1e-4, "losses differ by " .. worst_loss)
      spec.truthy(worst_w < 1e-4, "weights differ by " .. worst_w)
      spec.truthy(worst_norm < 1e-4, "norms differ by " .. worst_norm)
    end)
  end
end)

-- ---- fused C updates against the reference loops ----------------------------------------------------
describe("fused updates against the reference loops", function()
  local function twin(seed, n)
    local g = T.Generator(seed)
    local a, b = {}, {}
    for i = 1, n do
      local p = T.randn({37 + i, 5}, g)
      local gr = T.randn({37 + i, 5}, g)
      a[i] = p:clone():requires_grad_(true); a[i].grad = gr:clone()
      b[i] = p:clone():requires_grad_(true); b[i].grad = gr:clone()
    end
    return a, b
  end
  local configs = {
    {"adam", optim.adam, {lr = 1e-2, betas = {0.9, 0.99}, eps = 1e-8, weight_decay = 0.01}},
    {"adam amsgrad", optim.adam, {lr = 1e-2, amsgrad = true}},
    {"adamw", optim.adamw, {lr = 1e-2, weight_decay = 0.1}},
    {"sgd nesterov", optim.sgd, {lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 1e-2}},
    {"sgd dampening", optim.sgd, {lr = 0.1, momentum = 0.5, dampening = 0.2, maximize = true}},
    {"sgd plain", optim.sgd, {lr = 0.1}},
  }
  for _, c in ipairs(configs) do
    it(c[1], function()
      local a, b = twin(3, 3)
      local sa, sb = {}, {}
      local ref = {}
      for k, v in pairs(c[3]) do ref[k] = v end
      ref._reference = true
      for _ = 1, 5 do
        c[2](a, nil, c[3], sa)
        c[2](b, nil, ref, sb)
      end
      local d = 0
      for i = 1, #a do d = math.max(d, reldiff(a[i], b[i])) end
      print(string.format("#   %-14s fused vs reference: %.2e", c[1], d))
      spec.truthy(d < 1e-6)
      if sa.step then spec.eq(sa.step[1], 5) end
    end)
  end
  it("takes explicit gradients and skips parameters without one", function()
    local p1, p2 = T.ones(3):requires_grad_(true), T.ones(2):requires_grad_(true)
    local state = {}
    local n = T._adam_step({p1, p2}, {T.ones(3)}, state, 0.1, 0.9, 0.999, 1e-8, 0, false, false, false)
    spec.eq(n, 1)
    spec.near(p1[1], 0.9, 1e-6) -- Adam's first step moves by lr
    spec.eq(p2[1], 1)
    spec.truthy(state.exp_avg[2] == nil)
  end)
  it("reports bad state and gradients", function()
    local p = T.ones(3):requires_grad_(true)
    p.grad = T.ones(3)
    spec.raises(function() optim.adam({p}, nil, {lr = 0.1}, {exp_avg = {T.zeros(4)}}) end, "exp_avg of shape 4",
      "parameter's shape 3")
    spec.raises(function() optim.sgd({p}, {T.ones(5)}, {lr = 0.1}, {}) end, "gradient of shape 5")
    spec.raises(function() optim.SGD({p}, {lr = -1}) end, "invalid learning rate")
    spec.raises(function() optim.Adam({p}, {betas = {1.5, 0.9}}) end, "betas")
    spec.raises(function() optim.Adam({}, {}) end, "empty parameter list")
    spec.raises(function() optim.Adam({p, p}, {}) end, "appears twice")
    spec.raises(function() optim.SGD({p}, {lr = 0.1, nesterov = true}) end, "Nesterov")
  end)
end)

-- ---- optimiser classes ------------------------------------------------------------------------------------
describe("optimiser classes", function()
  it("support parameter groups with their own settings", function()
    local a, b = T.ones(2):requires_grad_(true), T.ones(2):requires_grad_(true)
    local opt = optim.SGD({{params = {a}}, {params = {b}, lr = 1}}, {lr = 0.1})
    a.grad = T.ones(2); b.grad = T.ones(2)
    opt:step()
    spec.near(a[1], 0.9, 1e-7)
    spec.near(b[1], 0, 1e-7)
    opt:zero_grad()
    spec.truthy(a.grad == nil and b.grad == nil)
  end)
  it("state_dict / load_state_dict continue training identically", function()
    local x, y = T.randn({8, 6}, T.Generator(1)), T.randint(0, 3, {8}, T.Generator(2))
    local function run(m, opt, n)
      local out = {}
      for i = 1, n do
        opt:zero_grad()
        local l = nn.F.cross_entropy(m(x), y)
        l:backward()
        opt:step()
        out[i] = l:item()
      end
      return out
    end
    T.manual_seed(5)
    local m1 = mlp()
    local o1 = optim.Adam(m1:parameters(), {lr = 1e-2, amsgrad = true})
    run(m1, o1, 3)
    local m2 = mlp()
    m2:load_state_dict(m1:state_dict())
    local o2 = optim.Adam(m2:parameters(), {lr = 0.5})
    o2:load_state_dict(o1:state_dict())
    spec.eq(o2.param_groups[1].lr, 1e-2)
    spec.eq(o2.state[1].step[1], 3)
    local l1, l2 = run(m1, o1, 4), run(m2, o2, 4)
    for i = 1, 4 do spec.eq(l1[i], l2[i]) end
    spec.raises(function() optim.Adam(mlp():parameters()):load_state_dict({param_groups = {}}) end,
      "0 parameter groups saved")
    local sd = o1:state_dict()
    sd.state[0].exp_avg = T.zeros(3)
    spec.raises(function() optim.Adam(mlp():parameters()):load_state_dict(sd) end, "state exp_avg of parameter 0")
  end)
end)

-- ---- schedules --------------------------------------------------------------------------------------------
describe("schedules", function()
  local _, meta = T.load(DIR .. "schedules.safetensors")
  local function lrs(make)
    local p = T.zeros(1):requires_grad_(true)
    local opt = optim.SGD({p}, {lr = 0.1})
    local s = make(opt)
    local out = {}
    for i = 1, 12 do
      out[i] = opt:get_lr()
      s:step()
    end
    return out
  end
  local makers = {
    warmup = function(o) return optim.LinearWarmup(o, {warmup = 5}) end,
    cosine = function(o) return optim.CosineAnnealingLR(o, {T_max = 10, eta_min = 1e-3}) end,
    step = function(o) return optim.StepLR(o, {step_size = 3, gamma = 0.5}) end,
  }
  for name, make in pairs(makers) do
    it(name .. " matches PyTorch", function()
      local want = json.json_decode(meta[name])
      local got = lrs(make)
      local d = 0
      for i = 1, 12 do d = math.max(d, math.abs(got[i] - want[i])) end
      print(string.format("#   %-8s max lr difference %.2e", name, d))
      spec.truthy(d < 1e-9)
    end)
  end
  it("the reference's warm-up: the first step runs at lr 0, step 5000 at the full rate", function()
    local p = T.zeros(1):requires_grad_(true)
    local opt = optim.Adam({p}, {lr = 2e-4})
    local s = optim.LinearWarmup(opt, {warmup = 5000})
    spec.eq(opt:get_lr(), 0)
    s:step(2500)
    spec.near(opt:get_lr(), 1e-4, 1e-12)
    s:step(7000)
    spec.eq(opt:get_lr(), 2e-4)
    local s2 = optim.LinearWarmup(optim.Adam({T.zeros(1):requires_grad_(true)}, {lr = 2e-4}), {warmup = 5000})
    s2:load_state_dict(s:state_dict())
    spec.eq(s2:get_lr(), 2e-4)
    spec.eq(s2.last_step, 7000)
  end)
  it("cosine with warm-up", function()
    local opt = optim.SGD({T.zeros(1):requires_grad_(true)}, {lr = 1})
    local s = optim.CosineLR(opt, {T_max = 10, warmup = 2, hold = true})
    spec.eq(opt:get_lr(), 0)
    s:step(); spec.near(opt:get_lr(), 0.5, 1e-12)
    s:step(); spec.near(opt:get_lr(), 1, 1e-12)
    s:step(6); spec.near(opt:get_lr(), 0.5, 1e-12)
    s:step(20); spec.near(opt:get_lr(), 0, 1e-12)
  end)
end)

-- ---- clipping -----------------------------------------------------------------------------------------------
describe("gradient clipping", function()
  it("returns the global norm and scales the gradients when it exceeds the limit", function()
    local a, b = T.zeros(3):requires_grad_(true), T.zeros(2, 2):requires_grad_(true)
    local c = T.zeros(2):requires_grad_(true) -- no gradient: skipped
    a.grad = T.tensor({3, 0, 0}); b.grad = T.tensor({{0, 4}, {0, 0}})
    spec.near(optim.grad_norm({a, b, c}), 5, 1e-12)
    local n = optim.clip_grad_norm_({a, b, c}, 1.0)
    spec.near(n, 5, 1e-12)
    spec.near(a.grad[1], 3 / (5 + 1e-6), 1e-6)
    spec.near(b.grad[1][2], 4 / (5 + 1e-6), 1e-6)
    local n2 = optim.clip_grad_norm_({a, b}, 10)
    spec.near(n2, 1, 1e-5)
    spec.near(a.grad[1], 3 / (5 + 1e-6), 1e-6) -- unchanged below the limit
    a.grad = T.tensor({-7, 1, 2})
    spec.eq(optim.clip_grad_norm_({a, b}, 100, math.huge), 7)
    spec.raises(function() optim.clip_grad_norm_({a}, 1, 3) end, "norm_type must be 2")
  end)
  it("matches the norm computed from the tensors", function()
    local m = mlp()
    nn.F.mse_loss(m(T.randn(4, 6)), T.randn(4, 3)):backward()
    local s = 0
    for _, p in ipairs(m:parameters()) do s = s + (p.grad ^ 2):sum():item() end
    spec.near(optim.grad_norm(m), math.sqrt(s), 1e-5)
    optim.clip_grad_value_(m, 1e-3)
    for _, p in ipairs(m:parameters()) do spec.truthy(p.grad:abs():max():item() <= 1e-3 + 1e-9) end
  end)
end)

-- ---- EMA ------------------------------------------------------------------------------------------------------
describe("EMA", function()
  it("follows the reference's rule decay = min(decay, (1 + n) / (10 + n))", function()
    local p = T.zeros(4):requires_grad_(true)
    local frozen = T.ones(2) -- not requiring grad: not tracked
    local ema = optim.EMA({p, frozen}, {decay = 0.999})
    spec.eq(#ema.shadow, 1)
    local s = 0.0
    for n = 1, 30 do
      T.no_grad(function() p:fill_(n) end)
      local d = ema:update()
      local want = math.min(0.999, (1 + n) / (10 + n))
      spec.near(d, want, 1e-15)
      s = s - (1 - want) * (s - n)
    end
    spec.near(ema.shadow[1][1], s, 1e-4)
    spec.eq(ema.num_updates, 30)
    local fixed = optim.EMA({p}, {decay = 0.5, use_num_updates = false})
    spec.eq(fixed:update(), 0.5)
  end)
  it("copy_to, store and restore", function()
    local m = nn.Linear(3, 2)
    local ema = optim.EMA(m, {decay = 0.9})
    local w0 = m.weight:clone()
    T.no_grad(function() m.weight:add_(1) end)
    ema:update()
    local trained = m.weight:clone()
    ema:store()
    ema:copy_to()
    spec.truthy(spec.maxdiff(m.weight, trained) > 0)
    local expect = w0 - (1 - 2 / 11) * (w0 - trained) -- decay min(0.9, 2/11)
    spec.truthy(spec.maxdiff(m.weight, expect) < 1e-6)
    ema:restore()
    spec.eq(spec.maxdiff(m.weight, trained), 0)
    spec.raises(function() ema:restore() end, "nothing stored")
    local other = nn.Linear(3, 2)
    ema:copy_to(other)
    spec.truthy(spec.maxdiff(other.weight, expect) < 1e-6)
    spec.raises(function() ema:copy_to(nn.Linear(3, 3, false)) end, "1 tensors given, 2 tracked")
    local e2 = optim.EMA(nn.Linear(3, 2), {decay = 0.1})
    e2:load_state_dict(ema:state_dict())
    spec.eq(e2.num_updates, 1)
    spec.eq(e2.decay, 0.9)
    spec.eq(spec.maxdiff(e2.shadow[1], ema.shadow[1]), 0)
    spec.raises(function() optim.EMA(nn.Linear(4, 2)):load_state_dict(ema:state_dict()) end, "weight (given 2x3, model 2x4)")
  end)
end)

-- ---- memory ---------------------------------------------------------------------------------------------------
describe("a training loop does not grow", function()
  it("live bytes stay flat over 50 steps after warm-up", function()
    local g = T.Generator(1)
    local m = nn.Sequential(nn.Conv2d(3, 8, 3, {padding = 1, generator = g}), nn.GroupNorm(2, 8), nn.SiLU(),
      nn.Dropout(0.1, {generator = g}), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5, {generator = g}))
    local opt = optim.Adam(m:parameters(), {lr = 1e-3})
    local sched = optim.LinearWarmup(opt, {warmup = 20})
    local ema = optim.EMA(m, {decay = 0.999})
    local x, y = T.randn({16, 3, 8, 8}, g), T.randint(0, 5, {16}, g)
    local function step()
      opt:zero_grad()
      local l = nn.F.cross_entropy(m(x), y)
      l:backward()
      optim.clip_grad_norm_(m, 1.0)
      opt:step(); sched:step(); ema:update()
      return l
    end
    for _ = 1, 10 do step() end
    collectgarbage(); collectgarbage()
    local base = T.memory().live_bytes
    local peak = 0
    for _ = 1, 50 do
      step()
      peak = math.max(peak, T.memory().live_bytes)
    end
    collectgarbage(); collectgarbage()
    local after = T.memory().live_bytes
    print(string.format("#   live bytes after warm-up %d, after 50 more steps %d (peak without collection %d)",
      base, after, peak))
    spec.eq(after, base, "live bytes after 50 steps")
  end)
end)

describe("optimisers take PyTorch's positional arguments", function()
  local function params() return {T.zeros(2):requires_grad_(true)} end
  it("Adam(params, 1e-2) sets the learning rate", function()
    local opt = optim.Adam(params(), 1e-2)
    spec.eq(opt.param_groups[1].lr, 1e-2)
    spec.eq(opt.param_groups[1].betas[2], 0.999)
  end)
  it("every optimiser: lr and the next settings by position, then an options table", function()
    local a = optim.AdamW(params(), 2e-3, {0.8, 0.9}, 1e-6, 0.5, true)
    local g = a.param_groups[1]
    spec.eq(g.lr, 2e-3); spec.eq(g.betas[1], 0.8); spec.eq(g.eps, 1e-6); spec.eq(g.weight_decay, 0.5)
    spec.eq(g.amsgrad, true)
    local s = optim.SGD(params(), 0.1, 0.9, {nesterov = true})
    g = s.param_groups[1]
    spec.eq(g.lr, 0.1); spec.eq(g.momentum, 0.9); spec.eq(g.nesterov, true)
    local b = optim.Adam(params(), 1e-3, {eps = 1e-4})
    spec.eq(b.param_groups[1].eps, 1e-4)
  end)
  it("the positional and table forms train alike", function()
    local p1, p2 = T.ones(3):requires_grad_(true), T.ones(3):requires_grad_(true)
    local o1, o2 = optim.Adam({p1}, 0.1), optim.Adam({p2}, {lr = 0.1})
    for _ = 1, 3 do
      for _, pair in ipairs({{o1, p1}, {o2, p2}}) do
        pair[1]:zero_grad(); (pair[2] * pair[2]):sum():backward(); pair[1]:step()
      end
    end
    spec.eq((p1 - p2):abs():max():item(), 0)
  end)
  it("mistakes are named: a bad learning rate, an unknown option, too many arguments", function()
    spec.raises(function() optim.Adam(params(), "fast") end, "Adam", "learning rate")
    spec.raises(function() optim.Adam(params(), {learning_rate = 1}) end, "Adam", "unknown option 'learning_rate'", "lr")
    spec.raises(function() optim.SGD(params(), 0.1, 0.9, 0, 0, false, 7) end, "SGD", "too many arguments")
    spec.raises(function() optim.SGD(params(), 0.1, {momentum = 0.5}, 0.9) end, "SGD", "last argument")
    spec.raises(function() optim.SGD(params(), 0.1, 0.9, {momentum = 0.5}) end, "SGD", "momentum", "twice")
  end)
end)

describe("settings that used to be accepted silently (issue 22)", function()
  local p = T.ones(2, {requires_grad = true})
  it("a NaN or infinite setting is refused", function()
    spec.raises(function() optim.Adam({p}, {lr = 0/0}) end, "Adam", "learning rate")
    spec.raises(function() optim.Adam({p}, {lr = math.huge}) end, "Adam", "learning rate")
    spec.raises(function() optim.Adam({p}, {eps = 0/0}) end, "Adam", "eps")
    spec.raises(function() optim.AdamW({p}, {weight_decay = 0/0}) end, "AdamW", "weight_decay")
    spec.raises(function() optim.SGD({p}, {lr = 0.1, momentum = 0/0}) end, "SGD", "momentum")
    spec.raises(function() optim.Adam({{params = {p}, lr = 0/0}}) end, "Adam", "learning rate")
  end)
  it("an unknown option key is refused, with the known ones listed", function()
    spec.raises(function() optim.Adam({p}, {lr = 1e-3, weight_decya = 0.1}) end, "Adam", "unknown option 'weight_decya'",
      "weight_decay")
    spec.raises(function() optim.SGD({p}, {lr = 0.1, momentun = 0.9}) end, "SGD", "unknown option 'momentun'")
    spec.raises(function() optim.Adam({{params = {p}, lrr = 1}}) end, "Adam", "unknown option 'lrr'", "parameter group")
    spec.truthy(optim.Adam({p}, {lr = 1e-3, betas = {0.9, 0.99}}))
  end)
end)
