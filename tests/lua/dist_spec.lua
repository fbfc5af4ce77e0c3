-- tdrl.dist and what runs on it: collectives, data-parallel training, parallel sweeps and
-- failure, as jobs of 2 ranks on this machine (`mpirun -np 2`, scripts in tests/lua/dist/).
-- Where mpirun or the binary's MPI is missing, the jobs are skipped with a note; the
-- single-process behaviour is tested either way.
local T = require 'tdrl'
local dist = require 'tdrl.dist'
local fs = require 'tdrl.util.fs'

local exe = arg[-1] or "./tdrl"
local dir = os.tmpname()
os.remove(dir)
fs.mkdir(dir)

local mpirun = io.popen("command -v mpirun 2>/dev/null"):read("l")
local skip = not mpirun and "mpirun is not installed (Debian: openmpi-bin)"
  or not dist.available() and "this tdrl was built without MPI (libopenmpi-dev absent at build time)" or nil
if skip then print("# skip: MPI jobs of dist_spec: " .. skip) end

-- one thread per rank, so that 1 and 2 ranks compute alike; shared memory between the ranks and
-- the launcher's own traffic on loopback: no network needed
local MPI = "TDRL_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader " ..
  "OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mca_base_component_disable_dlclose=1 " ..
  "mpirun --oversubscribe --allow-run-as-root -np %d "
-- under `make asan`: Open MPI's libraries have no frame pointers, and LeakSanitizer's fast
-- unwinder stops at their first frame, where tests/lsan.supp cannot name them
if os.getenv("ASAN_OPTIONS") then
  MPI = "ASAN_OPTIONS='" .. os.getenv("ASAN_OPTIONS") .. ":fast_unwind_on_malloc=0' " .. MPI
end

--- runs a command; returns its output (stdout and stderr), exit success, and seconds taken
local function sh(cmd)
  local t0 = T.clock()
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return out, ok, T.clock() - t0
end
local function job(np, script, ...)
  return sh(string.format(MPI, np) .. exe .. " " .. script .. " " .. table.concat({...}, " "))
end
local function alone(script, ...)
  return sh("TDRL_NUM_THREADS=1 " .. exe .. " " .. script .. " " .. table.concat({...}, " "))
end
local function must(what, out, ok)
  if not ok then error(what .. " failed:\n" .. out:sub(-3000), 2) end
  return out
end

--- relative difference of two weight files over all float tensors (root of summed squares),
--- and how far b's weights moved from c's (the same measure), so a test sees training happened
local function rel_diff(a_path, b_path)
  local a, b = T.load(a_path), T.load(b_path)
  local num, den, n = 0, 0, 0
  for k, v in pairs(a) do
    spec.truthy(b[k], "tensor " .. k .. " in both files")
    if v:dtype() == "float32" then
      num = num + ((v - b[k]) ^ 2):sum():item()
      den = den + (v ^ 2):sum():item()
      n = n + 1
    end
  end
  spec.truthy(n > 10, "weights compared")
  return math.sqrt(num / den)
end

describe("tdrl.dist in one process", function()
  it("is rank 0 of 1, and its collectives are the identity", function()
    if os.getenv("OMPI_COMM_WORLD_SIZE") then return end
    spec.eq(dist.rank(), 0); spec.eq(dist.size(), 1); spec.truthy(dist.is_main()); spec.eq(dist.active(), false)
    local x = T.tensor({1, 2})
    spec.eq(dist.all_reduce(x, "sum"), x)
    spec.eq(x[2], 2.0)
    spec.eq(dist.all_reduce(5, "sum"), 5)
    spec.eq(dist.broadcast({a = 1}).a, 1)
    local g = dist.all_gather(x)
    spec.eq(g:size(1), 2)
    g[1] = 9
    spec.eq(x[1], 1.0, "all_gather gives a new tensor")
    spec.eq(dist.all_gather("s")[1], "s")
    local r = dist.map(3, function(i) return i * i end)
    spec.eq(#r, 3); spec.eq(r[3], 9)
    local a = T.tensor({1, 2}, {requires_grad = true})
    local s = dist.sum_over_ranks(a)
    ;(s * T.tensor({3, 4})):sum():backward()
    spec.eq(a.grad[2], 4.0, "sum_over_ranks is the identity, gradient included")
    dist.barrier()
    -- gradients summed during the backward: nothing to set up, and the plain backward
    spec.eq(dist.gradient_reducer({a}), nil)
    local nn = require 'tdrl.nn'
    local dp = require('tdrl.data_parallel').new(nn.Linear(2, 1))
    spec.eq(dp.reducer, nil, "no reducer for 1 rank")
    a.grad = nil
    dp:backward((a * 3):sum())
    spec.eq(a.grad[1], 3.0, "data_parallel's backward is the plain one")
  end)
  it("names bad arguments", function()
    spec.raises(function() dist.all_reduce(T.zeros(2), "median") end, "dist.all_reduce", "sum, mean, max or min")
    spec.raises(function() dist.all_reduce({T.zeros(2), 3}) end, "item 2 is a number")
    spec.raises(function() dist.broadcast(T.zeros(2), 1) end, "root 1 is not a rank (0 to 0)")
    spec.raises(function() require('tdrl.data_parallel').new({parameters = function() return {} end,
      buffers = function() return {} end}, {noise = "shared"}) end, "noise must be 'rank' or 'global'")
  end)
  it("splits a global batch over ranks with the remainder on the first ones", function()
    local slice = require('tdrl.data_parallel').slice
    local got = {}
    for r = 0, 2 do local off, n = slice(10, r, 3); got[#got + 1] = off .. "+" .. n end
    spec.eq(table.concat(got, " "), "0+4 4+3 7+3")
  end)
end)

describe("tdrl.dist on 2 ranks", function()
  if skip then return end
  it("all_reduce, broadcast, all_gather, map and sum_over_ranks match hand computations", function()
    local out = must("the job", job(2, "tests/lua/dist/collectives.lua"))
    spec.truthy(out:find("rank 0: 40 checks passed", 1, true) and out:find("rank 1: 40 checks passed", 1, true), out)
  end)

  it("a rank that raises ends the job, non-zero, naming the rank and the error, within 10 s", function()
    local out, ok, secs = job(2, "tests/lua/dist/fail.lua", "raise")
    spec.eq(ok, nil, "the job failed")
    spec.truthy(secs < 10, string.format("ended after %.1f s", secs))
    spec.truthy(out:find("rank 1 of 2", 1, true) and out:find("rank one failed on purpose", 1, true), out)
    spec.truthy(not out:find("went on past", 1, true), out)
  end)

  it("a rank that exits, or never joins a collective, ends the job within 10 s", function()
    local out, ok, secs = job(2, "tests/lua/dist/fail.lua", "exit")
    spec.eq(ok, nil, "the job failed")
    spec.truthy(secs < 10, string.format("ended after %.1f s", secs))
    out, ok, secs = sh("TDRL_DIST_TIMEOUT=1 " .. string.format(MPI, 2) .. exe .. " tests/lua/dist/fail.lua skip")
    spec.eq(ok, nil, "the job failed")
    spec.truthy(secs < 10, string.format("ended after %.1f s", secs))
    spec.truthy(out:find("rank 0 of 2: dist.all_reduce waited 1 s", 1, true), out)
    -- the same for the buckets that a backward starts (data-parallel training's overlap)
    out, ok, secs = sh("TDRL_DIST_TIMEOUT=1 " .. string.format(MPI, 2) .. exe ..
      " tests/lua/dist/fail.lua skip backward")
    spec.eq(ok, nil, "the job failed")
    spec.truthy(secs < 10, string.format("ended after %.1f s", secs))
    spec.truthy(out:find("rank 0 of 2: dist: gradient all-reduce waited 1 s", 1, true), out)
  end)

  it("N steps on 2 ranks with global batch B equal 1 rank with batch B (GroupNorm model, overlap)", function()
    must("initial weights", alone("tests/lua/dist/train.lua", dir .. "/gn1.safetensors", "iters=0"))
    must("1 rank", alone("tests/lua/dist/train.lua", dir .. "/gn-one.safetensors"))
    -- gradients summed during the backward (the default) in buckets of 20 KB: the model's
    -- 0.17 MB of gradients in about 9 buckets, most started before the backward ends
    must("2 ranks", job(2, "tests/lua/dist/train.lua", dir .. "/gn-two.safetensors", "bucket_mb=0.02"))
    local d = rel_diff(dir .. "/gn-one.safetensors", dir .. "/gn-two.safetensors")
    local moved = rel_diff(dir .. "/gn-one.safetensors", dir .. "/gn1.safetensors")
    print(string.format("# GroupNorm: 2 ranks vs 1: %.2e relative; training moved the weights %.2e", d, moved))
    spec.truthy(d <= 1e-5, string.format("2 ranks differ from 1 by %.3g", d))
    spec.truthy(moved > 1000 * d, string.format("the weights moved %.3g", moved))
    -- the default, a noise stream per rank: the same batches, other noise, other weights
    must("2 ranks, noise per rank", job(2, "tests/lua/dist/train.lua", dir .. "/gn-rank.safetensors", "noise=rank"))
    local other = rel_diff(dir .. "/gn-one.safetensors", dir .. "/gn-rank.safetensors")
    spec.truthy(other > 100 * d, string.format("per-rank noise gave weights %.3g from one rank's", other))
  end)

  it("gradients summed during the backward (overlap) equal those summed after it", function()
    local out = must("the job", job(2, "tests/lua/dist/overlap.lua"))
    for r = 0, 1 do
      spec.truthy(out:find("rank " .. r .. ": overlap equals after-backward in 5 buckets", 1, true), out)
    end
    print("# " .. out:match("rank 0: [^\n]*"))
    -- the trainer with overlap = false (after the backward) takes the overlapped run's steps
    must("2 ranks, no overlap", job(2, "tests/lua/dist/train.lua", dir .. "/gn-after.safetensors", "overlap=false",
      "bucket_mb=0.02"))
    local d = rel_diff(dir .. "/gn-two.safetensors", dir .. "/gn-after.safetensors")
    local one = rel_diff(dir .. "/gn-one.safetensors", dir .. "/gn-after.safetensors")
    print(string.format("# GroupNorm on 2 ranks: overlap vs after the backward %.2e relative, after vs 1 rank %.2e",
      d, one))
    spec.truthy(d <= 1e-6, string.format("overlap and after-backward differ by %.3g", d))
    spec.truthy(one <= 1e-5, string.format("after-backward on 2 ranks differs from 1 rank by %.3g", one))
  end)

  it("with synchronised BatchNorm too (and per-rank BatchNorm differs, as it should)", function()
    must("1 rank", alone("tests/lua/dist/train.lua", dir .. "/bn-one.safetensors", "encoder=drl"))
    -- synchronised BatchNorm's own sums run during the backward, between the buckets' (0.1 MB)
    must("2 ranks, sync", job(2, "tests/lua/dist/train.lua", dir .. "/bn-sync.safetensors", "encoder=drl",
      "sync_bn=true", "bucket_mb=0.1"))
    must("2 ranks, per rank", job(2, "tests/lua/dist/train.lua", dir .. "/bn-rank.safetensors", "encoder=drl"))
    local d = rel_diff(dir .. "/bn-one.safetensors", dir .. "/bn-sync.safetensors")
    local per_rank = rel_diff(dir .. "/bn-one.safetensors", dir .. "/bn-rank.safetensors")
    print(string.format("# BatchNorm: synchronised %.2e relative, per rank %.2e", d, per_rank))
    spec.truthy(d <= 1e-5, string.format("synchronised BatchNorm on 2 ranks differs from 1 rank by %.3g", d))
    spec.truthy(per_rank > 100 * d, string.format("per-rank BatchNorm differs by only %.3g", per_rank))
  end)

  it("a checkpoint written by 2 ranks resumes on 1 and ends where 1 rank would", function()
    must("1 rank, 4 steps", alone("tests/lua/dist/train.lua", dir .. "/ck-one.safetensors", "iters=4"))
    local run = dir .. "/run2"
    must("2 ranks, 2 steps", job(2, "tests/lua/dist/train.lua", dir .. "/ck-half.safetensors", "iters=2", "out=" .. run))
    spec.truthy(fs.exists(run .. "/checkpoint.safetensors"), "rank 0 wrote the checkpoint")
    local rows = select(2, fs.read(run .. "/metrics.csv"):gsub("\n", "\n"))
    spec.eq(rows, 3, "one header and one row per step, written once")
    local out = must("resume", alone("tests/lua/dist/train.lua", dir .. "/ck-resumed.safetensors", "iters=4", "out=" .. run))
    local d = rel_diff(dir .. "/ck-one.safetensors", dir .. "/ck-resumed.safetensors")
    spec.truthy(d <= 1e-5, string.format("resumed run differs by %.3g", d))
    spec.eq(select(2, fs.read(run .. "/metrics.csv"):gsub("\n", "\n")), 5, "metrics of 4 steps")
  end)

  it("a 2-rank heads sweep (and MINE seeds, attention seeds) equals the 1-rank one", function()
    must("1 rank", alone("tests/lua/dist/sweep.lua", dir .. "/sweep-one.json"))
    must("2 ranks", job(2, "tests/lua/dist/sweep.lua", dir .. "/sweep-two.json"))
    local a, b = fs.read(dir .. "/sweep-one.json"), fs.read(dir .. "/sweep-two.json")
    spec.truthy(a:find('"heads"', 1, true) and a:find('"best_lr"', 1, true), a:sub(1, 200))
    spec.eq(b, a, "the same results")
  end)
end)

os.execute("rm -rf '" .. dir .. "'")
