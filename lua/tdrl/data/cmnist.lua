-- Colored-MNIST: each real MNIST digit padded from 28 x 28 to 32 x 32 and blended from a
-- background colour (9) to a foreground colour (9, never the background) by its grey level;
-- colours drawn per sample from the seed, coloured on the fly in C from the cached digits.
-- Tasks: digit (10), background (9), foreground (9).
--
--   local train, val, test = data.cmnist()        -- 50,000 / 10,000 / 10,000
--   local ds = data.cmnist{split = "train", seed = 0, n_val = 10000, dir = ...}
-- split: "train", "val", "test", "trainval" (all 60,000) or nil (train, val, test).
-- digits: a grey digit data set (N, 1, H <= 32, W <= 32) to colour instead of MNIST (tests).
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'
local Dataset = require 'tdrl.data.dataset'
local mnist = require 'tdrl.data.mnist'

local M = {}

M.tasks = {"digit", "background", "foreground"}
M.classes = {10, 9, 9}

--- Colours a grey digit source with colours drawn from seed (stream 0: training, 1: test).
function M.colour(digits_src, seed, stream, name)
  local src = C.cmnist_source(digits_src, U.mix(seed, stream))
  local _, colours = C.palette()
  local digits = {}
  for d = 0, 9 do digits[d + 1] = tostring(d) end
  return Dataset.new(src, {name = name, tasks = M.tasks, classes = M.classes,
    class_names = {digit = digits, background = colours, foreground = colours}})
end

function M.new(opts)
  opts = opts or {}
  U.known(opts, {"split", "seed", "n_val", "dir", "digits"}, "cmnist")
  local seed = U.opt(opts, "seed", "number", 0, "cmnist")
  local n_val = U.opt(opts, "n_val", "number", 10000, "cmnist")
  local split = U.opt(opts, "split", "string", nil, "cmnist")
  local function base(s)
    if opts.digits then
      if s == "train" then return opts.digits.train.source end
      return opts.digits.test.source
    end
    return mnist.source(s, opts)
  end
  local function trainval() return M.colour(base("train"), seed, 0, "cmnist/trainval") end
  local function test() return M.colour(base("test"), seed, 1, "cmnist/test") end
  local function parts()
    local tv = trainval()
    if n_val > #tv then error(string.format("cmnist: n_val %d exceeds %d training digits", n_val, #tv), 3) end
    return tv:split({#tv - n_val, n_val}, seed, {"cmnist/train", "cmnist/val"})
  end
  return U.pick_split("cmnist", split, trainval, parts, test)
end

return M
