-- CelebA: aligned face images with 40 binary attributes (the tasks, 1 where present), the
-- official partition (0 train, 1 validation, 2 test), resized to 64 x 64 without a crop (as in
-- the reference). Layout of DIR (default <data cache>/celeba):
--   DIR/img_align_celeba/000001.jpg ...   DIR/list_attr_celeba.txt   DIR/list_eval_partition.txt
-- No download: the files are to be put there by the user.
--
--   local train, val, test = data.celeba()
--   local ds = data.celeba{split = "train", size = 64, cache = true, attributes = {"Smiling", "Male"}}
-- cache = true decodes the split once into the data cache (a few minutes for the training split).
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'
local cache = require 'tdrl.data.cache'
local Dataset = require 'tdrl.data.dataset'

local M = {}

M.splits = {train = 0, val = 1, test = 2}

function M.new(opts)
  opts = opts or {}
  U.known(opts, {"split", "dir", "size", "cache", "attributes", "images"}, "celeba")
  local dir = (opts.dir or cache.path("celeba")):gsub("/+$", "")
  local size = U.opt(opts, "size", "number", 64, "celeba")
  local split = U.opt(opts, "split", "string", nil, "celeba")
  local images = dir .. "/" .. (opts.images or "img_align_celeba")
  local attr, part = dir .. "/list_attr_celeba.txt", dir .. "/list_eval_partition.txt"
  for _, f in ipairs({attr, part, images}) do
    if not U.exists(f) then
      error("celeba: " .. f .. " not found (expected img_align_celeba/, list_attr_celeba.txt and "
        .. "list_eval_partition.txt in " .. dir .. ")", 2)
    end
  end
  local function one(s)
    local code = M.splits[s]
    if not code then error("celeba: split must be 'train', 'val' or 'test', not '" .. tostring(s) .. "'", 3) end
    local names, labels, attrs = C.celeba_read(attr, part, code)
    if #names == 0 then error("celeba: " .. part .. " lists no image of split '" .. s .. "'", 3) end
    local keep = attrs
    if opts.attributes then
      local col = {}
      for k, a in ipairs(attrs) do col[a] = k end
      local rows = {}
      for i, a in ipairs(opts.attributes) do
        if not col[a] then error("celeba: unknown attribute '" .. tostring(a) .. "' (see " .. attr .. " line 2)", 3) end
        rows[i] = col[a] - 1
      end
      labels = labels:index_select(1, T.tensor(rows, "int64")):contiguous()
      keep = opts.attributes
    end
    local paths = {}
    for i, n in ipairs(names) do paths[i] = images .. "/" .. n end
    local classes = {}
    for k = 1, #keep do classes[k] = 2 end
    local function build()
      return C.files_source(paths, labels, 3, size, size, images), {}
    end
    local src
    if opts.cache then
      local asize, amtime = C.stat(attr)
      local psize, pmtime = C.stat(part)
      local key = {dir = dir, size = size, attributes = table.concat(keep, ","),
        lists = table.concat({asize, amtime, psize, pmtime}, ",")}
      src = cache.get("celeba-" .. s .. "-" .. U.hash(dir .. "|" .. size .. "|" .. key.attributes), key, build)
    else
      src = build()
    end
    return Dataset.new(src, {name = "celeba/" .. s, tasks = keep, classes = classes})
  end
  if split then return one(split) end
  return one("train"), one("val"), one("test")
end

return M
