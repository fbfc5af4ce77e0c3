-- Bar plots, single or grouped, with optional error bars.
--   plot.bars({labels = {"a", "b"}, values = {0.9, 0.8}, errors = {0.01, 0.02}}, {title=, ylabel=}, path)
--   plot.bars({labels = {"g=2", "g=5"}, groups = {"latent 2", "latent 8"},
--              values = {{0.7, 0.9}, {0.8, 0.95}}, errors = {{...}, {...}}}, opts, path)
-- values[i] is one number per label, or (with groups) a list with one number per group.
-- opts: title=, ylabel=, xlabel=, ylim = {lo, hi}, annotate = true (values above the bars),
-- fmt = "%.3f", legend = "outside" (default, right of the plot) | "best" | "upper left" | ... | false,
-- colors = {...} (one per group), width=, height=. Returns the canvas (with .axes).
local Canvas = require 'tdrl.plot.canvas'
local Axes = require 'tdrl.plot.axes'
local colormap = require 'tdrl.plot.colormap'
local common = require 'tdrl.plot.common'

local FN = "plot.bars"
local floor, max, min = math.floor, math.max, math.min

local function bars(spec, opts, path)
  if type(spec) ~= "table" or spec.values == nil then
    error(FN .. ": expects {labels = {...}, values = {...}} as first argument", 2)
  end
  opts = common.known(opts, {"title", "ylabel", "xlabel", "ylim", "annotate", "fmt", "legend", "width",
    "height", "colors"}, FN)
  local grouped = spec.groups ~= nil
  local values, errors = {}, nil
  local n, G
  if grouped then
    if type(spec.groups) ~= "table" or #spec.groups == 0 then error(FN .. ": groups must be a list of names", 2) end
    G = #spec.groups
    if type(spec.values) ~= "table" then error(FN .. ": values must be a list of lists when groups are given", 2) end
    n = #spec.values
    for i = 1, n do
      values[i] = common.list(spec.values[i], "values[" .. i .. "]", FN)
      if #values[i] ~= G then
        error(string.format("%s: values[%d] has %d entries for %d groups", FN, i, #values[i], G), 2)
      end
    end
  else
    G = 1
    local v = common.list(spec.values, "values", FN)
    n = #v
    for i = 1, n do values[i] = {v[i]} end
  end
  if spec.errors ~= nil then
    errors = {}
    if grouped then
      if #spec.errors ~= n then error(string.format("%s: errors has %d entries for %d labels", FN, #spec.errors, n), 2) end
      for i = 1, n do
        errors[i] = common.list(spec.errors[i], "errors[" .. i .. "]", FN)
        if #errors[i] ~= G then error(string.format("%s: errors[%d] has %d entries for %d groups", FN, i, #errors[i], G), 2) end
      end
    else
      local e = common.list(spec.errors, "errors", FN)
      if #e ~= n then error(string.format("%s: errors has %d values, values has %d", FN, #e, n), 2) end
      for i = 1, n do errors[i] = {e[i]} end
    end
  end
  if n == 0 then error(FN .. ": no values", 2) end
  local labels = {}
  if spec.labels ~= nil then
    if type(spec.labels) ~= "table" or #spec.labels ~= n then
      error(string.format("%s: labels must list %d names", FN, n), 2)
    end
    for i = 1, n do labels[i] = tostring(spec.labels[i]) end
  else
    for i = 1, n do labels[i] = tostring(i) end
  end
  -- y range: always includes 0 (bars start there); error bars included; 5% headroom
  local lo, hi = 0, 0
  for i = 1, n do
    for g = 1, G do
      local v, e = values[i][g], errors and errors[i][g] or 0
      if v == v then lo, hi = min(lo, v - e), max(hi, v + e) end
    end
  end
  if hi == lo then hi = 1 end
  local m = (hi - lo) * 0.06
  local ylim = opts.ylim or {lo < 0 and lo - m or lo, hi > 0 and hi + m or hi}
  local xt = {}
  for i = 1, n do xt[i] = i end
  local colors = {}
  for g = 1, G do colors[g] = colormap.series(g) end
  if opts.colors then
    for g = 1, G do colors[g] = Canvas.color(opts.colors[g] or colors[g]) end
  end
  local entries = {}
  if grouped then
    for g = 1, G do entries[g] = {label = tostring(spec.groups[g]), color = colors[g], patch = true} end
  end
  local loc = opts.legend
  if loc == nil then loc = "outside" end -- bars fill the plot: a legend inside would hide some
  local right = (grouped and loc == "outside") and Axes.legend_size(entries) + 16 or 0
  local W = opts.width or (max(600, min(1600, 160 + n * (40 + 26 * G))) + right)
  local cv = Canvas.new(W, opts.height or 600)
  local ax = Axes.new(cv, {title = opts.title, xlabel = opts.xlabel, ylabel = opts.ylabel, xlim = {0.5, n + 0.5},
    ylim = ylim, xticks = xt, xtick_labels = labels, xgrid = false, rotate_ok = true, right = right})
  ax:grid()
  local slot = (ax:px(2) - ax:px(1))
  local bw = slot * 0.8 / G
  local base = ax:py(max(ylim[1], min(ylim[2], 0)))
  local th = common.theme
  local y0c, y1c = ax.y0, ax.y1
  local avoid = {}
  for i = 1, n do
    for g = 1, G do
      local v = values[i][g]
      if v == v then
        local xl = ax:px(i) - slot * 0.4 + (g - 1) * bw
        local yv = max(y0c, min(y1c, ax:py(v)))
        local top, bot = min(yv, base), max(yv, base)
        cv:fill_rect(floor(xl + 0.5) + 1, floor(top + 0.5), max(1, floor(bw + 0.5) - 2), max(1, floor(bot - top + 0.5)), colors[g])
        for yy = top, bot, 8 do -- the legend should not cover a bar
          avoid[#avoid + 1] = xl; avoid[#avoid + 1] = yy
          avoid[#avoid + 1] = xl + bw; avoid[#avoid + 1] = yy
        end
        local e = errors and errors[i][g]
        local cx = floor(xl + bw / 2) + 0.5
        if e and e == e and e > 0 then
          local ya, yb = ax:py(v + e), ax:py(v - e)
          local cap = min(8, bw / 4)
          cv:line(cx, ya, cx, yb, 0x222222, 1.5, "solid", ax.clip)
          cv:line(cx - cap, ya, cx + cap, ya, 0x222222, 1.5, "solid", ax.clip)
          cv:line(cx - cap, yb, cx + cap, yb, 0x222222, 1.5, "solid", ax.clip)
          avoid[#avoid + 1] = cx; avoid[#avoid + 1] = ya
          top = min(top, ya)
        end
        if opts.annotate then
          local s = common.num(v, opts.fmt)
          local sc = require('tdrl.plot.font').width(s, th.font) <= bw + 8 and th.font or 1
          cv:text(floor(cx), floor(min(top, bot) - 4), s, {scale = sc, align = "center", valign = "bottom", color = th.text})
        end
      end
    end
  end
  -- a baseline at zero when the axis crosses it
  if ylim[1] < 0 and ylim[2] > 0 then cv:hline(ax.x0, ax.x1, floor(base), th.axis) end
  ax:frame()
  if grouped then ax:legend(entries, loc, avoid) end
  cv.axes = ax
  return common.finish(cv, path, FN)
end

return bars
