-- A rectangular plot area on a canvas: layout from the labels it must hold, data -> pixel
-- mapping (linear or log), grid lines, frame, ticks with labels, axis labels, title, legend.
--   local ax = Axes.new(cv, {title=, xlabel=, ylabel=, xlim = {lo, hi}, ylim = {lo, hi},
--     xticks=, xtick_labels=, yticks=, ytick_labels=, xscale = "log", xgrid = false, right = px})
--   ax:grid(); ...draw data with ax:px(x), ax:py(y) and ax.clip...; ax:frame(); ax:legend(entries, loc)
local font = require 'tdrl.plot.font'
local ticks = require 'tdrl.plot.ticks'
local common = require 'tdrl.plot.common'

local Axes = {}
Axes.__index = Axes

local max, min, floor = math.max, math.min, math.floor
local th = common.theme

local function fwd(scale, v)
  if scale == "log" then return math.log(v, 10) end
  return v
end

local function make_ticks(lim, scale, given, labels)
  if given then
    local out = {}
    for i, v in ipairs(given) do out[i] = v end
    if not labels then
      labels = {}
      for i, v in ipairs(out) do labels[i] = common.num(v) end
    end
    return out, labels
  end
  if scale == "log" then
    local v = ticks.log(lim[1], lim[2])
    return v, ticks.log_labels(v)
  end
  local v, step = ticks.nice(lim[1], lim[2], 6)
  return v, ticks.labels(v, step)
end

function Axes.new(cv, spec)
  local self = setmetatable({cv = cv, spec = spec}, Axes)
  local FS = th.font
  local W, H, pad = cv.w, cv.h, th.pad
  self.xscale, self.yscale = spec.xscale or "linear", spec.yscale or "linear"
  self.xlim, self.ylim = spec.xlim, spec.ylim
  for _, a in ipairs({"x", "y"}) do
    local lim, sc = self[a .. "lim"], self[a .. "scale"]
    if sc == "log" and (lim[1] <= 0 or lim[2] <= 0) then
      error(string.format("plot: a log %s axis needs positive limits, got [%g, %g]", a, lim[1], lim[2]), 3)
    end
  end
  self.xt, self.xtl = make_ticks(self.xlim, self.xscale, spec.xticks, spec.xtick_labels)
  self.yt, self.ytl = make_ticks(self.ylim, self.yscale, spec.yticks, spec.ytick_labels)
  local lh = font.height(FS)
  -- left: y label, y tick labels, tick marks
  local ytw = 0
  for _, s in ipairs(self.ytl) do ytw = max(ytw, font.width(s, FS)) end
  local left = pad + ytw + 8 + th.tick
  if spec.ylabel then left = left + lh + 14 end
  -- right: half the last x tick label, or what the caller reserves (colour bar, legend)
  local lastw = #self.xtl > 0 and font.width(self.xtl[#self.xtl], FS) or 0
  local right = W - max(pad, lastw // 2 + 6) - (spec.right or 0)
  -- top: title
  local top = pad
  if spec.title then top = top + font.height(th.title) + 16 else top = top + lh // 2 end
  -- x tick labels: rotated when they would collide
  local xtw = 0
  for _, s in ipairs(self.xtl) do xtw = max(xtw, font.width(s, FS)) end
  local gap = #self.xt > 1 and (right - left) / (#self.xt - 1) or (right - left)
  self.xrot = xtw + 8 > gap and spec.rotate_ok
  local every = 1
  if xtw + 10 > gap and not self.xrot then every = math.ceil((xtw + 10) / max(gap, 1)) end
  if self.xrot and lh + 4 > gap then every = math.ceil((lh + 4) / max(gap, 1)) end
  self.xevery = every
  local below = th.tick + 8 + (self.xrot and xtw or lh)
  if spec.xlabel then below = below + lh + 2 * FS + 14 end
  local bottom = H - pad - below
  if right - left < 20 or bottom - top < 20 then
    error(string.format("plot: a %dx%d figure is too small for its labels", W, H), 3)
  end
  self.x0, self.y0, self.x1, self.y1 = left, top, right, bottom
  self.clip = {left, top, right, bottom}
  self.lx = {fwd(self.xscale, self.xlim[1]), fwd(self.xscale, self.xlim[2])}
  self.ly = {fwd(self.yscale, self.ylim[1]), fwd(self.yscale, self.ylim[2])}
  return self
end

--- pixel column of data value x (float; pixel centres at k + 0.5)
function Axes:px(v)
  local l = self.lx
  return self.x0 + 0.5 + (fwd(self.xscale, v) - l[1]) / (l[2] - l[1]) * (self.x1 - self.x0)
end

function Axes:py(v)
  local l = self.ly
  return self.y1 + 0.5 - (fwd(self.yscale, v) - l[1]) / (l[2] - l[1]) * (self.y1 - self.y0)
end

local function inside(v, lim)
  local lo, hi = min(lim[1], lim[2]), max(lim[1], lim[2])
  local eps = (hi - lo) * 1e-9
  return v >= lo - eps and v <= hi + eps
end

--- light grid lines at the ticks
function Axes:grid()
  local cv = self.cv
  if self.spec.xgrid ~= false then
    for _, v in ipairs(self.xt) do
      if inside(v, self.xlim) then cv:vline(floor(self:px(v)), self.y0, self.y1, th.grid) end
    end
  end
  if self.spec.ygrid ~= false then
    for _, v in ipairs(self.yt) do
      if inside(v, self.ylim) then cv:hline(self.x0, self.x1, floor(self:py(v)), th.grid) end
    end
  end
end

--- frame, ticks, tick labels, axis labels and title
function Axes:frame()
  local cv, spec, FS = self.cv, self.spec, th.font
  local x0, y0, x1, y1 = self.x0, self.y0, self.x1, self.y1
  cv:rect(x0, y0, x1 - x0 + 1, y1 - y0 + 1, th.axis)
  for i, v in ipairs(self.yt) do
    if inside(v, self.ylim) then
      local y = floor(self:py(v))
      cv:hline(x0 - th.tick, x0 - 1, y, th.axis)
      cv:text(x0 - th.tick - 6, y, self.ytl[i], {scale = FS, align = "right", valign = "middle", color = th.text})
    end
  end
  for i, v in ipairs(self.xt) do
    if inside(v, self.xlim) then
      local x = floor(self:px(v))
      cv:vline(x, y1 + 1, y1 + th.tick, th.axis)
      if (i - 1) % self.xevery == 0 then
        local opts = {scale = FS, align = "center", valign = "top", color = th.text}
        if self.xrot then opts.rotate = 90 end
        cv:text(x, y1 + th.tick + 6, self.xtl[i], opts)
      end
    end
  end
  local cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
  if spec.xlabel then
    cv:text(cx, cv.h - th.pad - 2 * FS, spec.xlabel, {scale = FS, align = "center", valign = "bottom", color = th.text})
  end
  if spec.ylabel then
    cv:text(th.pad, cy, spec.ylabel, {scale = FS, align = "left", valign = "middle", rotate = 90, color = th.text})
  end
  if spec.title then
    cv:text(cx, th.pad, spec.title, {scale = th.title, align = "center", valign = "top", bold = true, color = th.text})
  end
end

local LOCS = {"upper right", "upper left", "lower right", "lower left", "center right", "center left",
  "upper center", "lower center"}

-- entries: {label=, color=, style=, width=, band = true, patch = true, marker = true}
-- loc: "best" (the corner covering the fewest of the given points), one of LOCS, "outside"
-- (right of the plot; reserve Axes.legend_size(entries) + 16 pixels with spec.right), or false.
-- points: flat list of pixel coordinates {x1, y1, ...} the legend should avoid.
local SAMPLE = 34
local function rowh() return font.height(th.font) + 2 * th.font + 8 end

--- the legend's box size (for reserving room with loc = "outside")
function Axes.legend_size(entries)
  local lw = 0
  for _, e in ipairs(entries) do lw = max(lw, font.width(e.label, th.font)) end
  return 12 + SAMPLE + 10 + lw + 12, #entries * rowh() + 12
end

function Axes:legend(entries, loc, points)
  if loc == false or loc == "none" or #entries == 0 then return end
  loc = loc or "best"
  local cv, FS = self.cv, th.font
  local rowh, sample = rowh(), SAMPLE
  local bw, bh = Axes.legend_size(entries)
  local m = 10
  local function place(name)
    local v, h = name:match("^(%a+) (%a+)$")
    if not v then error("plot: unknown legend position '" .. tostring(name) .. "' (best, "
      .. table.concat(LOCS, ", ") .. ")", 4) end
    local x = (h == "left" and self.x0 + m) or (h == "right" and self.x1 - m - bw) or ((self.x0 + self.x1 - bw) // 2)
    local y = (v == "upper" and self.y0 + m) or (v == "lower" and self.y1 - m - bh) or ((self.y0 + self.y1 - bh) // 2)
    if not (v == "upper" or v == "lower" or v == "center") or not (h == "left" or h == "right" or h == "center") then
      error("plot: unknown legend position '" .. name .. "'", 4)
    end
    return x, y
  end
  local bx, by
  if loc == "outside" then -- right of the plot area (reserve the room with spec.right)
    bx, by = self.x1 + 16, self.y0
  elseif loc == "best" then
    local best = math.huge
    for _, name in ipairs(LOCS) do
      local x, y = place(name)
      local n = 0
      for k = 1, #(points or {}), 2 do
        local px, py = points[k], points[k + 1]
        if px >= x - 8 and px <= x + bw + 8 and py >= y - 8 and py <= y + bh + 8 then n = n + 1 end
      end
      if n < best then best, bx, by = n, x, y end
    end
  else
    bx, by = place(loc)
  end
  self.legend_box = {bx, by, bw, bh}
  cv:fill_rect(bx, by, bw, bh, 0xFFFFFF, 0.9)
  cv:rect(bx, by, bw, bh, 0xBBBBBB)
  for i, e in ipairs(entries) do
    local cy = by + 6 + (i - 1) * rowh + rowh // 2
    local sx = bx + 12
    if e.band or e.patch then
      cv:fill_rect(sx, cy - rowh // 2 + 4, sample, rowh - 8, e.color, e.patch and 1 or th.band_alpha)
    end
    if not e.patch then
      cv:line(sx + 1, cy + 0.5, sx + sample - 1, cy + 0.5, e.color, e.width or th.line_width, e.style)
      if e.marker then cv:disc(sx + sample / 2, cy + 0.5, 4, e.color) end
    end
    cv:text(sx + sample + 10, cy, e.label, {scale = FS, valign = "middle", color = th.text})
  end
end

return Axes
