-- Line plots with optional shaded bands and horizontal reference lines.
--   plot.lines({series = {
--       {label = "VDRL", x = {...}, y = {...}, band_lo = {...}, band_hi = {...}, style = "solid"},
--       {label = "GRU", hline = 0.93, style = "dashed"}, ...}},
--     {title=, xlabel=, ylabel=, xlim = {lo, hi}, ylim = {lo, hi}, xscale = "log",
--      legend = "best" | "upper left" | ... | "outside" (right of the plot) | false,
--      width = 900, height = 600}, "fig.png") -> canvas
-- A series may also set color=, width= (pixels), marker = true (dots at the data points).
-- x defaults to 1..#y; NaN values break a line. The returned canvas has .axes (the layout).
local Canvas = require 'tdrl.plot.canvas'
local Axes = require 'tdrl.plot.axes'
local colormap = require 'tdrl.plot.colormap'
local common = require 'tdrl.plot.common'

local FN = "plot.lines"
local floor, min, max = math.floor, math.min, math.max

local SERIES_KEYS = {label = true, x = true, y = true, band_lo = true, band_hi = true, style = true,
  hline = true, color = true, width = true, marker = true}
local STYLES = {solid = true, dashed = true, dotted = true}

local function check_series(i, s)
  if type(s) ~= "table" then error(string.format("%s: series %d must be a table", FN, i), 4) end
  for k in pairs(s) do
    if not SERIES_KEYS[k] then error(string.format("%s: series %d: unknown field '%s'", FN, i, tostring(k)), 4) end
  end
  local name = string.format("series %d%s", i, s.label and (" ('" .. s.label .. "')") or "")
  local out = {label = s.label and tostring(s.label), style = s.style, width = s.width, marker = s.marker}
  if s.style ~= nil and not STYLES[s.style] then
    error(string.format("%s: %s: style must be solid, dashed or dotted, got '%s'", FN, name, tostring(s.style)), 4)
  end
  out.color = s.color and Canvas.color(s.color)
  if s.hline ~= nil then
    if type(s.hline) ~= "number" then error(string.format("%s: %s: hline must be a number", FN, name), 4) end
    out.hline = s.hline
    out.style = out.style or "dashed"
    return out
  end
  if s.y == nil then error(string.format("%s: %s has neither y nor hline", FN, name), 4) end
  out.y = common.list(s.y, name .. " y", FN)
  local n = #out.y
  if s.x ~= nil then out.x = common.list(s.x, name .. " x", FN)
  else
    out.x = {}
    for k = 1, n do out.x[k] = k end
  end
  if #out.x ~= n then
    error(string.format("%s: %s: x has %d values, y has %d", FN, name, #out.x, n), 4)
  end
  if (s.band_lo == nil) ~= (s.band_hi == nil) then
    error(string.format("%s: %s: give both band_lo and band_hi", FN, name), 4)
  end
  if s.band_lo then
    out.lo = common.list(s.band_lo, name .. " band_lo", FN)
    out.hi = common.list(s.band_hi, name .. " band_hi", FN)
    if #out.lo ~= n or #out.hi ~= n then
      error(string.format("%s: %s: band_lo has %d values, band_hi %d, y %d", FN, name, #out.lo, #out.hi, n), 4)
    end
  end
  out.style = out.style or "solid"
  return out
end

local function finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

-- data limits over every series (x: exact; y: 5% margin), overridden by opts
local function limits(series, opts)
  local xlo, xhi, ylo, yhi = math.huge, -math.huge, math.huge, -math.huge
  local logx = opts.xscale == "log"
  for _, s in ipairs(series) do
    if s.hline then
      ylo, yhi = min(ylo, s.hline), max(yhi, s.hline)
    else
      for k = 1, #s.x do
        local x = s.x[k]
        if finite(x) and (not logx or x > 0) then
          xlo, xhi = min(xlo, x), max(xhi, x)
          for _, arr in ipairs({s.y, s.lo, s.hi}) do
            local v = arr and arr[k]
            if v and finite(v) then ylo, yhi = min(ylo, v), max(yhi, v) end
          end
        end
      end
    end
  end
  if xlo > xhi then xlo, xhi = logx and 1 or 0, logx and 10 or 1 end
  if xlo == xhi then
    local d = xlo == 0 and 1 or math.abs(xlo) * 0.1
    xlo, xhi = xlo - d, xhi + d
  end
  if ylo > yhi then ylo, yhi = 0, 1 end
  if ylo == yhi then
    local d = ylo == 0 and 1 or math.abs(ylo) * 0.1
    ylo, yhi = ylo - d, yhi + d
  end
  local m = (yhi - ylo) * 0.05
  ylo, yhi = ylo - m, yhi + m
  for _, s in ipairs(series) do
    if s.marker then -- room for the dots at the ends
      if logx then
        local f = (xhi / xlo) ^ 0.03
        xlo, xhi = xlo / f, xhi * f
      else
        local mx = (xhi - xlo) * 0.03
        xlo, xhi = xlo - mx, xhi + mx
      end
      break
    end
  end
  local xlim = opts.xlim or {xlo, xhi}
  local ylim = opts.ylim or {ylo, yhi}
  for _, lim in ipairs({xlim, ylim}) do
    if type(lim) ~= "table" or type(lim[1]) ~= "number" or type(lim[2]) ~= "number" or not (lim[1] < lim[2]) then
      error(FN .. ": xlim and ylim must be {lo, hi} with lo < hi", 3)
    end
  end
  return xlim, ylim
end

-- pixel polylines of a series, split at missing values
local function pieces(ax, xs, ys)
  local out, cur = {}, nil
  for k = 1, #xs do
    local x, y = xs[k], ys[k]
    if finite(x) and finite(y) and (ax.xscale ~= "log" or x > 0) then
      cur = cur or {}
      cur[#cur + 1] = ax:px(x)
      cur[#cur + 1] = ax:py(y)
    elseif cur then
      out[#out + 1] = cur
      cur = nil
    end
  end
  if cur then out[#out + 1] = cur end
  return out
end

-- shades between lo and hi, column by column (points sorted by x)
local function band(cv, ax, xs, lo, hi, color, alpha)
  local pts = {}
  for k = 1, #xs do
    if finite(xs[k]) and finite(lo[k]) and finite(hi[k]) and (ax.xscale ~= "log" or xs[k] > 0) then
      pts[#pts + 1] = {ax:px(xs[k]), ax:py(lo[k]), ax:py(hi[k])}
    end
  end
  table.sort(pts, function(a, b) return a[1] < b[1] end)
  local cov = {}
  local W = cv.w
  for k = 1, #pts - 1 do
    local a, b = pts[k], pts[k + 1]
    local c0, c1 = max(ax.x0, floor(a[1])), min(ax.x1, floor(b[1]) - (k < #pts - 1 and 1 or 0))
    for x = c0, c1 do
      local t = b[1] > a[1] and min(1, max(0, (x + 0.5 - a[1]) / (b[1] - a[1]))) or 0
      local y0 = a[2] + (b[2] - a[2]) * t
      local y1 = a[3] + (b[3] - a[3]) * t
      if y0 > y1 then y0, y1 = y1, y0 end
      local r0, r1 = max(ax.y0, floor(y0 + 0.5)), min(ax.y1, floor(y1 + 0.5))
      for y = r0, r1 do cov[y * W + x + 1] = 1 end
    end
  end
  cv:paint(cov, color, alpha)
end

local function lines(spec, opts, path)
  if type(spec) ~= "table" or type(spec.series) ~= "table" then
    error(FN .. ": expects {series = {{label=, x=, y=}, ...}} as first argument", 2)
  end
  opts = common.known(opts, {"title", "xlabel", "ylabel", "xlim", "ylim", "legend", "width", "height",
    "xscale", "yscale", "xticks", "yticks", "xtick_labels", "ytick_labels"}, FN)
  local series = {}
  for i, s in ipairs(spec.series) do series[i] = check_series(i, s) end
  for i, s in ipairs(series) do s.color = s.color or colormap.series(i) end
  local xlim, ylim = limits(series, opts)
  local th = common.theme
  local entries = {}
  for _, s in ipairs(series) do
    if s.label then
      entries[#entries + 1] = {label = s.label, color = s.color, style = s.style, width = s.width or th.line_width,
        band = s.lo ~= nil, marker = s.marker}
    end
  end
  local right = 0
  if opts.legend == "outside" and #entries > 0 then right = Axes.legend_size(entries) + 16 end
  local cv = Canvas.new(opts.width or (900 + right), opts.height or 600)
  local ax = Axes.new(cv, {title = opts.title, xlabel = opts.xlabel, ylabel = opts.ylabel, xlim = xlim, ylim = ylim,
    xscale = opts.xscale, yscale = opts.yscale, xticks = opts.xticks, yticks = opts.yticks,
    xtick_labels = opts.xtick_labels, ytick_labels = opts.ytick_labels, right = right})
  ax:grid()
  for _, s in ipairs(series) do
    if s.lo then band(cv, ax, s.x, s.lo, s.hi, s.color, th.band_alpha) end
  end
  local avoid = {}
  local clip = ax.clip
  for _, s in ipairs(series) do
    local w = s.width or th.line_width
    local polys
    if s.hline then
      local y = ax:py(s.hline)
      polys = {{ax.x0 + 0.5, y, ax.x1 + 0.5, y}}
    else
      polys = pieces(ax, s.x, s.y)
    end
    local cov = {}
    for _, p in ipairs(polys) do
      cv:line_coverage(p, w, s.style, clip, cov)
      if s.marker then
        for k = 1, #p, 2 do cv:line_coverage({p[k], p[k + 1]}, 2 * w + 3, "solid", clip, cov) end
      end
      -- points the legend should not hide: the line every few pixels
      for k = 1, #p - 3, 2 do
        local dx, dy = p[k + 2] - p[k], p[k + 3] - p[k + 1]
        local n = math.max(1, floor(math.sqrt(dx * dx + dy * dy) / 6))
        for j = 0, n do
          avoid[#avoid + 1] = p[k] + dx * j / n
          avoid[#avoid + 1] = p[k + 1] + dy * j / n
        end
      end
    end
    if s.lo then
      for k = 1, #s.x do
        if finite(s.x[k]) and finite(s.lo[k]) and finite(s.hi[k]) then
          avoid[#avoid + 1] = ax:px(s.x[k]); avoid[#avoid + 1] = ax:py(s.lo[k])
          avoid[#avoid + 1] = ax:px(s.x[k]); avoid[#avoid + 1] = ax:py(s.hi[k])
        end
      end
    end
    cv:paint(cov, s.color)
  end
  ax:frame()
  ax:legend(entries, opts.legend, avoid)
  cv.axes = ax
  return common.finish(cv, path, FN)
end

return lines
