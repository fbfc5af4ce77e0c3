-- `make bench`: every workload for tdrl and, where Debian's python3-torch is installed, for
-- PyTorch on the same CPU, run back to back (model workloads BENCH_REPS = 3 times each,
-- interleaved, medians reported); one table with the ratio (> 1: tdrl is faster)
-- and, for GEMM-shaped work, the fraction of the sgemm ceiling measured in the same run.
-- Writes the table as JSON with the machine's description under bench/results/.
-- Each suite is a pair of scripts printing one JSON line per workload:
--   {"name":, "value":, "unit":, "higher": true if larger is better, "gflops":, "ceiling":}
local T = require 'tdrl'
local json = require 'tdrl.json'

local suites = {
  {"core", "bench/core.lua", "bench/core_torch.py"},
  {"ops", "bench/ops_tdrl.lua", "bench/ops_torch.py"},
  {"data", "bench/data_tdrl.lua", nil},
  -- one process per workload (its own peak memory); --list names them
  {"models", "bench/models_tdrl.lua", "bench/models_torch.py", per_process = true},
}
local only = arg[1] -- a suite name to run alone
-- model workloads are run this many times each (BENCH_REPS), interleaved with PyTorch's
local REPS = math.max(1, tonumber(os.getenv("BENCH_REPS") or "3") or 3)

local function median(t)
  local v = {}
  for _, x in ipairs(t) do if type(x) == "number" then v[#v + 1] = x end end
  if #v == 0 then return nil end
  table.sort(v)
  local n = #v
  return n % 2 == 1 and v[(n + 1) // 2] or (v[n // 2] + v[n // 2 + 1]) / 2
end

local function exists(p) local f = io.open(p) if f then f:close() end return f ~= nil end

local function collect(cmd)
  local rows, p = {}, io.popen(cmd .. " 2>&1")
  for line in p:lines() do
    if line:sub(1, 1) == "{" then
      local ok, r = pcall(json.decode, line)
      if ok and type(r) == "table" and r.name then rows[#rows + 1] = r end
    elseif line ~= "" then
      io.stderr:write("  | " .. line .. "\n")
    end
  end
  p:close()
  return rows
end

local python = "/usr/bin/python3"
local have_torch = os.execute(python .. " -c 'import torch' >/dev/null 2>&1") == true
local exe = arg[-1] or "./tdrl"
local ceiling -- sgemm GFLOP/s on all threads, from the core suite
local table_rows = {}
for _, s in ipairs(suites) do
  local name, ours, theirs = s[1], s[2], s[3]
  if (not only or only == name) and exists(ours) then
    io.stderr:write(string.format("bench: %s ...\n", name))
    local peer = {}
    local torch_ok = theirs and have_torch and exists(theirs)
    local runs = {""}
    if s.per_process then
      runs = {}
      local p = io.popen(exe .. " " .. ours .. " --list")
      for line in p:lines() do runs[#runs + 1] = line end
      p:close()
    end
    -- per workload: tdrl, then PyTorch, back to back; model workloads `reps` times, interleaved,
    -- and the medians read (a shared 2-core machine moves single figures by a third)
    local reps = s.per_process and REPS or 1
    local seen, by_name = {}, {}
    for _, w in ipairs(runs) do
      for rep = 1, reps do
        if w ~= "" then io.stderr:write(string.format("  %s%s\n", w, reps > 1 and (" (" .. rep .. "/" .. reps .. ")") or "")) end
        local got = {}
        for _, r in ipairs(collect(exe .. " " .. ours .. " " .. w)) do
          got[r.name] = r
          if not by_name[r.name] then by_name[r.name] = {}; seen[#seen + 1] = r.name end
        end
        if torch_ok then
          for _, r in ipairs(collect(python .. " " .. theirs .. " " .. w)) do peer[r.name] = peer[r.name] or {}; table.insert(peer[r.name], r) end
        end
        for n, r in pairs(got) do table.insert(by_name[n], r) end
      end
    end
    for _, n in ipairs(seen) do
      local ours_runs, theirs_runs = by_name[n], peer[n] or {}
      local r = ours_runs[1]
      local vals, pvals, ratios, peaks, ppeaks = {}, {}, {}, {}, {}
      for i, x in ipairs(ours_runs) do
        vals[#vals + 1] = x.value
        peaks[#peaks + 1] = x.peak_mb
        local p = theirs_runs[i]
        if p and p.value and p.value > 0 and x.value and x.value > 0 then
          ratios[#ratios + 1] = x.higher and x.value / p.value or p.value / x.value
        end
      end
      for _, p in ipairs(theirs_runs) do pvals[#pvals + 1] = p.value; ppeaks[#ppeaks + 1] = p.peak_mb end
      if r.ceiling and r.name:find("1024") and r.name:find("threads") then ceiling = r.ceiling end
      local value = median(vals)
      local note = r.note
      if #ratios > 1 then
        table.sort(ratios)
        note = string.format("ratio %.2f-%.2f over %d runs%s", ratios[1], ratios[#ratios], #ratios, note and ("; " .. note) or "")
      end
      table_rows[#table_rows + 1] = {suite = name, name = r.name, unit = r.unit, tdrl = value,
        torch = median(pvals), ratio = median(ratios), gflops = r.gflops and (r.higher and r.gflops * value / r.value or r.gflops * r.value / value), note = note,
        tdrl_peak_mb = median(peaks), torch_peak_mb = median(ppeaks), runs = #vals, ratios = ratios}
    end
  end
end

print(string.format("%-48s %11s %11s %-8s %7s %7s %13s  %s", "workload", "tdrl", "PyTorch", "unit", "ratio",
  "%sgemm", "peak MB t/P", "note"))
for _, r in ipairs(table_rows) do
  local frac = (r.gflops and ceiling) and string.format("%.0f%%", 100 * r.gflops / ceiling) or ""
  local mem = r.tdrl_peak_mb and string.format("%.0f/%s", r.tdrl_peak_mb,
    r.torch_peak_mb and string.format("%.0f", r.torch_peak_mb) or "-") or ""
  print(string.format("%-48s %11.4g %11s %-8s %7s %7s %13s  %s", r.name, r.tdrl,
    r.torch and string.format("%.4g", r.torch) or "-", r.unit,
    r.ratio and string.format("%.2fx", r.ratio) or "-", frac, mem, r.note or ""))
end
if not have_torch then print("(PyTorch not installed: apt-get install python3-torch for the side-by-side figures)") end

local cpu = "unknown CPU"
local f = io.open("/proc/cpuinfo")
if f then
  for line in f:lines() do
    local m = line:match("^model name%s*:%s*(.+)")
    if m then cpu = m break end
  end
  f:close()
end
os.execute("mkdir -p bench/results")
local stamp = os.date("!%Y%m%dT%H%M%SZ")
local out = {machine = {cpu = cpu, threads = T.get_num_threads(), date = stamp}, sgemm_ceiling_gflops = ceiling,
  rows = table_rows}
local path = "bench/results/" .. stamp .. ".json"
local fh = assert(io.open(path, "w"))
fh:write(json.encode(out, "  "), "\n")
fh:close()
print("results written to " .. path)
