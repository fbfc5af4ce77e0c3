-- Image grids: a batch of images in [0, 1] laid out in rows, optionally enlarged and titled.
--   plot.grid(images, {nrow = 8, padding = 2, scale = 3, pad_value = 1, title = "samples"}, path)
-- images: a (N, C, H, W) tensor with C = 1 or 3, a (C, H, W) or (H, W) tensor, or a list of
-- (C, H, W) tensors. Values are clamped to [0, 1]. nrow = images per row (default: a square
-- layout); scale = integer enlargement (default: 3 for images under 32 pixels, 2 under 48,
-- else 1). Returns the canvas; cv.tiles = {x0, y0, tile_w, tile_h, nrow} locates image 1.
local Canvas = require 'tdrl.plot.canvas'
local common = require 'tdrl.plot.common'
local font = require 'tdrl.plot.font'

local FN = "plot.grid"
local floor, max, min = math.floor, math.max, math.min

local function batch(images)
  local T = require 'tdrl'
  if T.is_tensor(images) then
    local d = images:dim()
    if d == 4 then return images end
    if d == 3 then return images:unsqueeze(1) end
    if d == 2 then return images:unsqueeze(1):unsqueeze(1) end
    error(string.format("%s: expects (N, C, H, W), (C, H, W) or (H, W) images, got %d dimensions", FN, d), 3)
  end
  if type(images) == "table" and #images > 0 then
    for i, t in ipairs(images) do
      if not T.is_tensor(t) or t:dim() ~= 3 then error(string.format("%s: entry %d is not a (C, H, W) tensor", FN, i), 3) end
    end
    return T.stack(images, 1)
  end
  error(FN .. ": expects a tensor or a list of (C, H, W) tensors, got " .. type(images), 3)
end

local function grid(images, opts, path)
  opts = common.known(opts, {"nrow", "padding", "scale", "pad_value", "title"}, FN)
  local x = batch(images)
  local N, C, H, W = x:size(1), x:size(2), x:size(3), x:size(4)
  if C ~= 1 and C ~= 3 then
    error(string.format("%s: images need 1 or 3 channels, got %d (shape %dx%dx%dx%d)", FN, C, N, C, H, W), 2)
  end
  local nrow = opts.nrow or max(1, math.ceil(math.sqrt(N)))
  local pad = opts.padding or 2
  local k = opts.scale or (max(H, W) < 32 and 3 or max(H, W) < 48 and 2 or 1)
  for name, v in pairs({nrow = nrow, padding = pad + 1, scale = k}) do
    if math.type(v) ~= "integer" or v < 1 then error(string.format("%s: %s must be a positive integer", FN, name), 2) end
  end
  local ncol_img = min(nrow, N)
  local nlines = math.ceil(N / nrow)
  local tw, th_ = W * k + pad, H * k + pad
  local th = common.theme
  local top = opts.title and (th.pad + font.height(th.title) + 12) or 0
  local gw, gh = ncol_img * tw + pad, nlines * th_ + pad
  local titlew = opts.title and font.width(opts.title, th.title) + 2 * th.pad or 0
  local cw = max(gw, titlew)
  local ox = (cw - gw) // 2
  local pv = floor(min(1, max(0, opts.pad_value or 1)) * 255 + 0.5)
  local cv = Canvas.new(cw, top + gh, opts.title and 0xFFFFFF or Canvas.pack(pv, pv, pv))
  cv:fill_rect(ox, top, gw, gh, Canvas.pack(pv, pv, pv))
  local flat = x:float():contiguous():reshape(N * C * H * W):totable()
  local plane = H * W
  local pix, CW = cv.pix, cv.w
  for n = 0, N - 1 do
    local gx = ox + pad + (n % nrow) * tw
    local gy = top + pad + (n // nrow) * th_
    local off = n * C * plane
    for yy = 0, H - 1 do
      for xx = 0, W - 1 do
        local i = off + yy * W + xx + 1
        local r = flat[i]
        local g, b = r, r
        if C == 3 then g, b = flat[i + plane], flat[i + 2 * plane] end
        r = floor(min(1, max(0, r)) * 255 + 0.5)
        g = floor(min(1, max(0, g)) * 255 + 0.5)
        b = floor(min(1, max(0, b)) * 255 + 0.5)
        local c = (r << 16) | (g << 8) | b
        local py = gy + yy * k
        local px = gx + xx * k
        for dy = 0, k - 1 do
          local row = (py + dy) * CW + px + 1
          for dx = 0, k - 1 do pix[row + dx] = c end
        end
      end
    end
  end
  if opts.title then
    cv:text(cw // 2, th.pad, opts.title, {scale = th.title, align = "center", bold = true, color = th.text})
  end
  cv.tiles = {ox + pad, top + pad, tw, th_, nrow}
  return common.finish(cv, path, FN)
end

return grid
