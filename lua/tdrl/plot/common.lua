-- Helpers shared by the figure kinds: the theme, converting inputs to Lua lists, number
-- formatting, finishing a figure (writing the PNG).
local M = {}

-- Theme: text scales are multiples of the 5x7 font (scale 2 = 14-pixel capitals).
M.theme = {
  text = 0x222222,     -- titles, labels, tick labels
  axis = 0x555555,     -- frame and tick marks
  grid = 0xE6E6E6,     -- grid lines behind the data
  font = 2,            -- tick labels, axis labels, legend
  title = 2,           -- title (drawn bold)
  pad = 18,            -- space around the figure's edge
  tick = 6,            -- tick mark length
  line_width = 2.5,
  band_alpha = 0.22,
}

local T
local function tensor_mod()
  if T == nil then
    local ok, mod = pcall(require, 'tdrl')
    T = ok and mod or false
  end
  return T
end

function M.is_tensor(v)
  local mod = tensor_mod()
  return mod and mod.is_tensor and mod.is_tensor(v) or false
end

--- a plain Lua list of numbers from a 1-D tensor or a list; what names the argument in errors
function M.list(v, what, fn)
  if M.is_tensor(v) then
    if v:dim() ~= 1 then
      error(string.format("%s: %s must be 1-D, got a %d-D tensor", fn, what, v:dim()), 3)
    end
    return v:float():totable()
  end
  if type(v) ~= "table" then
    error(string.format("%s: %s must be a list of numbers or a 1-D tensor, got %s", fn, what, type(v)), 3)
  end
  for i = 1, #v do
    if type(v[i]) ~= "number" then
      error(string.format("%s: %s[%d] is %s, not a number", fn, what, i, type(v[i])), 3)
    end
  end
  return v
end

--- rows of numbers {{...}, ...} from a 2-D tensor or a nested table; returns rows, R, C
function M.matrix(m, fn)
  local rows
  if M.is_tensor(m) then
    if m:dim() ~= 2 then
      error(string.format("%s: expects a 2-D (rows, columns) matrix, got a %d-D tensor", fn, m:dim()), 3)
    end
    rows = m:float():totable()
  elseif type(m) == "table" and type(m[1]) == "table" then
    rows = m
  else
    error(fn .. ": expects a (rows, columns) tensor or a nested table of numbers", 3)
  end
  local R, C = #rows, #rows[1]
  if R == 0 or C == 0 then error(fn .. ": the matrix is empty", 3) end
  for i = 1, R do
    if #rows[i] ~= C then
      error(string.format("%s: row %d has %d values, row 1 has %d", fn, i, #rows[i], C), 3)
    end
    for j = 1, C do
      if type(rows[i][j]) ~= "number" then
        error(string.format("%s: entry (%d, %d) is %s, not a number", fn, i, j, type(rows[i][j])), 3)
      end
    end
  end
  return rows, R, C
end

--- checks that opts only holds known keys
function M.known(opts, keys, fn)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(fn .. ": options must be a table, got " .. type(opts), 3) end
  local set = {}
  for _, k in ipairs(keys) do set[k] = true end
  for k in pairs(opts) do
    if not set[k] then
      table.sort(keys)
      error(string.format("%s: unknown option '%s' (known: %s)", fn, tostring(k), table.concat(keys, ", ")), 3)
    end
  end
  return opts
end

--- a short readable number: 0.934, 12.5, 1.2e-05, 3
function M.num(v, fmt)
  if fmt then return string.format(fmt, v) end
  if v ~= v then return "nan" end
  if math.type(v) == "integer" then return tostring(v) end
  if v == math.floor(v) and math.abs(v) < 1e6 then return string.format("%d", v) end
  local a = math.abs(v)
  if a >= 1e5 or a < 1e-3 then return string.format("%.2g", v) end
  local s = string.format("%.3g", v)
  return s
end

--- writes the canvas to path when given; returns the canvas
function M.finish(cv, path, fn)
  if path ~= nil then
    if type(path) ~= "string" then error(fn .. ": the path must be a string, got " .. type(path), 3) end
    local f, err = io.open(path, "wb")
    if not f then error(fn .. ": cannot write " .. path .. ": " .. tostring(err), 3) end
    f:write(cv:png())
    f:close()
    cv.path = path
  end
  return cv
end

return M
