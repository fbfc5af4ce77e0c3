-- Fashion-MNIST from Debian's package dataset-fashion-mnist (gzipped IDX files under
-- /usr/share/datasets/fashion-mnist/), decoded once into the data cache.
--
--   local train, test = data.fashion_mnist()   -- 60,000 / 10,000, 1 x 28 x 28, task "class"
--   local ds = data.fashion_mnist{split = "test", dir = ...}
-- dir (or TDRL_FASHION_DIR): another folder with the same four files (raw or .gz).
-- pad = 32, channels = 3: the 28 x 28 images centred on a black 32 x 32 canvas, grey as RGB.
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'
local cache = require 'tdrl.data.cache'
local Dataset = require 'tdrl.data.dataset'

local M = {}

M.default_dir = "/usr/share/datasets/fashion-mnist"
M.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
  "Ankle boot"}

local function find(dir, name)
  for _, f in ipairs({name .. ".gz", name}) do
    if U.exists(dir .. "/" .. f) then return dir .. "/" .. f end
  end
  return nil
end

function M.source(split, opts)
  local dir = opts and opts.dir or os.getenv("TDRL_FASHION_DIR")
  if not dir or dir == "" then dir = M.default_dir end
  local p = split == "train" and "train" or "t10k"
  local images, labels = find(dir, p .. "-images-idx3-ubyte"), find(dir, p .. "-labels-idx1-ubyte")
  if not images or not labels then
    error(string.format("fashion_mnist: %s/%s-images-idx3-ubyte.gz or %s-labels-idx1-ubyte.gz not found: install "
      .. "Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass dir", dir, p, p), 0)
  end
  local size, mtime = C.stat(images)
  local key = {source = images, size = size, mtime = mtime}
  return cache.get("fashion-mnist-" .. split, key, function()
    return C.idx_source(images, labels, 10), {}
  end)
end

function M.new(opts)
  return U.idx_splits("fashion_mnist", opts, Dataset, M.source, function(s)
    return {name = "fashion-mnist/" .. s, tasks = {"class"}, classes = {10}, class_names = {class = M.class_names}}
  end)
end

return M
