-- Progress of long work: a bar with rate, ETA and the current values on a terminal (redrawn in
-- place, at most 10 times a second), plain log lines every `every` seconds otherwise.
--   local bar = progress.new(total, {label = "train"})
--   for i = 1, total do ...; bar:update(i, {loss = l}) end
--   bar:finish()
local T = require 'tdrl'

local M = {}
local Bar = {}
Bar.__index = Bar

local tty = T.isatty(1)

local function fmt_time(s)
  if s ~= s or s == math.huge then return "?" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%dh%02dm", s // 3600, (s % 3600) // 60) end
  if s >= 60 then return string.format("%dm%02ds", s // 60, s % 60) end
  return string.format("%ds", s)
end
M.fmt_time = fmt_time

function M.new(total, opts)
  opts = opts or {}
  if not opts.out and not require('tdrl.dist').is_main() then -- under mpirun rank 0 alone reports
    opts = setmetatable({out = io.open("/dev/null", "w")}, {__index = opts})
  end
  return setmetatable({total = total, label = opts.label or "", start = T.clock(), last = -math.huge,
    every = opts.every or (tty and 0.1 or 10), first = opts.first or 0, out = opts.out or io.stdout,
    tty = opts.tty == nil and tty or opts.tty}, Bar)
end

local function values_text(vals)
  if not vals then return "" end
  local keys = {}
  for k in pairs(vals) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = vals[k]
    parts[#parts + 1] = type(v) == "number" and string.format("%s %.4g", k, v) or (k .. " " .. tostring(v))
  end
  return table.concat(parts, "  ")
end

function Bar:line(i, vals)
  local el = T.clock() - self.start
  local done = i - self.first
  local rate = done > 0 and done / el or 0
  local eta = rate > 0 and (self.total - i) / rate or math.huge
  local frac = self.total > 0 and i / self.total or 1
  local rate_s = rate >= 1 and string.format("%.2f it/s", rate) or string.format("%.2f s/it", rate > 0 and 1 / rate or 0)
  if self.tty then
    local w = 24
    local n = math.floor(frac * w + 0.5)
    return string.format("%s [%s%s] %d/%d %s ETA %s  %s", self.label, string.rep("#", n), string.rep(".", w - n),
      i, self.total, rate_s, fmt_time(eta), values_text(vals))
  end
  return string.format("%s %d/%d (%.0f%%) %s elapsed %s ETA %s  %s", self.label, i, self.total, 100 * frac,
    rate_s, fmt_time(el), fmt_time(eta), values_text(vals))
end

function Bar:update(i, vals)
  local now = T.clock()
  self.i, self.vals = i, vals
  if not self.tty and i >= self.total then return end -- finish() prints the last line
  if now - self.last < self.every and i < self.total then return end
  self.last = now
  if self.tty then
    self.out:write("\r\27[K", self:line(i, vals))
  else
    self.out:write(self:line(i, vals), "\n")
  end
  self.out:flush()
end

function Bar:finish(vals)
  local i = self.i or self.total
  self.last = -math.huge
  if self.tty then
    self.out:write("\r\27[K", self:line(i, vals or self.vals), "\n")
  else
    self.out:write(self:line(i, vals or self.vals), "\n")
  end
  self.out:flush()
  return T.clock() - self.start
end

return M
