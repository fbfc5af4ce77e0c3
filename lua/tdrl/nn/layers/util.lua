-- Helpers shared by the layer files: argument parsing and error messages.
local class = require 'tdrl.class'
local init = require 'tdrl.nn.initializers'
local F = require 'tdrl.nn.functional'

local U = {}

--- splits constructor arguments (...) into PyTorch-style positional values named by `names`
--- and an options table (a trailing table; a trailing Generator becomes opts.generator).
--- names.layer names the constructor and names.options lists the keys it takes besides the
--- positional ones and `generator`: any other key is an error (a typo such as `strides` was
--- ignored, and the layer built with the default).
function U.args(names, ...)
  local n = select("#", ...)
  local vals = {...}
  local opts = {}
  if n > 0 and init.is_generator(vals[n]) then
    opts.generator = vals[n]; vals[n] = nil; n = n - 1
  end
  if n > 0 and type(vals[n]) == "table" and not class.of(vals[n]) then
    for k, v in pairs(vals[n]) do opts[k] = v end
    vals[n] = nil; n = n - 1
  end
  if names.layer then
    local known = {generator = true}
    for _, k in ipairs(names) do known[k] = true end
    for _, k in ipairs(names.options or {}) do known[k] = true end
    for k in pairs(opts) do
      if not known[k] then
        local list = {}
        for name in pairs(known) do list[#list + 1] = name end
        table.sort(list)
        error(string.format("%s: unknown option '%s' (known: %s)", names.layer, tostring(k), table.concat(list, ", ")), 3)
      end
    end
  end
  if n > #names then
    error(string.format("%s: too many arguments (%d, at most %d)", names.layer or "layer", n, #names), 3)
  end
  for i = 1, n do
    if vals[i] ~= nil then opts[names[i]] = vals[i] end
  end
  return opts
end

--- refuses a constructor argument that is not a positive integer (a 0 ended in "attempt to
--- perform 'n%%0'", a nil in "attempt to perform arithmetic on a nil value"), naming the layer,
--- the argument and the value: U.check_ints(layer, name1, value1, name2, value2, ...)
function U.check_ints(layer, ...)
  local n = select("#", ...)
  for i = 1, n, 2 do
    local name, v = select(i, ...)
    if math.type(v) ~= "integer" or v < 1 then
      error(string.format("%s: %s must be a positive integer, got %s", layer, name, tostring(v)), 3)
    end
  end
end

--- "Linear(4 -> 8)": the layer as named in error messages
function U.label(m)
  local e = m:extra_repr()
  return class.name(m) .. (e ~= "" and "(" .. e .. ")" or "")
end

function U.fail(m, fmt, ...)
  error(U.label(m) .. ": " .. string.format(fmt, ...), 0)
end

U.shape = F.shape_str

function U.pair_text(a, b)
  if a == b then return tostring(a) end
  return tostring(a) .. "x" .. tostring(b)
end

return U
