-- The data-parallel step on this machine in three layouts, and the model of the step time on
-- N machines checked against the 2-rank measurement (bench/README.md, "Many processes"):
--   ./tdrl bench/dist.lua [preset = small] [steps = 3]
-- runs bench/dist_step.lua as 1 rank x 2 threads, 1 rank x 1 thread and (with mpirun) 2 ranks x
-- 1 thread, prints a table and writes bench/results/dist-<time>.json. With mpirun it also times
-- the trainer's step on 2 ranks x 1 thread with the gradients' all-reduce overlapped with the
-- backward (data_parallel's default) and after it (overlap = false), alternating, as a ratio.
local json = require 'tdrl.json'
local preset, steps = arg[1] or "small", arg[2] or "3"
local exe = arg[-1] or "./tdrl"

local function load_avg()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or "?"
  if f then f:close() end
  return s:match("^(%S+ %S+ %S+)")
end

local function run(prefix, label, extra)
  local cmd = string.format("%s %s bench/dist_step.lua %s %s 100 %s 2>&1", prefix, exe, preset, steps, extra or "")
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  local line = out:match("(%b{})%s*$")
  if not line then error(label .. " failed:\n" .. out) end
  local r = json.decode(line)
  r.layout, r.load_before = label, load_avg()
  return r
end

local has_mpi = io.popen("command -v mpirun 2>/dev/null"):read("l") and require('tdrl.dist').available()
local rows = {run("TDRL_NUM_THREADS=2", "1 rank x 2 threads"), run("TDRL_NUM_THREADS=1", "1 rank x 1 thread")}
local MPI2 = "TDRL_NUM_THREADS=1 mpirun --oversubscribe --allow-run-as-root --bind-to none -np 2"
local overlap
if has_mpi then
  rows[3] = run(MPI2, "2 ranks x 1 thread")
  overlap = run(MPI2, "2 ranks x 1 thread, overlap vs after", "compare")
end
print(string.format("%-20s %9s %9s %9s %9s   (seconds per step, %s preset, global batch 100)", "layout", "step",
  "compute", "all-red.", "update", preset))
for _, r in ipairs(rows) do
  print(string.format("%-20s %9.3f %9.3f %9.4f %9.4f   load %s", r.layout, r.step, r.compute, r.allreduce, r.update,
    r.load_before))
end
local out = {preset = preset, rows = rows, date = os.date("!%Y-%m-%dT%H:%M:%SZ")}
if overlap then
  out.overlap = {step_overlap = overlap.step_overlap, step_overlap_1mb = overlap.step_overlap_1mb,
    step_after = overlap.step_after, ratio = overlap.step_overlap / overlap.step_after,
    ratio_1mb = overlap.step_overlap_1mb / overlap.step_after, buckets = overlap.buckets,
    buckets_1mb = overlap.buckets_1mb, load_before = overlap.load_before}
  print(string.format("2 ranks x 1 thread, the trainer's step, alternating (load %s): all-reduce after the backward " ..
    "%.3f s; overlapped with it in %d bucket(s) of 25 MB %.3f s (ratio %.3f), in %d of 1 MB %.3f s (ratio %.3f)",
    overlap.load_before, overlap.step_after, overlap.buckets, overlap.step_overlap, out.overlap.ratio,
    overlap.buckets_1mb, overlap.step_overlap_1mb, out.overlap.ratio_1mb))
end
if rows[3] then
  -- model: t(N) = compute(1 worker, batch B) / N + ring all-reduce of the gradient bytes
  -- (each rank sends and receives 2 (N - 1) / N of them) at bandwidth BW + the update
  local one, two = rows[2], rows[3]
  local bytes = two.grad_bytes
  local bw = 2 * (2 - 1) / 2 * bytes / two.allreduce_alone -- bytes/s that this machine's all-reduce reached
  local predicted = one.compute / 2 + 2 * (2 - 1) / 2 * bytes / bw + one.update
  -- the same with the compute each rank measured in the 2-rank job: on a loaded machine the
  -- ranks do not get a core each, and this separates that from the cost of communication
  local with_measured = two.compute + 2 * (2 - 1) / 2 * bytes / bw + two.update
  out.model = {grad_bytes = bytes, bandwidth_measured = bw, predicted_2 = predicted, measured_2 = two.step,
    error = (two.step - predicted) / predicted, predicted_2_measured_compute = with_measured,
    error_measured_compute = (two.step - with_measured) / with_measured,
    contention = two.compute / (one.compute / 2)}
  print(string.format("gradient bytes all-reduced per step: %d (%.2f MB); all-reduce alone %.4f s = %.2f GB/s",
    bytes, bytes / 1e6, two.allreduce_alone, bw / 1e9))
  print(string.format("model for 2 ranks: %.3f / 2 + %.4f + %.4f = %.3f s; measured %.3f s (%+.0f%%)", one.compute,
    bytes / bw, one.update, predicted, two.step, 100 * out.model.error))
  print(string.format("  with the compute measured per rank (%.3f s, %.2fx compute / 2: the cores' sharing): %.3f s (%+.0f%%)",
    two.compute, out.model.contention, with_measured, 100 * out.model.error_measured_compute))
  for _, n in ipairs({2, 4, 8, 16}) do
    for _, link in ipairs({{"10 Gb/s Ethernet", 1.25e9}, {"100 Gb/s InfiniBand", 12.5e9}}) do
      local t = rows[1].compute / n + 2 * (n - 1) / n * bytes / link[2] + rows[1].update
      print(string.format("  N = %2d machines like this one (2 threads each), %-20s: %.3f s per step (%.1fx)", n,
        link[1], t, rows[1].step / t))
    end
  end
end
local path = "bench/results/dist-" .. os.date("!%Y%m%dT%H%M%SZ") .. ".json"
local f = assert(io.open(path, "w"))
f:write(json.encode(out, "  "), "\n")
f:close()
print("written " .. path)
