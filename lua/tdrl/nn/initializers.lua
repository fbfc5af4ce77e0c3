-- nn.init: in-place initialisers with PyTorch's formulas, drawing from seeded generators.
-- Each takes the tensor first and then either PyTorch's positional arguments or one options
-- table; a Generator may be given as the last argument or as opts.generator (default: the
-- default generator, reseeded by T.manual_seed). They work on parameters (gradients are
-- switched off while they fill) and return the tensor.
--   nn.init.kaiming_uniform_(w, math.sqrt(5))           -- PyTorch's positional style
--   nn.init.kaiming_uniform_(w, {a = math.sqrt(5), generator = g})
--   nn.init.xavier_uniform_(w, {gain = nn.init.calculate_gain('relu')})
local T = require 'tdrl'

local init = {}
local GEN_MT = debug.getregistry()["tdrl.Generator"]

local function is_gen(v) return getmetatable(v) == GEN_MT end
init.is_generator = is_gen

-- splits (t, ...) into positional values, an options table and a generator
local function args(names, ...)
  local n = select("#", ...)
  local vals = {...}
  local gen, opts = nil, nil
  if n > 0 and is_gen(vals[n]) then gen = vals[n]; vals[n] = nil; n = n - 1 end
  if n > 0 and type(vals[n]) == "table" then opts = vals[n]; vals[n] = nil; n = n - 1 end
  opts = opts or {}
  local out = {}
  for i, name in ipairs(names) do
    if vals[i] ~= nil then out[name] = vals[i] else out[name] = opts[name] end
  end
  out.generator = gen or opts.generator
  return out
end

local function fill(t, fn)
  T.no_grad(fn)
  return t
end

--- recommended gain of a nonlinearity (PyTorch's calculate_gain)
function init.calculate_gain(nonlinearity, param)
  nonlinearity = nonlinearity or "leaky_relu"
  local linear = {linear = 1, conv1d = 1, conv2d = 1, conv3d = 1, conv_transpose1d = 1, conv_transpose2d = 1,
                  conv_transpose3d = 1, sigmoid = 1}
  if linear[nonlinearity] then return 1 end
  if nonlinearity == "tanh" then return 5 / 3 end
  if nonlinearity == "relu" then return math.sqrt(2) end
  if nonlinearity == "leaky_relu" then
    local slope = param == nil and 0.01 or param
    return math.sqrt(2 / (1 + slope * slope))
  end
  if nonlinearity == "selu" then return 3 / 4 end
  error("calculate_gain: unsupported nonlinearity '" .. tostring(nonlinearity) .. "'", 2)
end

--- fan_in, fan_out of a weight (dim 2 and dim 1 times the receptive field)
function init.calculate_fan_in_and_fan_out(t)
  local d = t:dim()
  if d < 2 then
    error("init: fan in and fan out need a tensor of at least 2 dimensions, got shape " ..
      table.concat(t:size(), "x"), 3)
  end
  local receptive = 1
  for i = 3, d do receptive = receptive * t:size(i) end
  return t:size(2) * receptive, t:size(1) * receptive
end

local function fan(t, mode)
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  if mode == nil or mode == "fan_in" then return fi end
  if mode == "fan_out" then return fo end
  error("init: mode must be 'fan_in' or 'fan_out', got '" .. tostring(mode) .. "'", 3)
end

function init.uniform_(t, ...)
  local o = args({"a", "b"}, ...)
  return fill(t, function() t:uniform_(o.a or 0, o.b or 1, o.generator) end)
end

function init.normal_(t, ...)
  local o = args({"mean", "std"}, ...)
  return fill(t, function() t:normal_(o.mean or 0, o.std or 1, o.generator) end)
end

function init.constant_(t, v) return fill(t, function() t:fill_(v) end) end
function init.zeros_(t) return init.constant_(t, 0) end
function init.ones_(t) return init.constant_(t, 1) end

function init.xavier_uniform_(t, ...)
  local o = args({"gain"}, ...)
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  local std = (o.gain or 1) * math.sqrt(2 / (fi + fo))
  local a = math.sqrt(3) * std
  return fill(t, function() t:uniform_(-a, a, o.generator) end)
end

function init.xavier_normal_(t, ...)
  local o = args({"gain"}, ...)
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  local std = (o.gain or 1) * math.sqrt(2 / (fi + fo))
  return fill(t, function() t:normal_(0, std, o.generator) end)
end

--- kaiming_uniform_(t, a = 0, mode = 'fan_in', nonlinearity = 'leaky_relu')
function init.kaiming_uniform_(t, ...)
  local o = args({"a", "mode", "nonlinearity"}, ...)
  local gain = init.calculate_gain(o.nonlinearity or "leaky_relu", o.a or 0)
  local bound = math.sqrt(3) * gain / math.sqrt(fan(t, o.mode))
  return fill(t, function() t:uniform_(-bound, bound, o.generator) end)
end

function init.kaiming_normal_(t, ...)
  local o = args({"a", "mode", "nonlinearity"}, ...)
  local gain = init.calculate_gain(o.nonlinearity or "leaky_relu", o.a or 0)
  local std = gain / math.sqrt(fan(t, o.mode))
  return fill(t, function() t:normal_(0, std, o.generator) end)
end

--- PyTorch's default for Linear / Conv weights (kaiming_uniform a = sqrt 5, i.e. U(+-1/sqrt(fan_in)))
--- and for their biases (U(+-1/sqrt(fan_in)) with the weight's fan_in).
function init.default_weight_(w, gen)
  return init.kaiming_uniform_(w, {a = math.sqrt(5), generator = gen})
end

function init.default_bias_(b, w, gen)
  local fi = init.calculate_fan_in_and_fan_out(w)
  local bound = fi > 0 and 1 / math.sqrt(fi) or 0
  return init.uniform_(b, {a = -bound, b = bound, generator = gen})
end

return init
