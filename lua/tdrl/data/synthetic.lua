-- Synthetic: one object in a 32 x 32 RGB scene, generated in C (ops/io/synthetic.c), no download.
-- Tasks: background colour (9), foreground colour (9, never the background), location (16: a
-- 4 x 4 grid of 8 x 8 cells, numbered row by row), shape (5: square, circle, triangle, cross,
-- diamond, 7 x 7 pixels). The same seed gives the same bytes.
--
--   local train, val, test = data.synthetic()               -- 3,500 / 500 / 1,000
--   local ds = data.synthetic{split = "train", n = 4000, n_val = 500, n_test = 1000, seed = 0}
--   local big = data.synthetic{object_scale = 2}   -- the object magnified 2x (14 x 14; 1-3)
-- split: "train", "val", "test", "trainval" (all n training scenes) or nil (train, val, test).
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'
local Dataset = require 'tdrl.data.dataset'

local M = {}

M.tasks = {"background", "foreground", "location", "shape"}
M.classes = {9, 9, 16, 5}

local function class_names()
  local _, colours = C.palette()
  local loc = {}
  for r = 1, 4 do
    for c = 1, 4 do loc[#loc + 1] = string.format("r%dc%d", r, c) end
  end
  return {background = colours, foreground = colours, location = loc, shape = C.shapes()}
end

--- The whole generated set of n scenes for a seed (stream 0: training scenes, 1: test scenes).
function M.generate(n, seed, stream, name, scale)
  local src = C.synthetic_source(n, U.mix(seed, stream), scale or 1)
  return Dataset.new(src, {name = name, tasks = M.tasks, classes = M.classes, class_names = class_names()})
end

function M.new(opts)
  opts = opts or {}
  U.known(opts, {"split", "n", "n_val", "n_test", "seed", "object_scale"}, "synthetic")
  local scale = U.opt(opts, "object_scale", "number", 1, "synthetic")
  local n = U.opt(opts, "n", "number", 4000, "synthetic")
  local n_val = U.opt(opts, "n_val", "number", 500, "synthetic")
  local n_test = U.opt(opts, "n_test", "number", 1000, "synthetic")
  local seed = U.opt(opts, "seed", "number", 0, "synthetic")
  local split = U.opt(opts, "split", "string", nil, "synthetic")
  -- only the train / val parts use n_val: "trainval" and "test" take any n
  if split ~= "trainval" and split ~= "test" and n_val > n then
    error(string.format("synthetic: n_val %d exceeds n %d (give a smaller n_val, or split = 'trainval')", n_val, n), 2)
  end
  local function trainval() return M.generate(n, seed, 0, "synthetic/trainval", scale) end
  local function test() return M.generate(n_test, seed, 1, "synthetic/test", scale) end
  local function parts()
    return trainval():split({n - n_val, n_val}, seed, {"synthetic/train", "synthetic/val"})
  end
  return U.pick_split("synthetic", split, trainval, parts, test)
end

return M
