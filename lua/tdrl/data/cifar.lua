-- CIFAR-10 and CIFAR-100 from their binary batches (the "binary version" archives, unpacked):
--   CIFAR-10:  DIR/data_batch_1.bin .. data_batch_5.bin, DIR/test_batch.bin (task "class", 10)
--   CIFAR-100: DIR/train.bin, DIR/test.bin (tasks "coarse" (20) and "fine" (100))
-- DIR defaults to <data cache>/cifar-10-batches-bin and <data cache>/cifar-100-binary. Class names
-- come from batches.meta.txt / fine_label_names.txt / coarse_label_names.txt when present.
-- No download: the archives are to be put there by the user.
--
--   local train, test = data.cifar10()                 local ds = data.cifar100{split = "test"}
-- The reference standardises CIFAR per channel: ds:normalize(data.cifar10_mean, data.cifar10_std).
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'
local cache = require 'tdrl.data.cache'
local Dataset = require 'tdrl.data.dataset'

local M = {}

M.cifar10_mean = {0.4914, 0.4822, 0.4465}
M.cifar10_std = {0.2470, 0.2435, 0.2616}

local function read_names(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local names = {}
  for line in f:lines() do
    line = line:gsub("%s+$", "")
    if line ~= "" then names[#names + 1] = line end
  end
  f:close()
  return names
end

local function files(dir, list)
  local out = {}
  for i, name in ipairs(list) do
    out[i] = dir .. "/" .. name
    if not U.exists(out[i]) then
      error(string.format("cifar: %s not found (put the unpacked binary version of the data set in %s, or pass dir)",
        out[i], dir), 0)
    end
  end
  return out
end

local function make(variant, opts)
  opts = opts or {}
  local where = "cifar" .. variant
  U.known(opts, {"split", "dir"}, where)
  local split = U.opt(opts, "split", "string", nil, where)
  local dir = opts.dir or cache.path(variant == 10 and "cifar-10-batches-bin" or "cifar-100-binary")
  local function one(s)
    local list
    if variant == 10 then
      list = s == "train" and {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
        "data_batch_5.bin"} or {"test_batch.bin"}
    else
      list = {s == "train" and "train.bin" or "test.bin"}
    end
    if s ~= "train" and s ~= "test" then error(where .. ": split must be 'train' or 'test', not '" .. s .. "'", 3) end
    local src = C.cifar_source(files(dir, list), variant)
    if variant == 10 then
      return Dataset.new(src, {name = where .. "/" .. s, tasks = {"class"}, classes = {10},
        class_names = {class = read_names(dir .. "/batches.meta.txt")}})
    end
    return Dataset.new(src, {name = where .. "/" .. s, tasks = {"coarse", "fine"}, classes = {20, 100},
      class_names = {coarse = read_names(dir .. "/coarse_label_names.txt"),
        fine = read_names(dir .. "/fine_label_names.txt")}})
  end
  if split then return one(split) end
  return one("train"), one("test")
end

function M.cifar10(opts) return make(10, opts) end
function M.cifar100(opts) return make(100, opts) end

return M
