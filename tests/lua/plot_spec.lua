-- tdrl.plot: figures are rendered to canvases and checked pixel by pixel; PNG files (written by
-- the core's stb_image_write) are read back with its stb_image decoder (and their IHDR checked
-- byte by byte).
local T = require 'tdrl'
local plot = require 'tdrl.plot'
local Canvas, colormap, font = plot.Canvas, plot.colormap, plot.font

local function tmp(name)
  local base = os.tmpname() -- created empty by Lua; only its unique name is used
  os.remove(base)
  return base .. "-" .. name
end

local function hex(c) return string.format("#%06x", c) end

-- number of pixels in the rectangle whose colour satisfies pred
local function count(cv, x0, y0, x1, y1, pred)
  local n = 0
  for y = math.max(0, y0), math.min(cv.h - 1, y1) do
    for x = math.max(0, x0), math.min(cv.w - 1, x1) do
      if pred(cv:get(x, y)) then n = n + 1 end
    end
  end
  return n
end

local function dark(c) return Canvas.luminance(c) < 0.35 end

describe("plot font", function()
  it("has a glyph with lit pixels for every printable character but space", function()
    for cp = 33, 126 do
      local g = font.glyph(cp)
      spec.truthy(#g > 0, "glyph " .. string.char(cp) .. " is empty")
      for k = 1, #g, 2 do
        spec.truthy(g[k] >= 0 and g[k] < 5 and g[k + 1] >= 0 and g[k + 1] < 9, "pixel outside the cell")
      end
    end
    spec.eq(#font.glyph(32), 0)
    spec.truthy(font.glyph(0x3C1) ~= nil, "a replacement glyph for other codepoints")
  end)
  it("distinct characters look distinct", function()
    local seen = {}
    for cp = 33, 126 do
      local key = table.concat(font.glyph(cp), ",")
      spec.truthy(not seen[key], string.format("%q and %q share a glyph", string.char(cp), seen[key] or ""))
      seen[key] = string.char(cp)
    end
  end)
  it("measures and draws text where asked, rotated too", function()
    spec.eq(font.width("abc", 2), (3 * 6 - 1) * 2)
    spec.eq(font.width("", 2), 0)
    local cv = Canvas.new(100, 60)
    cv:text(50, 10, "HI", {scale = 2, align = "center"})
    local w = font.width("HI", 2)
    spec.truthy(count(cv, 50 - w // 2, 10, 50 + w // 2, 10 + 13, dark) > 20, "text pixels in its box")
    spec.eq(count(cv, 0, 30, 99, 59, dark), 0, "nothing outside it")
    local r = Canvas.new(40, 100)
    r:text(10, 90, "HELLO", {rotate = 90, valign = "bottom"})
    -- rotated: 7 columns wide, 29 rows tall, ending at row 89
    spec.truthy(count(r, 10, 90 - 29, 16, 89, dark) > 20, "rotated text is vertical")
    spec.eq(count(r, 17, 0, 39, 99, dark), 0)
  end)
end)

describe("plot colormap", function()
  it("interpolates its control points and clamps", function()
    local v = colormap.get("viridis")
    local p = colormap.points("viridis")
    spec.eq(v(0), Canvas.color(p[1]))
    spec.eq(v(1), Canvas.color(p[#p]))
    spec.eq(v(-3), v(0)); spec.eq(v(7), v(1))
    spec.eq(v(0.5), Canvas.color(p[5]), "the middle control point")
    local d = colormap.get("diverging")
    spec.truthy(Canvas.luminance(d(0.5)) > 0.9, "diverging map is light in the middle")
    local r0, _, b0 = Canvas.unpack(d(0)); local r1, _, b1 = Canvas.unpack(d(1))
    spec.truthy(b0 > r0 and r1 > b1, "blue at the low end, red at the high end")
    spec.raises(function() colormap.get("jet") end, "unknown map", "viridis")
  end)
  it("series colours are distinct", function()
    for i = 1, 8 do
      for j = i + 1, 8 do spec.truthy(colormap.series(i) ~= colormap.series(j)) end
    end
    spec.eq(colormap.series(9), colormap.series(1))
  end)
end)

-- the bytes written to a temporary file and read back by the core's decoder
local function decode(s)
  local path = tmp("decode.png")
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  local ok, img = pcall(plot.read_png, path)
  os.remove(path)
  if not ok then error(img, 0) end
  return img
end

describe("plot png", function()
  it("encodes a canvas that decodes to the same pixels", function()
    local cv = Canvas.new(37, 23)
    cv:fill_rect(3, 4, 20, 10, 0x123456)
    for i = 0, 36 do cv:set(i, 20, (i * 2654435761) & 0xFFFFFF) end -- noise: literals
    cv:line(0, 0, 36, 22, 0xE69F00, 3)
    local s = cv:png()
    spec.eq(s:sub(1, 8), "\137PNG\r\n\26\n")
    spec.eq(s:sub(13, 16), "IHDR")
    local w, h, depth, ctype = string.unpack(">I4I4BB", s, 17)
    spec.eq(w, 37); spec.eq(h, 23); spec.eq(depth, 8); spec.eq(ctype, 2)
    spec.eq(s:sub(-8, -5), "IEND")
    local img = decode(s)
    spec.eq(img.width, 37); spec.eq(img.height, 23); spec.eq(img.channels, 3)
    for y = 0, 22 do
      for x = 0, 36 do
        local r, g, b = img:rgb(x, y)
        spec.eq(hex(Canvas.pack(r, g, b)), hex(cv:get(x, y)), "pixel " .. x .. "," .. y)
      end
    end
  end)
  it("compresses flat figures well", function()
    local cv = Canvas.new(400, 300)
    cv:fill_rect(50, 50, 300, 200, 0x0072B2)
    spec.truthy(#cv:png() < 400 * 300 * 3 / 50, "a flat figure is at least 50 times smaller")
  end)
  it("rejects corrupted files", function()
    local s = Canvas.new(8, 8):png()
    local bad = s:sub(1, 40) .. string.char((s:byte(41) + 1) % 256) .. s:sub(42)
    spec.raises(function() decode(bad) end, "image")
    spec.raises(function() decode("GIF89a......") end, "image")
  end)
end)

describe("plot canvas", function()
  it("blends, clips and converts to a tensor", function()
    local cv = Canvas.new(10, 6)
    cv:fill_rect(-5, -5, 8, 8, 0x000000)
    spec.eq(cv:get(2, 2), 0x000000); spec.eq(cv:get(3, 3), 0xFFFFFF)
    cv:fill_rect(5, 0, 5, 6, 0x0000FF, 0.5)
    local r, g, b = cv:rgb(6, 1)
    spec.eq(r, 128); spec.eq(g, 128); spec.eq(b, 255)
    local t = cv:tensor()
    spec.eq(t:size(1), 3); spec.eq(t:size(2), 6); spec.eq(t:size(3), 10)
    spec.near(t[1][2][7], 128 / 255, 1e-6)
    spec.near(t[3][2][7], 1, 1e-6)
    spec.eq(t[1][1][1], 0)
    spec.raises(function() Canvas.new(0, 5) end, "Canvas.new")
  end)
  it("draws a thick line with full coverage at its centre", function()
    local cv = Canvas.new(50, 20)
    cv:line(5, 10.5, 45, 10.5, 0xD55E00, 3)
    for x = 8, 42 do
      spec.eq(hex(cv:get(x, 10)), hex(0xD55E00))
      spec.eq(cv:get(x, 6), 0xFFFFFF)
    end
    local d = Canvas.new(200, 20)
    d:line(0, 10.5, 200, 10.5, 0x000000, 2, "dashed")
    local on = count(d, 0, 10, 199, 10, function(c) return c == 0 end)
    spec.truthy(on > 60 and on < 160, "a dashed line is partly drawn: " .. on)
  end)
end)

describe("plot.lines", function()
  local xs, ys, lo, hi = {}, {}, {}, {}
  for i = 0, 10 do
    xs[#xs + 1] = i / 10; ys[#ys + 1] = 0.5; lo[#lo + 1] = 0.2; hi[#hi + 1] = 0.3
  end
  local c1, c2 = colormap.series(1), colormap.series(2)
  local cv = plot.lines({series = {
    {label = "flat", x = xs, y = ys},
    {label = "band", x = xs, y = lo, band_lo = lo, band_hi = hi},
    {label = "reference", hline = 0.8},
  }}, {title = "A line at one half", xlabel = "t", ylabel = "accuracy", xlim = {0, 1}, ylim = {0, 1},
    legend = "lower right"})
  local ax = cv.axes
  local function row(v) -- expected pixel row of data value v, from the frame and ylim = {0, 1}
    return math.floor(ax.y1 + 0.5 - v * (ax.y1 - ax.y0))
  end
  it("puts the series where its data maps", function()
    spec.eq(row(0.5), (ax.y0 + ax.y1 + 1) // 2, "y = 0.5 is half-way down the frame")
    for _, f in ipairs({0.05, 0.23, 0.41, 0.66}) do -- columns away from the legend
      local x = math.floor(ax.x0 + f * (ax.x1 - ax.x0))
      spec.eq(hex(cv:get(x, row(0.5))), hex(c1), "line colour at column " .. x)
      spec.truthy(cv:get(x, row(0.5) - 12) ~= c1 and cv:get(x, row(0.5) + 12) ~= c1, "thin line")
    end
  end)
  it("shades the band with the series colour, lightly", function()
    local x = math.floor(ax.x0 + 0.33 * (ax.x1 - ax.x0)) + 3
    local c = cv:get(x, row(0.25))
    local want = Canvas.mix(0xFFFFFF, c2, plot.theme.band_alpha)
    spec.eq(hex(c), hex(want), "band pixel")
    spec.eq(cv:get(x, row(0.43)), 0xFFFFFF, "outside the band")
  end)
  it("draws the horizontal reference line dashed across the plot", function()
    local c3 = colormap.series(3)
    local on = count(cv, ax.x0 + 1, row(0.8), ax.x1 - 1, row(0.8), function(c) return c == c3 end)
    local width = ax.x1 - ax.x0 - 1
    spec.truthy(on > width * 0.3 and on < width * 0.9, "dashed: " .. on .. " of " .. width)
  end)
  it("writes the title, tick labels and a legend", function()
    spec.truthy(count(cv, 0, 0, cv.w - 1, ax.y0 - 2, dark) > 100, "dark pixels in the title area")
    spec.truthy(count(cv, 0, ax.y0, ax.x0 - 8, ax.y1, dark) > 100, "y tick labels")
    spec.truthy(count(cv, ax.x0, ax.y1 + 2, ax.x1, cv.h - 1, dark) > 100, "x tick labels and label")
    local lx, ly, lw, lh = table.unpack(ax.legend_box)
    spec.truthy(lx > (ax.x0 + ax.x1) / 2 and ly > (ax.y0 + ax.y1) / 2, "legend in the lower right")
    for _, c in ipairs({c1, c2}) do
      spec.truthy(count(cv, lx, ly, lx + lw, ly + lh, function(p) return p == c end) > 10, "legend sample " .. hex(c))
    end
  end)
  it("places the legend where the data are not ('best')", function()
    local ys2 = {}
    for i = 1, #xs do ys2[i] = 0.95 end
    local c = plot.lines({series = {{label = "high", x = xs, y = ys2}}}, {ylim = {0, 1}})
    local _, ly = table.unpack(c.axes.legend_box)
    spec.truthy(ly > (c.axes.y0 + c.axes.y1) / 2, "a line at the top sends the legend down")
  end)
  it("breaks lines at NaN and supports log axes", function()
    local c = plot.lines({series = {{x = {1, 10, 100, 1000}, y = {1, 0 / 0, 3, 4}}}}, {xscale = "log"})
    local a = c.axes
    spec.near(a:px(10) - a:px(1), a:px(1000) - a:px(100), 1e-9)
    spec.raises(function() plot.lines({series = {{x = {0, 1}, y = {1, 2}}}}, {xscale = "log", xlim = {0, 1}}) end, "log")
  end)
  it("names the problem in bad input", function()
    spec.raises(function() plot.lines({series = {{label = "a", x = {1, 2}, y = {1}}}}) end,
      "plot.lines", "series 1 ('a')", "x has 2 values, y has 1")
    spec.raises(function() plot.lines({series = {{y = {1, 2}, band_lo = {1, 2}}}}) end, "band_hi")
    spec.raises(function() plot.lines({series = {{y = {1}, style = "wavy"}}}) end, "style")
    spec.raises(function() plot.lines({series = {}}, {colour = 1}) end, "unknown option 'colour'")
    spec.raises(function() plot.lines({}) end, "series")
  end)
  it("accepts tensors and draws a 900x600 figure", function()
    local n = 200
    local x = T.linspace(0, 1, n)
    local y = (x * 6):sin()
    local t0 = os.clock()
    local c = plot.lines({series = {{label = "sin", x = x, y = y, band_lo = y - 0.2, band_hi = y + 0.2},
      {label = "cos", x = x, y = (x * 6):cos(), style = "dashed"}}}, {title = "timing", xlabel = "x", ylabel = "y"})
    local s = c:png()
    local dt = os.clock() - t0
    spec.eq(c.w, 900); spec.eq(c.h, 600)
    spec.truthy(#s > 1000)
    print(string.format("# 900x600 lines figure drawn and encoded in %.2f s of CPU", dt)) -- reported, not checked
  end)
end)

describe("plot.heatmap", function()
  local m = {{0, 0.25, 0.5}, {0.5, 0.75, 1}}
  local cv = plot.heatmap(m, {title = "H", row_labels = {"a", "b"}, col_labels = {"x", "y", "z"},
    colorbar_label = "value", xlabel = "col", ylabel = "row"})
  local v = colormap.get("viridis")
  it("has a colour bar whose ends are the colour map's ends", function()
    local bx, by, bw, bh = table.unpack(cv.colorbar)
    local mid = bx + bw // 2
    spec.eq(hex(cv:get(mid, by)), hex(v(1)), "top of the colour bar")
    spec.eq(hex(cv:get(mid, by + bh - 1)), hex(v(0)), "bottom of the colour bar")
    local r, g, b = Canvas.unpack(cv:get(mid, by + bh // 2))
    local R, G, B = Canvas.unpack(v(0.5))
    spec.truthy(math.abs(r - R) + math.abs(g - G) + math.abs(b - B) <= 6, "middle of the colour bar is v(0.5)")
    spec.truthy(count(cv, bx + bw + 2, by - 8, cv.w - 1, by + bh + 8, dark) > 50, "colour bar tick labels")
  end)
  it("colours each cell by its value (row 1 at the top)", function()
    local x0, y0, cw, ch = table.unpack(cv.cells)
    for i = 1, 2 do
      for j = 1, 3 do
        spec.eq(hex(cv:get(x0 + (j - 1) * cw + 2, y0 + (i - 1) * ch + 2)), hex(v(m[i][j])), "cell " .. i .. "," .. j)
      end
    end
    spec.truthy(count(cv, 0, 0, cv.w - 1, y0 - 4, dark) > 10, "title drawn")
    spec.truthy(count(cv, 0, y0, x0 - 2, y0 + 2 * ch, dark) > 20, "row labels drawn")
  end)
  it("writes values in the cells when asked, in a contrasting colour", function()
    local a = plot.heatmap(m, {annotate = true})
    local x0, y0, cw, ch = table.unpack(a.cells)
    local white = count(a, x0 + 2, y0 + 2, x0 + cw - 3, y0 + ch - 3, function(c) return c == 0xFFFFFF end)
    spec.truthy(white > 10, "light text on the dark cell")
    local darkpx = count(a, x0 + 2 * cw + 2, y0 + ch + 2, x0 + 3 * cw - 3, y0 + 2 * ch - 3, function(c) return c == 0x111111 end)
    spec.truthy(darkpx > 10, "dark text on the yellow cell")
  end)
  it("centres the diverging map on zero and honours vmin/vmax", function()
    local d = plot.heatmap(T.tensor({{-2, 0}, {1, 0.5}}), {cmap = "diverging"})
    local x0, y0, cw = table.unpack(d.cells)
    spec.eq(d.range[1], -2); spec.eq(d.range[2], 2)
    spec.eq(hex(d:get(x0 + cw + 2, y0 + 2)), hex(colormap.get("diverging")(0.5)), "zero is the middle colour")
    local f = plot.heatmap(m, {vmin = 0, vmax = 2})
    local bx, by, bw = table.unpack(f.colorbar)
    spec.eq(f:get(bx + bw // 2, by), v(1))
    local fx, fy = table.unpack(f.cells)
    spec.eq(hex(f:get(fx + 2, fy + 2)), hex(v(0)))
  end)
  it("handles an 11x11 matrix and rejects bad input", function()
    local big = T.rand(11, 11)
    local c = plot.heatmap(big, {title = "NMI", annotate = true})
    spec.truthy(c.w >= 11 * c.cells[3] and c.cells[3] >= 40, "cells large enough for values")
    spec.raises(function() plot.heatmap({{1, 2}, {3}}) end, "plot.heatmap", "row 2 has 1 values")
    spec.raises(function() plot.heatmap(T.rand(2, 2, 2)) end, "2-D")
    spec.raises(function() plot.heatmap(m, {row_labels = {"a"}}) end, "row_labels must list 2 labels")
    spec.raises(function() plot.heatmap(m, {vmin = 1, vmax = 0}) end, "vmax")
  end)
end)

describe("plot.bars", function()
  it("draws bars to their values with error bars", function()
    local cv = plot.bars({labels = {"A", "B", "C"}, values = {1, 0.5, 0.25}, errors = {0, 0.1, 0}},
      {title = "bars", ylabel = "value", ylim = {0, 1}})
    local ax = cv.axes
    local c = colormap.series(1)
    local function at(i, v) return cv:get(math.floor(ax:px(i)) + 8, math.floor(ax:py(v))) end
    spec.eq(hex(at(1, 0.9)), hex(c)); spec.eq(hex(at(2, 0.3)), hex(c)); spec.eq(hex(at(3, 0.1)), hex(c))
    spec.truthy(at(2, 0.7) ~= c and at(3, 0.4) ~= c, "nothing above the bars")
    local ex = math.floor(ax:px(2))
    spec.truthy(count(cv, ex - 2, math.floor(ax:py(0.6)) - 1, ex + 2, math.floor(ax:py(0.55)), dark) > 0,
      "error bar above bar B")
  end)
  it("groups bars with a legend and checks shapes", function()
    local cv = plot.bars({labels = {"g=2", "g=5"}, groups = {"small", "large"}, values = {{0.5, 0.8}, {0.6, 0.9}}},
      {ylabel = "accuracy"})
    local lx, ly, lw, lh = table.unpack(cv.axes.legend_box)
    spec.truthy(lx > cv.axes.x1, "legend outside the plot by default")
    spec.truthy(count(cv, lx, ly, lx + lw, ly + lh, function(p) return p == colormap.series(2) end) > 20)
    spec.raises(function() plot.bars({labels = {"a"}, groups = {"x", "y"}, values = {{1}}}) end, "values[1] has 1 entries for 2 groups")
    spec.raises(function() plot.bars({labels = {"a", "b"}, values = {1}}) end, "labels must list 1 names")
    spec.raises(function() plot.bars({values = {1, 2}, errors = {1}}) end, "errors has 1 values")
  end)
end)

describe("plot.grid", function()
  it("lays out images with padding and scale", function()
    local imgs = T.zeros(3, 3, 2, 2)
    imgs[1]:fill_(1)              -- white
    imgs[2][1]:fill_(1)           -- red
    imgs[3][3]:fill_(0.5)         -- dark blue
    local cv = plot.grid(imgs, {nrow = 2, padding = 1, scale = 3, pad_value = 0})
    spec.eq(cv.w, 2 * (2 * 3 + 1) + 1); spec.eq(cv.h, 2 * (2 * 3 + 1) + 1)
    spec.eq(hex(cv:get(0, 0)), hex(0x000000), "padding")
    spec.eq(hex(cv:get(1, 1)), hex(0xFFFFFF)); spec.eq(hex(cv:get(6, 6)), hex(0xFFFFFF))
    spec.eq(hex(cv:get(8, 1)), hex(0xFF0000))
    spec.eq(hex(cv:get(1, 8)), hex(0x000080))
    local g = plot.grid(T.rand(1, 5, 5), {title = "one grey image"})
    spec.truthy(count(g, 0, 0, g.w - 1, g.tiles[2] - 4, dark) > 20, "title drawn")
    spec.raises(function() plot.grid(T.rand(2, 2, 4, 4)) end, "1 or 3 channels")
  end)
end)

describe("plot files", function()
  it("writes PNG files that read back at the figure's size and pixels", function()
    local path = tmp("lines.png")
    local cv = plot.lines({series = {{label = "y", x = {0, 1, 2}, y = {0, 1, 0}}}}, {title = "file", width = 320, height = 200}, path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a"); f:close()
    spec.eq(s:sub(1, 8), "\137PNG\r\n\26\n")
    local w, h = string.unpack(">I4I4", s, 17)
    spec.eq(w, 320); spec.eq(h, 200)
    local img = plot.read_png(path)
    local diff = 0
    for y = 0, 199, 3 do
      for x = 0, 319, 3 do
        local r, g, b = img:rgb(x, y)
        if Canvas.pack(r, g, b) ~= cv:get(x, y) then diff = diff + 1 end
      end
    end
    spec.eq(diff, 0)
    os.remove(path)
    for _, kind in ipairs({"heatmap", "bars", "grid"}) do
      local p = tmp(kind .. ".png")
      local c
      if kind == "heatmap" then c = plot.heatmap({{1, 2}, {3, 4}}, {}, p)
      elseif kind == "bars" then c = plot.bars({values = {1, 2}}, {}, p)
      else c = plot.grid(T.rand(4, 3, 8, 8), {}, p) end
      local i = plot.read_png(p)
      spec.eq(i.width, c.w); spec.eq(i.height, c.h)
      os.remove(p)
    end
    spec.raises(function() plot.bars({values = {1}}, {}, "/nonexistent-dir/x.png") end, "cannot write")
    -- a truncated file: the reader's message names the file and the offset, not string.unpack
    local full = tmp("full.png")
    plot.bars({values = {1, 2}}, {}, full)
    local bytes = assert(io.open(full, "rb")):read("a")
    for _, n in ipairs({20, 40, #bytes - 10, #bytes - 2}) do
      local cut = tmp("cut" .. n .. ".png")
      local f = assert(io.open(cut, "wb")); f:write(bytes:sub(1, n)); f:close()
      local err = spec.raises(function() plot.read_png(cut) end, cut, "truncated")
      spec.truthy(not err:find("bad argument", 1, true), err)
      os.remove(cut)
    end
    os.remove(full)
  end)
  it("reads back through the data loader's PNG decoder with the same pixels", function()
    local path = tmp("stb.png")
    local cv = plot.heatmap({{0, 1}, {2, 3}}, {title = "stb", annotate = true}, path)
    local img = T._data.image_load(path, 3)
    os.remove(path)
    spec.eq(img:size(1), 3); spec.eq(img:size(2), cv.h); spec.eq(img:size(3), cv.w)
    spec.tensor_near(img, cv:tensor(), 1e-6, "decoded pixels")
  end)
end)
