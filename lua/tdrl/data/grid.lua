-- Image grids and single images as PNG files, for a quick look from the REPL.
--   data.save_grid(images, "grid.png", {nrow = 8, padding = 2, pad_value = 0.5, normalize = false})
-- nrow: images per row (default: a square grid).
-- images: a (B, C, H, W) or (C, H, W) tensor, a list of (C, H, W) tensors, or a data set (its
-- first n = 64 samples, raw values). normalize = true maps the batch's min..max to 0..1,
-- {lo, hi} maps that range; otherwise values are clamped to [0, 1]. scale = k enlarges each
-- image k times (nearest neighbour: crisp pixels for 32 x 32 images). pad_value 0.5 (grey).
-- tdrl.plot's grid draws the same grid on a canvas, with a title.
-- Returns the path.
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'

local M = {}

--- batch(images [, n, who]) -> (B, C, H, W): images as save_grid takes them (a data set gives its
--- first n = 64 samples); errors name `who` (default "save_grid")
function M.batch(images, n, who)
  who = who or "save_grid"
  local Dataset = require 'tdrl.data.dataset'
  if Dataset.is_dataset(images) then
    local ds = images:raw()
    local k = math.min(n or 64, #ds)
    local pos = {}
    for i = 1, k do pos[i] = i end
    return (ds:batch(pos))
  end
  if T.is_tensor(images) then
    if images:dim() == 3 then return images:unsqueeze(1) end
    if images:dim() == 2 then return images:unsqueeze(1):unsqueeze(1) end
    if images:dim() == 4 then return images end
    error(who .. ": expects (B, C, H, W), (C, H, W) or (H, W) images, got " .. images:dim() .. " dimensions", 3)
  end
  if type(images) == "table" and #images > 0 then
    for i, t in ipairs(images) do
      if not T.is_tensor(t) or t:dim() ~= 3 then error(who .. ": entry " .. i .. " is not a (C, H, W) tensor", 3) end
    end
    return T.stack(images, 1)
  end
  error(who .. ": expects a tensor, a list of tensors or a data set, got " .. type(images), 3)
end

function M.make_grid(images, opts)
  opts = opts or {}
  U.known(opts, {"nrow", "padding", "pad_value", "normalize", "n", "scale"}, "make_grid")
  local x = M.batch(images, opts.n):float()
  local norm = opts.normalize
  if norm then
    local lo, hi
    if type(norm) == "table" then lo, hi = norm[1], norm[2]
    else lo, hi = x:min():item(), x:max():item() end
    x = (x - lo) / math.max(hi - lo, 1e-12)
  end
  local k = opts.scale or 1
  if math.type(k) ~= "integer" or k < 1 then error("make_grid: scale must be a positive integer", 2) end
  if k > 1 then -- each image enlarged (nearest neighbour), the padding kept as it is
    local n, c, h, w = x:size(1), x:size(2), x:size(3), x:size(4)
    x = x:view(n, c, h, 1, w, 1):expand(n, c, h, k, w, k):reshape(n, c, h * k, w * k)
  end
  local nrow = opts.nrow or math.max(1, math.ceil(math.sqrt(x:size(1))))
  return C.grid(x:contiguous(), nrow, opts.padding or 2, opts.pad_value or 0.5)
end

function M.save_grid(images, path, opts)
  if type(path) ~= "string" then error("save_grid: expects a file path as second argument", 2) end
  C.save_png(path, M.make_grid(images, opts))
  return path
end

return M
