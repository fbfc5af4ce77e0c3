-- Trajectories and downstream heads: extraction and its file, each head on a separable toy
-- problem, and a protocol that selects by validation, never by test.
local T = require 'tdrl'
local traj = require 'tdrl.traj'
local heads = require 'tdrl.heads'
local protocol = require 'tdrl.heads.protocol'

-- three classes whose codes differ along the whole trajectory (and one point carries them best)
local function toy(n, seed)
  local g = T.Generator(seed)
  local y = T.randint(0, 3, {n}, g)
  local P, L = 5, 4
  local codes = T.randn(n, P, L, g) * 0.5
  local onehot = T.zeros(n, 3):scatter_add(2, y:view(n, 1), T.ones(n, 1))
  local signal = T.cat({onehot, T.zeros(n, L - 3)}, 2):view(n, 1, L)
  codes = codes + signal * 2
  return {codes = codes, times = T.linspace(0, 1, P), labels = {cls = y}, tasks = {"cls"}, classes = {cls = 3}}
end

describe("trajectories", function()
  it("granularity g gives g + 1 points from 0 to 1; granularity 1 is t = 0.5", function()
    local t = traj.times(10)
    spec.eq(#t, 11); spec.eq(t[1], 0); spec.eq(t[11], 1); spec.near(t[6], 0.5)
    spec.eq(#traj.times(1), 1); spec.eq(traj.times(1)[1], 0.5)
    spec.raises(function() traj.times(0) end, "granularity")
  end)
  it("extracts (N, points, latent) in eval mode, keeps the VDRL mean, and round-trips its file", function()
    local D = require 'tdrl.diffusion'
    local enc = D.WRNEncoder({depth = 10, widen = 1, latent = 3, probabilistic = true, generator = T.Generator(0)})
    enc:train()
    local X = T.rand(7, 3, 8, 8, T.Generator(1))
    local labels = {a = T.arange(0, 7, 1, "int64")}
    local tr = traj.extract(enc, {images = X, labels = labels, tasks = {"a"}, classes = {a = 7}}, {granularity = 2, batch = 3})
    spec.eq(table.concat(tr.codes:size(), "x"), "7x3x3")
    spec.eq(enc.training, true, "the encoder's mode is restored")
    local mu = T.no_grad(function() enc:eval(); return enc(X, T.full({7}, 0.5)).mu end)
    spec.tensor_near(tr.codes:select(2, 2), mu, 1e-5)
    local path = os.tmpname()
    traj.save(path, tr, {checkpoint = "ck.safetensors", step = 12})
    local back = traj.load(path)
    os.remove(path)
    spec.eq(spec.maxdiff(back.codes, tr.codes), 0)
    spec.eq(back.labels.a[7], 6); spec.eq(back.tasks[1], "a"); spec.eq(back.classes.a, 7)
    spec.eq(back.provenance.step, 12)
    spec.raises(function() traj.load("/nonexistent/x.safetensors") end, "x.safetensors")
  end)
  it("refuses a damaged trajectory file, naming it and the field", function()
    local p = os.tmpname()
    local codes, times = T.randn(4, 3, 2), T.tensor({0, 0.5, 1})
    local function save(tensors, tasks, classes)
      local m = {format = "tdrl.trajectories", tasks = tasks or '["a"]', classes = classes or '{"a":3}'}
      T.save(p, tensors, m)
    end
    local function refused(...) spec.raises(function() traj.load(p) end, p, ...) end
    save({codes = codes, times = times, ["labels.a"] = T.tensor({0, 1, 2}, "int64")})
    refused("labels.a", "4 samples")
    save({codes = codes, times = times, ["labels.a"] = T.tensor({0, 1, 2, 3}, "int64")})
    refused("labels.a", "outside 0..2")
    save({codes = codes, times = times, ["labels.a"] = T.tensor({0, 1, 2, -1}, "int64")})
    refused("labels.a", "outside")
    save({codes = codes, times = times, ["labels.a"] = T.tensor({0, 1, 2, 1})})
    refused("labels.a", "float32")
    save({codes = codes, times = T.tensor({0, 1}), ["labels.a"] = T.tensor({0, 1, 2, 1}, "int64")})
    refused("'times'", "3 time points")
    save({codes = codes, times = times})
    refused("no tensor 'labels.a'")
    save({codes = codes, times = times, ["labels.a"] = T.tensor({0, 1, 2, 1}, "int64")}, '["a"]', '{"a":"x"}')
    refused("'classes'")
    save({codes = codes, times = times, ["labels.a"] = T.tensor({0, 1, 2, 1}, "int64")})
    spec.eq(traj.load(p).labels.a[4], 1)
    os.remove(p)
  end)
end)

describe("heads", function()
  local tr, va, te = toy(600, 1), toy(200, 2), toy(200, 3)
  for _, kind in ipairs({"mlp", "gru", "transformer"}) do
    it(kind .. " reaches > 95% on a separable toy problem", function()
      local cfg = {head = kind, epochs = kind == "transformer" and 8 or 15, batch = 64, lrs = {1e-3}, seeds = 1}
      if kind == "mlp" then cfg.point = 3 end
      local r = protocol.run({train = tr, val = va, test = te}, cfg)
      local acc = r.tasks.cls.test_mean
      print(string.format("#   %s test accuracy %.3f", kind, acc))
      spec.truthy(acc > 0.95, kind .. " accuracy " .. acc)
    end)
  end
  it("the analysis Transformer returns CLS attention over the time tokens that sums to one", function()
    local h = heads.new("transformer_analysis", 4, 3, {generator = T.Generator(0)})
    h:eval()
    local logits, w = h(tr.codes:narrow(1, 1, 8), tr.times, {need_weights = true})
    spec.eq(table.concat(w:size(), "x"), "8x4x5")
    spec.tensor_near(w:sum(3), T.ones(8, 4), 1e-5)
  end)
  it("a custom head registered by name runs through the protocol", function()
    local nn = require 'tdrl.nn'
    local Mean = nn.class('MeanPoolHead', nn.Module)
    function Mean:__init(latent, classes, o) nn.Module.__init(self); self.fc = nn.Linear(latent, classes, o) end
    function Mean:forward(x, times) return self.fc(x:mean(2)) end
    heads.register("meanpool", Mean)
    local r = protocol.run({train = tr, val = va, test = te}, {head = "meanpool", epochs = 10, batch = 64, lrs = {5e-3}, seeds = 1})
    spec.truthy(r.tasks.cls.test_mean > 0.9, "custom head accuracy " .. r.tasks.cls.test_mean)
  end)
end)

describe("protocol", function()
  it("chooses the learning rate by mean validation accuracy and reports test at that rate", function()
    local real = protocol.train_one
    -- lr 1e-3: good validation, poor test; lr 1e-4: poor validation, excellent test
    protocol.train_one = function(d, classes, lr, seed, cfg)
      if lr == 1e-3 then return {best_val = 0.9, test_at_best = 0.5 + seed / 100, best_epoch = 1} end
      return {best_val = 0.8, test_at_best = 0.99, best_epoch = 1}
    end
    local ok, r = pcall(protocol.run, {train = toy(10, 1), val = toy(10, 2), test = toy(10, 3)},
      {lrs = {1e-4, 1e-3}, seeds = 3})
    protocol.train_one = real
    assert(ok, r)
    local c = r.tasks.cls
    spec.eq(c.best_lr, 1e-3)
    spec.near(c.test_mean, 0.52, 1e-9)
    spec.near(c.test_median, 0.52, 1e-9)
    spec.eq(#c.test, 3)
  end)
  it("takes the test accuracy at the best validation epoch", function()
    local r = protocol.train_one({Xtr = toy(200, 1).codes, ytr = toy(200, 1).labels.cls, Xva = toy(50, 2).codes,
      yva = toy(50, 2).labels.cls, Xte = toy(50, 3).codes, yte = toy(50, 3).labels.cls, times = T.linspace(0, 1, 5)},
      3, 1e-3, 1, {head = "mlp", epochs = 6, batch = 50, weight_decay = 1e-5, eval_batch = 100, binary_bce = true})
    local best, at = -1, 0
    for e, v in ipairs(r.curve) do if v > best then best, at = v, e end end
    spec.eq(r.best_epoch, at); spec.eq(r.best_val, best)
  end)
end)

describe("head names", function()
  it("an unknown head name is an error listing the registered heads", function()
    local err = spec.raises(function() heads.new("lstm", 4, 3) end, "unknown head 'lstm'", "registered:", "gru",
      "mlp", "transformer")
    spec.truthy(err:find("heads_spec.lua", 1, true), "the error points at the caller: " .. err)
    spec.raises(function() heads.new(42, 4, 3) end, "a head is a registered name or a constructor, got a number")
  end)
  it("protocol.run names a misspelt head before training", function()
    local d = toy(30, 1)
    spec.raises(function() protocol.run({train = d, val = d, test = d}, {head = "gru_typo", epochs = 1}) end,
      "unknown head 'gru_typo'", "registered:", "gru")
  end)
  it("a registered constructor and a constructor given directly both work", function()
    local h = heads.new(heads.MLPHead, 4, 3, {generator = T.Generator(1)})
    spec.truthy(h ~= nil)
    spec.truthy(heads.new("mlp", 4, 3, {generator = T.Generator(1)}) ~= nil)
  end)
end)

describe("library functions called wrongly name themselves (issue 22)", function()
  it("no message from Lua itself ('attempt to ...', 'bad argument ... to for iterator')", function()
    local data = require 'tdrl.data'
    local cases = {
      {function() return data.synthetic(5) end, "synthetic", "options must be a table"},
      {function() return data.load_image("x.png", 3) end, "load_image", "options"},
      {function() return traj.save("x.safetensors", nil) end, "traj.save", "x.safetensors"},
      {function() return traj.extract(nil, T.zeros(1, 3, 8, 8)) end, "traj.extract"},
      {function() return traj.select_points({codes = T.zeros(1, 2, 3), times = T.zeros(2)}, "1") end, "traj.select_points"},
      {function() return require('tdrl.heads').new(5, 2, 3) end, "heads.new"},
      {function() return require('tdrl.mine').network() end, "mine.network"},
      {function() return require('tdrl.mine').estimate() end, "mine.estimate"},
      {function() return require('tdrl.attention').jsd() end, "jsd"},
      {function() return require('tdrl.checkpoint').restore() end, "checkpoint.restore"},
      {function() return require('tdrl.plot').read_png() end, "read_png"},
      {function() return require('tdrl.util.args').parse({}, 5) end, "args.parse"},
      {function() return require('tdrl.diffusion').build() end, "diffusion.build"},
    }
    for i, c in ipairs(cases) do
      local err = spec.raises(c[1], table.unpack(c, 2))
      spec.truthy(not err:find("%.lua:%d+: attempt to") and not err:find("bad argument #%d+ to '[%?f]"),
        "case " .. i .. ": " .. err)
    end
  end)
end)
