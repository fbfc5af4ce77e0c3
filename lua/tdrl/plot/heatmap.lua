-- Heatmaps: a (R, C) matrix as coloured cells with labelled rows and columns, values written
-- in the cells when they fit, and a colour bar with ticks.
--   plot.heatmap(m, {title=, row_labels=, col_labels=, xlabel=, ylabel=, colorbar_label=,
--     vmin=, vmax=, cmap = "viridis" | "diverging" | "gray" | function(t), annotate = true,
--     fmt = "%.2f", cell = pixels, width=, height=}, path) -> canvas
-- Row 1 is drawn at the top (as a matrix is printed). The canvas gets .cells = {x0, y0, cw, ch}
-- and .colorbar = {x, y, w, h} (pixel boxes) for tests and overlays. NaN cells are light grey.
local Canvas = require 'tdrl.plot.canvas'
local colormap = require 'tdrl.plot.colormap'
local common = require 'tdrl.plot.common'
local font = require 'tdrl.plot.font'
local ticks = require 'tdrl.plot.ticks'

local FN = "plot.heatmap"
local floor, max, min = math.floor, math.max, math.min

local function labels(given, n, what)
  if given == nil then
    local out = {}
    for i = 1, n do out[i] = tostring(i) end
    return out
  end
  if type(given) ~= "table" or #given ~= n then
    error(string.format("%s: %s must list %d labels, got %s", FN, what, n,
      type(given) == "table" and tostring(#given) or type(given)), 3)
  end
  local out = {}
  for i = 1, n do out[i] = type(given[i]) == "number" and common.num(given[i]) or tostring(given[i]) end
  return out
end

local function heatmap(m, opts, path)
  opts = common.known(opts, {"title", "row_labels", "col_labels", "xlabel", "ylabel", "colorbar_label",
    "vmin", "vmax", "cmap", "annotate", "fmt", "cell", "width", "height"}, FN)
  local rows, R, C = common.matrix(m, FN)
  local cmap = colormap.get(opts.cmap or "viridis")
  local th = common.theme
  local FS, pad, lh = th.font, th.pad, font.height(th.font)
  local rl, cl = labels(opts.row_labels, R, "row_labels"), labels(opts.col_labels, C, "col_labels")
  -- value range
  local lo, hi = math.huge, -math.huge
  for i = 1, R do
    for j = 1, C do
      local v = rows[i][j]
      if v == v and v ~= math.huge and v ~= -math.huge then lo, hi = min(lo, v), max(hi, v) end
    end
  end
  if lo > hi then lo, hi = 0, 1 end
  if opts.cmap == "diverging" and opts.vmin == nil and opts.vmax == nil then
    local a = max(math.abs(lo), math.abs(hi)) -- centre the diverging map on zero
    lo, hi = -a, a
  end
  local vmin, vmax = opts.vmin or lo, opts.vmax or hi
  if vmax <= vmin then
    if opts.vmin ~= nil and opts.vmax ~= nil then
      error(string.format("%s: vmax (%g) must exceed vmin (%g)", FN, vmax, vmin), 2)
    end
    local d = vmin == 0 and 1 or math.abs(vmin) * 0.1
    vmin, vmax = vmin - d, vmax + d
  end
  -- layout: ylabel | row labels | cells | colour bar | its ticks | its label
  local rlw, clw = 0, 0
  for _, s in ipairs(rl) do rlw = max(rlw, font.width(s, FS)) end
  for _, s in ipairs(cl) do clw = max(clw, font.width(s, FS)) end
  local fmt = opts.fmt or "%.2f"
  local cell = opts.cell or min(64, max(6, floor(600 / max(R, C))))
  if opts.annotate and not opts.cell then -- room for the values at text size, within ~900 pixels
    local aw = 0
    for i = 1, R do
      for j = 1, C do aw = max(aw, font.width(string.format(fmt, rows[i][j]), FS)) end
    end
    cell = max(cell, min(aw + 16, 96, floor(900 / max(R, C))))
  end
  local cw, ch = cell, cell
  local crot = clw + 4 > cw -- column labels upright when they fit
  local cbt, cbstep = ticks.nice(vmin, vmax, 6)
  local cbl = ticks.labels(cbt, cbstep)
  local cbw = 0
  for _, s in ipairs(cbl) do cbw = max(cbw, font.width(s, FS)) end
  local left = pad + (opts.ylabel and lh + 14 or 0) + rlw + 10
  local top = pad + (opts.title and font.height(th.title) + 18 or lh // 2)
  local barx = left + C * cw + 24
  local barw = 22
  local right_extent = barx + barw + th.tick + 6 + cbw + (opts.colorbar_label and 14 + lh or 0) + pad
  local below = 10 + (crot and clw or lh) + (opts.xlabel and lh + 2 * FS + 16 or 0) + pad
  local titlew = opts.title and font.width(opts.title, th.title) + 2 or 0
  local W = opts.width or max(right_extent, 360, titlew + 2 * pad + 12)
  if not opts.width and W > right_extent then -- centre the matrix under a wide title
    local shift = (W - right_extent) // 2
    left, barx = left + shift, barx + shift
  end
  local H = opts.height or max(top + R * ch + below, 240)
  if opts.width then -- fit the cells into the given size
    cw = max(1, floor((W - (right_extent - C * cw) ) / C))
  end
  if opts.height then ch = max(1, floor((H - top - below) / R)) end
  if opts.width or opts.height then
    barx = left + C * cw + 24
    crot = clw + 4 > cw
  end
  local cv = Canvas.new(W, H)
  local span = vmax - vmin
  local annotate = opts.annotate
  -- cells
  for i = 1, R do
    for j = 1, C do
      local v = rows[i][j]
      local c = cmap((v - vmin) / span)
      local x, y = left + (j - 1) * cw, top + (i - 1) * ch
      cv:fill_rect(x, y, cw, ch, c)
      if annotate and v == v then
        local s = string.format(fmt, v)
        local sc = (font.width(s, FS) + 12 <= cw and lh + 10 <= ch) and FS or 1
        if font.width(s, sc) + 4 <= cw and font.height(sc) + 4 <= ch then
          local tc = Canvas.luminance(c) > 0.5 and 0x111111 or 0xFFFFFF
          cv:text(x + cw // 2, y + ch // 2, s, {scale = sc, align = "center", valign = "middle", color = tc})
        end
      end
    end
  end
  local x1, y1 = left + C * cw, top + R * ch
  cv:rect(left - 1, top - 1, C * cw + 2, R * ch + 2, th.axis)
  -- row and column labels (thinned when they would overlap)
  local revery = math.ceil((lh + 3) / ch)
  for i = 1, R, revery do
    cv:text(left - 8, top + (i - 1) * ch + ch // 2, rl[i], {scale = FS, align = "right", valign = "middle", color = th.text})
  end
  local cevery = crot and math.ceil((lh + 3) / cw) or math.ceil((clw + 8) / cw)
  for j = 1, C, cevery do
    local o = {scale = FS, align = "center", valign = "top", color = th.text}
    if crot then o.rotate = 90 end
    cv:text(left + (j - 1) * cw + cw // 2, y1 + 8, cl[j], o)
  end
  -- colour bar: top = vmax, bottom = vmin
  local bh = R * ch
  for k = 0, bh - 1 do
    local t = 1 - k / max(1, bh - 1)
    cv:fill_rect(barx, top + k, barw, 1, cmap(t))
  end
  cv:rect(barx - 1, top - 1, barw + 2, bh + 2, th.axis)
  for k, v in ipairs(cbt) do
    if v >= vmin - 1e-12 and v <= vmax + 1e-12 then
      local y = top + floor((1 - (v - vmin) / span) * (bh - 1) + 0.5)
      cv:hline(barx + barw + 1, barx + barw + th.tick, y, th.axis)
      cv:text(barx + barw + th.tick + 6, y, cbl[k], {scale = FS, valign = "middle", color = th.text})
    end
  end
  if opts.colorbar_label then
    cv:text(barx + barw + th.tick + 6 + cbw + 14, top + bh // 2, opts.colorbar_label,
      {scale = FS, align = "left", valign = "middle", rotate = 90, color = th.text})
  end
  if opts.title then
    local cx = min(max((left + x1) // 2, pad + titlew // 2), W - pad - titlew // 2)
    cv:text(cx, pad, opts.title, {scale = th.title, align = "center", bold = true, color = th.text})
  end
  if opts.xlabel then
    cv:text((left + x1) // 2, H - pad - 2 * FS, opts.xlabel, {scale = FS, align = "center", valign = "bottom", color = th.text})
  end
  if opts.ylabel then
    cv:text(left - 10 - rlw - 14 - lh, (top + y1) // 2, opts.ylabel, {scale = FS, valign = "middle", rotate = 90, color = th.text})
  end
  cv.cells = {left, top, cw, ch}
  cv.colorbar = {barx, top, barw, bh}
  cv.range = {vmin, vmax}
  return common.finish(cv, path, FN)
end

return heatmap
