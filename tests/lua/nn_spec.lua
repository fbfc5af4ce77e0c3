-- tdrl.nn: the class helper, Module, containers, every layer against PyTorch fixtures
-- (tests/fixtures/torch_nn, written by gen.py there), gradient checks, save / load round trips,
-- initialisers, bad input.
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local class = require 'tdrl.class'
local gc = require 'tdrl.gradcheck'
local json = require 'tdrl.checkpoint'
local F = nn.F

local DIR = "tests/fixtures/torch_nn/"
local TMP = os.tmpname()

local function shape(t) return table.concat(t:size(), "x") end

-- largest |a - b| relative to the largest |b| (floor 1e-3 so near-zero tensors compare absolutely)
local function reldiff(a, b)
  if shape(a) ~= shape(b) then error("shapes differ: " .. shape(a) .. " vs " .. shape(b), 2) end
  local d = (a:detach() - b):abs():max():item()
  local s = b:abs():max():item()
  return d / math.max(s, 1e-3)
end

-- ---- class helper ------------------------------------------------------------------------------------
describe("class", function()
  it("creates instances by calling the class, with inheritance and metamethods", function()
    local A = class('A')
    function A:__init(x) self.x = x end
    function A:get() return self.x end
    function A:__tostring() return "A(" .. self.x .. ")" end
    local B = class('B', A)
    function B:__init(x, y) A.__init(self, x); self.y = y end
    function B:sum() return self.x + self.y end
    local b = B(2, 3)
    spec.eq(b:get(), 2)
    spec.eq(b:sum(), 5)
    spec.eq(tostring(b), "A(2)")
    spec.truthy(class.isinstance(b, A) and class.isinstance(b, B))
    spec.truthy(not class.isinstance(A(1), B))
    spec.eq(class.name(b), "B")
    spec.eq(class.parent(B), A)
    -- a metamethod first defined on the parent later reaches the subclass
    A.__len = function() return 42 end
    spec.eq(#b, 42)
  end)
  it("refuses a parent that is not a class", function()
    spec.raises(function() class('X', {}) end, "not a class")
  end)
end)

-- ---- Module ----------------------------------------------------------------------------------------------
local Net = class('Net', nn.Module)
function Net:__init(g)
  nn.Module.__init(self)
  self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, {padding = 1, generator = g}), nn.GroupNorm(2, 4), nn.SiLU())
  self.blocks = nn.ModuleList({nn.Linear(4, 6, {generator = g}), nn.Linear(6, 2, {generator = g})})
  self.scale = nn.Parameter(T.ones(1))
  self:register_buffer("count", T.zeros(1))
  self:register_buffer("scratch", T.zeros(2), false)
end
function Net:forward(x)
  local h = self.encoder(x):mean({3, 4})
  for i = 1, #self.blocks do h = self.blocks:call(i, h) end
  return h * self.scale
end

describe("Module", function()
  it("names parameters PyTorch's way, in insertion order", function()
    local m = Net(T.Generator(1))
    local names = {}
    for name, p in m:named_parameters() do names[#names + 1] = name .. ":" .. shape(p) end
    spec.eq(table.concat(names, " "), "scale:1 encoder.0.weight:4x3x3x3 encoder.0.bias:4 encoder.1.weight:4 " ..
      "encoder.1.bias:4 blocks.0.weight:6x4 blocks.0.bias:6 blocks.1.weight:2x6 blocks.1.bias:2")
    spec.eq(#m:parameters(), 9)
    spec.eq(m:num_parameters(), 1 + 108 + 4 + 4 + 4 + 24 + 6 + 12 + 2)
    local _, sdnames = m:state_dict()
    spec.eq(sdnames[1] .. " " .. sdnames[2] .. " " .. sdnames[3], "scale count encoder.0.weight")
    spec.eq(#sdnames, 10) -- non-persistent 'scratch' left out
    local bufs = {}
    for name in m:named_buffers() do bufs[#bufs + 1] = name end
    spec.eq(table.concat(bufs, " "), "count scratch")
  end)

  it("calls forward, and trains / evaluates recursively", function()
    local m = Net()
    local y = m(T.randn(2, 3, 5, 5))
    spec.eq(shape(y), "2x2")
    spec.truthy(m.training and m.encoder[1].training)
    m:eval()
    spec.truthy(not m.training and not m.encoder[1].training and not m.blocks[2].training)
    m:train()
    spec.truthy(m.blocks[2].training)
  end)

  it("zero_grad clears every gradient; apply visits children first", function()
    local m = Net()
    m(T.randn(2, 3, 4, 4)):sum():backward()
    spec.truthy(m.encoder[1].weight.grad ~= nil and m.scale.grad ~= nil)
    m:zero_grad()
    for _, p in ipairs(m:parameters()) do spec.truthy(p.grad == nil) end
    local seen = {}
    m:apply(function(mod) seen[#seen + 1] = class.name(mod) end)
    spec.eq(table.concat(seen, " "), "Conv2d GroupNorm SiLU Sequential Linear Linear ModuleList Net")
  end)

  it("shares a tensor between modules once in parameters()", function()
    local a = nn.Linear(3, 3)
    local s = nn.Sequential(a, nn.ReLU(), a)
    spec.eq(#s:parameters(), 2)
    spec.truthy(tostring(s):find("shared", 1, true))
  end)

  it("prints the tree with shapes and parameter counts", function()
    local text = tostring(Net())
    spec.truthy(text:find("Net  scale 1  [165]", 1, true), text)
    spec.truthy(text:find("(0): Conv2d(3 -> 4, k=3, padding=1)  weight 4x3x3x3, bias 4  [112]", 1, true), text)
    spec.truthy(text:find("(blocks): ModuleList  [44]", 1, true), text)
    print("#   " .. text:gsub("\n", "\n#   "))
  end)

  it("loads a state dict in place and reports missing, unexpected and mis-shaped names", function()
    local a, b = Net(T.Generator(1)), Net(T.Generator(2))
    local w = b.blocks[1].weight
    b:load_state_dict(a:state_dict())
    spec.truthy(rawequal(w, b.blocks[1].weight), "tensors are updated in place")
    spec.eq(spec.maxdiff(b.blocks[1].weight, a.blocks[1].weight), 0)
    local sd = a:state_dict()
    sd["blocks.0.weight"] = T.zeros(3, 3)
    sd["encoder.0.bias"] = nil
    sd["extra.thing"] = T.zeros(1)
    local before = b.blocks[2].weight:clone()
    spec.raises(function() b:load_state_dict(sd) end, "load_state_dict (Net)",
      "1 mis-shaped: blocks.0.weight (given 3x3, model 6x4)", "1 missing: encoder.0.bias", "1 unexpected: extra.thing")
    spec.eq(spec.maxdiff(b.blocks[2].weight, before), 0) -- nothing copied on error
    sd["blocks.0.weight"] = a.blocks[1].weight
    local r = b:load_state_dict(sd, false)
    spec.eq(r.missing[1], "encoder.0.bias")
    spec.eq(r.unexpected[1], "extra.thing")
    sd["blocks.0.weight"] = T.zeros(2)
    spec.raises(function() b:load_state_dict(sd, false) end, "mis-shaped: blocks.0.weight")
  end)

  it("refuses bad registrations", function()
    local m = nn.Module()
    spec.raises(function() m:register_parameter("a.b", T.zeros(1)) end, "without '.'")
    m:register_buffer("x", T.zeros(1))
    spec.raises(function() m:register_parameter("x", T.zeros(1)) end, "already a buffer")
    spec.raises(function() m:add_module("c", {}) end, "not a Module")
    spec.raises(function() m:add_module("_book", nn.ReLU()) end, "reserved")
    spec.raises(function() m:register_parameter("parameters", T.zeros(1)) end, "reserved")
    spec.raises(function() m(T.zeros(1)) end, "forward is not implemented")
  end)
end)

-- ---- containers -----------------------------------------------------------------------------------------
describe("containers", function()
  it("Sequential chains and names its children 0, 1, ...", function()
    local s = nn.Sequential(nn.Linear(3, 4), nn.ReLU()):add(nn.Linear(4, 2))
    spec.eq(#s, 3)
    spec.eq(class.name(s[3]), "Linear")
    spec.eq(shape(s(T.randn(5, 3))), "5x2")
    local names = {}
    for n in s:named_parameters() do names[#names + 1] = n end
    spec.eq(table.concat(names, " "), "0.weight 0.bias 2.weight 2.bias")
  end)

  it("says which child failed", function()
    local s = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2))
    spec.raises(function() s(T.randn(2, 3)) end,
      "in child 3 (Linear) of Sequential: Linear(5 -> 2): input of shape 2x4: the last dimension must be 5")
    local outer = nn.Sequential(nn.Identity(), s)
    spec.raises(function() outer(T.randn(2, 3)) end, "in child 2 (Sequential) of Sequential: in child 3 (Linear)")
    local conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(3, 8, 3))
    spec.raises(function() conv(T.randn(1, 3, 8, 8)) end, "in child 3 (Conv2d) of Sequential: Conv2d(3 -> 8, k=3)",
      "got shape 1x8x6x6")
  end)

  it("ModuleList and ModuleDict", function()
    local l = nn.ModuleList({nn.Linear(2, 2)}):append(nn.Tanh())
    spec.eq(#l, 2)
    local n = 0
    for _, m in ipairs(l) do n = n + 1; spec.truthy(class.isinstance(m, nn.Module)) end
    spec.eq(n, 2)
    spec.raises(function() l:call(1, T.randn(3, 4)) end, "in child 1 (Linear) of ModuleList")
    local d = nn.ModuleDict({b = nn.Linear(2, 3), a = nn.Linear(3, 1)})
    spec.eq(table.concat(d:keys(), " "), "a b")
    spec.eq(shape(d.b(T.randn(4, 2))), "4x3")
    spec.eq(shape(d:call("a", T.randn(4, 3))), "4x1")
    spec.raises(function() d:call("a", T.randn(4, 2)) end, "in child 'a' (Linear) of ModuleDict")
    spec.raises(function() d:add("forward", nn.ReLU()) end, "taken by a method")
    local names = {}
    for k in d:named_parameters() do names[#names + 1] = k end
    spec.eq(table.concat(names, " "), "a.weight a.bias b.weight b.bias")
  end)
end)

-- ---- golden fixtures ---------------------------------------------------------------------------------------
local function load_case(name)
  local t, meta = T.load(DIR .. name .. ".safetensors")
  local c = {state = {}, ins = {}, outs = {}, R = {}, gin = {}, gparam = {}, after = {}, raw = t}
  for k, v in pairs(t) do
    local pre, rest = k:match("^([%a]+)%.(.+)$")
    if pre == "state" then c.state[rest] = v
    elseif pre == "in" then c.ins[tonumber(rest)] = v
    elseif pre == "out" then c.outs[tonumber(rest)] = v
    elseif pre == "R" then c.R[tonumber(rest)] = v
    elseif pre == "after" then c.after[rest] = v
    elseif pre == "grad" then
      local kind, n = rest:match("^(%a+)%.(.+)$")
      if kind == "in" then c.gin[tonumber(n)] = v else c.gparam[n] = v end
    end
  end
  c.meta = {}
  for k, v in pairs(meta) do c.meta[k] = json.json_decode(v) end
  return c
end

local cases = {
  linear = {function() return nn.Linear(5, 4) end},
  linear_3d_nobias = {function() return nn.Linear(5, 4, false) end},
  conv2d = {function() return nn.Conv2d(3, 4, 3, {padding = 1}) end},
  conv2d_stride = {function() return nn.Conv2d(3, 4, 3, {stride = 2, padding = 1}) end},
  conv2d_dilated = {function()
    return nn.Conv2d(2, 3, {3, 2}, {stride = {2, 1}, padding = {1, 0}, dilation = 2, bias = false})
  end},
  conv2d_1x1 = {function() return nn.Conv2d(4, 2, 1) end},
  conv2d_groups = {function() return nn.Conv2d(4, 6, 3, 1, 1, 1, 2) end},
  conv_transpose2d_groups = {function() return nn.ConvTranspose2d(4, 6, 3, {stride = 2, padding = 1, groups = 2}) end},
  conv_transpose2d = {function() return nn.ConvTranspose2d(3, 2, 3, {stride = 2, padding = 1, output_padding = 1}) end},
  conv_transpose2d_k4 = {function() return nn.ConvTranspose2d(2, 3, 4, 2, 1) end},
  upsample = {function() return nn.Upsample({scale_factor = 2, mode = "nearest"}) end},
  avgpool = {function() return nn.AvgPool2d(2) end},
  avgpool_k3s2 = {function() return nn.AvgPool2d(3, 2) end},
  groupnorm = {function() return nn.GroupNorm(2, 6, 1e-6) end},
  batchnorm2d = {function() return nn.BatchNorm2d(3, {momentum = 0.2}) end},
  batchnorm2d_eval = {function() return nn.BatchNorm2d(3, {momentum = 0.2}):eval() end},
  batchnorm1d = {function() return nn.BatchNorm1d(5) end},
  batchnorm1d_3d = {function() return nn.BatchNorm1d(3) end},
  layernorm = {function() return nn.LayerNorm(6) end},
  layernorm_2d = {function() return nn.LayerNorm({3, 4}, 1e-6) end},
  embedding = {function() return nn.Embedding(7, 4) end},
  embedding_pad = {function() return nn.Embedding(7, 4, 2) end},
  conv2d_same_k4 = {function() return nn.Conv2d(3, 4, 4, {padding = "same"}) end},
  conv2d_same_dilated = {function() return nn.Conv2d(2, 3, 3, {padding = "same", dilation = 2}) end},
  act_relu = {function() return nn.ReLU() end},
  act_silu = {function() return nn.SiLU() end},
  act_gelu = {function() return nn.GELU() end},
  act_elu = {function() return nn.ELU(0.7) end},
  act_tanh = {function() return nn.Tanh() end},
  act_sigmoid = {function() return nn.Sigmoid() end},
  act_identity = {function() return nn.Identity() end},
  grucell = {function() return nn.GRUCell(4, 5) end},
  grucell_h0 = {function() return nn.GRUCell(4, 5) end},
  gru = {function() return nn.GRU(4, 5, {num_layers = 2, batch_first = true}) end},
  gru_seq_first = {function() return nn.GRU(3, 4) end},
  mha_self = {function() return nn.MultiheadAttention(8, 2, {batch_first = true}) end,
    function(m, x, k) return m(x, x, x, {key_padding_mask = k, average_attn_weights = false}) end},
  mha_cross = {function() return nn.MultiheadAttention(8, 2, {batch_first = true}) end,
    function(m, q, k, v, a) return m(q, k, v, {attn_mask = a}) end},
  mha_float_mask = {function() return nn.MultiheadAttention(8, 2, {batch_first = true}) end,
    function(m, q, k, v, a) return m(q, k, v, {attn_mask = a}) end},
  transformer_x2 = {function() return nn.TransformerEncoderLayer(8, 2, {dim_feedforward = 16, dropout = 0, n_apply = 2,
    batch_first = true}) end,
    function(m, x, k) return m(x, {src_key_padding_mask = k}) end},
  transformer_x1 = {function() return nn.TransformerEncoderLayer(8, 2, {dim_feedforward = 16, dropout = 0,
    batch_first = true}) end},
}

local names = {}
for k in pairs(cases) do names[#names + 1] = k end
table.sort(names)

local TOL = 1e-4

describe("PyTorch parity of layers (forward, input and parameter gradients)", function()
  for _, name in ipairs(names) do
    it(name, function()
      local c = load_case(name)
      local m = cases[name][1]()
      m:load_state_dict(c.state)
      local ins = {}
      for i = 1, #c.ins do
        ins[i] = c.ins[i]:clone()
        if c.gin[i] then ins[i]:requires_grad_(true) end
      end
      local fwd = cases[name][2] or function(mod, ...) return mod(...) end
      local outs = table.pack(fwd(m, table.unpack(ins)))
      local worst, where = 0, ""
      local function note(d, what)
        if d > worst then worst, where = d, what end
      end
      local loss
      for j = 1, #c.outs do
        note(reldiff(outs[j], c.outs[j]), "output " .. j)
        local l = (outs[j] * c.R[j]):sum()
        loss = loss and loss + l or l
      end
      loss:backward()
      for i, g in pairs(c.gin) do note(reldiff(ins[i].grad, g), "grad of input " .. i) end
      local params = {}
      for pname, p in m:named_parameters() do params[pname] = p end
      for pname, g in pairs(c.gparam) do
        spec.truthy(params[pname] and params[pname].grad, "no gradient for " .. pname)
        note(reldiff(params[pname].grad, g), "grad of " .. pname)
      end
      local sd = m:state_dict()
      for bname, b in pairs(c.after) do
        if b:type() == "int64" then spec.eq(sd[bname]:item(), b:item(), bname)
        else note(reldiff(sd[bname], b), "buffer " .. bname) end
      end
      print(string.format("#   %-22s max relative difference %.2e (%s)", name, worst, where))
      if worst > TOL then error(string.format("%s: %s differs by %.3g (relative)", name, where, worst)) end
    end)
  end
end)

describe("PyTorch parity of losses", function()
  local fns = {mse = F.mse_loss, l1 = F.l1_loss, ce = F.cross_entropy, nll = F.nll_loss,
               bce = F.binary_cross_entropy_with_logits, kl = F.gaussian_kl}
  local list = {}
  for _, red in ipairs({"mean", "sum", "none"}) do
    for _, k in ipairs({"mse", "l1", "ce", "nll", "bce", "kl"}) do list[#list + 1] = {k, red} end
  end
  for _, red in ipairs({"mean", "sum", "none"}) do
    list[#list + 1] = {"ce", red, "loss_ce_opts_" .. red}
    list[#list + 1] = {"nll", red, "loss_nll_opts_" .. red}
  end
  list[#list + 1] = {"ce", nil, "loss_ce_smooth"}
  list[#list + 1] = {"bce", nil, "loss_bce_weight"}
  list[#list + 1] = {"ce", nil, "loss_ce_spatial"}
  list[#list + 1] = {"bce", nil, "loss_bce_posweight"}
  for _, e in ipairs(list) do
    local fname = e[3] or ("loss_" .. e[1] .. "_" .. e[2])
    it(fname, function()
      local c = load_case(fname)
      local a = c.ins[1]:clone():requires_grad_(true)
      local b = c.ins[2]:clone()
      if c.gin[2] then b:requires_grad_(true) end
      local opts = {reduction = e[2]}
      local mc = c.meta.case
      if mc.pos_weight then opts.pos_weight = T.tensor(mc.pos_weight) end
      if mc.weight then opts.weight = T.tensor(mc.weight) end
      opts.ignore_index, opts.label_smoothing = mc.ignore_index, mc.label_smoothing
      local out = fns[e[1]](a, b, e[1] == "kl" and (e[2] or "mean") or opts)
      local d = reldiff(out, c.outs[1])
      ;(out * c.R[1]):sum():backward()
      d = math.max(d, reldiff(a.grad, c.gin[1]))
      if c.gin[2] then d = math.max(d, reldiff(b.grad, c.gin[2])) end
      print(string.format("#   %-22s max relative difference %.2e", fname, d))
      if d > TOL then error(fname .. ": differs by " .. d) end
    end)
  end
end)

describe("fixed encodings", function()
  it("GaussianFourierProjection matches the reference formula", function()
    local c = T.load(DIR .. "fourier.safetensors")
    local m = nn.GaussianFourierProjection(8, 16)
    m:load_state_dict({W = c.W})
    spec.truthy(not m.W.requires_grad)
    local d = reldiff(m(c.x), c.out)
    print(string.format("#   fourier max relative difference %.2e", d))
    spec.truthy(d < 1e-4)
    -- W ~ N(0, scale^2)
    local big = nn.GaussianFourierProjection(20000, 16, T.Generator(3))
    spec.near(big.W:std():item(), 16, 0.03)
  end)
  it("sinusoidal positional encoding matches the reference formula", function()
    local c = T.load(DIR .. "sinusoidal.safetensors")
    local pe = nn.SinusoidalPositionalEncoding(8, 11)
    local d = reldiff(pe.pe, c.pe)
    print(string.format("#   sinusoidal max relative difference %.2e", d))
    spec.truthy(d < 1e-5)
    local x = T.randn(2, 5, 8)
    spec.eq(spec.maxdiff(pe(x), x + pe.pe:narrow(1, 1, 5)), 0)
    spec.eq(next((pe:state_dict())), nil) -- the table is not saved by default
  end)
end)

-- ---- gradient checks ----------------------------------------------------------------------------------------
describe("gradient check of every layer (inputs and parameters)", function()
  local g = T.Generator(5)
  local function r(...) return T.randn({...}, g):requires_grad_(true) end
  local checks = {
    {"Linear", function() return nn.Linear(3, 2, {generator = g}) end, {r(2, 3)}},
    {"Conv2d", function() return nn.Conv2d(2, 2, 3, {padding = 1, stride = 2, generator = g}) end, {r(1, 2, 4, 4)}},
    {"Conv2d dilated", function() return nn.Conv2d(1, 2, 2, {dilation = 2, generator = g}) end, {r(1, 1, 4, 4)}},
    {"ConvTranspose2d", function() return nn.ConvTranspose2d(2, 1, 3, {stride = 2, padding = 1, output_padding = 1, generator = g}) end,
     {r(1, 2, 3, 3)}},
    {"GroupNorm", function() local m = nn.GroupNorm(2, 4); T.no_grad(function() m.weight:normal_(1, 0.5, g); m.bias:normal_(0, 0.5, g) end) return m end,
     {r(2, 4, 2, 2)}},
    {"BatchNorm2d", function() return nn.BatchNorm2d(2) end, {r(3, 2, 2, 2)}},
    {"BatchNorm1d", function() return nn.BatchNorm1d(3) end, {r(4, 3)}},
    {"LayerNorm", function() return nn.LayerNorm(4) end, {r(2, 3, 4)}},
    {"Embedding", function() return nn.Embedding(5, 3, {generator = g}) end, {T.tensor({{1, 4}, {4, 0}}, "int64")}},
    {"GRUCell", function() return nn.GRUCell(3, 4, {generator = g}) end, {r(2, 3), r(2, 4)}},
    {"GRU", function() return nn.GRU(2, 3, {batch_first = true, generator = g}) end, {r(2, 3, 2)}},
    {"MultiheadAttention", function() return nn.MultiheadAttention(4, 2, {generator = g}) end, {r(2, 3, 4)}},
    {"TransformerEncoderLayer x2", function()
      return nn.TransformerEncoderLayer(4, 2, {dim_feedforward = 6, dropout = 0, n_apply = 2, activation = "gelu", generator = g}) end,
     {r(1, 3, 4)}},
    {"GaussianFourierProjection", function() return nn.GaussianFourierProjection(3, 1, g) end, {r(4)}},
  }
  for _, e in ipairs(checks) do
    it(e[1], function()
      local m = e[2]()
      local inputs = {}
      for _, x in ipairs(e[3]) do inputs[#inputs + 1] = x end
      local nx = #inputs
      for _, p in ipairs(m:parameters()) do
        if p.requires_grad then inputs[#inputs + 1] = p end
      end
      local err, where = gc.check(function(...)
        local y = m(table.unpack({...}, 1, nx))
        return y
      end, inputs, e[4])
      print(string.format("#   %-28s max error %.2e", e[1], err))
      if not (err <= 2e-2) then error(string.format("%s: error %.3g at %s", e[1], err, where)) end
    end)
  end
  for _, lname in ipairs({"mse_loss", "l1_loss", "binary_cross_entropy_with_logits"}) do
    it("loss " .. lname, function()
      local x = r(3, 2)
      local y = lname == "l1_loss" and x:detach() + T.rand({3, 2}, g):sign() * 0.5 or T.rand({3, 2}, g) -- l1: away from the kink
      local err = gc.check(function(xx) return F[lname](xx, y, {reduction = "sum"}) end, {x})
      spec.truthy(err < 2e-2, "error " .. err)
    end)
  end
  it("loss cross_entropy and gaussian_kl", function()
    local lab = T.tensor({0, 2, 1}, "int64")
    spec.truthy(gc.check(function(x) return F.cross_entropy(x, lab) end, {r(3, 4)}) < 2e-2)
    spec.truthy(gc.check(function(mu, lv) return F.gaussian_kl(mu, lv, "sum") end, {r(3, 2), r(3, 2)}) < 2e-2)
  end)
end)

-- ---- save / load round trip of every layer -------------------------------------------------------------------
describe("save / load round trip of every layer", function()
  local layers = {
    {"Linear", function(g) return nn.Linear(3, 2, {generator = g}) end, function() return T.randn(2, 3) end},
    {"Conv2d", function(g) return nn.Conv2d(2, 3, 3, {generator = g}) end, function() return T.randn(1, 2, 5, 5) end},
    {"ConvTranspose2d", function(g) return nn.ConvTranspose2d(2, 3, 3, {stride = 2, generator = g}) end,
     function() return T.randn(1, 2, 3, 3) end},
    {"GroupNorm", function(g) local m = nn.GroupNorm(2, 4); m.weight = nn.Parameter(T.randn({4}, g)); return m end,
     function() return T.randn(2, 4, 3, 3) end},
    {"BatchNorm2d", function(g)
      local m = nn.BatchNorm2d(3)
      m(T.randn({4, 3, 2, 2}, g) * 3) -- moves the running statistics
      return m:eval()
    end, function() return T.randn(2, 3, 2, 2) end},
    {"BatchNorm1d", function(g) local m = nn.BatchNorm1d(3); m(T.randn({5, 3}, g) + 2); return m:eval() end,
     function() return T.randn(4, 3) end},
    {"LayerNorm", function(g) local m = nn.LayerNorm(4); T.no_grad(function() m.bias:normal_(0, 1, g) end) return m end,
     function() return T.randn(2, 4) end},
    {"Embedding", function(g) return nn.Embedding(6, 3, {generator = g}) end,
     function() return T.tensor({1, 5, 0}, "int64") end},
    {"GRUCell", function(g) return nn.GRUCell(3, 4, {generator = g}) end, function() return T.randn(2, 3) end},
    {"GRU", function(g) return nn.GRU(3, 4, {num_layers = 2, batch_first = true, generator = g}) end,
     function() return T.randn(2, 5, 3) end},
    {"MultiheadAttention", function(g) return nn.MultiheadAttention(4, 2, {generator = g}) end,
     function() return T.randn(2, 3, 4) end},
    {"TransformerEncoderLayer", function(g) return nn.TransformerEncoderLayer(4, 2, {dim_feedforward = 8, generator = g}):eval() end,
     function() return T.randn(2, 3, 4) end},
    {"GaussianFourierProjection", function(g) return nn.GaussianFourierProjection(4, 2, g) end, function() return T.rand(3) end},
    {"Sequential", function(g)
      return nn.Sequential(nn.Conv2d(1, 2, 3, {generator = g}), nn.BatchNorm2d(2), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(8, 2, {generator = g})):eval()
    end, function() return T.randn(2, 1, 6, 6) end},
  }
  for _, e in ipairs(layers) do
    it(e[1], function()
      local a, b = e[2](T.Generator(1)), e[2](T.Generator(2))
      b:eval(); a:eval()
      local x = e[3]()
      T.save(TMP, (a:state_dict()))
      local loaded = T.load(TMP)
      local y1 = T.no_grad(function() return a(x) end)
      local yb = T.no_grad(function() return b(x) end)
      spec.truthy(spec.maxdiff(y1, yb) > 0, "two seeds must differ")
      b:load_state_dict(loaded)
      local y2 = T.no_grad(function() return b(x) end)
      spec.eq(spec.maxdiff(y1, y2), 0)
    end)
  end
  os.remove(TMP)
end)

-- ---- initialisers ---------------------------------------------------------------------------------------------
describe("initialisers", function()
  local function stats(t) return t:min():item(), t:max():item(), t:mean():item(), t:std():item() end
  it("Linear and Conv2d follow PyTorch's defaults (U(+-1/sqrt(fan_in)))", function()
    local l = nn.Linear(400, 300, {generator = T.Generator(1)})
    local b = 1 / math.sqrt(400)
    local lo, hi, mean, std = stats(l.weight)
    spec.truthy(lo >= -b and hi <= b and hi > 0.99 * b and lo < -0.99 * b)
    spec.near(std, b / math.sqrt(3), 0.02)
    spec.truthy(math.abs(mean) < 0.01 * b * 10)
    lo, hi = stats(l.bias)
    spec.truthy(lo >= -b and hi <= b)
    local c = nn.Conv2d(16, 32, 3, {generator = T.Generator(1)})
    local cb = 1 / math.sqrt(16 * 9)
    lo, hi, _, std = stats(c.weight)
    spec.truthy(lo >= -cb and hi <= cb)
    spec.near(std, cb / math.sqrt(3), 0.03)
    local ct = nn.ConvTranspose2d(16, 8, 4, {generator = T.Generator(1)}) -- fan_in from dim 2: 8 * 16
    lo, hi = stats(ct.weight)
    spec.truthy(hi <= 1 / math.sqrt(128) and hi > 0.95 / math.sqrt(128))
  end)
  it("are reproducible from a seeded generator and differ across seeds", function()
    local a = nn.Linear(5, 5, {generator = T.Generator(7)})
    local b = nn.Linear(5, 5, {generator = T.Generator(7)})
    local c = nn.Linear(5, 5, {generator = T.Generator(8)})
    spec.eq(spec.maxdiff(a.weight, b.weight), 0)
    spec.truthy(spec.maxdiff(a.weight, c.weight) > 0)
    T.manual_seed(3); local d = nn.Linear(5, 5)
    T.manual_seed(3); local e = nn.Linear(5, 5)
    spec.eq(spec.maxdiff(d.weight, e.weight), 0)
  end)
  it("xavier, kaiming, normal, uniform, zeros, ones", function()
    local g = T.Generator(2)
    local w = T.empty(300, 200)
    nn.init.xavier_uniform_(w, {generator = g})
    local lo, hi, _, std = stats(w)
    local a = math.sqrt(6 / 500)
    spec.truthy(lo >= -a and hi <= a)
    spec.near(std, math.sqrt(2 / 500), 0.02)
    nn.init.xavier_normal_(w, 2.0, g)
    spec.near(w:std():item(), 2 * math.sqrt(2 / 500), 0.02)
    nn.init.kaiming_uniform_(w, {a = 0, nonlinearity = "relu", generator = g})
    spec.near(w:std():item(), math.sqrt(2 / 200), 0.02)
    nn.init.kaiming_normal_(w, 0, "fan_out", "relu", g)
    spec.near(w:std():item(), math.sqrt(2 / 300), 0.02)
    nn.init.normal_(w, 1, 3, g)
    spec.near(w:mean():item(), 1, 0.02)
    spec.near(w:std():item(), 3, 0.02)
    nn.init.uniform_(w, -2, 5, g)
    lo, hi = stats(w)
    spec.truthy(lo >= -2 and hi <= 5 and hi > 4.9)
    local p = nn.Parameter(T.empty(3))
    nn.init.zeros_(p); spec.eq(p:sum():item(), 0)
    nn.init.ones_(p); spec.eq(p:sum():item(), 3)
    spec.near(nn.init.calculate_gain("leaky_relu", math.sqrt(5)), math.sqrt(2 / 6), 1e-12)
    spec.raises(function() nn.init.xavier_uniform_(T.empty(3)) end, "at least 2 dimensions")
  end)
  it("GRU, MultiheadAttention, Embedding and norms use PyTorch's schemes", function()
    local gru = nn.GRUCell(10, 100, {generator = T.Generator(1)})
    local k = 1 / math.sqrt(100)
    for _, p in ipairs(gru:parameters()) do
      spec.truthy(p:max():item() <= k and p:min():item() >= -k)
    end
    local mha = nn.MultiheadAttention(64, 4, {generator = T.Generator(1)})
    spec.near(mha.in_proj_weight:std():item(), math.sqrt(2 / (64 + 192)), 0.03)
    spec.eq(mha.in_proj_bias:abs():sum():item(), 0)
    spec.eq(mha.out_proj.bias:abs():sum():item(), 0)
    local e = nn.Embedding(1000, 20, {generator = T.Generator(1)})
    spec.near(e.weight:std():item(), 1, 0.02)
    local ln = nn.LayerNorm(5)
    spec.eq(ln.weight:sum():item(), 5); spec.eq(ln.bias:sum():item(), 0)
  end)
end)

-- ---- dropout ---------------------------------------------------------------------------------------------------
describe("Dropout", function()
  it("zeroes about p of the elements, scales the rest, and is the identity in eval mode", function()
    local d = nn.Dropout(0.25, {generator = T.Generator(1)})
    local x = T.ones(100, 100)
    local y = d(x)
    local kept = y:gt(0):sum():item() / 10000
    spec.near(kept, 0.75, 0.03)
    spec.near(y:max():item(), 1 / 0.75, 1e-6)
    d:eval()
    spec.truthy(rawequal(d(x), x))
  end)
  it("repeats with the same generator state", function()
    local a = nn.Dropout(0.5, {generator = T.Generator(4)})
    local b = nn.Dropout(0.5, {generator = T.Generator(4)})
    local x = T.randn(10, 10)
    spec.eq(spec.maxdiff(a(x), b(x)), 0)
    spec.truthy(spec.maxdiff(a(x), a(x)) > 0)
  end)
end)

-- ---- MultiheadAttention and Transformer details -------------------------------------------------------------------
describe("unbatched images", function()
  it("Conv2d adds a shift per image and channel (N, out) in its output pass, as conv + shift", function()
    local m, x, shift = nn.Conv2d(3, 4, 3, {padding = 1}), T.randn(2, 3, 6, 6), T.randn(2, 4)
    local want = m(x) + shift:view(2, 4, 1, 1)
    spec.eq(spec.maxdiff(m(x, shift), want) < 1e-5, true)
    local nb = nn.Conv2d(3, 4, 3, {padding = 1, bias = false})
    spec.eq(spec.maxdiff(nb(x, shift), nb(x) + shift:view(2, 4, 1, 1)) < 1e-5, true)
    spec.raises(function() m(x, T.randn(3, 4)) end, "Conv2d(3 -> 4, k=3, padding=1)", "shift must be (N, 4)", "got 3x4")
    spec.raises(function() m(x[1], shift) end, "shift must be (N, 4)")
    local r = T.randn(2, 4, 6, 6)
    spec.eq(spec.maxdiff(m:forward_residual(x, r, 0.5, shift), (m(x, shift) + r) * 0.5) < 1e-5, true)
    spec.eq(spec.maxdiff(m:forward_residual(x, r), m(x) + r) < 1e-5, true)
    spec.raises(function() m:forward_residual(x, T.randn(2, 4, 5, 5)) end, "Conv2d(3 -> 4, k=3, padding=1)", "residual of shape (2x4x5x5)")
  end)

  it("Conv2d, ConvTranspose2d and AvgPool2d take one image (C, H, W)", function()
    local x = T.randn(3, 6, 6)
    for _, m in ipairs({nn.Conv2d(3, 4, 3, {padding = 1}), nn.ConvTranspose2d(3, 2, 3, {stride = 2}), nn.AvgPool2d(2)}) do
      local y = m(x)
      local yb = m(x:unsqueeze(1))
      spec.eq(y:dim(), 3)
      spec.eq(spec.maxdiff(y, yb:squeeze(1)), 0)
    end
  end)
end)

describe("attention details", function()
  it("returns head-averaged or per-head weights, and none without need_weights", function()
    local m = nn.MultiheadAttention(8, 2, {batch_first = true})
    local x = T.randn(3, 5, 8)
    local y, w = m(x, x, x)
    spec.eq(shape(y), "3x5x8"); spec.eq(shape(w), "3x5x5")
    spec.near(w:sum(3):mean():item(), 1, 1e-5)
    local _, wh = m(x, x, x, {average_attn_weights = false})
    spec.eq(shape(wh), "3x2x5x5")
    spec.eq(spec.maxdiff(wh:mean(2), w) < 1e-6, true)
    local _, none = m(x, x, x, {need_weights = false})
    spec.truthy(none == nil)
    local kpm = T.tensor({{0, 0, 0, 0, 1}, {0, 0, 0, 0, 0}, {1, 0, 0, 0, 0}}, "int64")
    local _, wm = m(x, x, x, {key_padding_mask = kpm})
    spec.eq(wm[1]:select(2, 5):abs():sum():item(), 0)
    spec.eq(wm[3]:select(2, 1):abs():sum():item(), 0)
  end)
  it("sequence-first by default, as PyTorch: (L, N, E); batch_first = true takes (N, L, E)", function()
    local sf = nn.MultiheadAttention(8, 2, {generator = T.Generator(5)})
    local bf = nn.MultiheadAttention(8, 2, {batch_first = true, generator = T.Generator(5)})
    local x = T.randn(3, 5, 8) -- (N, L, E)
    local xs = x:transpose(1, 2):contiguous() -- (L, N, E)
    local yb, wb = bf(x, x, x)
    local ys, ws = sf(xs, xs, xs)
    spec.eq(shape(ys), "5x3x8")
    spec.truthy(spec.maxdiff(ys:transpose(1, 2), yb) < 1e-5, "same attention in either layout")
    spec.truthy(spec.maxdiff(ws, wb) < 1e-6, "weights are (N, L, S) in both")
    local ts = nn.TransformerEncoderLayer(8, 2, {dim_feedforward = 16, dropout = 0, generator = T.Generator(6)})
    local tb = nn.TransformerEncoderLayer(8, 2, {dim_feedforward = 16, dropout = 0, batch_first = true,
      generator = T.Generator(6)})
    spec.truthy(spec.maxdiff(ts(xs):transpose(1, 2), tb(x)) < 1e-5, "TransformerEncoderLayer too")
  end)
  it("a float key_padding_mask is added to the scores, an int64 one masks (PyTorch's float and bool)", function()
    local m = nn.MultiheadAttention(4, 2, {batch_first = true, generator = T.Generator(7)})
    local x = T.randn(2, 3, 4)
    local fm = T.tensor({{0, -1, -2.5}, {0, 0, -1}})
    local _, w = m(x, x, x, {key_padding_mask = fm, average_attn_weights = false})
    -- the same numbers as an additive attn_mask of shape (N * heads, L, S)
    local am = fm:view(2, 1, 1, 3):expand(2, 2, 3, 3):reshape(4, 3, 3)
    local _, wa = m(x, x, x, {attn_mask = am, average_attn_weights = false})
    spec.truthy(spec.maxdiff(w, wa) < 1e-6, "float key_padding_mask added")
    spec.truthy(w[1][1][1][2] > 0, "an entry of -1 is not masked out")
    local _, wi = m(x, x, x, {key_padding_mask = T.tensor({{0, 1, 0}, {0, 0, 1}}, "int64")})
    spec.eq(wi[1]:select(2, 2):abs():sum():item(), 0, "int64 nonzero entries are masked out")
  end)
  it("the transformer layer applied k times with shared weights equals k calls", function()
    local g = T.Generator(3)
    local t2 = nn.TransformerEncoderLayer(8, 2, {dim_feedforward = 16, dropout = 0, n_apply = 2, batch_first = true,
      generator = g})
    local x = T.randn(2, 4, 8)
    local a = t2(x)
    local b = t2(t2(x, {n_apply = 1}), {n_apply = 1})
    spec.eq(spec.maxdiff(a, b), 0)
    local names = {}
    for n in t2:named_parameters() do names[#names + 1] = n end
    spec.eq(table.concat(names, " "), "self_attn.in_proj_weight self_attn.in_proj_bias self_attn.out_proj.weight " ..
      "self_attn.out_proj.bias linear1.weight linear1.bias linear2.weight linear2.bias norm1.weight norm1.bias " ..
      "norm2.weight norm2.bias")
    local _, w = t2(x, {need_weights = true})
    spec.eq(shape(w), "2x4x4")
  end)
  it("last_rows: the last application's last rows alone equal the full output's, gradients too", function()
    for _, case in ipairs({{norm_first = false, batch_first = true}, {norm_first = true, batch_first = true},
                           {norm_first = false, batch_first = false}}) do
      local t2 = nn.TransformerEncoderLayer(8, 2, {dim_feedforward = 16, dropout = 0, n_apply = 2,
        batch_first = case.batch_first, norm_first = case.norm_first, generator = T.Generator(4)})
      local sd = case.batch_first and 2 or 1
      local x = T.randn(case.batch_first and {3, 5, 8} or {5, 3, 8}, T.Generator(5))
      local kpm = T.tensor({{0, 0, 1, 0, 0}, {0, 0, 0, 0, 0}, {1, 0, 0, 0, 0}}, "int64")
      local xa, xb = x:clone():requires_grad_(), x:clone():requires_grad_()
      local full, wf = t2(xa, {src_key_padding_mask = kpm, need_weights = true, average_attn_weights = false})
      local part, wp = t2(xb, {src_key_padding_mask = kpm, need_weights = true, average_attn_weights = false,
        last_rows = 2})
      local what = string.format("norm_first %s, batch_first %s", case.norm_first, case.batch_first)
      spec.eq(shape(part), case.batch_first and "3x2x8" or "2x3x8", what)
      spec.truthy(spec.maxdiff(part, full:narrow(sd, 4, 2)) < 1e-5, what)
      spec.truthy(spec.maxdiff(wp, wf:narrow(3, 4, 2)) < 1e-6, what .. ": weights")
      -- a weighted sum: a plain one of a LayerNorm's output has no gradient
      local r = T.randn(part:size(), T.Generator(6))
      T.sum(full:narrow(sd, 4, 2) * r):backward()
      T.sum(part * r):backward()
      spec.truthy(spec.maxdiff(xa.grad, xb.grad) < 1e-5, what .. ": input gradient")
      local ga = t2.self_attn.in_proj_weight.grad:clone()
      t2:zero_grad()
      full, part = t2(xa), t2(xb, {last_rows = 2})
      T.sum(full:narrow(sd, 4, 2) * r):backward()
      local gfull = t2.self_attn.in_proj_weight.grad:clone()
      t2:zero_grad()
      T.sum(part * r):backward()
      spec.truthy(spec.maxdiff(gfull, t2.self_attn.in_proj_weight.grad) < 1e-5, what .. ": weight gradient")
      spec.truthy(ga:abs():sum():item() > 0, what .. ": a gradient reached the weights")
    end
  end)
end)

-- ---- bad input ---------------------------------------------------------------------------------------------------
describe("bad input names the layer and the shapes", function()
  local cases2 = {
    {nn.Linear(4, 3), T.randn(2, 5), "Linear(4 -> 3): input of shape 2x5: the last dimension must be 4"},
    {nn.Conv2d(3, 8, 3), T.randn(3, 8), "Conv2d(3 -> 8, k=3): expected an image batch (N, 3, H, W) or an image (3, H, W), got shape 3x8"},
    {nn.Conv2d(3, 8, 3), T.randn(2, 3, 8), "Conv2d(3 -> 8, k=3): expected an image batch (N, 3, H, W), got shape 2x3x8 (2 channels)"},
    {nn.Conv2d(3, 8, 5), T.randn(1, 3, 3, 3), "Conv2d(3 -> 8, k=5)", "smaller than the kernel"},
    {nn.ConvTranspose2d(2, 4, 3), T.randn(1, 3, 4, 4), "ConvTranspose2d(2 -> 4, k=3)", "got shape 1x3x4x4"},
    {nn.AvgPool2d(2), T.randn(2, 3), "AvgPool2d(k=2, stride=2): expected an image batch (N, C, H, W) or an image (C, H, W), got shape 2x3"},
    {nn.Upsample({scale_factor = 2}), T.randn(3, 4), "Upsample", "got shape 3x4"},
    {nn.GroupNorm(2, 4), T.randn(2, 6, 3, 3), "GroupNorm(2 groups, 4 channels", "expected input (N, 4, ...), got shape 2x6x3x3"},
    {nn.BatchNorm2d(3), T.randn(2, 3, 4), "BatchNorm2d(3", "expected input (N, 3, H, W), got shape 2x3x4"},
    {nn.BatchNorm1d(3), T.randn(2, 4), "BatchNorm1d(3", "got shape 2x4"},
    {nn.BatchNorm1d(3), T.randn(1, 3), "BatchNorm1d(3", "more than 1 value per channel"},
    {nn.LayerNorm(5), T.randn(2, 4), "LayerNorm(5, eps=1e-05): input of shape 2x4 does not end in 5"},
    {nn.Embedding(4, 2), T.randn(3), "Embedding(4, 2): indices must be an int64 tensor"},
    {nn.Embedding(4, 2), T.tensor({1, 7}, "int64"), "Embedding(4, 2)", "index_select"},
    {nn.GRUCell(3, 4), T.randn(2, 5), "GRUCell(3 -> 4): expected input (N, 3), got shape 2x5"},
    {nn.GRU(3, 4, {batch_first = true}), T.randn(2, 5, 2), "GRU(3 -> 4, layers=1, batch_first)", "got shape 2x5x2"},
    {nn.MultiheadAttention(8, 2), T.randn(2, 3, 6), "MultiheadAttention(8, heads=2): query must be (L, N, E) with 8 features, got shape 2x3x6"},
    {nn.MultiheadAttention(8, 2, {batch_first = true}), T.randn(2, 3, 6), "query must be (N, L, E)"},
    {nn.GaussianFourierProjection(4), T.randn(2, 2), "GaussianFourierProjection(4, scale=1): expected a vector"},
    {nn.SinusoidalPositionalEncoding(8, 4), T.randn(1, 5, 8), "SinusoidalPositionalEncoding(8, max_len=4)"},
  }
  for i, e in ipairs(cases2) do
    it(string.format("%d %s", i, class.name(e[1])), function()
      spec.raises(function() e[1](e[2]) end, table.unpack(e, 3))
    end)
  end
  it("GRUCell hidden state, attention masks and loss labels", function()
    spec.raises(function() nn.GRUCell(3, 4)(T.randn(2, 3), T.randn(3, 4)) end, "hidden state of shape 3x4 does not match input 2x3")
    local m = nn.MultiheadAttention(4, 2, {batch_first = true})
    local x = T.randn(2, 3, 4)
    spec.raises(function() m(x, x, x, {key_padding_mask = T.zeros({2, 4}, "int64")}) end, "key_padding_mask of shape 2x4, expected 2x3")
    spec.raises(function() m(x, x, x, {attn_mask = T.zeros(3, 2)}) end, "attn_mask of shape 3x2")
    spec.raises(function() F.cross_entropy(T.randn(3, 4), T.tensor({0, 1}, "int64")) end, "need labels of shape 3, got 2")
    spec.raises(function() F.cross_entropy(T.randn(3, 4), T.tensor({0, 1, 2})) end, "int64")
    spec.raises(function() F.mse_loss(T.randn(3, 4), T.randn(4, 3)) end, "mse_loss", "3x4", "4x3")
    spec.raises(function() F.mse_loss(T.randn(3), T.randn(3), "avg") end, "reduction must be")
  end)
end)

describe("layer options (issue 22)", function()
  it("an unknown option key is refused, naming the layer and the key", function()
    spec.raises(function() nn.Conv2d(3, 8, 3, {strides = 2}) end, "Conv2d", "unknown option 'strides'", "stride")
    spec.raises(function() nn.Linear(3, 4, {biass = false}) end, "Linear", "unknown option 'biass'")
    spec.raises(function() nn.ConvTranspose2d(3, 8, 3, {padd = 1}) end, "ConvTranspose2d", "'padd'")
    spec.raises(function() nn.GroupNorm(2, 8, {epsilon = 1e-3}) end, "GroupNorm", "'epsilon'")
    spec.eq(nn.Conv2d(3, 8, 3, {stride = 2, bias = false}).bias, nil)
    spec.eq(nn.Linear(3, 4, {bias = false}).bias, nil)
  end)
end)

describe("errors name the layer and the value (issue 22)", function()
  it("every layer called with nil says which layer, not 'attempt to index a nil value'", function()
    local layers = {nn.Linear(3, 4), nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(3, 4, 3), nn.GroupNorm(2, 4),
      nn.LayerNorm(4), nn.BatchNorm2d(4), nn.Embedding(5, 3), nn.GRU(3, 4), nn.GRUCell(3, 4), nn.ReLU(), nn.SiLU(),
      nn.Dropout(0.1), nn.Flatten(), nn.MultiheadAttention(4, 2), nn.Sequential(nn.Linear(3, 4))}
    for _, m in ipairs(layers) do
      local name = getmetatable(m).__name or tostring(m):match("^(%w+)")
      local err = spec.raises(function() return m(nil) end, "the input is nil, not a tensor")
      spec.truthy(not err:find("attempt to", 1, true), err)
      spec.truthy(err:find(name, 1, true), err .. " lacks " .. name)
    end
    spec.raises(function() return nn.Linear(3, 4)("x") end, "Linear(3 -> 4)", "string x")
  end)
  it("constructor sizes that are not positive integers", function()
    spec.raises(function() nn.GroupNorm(0, 8) end, "GroupNorm", "num_groups 0")
    spec.raises(function() nn.Conv2d(3, 8, 3, {groups = 0}) end, "Conv2d", "groups", "0")
    spec.raises(function() nn.ConvTranspose2d(3, 8, 3, {groups = 0}) end, "ConvTranspose2d", "groups")
    spec.raises(function() nn.MultiheadAttention(8, 0) end, "MultiheadAttention", "num_heads 0")
  end)
end)

describe("functional entries and optimiser functions name themselves on bad input (issue 22)", function()
  it("nil where a tensor or a table belongs", function()
    for _, name in ipairs({"relu", "silu", "gelu", "elu", "tanh", "sigmoid", "softmax", "log_softmax"}) do
      local err = spec.raises(function() return F[name](nil) end, name .. ": the input is nil")
      spec.truthy(not err:find("attempt to", 1, true), err)
    end
    spec.raises(function() return F.dropout(nil, 0.5) end, "dropout: the input is nil")
    spec.raises(function() return F.dropout(T.ones(2), nil) end, "dropout", "probability")
    spec.raises(function() return F.embedding(T.zeros(2, "int64"), nil) end, "embedding: the weight is nil")
    spec.raises(function() return F.pad2d(T.zeros(1, 1, 2, 2), 1) end, "pad2d: padding 2 is nil")
    local optim = require 'tdrl.optim'
    spec.raises(function() optim.adam() end, "adam(params, grads, config, state)")
    spec.raises(function() optim.sgd({}, nil, nil, {}) end, "sgd(params, grads, config, state)")
    spec.raises(function() optim.clip_grad_value_() end, "clip_grad_value_")
    spec.raises(function() optim.clip_grad_value_(5, 1) end, "clip_grad_value_", "number")
  end)
end)

describe("constructor arguments are checked, naming the layer (issue 22)", function()
  it("missing, zero, negative or fractional sizes", function()
    local cases = {
      {"GRUCell", function() return nn.GRUCell() end, "input_size"}, {"GRU", function() return nn.GRU(3) end, "hidden_size"},
      {"Embedding", function() return nn.Embedding(-1, 4) end, "num_embeddings"},
      {"BatchNorm2d", function() return nn.BatchNorm2d(2.5) end, "num_features"},
      {"LayerNorm", function() return nn.LayerNorm({4, 0}) end, "normalized_shape[2]"},
      {"Conv2d", function() return nn.Conv2d() end, "in_channels"},
      {"Conv2d", function() return nn.Conv2d(3, 4) end, "kernel_size"},
      {"TransformerEncoderLayer", function() return nn.TransformerEncoderLayer() end, "d_model"},
      {"SinusoidalPositionalEncoding", function() return nn.SinusoidalPositionalEncoding() end, "d_model"},
      {"MSELoss", function() return nn.MSELoss(3) end, "options"},
      {"ModuleDict", function() return nn.ModuleDict(5) end, "expected a table"},
    }
    for _, c in ipairs(cases) do
      local err = spec.raises(c[2], c[1], c[3])
      spec.truthy(not err:find("attempt to", 1, true) and not err:find("bad argument", 1, true), err)
    end
  end)
end)
