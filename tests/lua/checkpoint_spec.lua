-- tdrl.checkpoint: JSON metadata, save / load of model, optimiser, EMA, schedule and generators,
-- exact resumption, and broken files.
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local optim = require 'tdrl.optim'
local checkpoint = require 'tdrl.checkpoint'

local DIR = os.tmpname()
os.remove(DIR)
os.execute("mkdir -p '" .. DIR .. "'")
local function path(name) return DIR .. "/" .. name end

describe("JSON", function()
  it("round-trips nested values, keeping integers and floats apart", function()
    local v = {a = 1, b = 2.5, c = {1, 2, {x = "y"}}, d = true, e = false, f = "q\"uo\\te\n\t\1 é",
               g = 0.1, h = 1e-300, i = -3, j = 2.0, k = {}, l = 1 / 3}
    local back = checkpoint.json_decode(checkpoint.json_encode(v))
    spec.eq(back.a, 1); spec.eq(math.type(back.a), "integer")
    spec.eq(back.b, 2.5)
    spec.eq(back.c[3].x, "y")
    spec.eq(back.d, true); spec.eq(back.e, false)
    spec.eq(back.f, v.f)
    spec.eq(back.g, 0.1); spec.eq(back.h, 1e-300); spec.eq(back.i, -3); spec.eq(back.l, 1 / 3)
    spec.eq(math.type(back.j), "float")
    spec.eq(next(back.k), nil)
    local sp = checkpoint.json_decode(checkpoint.json_encode({math.huge, -math.huge}))
    spec.eq(sp[1], math.huge); spec.eq(sp[2], -math.huge)
    local nan = checkpoint.json_decode(checkpoint.json_encode(0 / 0))
    spec.truthy(nan ~= nan)
    spec.eq(checkpoint.json_decode('"\\u00e9\\ud83d\\ude00"'), "é😀")
  end)
  it("refuses values it cannot write and text that is not JSON", function()
    spec.raises(function() checkpoint.json_encode({f = print}) end, "function at value.f")
    local t = {}; t.self = t
    spec.raises(function() checkpoint.json_encode(t) end, "contains itself")
    spec.raises(function() checkpoint.json_decode("os.exit(1)") end, "json: unexpected 'o'")
    spec.raises(function() checkpoint.json_decode('{"a": 1') end, "json:")
    spec.raises(function() checkpoint.json_decode('[1, 2] x') end, "trailing characters")
  end)
end)

-- a small model with dropout, trained on batches drawn from a generator
local function make(seed)
  local g = T.Generator(seed)
  local gd = T.Generator(seed + 100)
  local m = nn.Sequential(nn.Linear(5, 16, {generator = g}), nn.GELU(), nn.Dropout(0.3, {generator = gd}),
    nn.Linear(16, 16, {generator = g}), nn.LayerNorm(16), nn.SiLU(), nn.Linear(16, 3, {generator = g}))
  local opt = optim.AdamW(m:parameters(), {lr = 3e-3, weight_decay = 1e-2})
  local sched = optim.LinearWarmup(opt, {warmup = 4})
  local ema = optim.EMA(m, {decay = 0.99})
  return {model = m, optimizer = opt, schedule = sched, ema = ema, gens = {data = T.Generator(seed + 200), dropout = gd}}
end

local X = T.randn({64, 5}, T.Generator(9))
local Y = T.randint(0, 3, {64}, T.Generator(10))

local function train(s, n)
  local losses = {}
  for i = 1, n do
    local idx = T.randperm(64, s.gens.data):narrow(1, 1, 16)
    s.optimizer:zero_grad()
    local loss = nn.F.cross_entropy(s.model(X:index_select(1, idx)), Y:index_select(1, idx))
    loss:backward()
    optim.clip_grad_norm_(s.model, 0.5)
    s.optimizer:step()
    s.schedule:step()
    s.ema:update()
    losses[i] = loss:item()
  end
  return losses
end

local function save(s, p, step)
  checkpoint.save(p, {model = s.model, optimizer = s.optimizer, ema = s.ema, schedule = s.schedule,
    generators = s.gens, step = step, config = {lr = 3e-3, layers = {5, 16, 3}, name = "resume test"}})
end

describe("checkpoints", function()
  it("resuming continues training exactly (bit for bit)", function()
    local full = make(1)
    local all = train(full, 12)
    local part = make(1)
    local first = train(part, 5)
    for i = 1, 5 do spec.eq(first[i], all[i]) end
    save(part, path("resume.safetensors"), 5)
    local fresh = make(77) -- different weights, generators and empty optimiser state
    local ck = checkpoint.load(path("resume.safetensors"), {model = fresh.model, optimizer = fresh.optimizer,
      ema = fresh.ema, schedule = fresh.schedule, generators = fresh.gens})
    spec.eq(ck.step, 5)
    spec.eq(ck.config.name, "resume test")
    spec.eq(ck.config.layers[2], 16)
    local rest = train(fresh, 7)
    local worst = 0
    for i = 1, 7 do worst = math.max(worst, math.abs(rest[i] - all[5 + i])) end
    print(string.format("#   largest loss difference after resume: %g", worst))
    for i = 1, 7 do spec.eq(rest[i], all[5 + i], "loss " .. (5 + i)) end
    local a, b = full.model:state_dict(), fresh.model:state_dict()
    for k, t in pairs(a) do spec.eq(spec.maxdiff(t, b[k]), 0, k) end
    for i = 1, #full.ema.shadow do spec.eq(spec.maxdiff(full.ema.shadow[i], fresh.ema.shadow[i]), 0) end
    spec.eq(fresh.optimizer:get_lr(), full.optimizer:get_lr())
  end)

  it("stores PyTorch-style names and readable metadata in one safetensors file", function()
    local s = make(2)
    train(s, 2)
    save(s, path("layout.safetensors"), 2)
    local t, meta = T.load(path("layout.safetensors"))
    spec.truthy(t["model.0.weight"] and t["model.4.bias"], "model tensors")
    spec.truthy(t["optimizer.state.0.exp_avg"] and t["optimizer.state.6.exp_avg_sq"], "optimizer tensors")
    spec.truthy(t["ema.shadow.0.weight"], "ema tensors")
    spec.eq(t["rng.data"]:type(), "int64")
    spec.eq(meta.format, "tdrl.checkpoint")
    spec.eq(meta.step, "2")
    local cfg = checkpoint.json_decode(meta.config)
    spec.eq(cfg.lr, 3e-3)
    local o = checkpoint.json_decode(meta.optimizer)
    spec.eq(o.param_groups[1].weight_decay, 1e-2)
    spec.eq(o.state["0"].step, 2)
    -- read-only load
    local ck = checkpoint.load(path("layout.safetensors"))
    spec.eq(spec.maxdiff(ck.model["0.weight"], s.model[1].weight), 0)
    spec.eq(ck.optimizer.state["0"].step, 2)
    spec.eq(ck.ema.num_updates, 2)
    spec.eq(ck.schedule.last_step, 2)
  end)

  it("writes atomically: no temporary file is left, a failed save keeps the old file", function()
    local s = make(3)
    local p = path("atomic.safetensors")
    save(s, p, 1)
    local before = io.open(p, "rb"):read("a")
    spec.raises(function() checkpoint.save(p, {model = s.model, extra = {bad = 3}}) end, "extra entry bad is not a tensor")
    spec.raises(function() checkpoint.save(p, {config = {f = print}}) end, "function at value.f")
    spec.eq(io.open(p, "rb"):read("a"), before)
    local ls = io.popen("ls -a '" .. DIR .. "'"):read("a")
    spec.truthy(not ls:find("atomic.safetensors.tmp", 1, true), ls)
    spec.raises(function() checkpoint.save(DIR .. "/no/such/dir/x.safetensors", {step = 1}) end, "no/such/dir")
  end)

  it("a truncated or foreign file gives a clear error, never a crash", function()
    local s = make(4)
    local p = path("full.safetensors")
    save(s, p, 3)
    local data = io.open(p, "rb"):read("a")
    for _, n in ipairs({#data - 1, #data // 2, 100, 9, 3, 0}) do
      local q = path("cut" .. n .. ".safetensors")
      local f = io.open(q, "wb"); f:write(data:sub(1, n)); f:close()
      spec.raises(function() checkpoint.load(q) end, "checkpoint.load: ", "cut" .. n)
    end
    spec.raises(function() checkpoint.load(path("missing.safetensors")) end, "checkpoint.load: ", "missing.safetensors")
    T.save(path("plain.safetensors"), {x = T.zeros(2)})
    spec.raises(function() checkpoint.load(path("plain.safetensors")) end, "is not a tdrl checkpoint")
    T.save(path("badjson.safetensors"), {x = T.zeros(2)}, {format = "tdrl.checkpoint", version = "1", config = "{oops"})
    spec.raises(function() checkpoint.load(path("badjson.safetensors")) end, "metadata 'config' is not valid JSON")
    T.save(path("noref.safetensors"), {x = T.zeros(2)}, {format = "tdrl.checkpoint", version = "1",
      optimizer = '{"state":{"0":{"exp_avg":{"$tensor":"optimizer.state.0.exp_avg"}}}}'})
    spec.raises(function() checkpoint.load(path("noref.safetensors")) end,
      "optimizer refers to tensor 'optimizer.state.0.exp_avg', which the file lacks")
    T.save(path("future.safetensors"), {x = T.zeros(2)}, {format = "tdrl.checkpoint", version = "9"})
    spec.raises(function() checkpoint.load(path("future.safetensors")) end, "format version 9")
  end)

  it("restoring checks the state before changing the model", function()
    local s = make(5)
    checkpoint.save(path("modelonly.safetensors"), {model = s.model, step = 1})
    local other = make(6)
    local w = other.model[1].weight:clone()
    spec.raises(function()
      checkpoint.load(path("modelonly.safetensors"), {model = other.model, optimizer = other.optimizer})
    end, "holds no optimizer state")
    spec.eq(spec.maxdiff(other.model[1].weight, w), 0)
    local wrong = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Dropout(0.3), nn.Linear(8, 16), nn.LayerNorm(16),
      nn.SiLU(), nn.Linear(16, 3))
    spec.raises(function() checkpoint.load(path("modelonly.safetensors"), {model = wrong}) end,
      "load_state_dict (Sequential)", "0.weight (given 16x5, model 8x5)")
    spec.raises(function()
      checkpoint.load(path("modelonly.safetensors"), {generators = {data = T.Generator(1)}})
    end, "no state for generator 'data'")
  end)
end)

describe("damaged fields are refused on load, naming the file and the field", function()
  local function meta(extra)
    local m = {format = "tdrl.checkpoint", version = "1"}
    for k, v in pairs(extra) do m[k] = v end
    return m
  end
  it("a step that is not a non-negative integer", function()
    for _, bad in ipairs({"abc", "-5", "1e300", "2.5", ""}) do
      local p = path("step.safetensors")
      T.save(p, {x = T.zeros(2)}, meta({step = bad}))
      spec.raises(function() checkpoint.load(p) end, "step.safetensors", "'step'", string.format("%q", bad))
    end
    T.save(path("step7.safetensors"), {x = T.zeros(2)}, meta({step = "7"}))
    spec.eq(checkpoint.load(path("step7.safetensors")).step, 7)
  end)
  it("an optimiser step list holding strings or negative counts", function()
    local p = path("optstep.safetensors")
    T.save(p, {x = T.zeros(2)}, meta({optimizer = '{"state":{"0":{"step":"abc"}},"param_groups":[{"params":[0]}]}'}))
    spec.raises(function() checkpoint.load(p) end, "optstep.safetensors", "optimizer.state.0.step", '"abc"')
    T.save(p, {x = T.zeros(2)}, meta({optimizer = '{"state":{"0":{"step":-3}},"param_groups":[{"params":[0]}]}'}))
    spec.raises(function() checkpoint.load(p) end, "optimizer.state.0.step", "-3")
    local s = make(7)
    spec.raises(function()
      s.optimizer:load_state_dict({state = {[0] = {step = "x"}}, param_groups = s.optimizer:state_dict().param_groups})
    end, "state step of parameter 0", '"x"')
  end)
  it("a zeroed or malformed generator state", function()
    local p = path("rng.safetensors")
    T.save(p, {["rng.run"] = T.zeros(7, "int64")}, meta({}))
    spec.raises(function() checkpoint.load(p) end, "rng.safetensors", "rng.run", "zeros")
    T.save(p, {["rng.run"] = T.zeros(3)}, meta({}))
    spec.raises(function() checkpoint.load(p) end, "rng.safetensors", "rng.run", "7 values")
  end)
end)

os.execute("rm -rf '" .. DIR .. "'")
