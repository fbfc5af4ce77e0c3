-- Image folders: ROOT/<class>/<image>, one sub-folder per class (sorted by name: class 0 is the
-- first), images in PNG, JPEG or BMP decoded by stb_image, resized to a given size (area
-- averaging when shrinking, bilinear when growing), RGB or grey. Decoding happens when a batch
-- is read (in the loader's worker thread), or once into the data cache with cache = true.
--
--   local ds = data.folder("/data/cifar10/train", {size = 32})
--   local ds = data.folder(root, {size = {84, 84}, channels = 1, cache = true})
-- Options: size (a number or {height, width}; default: the first image's size), channels (3 or 1),
-- cache (false), extensions ({"png", "jpg", "jpeg", "bmp"}), name, task ("class").
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'
local cache = require 'tdrl.data.cache'
local Dataset = require 'tdrl.data.dataset'

local M = {}

M.extensions = {"png", "jpg", "jpeg", "bmp"}

local function ext_set(list)
  local s = {}
  for _, e in ipairs(list) do s[e:lower():gsub("^%.", "")] = true end
  return s
end

--- Lists classes and images: classes {names}, paths {..}, labels {class from 0}.
function M.scan(root, extensions)
  local exts = ext_set(extensions or M.extensions)
  local names, kinds = C.listdir(root)
  if not names then error("folder: cannot open " .. kinds, 0) end
  local classes = {}
  for i, n in ipairs(names) do
    if kinds[i] == "dir" then classes[#classes + 1] = n end
  end
  if #classes == 0 then
    error(string.format("folder: %s: empty: no class sub-folders (an image folder holds one sub-folder of images "
      .. "per class; %d other entries)", root, #names), 0)
  end
  local paths, labels = {}, {}
  local want = {}
  for e in pairs(exts) do want[#want + 1] = "." .. e end
  table.sort(want)
  for k, cls in ipairs(classes) do
    local dir = root .. "/" .. cls
    local files, fk = C.listdir(dir)
    if not files then error("folder: cannot open " .. fk, 0) end
    local count = 0
    for i, f in ipairs(files) do
      local e = f:match("%.([^.]+)$")
      if fk[i] == "file" and e and exts[e:lower()] then
        paths[#paths + 1] = dir .. "/" .. f
        labels[#labels + 1] = k - 1
        count = count + 1
      end
    end
    if count == 0 then
      error(string.format("folder: %s: class folder %d of %d ('%s') holds no images (%s; %d other entries)", dir, k,
        #classes, cls, table.concat(want, " "), #files), 0)
    end
  end
  return classes, paths, labels
end

local function parse_size(size, first)
  if size == nil then
    local h, w = C.image_info(first)
    return h, w
  end
  if type(size) == "number" then return size, size end
  if type(size) == "table" and #size == 2 then return size[1], size[2] end
  error("folder: size must be a number or {height, width}", 3)
end

function M.new(root, opts)
  if type(root) ~= "string" then error("folder: expects the root folder's path, got " .. type(root), 2) end
  root = root:gsub("/+$", "")
  opts = opts or {}
  U.known(opts, {"size", "channels", "cache", "extensions", "name", "task"}, "folder")
  local channels = U.opt(opts, "channels", "number", 3, "folder")
  if channels ~= 1 and channels ~= 3 then error("folder: channels must be 1 or 3, not " .. channels, 2) end
  local classes, paths, labels = M.scan(root, opts.extensions)
  local h, w = parse_size(opts.size, paths[1])
  if math.type(h) ~= "integer" or math.type(w) ~= "integer" or h < 1 or w < 1 then
    error(string.format("folder: size %s x %s must be positive integers", tostring(h), tostring(w)), 2)
  end
  local task = opts.task or "class"
  local function build()
    local lab = T.tensor(labels, "int64"):view(1, #labels)
    return C.files_source(paths, lab, channels, h, w, root), {}
  end
  local src
  if opts.cache then
    -- a fingerprint of the listing (path, size, mtime of every file): any change rebuilds
    local parts = {}
    for i, p in ipairs(paths) do
      local size, mtime = C.stat(p)
      parts[i] = p .. "|" .. tostring(size) .. "|" .. tostring(mtime) .. "|" .. labels[i]
    end
    local key = {root = root, size = h .. "x" .. w, channels = channels, files = #paths,
      fingerprint = U.hash(table.concat(parts, "\n"))}
    src = cache.get("folder-" .. U.hash(root .. "|" .. h .. "x" .. w .. "|" .. channels), key, build)
  else
    src = build()
  end
  return Dataset.new(src, {name = opts.name or root, tasks = {task}, classes = {#classes},
    class_names = {[task] = classes}})
end

return M
