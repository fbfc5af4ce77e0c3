-- Image grids: a batch of images in [0, 1] laid out in rows, optionally enlarged and titled.
--   plot.grid(images, {nrow = 8, padding = 2, scale = 3, pad_value = 1, title = "samples"}, path)
-- images: a (N, C, H, W) tensor with C = 1 or 3, a (C, H, W) or (H, W) tensor, or a list of
-- (C, H, W) tensors. Values are clamped to [0, 1]. nrow = images per row (default: a square
-- layout); scale = integer enlargement (default: 3 for images under 32 pixels, 2 under 48,
-- else 1). Returns the canvas; cv.tiles = {x0, y0, tile_w, tile_h, nrow} locates image 1.
-- The layout is data.make_grid's (the core's image grid); this adds the canvas and the title.
local Canvas = require 'tdrl.plot.canvas'
local common = require 'tdrl.plot.common'
local font = require 'tdrl.plot.font'

local FN = "plot.grid"
local floor, max, min = math.floor, math.max, math.min

local function grid(images, opts, path)
  opts = common.known(opts, {"nrow", "padding", "scale", "pad_value", "title"}, FN)
  local dgrid = require 'tdrl.data.grid'
  local x = dgrid.batch(images, nil, FN)
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
  local pv = min(1, max(0, opts.pad_value or 1))
  local g = dgrid.make_grid(x, {nrow = nrow, padding = pad, scale = k, pad_value = pv}) -- (C, gh, gw)
  local gh, gw = g:size(2), g:size(3)
  local th = common.theme
  local top = opts.title and (th.pad + font.height(th.title) + 12) or 0
  local titlew = opts.title and font.width(opts.title, th.title) + 2 * th.pad or 0
  local cw = max(gw, titlew)
  local ox = (cw - gw) // 2
  local pvb = floor(pv * 255 + 0.5)
  local cv = Canvas.new(cw, top + gh, opts.title and 0xFFFFFF or Canvas.pack(pvb, pvb, pvb))
  local flat = (g:clamp(0, 1) * 255 + 0.5):floor():reshape(C * gh * gw):totable()
  local plane, pix = gh * gw, cv.pix
  for y = 0, gh - 1 do
    local row = (top + y) * cw + ox + 1
    for xx = 0, gw - 1 do
      local i = y * gw + xx + 1
      local r = flat[i]
      local gg, b = r, r
      if C == 3 then gg, b = flat[i + plane], flat[i + 2 * plane] end
      pix[row + xx] = (r << 16) | (gg << 8) | b
    end
  end
  if opts.title then
    cv:text(cw // 2, th.pad, opts.title, {scale = th.title, align = "center", bold = true, color = th.text})
  end
  cv.tiles = {ox + pad, top + pad, W * k + pad, H * k + pad, nrow}
  return common.finish(cv, path, FN)
end

return grid
