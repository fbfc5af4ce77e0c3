-- Core benchmark: matmul GFLOP/s through the binding next to raw cblas_sgemm from the same
-- binary, on one and on all threads, and elementwise throughput beside a plain copy's. Prints JSON lines.
local T = require 'tdrl'

local M = {}

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

-- seconds per call: warm-up, then repetitions until min_time has passed (at least 3)
local function time(fn, min_time)
  fn(); fn()
  local times, total = {}, 0
  while #times < 3 or total < (min_time or 0.5) do
    local t0 = T.clock()
    fn()
    local dt = T.clock() - t0
    times[#times + 1] = dt
    total = total + dt
  end
  return median(times)
end
M.time = time

function M.run()
  local rows = {}
  local nmax = T.get_num_threads()
  for _, threads in ipairs(nmax > 1 and {1, nmax} or {1}) do
    T.set_num_threads(threads)
    for _, n in ipairs({256, 1024}) do
      local a, b, c = T.randn(n, n), T.randn(n, n), T.empty(n, n)
      local flop = 2 * n ^ 3
      local t_raw = time(function() T._sgemm(a, b, c) end)
      local t_mm = time(function() local r <close> = a:matmul(b) end) -- closed: see below
      rows[#rows + 1] = {
        name = string.format("matmul %d^3, %d thread%s", n, threads, threads > 1 and "s" or ""),
        value = flop / t_mm / 1e9, unit = "GFLOP/s", higher = true, gflops = flop / t_mm / 1e9,
        ceiling = flop / t_raw / 1e9, note = string.format("binding overhead %+.1f%%", 100 * (t_mm / t_raw - 1)),
      }
    end
  end
  T.set_num_threads(nmax)
  local n = 1 << 22
  local x, y, z = T.randn(n), T.randn(n), T.empty(n)
  -- the ceiling of the memory-bound rows: a plain copy loop over all threads, 2 x 16 MB per call
  local t_copy = time(function() T._copy(z, x) end)
  rows[#rows + 1] = {name = "copy (the ceiling), 4M floats", value = 2 * 4 * n / t_copy / 1e9, unit = "GB/s",
    higher = true, copy_ceiling = 2 * 4 * n / t_copy / 1e9}
  -- each result is closed at once, as PyTorch's refcount frees its own: left to the collector,
  -- two or three 16 MB results rotate through the cache instead of one, and the row measures
  -- the caches' size rather than the kernel
  for _, case in ipairs({
    {"add (a + b), 4M floats", function() local r <close> = x + y end, 3},
    {"mul by scalar, 4M floats", function() local r <close> = x * 2 end, 2},
    {"exp, 4M floats", function() local r <close> = x:exp() end, 2},
    {"silu, 4M floats", function() local r <close> = x:silu() end, 2},
    {"sum, 4M floats", function() local r <close> = x:sum() end, 1},
  }) do
    local t = time(case[2])
    rows[#rows + 1] = {name = case[1], value = case[3] * 4 * n / t / 1e9, unit = "GB/s", higher = true,
      bandwidth = case[3] * 4 * n / t / 1e9}
  end
  return rows
end

-- One JSON line per row: what bench/run.lua collects.
if not pcall(debug.getlocal, 4, 1) then
  local json = require 'tdrl.json'
  for _, r in ipairs(M.run()) do print(json.encode(r)) end
end
return M
