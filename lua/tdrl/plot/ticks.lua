-- Tick positions at "nice" numbers (1, 2, 2.5, 5 times a power of ten) and their labels,
-- formatted with just enough decimals to tell neighbours apart.
--   ticks.nice(lo, hi, n) -> values, step;  ticks.labels(values, step) -> strings
--   ticks.log(lo, hi) -> values (for a log axis: powers of ten, or 1-2-5 within two decades)
local M = {}

local floor, ceil, log10, abs = math.floor, math.ceil, math.log10 or function(x) return math.log(x, 10) end, math.abs

function M.step(range, n)
  local raw = range / math.max(1, n)
  local mag = 10 ^ floor(log10(raw))
  local norm = raw / mag
  local s
  if norm < 1.5 then s = 1 elseif norm < 2.25 then s = 2 elseif norm < 3.5 then s = 2.5
  elseif norm < 7.5 then s = 5 else s = 10 end
  return s * mag
end

--- about n ticks covering [lo, hi] (inclusive ends when they fall on the grid)
function M.nice(lo, hi, n)
  n = n or 6
  if hi < lo then lo, hi = hi, lo end
  if hi - lo <= 0 then
    local d = lo == 0 and 1 or abs(lo) * 0.1
    lo, hi = lo - d, hi + d
  end
  local step = M.step(hi - lo, n - 1)
  local out = {}
  local k0, k1 = ceil(lo / step - 1e-9), floor(hi / step + 1e-9)
  for k = k0, k1 do
    local v = k * step
    if abs(v) < step * 1e-9 then v = 0.0 end
    out[#out + 1] = v
  end
  return out, step
end

--- decimals needed to print multiples of step
function M.decimals(step)
  local d = 0
  while d < 10 and abs(step * 10 ^ d - floor(step * 10 ^ d + 0.5)) > 1e-6 * 10 ^ d * step do d = d + 1 end
  return d
end

function M.labels(values, step)
  local big = 0
  for _, v in ipairs(values) do big = math.max(big, abs(v)) end
  local out = {}
  if big >= 1e5 or (step and step < 1e-3) then
    for i, v in ipairs(values) do out[i] = v == 0 and "0" or string.format("%.3g", v) end
    return out
  end
  local d = step and M.decimals(step) or 2
  for i, v in ipairs(values) do
    local s = string.format("%." .. d .. "f", v)
    if s:match("^%-0%.?0*$") then s = s:sub(2) end
    out[i] = s
  end
  return out
end

--- ticks for a log axis over [lo, hi] (both > 0)
function M.log(lo, hi)
  local e0, e1 = floor(log10(lo) + 1e-9), ceil(log10(hi) - 1e-9)
  local mult = (log10(hi / lo) <= 2.5) and {1, 2, 5} or {1}
  local out = {}
  for e = e0, e1 do
    for _, m in ipairs(mult) do
      local v = m * 10 ^ e
      if v >= lo * (1 - 1e-9) and v <= hi * (1 + 1e-9) then out[#out + 1] = v end
    end
  end
  if #out < 2 then out = {lo, hi} end
  return out
end

function M.log_labels(values)
  local out = {}
  for i, v in ipairs(values) do
    if v >= 1 and v < 1e6 and abs(v - floor(v + 0.5)) < 1e-9 then out[i] = string.format("%d", floor(v + 0.5))
    else out[i] = string.format("%g", tonumber(string.format("%.3g", v))) end
  end
  return out
end

return M
