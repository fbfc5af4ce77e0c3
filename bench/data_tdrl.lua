-- Data benchmark: images per second for reading IDX files, for loader epochs over them, for
-- image folders of PNGs (decoded in the loader's worker thread), for Synthetic generation and
-- the time to reopen a cached set. Inputs are written to a temporary folder first (and the
-- real Fashion-MNIST gzip file is read when Debian's package is installed). Prints one JSON
-- line per workload (see bench/run.lua).
local T = require 'tdrl'
local data = require 'tdrl.data'
local C = T._data
local U = data.util

local tmp = os.tmpname()
os.remove(tmp)
C.mkdir_p(tmp)
data.cache.dir = function() return tmp .. "/cache" end

local rows = {}
local function row(name, value, unit, note)
  rows[#rows + 1] = {name = name, value = value, unit = unit, higher = unit ~= "ms", note = note}
end

-- seconds of one call (best of `reps`)
local function best(fn, reps)
  local t = math.huge
  for _ = 1, reps or 3 do
    local t0 = T.clock()
    fn()
    t = math.min(t, T.clock() - t0)
  end
  return t
end

local function epoch(loader)
  local n = 0
  for x in loader:iter() do n = n + x:size(1) end
  return n
end

-- IDX: 20,000 random 28 x 28 digits (raw)
local N = 20000
do
  local g = T.Generator(1)
  local bytes = T.randint(0, 256, {N * 784}, {generator = g}):tolist()
  local parts = {string.pack(">BBBBI4I4I4", 0, 0, 8, 3, N, 28, 28)}
  for i = 1, #bytes, 4096 do
    parts[#parts + 1] = string.char(table.unpack(bytes, i, math.min(i + 4095, #bytes)))
  end
  local f = assert(io.open(tmp .. "/images.idx", "wb")); f:write(table.concat(parts)); f:close()
  local lab = {string.pack(">BBBBI4", 0, 0, 8, 1, N)}
  for i = 1, N do lab[#lab + 1] = string.char(i % 10) end
  f = assert(io.open(tmp .. "/labels.idx", "wb")); f:write(table.concat(lab)); f:close()
end
local t = best(function() C.idx_source(tmp .. "/images.idx", tmp .. "/labels.idx", 10) end)
row("IDX read, raw, 28x28", N / t, "images/s")
local fashion = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
if U.exists(fashion) then
  local labels = fashion:gsub("images%-idx3", "labels-idx1")
  t = best(function() C.idx_source(fashion, labels, 10) end, 2)
  row("IDX read, gzip (Fashion-MNIST train), 28x28", 60000 / t, "images/s")
end
local src = C.idx_source(tmp .. "/images.idx", tmp .. "/labels.idx", 10)
local ds = data.Dataset.new(src, {tasks = {"digit"}, classes = {10}})
local l = data.loader(ds, {batch_size = 100, shuffle = true})
epoch(l)
t = best(function() epoch(l) end)
row("loader epoch over IDX, batch 100, shuffled", N / t, "images/s")

-- cache: write once, reopen
ds:save(tmp .. "/idx.safetensors")
t = best(function() data.open(tmp .. "/idx.safetensors") end, 5)
row("open a cached set of 20k 28x28 images", t * 1000, "ms")

-- Synthetic generation
t = best(function() C.synthetic_source(10000, 1) end)
row("Synthetic generation, 32x32", 10000 / t, "images/s")

-- a folder of PNGs: 10 classes of 100 random 32 x 32 RGB images, and 200 of 178 x 218 resized to 64
local function png_folder(root, classes, per, h, w)
  local g = T.Generator(2)
  for c = 1, classes do
    C.mkdir_p(root .. "/class" .. c)
    for i = 1, per do
      data.save_png(string.format("%s/class%d/%04d.png", root, c, i), T.rand(3, h, w, {generator = g}))
    end
  end
  return classes * per
end
local n32 = png_folder(tmp .. "/png32", 10, 100, 32, 32)
for _, threads in ipairs({1, 2}) do
  local f32 = data.folder(tmp .. "/png32", {size = 32})
  local lf = data.loader(f32, {batch_size = 100, shuffle = true, threads = threads})
  t = best(function() epoch(lf) end, 2)
  row(string.format("PNG folder 32x32, loader batch 100, %d decode thread%s", threads, threads > 1 and "s" or ""),
    n32 / t, "images/s")
end
local nbig = png_folder(tmp .. "/pngbig", 2, 100, 218, 178)
local fb = data.folder(tmp .. "/pngbig", {size = 64})
t = best(function() epoch(data.loader(fb, {batch_size = 100, threads = 2})) end, 2)
row("PNG folder 178x218 -> 64x64, loader batch 100, 2 decode threads", nbig / t, "images/s")

-- the prefetch thread hides decoding behind work of the same length
local f32 = data.folder(tmp .. "/png32", {size = 32})
local function busy(seconds)
  local t0 = T.clock()
  while T.clock() - t0 < seconds do end
end
local per_batch = 100 / rows[#rows - 2].value -- decode time of one batch, one thread
for _, pre in ipairs({false, true}) do
  local lp = data.loader(f32, {batch_size = 100, prefetch = pre})
  t = best(function()
    for _ in lp:iter() do busy(per_batch) end
  end, 2)
  row(string.format("PNG epoch with %.0f ms of work per batch, prefetch %s", per_batch * 1000, pre and "on" or "off"),
    n32 / t, "images/s", pre and "decoding overlaps the work" or "decoding adds to the work")
end

os.execute("rm -rf " .. U.shq(tmp))

local json = require 'tdrl.json'
for _, r in ipairs(rows) do print(json.encode(r)) end
