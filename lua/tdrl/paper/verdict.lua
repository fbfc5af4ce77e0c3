-- When does a finding hold? A claim "a > b" measured over seeds holds only when every seed
-- agrees: paired (a[s] and b[s] from the same seed) every difference a[s] - b[s] exceeds the
-- margin; unpaired, the smallest a exceeds the largest b plus the margin (the two ranges over
-- seeds do not overlap). It does not hold when every seed agrees the other way (b >= a), and is
-- inconclusive otherwise, or with fewer than two seeds. With n paired seeds that all agree, a
-- sign test puts the chance of that under "no difference" at 2^-n (one-sided): the report says n.
--
--   local V = require 'tdrl.paper.verdict'
--   local v = V.compare({0.91, 0.93, 0.90}, {0.85, 0.88, 0.86})   -- paired by default
--   v.verdict  -- "holds"; v.diff_mean, v.diff_min, v.diff_max, v.n, v.rule, v.text
local M = {}

M.HOLDS, M.FAILS, M.UNSURE = "holds", "does not hold", "inconclusive"

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

--- compare(a, b, {paired = (#a == #b), margin = 0}) -> {verdict, diff_mean, diff_min, diff_max, n, rule, text}
function M.compare(a, b, o)
  o = o or {}
  if type(a) ~= "table" or type(b) ~= "table" then error("verdict.compare: a and b must be lists of numbers", 2) end
  for _, xs in ipairs({a, b}) do
    for i, v in ipairs(xs) do
      if not finite(v) then error(string.format("verdict.compare: entry %d is %s, not a finite number", i, tostring(v)), 2) end
    end
  end
  local margin = o.margin or 0
  local paired = o.paired
  if paired == nil then paired = #a == #b end
  if paired and #a ~= #b then
    error(string.format("verdict.compare: paired lists differ in length (%d and %d)", #a, #b), 2)
  end
  local r = {n = math.min(#a, #b), paired = paired, margin = margin}
  local mean_a, mean_b = 0, 0
  for _, v in ipairs(a) do mean_a = mean_a + v / #a end
  for _, v in ipairs(b) do mean_b = mean_b + v / #b end
  r.diff_mean = (#a > 0 and #b > 0) and mean_a - mean_b or 0 / 0
  if paired then
    local lo, hi = math.huge, -math.huge
    for i = 1, #a do
      local d = a[i] - b[i]
      lo, hi = math.min(lo, d), math.max(hi, d)
    end
    r.diff_min, r.diff_max = lo, hi
    r.rule = string.format("every one of %d paired seeds has a - b > %g", r.n, margin)
  else
    local amin, amax, bmin, bmax = math.huge, -math.huge, math.huge, -math.huge
    for _, v in ipairs(a) do amin, amax = math.min(amin, v), math.max(amax, v) end
    for _, v in ipairs(b) do bmin, bmax = math.min(bmin, v), math.max(bmax, v) end
    r.diff_min, r.diff_max = amin - bmax, amax - bmin
    r.rule = string.format("the ranges over seeds (%d and %d) are apart by more than %g", #a, #b, margin)
  end
  if r.n < 2 then
    r.verdict = M.UNSURE
    r.why = "fewer than two seeds"
  elseif r.diff_min > margin then
    r.verdict = M.HOLDS
  elseif r.diff_max <= margin then
    r.verdict = M.FAILS
  else
    r.verdict = M.UNSURE
    r.why = "the seeds disagree"
  end
  r.text = string.format("%s (difference %+.3f, from %+.3f to %+.3f over %d seeds%s)", r.verdict, r.diff_mean,
    r.diff_min, r.diff_max, r.n, r.why and ("; " .. r.why) or "")
  return r
end

--- all(list of verdict tables) -> one verdict: holds when all hold, does not hold when all fail,
--- inconclusive otherwise
function M.all(vs)
  local h, f = 0, 0
  for _, v in ipairs(vs) do
    if v.verdict == M.HOLDS then h = h + 1 elseif v.verdict == M.FAILS then f = f + 1 end
  end
  if #vs > 0 and h == #vs then return M.HOLDS end
  if #vs > 0 and f == #vs then return M.FAILS end
  return M.UNSURE
end

return M
