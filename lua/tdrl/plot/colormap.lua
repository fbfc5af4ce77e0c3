-- Colour maps as piecewise-linear interpolation between control points, and the series palette.
--   colormap.get("viridis" | "diverging" | "gray" | function(t) -> packed colour) -> function(t)
--   colormap.series(i) -> the i-th series colour (cycles)
-- "viridis": dark purple -> blue -> green -> yellow, perceptually ordered (9 control points at the
-- published viridis stops). "diverging": blue -> near white -> red (7 points), for signed values
-- or values around a midpoint. The palette is Okabe & Ito's colour-blind-safe set, reordered so
-- the first colours are the most distinct on white.
local M = {}

local floor = math.floor

local POINTS = {
  viridis = {
    {0x44, 0x01, 0x54}, {0x48, 0x28, 0x78}, {0x3E, 0x49, 0x89}, {0x31, 0x68, 0x8E}, {0x26, 0x82, 0x8E},
    {0x1F, 0x9E, 0x89}, {0x35, 0xB7, 0x79}, {0x6D, 0xCD, 0x59}, {0xFD, 0xE7, 0x25},
  },
  diverging = {
    {0x21, 0x66, 0xAC}, {0x67, 0xA9, 0xCF}, {0xD1, 0xE5, 0xF0}, {0xF7, 0xF7, 0xF7}, {0xFD, 0xDB, 0xC7},
    {0xEF, 0x8A, 0x62}, {0xB2, 0x18, 0x2B},
  },
  gray = {{0, 0, 0}, {255, 255, 255}},
}

M.names = {"viridis", "diverging", "gray"}

--- the control points of a named map (a list of {r, g, b}, evenly spaced over [0, 1])
function M.points(name)
  return POINTS[name]
end

local cache = {}

local function make(points)
  -- a 256-entry lookup table; t is clamped to [0, 1]; NaN maps to light grey
  local n = #points
  local lut = {}
  for k = 0, 255 do
    local t = k / 255 * (n - 1)
    local i = math.min(floor(t), n - 2)
    local f = t - i
    local a, b = points[i + 1], points[i + 2]
    local r = floor(a[1] + (b[1] - a[1]) * f + 0.5)
    local g = floor(a[2] + (b[2] - a[2]) * f + 0.5)
    local bl = floor(a[3] + (b[3] - a[3]) * f + 0.5)
    lut[k] = (r << 16) | (g << 8) | bl
  end
  return function(t)
    if t ~= t then return 0xDDDDDD end
    if t <= 0 then return lut[0] end
    if t >= 1 then return lut[255] end
    return lut[floor(t * 255 + 0.5)]
  end
end

--- a function t in [0, 1] -> packed colour
function M.get(name)
  if type(name) == "function" then return name end
  name = name or "viridis"
  if not cache[name] then
    local pts = POINTS[name]
    if not pts then
      error("colormap: unknown map '" .. tostring(name) .. "' (known: " .. table.concat(M.names, ", ") .. ")", 2)
    end
    cache[name] = make(pts)
  end
  return cache[name]
end

-- Okabe-Ito: blue, orange, bluish green, vermillion, reddish purple, sky blue, black, yellow.
M.PALETTE = {0x0072B2, 0xE69F00, 0x009E73, 0xD55E00, 0xCC79A7, 0x56B4E9, 0x000000, 0xF0E442}

function M.series(i)
  return M.PALETTE[(i - 1) % #M.PALETTE + 1]
end

return M
