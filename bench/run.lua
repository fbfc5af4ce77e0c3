-- `make bench`: every workload for tdrl and, where Debian's python3-torch is installed, for
-- PyTorch on the same CPU, run back to back (BENCH_REPS = 3 times each, interleaved, medians
-- reported); one table with the ratio (> 1: tdrl is faster)
-- and the fraction of a ceiling measured in the same run: sgemm for GEMM-shaped work, a copy for
-- memory-bound rows. Both sides run the same OpenBLAS kernels (tdrl's core is handed to PyTorch);
-- PyTorch runs under each OpenMP setting and is compared at its fastest.
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

local function loadavg()
  local f = io.open("/proc/loadavg")
  local l = f and f:read("n")
  if f then f:close() end
  return l
end

-- Both sides on the same OpenBLAS kernels: tdrl's core (what `tdrl -v` reports) is handed to
-- PyTorch's processes in OPENBLAS_CORETYPE, and each side's core is printed with the table.
local tdrl_core
do
  local p = io.popen(exe .. " -v 2>&1")
  tdrl_core = p:read("a"):match("OpenBLAS [%d%.]+ (%w+)")
  p:close()
end
-- The peer runs under each OpenMP setting (bench/torch_env.py; BENCH_PEER_OMP picks some of
-- none,passive,bind) and is compared at its fastest: the environment's own OpenMP variables,
-- ./tdrl's short spin among them, are cleared so that "none" means libgomp's defaults.
local OMP = {}
for o in (os.getenv("BENCH_PEER_OMP") or "none,passive,bind"):gmatch("[^,%s]+") do OMP[#OMP + 1] = o end
local function peer_cmd(omp, script, w)
  local core = os.getenv("OPENBLAS_CORETYPE") or tdrl_core
  return string.format("env -u OMP_WAIT_POLICY -u OMP_PROC_BIND -u GOMP_SPINCOUNT TDRL_PEER_OMP=%s%s %s %s %s", omp,
    core and (" OPENBLAS_CORETYPE=" .. core) or "", python, script, w)
end
local torch_core, torch_version
if have_torch then
  local p = io.popen(peer_cmd(OMP[1], "bench/torch_env.py", "") .. " 2>/dev/null")
  local ok, r = pcall(json.decode, p:read("a"))
  p:close()
  if ok and type(r) == "table" then torch_core, torch_version = r.blas_core, r.torch end
end
-- BENCH_ONLY=dsm_tiny,head_gru: only these model workloads
local ONLY = nil
if os.getenv("BENCH_ONLY") then
  ONLY = {}
  for w in os.getenv("BENCH_ONLY"):gmatch("[^,%s]+") do ONLY[w] = true end
end

local function better(r, a, b) -- is value a better than b for row r?
  if b == nil then return true end
  if r.higher then return a > b end
  return a < b
end

local ceiling, copy_ceiling -- sgemm GFLOP/s on all threads, copy GB/s: from the core suite
local table_rows = {}
local load_start = loadavg()
for _, s in ipairs(suites) do
  local name, ours, theirs = s[1], s[2], s[3]
  if (not only or only == name) and exists(ours) then
    io.stderr:write(string.format("bench: %s ...\n", name))
    local torch_ok = theirs and have_torch and exists(theirs)
    local runs = {""}
    if s.per_process then
      runs = {}
      local p = io.popen(exe .. " " .. ours .. " --list")
      for line in p:lines() do
        if not ONLY or ONLY[line] then runs[#runs + 1] = line end
      end
      p:close()
    end
    -- per workload: tdrl, then PyTorch, back to back, `reps` times, interleaved, and the medians
    -- read (a shared 2-core machine moves single figures by a third, a loaded one by much more).
    -- The first round times the peer under every OpenMP setting; the later rounds under the
    -- settings that were fastest for some row.
    local reps = torch_ok and REPS or 1
    local seen, by_name, peer, peer_omp, omp_figs, loads = {}, {}, {}, {}, {}, {}
    for _, w in ipairs(runs) do
      local chosen -- the peer's fastest settings for this workload's rows, from the first round
      for rep = 1, reps do
        if w ~= "" then io.stderr:write(string.format("  %s%s\n", w, reps > 1 and (" (" .. rep .. "/" .. reps .. ")") or "")) end
        local got = {}
        local l = loadavg()
        for _, r in ipairs(collect(exe .. " " .. ours .. " " .. w)) do
          got[r.name] = r
          if not by_name[r.name] then by_name[r.name] = {}; seen[#seen + 1] = r.name end
          loads[r.name] = loads[r.name] or {}
          table.insert(loads[r.name], l)
        end
        if torch_ok then
          local best = {} -- per row name: the best of this round's settings
          for _, omp in ipairs(chosen or OMP) do
            for _, r in ipairs(collect(peer_cmd(omp, theirs, w))) do
              omp_figs[r.name] = omp_figs[r.name] or {}
              omp_figs[r.name][omp] = omp_figs[r.name][omp] or {}
              table.insert(omp_figs[r.name][omp], r.value)
              if not best[r.name] or better(r, r.value, best[r.name].value) then r.omp = omp; best[r.name] = r end
            end
          end
          local won = {}
          for n, r in pairs(best) do
            peer[n] = peer[n] or {}
            table.insert(peer[n], r)
            peer_omp[n] = peer_omp[n] or {}
            table.insert(peer_omp[n], r.omp)
            won[r.omp] = true
          end
          if not chosen then
            chosen = {}
            for _, omp in ipairs(OMP) do if won[omp] then chosen[#chosen + 1] = omp end end
          end
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
      -- the ceilings: medians over the rounds, as the rows' figures
      local function med(k) local v = {} for _, x in ipairs(ours_runs) do v[#v + 1] = x[k] end return median(v) end
      if r.ceiling and r.name:find("1024") and r.name:find("threads") then ceiling = med("ceiling") end
      if r.copy_ceiling then copy_ceiling = med("copy_ceiling") end
      local value = median(vals)
      local note = r.note
      if #ratios > 1 then
        table.sort(ratios)
        note = string.format("ratio %.2f-%.2f over %d runs%s", ratios[1], ratios[#ratios], #ratios, note and ("; " .. note) or "")
      end
      -- the peer under each OpenMP setting (medians), and which one was its fastest
      local by_omp, omp_note = {}, {}
      for _, omp in ipairs(OMP) do
        local f = omp_figs[n] and omp_figs[n][omp]
        if f then
          by_omp[omp] = median(f)
          omp_note[#omp_note + 1] = string.format("%s %.3g", omp, by_omp[omp])
        end
      end
      if #omp_note > 1 then note = (note and (note .. "; ") or "") .. "peer " .. table.concat(omp_note, ", ") end
      local best_omp = peer_omp[n] and peer_omp[n][#peer_omp[n]]
      table_rows[#table_rows + 1] = {suite = name, name = r.name, unit = r.unit, tdrl = value,
        torch = median(pvals), ratio = median(ratios), gflops = r.gflops and (r.higher and r.gflops * value / r.value or r.gflops * r.value / value), note = note,
        bandwidth = r.bandwidth and (r.higher and r.bandwidth * value / r.value or r.bandwidth * r.value / value),
        tdrl_peak_mb = median(peaks), torch_peak_mb = median(ppeaks), runs = #vals, ratios = ratios,
        torch_omp = best_omp, torch_by_omp = by_omp, load = median(loads[n] or {})}
    end
  end
end
local load_end = loadavg()

print(string.format("OpenBLAS core: tdrl %s, PyTorch %s%s; load average %.2f at the start, %.2f at the end",
  tdrl_core or "?", torch_core or "-", (torch_core and tdrl_core and torch_core ~= tdrl_core) and " (DIFFERENT KERNELS: ratios of GEMM rows mean nothing)" or "",
  load_start or 0, load_end or 0))
print(string.format("%-48s %11s %11s %-8s %7s %10s %13s %-7s %s", "workload", "tdrl", "PyTorch", "unit", "ratio",
  "ceiling", "peak MB t/P", "omp", "note"))
for _, r in ipairs(table_rows) do
  -- GEMM-shaped rows against sgemm, memory-bound rows against memcpy, both from this run
  local frac = (r.gflops and ceiling) and string.format("%.0f%% sgemm", 100 * r.gflops / ceiling)
    or (r.bandwidth and copy_ceiling) and string.format("%.0f%% copy", 100 * r.bandwidth / copy_ceiling) or ""
  local mem = r.tdrl_peak_mb and string.format("%.0f/%s", r.tdrl_peak_mb,
    r.torch_peak_mb and string.format("%.0f", r.torch_peak_mb) or "-") or ""
  print(string.format("%-48s %11.4g %11s %-8s %7s %10s %13s %-7s %s", r.name, r.tdrl,
    r.torch and string.format("%.4g", r.torch) or "-", r.unit,
    r.ratio and string.format("%.2fx", r.ratio) or "-", frac, mem, r.torch_omp or "", r.note or ""))
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
local out = {machine = {cpu = cpu, threads = T.get_num_threads(), date = stamp, load_start = load_start,
  load_end = load_end, blas_core_tdrl = tdrl_core, blas_core_torch = torch_core, torch = torch_version},
  sgemm_ceiling_gflops = ceiling, copy_ceiling_gbs = copy_ceiling, peer_omp_settings = OMP, rows = table_rows}
local path = "bench/results/" .. stamp .. ".json"
local fh = assert(io.open(path, "w"))
fh:write(json.encode(out, "  "), "\n")
fh:close()
print("results written to " .. path)
