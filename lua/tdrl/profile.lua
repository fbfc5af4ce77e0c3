-- Op-level profile of a piece of work: calls and wall time per op, forward and backward, for
-- finding what dominates a training step, a trajectory extraction or a custom head.
--
--   local profile = require 'tdrl.profile'
--   local report = profile.run(function() for _ = 1, 3 do step() end end)
--   print(report:format{top = 20})
--
-- or profile.start() ... local report = profile.stop(). While it runs, every function of the
-- core (T.conv2d, T.cat, ...), every tensor method (x:silu()) and the arithmetic metamethods
-- (x + y) are wrapped in a timer, and nn.functional's entries that are core kernels with them: a
-- forward row is one of those, its time exclusive of the wrapped calls it makes itself.
-- Backward rows are the autograd nodes' backward functions, timed in C ("conv2d (backward)");
-- `backward (graph)` is what x:backward() spent beside them (the walk, freeing the graph). `other (Lua)` is the rest of the wall time: the interpreter, the library's
-- Lua code, the garbage collector. Timing adds ~1 us per call; ratios between rows are what
-- to read.
local T = require 'tdrl'

local M = {}

-- control functions, not work: never wrapped
local SKIP = {
  clock = true, memory = true, reset_peak_memory = true, no_grad = true, set_grad_enabled = true,
  is_grad_enabled = true, get_num_threads = true, set_num_threads = true, is_tensor = true,
  profile_backward = true, profile_backward_report = true, profile_backward_reset = true,
  defer_interrupts = true, interrupt_pending = true, isatty = true, Generator = true,
}
local METAMETHODS = {"__add", "__sub", "__mul", "__div", "__pow", "__unm"}

local running -- the profile being taken: {saved = {{table, key, function}...}, stats, t0}

--- starts a profile (an error if one is running)
function M.start()
  if running then error("profile.start: a profile is already running (profile.stop() ends it)", 2) end
  local clock = T.clock
  local stats, child, depth = {}, {}, 0
  local saved = {}
  -- record(label, f, ...) calls f(...) and charges its time, less that of the wrapped calls
  -- inside it, to label; an error inside f skips its finish, and the next finish at an outer
  -- level restores the depth it had on entry
  local function finish(label, d, t0, ...)
    local dt = clock() - t0
    local e = stats[label]
    if not e then e = {calls = 0, seconds = 0}; stats[label] = e end
    e.calls = e.calls + 1
    e.seconds = e.seconds + dt - child[d]
    depth = d - 1
    if depth > 0 then child[depth] = child[depth] + dt end
    return ...
  end
  local function record(label, f, ...)
    local d = depth + 1
    depth = d
    child[d] = 0
    return finish(label, d, clock(), f(...))
  end
  local function wrap(tbl, key, label)
    local f = tbl[key]
    if type(f) ~= "function" or SKIP[key] then return end
    saved[#saved + 1] = {tbl, key, f}
    tbl[key] = function(...) return record(label, f, ...) end
  end
  local methods, mt = T.Tensor, debug.getregistry()["tdrl.Tensor"]
  for _, k in ipairs(METAMETHODS) do wrap(mt, k, k:sub(3)) end
  local keys = {}
  for k in pairs(methods) do keys[#keys + 1] = k end
  for _, k in ipairs(keys) do wrap(methods, k, k) end
  keys = {}
  for k in pairs(T) do keys[#keys + 1] = k end
  for _, k in ipairs(keys) do
    local m = rawget(methods, k)
    if type(T[k]) == "function" and not SKIP[k] and m ~= nil and m ~= T[k] then
      saved[#saved + 1] = {T, k, T[k]} -- T.exp(x) and x:exp(): one C function, one row
      T[k] = m
    else
      wrap(T, k, k)
    end
  end
  -- nn.functional keeps the core's kernels as its own entries (F.conv2d = T.conv2d): point them
  -- at the same wrappers
  local F = require 'tdrl.nn.functional'
  local wrapper = {}
  for _, sv in ipairs(saved) do wrapper[sv[3]] = sv[1][sv[2]] end
  -- and its closures around a kernel (F.conv2d's groups, the losses' options) hold it as an upvalue
  local upvalues = {}
  for k, f in pairs(F) do
    if wrapper[f] then
      saved[#saved + 1] = {F, k, f}
      F[k] = wrapper[f]
    elseif type(f) == "function" then
      for i = 1, math.huge do
        local name, v = debug.getupvalue(f, i)
        if not name then break end
        if wrapper[v] then
          upvalues[#upvalues + 1] = {f, i, v}
          debug.setupvalue(f, i, wrapper[v])
        end
      end
    end
  end
  T.profile_backward_reset()
  T.profile_backward(true)
  running = {saved = saved, upvalues = upvalues, stats = stats, t0 = clock()}
end

local Report = {}
Report.__index = Report

--- ends the profile and restores the unwrapped functions; returns the report:
--- {wall = seconds, rows = {{name, kind = "forward" | "backward" | "other", calls, seconds}...}}
--- sorted by time
function M.stop()
  if not running then error("profile.stop: no profile is running (profile.start() begins one)", 2) end
  local r = running
  running = nil
  local wall = T.clock() - r.t0
  T.profile_backward(false)
  for i = #r.saved, 1, -1 do
    local s = r.saved[i]
    s[1][s[2]] = s[3]
  end
  for _, u in ipairs(r.upvalues) do debug.setupvalue(u[1], u[2], u[3]) end
  local rows, timed, bw = {}, 0, 0
  for _, e in ipairs(T.profile_backward_report()) do
    rows[#rows + 1] = {name = e.name .. " (backward)", kind = "backward", calls = e.calls, seconds = e.seconds}
    bw = bw + e.seconds
  end
  for name, e in pairs(r.stats) do
    local s = e.seconds
    if name == "backward" then name, s = "backward (graph)", s - bw end
    rows[#rows + 1] = {name = name, kind = name == "backward (graph)" and "backward" or "forward", calls = e.calls,
      seconds = s}
  end
  for _, row in ipairs(rows) do timed = timed + row.seconds end
  rows[#rows + 1] = {name = "other (Lua)", kind = "other", calls = 0, seconds = math.max(0, wall - timed)}
  table.sort(rows, function(a, b) return a.seconds > b.seconds end)
  return setmetatable({wall = wall, rows = rows}, Report)
end

--- profiles fn(...): the report and fn's first result
function M.run(fn, ...)
  M.start()
  local ok, res = pcall(fn, ...)
  local report = M.stop()
  if not ok then error(res, 0) end
  return report, res
end

--- true while a profile is being taken
function M.running() return running ~= nil end

--- the rows' total seconds by kind: {forward =, backward =, other =}
function Report:totals()
  local sum = {forward = 0, backward = 0, other = 0}
  for _, r in ipairs(self.rows) do sum[r.kind] = sum[r.kind] + r.seconds end
  return sum
end

--- the report as a table of text: the top rows (opts.top, default 30) with calls, total and
--- per-call milliseconds and share of the wall time, then the forward / backward / other totals
function Report:format(opts)
  opts = opts or {}
  local top = opts.top or 30
  local lines = {string.format("%-34s %8s %10s %10s %6s", "op", "calls", "total ms", "ms/call", "share")}
  for i, r in ipairs(self.rows) do
    if i > top then break end
    lines[#lines + 1] = string.format("%-34s %8d %10.2f %10s %5.1f%%", r.name, r.calls, r.seconds * 1e3,
      r.calls > 0 and string.format("%.4f", r.seconds * 1e3 / r.calls) or "", 100 * r.seconds / self.wall)
  end
  local sum = self:totals()
  lines[#lines + 1] = string.format("wall %.1f ms: forward %.1f%%, backward %.1f%%, other %.1f%%", self.wall * 1e3,
    100 * sum.forward / self.wall, 100 * sum.backward / self.wall, 100 * sum.other / self.wall)
  return table.concat(lines, "\n")
end

return M
