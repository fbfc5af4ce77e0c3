-- An RGB raster for figures: one packed 0xRRGGBB integer per pixel in a flat Lua array
-- (row-major, pixel (x, y) with 0-based x, y at index y * w + x + 1). Drawing clips to the
-- canvas. Colours are packed integers or "#rrggbb" strings (see Canvas.color).
--   local cv = Canvas.new(900, 600)          -- white
--   cv:fill_rect(x, y, w, h, 0x336699); cv:polyline({x1, y1, x2, y2, ...}, color, width, dash)
--   cv:text(x, y, "label", {scale = 2, align = "center"}); cv:rgb(x, y) -> r, g, b
--   cv:png() -> PNG bytes; cv:save_png(path); cv:tensor() -> (3, H, W) float tensor in [0, 1]
local font = require 'tdrl.plot.font'

local Canvas = {}
Canvas.__index = Canvas

local floor, ceil, min, max, sqrt = math.floor, math.ceil, math.min, math.max, math.sqrt

--- a packed colour from a packed integer, "#rrggbb" / "rrggbb", or {r, g, b} (0..255)
function Canvas.color(c)
  if math.type(c) == "integer" then return c & 0xFFFFFF end
  if type(c) == "string" then
    local hex = c:match("^#?(%x%x%x%x%x%x)$")
    if hex then return tonumber(hex, 16) end
  elseif type(c) == "table" and #c == 3 then
    local r, g, b = floor(c[1] + 0.5), floor(c[2] + 0.5), floor(c[3] + 0.5)
    return (min(255, max(0, r)) << 16) | (min(255, max(0, g)) << 8) | min(255, max(0, b))
  end
  error("plot: not a colour: " .. tostring(c), 2)
end

function Canvas.pack(r, g, b)
  return (r << 16) | (g << 8) | b
end

function Canvas.unpack(c)
  return c >> 16, (c >> 8) & 255, c & 255
end

--- mixes colour a towards b by t in [0, 1]
function Canvas.mix(a, b, t)
  local ar, ag, ab = a >> 16, (a >> 8) & 255, a & 255
  local br, bg, bb = b >> 16, (b >> 8) & 255, b & 255
  return (floor(ar + (br - ar) * t + 0.5) << 16) | (floor(ag + (bg - ag) * t + 0.5) << 8)
    | floor(ab + (bb - ab) * t + 0.5)
end

--- relative luminance in [0, 1] (for choosing black or white text over a colour)
function Canvas.luminance(c)
  return (0.2126 * (c >> 16) + 0.7152 * ((c >> 8) & 255) + 0.0722 * (c & 255)) / 255
end

function Canvas.new(w, h, bg)
  if math.type(w) ~= "integer" or math.type(h) ~= "integer" or w < 1 or h < 1 or w * h > 1 << 26 then
    error(string.format("Canvas.new: size %sx%s must be positive integers (at most 64M pixels)",
      tostring(w), tostring(h)), 2)
  end
  bg = Canvas.color(bg or 0xFFFFFF)
  local pix = {}
  for i = 1, w * h do pix[i] = bg end
  return setmetatable({w = w, h = h, pix = pix, bg = bg}, Canvas)
end

function Canvas:get(x, y)
  if x < 0 or y < 0 or x >= self.w or y >= self.h then return nil end
  return self.pix[y * self.w + x + 1]
end

function Canvas:rgb(x, y)
  local c = self:get(x, y)
  if not c then return nil end
  return c >> 16, (c >> 8) & 255, c & 255
end

function Canvas:set(x, y, c)
  if x < 0 or y < 0 or x >= self.w or y >= self.h then return end
  self.pix[y * self.w + x + 1] = c
end

--- fills the rectangle with top-left (x, y) and size (w, h), clipped; alpha < 1 blends
function Canvas:fill_rect(x, y, w, h, c, alpha)
  x, y = floor(x), floor(y)
  local x0, y0 = max(0, x), max(0, y)
  local x1, y1 = min(self.w, x + floor(w)) - 1, min(self.h, y + floor(h)) - 1
  if x1 < x0 or y1 < y0 then return end
  local pix, W = self.pix, self.w
  if alpha == nil or alpha >= 1 then
    for yy = y0, y1 do
      local base = yy * W + 1
      for xx = base + x0, base + x1 do pix[xx] = c end
    end
  elseif alpha > 0 then
    local cr, cg, cb = (c >> 16) * alpha, ((c >> 8) & 255) * alpha, (c & 255) * alpha
    local ia = 1 - alpha
    for yy = y0, y1 do
      local base = yy * W + 1
      for i = base + x0, base + x1 do
        local p = pix[i]
        pix[i] = (floor((p >> 16) * ia + cr + 0.5) << 16) | (floor(((p >> 8) & 255) * ia + cg + 0.5) << 8)
          | floor((p & 255) * ia + cb + 0.5)
      end
    end
  end
end

--- a one-pixel rectangle outline (or thicker with t)
function Canvas:rect(x, y, w, h, c, t)
  t = t or 1
  self:fill_rect(x, y, w, t, c)
  self:fill_rect(x, y + h - t, w, t, c)
  self:fill_rect(x, y, t, h, c)
  self:fill_rect(x + w - t, y, t, h, c)
end

function Canvas:hline(x0, x1, y, c, t)
  self:fill_rect(min(x0, x1), y, math.abs(x1 - x0) + 1, t or 1, c)
end

function Canvas:vline(x, y0, y1, c, t)
  self:fill_rect(x, min(y0, y1), t or 1, math.abs(y1 - y0) + 1, c)
end

-- Coverage of round-capped thick segments, kept as the maximum per pixel so that joints
-- and overlapping dashes are not blended twice. cov maps pixel index -> coverage in (0, 1].
local function cover_segment(cov, W, clip, ax, ay, bx, by, hw)
  local dx, dy = bx - ax, by - ay
  local len2 = dx * dx + dy * dy
  local reach = hw + 1.5
  local cx0, cy0, cx1, cy1 = clip[1], clip[2], clip[3], clip[4]
  local function pixel(x, y)
    if x < cx0 or x > cx1 or y < cy0 or y > cy1 then return end
    local px, py = x + 0.5 - ax, y + 0.5 - ay
    local t = 0
    if len2 > 0 then t = min(1, max(0, (px * dx + py * dy) / len2)) end
    local ex, ey = px - t * dx, py - t * dy
    local a = hw + 0.5 - sqrt(ex * ex + ey * ey)
    if a > 0 then
      if a > 1 then a = 1 end
      local i = y * W + x + 1
      local old = cov[i]
      if not old or old < a then cov[i] = a end
    end
  end
  if math.abs(dx) >= math.abs(dy) then
    local slope = dx ~= 0 and dy / dx or 0
    local ext = reach * sqrt(1 + slope * slope)
    for x = floor(min(ax, bx) - reach), ceil(max(ax, bx) + reach) do
      local xc = min(max(x + 0.5, min(ax, bx)), max(ax, bx))
      local yc = ay + (xc - ax) * slope
      for y = floor(yc - ext), ceil(yc + ext) do pixel(x, y) end
    end
  else
    local slope = dx / dy
    local ext = reach * sqrt(1 + slope * slope)
    for y = floor(min(ay, by) - reach), ceil(max(ay, by) + reach) do
      local yc = min(max(y + 0.5, min(ay, by)), max(ay, by))
      local xc = ax + (yc - ay) * slope
      for x = floor(xc - ext), ceil(xc + ext) do pixel(x, y) end
    end
  end
end

-- Splits a polyline {x1, y1, x2, y2, ...} into dashes of `on` pixels separated by `off`.
local function dashes(pts, on, off)
  local out, cur = {}, nil
  local phase, drawing = 0, true -- distance travelled within the current on/off stretch
  for k = 1, #pts - 3, 2 do
    local ax, ay, bx, by = pts[k], pts[k + 1], pts[k + 2], pts[k + 3]
    local seg = sqrt((bx - ax) ^ 2 + (by - ay) ^ 2)
    local s = 0
    if drawing and not cur then cur = {ax, ay} end
    while s < seg do
      local left = (drawing and on or off) - phase
      local step = min(left, seg - s)
      s = s + step
      phase = phase + step
      local t = seg > 0 and s / seg or 1
      local x, y = ax + (bx - ax) * t, ay + (by - ay) * t
      if drawing then cur[#cur + 1] = x; cur[#cur + 1] = y end
      if phase >= (drawing and on or off) - 1e-9 then
        phase = 0
        if drawing then out[#out + 1] = cur; cur = nil
        else cur = {x, y} end
        drawing = not drawing
      end
    end
  end
  if cur and #cur >= 4 then out[#out + 1] = cur end
  return out
end

local DASH = {dashed = {3.5, 2.5}, dotted = {0.01, 2.2}, dashdot = {4, 2}}

-- Coverage map of a polyline (flat list of pixel coordinates), optionally dashed
-- ("solid" | "dashed" | "dotted"); clip = {x0, y0, x1, y1} inclusive pixel bounds.
function Canvas:line_coverage(pts, width, style, clip, cov)
  cov = cov or {}
  clip = clip or {0, 0, self.w - 1, self.h - 1}
  local hw = (width or 1) / 2
  local pieces = {pts}
  local d = DASH[style or "solid"]
  if d then
    local unit = max(2, width or 1) * 2
    pieces = dashes(pts, d[1] * unit, d[2] * unit)
  end
  for _, p in ipairs(pieces) do
    if #p == 2 then cover_segment(cov, self.w, clip, p[1], p[2], p[1], p[2], hw) end
    for k = 1, #p - 3, 2 do
      cover_segment(cov, self.w, clip, p[k], p[k + 1], p[k + 2], p[k + 3], hw)
    end
  end
  return cov
end

--- blends colour c over the pixels of a coverage map (times alpha)
function Canvas:paint(cov, c, alpha)
  alpha = alpha or 1
  local pix = self.pix
  local cr, cg, cb = c >> 16, (c >> 8) & 255, c & 255
  for i, a in pairs(cov) do
    a = a * alpha
    if a >= 1 then pix[i] = c
    else
      local p, ia = pix[i], 1 - a
      pix[i] = (floor((p >> 16) * ia + cr * a + 0.5) << 16) | (floor(((p >> 8) & 255) * ia + cg * a + 0.5) << 8)
        | floor((p & 255) * ia + cb * a + 0.5)
    end
  end
end

--- an anti-aliased polyline of the given width (pixels) and style
function Canvas:polyline(pts, c, width, style, clip)
  self:paint(self:line_coverage(pts, width, style, clip), c)
end

function Canvas:line(x0, y0, x1, y1, c, width, style, clip)
  self:polyline({x0, y0, x1, y1}, c, width, style, clip)
end

--- a filled anti-aliased disc
function Canvas:disc(cx, cy, r, c, clip)
  local cov = {}
  cover_segment(cov, self.w, clip or {0, 0, self.w - 1, self.h - 1}, cx, cy, cx, cy, r)
  self:paint(cov, c)
end

function Canvas:text(x, y, s, opts)
  return font.draw(self, x, y, s, opts)
end

--- the PNG file's bytes (stb_image_write, in the core)
function Canvas:png()
  return require('tdrl')._data.png_encode(self.w, self.h, self.pix)
end

function Canvas:save_png(path)
  local f, err = io.open(path, "wb")
  if not f then error("save_png: cannot write " .. tostring(path) .. ": " .. tostring(err), 2) end
  f:write(self:png())
  f:close()
  return path
end

--- a (3, H, W) float tensor with values in [0, 1]
function Canvas:tensor()
  local T = require 'tdrl'
  local n, pix = self.w * self.h, self.pix
  local flat = {}
  for i = 1, n do
    local p = pix[i]
    flat[i] = (p >> 16) / 255
    flat[n + i] = ((p >> 8) & 255) / 255
    flat[2 * n + i] = (p & 255) / 255
  end
  return T.tensor(flat):view(3, self.h, self.w)
end

function Canvas:__tostring()
  return string.format("Canvas(%dx%d)", self.w, self.h)
end

return Canvas
